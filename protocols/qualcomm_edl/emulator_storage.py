"""The emulated EDL handset's flash as Firehose sees it: LUNs of sectors with a GPT each.

The partitions that matter are the handset's own (`HandsetStorage`): ``userdata`` through
its fault injection and planted data, ``metadata``, ``frp`` and ``misc`` as they are.
Everything else (boot LUNs, persist, the tables themselves, an eMMC's cache partition) is
kept in one sparse file per LUN in the handset's directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from phonewipe.erase.emulation.personal import load_personal_data
from phonewipe.erase.emulation.storage import HandsetStorage

from . import gpt
from .profile import EdlSpec

KIB = 1024
FIRST_BYTE = 64 * KIB  # where the first partition starts (after the primary table)
HANDSET_PARTS = ("userdata", "metadata", "frp", "misc")


@dataclass(frozen=True)
class Region:
    name: str
    first: int  # LBA
    sectors: int

    @property
    def end(self) -> int:
        return self.first + self.sectors


class Lun:
    def __init__(self, number: int, sector: int, parts: list[tuple[str, int]], path: Path,
                 storage: HandsetStorage) -> None:
        self.number, self.sector, self.storage = number, sector, storage
        lba = FIRST_BYTE // sector
        self.regions: list[Region] = []
        for name, size in parts:
            self.regions.append(Region(name, lba, size // sector))
            lba += size // sector
        span = -(-128 * gpt.ENTRY.size // sector)
        self.total = lba + span + 1 + 8  # the backup table and a little slack
        self.path = path
        fresh = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if fresh:
            os.ftruncate(self.fd, self.total * sector)

    @property
    def size(self) -> int:
        return self.total * self.sector

    def write_table(self, damage: str = "ok") -> None:
        parts = [(r.name, r.first, r.end - 1) for r in self.regions]
        primary, backup = gpt.build(parts, self.sector, self.total)
        if damage.startswith("primary-hides"):  # a valid primary leaving half of userdata out
            primary = gpt.build([(n, a, a + (b - a) // 2 if n == "userdata" else b)
                                 for n, a, b in parts], self.sector, self.total)[0]
        if damage in ("primary-bad", "both-bad"):
            primary = primary[:self.sector] + b"\xff" * 16 + primary[self.sector + 16:]
        if damage in ("both-bad", "primary-hides-backup-bad"):  # nothing to compare it with
            backup = backup[:-self.sector] + b"\xff" * 16 + backup[-self.sector + 16:]
        os.pwrite(self.fd, primary, 0)
        os.pwrite(self.fd, backup, self.size - len(backup))

    def _pieces(self, offset: int, length: int) -> list[tuple[str | None, int, int, int]]:
        """(handset partition or None for the LUN file, offset there, length, offset in the
        request) of a byte range."""
        out: list[tuple[str | None, int, int, int]] = []
        pos, end = offset, offset + length
        for r in sorted(self.regions, key=lambda r: r.first):
            lo, hi = r.first * self.sector, r.end * self.sector
            if r.name not in HANDSET_PARTS or hi <= pos or lo >= end:
                continue
            if pos < lo:
                out.append((None, pos, lo - pos, pos - offset))
            stop = min(hi, end)
            out.append((r.name, pos - lo if pos > lo else 0, stop - max(pos, lo), max(pos, lo) - offset))
            pos = stop
        if pos < end:
            out.append((None, pos, end - pos, pos - offset))
        return out

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        for part, where, n, at in self._pieces(offset, length):
            if part is None:
                data = os.pread(self.fd, n, where)
            else:
                data = self.storage.read_partition(part, where, n)
            out[at:at + len(data)] = data
        return bytes(out)

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Write through the handset's fault injection; whether userdata was touched."""
        view = memoryview(data)
        touched = False
        for part, where, n, at in self._pieces(offset, len(view)):
            if part is None:
                os.pwrite(self.fd, view[at:at + n], where)
            else:
                self.storage.write_partition(part, where, view[at:at + n])
                touched |= part == "userdata"
        return touched

    def close(self) -> None:
        os.close(self.fd)


def layout(spec: EdlSpec, storage: HandsetStorage) -> list[list[tuple[str, int]]]:
    """Each LUN's partitions (name, bytes). UFS: userdata on LUN 0, boot LUNs after it;
    eMMC: one user area that also keeps an old cache partition."""
    own = [("persist", 256 * KIB), ("misc", storage.partition_size("misc")),
           ("frp", storage.partition_size("frp")), ("metadata", storage.partition_size("metadata"))]
    if spec.memory == "emmc":
        return [[("sbl1", 512 * KIB), *own, ("cache", 1024 * KIB), ("userdata", storage.size)]]
    luns = [[*own, ("userdata", storage.size)], [("xbl_a", 512 * KIB)], [("xbl_b", 512 * KIB)]]
    luns += [[(f"modemst{n}", 256 * KIB)] for n in range(3, spec.luns)]
    return luns[:max(1, spec.luns)]


def open_luns(spec: EdlSpec, storage: HandsetStorage) -> list[Lun]:
    """The handset's LUNs, made with their tables (and the cache's old data) on first use."""
    directory = Path(storage.directory)
    luns = []
    for number, parts in enumerate(layout(spec, storage)):
        path = directory / f"edl-lun{number}.img"
        fresh = not path.exists()
        lun = Lun(number, spec.sector, parts, path, storage)
        if fresh:
            lun.write_table(spec.gpt if number == 0 else "ok")
            _plant_cache(lun)
        luns.append(lun)
    return luns


def _plant_cache(lun: Lun) -> None:
    """An eMMC phone's cache partition keeps an old download: personal data to erase."""
    cache = next((r for r in lun.regions if r.name == "cache"), None)
    if cache is None:
        return
    items = [i for i in load_personal_data() if not i.remnant]
    if items:
        content = items[0].content[:cache.sectors * lun.sector]
        os.pwrite(lun.fd, content, cache.first * lun.sector)
