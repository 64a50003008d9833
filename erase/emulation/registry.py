"""Where emulated handsets served by one process (`phonewipe emulate`) are found by another
(`phonewipe erase --via fastboot`, `phonewipe devices`).

The adb plugin publishes an emulated phone by connecting it to the user's adb server; a
bootloader has no such server: its emulated USB bus lives in the serving process. So a
plugin whose emulator other processes cannot otherwise see writes one small file per
endpoint into a directory of the user's (``~/.cache/phonewipe/emulators``, mode 0700):
the mode, the loopback address and the serving process. A plugin lists the entries of its
mode besides the devices it finds itself.

Only the user's own processes can write there: a directory or file owned by someone else,
or writable by others, is ignored, and so is an address that is not on loopback. A phone
has no way in. Entries of a process that has ended are removed; entries of the reading
process itself are skipped (its plugins see its own emulators directly). Whatever an entry
names is still only a candidate: following a phone accepts it only when it reports the
same serial number (erase/follow.py).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PUBLISH_KEY = "publish_emulators"  # PluginOptions: True in a process serving others
DIR_KEY = "emulator_registry"  # PluginOptions: the directory (default: `default_dir()`)
LOOPBACK = ("tcp:127.0.0.1:", "tcp:[::1]:", "tcp:localhost:")


@dataclass(frozen=True)
class Published:
    mode: str
    address: str  # e.g. tcp:127.0.0.1:40123
    serial: str
    pid: int
    path: Path


def default_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "phonewipe" / "emulators"


def registry_dir(options: Any) -> Path:
    """The directory ``options`` (a PluginOptions) name, else the user's default."""
    given = options.get(DIR_KEY) if options is not None else None
    return Path(given) if given else default_dir()


def _private(path: Path, st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def publish(directory: Path, mode: str, address: str, serial: str) -> Path:
    """Record one endpoint of an emulator this process serves; returns the entry's path
    (give it to `withdraw` when the emulator stops)."""
    if not address.startswith(LOOPBACK):
        raise ValueError(f"only loopback endpoints are published, not {address!r}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    name = f"{os.getpid()}-{mode}-{address.rsplit(':', 1)[-1]}.json"
    path = directory / name
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"mode": mode, "address": address, "serial": serial, "pid": os.getpid()}, f)
    os.replace(temporary, path)
    return path


def withdraw(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not an entry of ours anyway
        return False
    return True


def published(directory: Path, mode: str) -> list[Published]:
    """The live entries of ``mode`` other processes of this user published."""
    try:
        if not _private(directory, directory.stat()):
            return []
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or not _private(path, st):
                continue
            data = json.loads(path.read_text("utf-8"))
            entry = Published(str(data["mode"]), str(data["address"]), str(data.get("serial", "")),
                              int(data["pid"]), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if entry.pid == os.getpid() or entry.mode != mode or not entry.address.startswith(LOOPBACK):
            continue
        if not _alive(entry.pid):  # the serving process ended without withdrawing (kill -9)
            withdraw(path)
            continue
        found.append(entry)
    return found
