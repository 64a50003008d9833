"""ADB plugin: phones booted into Android with USB debugging enabled.

Client side: adbutils through the adb server (which owns USB). Emulator: an emulated adbd
speaking the real wire protocol over loopback TCP, reached by the same server.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from phonewipe.erase.errors import DeviceNotFound, PhonewipeError
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session
from phonewipe.erase.ports import free_port

from .server import DEFAULT_PORT, AdbServer, link_errors, port_from_environment

STATE_TO_MODE = {"device": "adb", "unauthorized": "adb", "offline": "adb",
                 "recovery": "recovery", "sideload": "recovery", "rescue": "recovery"}


class AdbPlugin(Plugin):
    name = "adb"
    modes = ("adb", "recovery")
    reads_back = True
    reboots_into = ("fastboot",)
    has_emulator = True
    method_names = ("adb-raw-pattern", "adb-raw-zeros", "adb-fill-reset", "adb-factory-reset")
    option_specs = (
        PluginOption("port", "port of the adb server (default: ANDROID_ADB_SERVER_PORT, as adb "
                     f"reads it, else {DEFAULT_PORT})", int, range=(1, 65535)),
        PluginOption("path", "the adb binary that runs the server (default: adb on PATH)",
                     metavar="PATH"),
        PluginOption("reboot_wait", "seconds to wait for a phone to come back over adb after "
                     "a reset, for the post-reset check", float, 60.0, range=(0, 3600)),
        PluginOption("fill_file_max", "largest file of an unrooted fill, in bytes (1 GiB: far "
                     "below any file-size limit)", int, 1 << 30, range=(1 << 20, 1 << 40)),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        self.unusable: PhonewipeError | None = None
        given = self.options.get("adb_port")
        try:  # as adb itself: the port given, else ANDROID_ADB_SERVER_PORT, else 5037
            port = int(given) if given is not None else port_from_environment(os.environ)
        except PhonewipeError as exc:  # said when adb is used, not by every command
            port, self.unusable = DEFAULT_PORT, exc
        self.server = AdbServer(port=port, adb_path=self.option("path"),
                                home=self.options.get("adb_home"))

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        """A private adb server: a free port, keys under ``workdir``."""
        return {"adb_port": free_port(), "adb_home": workdir / ".adb-home", "adb_reboot_wait": 20.0}

    def close(self) -> None:
        if self.options.get("adb_home") is not None:  # a private server: ours to stop
            self.server.stop()

    def usable(self) -> None:
        if self.unusable is not None:
            raise self.unusable

    def discover(self) -> list[Endpoint]:
        self.usable()
        try:
            devices = self.server.client().list()
        except link_errors() as exc:
            raise PhonewipeError(f"the adb server on port {self.server.port} does not answer: {exc}",
                                 "restart it with `adb kill-server`") from exc
        return [Endpoint(plugin=self.name, mode=STATE_TO_MODE.get(d.state, "adb"),
                         address=d.serial, label=d.state) for d in devices
                if d.state in STATE_TO_MODE]

    def open(self, endpoint: Endpoint) -> Session:
        from .client import AdbSession

        self.usable()
        try:
            states = {d.serial: d.state for d in self.server.client().list()}
        except link_errors() as exc:
            raise PhonewipeError(f"the adb server on port {self.server.port} does not answer: {exc}",
                                 "restart it with `adb kill-server`, then run again") from exc
        if endpoint.address not in states:
            raise DeviceNotFound(f"no adb device {endpoint.address}",
                                 "check the cable, enable USB debugging, and run `phonewipe devices`")
        return AdbSession(self, endpoint, states[endpoint.address])

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        from .emulator import EmulatedAdbd

        self.usable()
        adbd = EmulatedAdbd(storage)
        adbd.start()
        if storage.state.mode == "adb":
            self.server.connect(adbd.address)
        else:  # starts in the bootloader: connect once it boots Android (phonewipe.erase.follow)
            threading.Thread(target=self._connect_when_online, args=(adbd,), daemon=True,
                             name=f"adb-connect-{adbd.port}").start()
        return adbd

    def _connect_when_online(self, adbd: Any) -> None:
        while not adbd.stopped:
            if adbd.wait_online(1.0):
                try:
                    self.server.connect(adbd.address)
                    return
                except PhonewipeError:
                    continue
