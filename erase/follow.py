"""Following one phone across modes: reboot it from one mode into another (adb into the
bootloader to erase there, the bootloader back into Android to sample what the erase did),
and find the same serial number through another plugin (found through the registry, never
imported).

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

DEFAULT_TIMEOUT_S = 90.0
POLL_S = 0.5

LogFn = Callable[[str, dict[str, Any]], None]


@dataclass
class Found:
    """The phone found again in another mode, through the plugin that serves that mode."""

    plugin: Plugin
    endpoint: Endpoint
    session: Session


@dataclass
class Followed:
    """The phone found again in another mode, with read access to its storage."""

    session: Session
    reader: BlockReader
    endpoint: Endpoint

    def close(self) -> None:
        self.session.close()


class NotFollowed(PhonewipeError):
    """The phone could not be brought into, or found in, the mode asked for."""


def follow_to(plugin: Plugin, session: Session, serial: str | None, mode: str,
              log: LogFn) -> Found:
    """Reboot the phone from ``session`` into ``mode`` and return an open session of the
    same serial there (the audit log says how it went)."""
    if not serial:
        raise NotFollowed("the phone reported no serial number, so it cannot be recognised "
                          "in another mode", "erase it in the mode it is in")
    if not plugin.options.get("follow_modes", True):
        raise NotFollowed("following phones across modes is turned off", "erase it in the mode it is in")
    if not session.reboot_to(mode):
        raise NotFollowed(f"the phone cannot be rebooted into {mode} mode from {plugin.name}",
                          f"put it into {mode} mode by hand and run again")
    timeout = float(plugin.options.get("follow_timeout", DEFAULT_TIMEOUT_S))
    log("following", {"to": mode, "serial": serial, "timeout_s": timeout})
    others = [_same_guard(plugin, p) for name, p in load_plugins(plugin.options).items()
              if name != plugin.name]
    deadline = time.monotonic() + timeout
    while True:
        for other in others:
            found = _find(other, serial, mode)
            if found is not None:
                log("followed", {"endpoint": str(found[0]), "mode": mode})
                return Found(other, *found)
        if time.monotonic() > deadline:
            log("follow-timeout", {"serial": serial, "mode": mode, "waited_s": timeout})
            raise NotFollowed(f"the phone did not appear in {mode} mode within {timeout:.0f} s "
                              "of the reboot", "check the cable (and, on Linux, the udev rule "
                              "in the README), then run again")
        time.sleep(POLL_S)


def follow_for_readback(plugin: Plugin, session: Session, serial: str | None,
                        log: LogFn) -> Followed | None:
    """Reboot the phone from ``session`` into a mode where another plugin reads storage
    back (declared: `Plugin.reboots_into`, `reads_back`, `modes`) and return a reader there;
    None (with the reason in the audit log) when the phone cannot be followed or read."""
    readable = {mode for other in load_plugins(plugin.options).values()
                if other.name != plugin.name and other.reads_back for mode in other.modes}
    modes = [mode for mode in plugin.reboots_into if mode in readable]
    if not modes:
        log("readback-unavailable", {"reason": f"no plugin reads storage back in a mode "
                                               f"{plugin.name} can reboot into"})
        return None
    try:
        found = follow_to(plugin, session, serial, modes[0], log)
    except NotFollowed:
        return None
    reader = found.session.readback()
    if reader is None:
        log("readback-unavailable", {"endpoint": str(found.endpoint)})
        found.session.close()
        return None
    return Followed(found.session, reader, found.endpoint)


def _same_guard(plugin: Plugin, other: Plugin) -> Plugin:
    """``other`` under the guard ``plugin`` runs under, if any (erase.guard.GuardedPlugin):
    the followed phone's session keeps the job's timeout and abort."""
    guarded = getattr(type(plugin), "guarded", None)
    return guarded(plugin, other) if guarded else other


def _find(plugin: Plugin, serial: str, mode: str) -> tuple[Endpoint, Session] | None:
    """An open, identified session of the phone with ``serial`` in ``mode``, if seen."""
    try:
        endpoints = [e for e in plugin.discover() if e.mode == mode]
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
