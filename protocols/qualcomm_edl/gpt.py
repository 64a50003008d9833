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
MAX_ENTRY_SIZE = 4096  # the UEFI spec's 128 x 2**n; no real table's entries are larger
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
    usable: tuple[int, int] = (0, -1)  # first and last usable LBA, as the header says

    def find(self, name: str) -> Partition | None:
        return next((p for p in self.partitions if p.name == name), None)


def _header(raw: bytes, lba: int) -> tuple[int, int, int, int, int, int]:
    """(entries LBA, entry count, entry size, entries CRC, first usable, last usable) of a
    valid header."""
    if len(raw) < HEADER.size:
        raise GptError("the header sector is short")
    (sig, _rev, size, crc, _res, current, _backup, first_usable, last_usable, _guid, entries_lba,
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
    if not 0 < count <= MAX_ENTRIES or not ENTRY.size <= entry_size <= MAX_ENTRY_SIZE \
            or entry_size % 8:
        raise GptError(f"{count} entries of {entry_size} bytes is not a GPT")
    return entries_lba, count, entry_size, entries_crc, first_usable, last_usable


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


Copy = tuple[tuple[Partition, ...], tuple[int, int]]  # the partitions, the usable LBAs


def _copy(read: ReadSectors, sector: int, total: int, lba: int) -> Copy:
    entries_lba, count, entry_size, crc, first, last = _header(read(lba, 1), lba)
    if not 0 < first <= last < total:
        raise GptError(f"the usable LBAs {first}..{last} lie outside the disk")
    sectors = -(-count * entry_size // sector)
    if not 0 < entries_lba <= total - sectors:
        raise GptError(f"the entries at LBA {entries_lba} lie outside the disk")
    return _entries(read(entries_lba, sectors), count, entry_size, crc, total), (first, last)


def read_table(read: ReadSectors, sector: int, total: int) -> Table:
    """The primary table (with the backup's partitions when that copy is valid too, to
    compare), else the backup (naming what was wrong with the primary); GptError naming
    both problems when neither copy is valid."""
    try:
        primary_parts, usable = _copy(read, sector, total, 1)
    except GptError as primary:
        try:
            parts, usable = _copy(read, sector, total, total - 1)
            return Table(parts, "backup", (f"primary table: {primary}",), usable=usable)
        except GptError as backup:
            raise GptError(f"primary table: {primary}; backup table: {backup}") from None
    try:
        backup_parts: tuple[Partition, ...] | None = _copy(read, sector, total, total - 1)[0]
    except GptError as exc:
        return Table(primary_parts, "primary", (f"backup table: {exc}",), usable=usable)
    return Table(primary_parts, "primary", (), backup_parts, usable)


def user_data(table: Table, only_userdata: bool = False) -> list[Partition]:
    names = ("userdata",) if only_userdata else USER_DATA
    return [p for p in table.partitions if p.name in names]


def disagreement(table: Table, only_userdata: bool = False) -> str:
    """Where the backup places the user-data partitions otherwise than the table in use
    (one copy may hide part of them from the other), in words; "" when they agree or there
    is no valid backup to compare."""
    if table.backup is None:
        return ""
    ours = {(p.name, p.first_lba, p.last_lba) for p in user_data(table, only_userdata)}
    theirs = {(p.name, p.first_lba, p.last_lba)
              for p in user_data(Table(table.backup, "backup"), only_userdata)}
    differing = sorted(ours ^ theirs)
    if not differing:
        return ""
    name = differing[0][0]
    mine = next((f"{a}..{b}" for n, a, b in ours if n == name), "nothing")
    other = next((f"{a}..{b}" for n, a, b in theirs if n == name), "nothing")
    return f"{clean(name, 36)} is LBA {mine} in the {table.source} table, {other} in the backup"


def with_free_space(table: Table, only_userdata: bool = False) -> list[Partition]:
    """The user-data partitions, each grown over the unallocated space next to it (up to
    its neighbours or the usable LBAs): a table that shrank userdata to hide its tail or
    head leaves that space unallocated, and nothing the phone needs lives there. Grown
    partitions never overlap one another or another partition."""
    first_usable, last_usable = table.usable
    if last_usable < first_usable:  # a table made without its header: nothing to grow into
        return user_data(table, only_userdata)
    out: list[Partition] = []
    for p in sorted(user_data(table, only_userdata), key=lambda q: q.first_lba):
        others = [q for q in table.partitions if q is not p]
        before = max([q.last_lba for q in others if q.last_lba < p.first_lba] + [first_usable - 1])
        after = min([q.first_lba for q in others if q.first_lba > p.last_lba] + [last_usable + 1])
        if out and out[-1].last_lba >= before:
            before = out[-1].last_lba
        if any(q.first_lba <= p.last_lba and q.last_lba >= p.first_lba for q in others):
            before, after = p.first_lba - 1, p.last_lba + 1  # overlapped: not grown
        out.append(Partition(p.name, min(p.first_lba, before + 1), max(p.last_lba, after - 1),
                             p.type_guid))
    return out


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
