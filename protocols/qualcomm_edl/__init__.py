"""Qualcomm EDL plugin: phones that no longer boot (dead OS, boot loop, forgotten lock),
reached in Emergency Download mode (USB 05c6:9008) over pyusb. Sahara identifies the phone
and loads the operator's Firehose programmer; Firehose overwrites the user-data
partitions the GPTs name and reads samples back, so the erase is verified.

Besides the declared options, `PluginOptions` may hold ``usb_bus`` (an `EmulatedUsbBus`
shared with other plugins, as the fastboot plugin shares it). Emulated EDL phones another
process publishes (`phonewipe emulate`) are attached to that bus (relay.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.registry import DIR_KEY, PUBLISH_KEY, published, registry_dir
from phonewipe.erase.emulation.usbbus import EmulatedUsbBus
from phonewipe.erase.errors import DeviceNotFound, UsageError
from phonewipe.erase.identity import imei_ok
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session
from phonewipe.erase.strings import clean

MODE = "edl"


class EdlPlugin(Plugin):
    name = "edl"
    modes = (MODE,)
    reads_back = True
    has_emulator = True
    method_names = ("edl-raw-pattern", "edl-erase", "edl-lun-raw-pattern")
    option_specs = (
        PluginOption("loaders", "directory of Firehose programmers, each named "
                     "HWID_KEYHASH_*.bin (16 hex digits each) for the phones it fits",
                     metavar="DIR"),
        PluginOption("imei", "IMEI from the phone's label, entered by the operator (EDL cannot "
                     "read it): IMEI, or CHIPSERIAL=IMEI with several phones (repeatable)",
                     multiple=True, default=(), metavar="[SERIAL=]IMEI"),
        PluginOption("asset_tag", "asset tag on the phone (operator-entered)"),
        PluginOption("manufacturer", "the phone's make, from its label (operator-entered)"),
        PluginOption("model", "the phone's model, from its label (operator-entered)"),
        PluginOption("whole_lun", "overwrite every LUN in full when a phone's partition tables "
                     "are gone (its firmware must be reflashed afterwards)", bool, False),
        PluginOption("only_userdata", "overwrite only userdata, not metadata, cache and frp",
                     bool, False),
        PluginOption("memory", "storage type to configure: ufs or emmc (default: try UFS, "
                     "then eMMC)", default=""),
        PluginOption("timeout", "seconds to wait for each reply of the phone", float, 10.0,
                     range=(0.1, 3600)),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        self.usb_bus: EmulatedUsbBus = self.options.values.setdefault("usb_bus", EmulatedUsbBus())
        self.timeout = float(self.option("timeout"))
        self.imeis = _imeis(self.option("imei") or ())
        memory = str(self.option("memory") or "")
        if memory not in ("", "ufs", "emmc"):
            raise UsageError(f"--edl-memory {memory!r} is not a storage type", "use ufs or emmc")

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        """A private bench (the demo, an emulated station) loads the test programmers its
        emulated phones accept: bytes named for their HW id and key hash."""
        from phonewipe.erase.emulation.profiles import FIXTURES_DIR
        return {"edl_loaders": str(FIXTURES_DIR / "edl-loaders"), DIR_KEY: workdir / ".emulators"}

    def entered(self, serial: str) -> dict[str, Any]:
        """What the operator entered from the label for the phone of this chip serial
        (IMEIs given as SERIAL=IMEI apply to that phone only): marked operator-entered."""
        imeis = [i for s, i in self.imeis if s in ("", serial.upper())]
        out: dict[str, Any] = {"imeis": imeis} if imeis else {}
        for key in ("asset_tag", "manufacturer", "model"):
            if self.option(key):
                out[key] = clean(str(self.option(key)), 64)
        return out

    def _backends(self) -> list[Any]:
        self._attach_published()
        return [None, self.usb_bus.backend()]

    def _attach_published(self) -> None:
        """Emulated EDL phones other processes of this user serve (`phonewipe emulate`),
        attached to this process's emulated bus, each once."""
        from .relay import RemoteGadget

        attached: dict[str, Any] = self.options.values.setdefault("edl_remote", {})
        for entry in published(registry_dir(self.options), MODE):
            if entry.address in attached and not attached[entry.address].dead:
                continue
            try:
                gadget = RemoteGadget(entry.address)
            except OSError:
                continue  # it stopped meanwhile
            if entry.address in attached:
                self.usb_bus.remove(attached[entry.address])
            attached[entry.address] = gadget
            self.usb_bus.add(gadget)

    def close(self) -> None:
        for gadget in self.options.values.get("edl_remote", {}).values():
            gadget.close()

    def discover(self) -> list[Endpoint]:
        from .transport import find_devices, serial_of, usb_address

        return [Endpoint(self.name, MODE, usb_address(d), serial_of(d))
                for backend in self._backends() for d in find_devices(backend)]

    def open(self, endpoint: Endpoint) -> Session:
        from .session import EdlSession
        from .transport import UsbLink, find_devices, usb_address

        for backend in self._backends():
            for device in find_devices(backend):
                if usb_address(device) == endpoint.address:
                    return EdlSession(self, endpoint, UsbLink(device))
        raise DeviceNotFound(f"no EDL device at {endpoint.address}",
                             "check the cable and run `phonewipe devices`")

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        from .emulator import EmulatedEdl
        from .profile import load_spec

        if profile.access.start_mode != MODE:
            return None
        publish_in = registry_dir(self.options) if self.options.get(PUBLISH_KEY) else None
        return EmulatedEdl(storage, load_spec(profile.name), self.usb_bus, publish_in)


def _imeis(values: Any) -> list[tuple[str, str]]:
    """(chip serial or "", IMEI) pairs; UsageError for an IMEI that is not 15 digits with a
    valid Luhn check digit (a label misread)."""
    out = []
    for value in values:
        serial, _, imei = str(value).rpartition("=")
        imei = imei.strip().replace(" ", "")
        if not imei_ok(imei):
            raise UsageError(f"--edl-imei {value!r} is not a valid IMEI",
                             "type the 15 digits from the phone's label (*#06# cannot run in EDL)")
        out.append((serial.strip().upper(), imei))
    return out
