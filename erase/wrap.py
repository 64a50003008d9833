"""Counterfeit capacity, named when a keyed-pattern verification fails because of it.

Flash that holds less than it reports (a fake "512 GB" card with 8 GB of flash) wraps its
addresses: what is written at X + j*R lands on what was written at X, R being the real size,
a power of two on the counterfeits sold. The keyed pattern is addressed by offset, so such a
medium fails verification anyway; this only says why, which tells the operator the medium
is worthless rather than merely worn: a sample that failed holds the pattern of the last
offset the overwrite reached with the same address modulo R.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .model import SampleFailure
from .pattern_samples import SamplePattern

SMALLEST = 1 << 20  # no medium worth the name wraps below 1 MiB
LOOKED_AT = 8  # failed samples examined; a few AES blocks each per candidate size
CHECKED = 4096  # bytes of each sample compared
COUNTERFEIT = "(counterfeit capacity)"  # in the verification's reason when named


def wrap_size(size: int, failed: Sequence[tuple[int, bytes]], pattern: SamplePattern) -> int | None:
    """The real size R that explains every examined failed sample (at least two, or the only
    one), or None. ``size`` is the reported size of the address space the pattern covers."""
    looked = [(offset, data[:CHECKED]) for offset, data in failed[:LOOKED_AT]
              if _examinable(offset, data)]
    if not looked or (len(looked) < 2 and len(failed) > 1):
        return None
    real = SMALLEST
    while real < size:
        if all(_wrapped_from(offset, data, real, size, pattern) is not None
               for offset, data in looked):
            return real
        real *= 2
    return None


def _examinable(offset: int, data: bytes) -> bool:
    """A sample whose keyed pattern can be compared (whole AES blocks from its start)."""
    return len(data) >= 16 and offset % 16 == 0


def _wrapped_from(offset: int, data: bytes, real: int, size: int,
                  pattern: SamplePattern) -> int | None:
    """The offset whose keyed pattern ``data`` holds, when it is the last write that wrapped
    onto ``offset``; else None."""
    last = offset + (size - len(data) - offset) // real * real  # the last write there
    return last if last > offset and data == pattern.at(last, len(data)) else None


def relabel(failures: Sequence[SampleFailure], failed: Sequence[tuple[int, bytes]], real: int,
            size: int, pattern: SamplePattern) -> list[SampleFailure]:
    """Listed failures whose sample (``failed``: offset and head of each) holds another
    offset's pattern say so, instead of "old content left in place"."""
    source = {}
    for offset, data in failed:
        if _examinable(offset, data):
            found = _wrapped_from(offset, data[:CHECKED], real, size, pattern)
            if found is not None:
                source[offset] = found
    return [replace(f, found=f"the keyed pattern written at offset {source[f.offset]:,}, "
                             f"{_human(source[f.offset] - f.offset)} further on (the medium "
                             "wraps its addresses)") if f.offset in source else f
            for f in failures]


def describe(real: int, size: int) -> str:
    return (f"the failed samples hold the keyed pattern of offsets a multiple of {_human(real)} "
            f"further on: the medium holds about {_human(real)} of the {_human(size)} it reports "
            f"and wraps its addresses {COUNTERFEIT}; its data is not reliably erasable by "
            "overwrite")


def named_counterfeit(verification_reason: str) -> bool:
    """The verification found the medium wraps its addresses: no second erase can help."""
    return COUNTERFEIT in verification_reason


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n:,} bytes"
