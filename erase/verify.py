"""Verification by sampling: plans a third party can re-derive, and the checks a sample
must pass for each erase technique.

Offsets are derived from the seed with SHA-256 in counter mode, so the plan is a pure
function of (mode, size, block size, seed, parameters) that anyone can recompute from the
certificate's record, in any language:

    u(i) = int.from_bytes(sha256(b"phonewipe-plan/1" || seed(8 bytes BE) || i(8 bytes BE)), "big")
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

from .capacity import MISMATCH, CapacityCheck
from .errors import MediumUnreachable, UsageError
from .evidence import sample_digest, samples_block
from .model import Expectation, SampleFailure, VerificationResult
from .pattern_samples import SamplePattern
from .plaintext import entropy_bits_per_byte, fs_magic, known_plaintext
from .plugin import BlockReader, Extent
from .wrap import CHECKED, wrap_size
from .wrap import describe as describe_wrap
from .wrap import relabel as relabel_wrapped

MODES = ("quick", "nist", "full")
MAX_LISTED_FAILURES = 20
EXPECTATION_WORDS = {Expectation.PATTERN: "the keyed pattern", Expectation.ZEROS: "zeros",
                     Expectation.NO_PLAINTEXT: "erased content (high entropy, no plaintext)"}
MAX_FOUND_CHARS = 160  # each listed failure says what was found in at most this many characters
FULL_CHUNK = 1024 * 1024
NIST_SUBSECTIONS = 1000
NIST_SAMPLE_SHARE = 0.05
MIN_ENTROPY = 7.0  # bits/byte over one sample; random data gives ~7.95 on 4 KiB
PLAN_DOMAIN = b"phonewipe-plan/1"
PLAN_ALGORITHM = "phonewipe-plan/1 (sha256 counter, stratified)"
NIST_RULE = "NIST SP 800-88 Rev. 1 sampling"


def quick_sample_count(confidence: float, residual: float) -> int:
    """n = ceil(ln(1-C) / ln(1-p)): samples that find an escaped share p with confidence C."""
    if not 0 < confidence < 1 or not 0 < residual < 1:
        raise UsageError("confidence and residual fraction must be between 0 and 1",
                         "e.g. --confidence 0.99 --residual 0.001")
    return math.ceil(math.log(1 - confidence) / math.log(1 - residual))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown verification mode {mode!r}", f"use one of {', '.join(MODES)}")


def check_plan_settings(mode: str, confidence: float, residual: float) -> None:
    """UsageError for settings no plan can be made from: checked before a phone is touched."""
    _check_mode(mode)
    quick_sample_count(confidence, residual)


def _u(seed: int, i: int) -> int:
    return int.from_bytes(
        hashlib.sha256(PLAN_DOMAIN + seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest(), "big")


@dataclass(frozen=True)
class VerificationPlan:
    mode: str
    size: int
    block_size: int
    seed: int
    confidence: float | None = None
    residual: float | None = None

    def to_dict(self) -> dict:
        """Everything a third party needs to re-derive the extents (see `plan_from_dict`)."""
        data = asdict(self)
        extents = self.extents()
        data["algorithm"] = PLAN_ALGORITHM
        data["samples"] = len(extents)
        data["bytes_planned"] = sum(length for _, length in extents)
        if self.mode == "nist":
            data["rule"] = NIST_RULE
            data["subsections"] = self.subsections
            data["sample_share"] = NIST_SAMPLE_SHARE
        return data

    @property
    def subsections(self) -> int:
        return min(NIST_SUBSECTIONS, self.blocks)

    def describe(self) -> str:
        """What the plan covered, in one sentence for the certificate."""
        extents = self.extents()
        read = sum(length for _, length in extents)
        share = f"{read:,} of {self.size:,} bytes ({read / max(1, self.size):.1%}) read"
        if self.mode == "nist":
            return (f"{NIST_RULE}: {self.subsections:,} equal subsections, two non-overlapping "
                    f"pseudo-random samples of at least {NIST_SAMPLE_SHARE:.0%} of each, plus "
                    f"the first and last addressable blocks; {share}")
        if self.mode == "quick":
            n = quick_sample_count(self.confidence or 0.99, self.residual or 0.001)
            if n + 2 >= self.blocks:  # a space smaller than the sample: every block is read
                return (f"statistical sampling: all {len(extents):,} blocks, since the space is "
                        f"smaller than the {n:,} samples that find an escaped share of "
                        f"{self.residual:g} with confidence {self.confidence:g}; {share}")
            return (f"statistical sampling: {len(extents):,} blocks read ({n:,} stratified "
                    f"pseudo-random ones{self._ends_added()}), finding an escaped share of "
                    f"{self.residual:g} or more with confidence {self.confidence:g}; {share}")
        return f"full verification: every block; {share}"

    def _ends_added(self) -> str:
        """Which of the first and last blocks a quick plan reads beyond its stratified picks
        (the first stratum and the last can already hold them)."""
        picks = set(self._quick_picks)
        added = [name for name, block in (("first", 0), ("last", self.blocks - 1))
                 if block not in picks]
        if not added:
            return ", the first and last blocks among them"
        return f" plus the {' and '.join(added)} block{'s' if len(added) == 2 else ''}"

    @functools.cached_property
    def _quick_picks(self) -> tuple[int, ...]:
        """One pseudo-random block in each of n equal strata (derived once: the extents and
        the coverage sentence both need them)."""
        n = quick_sample_count(self.confidence or 0.99, self.residual or 0.001)
        blocks = self.blocks
        return tuple(i * blocks // n + _u(self.seed, i) % ((i + 1) * blocks // n - i * blocks // n)
                     for i in range(n))

    @property
    def blocks(self) -> int:
        return self.size // self.block_size

    def extents(self) -> list[Extent]:
        """The (offset, length) pieces to read, in order."""
        return list(self._extents)

    @functools.cached_property
    def _extents(self) -> tuple[Extent, ...]:
        return tuple(self._derive())

    def _derive(self) -> list[Extent]:
        bs, blocks = self.block_size, self.blocks
        if blocks == 0:
            return []
        if self.mode == "full":
            step = max(bs, FULL_CHUNK // bs * bs)
            return [(off, min(step, blocks * bs - off)) for off in range(0, blocks * bs, step)]
        if self.mode == "quick":
            n = quick_sample_count(self.confidence or 0.99, self.residual or 0.001)
            if n + 2 >= blocks:
                return [(b * bs, bs) for b in range(blocks)]
            chosen = {0, blocks - 1, *self._quick_picks}
            return [(b * bs, bs) for b in sorted(chosen)]
        if self.mode == "nist":
            return self._nist_extents()
        raise UsageError(f"unknown verification mode {self.mode!r}", f"use one of {', '.join(MODES)}")

    def _nist_extents(self) -> list[Extent]:
        """>= 1000 equal subsections, two non-overlapping pseudo-random samples in each,
        each >= 5% of its subsection, plus the first and last addressable blocks."""
        bs, blocks = self.block_size, self.blocks
        subsections = min(NIST_SUBSECTIONS, blocks)
        picked: list[tuple[int, int]] = [(0, 1)]  # (start block, block count)
        for s in range(subsections):
            lo, hi = s * blocks // subsections, (s + 1) * blocks // subsections
            span = hi - lo
            length = max(1, math.ceil(span * NIST_SAMPLE_SHARE))
            if 2 * length >= span:
                picked.append((lo, span))  # too small to split: read it whole
                continue
            # first sample anywhere it fits with room for the second after or before it
            slots = span - 2 * length + 1
            a = _u(self.seed, 2 * s) % slots
            b = _u(self.seed, 2 * s + 1) % (slots - a) + a + length
            picked += [(lo + a, length), (lo + b, length)]
        picked.append((blocks - 1, 1))
        merged: list[list[int]] = []
        for start, count in sorted(picked):
            if merged and start < merged[-1][0] + merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], start + count - merged[-1][0])
            else:
                merged.append([start, count])
        return [(start * bs, count * bs) for start, count in merged]

    def coverage(self) -> float:
        return sum(length for _, length in self.extents()) / max(1, self.size)


def plan_from_dict(data: dict) -> VerificationPlan:
    """The plan a record describes, re-derived from its parameters (UsageError when the
    record's plan is not one this version can reproduce)."""
    if data.get("algorithm") != PLAN_ALGORITHM:
        raise UsageError(f"the certificate's sampling plan uses {data.get('algorithm')!r}, "
                         f"which this version cannot re-derive", "use the phonewipe version "
                         "named in the certificate")
    try:
        plan = VerificationPlan(mode=str(data["mode"]), size=int(data["size"]),
                                block_size=int(data["block_size"]), seed=int(data["seed"]),
                                confidence=data.get("confidence"), residual=data.get("residual"))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the certificate's sampling plan is incomplete ({exc})",
                         "it was not issued by phonewipe, or is damaged") from exc
    if plan.mode not in MODES or plan.block_size <= 0:
        raise UsageError(f"the certificate's sampling plan is invalid ({plan.mode}, block size "
                         f"{plan.block_size})", "it was not issued by phonewipe, or is damaged")
    if "samples" in data and len(plan.extents()) != data["samples"]:
        raise UsageError("re-deriving the certificate's plan gives a different sample count",
                         "the record was altered, or another plan version made it")
    return plan


def make_plan(mode: str, size: int, block_size: int = 4096, seed: int | None = None,
              confidence: float = 0.99, residual: float = 0.001) -> VerificationPlan:
    _check_mode(mode)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "big") >> 1
    quick = mode == "quick"
    if quick:
        quick_sample_count(confidence, residual)  # validates the parameters
    return VerificationPlan(mode=mode, size=size, block_size=block_size, seed=seed,
                            confidence=confidence if quick else None,
                            residual=residual if quick else None)


PatternKey = bytes | SamplePattern | None


def check_sample(data: bytes, offset: int, expectation: Expectation,
                 pattern_key: PatternKey) -> str | None:
    """None when the sample shows what the technique promises, else what was found."""
    if expectation is Expectation.PATTERN:
        if pattern_key is None:
            raise ValueError("a keyed-pattern check needs the pattern key")
        pattern = pattern_key if isinstance(pattern_key, SamplePattern) else SamplePattern(pattern_key)
        if data == pattern.at(offset, len(data)):
            return None
        return _describe_mismatch(data, offset, "the keyed pattern")
    if expectation is Expectation.ZEROS:
        if not data.strip(b"\x00"):
            return None
        return _describe_mismatch(data, offset, "zeros")
    found = known_plaintext(data, offset)
    if found:
        return found
    entropy = entropy_bits_per_byte(data)
    if entropy < MIN_ENTROPY:
        return f"low-entropy data ({entropy:.2f} bits/byte), not ciphertext"
    return None


def check_changed(data: bytes, offset: int, block_size: int) -> str | None:
    """Content a key destruction or reset changed: zeros (discarded), or high-entropy data
    with no known plaintext; the file-system superblock a reset makes at offset 0 is
    expected. None when fine, else what was found."""
    for pos in range(0, len(data), block_size):
        block = data[pos:pos + block_size]
        if not block.strip(b"\x00") or (offset + pos == 0 and fs_magic(block, 0)):
            continue
        problem = check_sample(block, offset + pos, Expectation.NO_PLAINTEXT, None)
        if problem:
            return problem
    return None


def _describe_mismatch(data: bytes, offset: int, wanted: str) -> str:
    found = known_plaintext(data, offset)
    if found:
        return found
    if not data.strip(b"\x00"):
        return f"zeros where {wanted} was expected"
    return f"data that is not {wanted} (old content left in place)"


ProgressFn = Callable[[int, int], None]


@dataclass
class Sampling:
    """A verification's result and the per-extent digests for the evidence bundle."""

    result: VerificationResult
    digests: list[bytes | None]
    medium: str = ""  # how the reads got past the device's caches (BlockReader.bypass_cache)

    def evidence(self, before: Sequence[bytes | None] | None = None) -> dict:
        return samples_block(self.digests, before)


def reach_medium(reader: BlockReader) -> str:
    """Have ``reader`` read the medium, not a cache (the plugin contract); how, in words.
    A reader that does not say how is not trusted to: MediumUnreachable."""
    bypass = getattr(reader, "bypass_cache", None)
    if bypass is None:
        raise MediumUnreachable("the plugin's reader does not say how it gets past the device's "
                                "caches, so its read-back could come from RAM",
                                "update the protocol plugin (BlockReader.bypass_cache)")
    return str(bypass())


def read_digests(reader: BlockReader, plan: VerificationPlan) -> list[bytes | None]:
    """Per-extent digests of what the device holds now (crypto erase: read before erasing)."""
    reach_medium(reader)
    return [None if data is None else sample_digest(data)
            for data in _read_all(reader, plan.extents())]


def run_verification(reader: BlockReader, plan: VerificationPlan, expectation: Expectation,
                     pattern_key: bytes | None, scope: str = "",
                     progress: ProgressFn | None = None) -> VerificationResult:
    return sample_and_check(reader, plan, expectation, pattern_key, scope, progress).result


def sample_and_check(reader: BlockReader, plan: VerificationPlan, expectation: Expectation,
                     pattern_key: bytes | None, scope: str = "",
                     progress: ProgressFn | None = None,
                     before: Sequence[bytes | None] | None = None,
                     capacity: CapacityCheck | None = None) -> Sampling:
    """Read every extent of the plan and check it; `before` holds the digests of the same
    extents read before a cryptographic erase (identical content = not erased)."""
    extents = plan.extents()
    if before is not None and len(before) != len(extents):
        raise ValueError("before-erase digests do not match the plan")
    medium = reach_medium(reader)
    pattern = SamplePattern(pattern_key) if pattern_key is not None else None  # this thread's
    total = sum(length for _, length in extents)
    digest = hashlib.sha256()
    digests: list[bytes | None] = []
    failures: list[SampleFailure] = []
    failures_total = 0
    # the head of each listed failed sample: wrap.wrap_size names a counterfeit from them
    mismatched: list[tuple[int, bytes]] = []
    unchanged = 0
    done = 0
    problem: str | None
    # one read per extent: a reader that returned fewer must not pass with samples unread
    for (offset, length), data in zip(extents, _read_all(reader, extents), strict=True):
        digests.append(None if data is None else sample_digest(data))
        if data is None:
            problem = "unreadable (the device reported an I/O error)"
        elif len(data) != length:
            problem = f"short read ({len(data)} of {length} bytes)"
        else:
            digest.update(data)
            problem = check_extent(data, offset, plan.block_size, expectation, pattern)
            if before is not None and before[len(digests) - 1] == digests[-1]:
                unchanged += 1
                problem = problem or "unchanged by the erase (same content before and after)"
            elif before is not None and problem and expectation is Expectation.NO_PLAINTEXT:
                problem = check_changed(data, offset, plan.block_size)
        if problem:
            failures_total += 1
            if data is not None and len(mismatched) < MAX_LISTED_FAILURES:
                mismatched.append((offset, data[:CHECKED]))
            if len(failures) < MAX_LISTED_FAILURES:
                failures.append(SampleFailure(offset, problem[:MAX_FOUND_CHARS]))
        done += length
        if progress:
            progress(done, total)
    samples = len(digests)
    if samples != len(extents):
        raise RuntimeError("reader returned fewer samples than planned")
    reasons = []
    if not extents:
        reasons.append("nothing to sample")
    if failures_total:
        reasons.append(f"{failures_total:,} of {samples:,} samples do not show "
                       f"{EXPECTATION_WORDS[expectation]}")
        wrapped = wrap_size(reader.size, mismatched, pattern) \
            if pattern is not None and expectation is Expectation.PATTERN else None
        if wrapped and pattern is not None:
            reasons.append(describe_wrap(wrapped, reader.size))
            failures = relabel_wrapped(failures, mismatched, wrapped, reader.size, pattern)
    if capacity is not None and capacity.status == MISMATCH:
        reasons.append(f"capacity: {capacity.note()}")
    status = "failed" if reasons else "passed"
    notes = []
    if before is not None:
        notes.append(f"cryptographic erase: {samples:,} samples compared before and after the "
                     f"erase, {unchanged:,} unchanged")
    return Sampling(VerificationResult(
        mode=plan.mode, status=status, expectation=expectation.value, scope=scope,
        plan=plan.to_dict(), samples_read=samples, bytes_read=done,
        failures=tuple(failures), failures_total=failures_total, digest=digest.hexdigest(),
        reason="; ".join(reasons + notes), coverage=plan.describe(),
        capacity=capacity.to_dict() if capacity is not None else {},
    ), digests, medium)


def check_extent(data: bytes, offset: int, block_size: int, expectation: Expectation,
                  pattern_key: PatternKey) -> str | None:
    """Whole extents are compared at once; a failing one is described by its first bad
    block (entropy is judged per block anyway)."""
    if len(data) <= block_size:
        return check_sample(data, offset, expectation, pattern_key)
    if expectation is not Expectation.NO_PLAINTEXT and \
            check_sample(data, offset, expectation, pattern_key) is None:
        return None
    for pos in range(0, len(data), block_size):
        problem = check_sample(data[pos:pos + block_size], offset + pos, expectation, pattern_key)
        if problem:
            return problem if pos == 0 else f"{problem}, from offset {offset + pos:,}"
    return None


def _read_all(reader: BlockReader, extents: Sequence[Extent]) -> Iterable[bytes | None]:
    return reader.read_many(extents)
