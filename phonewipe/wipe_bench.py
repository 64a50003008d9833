"""Where `phonewipe wipe` finds its phone: the installed plugins (a real phone), or a private
bench with one emulated handset (`--emulate PROFILE`, servers via `sandbox_plugins`, as
`phonewipe demo` does). Both answer the same few questions the flow asks."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonewipe.erase.model import Endpoint, EraseMethod, Finding, Identity, Severity
from phonewipe.erase.plugin import Plugin, close_plugins, sandbox_plugins
from phonewipe.wipe_text import make_key, usb_makes

NOT_READY = ("unauthorized", "offline", "no permissions", "connecting", "authorizing")


@dataclass
class Inspection:
    """What the phone says before anything is written: who it is, its locks, its methods."""

    identity: Identity
    findings: list[Finding] = field(default_factory=list)
    methods: list[EraseMethod] = field(default_factory=list)

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.BLOCKER]


def inspect(plugin: Plugin, endpoint: Endpoint) -> Inspection:
    """Identify, check the locks and list the methods; writes nothing to the phone."""
    with plugin.open(endpoint) as session:
        identity = session.identify()
        findings = session.preflight()
        identity = session.identity or identity  # with the lock states it checked
        methods = session.methods()
    return Inspection(identity, findings, methods)


def ready(endpoint: Endpoint) -> bool:
    """A phone in Android that has allowed this computer (others get advice, not an erase)."""
    return endpoint.mode not in ("fastboot", "recovery") and endpoint.label not in NOT_READY


class Bench:
    """The real phones: every installed plugin, asked in turn."""

    state_file: Path | None = None  # an emulated phone's settings, as its owner changes them

    def __init__(self, plugins: dict[str, Plugin]) -> None:
        self.plugins = plugins

    def endpoints(self) -> list[tuple[Plugin, Endpoint]]:
        found = []
        for plugin in self.plugins.values():
            found += [(plugin, e) for e in plugin.discover()]
        return found

    def makes(self) -> list[str]:
        """Makes of the phones on the USB bus, by vendor id, before USB debugging is on."""
        return usb_makes()

    def before_check(self) -> None:
        """Called before the locks are checked again."""

    def close(self) -> None:
        close_plugins(self.plugins)


class EmulatedBench(Bench):
    """One emulated handset (or none: `--emulate none`) on private servers."""

    def __init__(self, profile: str) -> None:
        from phonewipe.erase.emulation.fleet import start_handsets
        self.workdir = Path(tempfile.mkdtemp(prefix="phonewipe-wipe-"))
        super().__init__(sandbox_plugins(self.workdir))
        self.handsets: list[Any] = []
        try:
            if profile != "none":
                self.handsets = start_handsets([profile], self.workdir / "handsets", self.plugins)
        except BaseException:
            self.close()
            raise
        for h in self.handsets:
            self.state_file = h.storage.directory / "state.json"

    def makes(self) -> list[str]:
        return [k for k in (make_key(h.profile.device.manufacturer) for h in self.handsets) if k]

    def before_check(self) -> None:
        """The owner's changes to the emulated phone (its state file) take effect."""
        for h in self.handsets:
            try:
                data = json.loads((h.storage.directory / "state.json").read_text())
            except (OSError, ValueError):
                continue
            for key in ("google_accounts", "device_owner", "screen_lock"):
                if key in data:
                    setattr(h.storage.state, key, data[key])

    def close(self) -> None:
        import shutil

        from phonewipe.erase.emulation.fleet import stop_handsets
        try:
            stop_handsets(self.handsets)
        finally:
            super().close()
            shutil.rmtree(self.workdir, ignore_errors=True)
