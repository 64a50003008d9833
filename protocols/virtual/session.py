"""One virtual handset: identify from its profile, preflight from its state, overwrite its
userdata through the emulated kernel (``storage.write(..., cached=True)``: the page cache
keeps what a lying medium dropped), and read it back past that cache."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import DeviceGone, MediumUnreachable, PhonewipeError
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
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, Extent, ProgressFn, Session

if TYPE_CHECKING:
    from . import VirtualPlugin

CHUNK = 1 << 20
BLOCK = 4096

PATTERN = EraseMethod(
    name="virtual-pattern",
    title="Overwrite of the userdata partition with a keyed pattern (virtual handset)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="Writes the host's keyed pseudo-random stream over all of userdata through "
                "the handset's kernel; read back past its page cache.")
ZEROS = EraseMethod(
    name="virtual-zeros",
    title="Overwrite of the userdata partition with zeros (virtual handset)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.ZEROS,
    description="Writes zeros over all of userdata through the handset's kernel; read back "
                "past its page cache.")

GONE_ADVICE = "check the handset's connection, then run again"


class VirtualReader:
    """Read-back of userdata. Reads are buffered (through the emulated kernel's page cache)
    unless the handset only allows direct reads; `bypass_cache` gets past the cache the
    way the profile's ``[access]`` allows, or says that nothing can."""

    block_size = BLOCK

    def __init__(self, session: "VirtualSession") -> None:
        self.session = session
        self.storage = session.storage
        self.size = self.storage.size
        self.direct = False

    def bypass_cache(self) -> str:
        access = self.storage.profile.access
        self.session.count("cache_bypasses")
        if access.flushbufs or access.drop_caches:
            self.storage.drop_caches()
            how = "BLKFLSBUF" if access.flushbufs else "drop_caches"
            return f"dropped the emulated page cache ({how}) before reading"
        if access.direct_io:
            self.direct = True
            return "direct reads (O_DIRECT), past the emulated page cache"
        raise MediumUnreachable("the virtual handset allows neither dropping its page cache nor "
                                "direct reads, so a read-back could come from RAM",
                                "use a handset profile with flushbufs, drop_caches or direct_io")

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        for offset, length in extents:
            if self.storage.faults.unplugged:
                raise DeviceGone("the virtual handset left the bus while being read", GONE_ADVICE)
            self.session.count("reads")
            try:
                yield self.storage.read(offset, length, cached=not self.direct)
            except OSError:  # an unreadable sector
                yield None


class VirtualSession(Session):
    """``plugin`` is None for a storage on no bus (a test bench that plugs phones itself):
    then only an unplug fault makes it absent."""

    def __init__(self, plugin: "VirtualPlugin | None", endpoint: Endpoint,
                 storage: HandsetStorage) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.storage = storage
        self._identity: Identity | None = None
        self.counts: dict[str, int] = {"writes": 0, "bytes_written": 0, "reads": 0,
                                       "cache_bypasses": 0}

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def _check_present(self) -> None:
        if self.storage.faults.unplugged or (
                self.plugin is not None and self.plugin.bus.get(self.endpoint.address) is None):
            raise DeviceGone("the virtual handset is no longer on the bus", GONE_ADVICE)

    # -- who it is and what stands in the way ---------------------------------------------
    def identify(self) -> Identity:
        self._check_present()
        device, state = self.storage.profile.device, self.storage.state
        self._identity = Identity(
            platform="android", manufacturer=device.manufacturer, model=device.model,
            serial=state.serial,
            imeis=tuple(state.imeis) or ((device.imei,) if device.imei else ()),
            os_version=device.android, storage_type=device.storage_type,
            capacity_bytes=self.storage.size, bootloader_locked=state.bootloader_locked,
            encryption=device.crypto_type, build_type=device.build_type)
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def preflight(self) -> list[Finding]:
        self._check_present()
        if self._identity is None:
            self.identify()
        state = self.storage.state
        findings = []
        if state.google_accounts:
            findings.append(Finding(
                Severity.BLOCKER, "frp-google-account",
                f"A Google account ({', '.join(state.google_accounts)}) is signed in, so Factory "
                "Reset Protection would lock the next owner out: remove the account in Settings > "
                "Accounts, then run again."))
        else:
            findings.append(Finding(Severity.INFO, "frp-clear", "No Google account is signed in: "
                                    "Factory Reset Protection will not engage."))
        if state.device_owner:
            findings.append(Finding(
                Severity.BLOCKER, "mdm-device-owner",
                f"The phone is managed by {state.device_owner} (MDM device owner): have the "
                "organisation release it from management, then run again."))
        else:
            findings.append(Finding(Severity.INFO, "mdm-clear", "No device owner or MDM enrolment."))
        if state.screen_lock:
            findings.append(Finding(Severity.WARNING, "screen-lock",
                                    "A screen lock is set (the overwrite of userdata removes it)."))
        assert self._identity is not None
        self._identity = replace(self._identity, frp=bool(state.google_accounts),
                                 mdm=bool(state.device_owner))
        return findings

    def methods(self) -> list[EraseMethod]:
        return [PATTERN, ZEROS]

    # -- the erase --------------------------------------------------------------------------
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method not in (PATTERN, ZEROS):
            raise PhonewipeError(f"method {method.name} is not a virtual-handset method",
                                 "choose one listed by the device")
        self._check_present()
        size = self.storage.size
        stream = PatternStream(context.pattern_key) if method is PATTERN else None
        zeros = bytes(CHUNK)
        for offset in range(0, size, CHUNK):
            n = min(CHUNK, size - offset)
            data = stream.next(n) if stream is not None else zeros[:n]
            try:
                self.storage.write(offset, data, cached=True)
            except DeviceUnplugged as exc:
                raise DeviceGone(f"the virtual handset left the bus while being erased ({exc})",
                                 GONE_ADVICE) from exc
            self.count("writes")
            self.count("bytes_written", n)
            progress(offset + n, size)
        return EraseReport(size, method.expectation, f"userdata partition, {size / 2**20:.0f} MiB",
                           {"protocol": "virtual", "written_through": "the emulated kernel"},
                           # the partition table: larger than `size` on a handset hiding an area
                           {"partition table": self.storage.table_size("userdata")})

    def reader(self) -> BlockReader | None:
        return VirtualReader(self)

    def readback(self) -> BlockReader | None:
        return VirtualReader(self)

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        """The overwrite took the file system, the accounts and the device owner with it."""
        self.storage.userdata_wiped()
        return {"file_system": "gone with the overwrite (the handset formats userdata at "
                               "next boot)"}

    def transcript(self) -> dict[str, Any]:
        return {"protocol": "virtual", **self.counts}

    def post_state(self) -> dict[str, Any]:
        state = self.storage.state
        return {"mode": self.endpoint.mode, "google_accounts": len(state.google_accounts),
                "device_owner": bool(state.device_owner), "screen_lock": state.screen_lock}
