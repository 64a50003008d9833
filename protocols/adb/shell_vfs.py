"""The emulated shell's file system: paths as a phone's shell sees them (block devices,
procfs and sysfs, /sdcard and its aliases, the shell uid's permissions), backed by the
handset's storage, and the sources and sinks dd, cat and redirections read and write."""
from __future__ import annotations

import errno
import fnmatch
import functools
import os
import posixpath
import re
from typing import Iterable

from phonewipe.erase.emulation.storage import HandsetStorage

from .shell_context import CHUNK, Reader, ShellContext, Writer

PARTITION_NUMBERS = {"misc": 1, "frp": 2, "metadata": 3, "userdata": 4}
BLOCK_NAMES = tuple(PARTITION_NUMBERS)
CHAR_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
RECOVERY_COMMAND = "/cache/recovery/command"
DROP_CACHES = "/proc/sys/vm/drop_caches"
READ_ONLY_ROOTS = ("/system", "/vendor", "/product", "/apex", "/odm", "/system_ext")
SHELL_WRITABLE = ("/sdcard", "/data/local/tmp")
BUILTIN_DIRS = frozenset({
    "/", "/acct", "/apex", "/cache", "/cache/recovery", "/config", "/data", "/data/local",
    "/data/local/tmp", "/data/data", "/data/media", "/data/misc", "/data/system", "/dev",
    "/dev/block", "/dev/block/by-name", "/mnt", "/odm", "/proc", "/product", "/sdcard",
    "/sdcard/Alarms", "/sdcard/Android", "/sdcard/DCIM", "/sdcard/Documents",
    "/sdcard/Download", "/sdcard/Movies", "/sdcard/Music", "/sdcard/Notifications",
    "/sdcard/Pictures", "/sdcard/Podcasts", "/sdcard/Ringtones", "/storage",
    "/storage/emulated", "/storage/self", "/sys", "/system", "/system/bin", "/system/etc",
    "/system/xbin", "/vendor", "/metadata",
})
_ALIASES = (("/storage/emulated/0", "/sdcard"), ("/storage/self/primary", "/sdcard"),
            ("/mnt/sdcard", "/sdcard"), ("/data/media/0", "/sdcard"),
            ("/dev/block/bootdevice/by-name", "/dev/block/by-name"))


def _err(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path)


class Source:
    """Something dd/cat can read: ``read(n)`` and, when seekable, ``seek(pos)``."""

    seekable = True
    size: int | None = None

    def read(self, n: int) -> bytes | bytearray | memoryview:
        raise NotImplementedError

    def seek(self, pos: int) -> None:
        raise _err(errno.ESPIPE)


class Sink:
    seekable = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def seek(self, pos: int) -> None:
        pass

    def truncate(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ZeroSource(Source):
    def __init__(self) -> None:
        self._zeros = b""

    def read(self, n: int) -> bytes:
        if len(self._zeros) != n:
            self._zeros = bytes(n)
        return self._zeros

    def seek(self, pos: int) -> None:
        pass


class _RandomSource(Source):
    def read(self, n: int) -> bytes:
        return os.urandom(n)

    def seek(self, pos: int) -> None:
        pass


class _BytesSource(Source):
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.size = len(data)
        self._pos = 0

    def read(self, n: int) -> memoryview:
        piece = self._data[self._pos:self._pos + n]
        self._pos += len(piece)
        return piece

    def seek(self, pos: int) -> None:
        self._pos = pos


class _StreamSource(Source):
    seekable = False

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def read(self, n: int) -> bytes | bytearray | memoryview:
        return self._reader.read(n)


@functools.lru_cache(maxsize=1024)
def _normalized(path: str) -> str:
    """An absolute path without '.', '..', doubled slashes or the /sdcard aliases."""
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    for alias, real in _ALIASES:
        if path == alias or path.startswith(alias + "/"):
            path = real + path[len(alias):]
    return path


class _PartitionSource(Source):
    """A block device read buffered (through the page cache) or with O_DIRECT."""

    size: int  # a block device always knows its size

    def __init__(self, storage: HandsetStorage, partition: str, direct: bool = False) -> None:
        self._storage = storage
        self._partition = partition
        self._cached = not direct
        self.size = storage.partition_size(partition)
        self._pos = 0

    def read(self, n: int) -> bytes:
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        data = self._storage.read_partition(self._partition, self._pos, n, self._cached)
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> None:
        self._pos = pos


class _FileSource(Source):
    def __init__(self, storage: HandsetStorage, path: str, direct: bool = False) -> None:
        self._storage = storage
        self._path = path
        self._cached = not direct
        self.size = storage.table.sizes.get(path, 0)
        self._pos = 0

    def read(self, n: int) -> bytes:
        try:
            data = self._storage.read_file(self._path, self._pos, n, self._cached)
        except KeyError:  # deleted under us
            return b""
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> None:
        self._pos = pos


class _WriterSink(Sink):
    seekable = False

    def __init__(self, write: Writer) -> None:
        self.write = write  # type: ignore[assignment]  # the writer stands in for the method


class _NullSink(Sink):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None


class _PartitionSink(Sink):
    def __init__(self, storage: HandsetStorage, partition: str) -> None:
        self._storage = storage
        self._partition = partition
        self._size = storage.partition_size(partition)
        self._pos = 0

    def seek(self, pos: int) -> None:
        self._pos = pos

    def write(self, data: bytes | bytearray | memoryview) -> None:
        room = self._size - self._pos
        if room <= 0:
            raise _err(errno.ENOSPC)
        if len(data) > room:  # the kernel writes what fits, then says ENOSPC
            self._put(memoryview(data)[:room])
            raise _err(errno.ENOSPC)
        self._put(data)

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        if self._partition == "userdata":
            self._storage.write(self._pos, data, cached=True)
        else:
            self._storage.write_partition(self._partition, self._pos, bytes(data))
        self._pos += len(data)


class _FileSink(Sink):
    """A file of the emulated file table: appends, in-place overwrites, ENOSPC when full."""

    def __init__(self, storage: HandsetStorage, path: str, append: bool) -> None:
        self._storage = storage
        self._path = path
        self._append = append
        if path not in storage.table.files:
            storage.create_file(path)
        self._pos = storage.table.sizes[path] if append else 0
        self.dirty = True

    def seek(self, pos: int) -> None:
        if not self._append:
            self._pos = pos

    def truncate(self) -> None:
        table = self._storage.table
        if self._pos >= table.sizes.get(self._path, 0):
            return
        keep = self._storage.read_file(self._path, 0, self._pos) if self._pos else b""
        self._storage.create_file(self._path, keep)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        storage, path = self._storage, self._path
        view = memoryview(data)
        size = storage.table.sizes.get(path)
        if size is None:  # removed while open (rm -rf under a running dd): the writes vanish
            return
        if self._append:
            self._pos = size
        if self._pos > size:  # a hole: zeros, as on a file system without sparse support
            gap = self._pos - size
            self._pos = size
            while gap:
                step = min(gap, CHUNK)
                self.write(bytes(step))
                gap -= step
        if self._pos < size:
            overlap = min(size - self._pos, len(view))
            with storage._lock:
                pieces = storage.table.locate(path, self._pos, overlap)
            done = 0
            for image_off, length in pieces:
                storage.write(image_off, view[done:done + length], cached=True)
                done += length
            self._pos += overlap
            view = view[overlap:]
        if not view:
            return
        appended = storage.append_what_fits(path, view, cached=True)
        self._pos += appended
        if appended < len(view):  # the kernel writes what fits, then says ENOSPC
            raise _err(errno.ENOSPC)

    def close(self) -> None:
        self._storage.save()


class _DropCachesSink(Sink):
    """``echo 1|2|3 > /proc/sys/vm/drop_caches``: clean cached pages leave RAM."""

    def __init__(self, storage: HandsetStorage) -> None:
        self._storage = storage

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).strip() not in (b"1", b"2", b"3"):
            raise _err(errno.EINVAL)
        self._storage.drop_caches()


class _RecoveryCommandSink(Sink):
    def __init__(self, storage: HandsetStorage, append: bool) -> None:
        self._storage = storage
        if not append:
            storage.state.recovery_command = ""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._storage.state.recovery_command += bytes(data).decode("utf-8", "replace")

    def close(self) -> None:
        self._storage.save()


class Vfs:
    """Paths as a phone's shell sees them, backed by the handset's storage and state."""

    def __init__(self, ctx: ShellContext, is_root: bool) -> None:
        self.ctx = ctx
        self.storage = ctx.storage
        self.root = is_root

    # -- names --------------------------------------------------------------------------
    def norm(self, path: str) -> str:
        if not path.startswith("/"):
            path = posixpath.join(self.ctx.cwd, path)
        return _normalized(path)

    def block_partition(self, path: str) -> str | None:
        if path.startswith("/dev/block/by-name/"):
            name = path[len("/dev/block/by-name/"):]
            return name if name in PARTITION_NUMBERS else None
        disk = "mmcblk0p" if self.storage.profile.device.storage_type.lower() == "emmc" else "sda"
        m = re.fullmatch(r"/dev/block/" + disk + r"(\d+)", path)
        if m:
            for name, number in PARTITION_NUMBERS.items():
                if number == int(m.group(1)):
                    return name
        return None

    def disk_name(self) -> str:
        return "mmcblk0p" if self.storage.profile.device.storage_type.lower() == "emmc" else "sda"

    def proc_file(self, path: str) -> bytes | None:
        if path == DROP_CACHES:
            return b"0\n"
        if path == "/proc/partitions":
            lines = ["major minor  #blocks  name", ""]
            major = 179 if self.disk_name() == "mmcblk0p" else 8
            for name, number in PARTITION_NUMBERS.items():
                kib = self.storage.table_size(name) // 1024
                lines.append(f"{major:4d} {number:8d} {kib:10d} {self.disk_name()}{number}")
            return ("\n".join(lines) + "\n").encode()
        m = re.fullmatch(r"/sys/class/block/" + self.disk_name() + r"(\d+)/(size|uevent)", path)
        names = {n: name for name, n in PARTITION_NUMBERS.items()}
        if m and int(m.group(1)) in names:  # sysfs: 512-byte sectors, and the GPT name
            name, dev = names[int(m.group(1))], f"{self.disk_name()}{m.group(1)}"
            if m.group(2) == "size":
                return f"{self.storage.table_size(name) // 512}\n".encode()
            return f"MAJOR=8\nMINOR={m.group(1)}\nDEVNAME={dev}\nDEVTYPE=partition\n" \
                   f"PARTN={m.group(1)}\nPARTNAME={name}\n".encode()
        if path == "/proc/version":
            return b"Linux version 5.10.198-android13-4 (build-user@build-host) #1 SMP PREEMPT\n"
        return None

    # -- permissions ----------------------------------------------------------------------
    def _private(self, path: str) -> bool:
        """Paths the shell uid may not even look at."""
        if self.root:
            return False
        if path in ("/data", "/cache", "/metadata") or path.startswith("/dev/block"):
            return True
        if path.startswith("/data/"):
            return not (path == "/data/local" or path == "/data/local/tmp"
                        or path.startswith("/data/local/tmp/"))
        return path.startswith(("/cache/", "/metadata/"))

    def check_read(self, path: str) -> None:
        if self._private(path):
            raise _err(errno.EACCES, path)

    def check_write(self, path: str) -> None:
        if path in CHAR_DEVICES:
            return
        if any(path == r or path.startswith(r + "/") for r in READ_ONLY_ROOTS) or path in (
                "/", "/proc", "/sys", "/dev") or path.startswith(("/proc/", "/sys/")):
            raise _err(errno.EROFS, path)
        if self.root:
            return
        if self._private(path):
            raise _err(errno.EACCES, path)
        if not any(path.startswith(r + "/") for r in SHELL_WRITABLE):
            raise _err(errno.EACCES, path)

    # -- lookups --------------------------------------------------------------------------
    def kind(self, path: str) -> str | None:
        """'dir', 'file', 'chr', 'blk' or None; no permission check."""
        if path in CHAR_DEVICES:
            return "chr"
        if self.block_partition(path):
            return "blk"
        if path == RECOVERY_COMMAND:
            return "file" if self.storage.state.recovery_command else None
        if self.proc_file(path) is not None:
            return "file"
        if path in self.storage.table.files:
            return "file"
        if self.is_dir(path):
            return "dir"
        return None

    def is_dir(self, path: str) -> bool:
        if path in BUILTIN_DIRS or path in self.ctx.dirs:
            return True
        prefix = path.rstrip("/") + "/"
        if any(d.startswith(prefix) for d in self.ctx.dirs):
            return True
        return any(p.startswith(prefix) for p in self.storage.table.files)

    def lookup(self, path: str) -> str:
        """kind of an existing path the caller may see, else OSError."""
        self.check_read(path)
        kind = self.kind(path)
        if kind is None:
            raise _err(errno.ENOENT, path)
        return kind

    def size(self, path: str) -> int:
        kind = self.lookup(path)
        if kind == "file":
            if path == RECOVERY_COMMAND:
                return len(self.storage.state.recovery_command.encode())
            proc = self.proc_file(path)
            if proc is not None:
                return 0  # procfs reports 0
            return self.storage.table.sizes[path]
        return 4096 if kind == "dir" else 0

    def listdir(self, path: str) -> list[str]:
        kind = self.lookup(path)
        if kind != "dir":
            raise _err(errno.ENOTDIR, path)
        prefix = "/" if path == "/" else path + "/"
        names: set[str] = set()
        candidates: Iterable[str] = (list(BUILTIN_DIRS) + list(self.ctx.dirs)
                                     + list(self.storage.table.files) + list(CHAR_DEVICES))
        for p in candidates:
            if p.startswith(prefix) and p != prefix:
                names.add(p[len(prefix):].split("/", 1)[0])
        if path == "/dev/block/by-name":
            names.update(BLOCK_NAMES)
        elif path == "/dev/block":
            names.update(f"{self.disk_name()}{n}" for n in PARTITION_NUMBERS.values())
        elif path == "/proc":
            names.update(("partitions", "version"))
        elif path == "/cache/recovery" and self.storage.state.recovery_command:
            names.add("command")
        if path == "/":
            names.update(("etc", "bin", "d"))
        return sorted(names)

    # -- opening --------------------------------------------------------------------------
    def open_read(self, path: str, direct: bool = False) -> Source:
        kind = self.lookup(path)
        if kind == "dir":
            raise _err(errno.EISDIR, path)
        if kind == "chr":
            if path == "/dev/zero":
                return _ZeroSource()
            if path == "/dev/null":
                return _BytesSource(b"")
            return _RandomSource()
        if kind == "blk":
            return _PartitionSource(self.storage, self.block_partition(path) or "", direct)
        if path == RECOVERY_COMMAND:
            return _BytesSource(self.storage.state.recovery_command.encode())
        proc = self.proc_file(path)
        if proc is not None:
            return _BytesSource(proc)
        return _FileSource(self.storage, path, direct)

    def open_write(self, path: str, append: bool = False) -> Sink:
        """A sink positioned at 0 (or the end with ``append``); the caller truncates."""
        kind = self.kind(path)
        if kind in ("chr",):
            return _NullSink()
        if kind == "blk":
            if not self.root:
                raise _err(errno.EACCES, path)
            return _PartitionSink(self.storage, self.block_partition(path) or "")
        if kind == "dir":
            raise _err(errno.EISDIR, path)
        if path == DROP_CACHES:
            if not (self.root and self.storage.profile.access.drop_caches):
                raise _err(errno.EACCES, path)  # the shell uid, or an SELinux denial
            return _DropCachesSink(self.storage)
        self.check_write(path)
        if path == RECOVERY_COMMAND:
            return _RecoveryCommandSink(self.storage, append)
        parent = posixpath.dirname(path)
        if self.kind(parent) != "dir":
            raise _err(errno.ENOENT, path)
        return _FileSink(self.storage, path, append)

    def remove(self, path: str) -> None:
        if path == RECOVERY_COMMAND:
            self.storage.state.recovery_command = ""
        else:
            self.storage.delete_file(path)

    def glob(self, pattern: str) -> list[str]:
        """Expand wildcards in the last path component (the common case in scripts)."""
        head, tail = posixpath.split(pattern)
        if any(ch in head for ch in "*?["):
            return []
        directory = self.norm(head or ".")
        try:
            names = self.listdir(directory)
        except OSError:
            return []
        matches = [n for n in names if fnmatch.fnmatchcase(n, tail)
                   and (tail.startswith(".") or not n.startswith("."))]
        return [posixpath.join(head, n) if head else n for n in matches]


def _oserror_text(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or errno.EIO)
