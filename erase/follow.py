"""Following one phone across modes: after an erase in a mode without read-back (the
bootloader), reboot the phone into Android, find the same serial number through another
plugin (found through the registry, never imported), and sample through that session.

The phone is identified by its serial only: an endpoint whose `identify()` reports another
serial is never used, so a different phone cannot stand in for the erased one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import PhonewipeError
from .model import Endpoint
from .plugin import BlockReader, Plugin, Session, load_plugins

FOLLOW_MODE = "adb"
DEFAULT_TIMEOUT_S = 90.0
POLL_S = 0.5

LogFn = Callable[[str, dict[str, Any]], None]


@dataclass
class Followed:
    """The phone found again in another mode, with read access to its storage."""

    session: Session
    reader: BlockReader
    endpoint: Endpoint

    def close(self) -> None:
        self.session.close()


def follow_for_readback(plugin: Plugin, session: Session, serial: str | None,
                        log: LogFn) -> Followed | None:
    """Reboot the phone from ``session`` into adb and return a reader there; None (with
    the reason in the audit log) when the phone cannot be followed or read."""
    if not serial or not plugin.options.get("follow_modes", True):
        return None
    if not session.reboot_to(FOLLOW_MODE):
        return None
    timeout = float(plugin.options.get("follow_timeout", DEFAULT_TIMEOUT_S))
    log("following", {"to": FOLLOW_MODE, "serial": serial, "timeout_s": timeout})
    others = [p for name, p in load_plugins(plugin.options).items() if name != plugin.name]
    deadline = time.monotonic() + timeout
    while True:
        for other in others:
            found = _find(other, serial)
            if found is None:
                continue
            endpoint, found_session = found
            reader = found_session.readback()
            log("followed", {"endpoint": str(endpoint), "readable": reader is not None})
            if reader is None:
                found_session.close()
                return None
            return Followed(found_session, reader, endpoint)
        if time.monotonic() > deadline:
            log("follow-timeout", {"serial": serial, "waited_s": timeout})
            return None
        time.sleep(POLL_S)


def _find(plugin: Plugin, serial: str) -> tuple[Endpoint, Session] | None:
    """An open, identified session of the phone with ``serial`` in FOLLOW_MODE, if seen."""
    try:
        endpoints = [e for e in plugin.discover() if e.mode == FOLLOW_MODE]
    except PhonewipeError:
        return None
    for endpoint in endpoints:
        try:
            candidate = plugin.open(endpoint)
        except PhonewipeError:
            continue
        try:
            if candidate.identify().serial == serial:
                return endpoint, candidate
        except PhonewipeError:
            pass
        candidate.close()
    return None
