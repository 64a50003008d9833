"""What the host knows of its disks, from udev and sysfs (pyudev): vendor, model, serial,
size, transport, whether the kernel calls it removable, and its partitions.

udev's database fills in what a USB reader reports (ID_VENDOR, ID_MODEL, ID_SERIAL_SHORT,
ID_BUS); where udev has no record (a container, a loop device) sysfs attributes stand in.
A loop device has no serial of its own: its backing file's device and inode number and the
kernel's disk sequence number (which changes whenever the loop device is attached anew)
name what it holds.

A card reader's serial is the reader's, not the card's: ``diskseq`` (Linux 5.15 and later)
changes whenever a medium is changed or attached anew, so a card swapped in the same reader
is told apart from the one checked."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyudev

SECTOR = 512  # sysfs `size` counts 512-byte sectors whatever the logical block size


@dataclass(frozen=True)
class Disk:
    node: str  # /dev/sdb
    name: str  # sdb
    vendor: str
    model: str
    serial: str
    size: int  # bytes
    transport: str  # usb, mmc, ata, scsi, nvme, virtio, loop, unknown
    removable: bool
    partitions: tuple[str, ...]  # /dev/sdb1 ...
    devno: tuple[int, int]  # major, minor
    logical_block: int = SECTOR
    backing_file: str = ""  # a loop device's
    mmc_type: str = ""  # an MMC host's card: SD (a card) or MMC (often a soldered eMMC)
    diskseq: int = 0  # the kernel's count for this attachment of the medium; 0: not told
    read_only: bool = False  # an SD card's lock switch, a reader's write protect

    @property
    def internal(self) -> bool:
        """Not a medium plugged in for erasing: a fixed disk, a soldered eMMC on the host's
        own MMC bus, or a loop device (which may back anything on the host). Erased only
        when ``--block-allow-internal`` names it."""
        if self.transport == "usb":
            return False
        if self.transport == "mmc":
            return self.mmc_type != "SD"
        return not self.removable


def _attr(device: pyudev.Device, name: str) -> str:
    try:
        value = device.attributes.get(name)
    except (OSError, KeyError):
        return ""
    return value.decode(errors="replace").strip() if value else ""


def _transport(device: pyudev.Device) -> str:
    bus = device.properties.get("ID_BUS", "")
    path = device.sys_path
    if device.sys_name.startswith("loop"):
        return "loop"
    for marker, name in (("/usb", "usb"), ("/mmc_host/", "mmc"), ("/nvme", "nvme"),
                         ("/virtio", "virtio"), ("/ata", "ata")):
        if marker in path:
            return name
    return bus or "unknown"


def _loop_serial(device: pyudev.Device, backing: str) -> str:
    seq = _attr(device, "diskseq")
    try:
        st = os.stat(backing)
        return f"LOOP-{st.st_dev:x}-{st.st_ino:x}-{seq or 0}"
    except OSError:
        return f"LOOP-{device.sys_name}-{seq or 0}"


def describe(device: pyudev.Device) -> Disk:
    props = device.properties
    parent = device.find_parent("scsi", "scsi_device")
    backing = _attr(device, "loop/backing_file")
    vendor = props.get("ID_VENDOR", "") or (_attr(parent, "vendor") if parent else "")
    model = props.get("ID_MODEL", "") or _attr(device, "device/model") or \
        (_attr(parent, "model") if parent else "")
    serial = props.get("ID_SERIAL_SHORT", "") or _attr(device, "device/serial")
    if not serial and backing:
        serial = _loop_serial(device, backing)
    if device.sys_name.startswith("loop"):
        vendor, model = vendor or "Linux", model or "loop device"
    node = device.device_node or f"/dev/{device.sys_name}"
    partitions = tuple(sorted(child.device_node or f"/dev/{child.sys_name}"
                              for child in device.children
                              if child.properties.get("DEVTYPE") == "partition"))
    return Disk(node=node, name=device.sys_name, vendor=vendor, model=model, serial=serial,
                size=int(_attr(device, "size") or 0) * SECTOR, transport=_transport(device),
                removable=_attr(device, "removable") == "1", partitions=partitions,
                devno=(os.major(device.device_number), os.minor(device.device_number)),
                logical_block=int(_attr(device, "queue/logical_block_size") or SECTOR),
                backing_file=backing,
                mmc_type=_attr(device, "device/type") if _transport(device) == "mmc" else "",
                diskseq=_number(_attr(device, "diskseq")), read_only=_attr(device, "ro") == "1")


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def list_disks(context: pyudev.Context | None = None) -> list[Disk]:
    context = context or pyudev.Context()
    return [describe(d) for d in context.list_devices(subsystem="block", DEVTYPE="disk")
            if not d.sys_name.startswith(("ram", "zram", "dm-", "md", "sr"))]


def find_disk(node: str, context: pyudev.Context | None = None) -> Disk | None:
    """The whole disk at ``node`` (a path or a /dev/disk/by-* link), or None."""
    real = os.path.realpath(node)
    if not Path(real).exists():
        return None
    context = context or pyudev.Context()
    try:
        device = pyudev.Devices.from_device_file(context, real)
    except (pyudev.DeviceNotFoundError, ValueError, OSError):
        return None
    if device.subsystem != "block" or device.properties.get("DEVTYPE") != "disk":
        return None
    return describe(device)
