"""ios plugin: iPhones and iPads over usbmuxd and lockdownd, with pymobiledevice3
(`phonewipe[ios]`).

Real phones need the usbmuxd daemon (Debian's ``usbmuxd``: its udev rule starts it when an
iPhone is plugged in). The emulated iPhone (``start_emulator``) is a usbmuxd of our own on
loopback TCP with lockdownd and MCInstall behind it (emu_*.py), so that pymobiledevice3's
own client code — and libimobiledevice's, with ``USBMUXD_SOCKET_ADDRESS`` — talks to it.
pymobiledevice3 is imported only when a phone is reached: the emulator needs only
`cryptography`, and a machine without the extra lists no iPhones instead of failing.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.registry import DIR_KEY, PUBLISH_KEY, publish, published, registry_dir
from phonewipe.erase.errors import ConfigError, DeviceNotFound, PhonewipeError
from phonewipe.erase.model import Endpoint, Finding, Severity
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session

MODE = "ios"
MUX_KEY = "ios_emulated_mux"  # PluginOptions: the EmulatedUsbmuxd a bench shares
SANDBOX_KEY = "ios_sandbox"  # PluginOptions: a private bench (no system usbmuxd)
SYSTEM_USBMUXD = "/var/run/usbmuxd"  # where pymobiledevice3 and libusbmuxd look on Linux
INSTALL_ADVICE = "install the iPhone support: pip install 'phonewipe[ios]'"


def check_usbmux_address(address: str) -> None:
    """HOST:PORT, UNIX:/path or /path (empty: the default); anything else is one line."""
    host, _, port = address.rpartition(":")
    if not address or address.startswith(("UNIX:/", "/")) or (host and port.isdigit()
                                                              and 0 < int(port) < 65536):
        return
    raise ConfigError(f"ios usbmux address {address!r} is neither HOST:PORT nor UNIX:/path",
                      "use e.g. --ios-usbmux 127.0.0.1:27015 or --ios-usbmux UNIX:/var/run/usbmuxd")


def _socket_missing(address: str | None) -> bool:
    """A usbmuxd on a UNIX socket that does not exist (no usbmuxd running, the usual case on
    a bench of Android phones) cannot list anything. None is the system's usbmuxd: that
    socket on Linux and macOS (TCP port 27015 on Windows)."""
    if not address and os.name != "posix":
        return False
    path = SYSTEM_USBMUXD if not address else address.removeprefix("UNIX:")
    return path.startswith("/") and not os.path.exists(path)


class EmulatedIphoneHandle:
    """`start_emulator`'s answer: the phone plugged into the bench's usbmuxd until stopped."""

    def __init__(self, mux: Any, device: Any) -> None:
        self.mux, self.device = mux, device
        self.endpoints = {MODE: device.udid}
        self.published: list[Path] = []

    def stop(self) -> None:
        self.device.plug = lambda attached: None  # a reboot under way stays unplugged
        self.mux.detach(self.device)
        for path in self.published:
            path.unlink(missing_ok=True)


class IosPlugin(Plugin):
    name = "ios"
    modes = (MODE,)
    reads_back = False
    has_emulator = True
    method_names = ("ios-erase-all",)
    option_specs = (
        PluginOption("usbmux", "usbmuxd address: HOST:PORT or UNIX:/path (default: "
                     "$USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd)", default="",
                     metavar="ADDRESS"),
        PluginOption("pair_timeout", "seconds to wait for the owner to tap Trust", float, 30.0,
                     range=(0, 600)),
        PluginOption("reboot_timeout", "seconds an erasing iPhone may take to come back",
                     float, 900.0, range=(1, 7200)),
        PluginOption("supervised", "a supervised or MDM-enrolled iPhone: block (default) or warn",
                     default="block", metavar="block|warn"),
        PluginOption("pair_records", "folder for this computer's pair records (default: "
                     "pymobiledevice3's)", default="", metavar="DIR"),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        self.pair_timeout = float(self.option("pair_timeout"))
        self.reboot_timeout = float(self.option("reboot_timeout"))
        self.supervised = str(self.option("supervised"))
        if self.supervised not in ("block", "warn"):
            raise ConfigError(f"ios supervised must be block or warn, not {self.supervised!r}",
                              "use --ios-supervised block or --ios-supervised warn")
        check_usbmux_address(str(self.option("usbmux")))
        self._owns_mux = False
        self._lock = threading.Lock()
        self._host_identity: Any = None
        self._where: dict[str, str | None] = {}  # UDID -> the usbmuxd that listed it

    def host_identity(self) -> Any:
        """This computer's pairing identity (host_identity.py), made on first use, not at
        plugin load (most commands never pair), and once for all the jobs' threads."""
        from .host_identity import HostIdentity

        with self._lock:
            if self._host_identity is None:
                self._host_identity = HostIdentity.make()
            return self._host_identity

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        """A private bench: its own emulated usbmuxd (started with the first iPhone), pair
        records inside, no wait for a Trust tap nobody will make, a short reboot wait."""
        return {SANDBOX_KEY: True, "ios_pair_records": str(workdir / ".ios-pair-records"),
                "ios_pair_timeout": 0.0, "ios_reboot_timeout": 10.0,
                DIR_KEY: workdir / ".emulators"}

    def _emulated_mux(self) -> Any:
        from .emu_usbmuxd import EmulatedUsbmuxd

        mux = self.options.values.get(MUX_KEY)
        if mux is None:
            mux = self.options.values[MUX_KEY] = EmulatedUsbmuxd()
            self._owns_mux = True
        return mux

    def addresses(self) -> list[str | None]:
        """The usbmuxd instances to ask: the bench's or the configured/system one, and the
        emulated ones other processes of this user publish (`phonewipe emulate`)."""
        mux = self.options.values.get(MUX_KEY)
        if self.options.get(SANDBOX_KEY):
            own: list[str | None] = [mux.address] if mux is not None else []
        else:  # libusbmuxd's variable, read here: pymobiledevice3 does not take its UNIX: form
            own = [str(self.option("usbmux")) or os.environ.get("USBMUXD_SOCKET_ADDRESS") or None]
        served: list[str | None] = [e.address.removeprefix("tcp:")
                                    for e in published(registry_dir(self.options), MODE)]
        return list(dict.fromkeys(own + served))

    def _found(self, addresses: list[str | None] | None = None) -> dict[str, str | None]:
        asked = [a for a in (self.addresses() if addresses is None else addresses)
                 if not _socket_missing(a)]
        if not asked:  # no usbmuxd to ask: pymobiledevice3 (a third of a second) stays unloaded
            return {}
        try:
            from .client import list_devices
        except ImportError:
            return {}  # without the extra there is no iPhone support, and nothing to list
        found: dict[str, str | None] = {}
        for address in asked:
            for entry in list_devices(address):
                found.setdefault(entry.udid, address)
        self._where.update(found)
        return found

    def discover(self) -> list[Endpoint]:
        return [Endpoint(self.name, MODE, udid, udid) for udid in self._found()]

    def open(self, endpoint: Endpoint) -> Session:
        try:
            from .client import IosClient
            from .session import IosSession
        except ImportError as exc:
            raise PhonewipeError(f"iPhone support is not installed ({exc.name})", INSTALL_ADVICE) from exc
        # the usbmuxd that listed it is asked first (one ListDevices), every one if it moved
        udid = endpoint.address
        found = self._found([self._where[udid]]) if udid in self._where else {}
        if udid not in found:
            found = self._found()
        if udid not in found:
            raise DeviceNotFound(f"usbmuxd does not list the iPhone {udid}",
                                 "check the cable, unlock the phone, and run `phonewipe devices`")
        records = str(self.option("pair_records"))
        client = IosClient(found[udid], udid, Path(records) if records else None,
                           self.host_identity())
        return IosSession(self, endpoint, client)

    def management_finding(self, managed: dict[str, Any]) -> Finding:
        what = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v) if isinstance(v, list) else v}"
                         for k, v in managed.items())
        if self.supervised == "warn":
            return Finding(Severity.WARNING, "ios-managed",
                           f"The iPhone is managed ({what}); erasing it anyway (--ios-supervised "
                           "warn): it may enrol again at setup unless released.")
        return Finding(Severity.BLOCKER, "ios-managed",
                       f"The iPhone is managed ({what}): have the organisation release it (remove "
                       "it from Apple Business Manager and the MDM), then run again; the "
                       "organisation itself may erase it with --ios-supervised warn.")

    def start_emulator(self, storage: Any, profile: Any) -> EmulatedIphoneHandle | None:
        if profile.access.start_mode != MODE:
            return None
        from .emu_device import EmulatedIphone
        from .profile import load_spec

        mux = self._emulated_mux()
        device = EmulatedIphone(storage, load_spec(profile.path or profile.name))
        mux.attach(device)
        handle = EmulatedIphoneHandle(mux, device)
        if self.options.get(PUBLISH_KEY) and mux.tcp_address:
            handle.published.append(publish(registry_dir(self.options), MODE,
                                            f"tcp:{mux.tcp_address}", storage.state.serial))
        return handle

    def close(self) -> None:
        mux = self.options.values.get(MUX_KEY)
        if self._owns_mux and mux is not None:
            mux.stop()
            self.options.values.pop(MUX_KEY, None)
            self._owns_mux = False
