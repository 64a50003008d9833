"""Claiming a raw-USB interface and its bulk endpoint pair, as every plugin that talks to a
phone over pyusb does it (fastboot, EDL): the kernel's driver detached, a permission error
said in words, and the pair found by direction."""
from __future__ import annotations

import errno
from typing import Any, Callable

import usb.core
import usb.util

from .errors import PhonewipeError

Gone = Callable[[str, str], Exception]  # (address, when) -> the plugin's "unplugged" error


def claim_bulk_pair(device: usb.core.Device, intf: Any, address: str, gone: Gone) -> tuple[Any, Any]:
    """Claim `intf` of `device` and return its (OUT, IN) endpoints, either None when missing."""
    try:
        if device.is_kernel_driver_active(intf.bInterfaceNumber):
            device.detach_kernel_driver(intf.bInterfaceNumber)  # e.g. qcserial claims EDL
    except (NotImplementedError, usb.core.USBError):
        pass
    try:
        usb.util.claim_interface(device, intf.bInterfaceNumber)
    except usb.core.USBError as exc:
        if exc.errno == errno.EACCES:
            raise PhonewipeError(f"no permission to open the USB device {address}",
                                 "install the udev rule from the README, or run as root") from exc
        raise gone(address, "while it was being opened") from exc
    return _endpoint(intf, usb.util.ENDPOINT_OUT), _endpoint(intf, usb.util.ENDPOINT_IN)


def _endpoint(intf: Any, direction: int) -> Any:
    return usb.util.find_descriptor(
        intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == direction)
