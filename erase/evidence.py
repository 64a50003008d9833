"""The evidence bundle carried inside the record (`record.evidence`), schema
`phonewipe.evidence/1` (documented in README.md): the sampling plan, a digest of every
sample, the protocol transcript summary, the tool version and timings.

Per-sample digests are the first 8 bytes of SHA-256 over each extent, in plan order,
concatenated and base64-encoded: 4,605 quick samples take 49 KB. A re-check compares the
bytes it reads with these (a forged match needs a 2^64 second preimage). Plans with more
extents than MAX_DIGESTS (full reads of large media) digest groups of consecutive extents.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Sequence

EVIDENCE_SCHEMA = "phonewipe.evidence/1"
DIGEST_BYTES = 8
DIGEST_ALGORITHM = "sha256, first 8 bytes, per extent in plan order"
MAX_DIGESTS = 65536


def sample_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def group_size(extents: int) -> int:
    """How many consecutive extents share one digest (1 unless the plan is huge)."""
    return max(1, -(-extents // MAX_DIGESTS))


def grouped(digests: Sequence[bytes], group: int) -> list[bytes]:
    if group == 1:
        return list(digests)
    return [sample_digest(b"".join(digests[i:i + group])) for i in range(0, len(digests), group)]


def encode_digests(digests: Sequence[bytes]) -> str:
    return base64.b64encode(b"".join(digests)).decode("ascii")


def decode_digests(text: str) -> list[bytes]:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % DIGEST_BYTES:
        raise ValueError("sample digests are not a whole number of 8-byte digests")
    return [raw[i:i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)]


def samples_block(digests: Sequence[bytes | None], before: Sequence[bytes | None] | None = None
                  ) -> dict[str, Any]:
    """The `samples` member: digests of what was read (unreadable extents digest as b'')."""
    flat = [d if d is not None else sample_digest(b"") for d in digests]
    group = group_size(len(flat))
    block: dict[str, Any] = {"algorithm": DIGEST_ALGORITHM, "encoding": "base64",
                             "extents": len(flat), "group": group,
                             "digests": encode_digests(grouped(flat, group))}
    if before is not None:
        flat_before = [d if d is not None else sample_digest(b"") for d in before]
        block["before_erase"] = encode_digests(grouped(flat_before, group))
    return block


def build_evidence(*, tool: dict[str, str], plan: dict[str, Any] | None,
                   samples: dict[str, Any] | None, transcript: dict[str, Any],
                   timings: dict[str, float], capacity: dict[str, Any] | None,
                   readback: dict[str, Any] | None = None) -> dict[str, Any]:
    """``readback``: how the reads reached the medium past the device's caches."""
    bundle = {"schema": EVIDENCE_SCHEMA, "tool": dict(tool), "plan": dict(plan or {}),
              "samples": dict(samples or {}), "transcript": dict(transcript),
              "timings": {k: round(v, 3) for k, v in timings.items()},
              "capacity": dict(capacity or {})}
    if readback:
        bundle["readback"] = dict(readback)
    return bundle


def evidence_problems(evidence: dict[str, Any], verification: Any) -> list[str]:
    """Why an evidence bundle does not fit its record (empty when it does)."""
    if not evidence:
        return []
    problems = []
    if evidence.get("schema") != EVIDENCE_SCHEMA:
        return [f"unknown evidence schema {evidence.get('schema')!r}"]
    samples = evidence.get("samples") or {}
    if verification is None or verification.mode in ("none", ""):
        return ["evidence bundle without a verification"] if samples else []
    plan = {k: v for k, v in verification.plan.items() if k != "pattern_key"}
    if {k: v for k, v in evidence.get("plan", {}).items() if k != "pattern_key"} != plan:
        problems.append("the evidence bundle's plan is not the record's plan")
    if samples:
        try:
            digests = decode_digests(samples.get("digests", ""))
            extents, group = int(samples["extents"]), int(samples["group"])
        except (KeyError, TypeError, ValueError) as exc:
            return problems + [f"the evidence bundle's sample digests are malformed ({exc})"]
        if extents != verification.samples_read:
            problems.append("the evidence bundle's sample count is not the record's")
        if len(digests) != -(-extents // max(1, group)):
            problems.append("the evidence bundle holds the wrong number of sample digests")
    return problems
