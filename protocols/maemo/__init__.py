"""maemo plugin: the Nokia N900 (Maemo 5) over USB networking and SSH.

The phone runs OpenSSH (or Dropbear) and answers at 192.168.2.15 once USB networking is up;
the plugin logs in as ``user`` and becomes root with `sudo gainroot` (the rootsh package).
The method overwrites the whole eMMC (/dev/mmcblk0: MyDocs, /home, swap) with the keyed
pattern streamed into dd, drops the phone's page cache and samples it back over the same
channel (session.py, client.py). The phone then needs its eMMC image re-flashed to be used
again: the certificate says so.

The emulator (emulator.py) is a real SSH server on loopback (asyncssh) whose shell
(shell.py) serves the core's emulated storage as /dev/mmcblk0.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import DeviceNotFound
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, PluginOptions, Session

if TYPE_CHECKING:
    from .client import MaemoClient

# The SSH client (asyncssh, a fifth of a second to import) loads when a phone is reached:
# every command line builds its options from every plugin, and most never talk to an N900.
MODE = "maemo"
PASSWORD_ENV = "PHONEWIPE_MAEMO_PASSWORD"
DEFAULT_HOST = "192.168.2.15"  # the N900's side of USB networking


class MaemoPlugin(Plugin):
    name = "maemo"
    modes: tuple[str, ...] = (MODE,)
    reads_back = True
    has_emulator = True
    method_names = ("maemo-pattern",)  # session.PATTERN
    option_specs = (
        PluginOption("host", "the N900's address over USB networking, HOST[:PORT] (repeatable)",
                     multiple=True, default=[DEFAULT_HOST], metavar="HOST"),
        PluginOption("user", "the SSH user", default="user"),
        PluginOption("password", "the SSH password of that user (better: [maemo] password in the "
                     f"config, or {PASSWORD_ENV}; a command line shows in `ps`)", default=""),
        PluginOption("timeout", "seconds to wait for the phone", type=float, default=3.0,
                     range=(0.1, 600)),
    )

    def __init__(self, options: PluginOptions | None = None) -> None:
        super().__init__(options)
        # emulated phones: address -> (user, password), shared by instances with these options
        self.emulated: dict[str, tuple[str, str]] = self.options.values.setdefault(
            "maemo_emulated", {})

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        return {"maemo_host": []}  # a private bench never probes the USB network

    def _login(self, address: str) -> tuple[str, str]:
        # a password on the command line is visible to every user in `ps`: the config's
        # [maemo] table or PHONEWIPE_MAEMO_PASSWORD keep it out of the process list
        return self.emulated.get(address) or (
            self.option("user"), self.option("password") or os.environ.get(PASSWORD_ENV, ""))

    def connect(self, address: str, timeout: float | None = None) -> MaemoClient:
        from .client import MaemoClient
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "22")
        user, password = self._login(address)
        return MaemoClient(host, int(port), user, password, timeout or float(self.option("timeout")))

    def discover(self) -> list[Endpoint]:
        """Emulated N900s, and each configured address where an SSH server answers (its
        banner only: logging in is `open`'s). The default address is probed only while a
        USB network interface is up, so a bench without an N900 waits for nothing."""
        found = [Endpoint(self.name, MODE, address, "N900") for address in self.emulated]
        hosts = list(self.option("host") or [])
        if hosts == [DEFAULT_HOST] and not usb_network_up():
            return found
        for host in hosts:
            address = host if ":" in host else f"{host}:22"
            if address not in self.emulated and answers_ssh(address, float(self.option("timeout"))):
                found.append(Endpoint(self.name, MODE, address, "N900"))
        return found

    def open(self, endpoint: Endpoint) -> Session:
        from .client import LoginRefused
        from .session import MaemoSession
        try:
            client = self.connect(endpoint.address, 60.0)
        except LoginRefused:
            raise
        except Exception as exc:
            raise DeviceNotFound(f"no N900 answers SSH at {endpoint.address} ({exc})",
                                 "enable USB networking on the phone and check the password "
                                 f"({PASSWORD_ENV} or --maemo-password)") from exc
        return MaemoSession(endpoint, client)

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        if profile.access.start_mode != MODE:
            return None
        from .emulator import EmulatedN900
        from .profile import load_maemo
        maemo = load_maemo(profile)
        emulator = EmulatedN900.start(storage, maemo)
        address = emulator.endpoints[MODE]
        self.emulated[address] = (maemo.user, maemo.password)
        return _Registered(emulator, self.emulated, address)


USB_NET_DRIVERS = {"cdc_ether", "rndis_host", "cdc_eem", "cdc_subset"}


def usb_network_up(sysfs: Path = Path("/sys/class/net")) -> bool:
    """A host-side USB network interface exists (the N900's g_ether appears as one)."""
    for driver in sysfs.glob("*/device/driver"):
        try:
            if driver.resolve().name in USB_NET_DRIVERS:
                return True
        except OSError:
            continue
    return False


def answers_ssh(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except (OSError, ValueError):
        return False


class _Registered:
    """The emulator, withdrawn from discovery when stopped."""

    def __init__(self, emulator: Any, registry: dict[str, tuple[str, str]], address: str) -> None:
        self.emulator, self.registry, self.address = emulator, registry, address
        self.endpoints = emulator.endpoints

    def stop(self) -> None:
        self.registry.pop(self.address, None)
        self.emulator.stop()
