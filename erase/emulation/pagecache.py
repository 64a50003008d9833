"""The emulated phone kernel's page cache over userdata.

A real kernel keeps what was just written in RAM and answers buffered reads from there,
whatever the medium below did with the write. For an honest medium the cache and the medium
agree, so the only part worth modelling is where they differ: the pieces of a write that
the medium dropped. `PageCache` keeps exactly those pieces (the bytes the kernel still
holds), bounded by the phone's RAM in write order, and lays them over buffered reads.
`sync` leaves them in place (the pages are clean, not gone); dropping the caches
(BLKFLSBUF, ``/proc/sys/vm/drop_caches``), a direct read or a reboot gets past them.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field


@dataclass
class _Piece:
    start: int
    data: bytes
    written_at: int  # the cache's write counter when these bytes were written

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class PageCache:
    capacity: int  # bytes of RAM the kernel may spend on this block device's pages
    written: int = 0  # bytes written through the cache so far
    _pieces: list[_Piece] = field(default_factory=list)  # sorted, non-overlapping
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_write(self, offset: int, data: bytes | memoryview,
                   landed: list[tuple[int, int]]) -> None:
        """A write of ``data`` at ``offset`` went through the cache; ``landed`` are the
        (offset, length) pieces the medium really stored. The rest is held only in RAM."""
        end = offset + len(data)
        with self._lock:
            self.written += len(data)
            self._cut(offset, end)
            pos = offset
            view = memoryview(data)
            for piece_off, piece_len in sorted(landed) + [(end, 0)]:
                if piece_off > pos:
                    self._insert(_Piece(pos, bytes(view[pos - offset:piece_off - offset]),
                                        self.written))
                pos = max(pos, piece_off + piece_len)
            self._evict()

    def overlay(self, offset: int, data: bytes) -> bytes:
        """What a buffered read of ``data`` (read from the medium at ``offset``) returns."""
        end = offset + len(data)
        with self._lock:
            if not self._pieces:
                return data
            hits = [p for p in self._pieces[self._first(offset):] if p.start < end]
            hits = [p for p in hits if p.end > offset]
            if not hits:
                return data
            out = bytearray(data)
            for p in hits:
                lo, hi = max(p.start, offset), min(p.end, end)
                out[lo - offset:hi - offset] = p.data[lo - p.start:hi - p.start]
            return bytes(out)

    def drop(self) -> None:
        """BLKFLSBUF, drop_caches or a reboot: the next read comes from the medium."""
        with self._lock:
            self._pieces.clear()

    @property
    def held_bytes(self) -> int:
        return sum(len(p.data) for p in self._pieces)

    def _first(self, offset: int) -> int:
        starts = [p.start for p in self._pieces]
        return max(0, bisect.bisect_right(starts, offset) - 1)

    def _cut(self, start: int, end: int) -> None:
        """Forget what the cache held for [start, end): a newer write replaces it."""
        kept: list[_Piece] = []
        for p in self._pieces:
            if p.end <= start or p.start >= end:
                kept.append(p)
                continue
            if p.start < start:
                kept.append(_Piece(p.start, p.data[:start - p.start], p.written_at))
            if p.end > end:
                kept.append(_Piece(end, p.data[end - p.start:], p.written_at))
        self._pieces = kept

    def _insert(self, piece: _Piece) -> None:
        index = bisect.bisect_left([p.start for p in self._pieces], piece.start)
        self._pieces.insert(index, piece)

    def _evict(self) -> None:
        """Pages written more than ``capacity`` bytes ago have left RAM."""
        oldest = self.written - self.capacity
        if self._pieces and min(p.written_at for p in self._pieces) <= oldest:
            self._pieces = [p for p in self._pieces if p.written_at > oldest]
