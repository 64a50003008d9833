"""Whether a disk may be written: never one mounted (itself or a partition), holding swap,
held by another block device (device-mapper, md, a loop device over it), holding the
running system, or a fixed internal disk that ``--block-allow-internal`` does not name.

Each refusal is one sentence saying what to do; `Refusal.code` goes on the record. The
kernel has the last word: the checks end by asking it for the device exclusively (which
finds a mount no mount table here shows), and the device is opened O_EXCL to write."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .disks import Disk


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def _devno(text: str) -> tuple[int, int] | None:
    major, _, minor = text.partition(":")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def _own_devnos(disk: Disk) -> set[tuple[int, int]]:
    """The disk's and its partitions' device numbers."""
    numbers = {disk.devno}
    for part in disk.partitions:
        try:
            st = os.stat(part)
        except OSError:
            continue
        numbers.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
    sysfs = Path("/sys/class/block") / disk.name
    for child in sysfs.glob(f"{disk.name}*/dev"):
        found = _devno(child.read_text().strip())
        if found:
            numbers.add(found)
    return numbers


def mounted_at(disk: Disk, mountinfo: str | None = None) -> list[str]:
    """Mount points of the disk or its partitions (/proc/self/mountinfo, by device number)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    own = _own_devnos(disk)
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and _devno(fields[2]) in own:
            points.append(fields[4].replace("\\040", " "))
    return points


def _swaps(disk: Disk) -> list[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    own = {disk.node, *disk.partitions}
    return [line.split()[0] for line in lines if line.split() and
            os.path.realpath(line.split()[0]) in own]


def _holders(disk: Disk) -> list[str]:
    base = Path("/sys/class/block") / disk.name
    names = [p.name for p in (base / "holders").glob("*")]
    for part in base.glob(f"{disk.name}*/holders/*"):
        names.append(part.name)
    return sorted(set(names))


def claimed_elsewhere(disk: Disk) -> bool:
    """The kernel will not give the disk exclusively: mounted where this process's mount
    table does not show it (another mount namespace, a container), or claimed by a file
    system that spans disks (btrfs), a device-mapper or a program that holds it O_EXCL."""
    try:
        fd = os.open(disk.node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno == errno.EBUSY  # any other error is the open's to report
    os.close(fd)
    return False


def _root_devno() -> tuple[int, int]:
    st = os.stat("/")
    return os.major(st.st_dev), os.minor(st.st_dev)


def refusal(disk: Disk, allowed_internal: set[str]) -> Refusal | None:
    """Why ``disk`` must not be written, or None."""
    where = mounted_at(disk)
    if where:
        return Refusal("block-mounted", f"{disk.node} is mounted ({', '.join(where[:3])}): "
                       "unmount it (and each of its partitions) first, then run again")
    if _root_devno() in _own_devnos(disk):
        return Refusal("block-system-disk", f"{disk.node} holds the running system: "
                       "it is never erased from itself")
    swaps = _swaps(disk)
    if swaps:
        return Refusal("block-swap", f"{disk.node} holds active swap ({', '.join(swaps)}): "
                       "swapoff it first, then run again")
    holders = _holders(disk)
    if holders:
        return Refusal("block-held", f"{disk.node} is in use by {', '.join(holders)} "
                       "(device-mapper, RAID or a loop device): release it first")
    if disk.read_only:
        return Refusal("block-read-only", f"{disk.node} is read-only (a card's lock switch or "
                       "the reader's write protect): unlock it, plug it in again, then run again")
    if claimed_elsewhere(disk):
        return Refusal("block-busy", f"{disk.node} is in use, though no mount here shows it "
                       "(mounted in another mount namespace or container, or held open "
                       "exclusively by a program): release it there, then run again")
    if disk.internal and not ({disk.node, os.path.realpath(disk.node)} & allowed_internal):
        return Refusal("block-internal", f"{disk.node} is a fixed {disk.transport} disk, not a "
                       f"removable medium: name it with --block-allow-internal {disk.node} "
                       "if it really is the medium to erase")
    return None
