"""GUID partition tables: the primary (LBA 1) and the backup (last LBA), each checked by
its CRC32s, and the partitions that hold user data. `build` lays a table out (the emulated
handset uses it; so could a test)."""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

from phonewipe.erase.strings import clean

SIGNATURE = b"EFI PART"
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # 92 bytes
ENTRY = struct.Struct("<16s16sQQQ72s")  # 128 bytes
MAX_ENTRIES = 1024
# partitions that hold what the owner put on the phone: the file system, its encryption
# metadata, the old cache partition, and FRP (the Google account that locks a reset phone)
USER_DATA = ("userdata", "metadata", "cache", "frp")
BASIC_DATA = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")

ReadSectors = Callable[[int, int], bytes]  # (first LBA, count) -> bytes


class GptError(Exception):
    """This copy of the table is unusable; the message says why."""


@dataclass(frozen=True)
class Partition:
    name: str  # as decoded; shown only through `clean`
    first_lba: int
    last_lba: int
    type_guid: str = ""

    @property
    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1


@dataclass(frozen=True)
class Table:
    partitions: tuple[Partition, ...]
    source: str  # "primary" or "backup"
    problems: tuple[str, ...] = ()  # what was wrong with the other copy
    backup: tuple[Partition, ...] | None = None  # the backup's partitions, when both are valid

    def find(self, name: str) -> Partition | None:
        return next((p for p in self.partitions if p.name == name), None)


def _header(raw: bytes, lba: int) -> tuple[int, int, int, int, int]:
    """(entries LBA, entry count, entry size, entries CRC, last usable) of a valid header."""
    if len(raw) < HEADER.size:
        raise GptError("the header sector is short")
    (sig, _rev, size, crc, _res, current, _backup, _first, last_usable, _guid, entries_lba,
     count, entry_size, entries_crc) = HEADER.unpack_from(raw)
    if sig != SIGNATURE:
        raise GptError("no GPT signature")
    if not HEADER.size <= size <= len(raw):
        raise GptError(f"header size {size} is invalid")
    body = bytearray(raw[:size])
    body[16:20] = b"\0\0\0\0"
    if zlib.crc32(body) != crc:
        raise GptError("the header CRC does not match")
    if current != lba:
        raise GptError(f"the header says it is at LBA {current}, not {lba}")
    if not 0 < count <= MAX_ENTRIES or entry_size < ENTRY.size or entry_size % 8:
        raise GptError(f"{count} entries of {entry_size} bytes is not a GPT")
    return entries_lba, count, entry_size, entries_crc, last_usable


def _entries(raw: bytes, count: int, entry_size: int, crc: int, total: int) -> tuple[Partition, ...]:
    if len(raw) < count * entry_size or zlib.crc32(raw[:count * entry_size]) != crc:
        raise GptError("the partition entries' CRC does not match")
    parts = []
    for i in range(count):
        type_guid, _uniq, first, last, _attrs, name = ENTRY.unpack_from(raw, i * entry_size)
        if type_guid == bytes(16):
            continue
        if not 0 < first <= last < total:
            raise GptError(f"entry {i} ({clean(_name(name), 40)}) lies outside the disk")
        parts.append(Partition(_name(name), first, last, str(uuid.UUID(bytes_le=type_guid))))
    return tuple(parts)


def _name(raw: bytes) -> str:
    return raw.decode("utf-16-le", "replace").split("\0", 1)[0]


def _copy(read: ReadSectors, sector: int, total: int, lba: int) -> tuple[Partition, ...]:
    entries_lba, count, entry_size, crc, _ = _header(read(lba, 1), lba)
    sectors = -(-count * entry_size // sector)
    if not 0 < entries_lba <= total - sectors:
        raise GptError(f"the entries at LBA {entries_lba} lie outside the disk")
    return _entries(read(entries_lba, sectors), count, entry_size, crc, total)


def read_table(read: ReadSectors, sector: int, total: int) -> Table:
    """The primary table (with the backup's partitions when that copy is valid too, to
    compare), else the backup (naming what was wrong with the primary); GptError naming
    both problems when neither copy is valid."""
    try:
        primary_parts = _copy(read, sector, total, 1)
    except GptError as primary:
        try:
            return Table(_copy(read, sector, total, total - 1), "backup",
                         (f"primary table: {primary}",))
        except GptError as backup:
            raise GptError(f"primary table: {primary}; backup table: {backup}") from None
    try:
        backup_parts: tuple[Partition, ...] | None = _copy(read, sector, total, total - 1)
    except GptError as exc:
        return Table(primary_parts, "primary", (f"backup table: {exc}",))
    return Table(primary_parts, "primary", (), backup_parts)


def user_data(table: Table, only_userdata: bool = False) -> list[Partition]:
    names = ("userdata",) if only_userdata else USER_DATA
    return [p for p in table.partitions if p.name in names]


def build(parts: Sequence[tuple[str, int, int]], sector: int, total: int,
          entries: int = 128) -> tuple[bytes, bytes]:
    """(primary: LBA 0..N, backup: the last N LBAs) of a table of (name, first, last)."""
    raw = b"".join(ENTRY.pack(BASIC_DATA.bytes_le, uuid.UUID(int=i + 1).bytes_le, first, last, 0,
                              name.encode("utf-16-le")[:72])
                   for i, (name, first, last) in enumerate(parts)).ljust(entries * ENTRY.size, b"\0")
    crc = zlib.crc32(raw)
    span = -(-len(raw) // sector)

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = [SIGNATURE, 0x00010000, HEADER.size, 0, 0, current, backup, 2 + span,
                  total - 2 - span, uuid.UUID(int=0xED1).bytes_le, entries_lba, entries,
                  ENTRY.size, crc]
        fields[3] = zlib.crc32(HEADER.pack(*fields))
        return HEADER.pack(*fields).ljust(sector, b"\0")

    mbr = bytearray(sector)
    mbr[446:462] = bytes([0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF]) + struct.pack(
        "<II", 1, min(total - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    padded = raw.ljust(span * sector, b"\0")
    primary = bytes(mbr) + header(1, total - 1, 2) + bytes(padded)
    backup = bytes(padded) + header(total - 1, 1, total - 1 - span)
    return primary, backup
