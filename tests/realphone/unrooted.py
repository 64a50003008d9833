"""An unrooted phone on a real kernel: /data is a real ext4 on a loop device over the (possibly
lying) FUSE medium, its shell runs as uid 2000 in the chroot, adb sync reaches the same files
as that uid, and `cmd testharness enable` resets it.

- userdata is formatted as Android formats it: ext4, 4 KiB blocks, 2 % reserved
  (``-m 2``) for the reserved_disk group (``tune2fs -g 1065``), which the shell uid is not in;
- /data holds what init makes (media/0 for /sdcard: media_rw, group sdcard_rw, setgid;
  local/tmp: shell, 0771; data/: system) and the owner's data from fixtures/personal: files
  under /sdcard (a hidden .vault/ folder among them), app databases under /data/data the
  shell cannot read, a photo of random bytes behind a JPEG header, and deleted remnants
  (written, synced, unlinked: their blocks sit in free space);
- the medium may drop a contiguous share of the device, placed inside the largest free
  extent of the populated file system, so that the fill is what the medium loses;
- Test Harness Mode reset: a phone reboots and formats /data. `TestHarnessShell` does that
  to the real /data right after `cmd testharness enable` succeeds (before its exit status
  reaches the host: the reboot itself is not modelled, adbd stays up and keeps the host's
  key, as test harness mode does) and keeps what /sdcard and /data/local/tmp held at that
  moment; getprop then says persist.sys.test_harness=1.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from phonewipe.erase.emulation.personal import PlantedItem, load_personal_data, planted_markers
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.protocols.adb import shell
from phonewipe.protocols.adb.emulator import EmulatedAdbd

from .medium import LyingMedium, Range
from .phone import (
    BLOCK,
    IMEI,
    MIB,
    PROPS,
    CacheSelfTest,
    _plant,
    cache_self_test,
    loop_device,
)
from .phoneroot import (
    AIDS,
    PERSIST_PROPS,
    SHELL_GROUPS,
    SHELL_UID,
    PhoneSpec,
    build_root,
    mounted,
)
from .runner import ChrootShell, Writer
from .syncfiles import ChrootFiles

SERIAL = "PWREAL0001"
USERDATA_BYTES = 64 * MIB
RESERVED_PERCENT = 2
MKFS = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-m", str(RESERVED_PERCENT),
        "-E", "nodiscard", "-L", "userdata"]
ABIS = {"x86_64": "x86_64", "aarch64": "arm64-v8a", "armv7l": "armeabi-v7a"}
ABI = ABIS.get(platform.machine(), platform.machine())  # the helper build that runs here
UNROOTED_PROPS = {**PROPS, "ro.serialno": SERIAL, "ro.product.cpu.abi": ABI}
REQUEST = "cache/testharness-requested"  # where the `cmd` script leaves the reset request

PHOTO_MARKER = "PWMARK-PHOTO-RANDOM-JPEG-H5V9R"  # a photo of random bytes, planted here


def _random_jpeg(marker: str, size: int, seed: int) -> bytes:
    comment = f"Camera roll {marker}".encode()
    head = (b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01"
            b"\x00\x00" + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment)
    return head + random.Random(seed).randbytes(size - len(head) - 2) + b"\xff\xd9"


def owner_items() -> list[PlantedItem]:
    """The fixtures' personal data (fixtures/personal: a hidden .vault/ among them), plus a
    photo of random bytes behind a JPEG header."""
    return [*load_personal_data(),
            PlantedItem("/sdcard/DCIM/Camera/IMG_20260105_183000.jpg",
                        _random_jpeg(PHOTO_MARKER, 768 * 1024, 7), False)]


def markers() -> list[bytes]:
    """Every marker the owner's data carries."""
    return sorted({*planted_markers(), PHOTO_MARKER.encode()})


# -- the file system ---------------------------------------------------------------------------
def format_userdata(target: str | Path) -> None:
    """ext4 as Android formats userdata: its reserved share kept for the reserved_disk group."""
    subprocess.run([*MKFS, str(target)], check=True, capture_output=True)
    subprocess.run(["tune2fs", "-g", str(AIDS["reserved_disk"]), str(target)], check=True,
                   capture_output=True)


def _mkdir(path: Path, mode: int, uid: int, gid: int) -> None:
    path.mkdir(exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def make_layout(data: Path) -> None:
    """What init makes on a fresh /data, as far as this phone uses it."""
    system, media_rw = AIDS["system"], AIDS["media_rw"]
    _mkdir(data, 0o771, system, system)
    _mkdir(data / "media", 0o771, media_rw, media_rw)
    _mkdir(data / "media/0", 0o2770, media_rw, AIDS["sdcard_rw"])
    _mkdir(data / "local", 0o751, 0, 0)
    _mkdir(data / "local/tmp", 0o771, SHELL_UID, SHELL_UID)
    _mkdir(data / "data", 0o771, system, system)
    _mkdir(data / "property", 0o711, 0, 0)


def _host_path(data: Path, phone_path: str) -> Path:
    if phone_path.startswith("/sdcard/"):
        return data / "media/0" / phone_path[len("/sdcard/"):]
    if phone_path.startswith("/data/"):
        return data / phone_path[len("/data/"):]
    raise ValueError(f"no place on /data for {phone_path}")


def _write_owned(data: Path, phone_path: str, content: bytes, app_uid: int) -> Path:
    target = _host_path(data, phone_path)
    on_sdcard = phone_path.startswith("/sdcard/")
    uid, gid = (AIDS["media_rw"], AIDS["sdcard_rw"]) if on_sdcard else (app_uid, app_uid)
    parent, missing = target.parent, []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        _mkdir(directory, 0o2770 if on_sdcard else 0o700, uid, gid)
    target.write_bytes(content)
    os.chown(target, uid, gid)
    os.chmod(target, 0o660 if on_sdcard else 0o600)
    return target


def plant_owner_data(data: Path, items: list[PlantedItem]) -> None:
    """The owner's files, then the deleted ones: written, synced, unlinked."""
    remnants = []
    for number, item in enumerate(items):
        path = item.path.removeprefix("deleted:")
        target = _write_owned(data, path, item.content, 10050 + number)
        if item.remnant:
            remnants.append(target)
    os.sync()
    for target in remnants:
        target.unlink()
    os.sync()


def free_extents(image: Path) -> list[tuple[int, int]]:
    """The file system's free block ranges (first, last), from dumpe2fs's group lists (the
    indented "Free blocks: a-b, c" lines; the header's count is not indented)."""
    out = subprocess.run(["dumpe2fs", str(image)], check=True, capture_output=True,
                         text=True).stdout
    ranges = []
    for line in out.splitlines():
        if not line.startswith("  Free blocks: "):
            continue
        for part in line[len("  Free blocks: "):].split(","):
            first, _, last = part.strip().partition("-")
            if first.isdigit():
                ranges.append((int(first), int(last or first)))
    return ranges


def drop_inside_free_space(image: Path, size: int, share: float) -> Range:
    """A contiguous ``share`` of the device inside its largest free extent (in the middle),
    where the fill goes and neither metadata nor the journal is."""
    length = int(size * share) // BLOCK * BLOCK
    first, last = max(free_extents(image), key=lambda r: r[1] - r[0])
    blocks = length // BLOCK
    if last - first + 1 < blocks:
        raise RuntimeError(f"no free extent of {blocks} blocks in {image}")
    return (first + (last - first + 1 - blocks) // 2) * BLOCK, length


def make_userdata_image(workdir: Path, size: int, items: list[PlantedItem],
                        seed: int = 202) -> Path:
    """Old ciphertext everywhere, then a fresh ext4 with /data's layout and the owner's data,
    made through a loop device of its own before the medium starts."""
    backing = workdir / "backing.img"
    backing.write_bytes(random.Random(seed).randbytes(size))
    format_userdata(backing)
    prep = workdir / "prep"
    prep.mkdir(exist_ok=True)
    with loop_device(backing) as device:
        subprocess.run(["mount", "-t", "ext4", device, str(prep)], check=True,
                       capture_output=True)
        try:
            make_layout(prep)
            plant_owner_data(prep, items)
        finally:
            subprocess.run(["umount", str(prep)], check=True, capture_output=True)
    return backing


# -- the reset -------------------------------------------------------------------------------
@dataclass
class ResetSnapshot:
    """What the phone held just before its reset: the host-side listing of /sdcard and
    /data/local/tmp (paths relative to them, hidden ones included)."""

    sdcard: list[str]
    local_tmp: list[str]


def _listing(directory: Path) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            found.append(str((Path(parent) / name).relative_to(directory)))
    return sorted(found)


class TestHarnessShell:
    """`ChrootShell`, plus what a phone does once `cmd testharness enable` succeeded: reboot
    and format /data (see the module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, shell_runner: ChrootShell, root: Path, device: str) -> None:
        self.shell = shell_runner
        self.root = root
        self.device = device
        self.resets: list[ResetSnapshot] = []
        self.least_available: int | None = None  # the least f_bavail after a command, bytes
        self._lock = threading.Lock()

    def __call__(self, command: str, stdin: shell.Reader, stdout: Writer, stderr: Writer,
                 cancelled: threading.Event) -> int:
        status = self.shell(command, stdin, stdout, stderr, cancelled)
        request = self.root / REQUEST
        with self._lock:
            fs = os.statvfs(self.root / "data")
            available = fs.f_bavail * fs.f_frsize
            if self.least_available is None or available < self.least_available:
                self.least_available = available
            if request.exists():
                request.unlink()
                self.reset()
        return status

    def reset(self) -> None:
        data = self.root / "data"
        self.resets.append(ResetSnapshot(_listing(data / "media/0"), _listing(data / "local/tmp")))
        subprocess.run(["umount", str(data)], check=True, capture_output=True)
        subprocess.run(["blockdev", "--flushbufs", self.device], check=False,
                       capture_output=True)  # RAM
        format_userdata(self.device)
        subprocess.run(["mount", "-t", "ext4", str(self.root / "dev/block/data"), str(data)],
                       check=True, capture_output=True)
        make_layout(data)
        props = data / PERSIST_PROPS.removeprefix("/data/")
        props.write_text("persist.sys.test_harness=1\n")
        props.chmod(0o644)


# -- the phone -------------------------------------------------------------------------------
@dataclass
class UnrootedPhone:
    address: str
    device: str
    backing: Path
    root: Path
    drops: list[Range]
    adbd: EmulatedAdbd
    harness: TestHarnessShell
    cache_check: CacheSelfTest | None = None
    items: list[PlantedItem] = field(default_factory=list)

    @property
    def data(self) -> Path:
        """/data as the host sees it (root)."""
        return self.root / "data"

    def surviving(self) -> list[bytes]:
        """Planted markers the medium really still stores."""
        stored = self.backing.read_bytes()
        return [m for m in markers() if m in stored]


def _banner_storage(directory: Path) -> HandsetStorage:
    """The adbd's own storage: only its banner and mode are used, the shell never sees it."""
    profile = dataclasses.replace(load_profile("unrooted"), userdata_bytes=2 * MIB)
    return HandsetStorage.create(directory, profile, SERIAL)


@contextlib.contextmanager
def unrooted_phone(workdir: Path, share: float = 0.0,
                   size: int = USERDATA_BYTES) -> Iterator[UnrootedPhone]:
    """Everything torn down on the way out: adbd, mounts, loop devices, FUSE process."""
    workdir.mkdir(parents=True, exist_ok=True)
    items = owner_items()
    backing = make_userdata_image(workdir, size, items)
    drops = [drop_inside_free_space(backing, size, share)] if share else []
    if drops:  # older copies of the owner's data in the free blocks the medium will drop
        image = bytearray(backing.read_bytes())
        for start, length in drops:
            _plant(image, start, start + length, [item.content for item in items])
        backing.write_bytes(image)
    with contextlib.ExitStack() as stack:
        medium = stack.enter_context(LyingMedium(backing, workdir / "fuse", drops))
        device = stack.enter_context(loop_device(medium.path))
        check = None
        if drops:  # a free block in the dropped range: the file system never sees this write
            check = cache_self_test(device, backing, drops[0][0] + drops[0][1] - BLOCK)
            if check.after_sync != check.written or check.after_flushbufs != check.on_medium:
                raise RuntimeError(f"the kernel did not behave as this tier assumes: {check}")
        rdev = os.stat(device).st_rdev
        node = (os.major(rdev), os.minor(rdev))
        spec = PhoneSpec(props=UNROOTED_PROPS, imei=IMEI, userdata=node, rooted=False,
                         data_device=node, toybox_dd=True)
        root = stack.enter_context(mounted(build_root(workdir / "root", spec), spec))
        storage = _banner_storage(workdir / "banner")
        stack.callback(storage.close)
        harness = TestHarnessShell(ChrootShell(root, SHELL_UID, SHELL_UID, SHELL_GROUPS), root,
                                   device)
        adbd = EmulatedAdbd(storage, reboot_delay=0.2, shell_runner=harness,
                            sync_files=ChrootFiles(root, SHELL_UID, SHELL_UID, SHELL_GROUPS))
        adbd.start()
        stack.callback(adbd.stop)
        yield UnrootedPhone(adbd.address, device, backing, root, drops, adbd, harness, check,
                            items)
