"""The expected-asset list of a batch: a CSV of asset tag, serial or IMEI, owner/cost centre."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

TAG_COLUMNS = ("asset_tag", "asset", "tag")
ID_COLUMNS = ("serial_or_imei", "identifier", "serial", "imei")
OWNER_COLUMNS = ("owner", "cost_centre", "cost_center", "owner_cost_centre")


@dataclass(frozen=True)
class Asset:
    asset_tag: str
    identifier: str  # a serial number or an IMEI
    owner: str = ""
    line: int = 0  # line in the CSV, for messages

    @property
    def key(self) -> str:
        return normalise(self.identifier)


def normalise(identifier: str | None) -> str:
    """How identifiers are compared: no spaces, upper case; an IMEI written in groups
    (35-209900-176148-1, 35 209900 176148 1) is its digits."""
    key = "".join((identifier or "").split()).upper()
    digits = key.replace("-", "").replace(".", "").replace("/", "")
    return digits if digits.isdigit() else key


@dataclass(frozen=True)
class Manifest:
    path: str
    sha256: str
    assets: tuple[Asset, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "assets": [asdict(a) for a in self.assets]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        return cls(data["path"], data["sha256"], tuple(Asset(**a) for a in data["assets"]))

    def lookup(self, serial: str | None, imeis: tuple[str, ...] | list[str] = ()) -> Asset | None:
        """The asset a device is listed as: by serial first, then by any IMEI."""
        keys = [normalise(serial)] + [normalise(i) for i in imeis]
        for key in keys:
            if not key:
                continue
            for asset in self.assets:
                if asset.key == key:
                    return asset
        return None


def _column(header: list[str], names: tuple[str, ...], path: Path, what: str) -> int | None:
    for i, name in enumerate(header):
        if name in names:
            return i
    if what:
        raise ConfigError(f"asset list {path} has no {what} column (header: {', '.join(header)})",
                          f"name a column one of: {', '.join(names)}")
    return None


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read asset list {path}: {exc}",
                          "give a UTF-8 CSV with columns asset_tag, serial_or_imei, owner") from exc
    reader = csv.reader(text.splitlines())
    rows: list[tuple[int, list[str]]] = []
    try:
        start = 1
        for row in reader:  # numbered by the line each row starts on
            if rows or any(cell.strip() for cell in row):  # blank lines before the header
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ConfigError(f"asset list {path} line {reader.line_num}: not readable as CSV "
                          f"({exc})", "fix that line (one short asset tag, serial or IMEI and "
                          "owner per line)") from None
    if not rows:
        raise ConfigError(f"asset list {path} is empty", "add a header line and one line per asset")
    header = [h.strip().lower().replace(" ", "_").replace("/", "_") for h in rows[0][1]]
    tag = _column(header, TAG_COLUMNS, path, "asset tag")
    ident = _column(header, ID_COLUMNS, path, "serial or IMEI")
    owner = _column(header, OWNER_COLUMNS, path, "")
    assets = []
    for number, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        cell = lambda i: row[i].strip() if i is not None and i < len(row) else ""  # noqa: E731
        if not cell(ident):
            raise ConfigError(f"asset list {path} line {number}: no serial or IMEI",
                              "fill in the serial_or_imei column")
        assets.append(Asset(cell(tag), cell(ident), cell(owner), number))
    return Manifest(str(path), hashlib.sha256(raw).hexdigest(), tuple(assets))
