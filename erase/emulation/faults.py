"""Fault injection for emulated storage: lying, partial, unplug, unreadable, slow.

Every emulator writes user data through a `FaultInjector`, so each protocol's emulator
misbehaves the same way for the same profile.
"""
from __future__ import annotations

import bisect
import random
import threading
import time
from dataclasses import dataclass, field

from .profiles import Faults

LYING_RUN = 64 * 1024  # untouched regions come in runs of this size


class DeviceUnplugged(Exception):
    """The emulated cable was pulled: the device must drop every connection."""


class UnreadableSector(OSError):
    pass


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def lying_regions(size: int, fraction: float, layout: str, seed: int) -> list[tuple[int, int]]:
    """Byte ranges a lying device silently leaves untouched."""
    if fraction <= 0:
        return []
    total = max(4096, int(size * fraction) // 4096 * 4096)
    run = min(LYING_RUN, total)
    if layout == "contiguous":
        start = (size // 3) // 4096 * 4096
        return [(start, min(size, start + total))]
    if layout == "middle":
        # Skips a middle band only: the first and last blocks a naive sampler reads are written.
        start = (size // 2 - total // 2) // 4096 * 4096
        return [(start, start + total)]
    rng = random.Random(seed)
    runs = max(1, total // run)
    slots = max(1, size // run)
    chosen = rng.sample(range(slots), min(runs, slots))
    return _merge([(s * run, min(size, (s + 1) * run)) for s in chosen])



def on_flash(offset: int, length: int, real: int) -> list[tuple[int, int, int]]:
    """(flash offset, offset in the request, length) pieces of a request to counterfeit
    flash that holds ``real`` bytes: addresses wrap around at its real size."""
    pieces, done = [], 0
    while done < length:
        at = (offset + done) % real
        n = min(length - done, real - at)
        pieces.append((at, done, n))
        done += n
    return pieces


@dataclass
class FaultInjector:
    faults: Faults
    size: int
    seed: int
    written: int = 0
    unplugged: bool = False
    _skip: list[tuple[int, int]] = field(default_factory=list)
    _skip_starts: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slow_since: float = 0.0
    _slow_bytes: int = 0

    def __post_init__(self) -> None:
        self._skip = lying_regions(self.size, self.faults.lying_fraction,
                                   self.faults.lying_layout, self.seed)
        self._skip_starts = [s for s, _ in self._skip]

    @property
    def untouched(self) -> list[tuple[int, int]]:
        return list(self._skip)

    def plan_write(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The (offset, length) pieces of a write that really reach the medium.

        Raises DeviceUnplugged once the unplug point is crossed.
        """
        with self._lock:
            if self.unplugged:
                raise DeviceUnplugged("device is unplugged")
            before = self.written
            self.written += length
            f = self.faults
            if f.unplug_at and self.written >= f.unplug_at * self.size:
                self.unplugged = True
                raise DeviceUnplugged(f"cable pulled at {f.unplug_at:.0%}")
            if f.partial_at and before >= f.partial_at * self.size:
                return []
        self._throttle(length)
        if not self._skip:
            return [(offset, length)]
        return self._subtract(offset, offset + length)

    def _subtract(self, start: int, end: int) -> list[tuple[int, int]]:
        pieces = []
        i = max(0, bisect.bisect_right(self._skip_starts, start) - 1)
        pos = start
        while i < len(self._skip) and self._skip[i][0] < end:
            s, e = self._skip[i]
            if e > pos:
                if s > pos:
                    pieces.append((pos, s - pos))
                pos = max(pos, e)
            i += 1
        if pos < end:
            pieces.append((pos, end - pos))
        return pieces

    def _throttle(self, length: int) -> None:
        rate = self.faults.slow_mib_s * 1024 * 1024
        if rate <= 0:
            return
        now = time.monotonic()
        if not self._slow_since:
            self._slow_since = now
        self._slow_bytes += length
        ahead = self._slow_bytes / rate - (now - self._slow_since)
        if ahead > 0:
            time.sleep(ahead)

    def mask_read(self, offset: int, data: bytes) -> bytes:
        """What the device returns for a read: with `untouched_reads_zero`, regions it
        skipped read as zeros once erasing began (a device trying to look erased)."""
        if not (self.faults.untouched_reads_zero and self.written and self._skip):
            return data
        out = bytearray(data)
        for lo, hi in self._skip:
            a, b = max(lo, offset), min(hi, offset + len(data))
            if a < b:
                out[a - offset:b - offset] = bytes(b - a)
        return bytes(out)

    def check_read(self, offset: int, length: int) -> None:
        for lo, hi in self.faults.unreadable:
            if offset < hi * self.size and offset + length > lo * self.size:
                raise UnreadableSector(5, "I/O error")
