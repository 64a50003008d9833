"""An emulated USB bus: a pyusb backend presenting emulated handsets as USB devices.

``usb.core.find(backend=bus.backend())`` returns `usb.core.Device` objects built from real
device/configuration/interface/endpoint/string descriptors, so a plugin's client code opens
an emulated handset exactly as it opens a real one. Each emulated device is a `Gadget`
(the device side of a USB function: fastboot, EDL, Odin...); gadgets register with
`EmulatedUsbBus.add`. A gadget that stops being `present()` (reboot, other mode, cable
pulled) disappears from the bus: open handles fail with ENODEV, and when it comes back it
is enumerated again under a new address, as a real phone is.
"""
from __future__ import annotations

import array
import collections
import errno
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import usb.backend
import usb.core

LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_NO_DEVICE = -4
BULK = 0x02
GET_DESCRIPTOR = 0x06
DESC_DEVICE, DESC_CONFIG, DESC_STRING = 1, 2, 3
LANG_EN_US = 0x0409


@dataclass(frozen=True)
class EndpointSpec:
    address: int  # bit 7 set: IN
    max_packet: int = 512
    attributes: int = BULK


@dataclass(frozen=True)
class InterfaceSpec:
    klass: int
    subclass: int
    protocol: int
    endpoints: tuple[EndpointSpec, ...]
    name: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    vendor_id: int
    product_id: int
    manufacturer: str
    product: str
    serial: str
    interfaces: tuple[InterfaceSpec, ...]
    bcd_device: int = 0x0100
    bcd_usb: int = 0x0200
    speed: int = 3  # libusb: high speed


class Gadget(Protocol):
    """The device side of one emulated USB function."""

    spec: DeviceSpec

    @property
    def generation(self) -> int:
        """Changes each time the device reboots: it enumerates afresh."""
        ...

    def present(self) -> bool:
        """Whether the device is on the bus now (right mode, not rebooting, cable in)."""
        ...

    def bulk_out(self, endpoint: int, data: bytes) -> None: ...

    def bulk_in(self, endpoint: int, size: int, timeout: float | None) -> bytes:
        """The next IN transfer, at most ``size`` bytes; TimeoutError when none comes."""
        ...


class InPipe:
    """Transfers a gadget queues for one IN endpoint. A transfer longer than the host's
    buffer is returned in pieces; an empty transfer is a zero-length packet."""

    def __init__(self, alive: Callable[[], bool]) -> None:
        self._alive = alive
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()

    def put(self, data: bytes) -> None:
        with self._cond:
            self._queue.append(bytes(data))
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()
            self._cond.notify_all()

    def pending(self) -> bool:
        with self._cond:
            return bool(self._queue)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def get(self, size: int, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if not self._alive():
                    raise ConnectionResetError(errno.ENODEV, "device left the bus")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no IN transfer")
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            head = self._queue.popleft()
            if len(head) > size:
                self._queue.appendleft(head[size:])
                head = head[:size]
            return head


class _Desc:
    """A descriptor as pyusb backends return it: fields as attributes."""

    def __init__(self, **fields: object) -> None:
        self.__dict__.update(fields)


@dataclass
class _Slot:
    gadget: Gadget
    address: int = 0  # 0 while absent
    port: int = 0
    generation: int = 0


@dataclass(frozen=True)
class _DevId:
    slot: _Slot
    address: int


@dataclass
class _Handle:
    dev: _DevId
    claimed: set[int] = field(default_factory=set)
    configuration: int = 1


def _usb_error(message: str, code: int, err: int) -> usb.core.USBError:
    if code == LIBUSB_ERROR_TIMEOUT:
        return usb.core.USBTimeoutError(message, error_code=code, errno=err)
    return usb.core.USBError(message, error_code=code, errno=err)


class EmulatedUsbBus:
    """Emulated gadgets on one bus number; thread-safe."""

    def __init__(self, bus_number: int = 250) -> None:
        self.bus_number = bus_number
        self._slots: list[_Slot] = []
        self._addresses = itertools.count(2)  # 1 is the root hub
        self._lock = threading.Lock()

    def add(self, gadget: Gadget) -> None:
        with self._lock:
            self._slots.append(_Slot(gadget, port=len(self._slots) + 1))

    def remove(self, gadget: Gadget) -> None:
        with self._lock:
            self._slots = [s for s in self._slots if s.gadget is not gadget]

    def backend(self) -> "EmulatedUsbBackend":
        return EmulatedUsbBackend(self)

    def _refresh(self, slot: _Slot) -> int:
        """The slot's current address (0 when absent); re-enumerates a returning device."""
        with self._lock:
            if not slot.gadget.present():
                slot.address = 0
            elif not slot.address or slot.generation != slot.gadget.generation:
                slot.address = next(self._addresses)
                slot.generation = slot.gadget.generation
            return slot.address

    def devices(self) -> list[_DevId]:
        with self._lock:
            slots = list(self._slots)
        return [_DevId(s, addr) for s in slots if (addr := self._refresh(s))]

    def check(self, dev: _DevId) -> None:
        """ENODEV unless ``dev`` is still the same enumeration of a present device."""
        if self._refresh(dev.slot) != dev.address:
            raise _usb_error("No such device (it may have been disconnected)",
                             LIBUSB_ERROR_NO_DEVICE, errno.ENODEV)


def _strings(spec: DeviceSpec) -> list[str]:
    """String descriptors by index (0 is the language table)."""
    return ["", spec.manufacturer, spec.product, spec.serial] + [i.name for i in spec.interfaces]


class EmulatedUsbBackend(usb.backend.IBackend):
    """The pyusb backend of an `EmulatedUsbBus` (see usb.backend.IBackend)."""

    def __init__(self, bus: EmulatedUsbBus) -> None:
        super().__init__()
        self.bus = bus

    # -- enumeration and descriptors ----------------------------------------------------------
    def enumerate_devices(self) -> Iterator[_DevId]:
        return iter(self.bus.devices())

    def get_parent(self, dev: _DevId) -> None:
        return None

    def get_device_descriptor(self, dev: _DevId) -> _Desc:
        spec = dev.slot.gadget.spec
        return _Desc(bLength=18, bDescriptorType=DESC_DEVICE, bcdUSB=spec.bcd_usb,
                     bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64,
                     idVendor=spec.vendor_id, idProduct=spec.product_id,
                     bcdDevice=spec.bcd_device, iManufacturer=1, iProduct=2, iSerialNumber=3,
                     bNumConfigurations=1, address=dev.address, bus=self.bus.bus_number,
                     port_number=dev.slot.port, port_numbers=(dev.slot.port,), speed=spec.speed)

    def get_configuration_descriptor(self, dev: _DevId, config: int) -> _Desc:
        self._config(config)
        spec = dev.slot.gadget.spec
        total = 9 + sum(9 + 7 * len(i.endpoints) for i in spec.interfaces)
        return _Desc(bLength=9, bDescriptorType=DESC_CONFIG, wTotalLength=total,
                     bNumInterfaces=len(spec.interfaces), bConfigurationValue=1,
                     iConfiguration=0, bmAttributes=0x80, bMaxPower=250, extra_descriptors=[])

    def get_interface_descriptor(self, dev: _DevId, intf: int, alt: int, config: int) -> _Desc:
        self._config(config)
        spec = dev.slot.gadget.spec
        if alt != 0 or not 0 <= intf < len(spec.interfaces):
            raise IndexError("invalid interface index")
        i = spec.interfaces[intf]
        return _Desc(bLength=9, bDescriptorType=4, bInterfaceNumber=intf, bAlternateSetting=0,
                     bNumEndpoints=len(i.endpoints), bInterfaceClass=i.klass,
                     bInterfaceSubClass=i.subclass, bInterfaceProtocol=i.protocol,
                     iInterface=4 + intf if i.name else 0, extra_descriptors=[])

    def get_endpoint_descriptor(self, dev: _DevId, ep: int, intf: int, alt: int,
                                config: int) -> _Desc:
        self.get_interface_descriptor(dev, intf, alt, config)  # validates the indexes
        endpoints = dev.slot.gadget.spec.interfaces[intf].endpoints
        if not 0 <= ep < len(endpoints):
            raise IndexError("invalid endpoint index")
        e = endpoints[ep]
        return _Desc(bLength=7, bDescriptorType=5, bEndpointAddress=e.address,
                     bmAttributes=e.attributes, wMaxPacketSize=e.max_packet, bInterval=0,
                     bRefresh=0, bSynchAddress=0, extra_descriptors=[])

    @staticmethod
    def _config(config: int) -> None:
        if config != 0:
            raise IndexError("invalid configuration index")

    # -- handles --------------------------------------------------------------------------
    def open_device(self, dev: _DevId) -> _Handle:
        self.bus.check(dev)
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        dev_handle.claimed.clear()

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self.bus.check(dev_handle.dev)
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        self.bus.check(dev_handle.dev)
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self.bus.check(dev_handle.dev)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self.bus.check(dev_handle.dev)
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        pass

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self.bus.check(dev_handle.dev)

    def reset_device(self, dev_handle: _Handle) -> None:
        self.bus.check(dev_handle.dev)

    # -- transfers ------------------------------------------------------------------------
    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array,
                   timeout: int) -> int:
        self.bus.check(dev_handle.dev)
        try:
            dev_handle.dev.slot.gadget.bulk_out(ep, memoryview(data).tobytes())
        except ConnectionResetError:
            pass
        self.bus.check(dev_handle.dev)  # a gadget can drop off the bus while handling it
        return len(data)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array,
                  timeout: int) -> int:
        self.bus.check(dev_handle.dev)
        try:
            data = dev_handle.dev.slot.gadget.bulk_in(ep, len(buff),
                                                      timeout / 1000 if timeout else None)
        except TimeoutError:
            raise _usb_error("Operation timed out", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT) from None
        except ConnectionResetError:
            self.bus.check(dev_handle.dev)
            raise
        buff[:len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: array.array, timeout: int) -> int:
        self.bus.check(dev_handle.dev)
        if not bmRequestType & 0x80:  # OUT requests (SET_CONFIGURATION...) are accepted
            return len(data)
        if bRequest != GET_DESCRIPTOR or wValue >> 8 != DESC_STRING:
            return 0
        index = wValue & 0xFF
        strings = _strings(dev_handle.dev.slot.gadget.spec)
        if index >= len(strings):
            raise usb.core.USBError("Pipe error", error_code=-9, errno=errno.EPIPE)
        body = LANG_EN_US.to_bytes(2, "little") if index == 0 else strings[index].encode("utf-16-le")
        reply = bytes([2 + len(body), DESC_STRING]) + body
        n = min(len(data), len(reply))
        data[:n] = array.array("B", reply[:n])
        return n
