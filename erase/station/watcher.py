"""Devices arriving and leaving, across every registered plugin: periodic discovery, woken
early by udev USB events when pyudev happens to be installed."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import PhonewipeError
from ..model import Endpoint
from ..plugin import Plugin

NOT_READY = frozenset({"offline", "connecting", "authorizing"})  # listed but not reachable yet


@dataclass
class Change:
    arrived: list[tuple[Plugin, Endpoint]] = field(default_factory=list)
    left: list[Endpoint] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Watcher:
    def __init__(self, plugins: dict[str, Plugin]) -> None:
        self.plugins = plugins
        self.present: dict[str, tuple[Plugin, Endpoint]] = {}
        self.wake = threading.Event()
        self._observer: Any = None

    def poll(self) -> Change:
        change = Change()
        now: dict[str, tuple[Plugin, Endpoint]] = {}
        failed: set[str] = set()
        for name, plugin in self.plugins.items():
            try:
                endpoints = plugin.discover()
            except PhonewipeError as exc:
                change.errors.append(f"{name}: {exc.line()}")
                failed.add(name)
                continue
            for endpoint in endpoints:
                if endpoint.label in NOT_READY:
                    continue
                now[str(endpoint)] = (plugin, endpoint)
        for key, (plugin, endpoint) in now.items():
            if key not in self.present:
                change.arrived.append((plugin, endpoint))
        for key, (plugin, endpoint) in self.present.items():
            # a plugin whose discovery failed this time keeps its devices: no false departures
            if key not in now and plugin.name not in failed:
                change.left.append(endpoint)
        kept = {k: v for k, v in self.present.items() if v[0].name in failed}
        self.present = {**kept, **now}
        return change

    def start_udev(self) -> bool:
        """Wake the next poll as soon as the kernel reports a USB change (Linux, pyudev)."""
        try:
            import pyudev
        except ImportError:
            return False
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("usb")
            self._observer = pyudev.MonitorObserver(monitor, callback=lambda _device: self.wake.set(),
                                                    daemon=True)
            self._observer.start()
        except Exception:  # no netlink in a container: polling alone still works
            return False
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()

    def wait(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()
