"""Start emulated handsets: one storage image per handset, served by every plugin that
has an emulator for the handset's modes (found through the registry)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..plugin import Plugin
from .profiles import HandsetProfile, load_profile
from .storage import HandsetStorage


@dataclass
class EmulatedHandset:
    profile: HandsetProfile
    serial: str
    storage: HandsetStorage
    emulators: list[Any] = field(default_factory=list)

    @property
    def endpoints(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for emulator in self.emulators:
            merged.update(emulator.endpoints)
        return merged

    def stop(self) -> None:
        for emulator in self.emulators:
            emulator.stop()
        self.storage.close()


def start_handsets(profile_names: list[str], workdir: Path, plugins: dict[str, Plugin],
                   userdata_bytes: int | None = None) -> list[EmulatedHandset]:
    profiles = [load_profile(name) for name in profile_names]  # fail before starting any
    if userdata_bytes:
        profiles = [replace(p, userdata_bytes=userdata_bytes) for p in profiles]
    seen: Counter[str] = Counter()
    handsets: list[EmulatedHandset] = []
    try:
        for profile in profiles:
            serial = profile.serial(seen[profile.name])
            seen[profile.name] += 1
            storage = HandsetStorage.create(Path(workdir) / serial, profile, serial)
            handset = EmulatedHandset(profile, serial, storage)
            handsets.append(handset)
            for plugin in serving(plugins, profile.access.start_mode):
                emulator = plugin.start_emulator(storage, profile)
                if emulator is not None:
                    handset.emulators.append(emulator)
    except BaseException:
        stop_handsets(handsets)
        raise
    return handsets


def serving(plugins: dict[str, Plugin], start_mode: str) -> list[Plugin]:
    """The plugins whose emulators serve a handset that starts in ``start_mode``: those that
    speak it, and those speaking a mode such a phone can be rebooted into (declared)."""
    modes, grew = {start_mode}, True
    while grew:
        reached = {m for p in plugins.values() if modes & set(p.modes) for m in p.reboots_into}
        grew = not reached <= modes
        modes |= reached
    return [p for p in plugins.values() if modes & set(p.modes)]


def stop_handsets(handsets: list[EmulatedHandset]) -> None:
    for handset in handsets:
        handset.stop()
