"""One phone in the bootloader: identify and preflight from getvar, erase by discard or by
flashing a keyed pattern image, or the unlock wipe. No read-back: `reader()` is None."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Expectation,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.pattern import pattern_bytes
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, ProgressFn, Session

from .client import FastbootClient, FastbootFailed

if TYPE_CHECKING:
    from . import FastbootPlugin

RAW_PATTERN = EraseMethod(
    name="fastboot-raw-pattern",
    title="Overwrite of the userdata partition with a keyed pattern image (fastboot flash)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=False,
    expectation=Expectation.PATTERN,
    description="The host streams a keyed pseudo-random image over the whole userdata "
                "partition as sparse pieces; fastboot cannot read it back.")
DISCARD = EraseMethod(
    name="fastboot-erase",
    title="fastboot erase (discard) of userdata and metadata",
    category=Category.CLEAR, technique=Technique.BLOCK_ERASE, verifiable=False,
    expectation=Expectation.ZEROS,
    description="`fastboot erase` of userdata and metadata: the flash controller discards "
                "the blocks (and the metadata encryption key with them); reads of discarded "
                "blocks return zeros on devices that guarantee it.")
UNLOCK_WIPE = EraseMethod(
    name="fastboot-unlock-wipe",
    title="Bootloader unlock wipe (fastboot flashing unlock)",
    category=Category.CLEAR, technique=Technique.FACTORY_RESET, verifiable=False,
    expectation=None,
    description="`fastboot flashing unlock`: after the owner confirms on screen, the "
                "bootloader wipes user data (vendor-attested; not observable over fastboot).")

LOCKED_ADVICE = ("The bootloader is locked, so fastboot can neither erase nor flash: enable "
                 "\"OEM unlocking\" in Developer options and run again to use the unlock wipe, "
                 "or boot the phone into Android and erase it over adb (Android 7 or later). A "
                 "phone that allows neither (Android 6 or older without OEM unlocking): "
                 "factory-reset it from the recovery menu (power off, hold power + volume down, "
                 "choose Recovery mode, then Wipe data/factory reset); phonewipe cannot verify or "
                 "certify that reset, so record the phone as not erased here and route it to "
                 "destruction if its data must be proven gone.")


class FastbootSession(Session):
    def __init__(self, plugin: "FastbootPlugin", endpoint: Endpoint, client: FastbootClient) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.client = client
        self.vars: dict[str, str] = {}
        self.unlockable: bool | None = None
        self._identity: Identity | None = None
        self.rebooted = False

    def _var(self, name: str) -> str | None:
        if name not in self.vars:
            try:
                self.vars[name] = self.client.getvar(name)
            except FastbootFailed:
                return None
        return self.vars[name]

    def _size(self, partition: str) -> int | None:
        text = self._var(f"partition-size:{partition}")
        try:
            return int(text, 0) if text else None
        except ValueError:
            return None

    @property
    def locked(self) -> bool:
        return self._var("unlocked") != "yes"

    def identify(self) -> Identity:
        try:
            self.vars = self.client.getvar_all()
        except FastbootFailed:
            self.vars = {}  # some bootloaders lack `getvar all`: ask one by one
        variant = (self._var("variant") or "").upper()
        storage = next((t for t in ("UFS", "eMMC") if t.upper() in variant), None)
        self._identity = Identity(
            platform="android", model=self._var("product"), serial=self._var("serialno"),
            storage_type=storage, capacity_bytes=self._size("userdata"),
            bootloader_locked=self.locked)
        return self._identity

    def preflight(self) -> list[Finding]:
        if self._identity is None:
            self.identify()
        findings = [Finding(Severity.INFO, "FASTBOOT_NO_READBACK",
                            "fastboot cannot read storage back: the erase is verified only if "
                            "the phone returns to adb with root (rooted or engineering build).")]
        if self._size("userdata") is None:
            findings.append(Finding(Severity.BLOCKER, "NO_USERDATA",
                                    "The bootloader reports no userdata partition: erase this "
                                    "phone over adb or with the vendor's tool."))
        if self.locked:
            self.unlockable = self.client.unlock_ability()
            if self.unlockable:
                findings.append(Finding(Severity.WARNING, "BOOTLOADER_LOCKED_UNLOCKABLE",
                                        "The bootloader is locked but OEM unlocking is allowed: "
                                        "the unlock wipe will run; confirm it on the phone's "
                                        "screen with the volume and power keys."))
            else:
                findings.append(Finding(Severity.BLOCKER, "BOOTLOADER_LOCKED", LOCKED_ADVICE))
        slots = self._var("slot-count")
        if slots and slots not in ("0", "1"):
            findings.append(Finding(Severity.INFO, "AB_SLOTS",
                                    f"A/B device ({slots} slots, current slot "
                                    f"{self._var('current-slot') or 'unknown'})."))
        return findings

    def methods(self) -> list[EraseMethod]:
        if self._size("userdata") is None:
            return []
        if self.locked:
            return [UNLOCK_WIPE] if self.unlockable else []
        return [RAW_PATTERN, DISCARD]

    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        size = self._size("userdata") or 0
        mib = f"{size / 2**20:.0f} MiB"
        evidence = {"getvar partition-size:userdata": size}
        if method is RAW_PATTERN:
            key = context.pattern_key
            downloads = self.client.flash_stream("userdata", size,
                                                 lambda off, n: pattern_bytes(key, off, n), progress)
            return EraseReport(size, Expectation.PATTERN, f"userdata partition, {mib}",
                               {"protocol": "fastboot", "downloads": downloads,
                                "image": "sparse pieces" if downloads > 1 else "raw"}, evidence)
        if method is DISCARD:
            self.client.erase("userdata")
            progress(size, size)
            erased = ["userdata"]
            if self._size("metadata") is not None:
                self.client.erase("metadata")
                erased.append("metadata")
            return EraseReport(0, Expectation.ZEROS, f"userdata partition, {mib} (discarded)",
                               {"protocol": "fastboot", "erased": erased}, evidence)
        if method is UNLOCK_WIPE:
            self.client.flashing_unlock()
            self.vars.pop("unlocked", None)
            return EraseReport(0, None, f"userdata partition, {mib} (bootloader unlock wipe)",
                               {"protocol": "fastboot", "unlocked": not self.locked}, evidence)
        raise PhonewipeError(f"method {method.name} is not a fastboot method",
                             "choose one listed by the device")

    def reader(self) -> BlockReader | None:
        return None

    def reboot_to(self, mode: str) -> bool:
        if mode != "adb":
            return False
        self.client.reboot()
        self.rebooted = True
        return True

    def transcript(self) -> dict[str, Any]:
        return self.client.transcript.to_dict()

    def post_state(self) -> dict[str, Any]:
        if self.rebooted:
            return {"mode": "rebooted to Android"}
        self.vars.pop("unlocked", None)
        try:
            return {"mode": "fastboot", "bootloader": "locked" if self.locked else "unlocked"}
        except PhonewipeError:
            return {"mode": "unknown (the phone left the bootloader)"}

    def close(self) -> None:
        self.client.close()
