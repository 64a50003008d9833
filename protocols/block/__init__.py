"""block plugin: any storage the host sees as a disk — a phone's eMMC or UFS chip in a USB
reader, a phone in mass-storage mode (a Lumia, an N900), an SD card out of a phone.

Discovery through udev and sysfs (pyudev, disks.py); removable media and disks behind USB or
MMC hosts are listed, a fixed disk or a loop device only when ``--block-allow-internal``
names it. Nothing is written to a disk that is mounted, holds the running system or swap,
or is claimed by another device (safety.py); the disk is re-identified by serial and size
just before writing and opened O_EXCL. The methods are overwrites with direct I/O, read
back directly (session.py). What the host cannot see (IMEI, asset tag, the phone's make and
model) the operator enters, and the record marks it operator-entered.

The emulator (emulator.py) attaches an emulated handset's storage image to a real loop
device: it needs root and the loop driver, and says so when it cannot.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from phonewipe.erase.errors import DeviceNotFound, UsageError
from phonewipe.erase.identity import imei_ok
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session

from .disks import Disk, find_disk, list_disks
from .session import METHODS, BlockSession, OperatorEntered

MODE = "block"


class BlockPlugin(Plugin):
    name = "block"
    modes: tuple[str, ...] = (MODE,)
    reads_back = True
    has_emulator = True
    method_names = tuple(m.name for m in METHODS)
    option_specs = (
        PluginOption("allow_internal", "erase this fixed disk or loop device (repeatable); "
                     "without it only removable media and USB/MMC disks are listed",
                     multiple=True, metavar="DEV", aliases=("--allow-internal",)),
        PluginOption("scan", "list removable media and USB/MMC disks", type=bool, default=True),
        PluginOption("imei", "IMEI from the phone's label (repeatable; marked "
                     "operator-entered)", multiple=True, metavar="IMEI"),
        PluginOption("asset_tag", "asset tag on the phone (marked operator-entered)"),
        PluginOption("manufacturer", "the phone's make, from its label (operator-entered)"),
        PluginOption("model", "the phone's model, from its label (operator-entered)"),
        PluginOption("storage", "the medium: eMMC, UFS, SD... (operator-entered)"),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        # emulated handsets' loop devices, shared by every instance with these options
        self.emulated: dict[str, Any] = self.options.values.setdefault("block_emulated", {})
        self.imeis = _imeis(self.option("imei") or ())

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        return {"block_scan": False}  # a private bench never lists the host's own disks

    def allowed_internal(self) -> set[str]:
        named = list(self.option("allow_internal") or []) + list(self.emulated)
        return {os.path.realpath(n) for n in named} | set(named)

    def entered(self) -> OperatorEntered:
        return OperatorEntered(
            imeis=self.imeis, asset_tag=self.option("asset_tag") or "",
            manufacturer=self.option("manufacturer") or "", model=self.option("model") or "",
            storage_type=self.option("storage") or "")

    def _wanted(self) -> list[Disk]:
        disks: dict[str, Disk] = {}
        if self.option("scan"):
            disks.update((d.node, d) for d in list_disks() if not d.internal and d.size > 0)
        for node in sorted(self.allowed_internal()):
            disk = find_disk(node)
            if disk is not None and disk.size > 0:
                disks[disk.node] = disk
        return list(disks.values())

    def discover(self) -> list[Endpoint]:
        return [Endpoint(self.name, MODE, d.node, self._label(d)) for d in self._wanted()]

    def _label(self, disk: Disk) -> str:
        emulated = self.emulated.get(disk.node)
        return emulated.serial if emulated is not None else disk.serial or disk.node

    def open(self, endpoint: Endpoint) -> Session:
        disk = find_disk(endpoint.address)
        if disk is None or disk.size == 0:
            raise DeviceNotFound(f"no disk at {endpoint.address}",
                                 "check the reader and its cable; see `phonewipe devices`")
        entered = self.entered()
        emulated = self.emulated.get(disk.node)
        if emulated is not None:  # an emulated handset: its profile is the "label"
            return BlockSession(endpoint, disk, self.allowed_internal(), emulated.entered,
                                emulated.serial)
        return BlockSession(endpoint, disk, self.allowed_internal(), entered)

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        if profile.access.start_mode != MODE:
            return None
        from .emulator import LoopHandset
        return LoopHandset.start(self, storage, profile)


def _imeis(values: Any) -> tuple[str, ...]:
    """The operator's IMEIs (spaces dropped); UsageError for one that is not 15 digits with a
    valid Luhn check digit (a label misread), before any disk is touched."""
    out = []
    for value in values:
        imei = str(value).strip().replace(" ", "")
        if not imei_ok(imei):
            raise UsageError(f"--block-imei {value!r} is not a valid IMEI",
                             "type the 15 digits from the phone's label again")
        out.append(imei)
    return tuple(out)
