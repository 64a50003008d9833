"""Whether a disk offers a sanitize command (Purge, NIST SP 800-88 / IEEE 2883) through
what connects it: asked, never assumed. SCSI disks and USB readers are asked with REPORT
SUPPORTED OPERATION CODES, then (an ATA disk behind a SCSI/ATA bridge) with IDENTIFY
DEVICE in an ATA PASS-THROUGH; NVMe with Identify Controller. Anything short of a clear
"supported" — the ioctl failing (a loop device), the reader refusing, garbage — is "not
offered", with why.

This version reports what the device offers and sends no sanitize: the methods stay the
overwrites, verified by read-back."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .disks import Disk
from .passthrough import (
    ATA_IDENTIFY_LENGTH,
    KINDS,
    NVME_IDENTIFY_LENGTH,
    RSOC_LENGTH,
    SANITIZE,
    SCSI_SERVICE_ACTIONS,
    ata_identify_cdb,
    parse_ata_identify,
    parse_nvme_identify,
    rsoc_cdb,
    rsoc_supported,
)
from .sgio import (
    NoPassthrough,
    PassthroughError,
    nvme_identify_controller,
    open_for_query,
    scsi_read,
)


@dataclass(frozen=True)
class Support:
    """What the device said: the sanitize kinds it supports through ``interface``, or, when
    none, why none is offered."""

    interface: str = ""  # "SCSI", "ATA through a SCSI/ATA bridge", "NVMe"
    kinds: tuple[str, ...] = ()
    why_not: str = ""
    model: str = ""  # the model the ATA or NVMe identify data names

    def describe(self) -> str:
        if not self.kinds:
            return f"not offered: {self.why_not}"
        model = f" ({self.model})" if self.model else ""
        return f"{self.interface} sanitize{model}: {', '.join(self.kinds)}"


def detect(disk: Disk) -> Support:
    if disk.transport == "mmc":
        return Support(why_not=f"{disk.node} is a card on an MMC host, which takes no ATA, "
                               "SCSI or NVMe command (eMMC SANITIZE is not sent by this version)")
    try:
        fd = open_for_query(disk.node)
    except OSError as exc:
        return Support(why_not=f"{disk.node} could not be opened to ask ({exc.strerror})")
    try:
        if disk.transport == "nvme":
            return _nvme(fd, disk.node)
        return scsi_or_ata(disk.node, lambda cdb, length: scsi_read(fd, cdb, length).data)
    finally:
        os.close(fd)


def _nvme(fd: int, node: str) -> Support:
    try:
        found = parse_nvme_identify(nvme_identify_controller(fd, NVME_IDENTIFY_LENGTH))
    except NoPassthrough as exc:
        return Support(why_not=f"{node} {exc}")
    except PassthroughError as exc:
        return Support(why_not=f"{node} answered Identify Controller with {exc}")
    if found is None:
        return Support(why_not=f"{node} answered Identify Controller with no controller data")
    if not found.kinds:
        return Support(why_not=f"{node} ({found.model}) supports no NVMe sanitize (SANICAP 0)")
    return Support("NVMe", found.kinds, model=found.model)


Ask = Callable[[bytes, int], bytes]
"""ask(cdb, length): the device's answer to a SCSI command that reads; PassthroughError
when it refuses (sgio.scsi_read)."""


def scsi_or_ata(node: str, ask: Ask) -> Support:
    """SCSI SANITIZE's service actions first; else an ATA disk's behind a SAT bridge."""
    try:
        kinds = tuple(k for k in KINDS if rsoc_supported(
            ask(rsoc_cdb(SANITIZE, SCSI_SERVICE_ACTIONS[k]), RSOC_LENGTH)))
        scsi = "SANITIZE not supported" if not kinds else ""
    except NoPassthrough as exc:
        return Support(why_not=f"{node} {exc}")
    except PassthroughError as exc:
        kinds, scsi = (), str(exc)
    if kinds:
        return Support("SCSI", kinds)
    try:
        found = parse_ata_identify(ask(ata_identify_cdb(), ATA_IDENTIFY_LENGTH))
        ata = "no ATA identify data came back" if found is None else \
            f"the ATA disk ({found.model}) has no sanitize feature set"
    except PassthroughError as exc:
        found, ata = None, str(exc)
    if found is not None and found.kinds:
        return Support("ATA through a SCSI/ATA bridge", found.kinds, model=found.model)
    return Support(why_not=f"{node} answered REPORT SUPPORTED OPERATION CODES: {scsi}; "
                           f"ATA IDENTIFY (pass-through): {ata}")
