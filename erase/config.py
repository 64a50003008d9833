"""Operator settings from a TOML config file, overridden by command-line options."""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, PhonewipeError
from .model import ESIM_STATES, Destination, Media, Operator
from .plugin import PluginOption, Registry
from .verify import check_plan_settings

DEFAULT_CONFIG_PATHS = (Path("phonewipe.toml"),
                        Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
                        / "phonewipe" / "config.toml")
DEFAULT_KEYS_DIR = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "phonewipe" / "keys"
DESTINATIONS = ("internal reuse", "external reuse", "resale", "recycling", "manufacturer", "other")


@dataclass(frozen=True)
class Config:
    operator: Operator = field(default_factory=Operator)
    destination: Destination = field(default_factory=Destination)
    keys_dir: Path = DEFAULT_KEYS_DIR
    verify_mode: str = "quick"
    confidence: float = 0.99
    residual: float = 0.001
    plugin_values: dict[str, Any] = field(default_factory=dict)  # from the plugins' tables
    station_timeout: float = 7200.0  # [station] timeout: seconds per device
    second_look_share: float = 0.05  # [station] second_look: share of PASSed devices
    second_look_by: str = ""  # [station] second_look_by: who does the second look
    station_name: str = ""  # [station] name: this station's identity in a facility's store
    store_url: str = ""  # [store] url: "postgresql://..." (a facility's store); "" = SQLite
    store_keep_pdf: bool = False  # [store] keep_pdf: the certificates' bytes in the store too
    assets_map: dict[str, str] = field(default_factory=dict)  # [assets]: field -> CSV column
    # [trust]: whom `cert verify` trusts (pinned signer certificates and fingerprints, CAs)
    trust_certificates: tuple[Path, ...] = ()
    trust_fingerprints: tuple[str, ...] = ()
    trust_ca_certificates: tuple[Path, ...] = ()
    tsa_url: str = ""  # [signing] tsa_url: RFC 3161 time-stamping authority ("" = none)
    tsa_timeout: float = 10.0  # [signing] tsa_timeout: seconds per timestamp request
    media: Media = field(default_factory=Media)  # [media]: App. G defaults, SIM/microSD/eSIM
    fleet_mdm: str = ""  # [fleet] mdm: the organisation's own MDM (package or product name)
    source: Path | None = None


# the core's tables and their keys; each plugin adds a table of its declared options
CORE_TABLES: dict[str, tuple[str, ...]] = {
    "operator": ("name", "title", "organization", "location", "phone"),
    "destination": ("kind", "details"),
    "verification": ("mode", "confidence", "residual"),
    "keys": ("dir",),
    "station": ("timeout", "second_look", "second_look_by", "name"),
    "store": ("url", "keep_pdf"),
    "assets": ("tag", "identifier", "serial", "imei", "imei2", "owner"),  # asset-list columns
    "trust": ("certificates", "fingerprints", "ca_certificates"),
    "signing": ("tsa_url", "tsa_timeout"),
    "media": ("source", "classification", "backup", "post_classification", "notes",
              "sim_removed", "microsd_removed", "esim"),
    "fleet": ("mdm",),
}


def _list(table: dict[str, Any], key: str, name: str, path: Path) -> list[str]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config file {path}: [{name}] {key} must be a list of strings",
                          f'e.g. {key} = ["..."]')
    return value


def _paths(values: list[str], path: Path) -> tuple[Path, ...]:
    """Paths relative to the config file's directory; ~ expanded."""
    return tuple((path.parent / Path(v).expanduser()) for v in values)


def _table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config {path}: [{name}] must be a table", "fix the config file")
    return value


def _value(table: dict[str, Any], name: str, key: str, kind: type, default: Any, path: Path) -> Any:
    """``[name] key`` as ``kind`` (str, float), its default when absent; a value of another
    type is an error naming the file, the table and the key."""
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    want = "a number" if kind is float else "true or false" if kind is bool else "a string"
    raise ConfigError(f"config file {path}: [{name}] {key} must be {want}, not {value!r}",
                      "fix the file (see README, 'Configuration')")


def _check_names(data: dict[str, Any], registry: Registry, path: Path) -> None:
    """A misspelt table or key is an error, never silently ignored."""
    known = {**CORE_TABLES, **{name: tuple(s.key for s in cls.option_specs)
                               for name, cls in registry.classes.items()}}
    for table in data:
        if table not in known:
            hint = f"{_did_you_mean(table, known)}known tables: {', '.join(sorted(known))}"
            if table in registry.failures:
                hint = f"the {table} plugin failed to load ({registry.failures[table]})"
            raise ConfigError(f"config file {path}: unknown table [{table}]", hint)
        for key in _table(data, table, path):
            if key not in known[table]:
                raise ConfigError(f"config file {path}: unknown key {key!r} in [{table}]",
                                  f"{_did_you_mean(key, known[table])}known keys there: "
                                  f"{', '.join(known[table]) or 'none'}")


def _media(table: dict[str, Any], path: Path) -> Media:
    """[media]: the App. G defaults (strings) and the operator's attestations (booleans;
    esim one of "erased", "not present", "unknown")."""
    values: dict[str, Any] = {}
    for key in ("source", "classification", "backup", "post_classification", "notes"):
        values[key] = _value(table, "media", key, str, "", path)
    for key in ("sim_removed", "microsd_removed"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(f"config file {path}: [media] {key} must be true or false, "
                                  f"not {table[key]!r}", f"e.g. {key} = true")
            values[key] = table[key]
    esim = _value(table, "media", "esim", str, "", path).strip().lower().replace("-", " ")
    if esim not in (*ESIM_STATES, "unknown"):
        raise ConfigError(f"config file {path}: [media] esim must be one of \"erased\", "
                          f"\"not present\", \"unknown\", not {esim!r}", 'e.g. esim = "not present"')
    return Media(**values, esim="" if esim == "unknown" else esim)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def plugin_values(data: dict[str, Any], registry: Registry, path: Path) -> dict[str, Any]:
    """Each plugin's table, checked against its declared options."""
    values: dict[str, Any] = {}
    for name, cls in registry.classes.items():
        table = _table(data, name, path)
        specs: dict[str, PluginOption] = {spec.key: spec for spec in cls.option_specs}
        for key, value in table.items():
            try:
                values[specs[key].value_key(name)] = specs[key].check(name, value)
            except ValueError as exc:
                raise ConfigError(f"config file {path}: [{name}] {exc}",
                                  "fix the file (see README, 'Configuration')") from None
    return values


def load_config(path: Path | None = None, registry: Registry | None = None) -> Config:
    """Read the config; with no path, the first of ./phonewipe.toml and
    ~/.config/phonewipe/config.toml that exists, else defaults. ``registry`` names the
    plugins whose tables may appear (default: the installed ones)."""
    if path is None:
        path = next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
        if path is None:
            return Config()
    elif not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "check the --config path")
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}",
                          "fix the file (see README, 'Configuration')") from exc
    registry = registry or Registry.load()
    _check_names(data, registry, path)

    def get(name: str, key: str, kind: type, default: Any) -> Any:
        return _value(_table(data, name, path), name, key, kind, default, path)

    operator = Operator(**{k: get("operator", k, str, "") for k in _table(data, "operator", path)})
    destination = Destination(kind=get("destination", "kind", str, "resale"),
                              details=get("destination", "details", str, ""))
    trust = _table(data, "trust", path)
    config = Config(
        operator=operator, destination=destination,
        keys_dir=Path(get("keys", "dir", str, str(DEFAULT_KEYS_DIR))).expanduser(),
        verify_mode=get("verification", "mode", str, "quick"),
        confidence=get("verification", "confidence", float, 0.99),
        residual=get("verification", "residual", float, 0.001),
        plugin_values=plugin_values(data, registry, path),
        station_timeout=get("station", "timeout", float, 7200.0),
        second_look_share=get("station", "second_look", float, 0.05),
        second_look_by=get("station", "second_look_by", str, ""),
        station_name=get("station", "name", str, "").strip(),
        store_url=get("store", "url", str, "").strip(),
        store_keep_pdf=get("store", "keep_pdf", bool, False),
        assets_map={k: get("assets", k, str, "") for k in _table(data, "assets", path)},
        trust_certificates=_paths(_list(trust, "certificates", "trust", path), path),
        trust_fingerprints=tuple(_list(trust, "fingerprints", "trust", path)),
        trust_ca_certificates=_paths(_list(trust, "ca_certificates", "trust", path), path),
        tsa_url=get("signing", "tsa_url", str, "").strip(),
        tsa_timeout=get("signing", "tsa_timeout", float, 10.0),
        media=_media(_table(data, "media", path), path),
        fleet_mdm=get("fleet", "mdm", str, "").strip(), source=path)
    if config.store_url and not config.store_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"config file {path}: [store] url must be a postgresql:// URL",
                          'e.g. url = "postgresql://phonewipe@db.example/phonewipe", or no [store]'
                          " table for the station directory's own audit.sqlite")
    if config.tsa_url and not config.tsa_url.startswith(("http://", "https://")):
        raise ConfigError(f"config file {path}: [signing] tsa_url must be an http(s) URL, not "
                          f"{config.tsa_url!r}", "e.g. tsa_url = \"https://tsa.example/tsr\"")
    if not config.tsa_timeout > 0:  # also refuses NaN
        raise ConfigError(f"config file {path}: [signing] tsa_timeout must be positive",
                          "e.g. tsa_timeout = 10")
    if not config.station_timeout >= 1:  # also refuses NaN
        raise ConfigError(f"config file {path}: [station] timeout must be at least 1 second, not "
                          f"{config.station_timeout:g}", "fix the file (e.g. timeout = 7200)")
    try:
        check_plan_settings(config.verify_mode, config.confidence, config.residual)
    except PhonewipeError as exc:
        raise ConfigError(f"config file {path}: [verification] {exc.message}", exc.advice) from exc
    if config.destination.kind not in DESTINATIONS:
        raise ConfigError(f"config file {path}: unknown destination {config.destination.kind!r}",
                          f"use one of: {', '.join(DESTINATIONS)}")
    return config
