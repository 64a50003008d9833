"""File-backed storage of one emulated handset.

A handset directory holds one image file per partition (``userdata.img`` is the one that
matters), ``fs.json`` (the emulated file system: path -> extents inside userdata, and the
free list) and ``state.json`` (accounts, device owner, mode). Every emulator of every
protocol reads and writes user data through `HandsetStorage`, so fault injection and the
planted personal data behave the same whichever protocol reaches the phone.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..pattern import new_key, xor_keystream
from .faults import FaultInjector, on_flash
from .pagecache import PageCache
from .personal import load_personal_data
from .profiles import HandsetProfile

BLOCK = 4096
CHUNK = 4 * 1024 * 1024
SMALL_PARTITIONS = {"metadata": 1024 * 1024, "frp": 512 * 1024, "misc": 64 * 1024}
EXT4_MAGIC_OFFSET = 0x438
RESERVED_SHARE = 0.02  # Android formats /data with 2 % kept for the reserved_disk group
MAX_EXTENT = 128 * 1024 * 1024  # ext4: one extent maps at most 32768 blocks
INLINE_EXTENTS = 4  # an inode holds this many extents itself
EXTENTS_PER_BLOCK = 340  # (4096 - 12) / 12: one extent-tree leaf block
COMMIT_INTERVAL = 5.0  # seconds: the journal commits on its own this often


class StorageFull(OSError):
    pass


def _blocks(length: int) -> int:
    return -(-length // BLOCK)


def _merged(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def _extent_count(extents: list[list[int]]) -> int:
    return sum(-(-length // MAX_EXTENT) for _, length in extents)


def _tree_blocks(extents: int) -> int:
    """Extent-tree blocks a file of ``extents`` extents needs beyond its inode."""
    return 0 if extents <= INLINE_EXTENTS else -(-extents // EXTENTS_PER_BLOCK)


@dataclass
class HandsetState:
    serial: str
    mode: str = "adb"  # adb | recovery | fastboot | setup-wizard (adb off)
    google_accounts: list[str] = field(default_factory=list)
    device_owner: str = ""
    profile_owner: str = ""  # a work profile's owner on an organization-owned phone
    samsung_accounts: list[str] = field(default_factory=list)
    screen_lock: bool = False
    bootloader_locked: bool = True
    test_harness: bool = False
    resets: int = 0
    recovery_command: str = ""
    imeis: list[str] = field(default_factory=list)  # one per SIM slot (HandsetProfile.imeis)


@dataclass
class FileTable:
    """The emulated file system on userdata, ext4-like: files as extents, a free list, a
    share reserved for privileged writers, extent-tree and directory blocks, and blocks
    freed since the last journal commit (not reusable until then)."""

    files: dict[str, list[list[int]]] = field(default_factory=dict)  # path -> [[offset, length]]
    sizes: dict[str, int] = field(default_factory=dict)
    free: list[list[int]] = field(default_factory=list)  # [[start, end)] sorted
    reserved: int = -1  # bytes only privileged writers may take; -1: the default share
    pending: list[list[int]] = field(default_factory=list)  # freed, reusable after a commit
    pending_since: float = 0.0  # wall clock of the oldest uncommitted free
    meta: dict[str, list[list[int]]] = field(default_factory=dict)  # extent-tree blocks by file
    dirs: dict[str, list[list[int]]] = field(default_factory=dict)  # directory blocks by path

    def __post_init__(self) -> None:
        if self.reserved < 0:
            ends = [e for _, e in self.free] + [s + n for ext in self.files.values() for s, n in ext]
            self.reserved = int(max(ends, default=0) * RESERVED_SHARE) // BLOCK * BLOCK

    # -- what statfs reports ------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Blocks in no file (statfs f_bfree): freed-but-uncommitted ones included."""
        return sum(e - s for s, e in self.free) + sum(e - s for s, e in self.pending)

    def available_bytes(self) -> int:
        """What an unprivileged writer is told it has (statfs f_bavail, df's Available)."""
        return max(0, self.free_bytes() - self.reserved)

    def allocatable_bytes(self, privileged: bool = False) -> int:
        """What an allocation can take now: committed free blocks, outside the reserve."""
        committed = sum(e - s for s, e in self.free)
        return max(0, committed - (0 if privileged else self.reserved))

    # -- commits ------------------------------------------------------------------------------
    def commit(self) -> bool:
        """The journal commits: blocks freed since the last commit become reusable."""
        if not self.pending:
            return False
        self.free = _merged(self.free + self.pending)
        self.pending = []
        self.pending_since = 0.0
        return True

    def _commit_if_due(self) -> None:
        if self.pending and time.time() - self.pending_since >= COMMIT_INTERVAL:
            self.commit()

    def _free_later(self, extents: list[list[int]]) -> None:
        if extents and not self.pending:
            self.pending_since = time.time()
        self.pending = _merged(self.pending + [[s, s + n] for s, n in extents])

    # -- allocation ---------------------------------------------------------------------------
    def _peek(self, need: int) -> list[list[int]]:
        """The extents ``need`` bytes would take from the front of the free list."""
        extents = []
        for start, end in self.free:
            if not need:
                break
            take = min(need, end - start)
            extents.append([start, take])
            need -= take
        return extents

    def _take(self, need: int) -> list[list[int]]:
        extents = self._peek(need)
        for _start, take in extents:
            s, e = self.free[0]
            if s + take == e:
                self.free.pop(0)
            else:
                self.free[0] = [s + take, e]
        return extents

    @staticmethod
    def _joined(extents: list[list[int]], more: list[list[int]]) -> list[list[int]]:
        out = [list(x) for x in extents]
        for start, length in more:
            if out and out[-1][0] + out[-1][1] == start:
                out[-1][1] += length  # the file's last extent grows
            else:
                out.append([start, length])
        return out

    def _cost(self, path: str, need: int) -> tuple[list[list[int]], int]:
        """The data extents ``need`` bytes would get, and the extent-tree blocks to add."""
        planned = self._peek(need)
        extents = self._joined(self.files.get(path, []), planned)
        have = sum(n for _, n in self.meta.get(path, [])) // BLOCK
        return planned, max(0, _tree_blocks(_extent_count(extents)) - have)

    def fits(self, path: str, length: int, privileged: bool = False) -> bool:
        need = _blocks(length) * BLOCK
        self._commit_if_due()
        room = self.allocatable_bytes(privileged)
        if need > room:
            return False
        _, tree = self._cost(path, need)
        return need + tree * BLOCK <= room

    def grow(self, path: str, length: int, privileged: bool = False) -> None:
        """Give ``path`` ``length`` more bytes (rounded up to blocks) and the extent-tree
        blocks they need; StorageFull when they do not fit."""
        if not self.fits(path, length, privileged):
            raise StorageFull(28, "No space left on device")
        need = _blocks(length) * BLOCK
        _, tree = self._cost(path, need)
        self.files[path] = self._joined(self.files.get(path, []), self._take(need))
        if tree:
            self.meta.setdefault(path, []).extend(self._take(tree * BLOCK))

    def room(self, path: str, privileged: bool = False) -> int:
        """The most whole blocks ``path`` can still grow by (bytes)."""
        lo, hi = 0, self.allocatable_bytes(privileged) // BLOCK
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(path, mid * BLOCK, privileged):
                lo = mid
            else:
                hi = mid - 1
        return lo * BLOCK

    def add_dir(self, path: str) -> None:
        """A directory costs a block of directory entries."""
        if path not in self.dirs:
            self._commit_if_due()
            if self.allocatable_bytes() < BLOCK:
                raise StorageFull(28, "No space left on device")
            self.dirs[path] = self._take(BLOCK)

    # -- freeing ------------------------------------------------------------------------------
    def release(self, path: str) -> None:
        """Free a file's blocks: they become reusable at the next commit."""
        self._free_later(self.files.pop(path, []) + self.meta.pop(path, []))
        self.sizes.pop(path, None)

    def release_dir(self, path: str) -> None:
        self._free_later(self.dirs.pop(path, []))

    def locate(self, path: str, offset: int, length: int) -> list[tuple[int, int]]:
        """Map a byte range of a file to (image offset, length) pieces."""
        pieces = []
        pos = 0
        end = offset + length
        for ext_off, ext_len in self.files[path]:
            lo, hi = max(offset, pos), min(end, pos + ext_len)
            if lo < hi:
                pieces.append((ext_off + lo - pos, hi - lo))
            pos += ext_len
            if pos >= end:
                break
        return pieces


class HandsetStorage:
    """One emulated handset's partitions, file system and state, with fault injection."""

    def __init__(self, directory: Path, profile: HandsetProfile) -> None:
        self.directory = Path(directory)
        self.profile = profile
        self.physical_size = profile.userdata_bytes
        hidden = int(self.physical_size * profile.faults.hidden_fraction) // BLOCK * BLOCK
        self.size = self.physical_size - hidden  # what the block device admits to
        self.faults = FaultInjector(profile.faults, self.size, profile.seed)
        real = profile.faults.real_fraction
        self.flash_size = int(self.physical_size * real) // BLOCK * BLOCK \
            if 0 < real < 1 else self.physical_size  # what the flash really holds
        self.cache = PageCache(profile.device.ram_mib * 1024 * 1024)  # the running kernel's
        self._lock = threading.RLock()
        self._fds: dict[str, int] = {}
        self.table = FileTable(**json.loads((self.directory / "fs.json").read_text()))
        self.state = HandsetState(**json.loads((self.directory / "state.json").read_text()))

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, profile: HandsetProfile, serial: str) -> "HandsetStorage":
        """Make a used phone's storage: old ciphertext everywhere, then personal data."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        size = profile.userdata_bytes  # the whole medium, a hidden area included
        old_key = profile.seed.to_bytes(32, "big")
        with open(directory / "userdata.img", "wb") as f:
            for off in range(0, size, CHUNK):
                f.write(xor_keystream(old_key, off, bytes(min(CHUNK, size - off))))
        for name, part_size in SMALL_PARTITIONS.items():
            with open(directory / f"{name}.img", "wb") as f:
                f.truncate(part_size)
        table = FileTable(free=[[16 * BLOCK, size]])
        locks = profile.locks
        state = HandsetState(serial=serial, mode=profile.access.start_mode,
                             google_accounts=list(locks.google_accounts),
                             device_owner=locks.device_owner, screen_lock=locks.screen_lock,
                             profile_owner=locks.profile_owner,
                             samsung_accounts=list(locks.samsung_accounts),
                             bootloader_locked=locks.bootloader_locked,
                             imeis=profile.imeis(serial))
        cls._write_json(directory, table, state)
        storage = cls(directory, profile)
        storage._write_superblock()
        storage._plant()
        if locks.google_accounts:
            storage.write_partition("frp", 0, ("FRP:" + ",".join(locks.google_accounts)).encode())
        return storage

    def _plant(self) -> None:
        remnant_at = self.size // 2  # deleted data lingers in free space, mid-device
        for item in load_personal_data():
            if item.remnant:
                self._raw_write(remnant_at, item.content)
                remnant_at += -(-len(item.content) // BLOCK) * BLOCK + 7 * BLOCK
            else:
                self.create_file(item.path, item.content, faulty=False)
        hidden_at = self.size
        for item in load_personal_data():  # a hidden area keeps a copy nobody can reach
            if hidden_at + len(item.content) > self.physical_size:
                break
            self._raw_write(hidden_at, item.content)
            hidden_at += -(-len(item.content) // BLOCK) * BLOCK
        self.save()

    def _write_superblock(self) -> None:
        sb = bytearray(BLOCK)
        sb[EXT4_MAGIC_OFFSET:EXT4_MAGIC_OFFSET + 2] = b"\x53\xef"
        sb[0x478:0x478 + 8] = b"userdata"
        sb[0x468:0x468 + 16] = os.urandom(16)  # s_uuid: every mkfs makes a new one
        self._raw_write(0, bytes(sb))

    # -- persistence ----------------------------------------------------------------------
    @staticmethod
    def _write_json(directory: Path, table: FileTable, state: HandsetState) -> None:
        for name, obj in (("fs.json", table), ("state.json", state)):
            tmp = directory / f".{name}.tmp"
            tmp.write_text(json.dumps(asdict(obj)))
            os.replace(tmp, directory / name)

    def save(self) -> None:
        with self._lock:
            self._write_json(self.directory, self.table, self.state)

    def _fd(self, partition: str) -> int:
        fd = self._fds.get(partition)
        if fd is None:
            fd = os.open(self.directory / f"{partition}.img", os.O_RDWR)
            self._fds[partition] = fd
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def partition_size(self, partition: str) -> int:
        """The size the block device reports (BLKGETSIZE64, what `dd` reaches)."""
        return self.size if partition == "userdata" else SMALL_PARTITIONS[partition]

    def table_size(self, partition: str) -> int:
        """The size in the partition table (/proc/partitions, sysfs): larger than
        `partition_size` on a handset that hides an area."""
        return self.physical_size if partition == "userdata" else SMALL_PARTITIONS[partition]

    # -- raw block access (what `dd` on /dev/block/by-name/* reaches) ---------------------
    def _on_flash(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(flash offset, offset in the request, length) pieces of a userdata request: the
        same range, except on counterfeit flash, where addresses wrap at its real size."""
        if self.flash_size >= self.physical_size:
            return [(offset, 0, length)]
        return on_flash(offset, length, self.flash_size)

    def _raw_write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view, fd = memoryview(data), self._fd("userdata")
        for at, rel, n in self._on_flash(offset, len(view)):
            os.pwrite(fd, view[rel:rel + n], at)

    def _raw_read(self, offset: int, length: int) -> bytes:
        fd = self._fd("userdata")
        return b"".join(os.pread(fd, n, at) for at, _, n in self._on_flash(offset, length))

    def write(self, offset: int, data: bytes | bytearray | memoryview, faulty: bool = True,
              cached: bool = False) -> int:
        """Write user data through fault injection; returns the length acknowledged.
        ``cached``: the write went through the running kernel (its page cache keeps it)."""
        if offset < 0 or offset + len(data) > self.size:
            raise OSError(28, "No space left on device")
        if not faulty:
            self._raw_write(offset, data)
            return len(data)
        view = memoryview(data)
        landed = self.faults.plan_write(offset, len(data))
        for piece_off, piece_len in landed:
            rel = piece_off - offset
            self._raw_write(piece_off, view[rel:rel + piece_len])
        if cached:
            self.cache.note_write(offset, view, landed)
        return len(data)

    def read(self, offset: int, length: int, cached: bool = False) -> bytes:
        """The medium's content; ``cached``: a buffered read through the running kernel,
        answered from its page cache where that still holds a write."""
        length = max(0, min(length, self.size - offset))
        self.faults.check_read(offset, length)
        data = self.faults.mask_read(offset, self._raw_read(offset, length))
        return self.cache.overlay(offset, data) if cached else data

    def drop_caches(self) -> None:
        """BLKFLSBUF, ``echo 3 > /proc/sys/vm/drop_caches`` or a reboot."""
        self.cache.drop()

    def write_partition(self, partition: str, offset: int, data: bytes | memoryview,
                        cached: bool = False) -> None:
        if partition == "userdata":
            self.write(offset, data, cached=cached)
        else:
            os.pwrite(self._fd(partition), data, offset)

    def read_partition(self, partition: str, offset: int, length: int,
                       cached: bool = False) -> bytes:
        if partition == "userdata":
            return self.read(offset, length, cached)
        return os.pread(self._fd(partition), length, offset)

    def sync(self) -> None:
        self.commit()
        for fd in self._fds.values():
            os.fsync(fd)

    # -- the emulated file system ----------------------------------------------------------
    def create_file(self, path: str, content: bytes = b"", faulty: bool = True) -> None:
        with self._lock:
            self.table.release(path)
            self.table.files[path] = []
            self.table.sizes[path] = 0
        if content:
            self.append_file(path, content, faulty)

    def append_file(self, path: str, data: bytes | memoryview, faulty: bool = True,
                    cached: bool = False) -> None:
        """Append to a file, allocating blocks from free space (StorageFull when none)."""
        with self._lock:
            size = self.table.sizes[path]
            tail_room = sum(length for _, length in self.table.files[path]) - size
            if len(data) > tail_room:
                self.table.grow(path, len(data) - tail_room)
            self.table.sizes[path] = size + len(data)
            pieces = self.table.locate(path, size, len(data))
        view = memoryview(data)
        pos = 0
        for image_off, length in pieces:
            self.write(image_off, view[pos:pos + length], faulty, cached)
            pos += length

    def append_what_fits(self, path: str, data: bytes | memoryview, cached: bool = False) -> int:
        """Append as much of ``data`` as the file system has room for, as a kernel's write()
        does before it says ENOSPC; returns the bytes appended."""
        with self._lock:
            table = self.table
            if path not in table.files:  # unlinked while open: nobody can reach what it gets
                return len(data)
            tail_room = sum(length for _, length in table.files[path]) - table.sizes[path]
            fit = len(data)
            if fit > tail_room and not table.fits(path, fit - tail_room):
                fit = tail_room + table.room(path)
        if fit:
            self.append_file(path, memoryview(data)[:fit], cached=cached)
        return fit

    def read_file(self, path: str, offset: int, length: int, cached: bool = False) -> bytes:
        with self._lock:
            size = self.table.sizes[path]
            length = max(0, min(length, size - offset))
            pieces = self.table.locate(path, offset, length)
        return b"".join(self.read(off, n, cached) for off, n in pieces)

    def delete_file(self, path: str) -> None:
        with self._lock:
            self.table.release(path)

    def files_under(self, prefix: str) -> list[str]:
        prefix = prefix.rstrip("/") + "/"
        return sorted(p for p in self.table.files if p.startswith(prefix))

    def make_dir(self, path: str) -> None:
        """Charge a new directory its block (StorageFull when none is left)."""
        with self._lock:
            if path not in self.table.dirs:
                self.table.add_dir(path)
                self.save()

    def has_dir(self, path: str) -> bool:
        return path in self.table.dirs

    def delete_tree(self, path: str) -> bool:
        """Free every file and directory block under ``path`` (itself included); whether
        anything was there."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            files = self.files_under(path)
            dirs = [d for d in self.table.dirs if d == path or d.startswith(prefix)]
            for p in files:
                self.table.release(p)
            for d in dirs:
                self.table.release_dir(d)
        return bool(files or dirs)

    def commit(self) -> None:
        """A journal commit (``sync``): blocks freed since the last one become reusable."""
        with self._lock:
            if self.table.commit():
                self.save()

    # -- device-level operations ----------------------------------------------------------
    def userdata_wiped(self) -> None:
        """A bootloader erased or flashed userdata: the file system and the accounts and
        device owner kept on it are gone (what the medium holds now is what was written)."""
        self.drop_caches()
        with self._lock:
            self.table = FileTable(free=[[16 * BLOCK, self.size]])
            self.state.device_owner = self.state.profile_owner = ""
            self.state.google_accounts = []
            self.state.samsung_accounts = []
            self.state.screen_lock = False
            self.save()

    def factory_reset(self) -> None:
        """Model a reset of an encrypted phone: the user-data key is destroyed, so what is
        left on the medium is ciphertext under a key nobody has; then a fresh file system."""
        self.drop_caches()  # a reset is a reboot
        if self.profile.faults.reset_lies:
            return
        lost_key = new_key()
        with self._lock:
            for off in range(0, min(self.size, self.flash_size), CHUNK):
                chunk = self._raw_read(off, min(CHUNK, self.size - off))
                self._raw_write(off, xor_keystream(lost_key, off, chunk))
            self._write_superblock()
            self.table = FileTable(free=[[16 * BLOCK, self.size]])
            self.state.device_owner = self.state.profile_owner = ""
            self.state.google_accounts = []
            self.state.samsung_accounts = []
            self.state.screen_lock = False
            self.state.resets += 1
            self.save()
