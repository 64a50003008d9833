"""An emulated iPhone's own settings: the ``[ios]`` table of its handset profile
(fixtures/profiles/iphone*.toml), which the core's profile loader leaves to this plugin."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.profiles import PROFILES_DIR, _merged, _read_toml
from phonewipe.erase.errors import ConfigError

TRUST = ("accept", "never", "deny")  # taps Trust when asked / ignores the prompt / taps Don't Trust
ERASE = ("honest", "lies", "lies-unactivated", "never-returns")


@dataclass(frozen=True)
class IosSpec:
    product_type: str = "iPhone14,2"
    hardware_model: str = "D63AP"
    chip_id: int = 0x8110
    ios_version: str = "17.5.1"
    build_version: str = "21F90"
    device_name: str = "iPhone"
    trust: str = "accept"
    passcode_locked: bool = False  # locked with its passcode: no pairing until unlocked
    find_my: bool = False  # Find My on: Activation Lock will hold the erased phone
    activated: bool = True
    supervised: bool = False
    organization: str = ""  # the supervising organisation (cloud configuration)
    mdm_profiles: tuple[str, ...] = ()  # identifiers of installed MDM enrolment profiles
    # honest | lies (acks, reboots, erases nothing) | lies-unactivated (comes back at the
    # setup assistant but erased nothing: same identity, same pairings) | never-returns
    erase: str = "honest"
    reboot_s: float = 0.3  # how long the emulated erase-and-reboot keeps it off the bus

    def udid(self, serial: str) -> str:
        """A modern UDID: the chip id and a 64-bit number derived from the serial."""
        ecid = hashlib.sha256(f"ecid:{serial}".encode()).hexdigest()[:16].upper()
        return f"{self.chip_id:08X}-{ecid}"


def _profile_path(name: str, directory: Path) -> Path:
    return Path(name) if name.endswith(".toml") else directory / f"{name}.toml"


def load_spec(profile_name: str, directory: Path = PROFILES_DIR) -> IosSpec:
    """The ``[ios]`` table of a profile, by name or path (its ``extends`` base's merged under
    it)."""
    path = _profile_path(profile_name, directory)
    data = _read_toml(path)
    if "extends" in data:  # a base among the shipped profiles, as the core reads it
        data = _merged(_read_toml(directory / f"{data['extends']}.toml"), data)
    values: dict[str, Any] = dict(data.get("ios", {}))
    known = {f.name for f in fields(IosSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"profile {path} has unknown keys in [ios]: {', '.join(unknown)}",
                          f"use only: {', '.join(sorted(known))}")
    if "mdm_profiles" in values:
        values["mdm_profiles"] = tuple(values["mdm_profiles"])
    spec = IosSpec(**values)
    if spec.trust not in TRUST or spec.erase not in ERASE:
        raise ConfigError(f"profile {path}: [ios] trust must be one of {TRUST} and erase one of "
                          f"{ERASE}", "fix the profile file")
    return spec
