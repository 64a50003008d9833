"""The ``[maemo]`` table of an emulated N900's profile (fixtures/profiles/n900*.toml),
read by this plugin itself: the core's profile loader keeps the tables it knows."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.profiles import PROFILES_DIR
from phonewipe.erase.errors import ConfigError


@dataclass(frozen=True)
class MaemoProfile:
    software_version: str = "RX-51_2009SE_21.2011.38-1_PR_MR0"
    product: str = "RX-51"
    user: str = "user"
    password: str = "rootme"
    gainroot: bool = True  # the rootsh package is installed


def load_maemo(profile: Any, directory: Path = PROFILES_DIR) -> MaemoProfile:
    """The profile's [maemo] table (its `extends` base's when it has none)."""
    name = profile.name
    for _ in range(5):
        path = directory / f"{name}.toml"
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"profile {path} cannot be read: {exc}", "fix the profile file") from exc
        if "maemo" in data or "extends" not in data:
            table = data.get("maemo", {})
            known = {f.name for f in fields(MaemoProfile)}
            unknown = set(table) - known
            if unknown:
                raise ConfigError(f"profile {path} has unknown keys in [maemo]: "
                                  f"{', '.join(sorted(unknown))}", "fix the profile file")
            return MaemoProfile(**table)
        name = str(data["extends"])
    raise ConfigError(f"profile {profile.name} extends too deeply", "fix the profile file")
