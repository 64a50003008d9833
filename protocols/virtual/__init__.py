"""virtual plugin: an in-process handset family on the core's emulated storage (python-can's
``virtual`` interface, for phones).

No wire, no server, no subprocess: a `VirtualBus` (kept in the plugin options, so every
plugin loaded with the same options sees one bus, as the fastboot plugin shares its
``usb_bus``) holds `HandsetStorage` objects, and a session erases and reads them directly,
through the same fault injection and emulated page cache every wire-level emulator uses. A
lying profile fails here exactly as it fails over adb.

The bus serves only what was put on it: a handset whose profile asks for it
(``[access] start_mode = "virtual"``, attached by `start_emulator`) or one a test attaches
explicitly with ``plugin.bus.attach(storage)``. Handsets `start_handsets` creates for
other modes are left to their own plugins (the demo would otherwise see each phone twice).

For tests of the core, the job flow, the policy and the station that need no wire.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import DeviceNotFound
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOptions, Session

from .session import VirtualSession

MODE = "virtual"


@dataclass
class Attached:
    """One handset on the bus: its storage, at an address, in a mode."""

    address: str
    storage: HandsetStorage
    mode: str = MODE


class VirtualBus:
    """The handsets an in-process plugin can reach. Attach and detach at any time
    (hot-plug); addresses are ``virtual:N`` and never reused on one bus."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attached: dict[str, Attached] = {}
        self._numbers = itertools.count(1)

    def attach(self, storage: HandsetStorage, mode: str = MODE, address: str = "") -> str:
        with self._lock:
            address = address or f"{MODE}:{next(self._numbers)}"
            self._attached[address] = Attached(address, storage, mode)
            return address

    def detach(self, address: str) -> None:
        with self._lock:
            self._attached.pop(address, None)

    def attached(self) -> list[Attached]:
        with self._lock:
            return list(self._attached.values())

    def get(self, address: str) -> Attached | None:
        with self._lock:
            return self._attached.get(address)


class VirtualHandset:
    """`start_emulator`'s answer: a handset on the bus until stopped."""

    def __init__(self, bus: VirtualBus, storage: HandsetStorage) -> None:
        self.bus = bus
        self.address = bus.attach(storage)
        self.endpoints = {MODE: self.address}

    def stop(self) -> None:
        self.bus.detach(self.address)


class VirtualPlugin(Plugin):
    name = "virtual"
    modes: tuple[str, ...] = (MODE,)
    reads_back = True
    reboots_into = ()  # no other mode: `--via` choices and follow targets are unchanged
    has_emulator = True  # in-process: its handsets live on the bus, not on a wire
    option_specs = ()
    method_names = ("virtual-pattern", "virtual-zeros")
    session_class: type[VirtualSession] = VirtualSession  # tests subclass it to misbehave

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        self.bus: VirtualBus = self.options.values.setdefault("virtual_bus", VirtualBus())

    def discover(self) -> list[Endpoint]:
        return [Endpoint(self.name, a.mode, a.address, a.storage.state.serial)
                for a in self.bus.attached() if a.mode in self.modes]

    def open(self, endpoint: Endpoint) -> Session:
        attached = self.bus.get(endpoint.address)
        if attached is None or attached.mode not in self.modes:
            raise DeviceNotFound(f"no virtual handset at {endpoint.address}",
                                 "attach it to the plugin's bus first (plugin.bus.attach)")
        return self.session_class(self, endpoint, attached.storage)

    def start_emulator(self, storage: Any, profile: Any) -> VirtualHandset | None:
        if profile.access.start_mode != MODE:
            return None  # another plugin's handset
        return VirtualHandset(self.bus, storage)
