"""phonewipe plugin for ACME handsets (the ACME service link over TCP).

What phonewipe asks of a plugin, it finds here as declarations: the options (flags
``--acme-port``, ``--acme-host``, ``--acme-timeout`` and an ``[acme]`` config table), the modes
its endpoints are in, that it reads storage back, that it reboots a phone into no other mode,
and that it has an emulator. The entry point in pyproject.toml makes phonewipe load it.
"""
from __future__ import annotations

from typing import Any

from phonewipe.erase.errors import PhonewipeError, UsageError
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin, PluginOption, Session

MODE = "acme"


class AcmePlugin(Plugin):
    name = "acme"
    modes = (MODE,)
    reads_back = True
    reboots_into = ()
    has_emulator = True
    option_specs = (
        PluginOption("port", "service port of an ACME handset (repeatable)", int, default=(),
                     multiple=True, range=(1, 65535), metavar="PORT"),
        PluginOption("host", "host the ACME service ports are on", default="127.0.0.1",
                     metavar="HOST"),
        PluginOption("timeout", "seconds to wait for each ACME reply", float, 10.0,
                     range=(0.5, 600)),
    )

    def _link(self, host: str, port: int) -> Any:
        from .wire import AcmeLink
        return AcmeLink(host, port, float(self.option("timeout")))

    def discover(self) -> list[Endpoint]:
        found = []
        host = str(self.option("host"))
        for port in self.option("port") or ():
            try:
                link = self._link(host, int(port))
            except PhonewipeError:
                continue  # nothing on that port now: absent
            try:
                serial = str(link.call_json("IDENTIFY").get("serial", ""))
            except PhonewipeError:
                continue
            finally:
                link.close()
            found.append(Endpoint(self.name, MODE, f"tcp:{host}:{port}", serial))
        return found

    def open(self, endpoint: Endpoint) -> Session:
        from .session import AcmeSession

        scheme, _, rest = endpoint.address.partition(":")
        host, _, port = rest.rpartition(":")
        if scheme != "tcp" or not host or not port.isdigit():
            raise UsageError(f"{endpoint.address!r} is not an ACME address", "use tcp:HOST:PORT")
        return AcmeSession(self, endpoint, self._link(host, int(port)))

    def start_emulator(self, storage: Any, profile: Any) -> Any:
        """Serve ``storage`` as an ACME handset when its profile starts in ACME mode."""
        if profile.access.start_mode != MODE:
            return None
        from .emulator import AcmeEmulator
        return AcmeEmulator(storage).start()
