"""What an EDL erase covers, as one address space: partitions (or whole LUNs) laid end to
end, so the keyed pattern and the sampled read-back address them by one offset."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator, Sequence

from phonewipe.erase.plugin import Extent

from .errors import FirehoseNak
from .firehose import FirehoseClient

MERGE_GAP = 64 * 1024  # about one command's round trip at USB 2.0 speed: read the gap instead
MAX_READ = 1024 * 1024


@dataclass(frozen=True)
class Area:
    lun: int
    first: int  # LBA
    sectors: int
    sector: int
    name: str  # the partition's name as the table gives it, or "LUN n"

    @property
    def size(self) -> int:
        return self.sectors * self.sector


class AreaMap:
    def __init__(self, areas: Sequence[Area]) -> None:
        self.areas = tuple(areas)
        self.starts: list[int] = []
        pos = 0
        for area in self.areas:
            self.starts.append(pos)
            pos += area.size
        self.size = pos

    def pieces(self, offset: int, length: int) -> Iterator[tuple[Area, int, int]]:
        """(area, byte offset in it, length) of a range of the address space."""
        end = min(self.size, offset + length)
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        while offset < end and i < len(self.areas):
            area, base = self.areas[i], self.starts[i]
            n = min(end, base + area.size) - offset
            if n > 0:
                yield area, offset - base, n
                offset += n
            i += 1


class AreaReader:
    """Sampled read-back (`BlockReader`) of an `AreaMap` through Firehose `read`."""

    block_size = 4096

    def __init__(self, client: FirehoseClient, areas: AreaMap, address: str) -> None:
        self.client, self.map, self.address = client, areas, address
        self.size = areas.size
        self.reads = 0

    def bypass_cache(self) -> str:
        return ("read by the Firehose programmer straight from the flash: in Emergency "
                "Download mode no operating system, and so no page cache, runs")

    def _read(self, offset: int, length: int) -> bytes | None:
        out = bytearray()
        for area, at, n in self.map.pieces(offset, length):
            first = area.first + at // area.sector
            count = -(-(at % area.sector + n) // area.sector)
            self.reads += 1
            try:
                data = self.client.read(area.lun, first, count, area.sector)
            except FirehoseNak:
                return None  # the programmer could not read it: an I/O error
            skip = at % area.sector
            out += data[skip:skip + n]
        return bytes(out)

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        i = 0
        while i < len(extents):
            j, start = i + 1, extents[i][0]
            end = start + extents[i][1]
            while j < len(extents) and 0 <= extents[j][0] - end <= MERGE_GAP \
                    and extents[j][0] + extents[j][1] - start <= MAX_READ:
                end = extents[j][0] + extents[j][1]
                j += 1
            data = self._read(start, end - start)
            for offset, length in extents[i:j]:
                if data is None and j - i > 1:  # find which of them the programmer cannot read
                    yield self._read(offset, length)
                else:
                    yield None if data is None else data[offset - start:offset - start + length]
            i = j
