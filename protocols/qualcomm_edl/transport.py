"""EDL over USB through pyusb: Qualcomm's 05c6:9008 device, one vendor-specific
interface (FF/FF/FF) with a bulk OUT and a bulk IN endpoint. Each Sahara packet, Firehose
document or raw data piece is one transfer.

The same code opens a real phone (libusb backend) and an emulated one (the core's
`phonewipe.erase.emulation.usbbus` backend): only the ``backend`` differs.
"""
from __future__ import annotations

import errno
import re
from array import array
from typing import Any, Iterator

import usb.core
import usb.util

from phonewipe.erase.errors import DeviceNotFound, PhonewipeError
from phonewipe.erase.usbclaim import claim_bulk_pair

from .errors import gone, timeout

QUALCOMM_VID, EDL_PID = 0x05C6, 0x9008
EDL_INTERFACE = (0xFF, 0xFF, 0xFF)
WRITE_CHUNK = 1024 * 1024
_SN = re.compile(r"_SN:([0-9A-Fa-f]{1,16})")


def find_devices(backend: Any = None) -> Iterator[usb.core.Device]:
    """Every Qualcomm device in Emergency Download mode that ``backend`` sees (none when
    there is no libusb)."""
    try:
        yield from usb.core.find(find_all=True, backend=backend, idVendor=QUALCOMM_VID,
                                 idProduct=EDL_PID)
    except usb.core.NoBackendError:
        return


def usb_address(device: usb.core.Device) -> str:
    ports = getattr(device, "port_numbers", None) or (device.port_number,)
    return f"usb:{device.bus}-{'.'.join(str(p) for p in ports)}"


def serial_of(device: usb.core.Device) -> str:
    """Newer boot ROMs name their serial in the product string (QUSB_BULK_CID:..._SN:...)."""
    try:
        product = usb.util.get_string(device, device.iProduct) or ""
    except (usb.core.USBError, ValueError, NotImplementedError):
        return ""
    match = _SN.search(product)
    return match.group(1).upper().rjust(8, "0") if match else ""


class UsbLink:
    def __init__(self, device: usb.core.Device) -> None:
        self.address = usb_address(device)
        self.device = device
        intf = _edl_interface(device)
        if intf is None:
            raise DeviceNotFound(f"the EDL device {self.address} has no interface",
                                 "re-plug it and run `phonewipe devices`")
        self.ep_out, self.ep_in = claim_bulk_pair(device, intf, self.address, gone)
        self.intf = intf
        if self.ep_out is None or self.ep_in is None:
            raise DeviceNotFound(f"the EDL device {self.address} lacks bulk endpoints",
                                 "this is not a Qualcomm EDL device")

    def _fail(self, exc: usb.core.USBError, what: str) -> PhonewipeError:
        if isinstance(exc, usb.core.USBTimeoutError) or exc.errno == errno.ETIMEDOUT:
            return timeout(self.address, what)
        return gone(self.address, what)

    def write(self, data: bytes | array[int]) -> None:
        """One transfer (pieces of WRITE_CHUNK when longer). pyusb sends an ``array('B')``
        as it is and copies bytes into one first; a memoryview it would copy byte by byte."""
        try:
            if len(data) <= WRITE_CHUNK:
                self.ep_out.write(data, 10_000)
                return
            view = memoryview(data)
            for pos in range(0, len(view), WRITE_CHUNK):
                self.ep_out.write(view[pos:pos + WRITE_CHUNK].tobytes(), 10_000)
        except usb.core.USBError as exc:
            raise self._fail(exc, "while the host was sending") from exc

    def read(self, size: int, timeout_s: float) -> bytes:
        try:
            return bytes(self.ep_in.read(size, max(1, int(timeout_s * 1000))))
        except usb.core.USBError as exc:
            raise self._fail(exc, "with a reply") from exc

    def close(self) -> None:
        try:
            usb.util.release_interface(self.device, self.intf.bInterfaceNumber)
        except (usb.core.USBError, AttributeError):
            pass
        usb.util.dispose_resources(self.device)


def _edl_interface(device: usb.core.Device) -> Any:
    for cfg in device:
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == EDL_INTERFACE:
                return intf
    return None
