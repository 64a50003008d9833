"""A phone on a real kernel: userdata is a loop device over a (possibly lying) FUSE medium,
its shell is mksh + busybox in a chroot, and an emulated adbd serves it to the real adb
server, running each command as a real process (`ChrootShell`).

The running kernel of a real phone keeps userdata open (mounted, or held by device-mapper),
so the block device's page cache lives as long as the phone runs. A holder descriptor does
that here: without it the last `dd` to close the device would drop the cache and hide the
very behaviour this tier is about.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from phonewipe.erase.emulation.personal import load_personal_data
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.protocols.adb.emulator import EmulatedAdbd

from .medium import LyingMedium, Range
from .phoneroot import PhoneSpec, build_root, mounted
from .runner import ChrootShell

MIB = 1024 * 1024
BLOCK = 4096
USERDATA_BYTES = 64 * MIB
SERIAL = "PWREAL0000"
IMEI = "356938035643809"
PROPS = {"ro.product.manufacturer": "Google", "ro.product.model": "Pixel 6a",
         "ro.serialno": SERIAL, "ro.build.version.release": "14",
         "ro.build.version.sdk": "34", "ro.build.type": "user", "ro.crypto.type": "file",
         "ro.boot.flash.locked": "0"}
FILES_AT = 1 * MIB  # where the planted personal files sit


def contiguous_drop(size: int, share: float) -> Range:
    """A contiguous, block-aligned share of the medium, past its middle."""
    length = int(size * share) // BLOCK * BLOCK
    return size * 6 // 10 // BLOCK * BLOCK, length


def make_medium_image(path: Path, size: int, drops: list[Range], seed: int = 101) -> None:
    """A used phone's storage: old ciphertext everywhere, personal files near the start, and
    as many of them as fit inside each range the medium will drop."""
    data = bytearray(random.Random(seed).randbytes(size))
    items = [item.content for item in load_personal_data()]
    _plant(data, FILES_AT, size, items)
    for start, length in drops:
        _plant(data, start, start + length, items)
    path.write_bytes(data)


def _plant(data: bytearray, start: int, end: int, items: list[bytes]) -> None:
    at = start
    for content in items:
        if at + len(content) > end:
            continue
        data[at:at + len(content)] = content
        at += -(-len(content) // BLOCK) * BLOCK


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    """A loop device on ``backing`` (direct I/O to it where the kernel allows), held open
    for its lifetime, detached at the end."""
    result = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(backing)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        result = subprocess.run(["losetup", "-f", "--show", str(backing)],
                                capture_output=True, text=True, check=True)
    device = result.stdout.strip()
    holder = None
    try:
        holder = os.open(device, os.O_RDONLY)
        yield device
    finally:
        if holder is not None:
            os.close(holder)
        subprocess.run(["losetup", "-d", device], capture_output=True)


@dataclass(frozen=True)
class CacheSelfTest:
    """What a buffered read of a dropped block shows, before and after BLKFLSBUF."""

    written: bytes
    after_sync: bytes
    after_flushbufs: bytes
    on_medium: bytes


def cache_self_test(device: str, backing: Path, offset: int) -> CacheSelfTest:
    """Write one block through the block device's page cache, sync, read it back buffered;
    then `blockdev --flushbufs` and read again. The block must lie in a dropped range."""
    written = b"PAGE-CACHE-SELF-TEST".ljust(BLOCK, b".")
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, written, offset)
        os.fsync(fd)
        after_sync = os.pread(fd, BLOCK, offset)
        subprocess.run(["blockdev", "--flushbufs", device], check=True, capture_output=True)
        after_flushbufs = os.pread(fd, BLOCK, offset)
    finally:
        os.close(fd)
    with open(backing, "rb") as f:
        f.seek(offset)
        on_medium = f.read(BLOCK)
    return CacheSelfTest(written, after_sync, after_flushbufs, on_medium)


@dataclass
class RealPhone:
    """A running phone: ``address`` for `adb connect`, ``backing`` holds what the medium
    really stored."""

    address: str
    device: str
    backing: Path
    root: Path
    drops: list[Range]
    adbd: EmulatedAdbd


def _banner_storage(directory: Path) -> HandsetStorage:
    """The adbd's own storage: only its banner and mode are used, the shell never sees it."""
    profile = dataclasses.replace(load_profile("rooted"), userdata_bytes=2 * MIB)
    return HandsetStorage.create(directory, profile, SERIAL)


@contextlib.contextmanager
def real_phone(workdir: Path, drops: list[Range] = (), rooted: bool = True,
               size: int = USERDATA_BYTES) -> Iterator[RealPhone]:
    """Everything torn down on the way out: adbd, mounts, loop device, FUSE process."""
    drops = list(drops)
    workdir.mkdir(parents=True, exist_ok=True)
    backing = workdir / "backing.img"
    make_medium_image(backing, size, drops)
    with contextlib.ExitStack() as stack:
        medium = stack.enter_context(LyingMedium(backing, workdir / "fuse", drops))
        device = stack.enter_context(loop_device(medium.path))
        if drops:
            _check_cache(cache_self_test(device, backing, drops[0][0]))
        rdev = os.stat(device).st_rdev
        spec = PhoneSpec(props=PROPS, imei=IMEI, userdata=(os.major(rdev), os.minor(rdev)),
                         rooted=rooted)
        root = stack.enter_context(mounted(build_root(workdir / "root", spec), spec))
        storage = _banner_storage(workdir / "banner")
        stack.callback(storage.close)
        adbd = EmulatedAdbd(storage, reboot_delay=0.2, shell_runner=ChrootShell(root, spec.uid))
        adbd.start()
        stack.callback(adbd.stop)
        yield RealPhone(adbd.address, device, backing, root, drops, adbd)


def _check_cache(result: CacheSelfTest) -> None:
    if result.after_sync != result.written or result.after_flushbufs != result.on_medium:
        raise RuntimeError(f"the kernel did not behave as this tier assumes: {result}")
