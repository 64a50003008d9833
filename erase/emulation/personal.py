"""Build the personal data planted into emulated handsets from fixtures/personal/."""
from __future__ import annotations

import json
import re
import sqlite3
import struct
import tempfile
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

from .profiles import FIXTURES_DIR

PERSONAL_DIR = FIXTURES_DIR / "personal"
MARKER_RE = re.compile(rb"PWMARK-[A-Z0-9-]+[A-Z0-9]")


@dataclass(frozen=True)
class PlantedItem:
    path: str  # "deleted:..." for a remnant left in free space
    content: bytes
    remnant: bool


def _sqlite_bytes(build) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.sqlite"
        con = sqlite3.connect(path)
        try:
            build(con)
            con.commit()
        finally:
            con.close()
        return path.read_bytes()


def _sms_db(messages: list[dict]) -> bytes:
    def build(con: sqlite3.Connection) -> None:
        con.execute("CREATE TABLE sms (_id INTEGER PRIMARY KEY, address TEXT, date INTEGER,"
                    " type INTEGER, body TEXT)")
        con.executemany("INSERT INTO sms (address, date, type, body) VALUES (?, ?, ?, ?)",
                        [(m["address"], m["date"], m["type"], m["body"]) for m in messages])
    return _sqlite_bytes(build)


def _contacts_db(vcf: str) -> bytes:
    cards = [c for c in vcf.split("BEGIN:VCARD") if c.strip()]

    def build(con: sqlite3.Connection) -> None:
        con.execute("CREATE TABLE raw_contacts (_id INTEGER PRIMARY KEY, display_name TEXT,"
                    " note TEXT, vcard TEXT)")
        for card in cards:
            fields = dict(line.split(":", 1) for line in card.splitlines() if ":" in line)
            con.execute("INSERT INTO raw_contacts (display_name, note, vcard) VALUES (?, ?, ?)",
                        (fields.get("FN", ""), fields.get("NOTE", ""), card))
    return _sqlite_bytes(build)


def _filler(marker: str, size: int) -> bytes:
    """Deterministic, compressible-looking body so file magics sit in realistic files."""
    seed = marker.encode()
    block = (seed * (256 // len(seed) + 1))[:256]
    return (block * (size // len(block) + 1))[:size]


def _jpeg(marker: str, size: int) -> bytes:
    comment = f"Camera roll {marker}".encode()
    head = (b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment)
    return head + _filler(marker, max(0, size - len(head) - 2)) + b"\xff\xd9"


def _png(marker: str, size: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    text = chunk(b"tEXt", b"Comment\x00" + marker.encode())
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + text
    pad = chunk(b"zTXt", b"x\x00\x00" + _filler(marker, max(0, size - len(body) - 40)))
    return body + pad + chunk(b"IEND", b"")


def _mp4(marker: str, size: int) -> bytes:
    ftyp = struct.pack(">I", 24) + b"ftypisom\x00\x00\x02\x00isomiso2"
    udta = marker.encode()
    free = struct.pack(">I", 8 + len(udta)) + b"free" + udta
    mdat_body = _filler(marker, max(0, size - len(ftyp) - len(free) - 8))
    return ftyp + free + struct.pack(">I", 8 + len(mdat_body)) + b"mdat" + mdat_body


def _vcalendar(marker: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Doctor appointment "
            f"{marker}\r\nDTSTART:20260115T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def load_personal_data(directory: Path = PERSONAL_DIR) -> list[PlantedItem]:
    manifest = tomllib.loads((directory / "manifest.toml").read_text("utf-8"))
    items = []
    for entry in manifest["item"]:
        kind = entry["kind"]
        marker = entry.get("marker", "")
        size = int(entry.get("bytes", 4096))
        source = (directory / entry["source"]).read_text("utf-8") if "source" in entry else ""
        if kind == "raw":
            content = (source + (f"\n{marker}\n" if marker else "")).encode()
        elif kind == "sqlite-sms":
            content = _sms_db(json.loads(source))
        elif kind == "sqlite-contacts":
            content = _contacts_db(source)
        elif kind == "jpeg":
            content = _jpeg(marker, size)
        elif kind == "png":
            content = _png(marker, size)
        elif kind == "mp4":
            content = _mp4(marker, size)
        elif kind == "vcalendar":
            content = _vcalendar(marker)
        else:
            raise ValueError(f"unknown planted item kind {kind!r} in {directory / 'manifest.toml'}")
        items.append(PlantedItem(entry["path"], content, bool(entry.get("remnant", False))))
    return items


def planted_markers(directory: Path = PERSONAL_DIR) -> list[bytes]:
    """Every marker string the fixtures plant, for scanning erased images."""
    found: set[bytes] = set()
    for item in load_personal_data(directory):
        found.update(MARKER_RE.findall(item.content))
    return sorted(found)
