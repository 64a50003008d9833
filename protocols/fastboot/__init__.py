"""fastboot plugin: phones in the Android bootloader, over USB (pyusb) or TCP.

fastboot cannot read storage back, so its methods are reported ERASED_UNVERIFIED unless the
job follows the phone into another mode that can (phonewipe.erase.follow). Besides the declared
options, `PluginOptions` may hold ``usb_bus`` (an `EmulatedUsbBus` shared with other
plugins) and ``fastboot_max_download`` (the emulator's download buffer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.registry import DIR_KEY, PUBLISH_KEY, publish, published, registry_dir
from phonewipe.erase.emulation.usbbus import EmulatedUsbBus
from phonewipe.erase.errors import DeviceNotFound, PhonewipeError
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session

MODE = "fastboot"


class FastbootPlugin(Plugin):
    name = "fastboot"
    modes = (MODE,)
    reboots_into = ("adb",)
    has_emulator = True
    method_names = ("fastboot-raw-pattern", "fastboot-erase", "fastboot-unlock-wipe")
    option_specs = (
        PluginOption("tcp", "also look for a fastboot device at this TCP address (repeatable)",
                     multiple=True, default=(), metavar="tcp:HOST:PORT"),
        PluginOption("timeout", "seconds to wait for each bootloader reply", float, 30.0,
                     range=(1, 3600)),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        # kept in the options, so every plugin loaded with them (phonewipe.erase.follow) sees one bus
        self.usb_bus: EmulatedUsbBus = self.options.values.setdefault("usb_bus", EmulatedUsbBus())
        self.timeout = float(self.option("timeout"))

    def _backends(self) -> list[Any]:
        """The real USB (libusb, when installed) and the emulated bus."""
        return [None, self.usb_bus.backend()]

    def discover(self) -> list[Endpoint]:
        from .transport_usb import find_devices, usb_address

        found = []
        for backend in self._backends():
            for device in find_devices(backend):
                try:
                    import usb.util
                    serial = usb.util.get_string(device, device.iSerialNumber) or ""
                except Exception:  # no permission to read strings: still list it
                    serial = ""
                found.append(Endpoint(self.name, MODE, usb_address(device), serial))
        for address in self._tcp_addresses():
            try:
                client = self.connect(Endpoint(self.name, MODE, _tcp(address)))
                try:
                    serial = client.getvar("serialno")
                finally:
                    client.close()
            except PhonewipeError:
                continue  # not in the bootloader now: absent
            found.append(Endpoint(self.name, MODE, _tcp(address), serial))
        return found

    def _tcp_addresses(self) -> list[str]:
        """The --fastboot-tcp addresses, and the emulated bootloaders other processes of this
        user serve (`phonewipe emulate`: erase.emulation.registry), each once."""
        given = [_tcp(a) for a in self.option("tcp") or ()]
        served = [e.address for e in published(registry_dir(self.options), MODE)]
        return list(dict.fromkeys(given + served))

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        """A private bench sees its own emulators only, not the user's `phonewipe emulate`."""
        return {DIR_KEY: workdir / ".emulators"}

    def connect(self, endpoint: Endpoint) -> Any:
        """A `FastbootClient` on the endpoint's transport."""
        from .client import FastbootClient
        from .transport_tcp import TcpTransport
        from .transport_usb import UsbTransport, find_devices, usb_address

        if endpoint.address.startswith("tcp:"):
            transport = TcpTransport(endpoint.address, timeout=min(self.timeout, 10))
            return FastbootClient(transport, self.timeout)
        for backend in self._backends():
            for device in find_devices(backend):
                if usb_address(device) == endpoint.address:
                    return FastbootClient(UsbTransport(device, backend, min(self.timeout, 10)),
                                          self.timeout)
        raise DeviceNotFound(f"no fastboot device at {endpoint.address}",
                             "check the cable and run `phonewipe devices`")

    def open(self, endpoint: Endpoint) -> Session:
        from .session import FastbootSession

        return FastbootSession(self, endpoint, self.connect(endpoint))

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        from .emulator import EmulatedBootloader

        emulator = EmulatedBootloader(storage, self.usb_bus,
                                      int(self.options.get("fastboot_max_download", 16 * 1024 * 1024)))
        if self.options.get(PUBLISH_KEY):  # other processes reach it over TCP, without a flag
            emulator.published.append(publish(registry_dir(self.options), MODE, emulator.address,
                                              storage.state.serial))
        return emulator


def _tcp(address: str) -> str:
    return address if address.startswith("tcp:") else f"tcp:{address}"
