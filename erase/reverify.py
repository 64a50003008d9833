"""Re-verification of a certified device: the certificate's own plan re-derived and read
again (reproduction, or a dispute), or a fresh seed for the R2v3 second look.

What is compared, per sample (extent of the plan):
  * same seed: the SHA-256/64 digest of what is read now against the digest in the
    record's evidence bundle. Equal means the device holds exactly what passed the
    original check ("unchanged").
  * otherwise (fresh seed, or changed content): the sample must show what the certified
    method promises — the keyed pattern (its key is in the record, see README), or zeros.
  * a content-changing finish step is on the record AND was observed (a factory reset after
    verification re-keys or formats the storage, and the post-state shows the phone came back
    reset): a changed sample may then hold anything but known plaintext — no file or marker
    magics, high entropy or all zeros; the fresh file-system superblock at offset 0 is
    expected. A reset that was only requested explains nothing: a storage liar could hide
    behind it.
Anything else (plaintext, low-entropy data, unreadable or short reads, a different size)
is a mismatch. The verdict is "identical", "as-certified", "consistent" or "mismatch";
only a mismatch is a failure.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from .audit import now_iso
from .errors import DeviceCommandFailed, DeviceNotFound, UsageError
from .evidence import decode_digests, grouped, sample_digest
from .model import Expectation, Operator, Record, SampleFailure
from .plugin import BlockReader, Extent, Session
from .verify import (
    MAX_FOUND_CHARS,
    MAX_LISTED_FAILURES,
    VerificationPlan,
    check_changed,
    check_extent,
    plan_from_dict,
    reach_medium,
)

IDENTICAL, AS_CERTIFIED, CONSISTENT, MISMATCH = "identical", "as-certified", "consistent", "mismatch"


@dataclass(frozen=True)
class ReverifyResult:
    record_id: str
    serial: str | None
    verdict: str
    plan: dict[str, Any]
    fresh_seed: bool
    samples: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # unchanged / as-certified / ...
    problems: tuple[SampleFailure, ...] = ()
    problems_total: int = 0
    reason: str = ""
    medium: str = ""  # how the reads got past the device's caches
    operator: Operator = field(default_factory=Operator)
    started_at: str = ""
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict != MISMATCH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def certified_plan(record: Record, seed: int | None = None) -> VerificationPlan:
    """The record's plan (UsageError when it has none); with `seed`, the same plan
    parameters under another seed."""
    v = record.verification
    if v is None or not v.plan or v.mode in ("none", ""):
        raise UsageError("the certificate records no sampling plan (its device was not verified "
                         "by read-back)", "re-verification needs a certificate with a plan")
    plan = plan_from_dict(v.plan)
    return plan if seed is None else replace(plan, seed=seed)


def _reset_recorded(record: Record) -> bool:
    return bool(record.sanitization and record.sanitization.details.get("factory_reset"))


def _reset_observed(record: Record) -> bool:
    """Plugins name a reset done by their finish step as `factory_reset` in the details, and
    set `reset_observed` in the post-state only when they saw the phone come back reset."""
    return _reset_recorded(record) and record.post_state.get("reset_observed") is True


def _certified_digests(record: Record, extents: int) -> tuple[list[bytes], int] | None:
    samples = (record.evidence or {}).get("samples") or {}
    try:
        digests, group = decode_digests(samples["digests"]), int(samples["group"])
    except (KeyError, TypeError, ValueError):
        return None
    if int(samples.get("extents", -1)) != extents:
        return None
    return digests, group


def reverify(record: Record, reader: BlockReader, *, seed: int | None = None,
             fresh_seed: bool = False, operator: Operator | None = None,
             progress: Callable[[int, int], None] | None = None) -> ReverifyResult:
    """Re-read a certified device. `fresh_seed` (or an explicit `seed`) samples new
    locations under the same plan parameters; otherwise the certificate's own offsets."""
    if fresh_seed and seed is None:
        seed = int.from_bytes(os.urandom(8), "big") >> 1
    plan = certified_plan(record, seed)
    fresh = plan.seed != certified_plan(record).seed
    v = record.verification
    assert v is not None  # certified_plan checked it
    started = now_iso()
    base: dict[str, Any] = dict(record_id=record.record_id, serial=record.device.serial,
                                plan=plan.to_dict(), fresh_seed=fresh,
                                operator=operator or Operator(), started_at=started)
    base["medium"] = reach_medium(reader)  # nothing is read before it holds
    if reader.size != plan.size or reader.block_size != plan.block_size:
        return ReverifyResult(
            verdict=MISMATCH, finished_at=now_iso(), **base,
            reason=f"the device now offers {reader.size:,} bytes in {reader.block_size}-byte "
                   f"blocks; the certificate's plan covered {plan.size:,} in {plan.block_size}")
    extents = plan.extents()
    expectation = Expectation(v.expectation) if v.expectation else None
    key_hex = v.plan.get("pattern_key")
    key = bytes.fromhex(key_hex) if key_hex else None
    reset = _reset_observed(record)
    certified = None if fresh else _certified_digests(record, len(extents))
    group = certified[1] if certified else 1
    counts = {"unchanged": 0, "as-certified": 0, "changed-clean": 0, "problem": 0}
    problems: list[SampleFailure] = []
    pending: list[tuple[Extent, bytes | None]] = []  # one digest group, judged together
    total, done = sum(n for _, n in extents), 0
    # one read per extent: a reader that returned fewer must not pass with samples unread
    for index, (extent, data) in enumerate(zip(extents, reader.read_many(extents), strict=True)):
        pending.append((extent, data))
        done += extent[1]
        if progress:
            progress(done, total)
        if len(pending) < group and index + 1 < len(extents):
            continue
        read = [d for _, d in pending if d is not None]
        same = certified is not None and len(read) == len(pending) and \
            grouped([sample_digest(d) for d in read], group)[0] == certified[0][index // group]
        for (offset, length), sample in pending:
            problem, state = _judge(sample, offset, length, same, plan.block_size, expectation,
                                    key, reset)
            counts[state] += 1
            if problem and len(problems) < MAX_LISTED_FAILURES:
                problems.append(SampleFailure(offset, problem[:MAX_FOUND_CHARS]))
        pending = []
    if counts["problem"]:
        verdict = MISMATCH
        reason = (f"{counts['problem']} of {len(extents)} samples no longer show what the "
                  "certificate promised")
        if _reset_recorded(record) and not reset:
            reason += ("; the factory reset on the record was requested but never observed, so "
                       "it cannot explain changed samples")
    elif counts["changed-clean"]:
        verdict = CONSISTENT
        reason = (f"{counts['changed-clean']} samples changed since certification, as the observed "
                  "factory reset explains; no known plaintext found")
    elif counts["as-certified"]:
        verdict, reason = AS_CERTIFIED, f"every sample shows {v.expectation}"
    else:
        verdict, reason = IDENTICAL, "every sample is identical to what was certified"
    if not extents:
        verdict, reason = MISMATCH, "the plan has nothing to sample"
    return ReverifyResult(verdict=verdict, samples=len(extents), counts=counts,
                          problems=tuple(problems), problems_total=counts["problem"],
                          reason=reason, finished_at=now_iso(), **base)


def _judge(data: bytes | None, offset: int, length: int, same: bool, block_size: int,
           expectation: Expectation | None, key: bytes | None, reset: bool) -> tuple[str | None, str]:
    if data is None:
        return "unreadable (the device reported an I/O error)", "problem"
    if len(data) != length:
        return f"short read ({len(data)} of {length} bytes)", "problem"
    if same:
        return None, "unchanged"
    if expectation is not None and (key is not None or expectation is not Expectation.PATTERN):
        problem = check_extent(data, offset, block_size, expectation, key)
        if problem is None:
            return None, "as-certified"
    else:
        problem = "no expectation recorded to check against"
    if reset:
        changed = check_changed(data, offset, block_size)
        if changed is None:
            return None, "changed-clean"
        return changed, "problem"
    return problem, "problem"


def reverify_session(session: Session, record: Record, *, seed: int | None = None,
                     fresh_seed: bool = False, operator: Operator | None = None,
                     progress: Callable[[int, int], None] | None = None) -> ReverifyResult:
    """Re-verify the certified device behind an open session (it must be the same device)."""
    certified_plan(record)  # fail on a plan-less certificate before touching the device
    identity = session.identify()
    wanted = record.device.serial
    if wanted and identity.serial and identity.serial != wanted:
        raise DeviceNotFound(f"the connected device is {identity.serial}, the certificate is for "
                             f"{wanted}", "connect the certified device, or name it: "
                             "phonewipe verify --plan-from CERT SERIAL")
    why_not = session.not_recheckable(record)
    if why_not:
        raise UsageError(f"the certificate for {wanted or 'this device'} cannot be re-verified: "
                         f"{why_not}", "re-verify certificates of block-device overwrites")
    reader = session.readback()
    if reader is None:
        raise DeviceCommandFailed(f"{identity.serial or 'the device'} offers no read-back of its "
                                  "storage in this mode", "re-verification needs the same access "
                                  "the erase had (e.g. root over adb)")
    return reverify(record, reader, seed=seed, fresh_seed=fresh_seed, operator=operator,
                    progress=progress)
