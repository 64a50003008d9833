"""pymobiledevice3, driven from a job's thread: each `IosClient` owns one asyncio loop
(pymobiledevice3's connections are bound to the loop that made them) and reaches the phone
only through usbmuxd at ``address`` (None: pymobiledevice3's default, i.e.
``USBMUXD_SOCKET_ADDRESS`` or /var/run/usbmuxd).

Pairing goes through pymobiledevice3's own `LockdownClient.create` (QueryType, GetValue,
ValidatePair/StartSession, Pair with the Trust prompt, TLS), its certificates signed by this
host's one identity (host_identity.py); the new pair record is then handed to usbmuxd with
SavePairRecord at the same address, as the real usbmuxd keeps them. Connections to the
phone's ports go to the device usbmuxd listed when lockdownd was reached (``Connect`` to its
DeviceID, as libimobiledevice does), not through a new listing each time.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, TypeVar

from pymobiledevice3 import usbmux
from pymobiledevice3.exceptions import (
    ConnectionFailedError,
    ConnectionTerminatedError,
    DeviceNotFoundError,
    MuxException,
    NoDeviceConnectedError,
    PyMobileDevice3Exception,
)
from pymobiledevice3.service_connection import ServiceConnection
from pymobiledevice3.services.mobile_config import MobileConfigService

from phonewipe.erase.errors import DeviceGone, DeviceNotFound, PhonewipeError

from .host_identity import HostIdentity, HostLockdownClient

T = TypeVar("T")
LOCKDOWN_PORT = 62078
NO_BUID = "00000000-0000-0000-0000-000000000000"  # a binary-protocol usbmuxd has none
GONE = (ConnectionFailedError, ConnectionTerminatedError, DeviceNotFoundError, MuxException,
        NoDeviceConnectedError, OSError, asyncio.IncompleteReadError)
USBMUXD_ADVICE = ("start usbmuxd (`systemctl start usbmuxd`, or plug the iPhone in: its udev "
                  "rule starts it), then run again")


@dataclass(frozen=True)
class MuxEntry:
    udid: str
    device_id: int
    connection_type: str


def mux_address(address: str | None) -> str | None:
    """``UNIX:/path`` (libusbmuxd's spelling) as pymobiledevice3 takes it: the bare path."""
    if address and address.startswith("UNIX:"):
        return address[5:]
    return address or None


async def _list(address: str | None) -> list[MuxEntry]:
    return [MuxEntry(d.serial, d.devid, d.connection_type)
            for d in await usbmux.list_devices(usbmux_address=mux_address(address))]


def list_devices(address: str | None) -> list[MuxEntry]:
    """The phones usbmuxd lists (USB ones first), [] when no usbmuxd answers there."""
    try:
        found = asyncio.run(_list(address))
    except GONE:
        return []
    return sorted(found, key=lambda e: e.connection_type != "USB")


class IosClient:
    def __init__(self, address: str | None, udid: str, pair_records: Path | None,
                 host_identity: HostIdentity | None = None) -> None:
        self.address = mux_address(address)
        self.udid = udid
        self.pair_records = pair_records
        self.host_identity = host_identity  # signs the pair records this computer makes
        self.runner = asyncio.Runner()
        self.lockdown: HostLockdownClient | None = None
        self._mc: MobileConfigService | None = None  # MCInstall: preflight's, then the erase's
        self._buid: str | None = None
        self.exchanges = 0  # usbmuxd/lockdownd/service exchanges run, for the evidence

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run one exchange; a phone that stops answering or drops the link is one line
        (DeviceGone), pymobiledevice3's other errors (a refusal) pass to the caller."""
        self.exchanges += 1
        try:
            return self.runner.run(asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError:
            raise DeviceGone(f"the iPhone {self.udid} did not answer within {timeout:g} s",
                             "unlock it, unplug it and plug it back in, then run again") from None
        except GONE as exc:
            raise DeviceGone(f"the connection to the iPhone {self.udid} ended "
                             f"({type(exc).__name__}: {str(exc)[:120]})",
                             "check the cable and run again") from exc

    # -- lockdown ------------------------------------------------------------------------
    async def _device(self) -> tuple[usbmux.MuxDevice, str]:
        """This phone as usbmuxd lists it now, and usbmuxd's BUID (read once), over one
        usbmuxd connection."""
        async with await usbmux.create_mux(usbmux_address=self.address) as mux:
            if self._buid is None:
                self._buid = await mux.get_buid() if isinstance(mux, usbmux.PlistMuxConnection) \
                    else NO_BUID
            await mux.get_device_list(0.1)
            devices = list(mux.devices)
        for device in sorted(devices, key=lambda d: not d.is_usb):
            if device.matches_udid(self.udid):
                return device, self._buid
        raise DeviceNotFoundError(self.udid, f"usbmuxd does not list {self.udid}")

    async def _open(self, autopair: bool, pair_timeout: float,
                    pair_record: dict[str, Any] | None) -> HostLockdownClient:
        device, buid = await self._device()
        service = await ServiceConnection.from_socket(
            await device.connect(LOCKDOWN_PORT, usbmux_address=self.address), mux_device=device)
        try:
            lockdown = await HostLockdownClient.create(
                service, identifier=self.udid, system_buid=buid, autopair=autopair,
                pair_timeout=pair_timeout, pair_record=pair_record,
                pairing_records_cache_folder=self.pair_records, usbmux_address=self.address,
                host_identity=self.host_identity)
        except BaseException:
            await service.close()
            raise
        return lockdown

    def open(self, autopair: bool, pair_timeout: float,
             pair_record: dict[str, Any] | None = None) -> HostLockdownClient:
        """A lockdown client (paired when it could be); pymobiledevice3's errors pass."""
        self.close_lockdown()
        self.lockdown = self.run(self._open(autopair, pair_timeout, pair_record),
                                 timeout=pair_timeout + 60)
        return self.lockdown

    def value(self, domain: str | None = None, key: str | None = None) -> Any:
        assert self.lockdown is not None
        return self.run(self.lockdown.get_value(domain, key))

    def _mcinstall(self) -> MobileConfigService:
        """The session's MCInstall connection, started on first use and kept for the erase
        (one StartService and TLS handshake per job, not one per request group)."""
        assert self.lockdown is not None
        if self._mc is None:
            self._mc = MobileConfigService(self.lockdown)
        return self._mc

    def management(self) -> tuple[dict[str, Any], list[str]]:
        """(cloud configuration, installed profile identifiers), asked over MCInstall."""
        mc = self._mcinstall()

        async def ask() -> tuple[dict[str, Any], list[str]]:
            cloud = await mc.get_cloud_configuration() or {}
            profiles = (await mc.get_profile_list()).get("OrderedIdentifiers") or []
            return cloud, [str(p) for p in profiles]
        return self.run(ask())

    def erase_device(self) -> None:
        """Erase All Content and Settings; pymobiledevice3 takes the dropped link as done."""
        mc = self._mcinstall()

        async def erase() -> None:
            try:
                await mc.erase_device(preserve_data_plan=False, disallow_proximity_setup=True)
            finally:
                await mc.close()
        self.run(erase())

    # -- following the reboot -----------------------------------------------------------------
    def wait_listed(self, present: bool, timeout: float) -> float | None:
        """Seconds until the phone is (or is no longer) listed, None after ``timeout``:
        usbmuxd's Listen reports each Attached/Detached, nothing is polled."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                return self.run(self._wait(present, start, timeout), timeout=timeout + 5)
            except DeviceGone:  # usbmuxd dropped the Listen connection: listen again
                time.sleep(0.2)
        return None

    async def _wait(self, present: bool, start: float, timeout: float) -> float | None:
        mux = await usbmux.create_mux(usbmux_address=self.address)
        try:
            await mux.listen()  # first, so that no change after the look below is missed
            if (self._mine(await _list(self.address)) is not None) == present:
                return time.monotonic() - start
            # Listen first reports each attached phone, one Attached at a time: until this one
            # is reported, its absence from what was reported means nothing
            reported = False
            while (left := start + timeout - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(mux.receive_device_state_update(), left)
                except asyncio.TimeoutError:
                    return None
                devices = [MuxEntry(d.serial, d.devid, d.connection_type) for d in mux.devices]
                listed = self._mine(devices) is not None
                if listed == present and (present or reported):
                    return time.monotonic() - start
                reported = reported or listed
            return None
        finally:
            await mux.close()

    def _mine(self, entries: list[MuxEntry]) -> MuxEntry | None:
        return next((e for e in entries if e.udid.replace("-", "") == self.udid.replace("-", "")), None)

    def close_lockdown(self) -> None:
        if self._mc is not None:
            mc, self._mc = self._mc, None
            try:
                self.run(mc.close(), timeout=5)
            except (PyMobileDevice3Exception, DeviceGone):
                pass
        if self.lockdown is not None:
            lockdown, self.lockdown = self.lockdown, None
            try:
                self.run(lockdown.close(), timeout=5)
            except (PyMobileDevice3Exception, DeviceGone):
                pass

    def close(self) -> None:
        self.close_lockdown()
        self.runner.close()


def not_found(udid: str) -> DeviceNotFound:
    return DeviceNotFound(f"usbmuxd does not list the iPhone {udid}",
                          "check the cable, unlock the phone, and run `phonewipe devices`")


def usbmuxd_error(exc: BaseException) -> PhonewipeError:
    return PhonewipeError(f"usbmuxd does not answer ({type(exc).__name__}: {exc})", USBMUXD_ADVICE)
