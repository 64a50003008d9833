"""The EDL side of an emulated handset profile: the ``[edl]`` table of its TOML (this
plugin reads its own table; the core's profile loader ignores tables it does not know)."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.profiles import PROFILES_DIR
from phonewipe.erase.errors import ConfigError

GPT_DAMAGE = ("ok", "primary-bad", "both-bad", "primary-hides", "primary-hides-backup-bad")
TEST_KEY_HASH = hashlib.sha256(b"phonewipe emulated OEM signing key").digest()


@dataclass(frozen=True)
class EdlSpec:
    memory: str = "ufs"  # ufs (4096-byte sectors, several LUNs) | emmc (512, one user area)
    luns: int = 3
    hwid: int = 0x0008B0E1_0051_4985  # MSM id, OEM id, model id
    pkhash: bytes = TEST_KEY_HASH
    sbl_version: int = 0x00000001
    functions: tuple[str, ...] = ("configure", "program", "read", "nop", "power", "erase",
                                  "getstorageinfo", "patch")
    gpt: str = "ok"  # ok | primary-bad | both-bad | primary-hides[-backup-bad] (LUN 0's tables)
    # accept | reject (refuses any programmer) | endless[-zero|-past-end] (asks for ever)
    loader: str = "accept"
    max_payload: int = 1024 * 1024  # bytes per raw transfer the programmer takes
    # Firehose tag -> silent | nak[:log] | chatter; read -> short | trickle; erase -> slow;
    # getstorageinfo -> negative | nested; configure -> huge-payload
    quirks: dict[str, str] = field(default_factory=dict)

    @property
    def sector(self) -> int:
        return 4096 if self.memory == "ufs" else 512


def _table(name: str, directory: Path, depth: int = 0) -> dict[str, Any]:
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read profile {path}: {exc}", "fix the profile file") from exc
    base = data.get("extends")
    table = dict(data.get("edl", {}))
    if base and depth < 4:
        table = {**_table(str(base), directory, depth + 1), **table}
    return table


def load_spec(profile_name: str, directory: Path = PROFILES_DIR) -> EdlSpec:
    table = _table(profile_name, directory)
    known = {f.name for f in fields(EdlSpec)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"profile {profile_name} has unknown keys in [edl]: {', '.join(sorted(unknown))}",
                          f"use {', '.join(sorted(known))}")
    if "pkhash" in table:
        table["pkhash"] = bytes.fromhex(str(table["pkhash"]))
    if "hwid" in table:
        table["hwid"] = int(str(table["hwid"]), 16)
    if "functions" in table:
        table["functions"] = tuple(table["functions"])
    spec = EdlSpec(**table)
    if spec.memory not in ("ufs", "emmc") or spec.gpt not in GPT_DAMAGE:
        raise ConfigError(f"profile {profile_name}: [edl] memory or gpt is invalid",
                          f"memory = ufs|emmc, gpt = {'|'.join(GPT_DAMAGE)}")
    return spec
