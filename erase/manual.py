"""The catalogue of manual wipes: platforms phonewipe has no protocol for (BlackBerry,
Windows Phone, any unsupported model), each with the vendor's own wipe as steps the operator
performs and confirms, and what the screen shows when it is done (`fixtures/manual/*.toml`,
schema `phonewipe.manual/1`). An organisation may bring its own entry (`attest --steps FILE`):
it is checked the same way, and a bad one is one error naming the file and the key."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UsageError
from .strings import clean

MANUAL_SCHEMA = "phonewipe.manual/1"
MAX_STEPS = 30
MAX_TEXT = 600
MAX_FILE = 64 * 1024
_TEXTS = ("platform", "name", "manufacturer", "os", "vendor_function", "vendor_says",
          "not_covered")
_KEYS = {"schema", "models", "steps", "done", *_TEXTS}


@dataclass(frozen=True)
class Step:
    id: str
    do: str  # what the operator does
    confirm: str  # the yes/no question the operator answers


@dataclass(frozen=True)
class ManualPlatform:
    platform: str
    name: str
    manufacturer: str
    os: str
    models: tuple[str, ...]
    vendor_function: str
    vendor_says: str  # what the vendor documents its function does (not checked by phonewipe)
    not_covered: str  # what the vendor function leaves (cards...)
    steps: tuple[Step, ...]  # the last one is the "done" screen
    source: str  # the catalogue file it came from

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "name": self.name, "manufacturer": self.manufacturer,
                "os": self.os, "models": list(self.models),
                "vendor_function": self.vendor_function, "vendor_says": self.vendor_says,
                "not_covered": self.not_covered, "source": self.source,
                "steps": [{"id": s.id, "do": s.do, "confirm": s.confirm} for s in self.steps]}


def _bad(path: Path, key: str, what: str) -> UsageError:
    return UsageError(f"{path}: {key} {what}",
                      "fix the manual-wipe catalogue entry (see fixtures/manual/*.toml for the "
                      "format: schema, platform, name, vendor_function, [[steps]] id/do/confirm, "
                      "[done] screen/confirm)")


def _text(path: Path, table: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise _bad(path, f"{where}{key}", "must be text")
    if required and not value.strip():
        raise _bad(path, f"{where}{key}", "is missing or empty")
    if len(value) > MAX_TEXT:
        raise _bad(path, f"{where}{key}", f"is longer than {MAX_TEXT} characters")
    return clean(" ".join(value.split()), MAX_TEXT)


def _steps(path: Path, data: dict[str, Any]) -> tuple[Step, ...]:
    raw = data.get("steps")
    if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
        raise _bad(path, "[[steps]]", "must be a non-empty list of tables")
    if len(raw) > MAX_STEPS:
        raise _bad(path, "[[steps]]", f"has more than {MAX_STEPS} steps")
    steps = []
    for n, table in enumerate(raw, 1):
        unknown = set(table) - {"id", "do", "confirm"}
        if unknown:
            raise _bad(path, f"steps[{n}].{sorted(unknown)[0]}", "is not a known key")
        steps.append(Step(_text(path, table, "id", f"steps[{n}]."),
                          _text(path, table, "do", f"steps[{n}]."),
                          _text(path, table, "confirm", f"steps[{n}].")))
    done = data.get("done")
    if not isinstance(done, dict) or set(done) - {"screen", "confirm"}:
        raise _bad(path, "[done]", "must be a table with screen and confirm")
    steps.append(Step("done", f"Check the screen: {_text(path, done, 'screen', 'done.')}",
                      _text(path, done, "confirm", "done.")))
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise _bad(path, "steps", "repeat an id (each step id, and 'done', once)")
    return tuple(steps)


def parse_platform(path: Path, text: str) -> ManualPlatform:
    """One catalogue entry from its TOML text; UsageError naming the file and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, "", f"is not valid TOML ({exc})") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise _bad(path, sorted(unknown)[0], "is not a known key")
    if data.get("schema") != MANUAL_SCHEMA:
        raise _bad(path, "schema", f"must be {MANUAL_SCHEMA!r}")
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise _bad(path, "models", "must be a list of model names")
    texts = {k: _text(path, data, k, "", required=k in ("platform", "name", "vendor_function"))
             for k in _TEXTS}
    return ManualPlatform(models=tuple(clean(m, 80) for m in models[:50]),
                          steps=_steps(path, data), source=path.name, **texts)


def load_platform_file(path: Path) -> ManualPlatform:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the manual-wipe steps {path}: {exc.strerror or exc}",
                         "check the path given to --steps") from None
    if len(raw) > MAX_FILE:
        raise _bad(path, "", f"is larger than {MAX_FILE // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, "", "is not UTF-8 text") from None
    import hashlib
    from dataclasses import replace
    own = f"{clean(path.name, 120)} (own steps file, SHA-256 {hashlib.sha256(raw).hexdigest()})"
    return replace(parse_platform(path, text), source=own)  # not the built-in catalogue


def catalogue() -> dict[str, ManualPlatform]:
    """The built-in entries (package data), by platform id."""
    folder = resources.files("phonewipe.fixtures") / "manual"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            platform = parse_platform(Path(entry.name), entry.read_text("utf-8"))
            out[platform.platform] = platform
    return out


def find_platform(name: str) -> ManualPlatform:
    entries = catalogue()
    if name in entries:
        return entries[name]
    import difflib
    near = difflib.get_close_matches(name, list(entries), n=1)
    raise UsageError(f"no manual-wipe platform {name!r}" +
                     (f" (did you mean {near[0]!r}?)" if near else ""),
                     f"choose one of {', '.join(entries)} (`phonewipe attest --list`), or "
                     "give your own steps with --steps FILE")
