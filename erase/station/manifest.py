"""The expected-asset list of a batch: a CSV with an asset tag, a serial and/or IMEIs, and an
owner per device — phonewipe's own columns or an MDM's export (Intune, Jamf, Google admin,
Knox: their column names are recognised; `column_map` names any other).

Lines that cannot be used (no identifier, an IMEI Excel turned into 3.52099E+14, an IMEI
that fails its check digit) are skipped with a warning naming the line; a list with no
usable line is an error."""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..identity import luhn_ok

# header names (lower case, spaces and slashes as "_") each field is read from, first match wins
COLUMNS: dict[str, tuple[str, ...]] = {
    # an MDM export without an asset tag (Intune) names the device: that is its tag
    "tag": ("asset_tag", "asset", "tag", "asset_number", "asset_id", "asset_tag_number",
            "device_name", "mobile_device_name"),
    "identifier": ("serial_or_imei", "identifier"),
    "serial": ("serial", "serial_number", "serialnumber", "serial_no", "hardware_serial",
               "device_serial_number"),
    "imei": ("imei", "imei1", "imei_1", "imei_number", "imei_meid", "imei_or_meid", "meid"),
    "imei2": ("imei2", "imei_2", "secondary_imei", "imei_(slot_2)", "imei_slot_2"),
    "owner": ("owner", "cost_centre", "cost_center", "owner_cost_centre", "primary_user_upn",
              "user_principal_name", "upn", "username", "user", "user_id", "email",
              "user_email", "assigned_user", "full_name", "department"),
}
SCIENTIFIC = re.compile(r"^\d(\.\d+)?[eE]\+?\d+$")


@dataclass(frozen=True)
class Asset:
    asset_tag: str
    identifier: str  # the first identifier on the line: serial, else IMEI
    owner: str = ""
    line: int = 0  # line in the CSV, for messages
    serial: str = ""
    imeis: tuple[str, ...] = ()

    @property
    def keys(self) -> list[str]:
        """Every identifier of the line, normalised: a device matches on any of them. A
        14-digit IMEI is also the 15-digit one a spreadsheet took the leading 0 from
        (01 is Apple's and others' prefix), when that one's check digit holds."""
        found = [normalise(v) for v in (self.identifier, self.serial, *self.imeis)]
        found += ["0" + k for k in found if len(k) == 14 and k.isdigit() and luhn_ok("0" + k)]
        return list(dict.fromkeys(k for k in found if k))

    @property
    def key(self) -> str:
        return normalise(self.identifier)


def normalise(identifier: str | None) -> str:
    """How identifiers are compared: no spaces, upper case; an IMEI written in groups
    (35-209900-176148-1, 35 209900 176148 1) is its digits."""
    key = "".join((identifier or "").split()).upper()
    digits = key.replace("-", "").replace(".", "").replace("/", "")
    return digits if digits.isdigit() else key


def identity_keys(serial: str | None, imeis: tuple[str, ...] | list[str] = ()) -> list[str]:
    """How a device is looked up in a list: its serial, its IMEIs, and each IMEI's 14 digits
    without the check digit (the form some lists give)."""
    ids = [normalise(i) for i in imeis]
    ids += [i[:14] for i in ids if len(i) == 15 and i.isdigit()]
    return [k for k in dict.fromkeys([normalise(serial), *ids]) if k]


def imei_problem(value: str) -> str | None:
    """Why an IMEI cell cannot be used, or None. 14 digits (no check digit), 15 with a valid
    check digit, 16 (IMEISV) and 14-hex MEIDs are accepted."""
    if SCIENTIFIC.match(value.strip()):
        return (f"IMEI {value!r} was turned into a number in scientific notation (a spreadsheet "
                "did it): export the column as text")
    key = normalise(value)
    if key.isdigit():
        if len(key) == 15 and not luhn_ok(key):
            return f"IMEI {value} fails its check digit (mistyped?)"
        if len(key) in (14, 15, 16):
            return None
        return f"IMEI {value} has {len(key)} digits, not 15"
    if re.fullmatch(r"[0-9A-F]{14}", key):
        return None  # an MEID
    return f"{value!r} is not an IMEI or MEID"


@dataclass(frozen=True)
class Manifest:
    path: str
    sha256: str
    assets: tuple[Asset, ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "assets": [asdict(a) for a in self.assets]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        assets = []
        for a in data["assets"]:
            a = dict(a)
            a["imeis"] = tuple(a.get("imeis", ()))
            assets.append(Asset(**a))
        return cls(data["path"], data["sha256"], tuple(assets))

    def lookup(self, serial: str | None, imeis: tuple[str, ...] | list[str] = ()) -> Asset | None:
        """The asset a device is listed as: by serial first, then by any IMEI (a list may
        give an IMEI's 14 digits without the check digit)."""
        for key in identity_keys(serial, imeis):
            for asset in self.assets:
                if key in asset.keys:
                    return asset
        return None


def _read_rows(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on; the delimiter is sniffed (, ; or tab)."""
    sample = "\n".join(line for line in text.splitlines() if line.strip())[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(text.splitlines(), dialect)
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
    return rows


def _header_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("/", "_")


def _columns(header: list[str], column_map: dict[str, str], path: Path) -> dict[str, int]:
    keys = [_header_key(h) for h in header]
    found: dict[str, int] = {}
    for field_name, names in COLUMNS.items():
        wanted = column_map.get(field_name)
        if wanted is not None:
            if _header_key(wanted) not in keys:
                raise ConfigError(f"asset list {path} has no column {wanted!r} (mapped to "
                                  f"{field_name}; header: {', '.join(header)})",
                                  "fix the column map (--assets-map FIELD=COLUMN)")
            found[field_name] = keys.index(_header_key(wanted))
            continue
        index = next((keys.index(n) for n in names if n in keys), None)
        if index is not None:
            found[field_name] = index
    unknown = set(column_map) - set(COLUMNS)
    if unknown:
        raise ConfigError(f"unknown asset-list field(s) {', '.join(sorted(unknown))} in the column map",
                          f"map any of: {', '.join(COLUMNS)}")
    if not {"identifier", "serial", "imei", "imei2"} & set(found):
        raise ConfigError(f"asset list {path} has no serial or IMEI column (header: "
                          f"{', '.join(header)})", "name a column serial, imei or serial_or_imei, "
                          "or map one: --assets-map serial=\"Serial number\"")
    return found


def _asset(number: int, row: list[str], cols: dict[str, int]) -> tuple[Asset | None, str]:
    """The asset on one line, or None and why it was skipped."""
    def cell(name: str) -> str:
        index = cols.get(name)
        return row[index].strip() if index is not None and index < len(row) else ""
    serial, identifier = cell("serial"), cell("identifier")
    imeis = [v for v in (cell("imei"), cell("imei2")) if v]
    if identifier and not serial and (normalise(identifier).isdigit() or
                                      SCIENTIFIC.match(identifier)):
        imeis.insert(0, identifier)  # serial_or_imei holding an IMEI: check it as one
    for value in imeis:
        problem = imei_problem(value)
        if problem:
            return None, f"line {number}: {problem}; line skipped"
    if SCIENTIFIC.match(serial):
        return None, f"line {number}: serial {serial!r} was turned into a number; line skipped"
    first = identifier or serial or (imeis[0] if imeis else "")
    if not first:
        return None, f"line {number}: no serial or IMEI; line skipped"
    return Asset(cell("tag"), first, cell("owner"), number, serial, tuple(imeis)), ""


def load_manifest(path: Path, column_map: dict[str, str] | None = None) -> Manifest:
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read asset list {path}: {exc}",
                          "give a UTF-8 CSV with columns asset_tag, serial_or_imei, owner") from exc
    rows = _read_rows(path, text)
    if not rows:
        raise ConfigError(f"asset list {path} is empty", "add a header line and one line per asset")
    cols = _columns(rows[0][1], column_map or {}, path)
    assets, warnings = [], []
    for number, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        asset, why = _asset(number, row, cols)
        if asset is None:
            warnings.append(why)
        else:
            assets.append(asset)
    if not assets:
        raise ConfigError(f"asset list {path} lists no usable device ({len(warnings)} line(s) "
                          "skipped)" + (f": {warnings[0]}" if warnings else ""),
                          "add one line per device with its serial or IMEI")
    return Manifest(str(path), hashlib.sha256(raw).hexdigest(), tuple(assets), tuple(warnings))


def parse_column_map(text: str) -> dict[str, str]:
    """`tag=Asset Tag,serial=Serial number` -> {"tag": "Asset Tag", ...}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, column = part.partition("=")
        if not eq or not column.strip():
            raise ConfigError(f"bad asset column map entry {part!r}", "write FIELD=COLUMN, "
                              f"comma-separated; fields: {', '.join(COLUMNS)}")
        out[name.strip()] = column.strip()
    return out
