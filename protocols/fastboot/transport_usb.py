"""fastboot over USB through pyusb: the interface with class/subclass/protocol FF/42/03,
one bulk OUT and one bulk IN endpoint. Commands are one OUT transfer; each reply is one IN
transfer (a zero-length packet after a reply that fills whole packets is skipped).

The same code opens a real phone (libusb backend) and an emulated one (the core's
`phonewipe.erase.emulation.usbbus` backend): only the ``backend`` differs.
"""
from __future__ import annotations

import errno
import time
from typing import Any, Iterator

import usb.core
import usb.util

from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.usbclaim import claim_bulk_pair

from .wire import FastbootTimeout, gone, not_found

FASTBOOT_INTERFACE = (0xFF, 0x42, 0x03)
WRITE_CHUNK = 1024 * 1024
READ_SIZE = 512  # one high-speed packet, so a reply longer than 256 bytes shows


def _fastboot_interface(device: usb.core.Device) -> Any:
    for cfg in device:
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass,
                    intf.bInterfaceProtocol) == FASTBOOT_INTERFACE:
                return intf
    return None


def find_devices(backend: Any = None) -> Iterator[usb.core.Device]:
    """Every USB device with a fastboot interface that ``backend`` sees (none when there
    is no libusb)."""
    try:
        found = usb.core.find(find_all=True, backend=backend,
                              custom_match=lambda d: _fastboot_interface(d) is not None)
        yield from found
    except usb.core.NoBackendError:
        return


def usb_address(device: usb.core.Device) -> str:
    """``usb:BUS-PORT.PORT...`` as the fastboot tool names a device (stable across
    re-enumeration, unlike the device address)."""
    ports = getattr(device, "port_numbers", None) or (device.port_number,)
    return f"usb:{device.bus}-{'.'.join(str(p) for p in ports)}"


def _is_gone(exc: usb.core.USBError) -> bool:
    return exc.errno in (errno.ENODEV, errno.EIO, errno.EPIPE) or \
        getattr(exc, "backend_error_code", None) in (-4, -1)


class UsbTransport:
    def __init__(self, device: usb.core.Device, backend: Any = None, timeout: float = 5.0) -> None:
        self.backend = backend
        self.timeout = timeout
        self.address = usb_address(device)
        self._open(device)

    def _open(self, device: usb.core.Device) -> None:
        intf = _fastboot_interface(device)
        if intf is None:
            raise not_found(self.address, "the USB device has no fastboot interface")
        self.ep_out, self.ep_in = claim_bulk_pair(device, intf, self.address, gone)
        self.device = device
        self.intf = intf
        if self.ep_out is None or self.ep_in is None:
            raise not_found(self.address, "the fastboot interface lacks bulk endpoints")
        self.serial = usb.util.get_string(device, device.iSerialNumber) if device.iSerialNumber else None

    def _fail(self, exc: usb.core.USBError, what: str) -> PhonewipeError:
        if isinstance(exc, usb.core.USBTimeoutError) or exc.errno == errno.ETIMEDOUT:
            return FastbootTimeout(f"the fastboot device {self.address} did not answer {what}",
                                   "check that the phone is in the bootloader and not frozen; "
                                   "reboot it to the bootloader and run again")
        return gone(self.address, what)

    def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            for pos in range(0, len(view), WRITE_CHUNK):
                self.ep_out.write(view[pos:pos + WRITE_CHUNK], int(self.timeout * 1000))
            if not len(view):
                self.ep_out.write(b"", int(self.timeout * 1000))
        except usb.core.USBError as exc:
            raise self._fail(exc, "while the host was sending") from exc

    def recv(self, timeout: float | None) -> bytes:
        ms = int(timeout * 1000) if timeout else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                data = bytes(self.ep_in.read(READ_SIZE, ms))
            except usb.core.USBError as exc:
                raise self._fail(exc, "with a reply") from exc
            if data:
                return data  # longer than MAX_REPLY: parse_reply reports it as oversized
            if deadline is not None and time.monotonic() > deadline:
                raise FastbootTimeout(f"the fastboot device {self.address} sent only empty "
                                      "packets", "reboot it to the bootloader and run again")

    def reopen(self, timeout: float) -> None:
        """Find the same phone again (by serial, else by port) after it re-enumerated."""
        self.close()
        deadline = time.monotonic() + timeout
        while True:
            for device in find_devices(self.backend):
                try:
                    same = (self.serial and usb.util.get_string(device, device.iSerialNumber)
                            == self.serial) or (not self.serial and usb_address(device) == self.address)
                except (usb.core.USBError, ValueError):
                    continue
                if same:
                    self.address = usb_address(device)
                    self._open(device)
                    return
            if time.monotonic() > deadline:
                raise not_found(self.address, "it did not come back on the bus after rebooting")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            usb.util.release_interface(self.device, self.intf.bInterfaceNumber)
        except (usb.core.USBError, AttributeError):
            pass
        usb.util.dispose_resources(self.device)
