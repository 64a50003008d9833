"""Emulated handset profiles: fixtures/profiles/NAME.toml."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

FIXTURES_DIR = Path(str(resources.files("phonewipe.fixtures")))  # package data
PROFILES_DIR = FIXTURES_DIR / "profiles"


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str = "Google"
    model: str = "Pixel 6a"
    product: str = "bluejay"
    device: str = "bluejay"
    serial_prefix: str = "PW"
    imei: str = ""  # its first 8 digits (the type allocation code) start each handset's IMEIs
    sim_slots: int = 1  # a dual-SIM phone (physical + eSIM, or two trays) has an IMEI per slot
    android: str = "14"
    sdk: int = 34
    build_type: str = "user"
    crypto_type: str = "file"
    storage_type: str = "UFS"
    ram_mib: int = 6144  # the kernel's page cache can hold this much of what was written


@dataclass(frozen=True)
class Access:
    root: str = "none"  # none | su (Magisk-style) | adbd (engineering build, `adb root`)
    auth: str = "none"  # none (no auth) | accept (user taps allow) | never (prompt ignored)
    start_mode: str = "adb"  # adb | fastboot
    # how root may get past the kernel's page cache (SELinux policies differ):
    flushbufs: bool = True  # `blockdev --flushbufs` (the BLKFLSBUF ioctl)
    drop_caches: bool = True  # `echo 3 > /proc/sys/vm/drop_caches`
    direct_io: bool = False  # `dd iflag=direct` (toybox's answers EINVAL: unaligned buffer)


@dataclass(frozen=True)
class Locks:
    google_accounts: tuple[str, ...] = ()
    device_owner: str = ""  # package of an MDM device-owner app
    profile_owner: str = ""  # component of a work profile's owner on a company-owned phone
    samsung_accounts: tuple[str, ...] = ()  # Samsung account (Reactivation Lock) signed in
    screen_lock: bool = False
    bootloader_locked: bool = True
    oem_unlocking: bool = False  # "OEM unlocking" on and the owner confirms `flashing unlock`


@dataclass(frozen=True)
class Faults:
    lying_fraction: float = 0.0  # share of userdata the device silently skips on writes
    lying_layout: str = "scattered"  # scattered | contiguous | middle
    partial_at: float = 0.0  # writes stop silently past this share (0 = off)
    unplug_at: float = 0.0  # the device drops off the bus past this share (0 = off)
    unreadable: tuple[tuple[float, float], ...] = ()  # ranges (share of size) that fail reads
    slow_mib_s: float = 0.0  # write throughput cap (0 = unlimited)
    reset_lies: bool = False  # factory reset acknowledged but nothing happens
    untouched_reads_zero: bool = False  # skipped regions read back as zeros once erasing began
    hidden_fraction: float = 0.0  # share of userdata past the size the block device reports
    # counterfeit capacity: the flash holds only this share of what it reports, and addresses
    # past it wrap around onto the start (a fake "32 GB" card with 4 GB of flash); 0 = off
    real_fraction: float = 0.0


@dataclass(frozen=True)
class HandsetProfile:
    name: str
    description: str
    device: DeviceInfo
    access: Access
    locks: Locks
    faults: Faults
    userdata_bytes: int
    seed: int
    expect: str  # the outcome an honest tool reaches on this handset with default settings
    path: str = ""  # the file it was read from: a plugin reads its own table there ([ios])

    def serial(self, index: int = 0) -> str:
        return f"{self.device.serial_prefix}{index:04X}"

    def imeis(self, serial: str) -> list[str]:
        """This handset's IMEIs, one per SIM slot: the profile's type allocation code, a serial
        number derived from the handset's serial (distinct handsets, distinct IMEIs; a phone's
        slots get consecutive ones, as manufacturers assign them) and the Luhn check digit.
        Empty for a profile without telephony (no ``imei``)."""
        tac = self.device.imei[:8]
        if len(tac) != 8 or not tac.isdigit():
            return []
        snr = int.from_bytes(hashlib.sha256(serial.encode()).digest()[:8], "big") % 10**6
        bodies = [f"{tac}{(snr + slot) % 10**6:06d}" for slot in range(max(1, self.device.sim_slots))]
        return [body + luhn_check_digit(body) for body in bodies]


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body`` + digit pass the Luhn check (an IMEI's 15th)."""
    total = 0
    for i, char in enumerate(reversed(body)):
        d = int(char) * (1 if i % 2 else 2)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def available_profiles(directory: Path = PROFILES_DIR) -> dict[str, str]:
    """Profile name -> one-line description."""
    out = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            out[path.stem] = load_profile(path.stem, directory).description
        except ConfigError as exc:
            out[path.stem] = f"(broken: {exc.message})"
    return out


def _section(data: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    values = dict(data.get(name, {}))
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    try:
        return kind(**values)
    except TypeError as exc:
        raise ConfigError(f"profile {path} has an unknown key in [{name}]: {exc}",
                          "fix the profile file") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"profile file {path} does not exist", "fix the profile's `extends`")
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}", "fix the profile file") from exc


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def load_profile(name: str, directory: Path = PROFILES_DIR) -> HandsetProfile:
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
        raise ConfigError(f"no emulated handset profile named {name!r}",
                          f"choose one of: {known} (phonewipe emulate --list)")
    data = _read_toml(path)
    if "extends" in data:  # a variant: the base profile with some values replaced
        base = str(data.pop("extends"))
        if base == path.stem:
            raise ConfigError(f"profile {path} extends itself", "fix the profile file")
        data = _merged(_read_toml(directory / f"{base}.toml"), data)
    storage = data.get("storage", {})
    return HandsetProfile(
        name=path.stem,
        description=str(data.get("description", "")),
        device=_section(data, "device", DeviceInfo, path),
        access=_section(data, "access", Access, path),
        locks=_section(data, "locks", Locks, path),
        faults=_section(data, "faults", Faults, path),
        userdata_bytes=int(storage.get("userdata_mib", 32)) * 1024 * 1024,
        seed=int(data.get("seed", 1)),
        expect=str(data.get("expect", "ERASED_VERIFIED")),
        path=str(path),
    )
