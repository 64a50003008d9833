"""The building blocks every certificate layout prints with: the signer's block, the text of
one value, the tool and evidence lines. Below fields.py (layouts 1-3) and wording.py
(layout 4), which both use them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

UNKNOWN = "unknown"


@dataclass(frozen=True)
class SigningInfo:
    """Who signs and how the time is attested: printed on the page from layout 3 on.
    `cert verify` re-renders it from the signature itself (the signer certificate and
    whether a timestamp token is attached), so the page cannot name another signer."""
    subject: str  # RFC 4514, from the signer certificate
    fingerprint: str  # SHA-256 of the signer certificate's DER, lower-case hex
    timestamped: bool = False  # an RFC 3161 timestamp token is attached to the signature

STATION_CLOCK = "the signing station's own clock (no trusted timestamp)"
TSA_TIME = "RFC 3161 timestamp from a time-stamping authority, embedded in the signature"


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[tuple[str, str], ...]


def _text(value: Any) -> str:
    """One printable value; missing values print as "unknown", never guessed."""
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": ")) \
            if value else UNKNOWN
    text = str(value).strip()
    return text if text else UNKNOWN


def _count(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return _text(value)
    return f"{value:,}{' ' + unit if unit else ''}"

def tool_text(tool: dict[str, str]) -> str:
    if not tool:
        return UNKNOWN
    head = " ".join(p for p in (tool.get("name", ""), tool.get("version", "")) if p)
    rest = [f"{k} {v}" for k, v in sorted(tool.items()) if k not in ("name", "version")]
    text = head or UNKNOWN
    return f"{text} ({', '.join(rest)})" if rest else text

def signature_rows(signing: SigningInfo | None, created_at: str) -> tuple[tuple[str, str], ...]:
    """The signature block from layout 3 on."""
    return (
        ("Signed by", signing.subject if signing and signing.subject else UNKNOWN),
        ("Signer SHA-256", signing.fingerprint if signing else UNKNOWN),
        ("Signing time", TSA_TIME if signing and signing.timestamped else STATION_CLOCK),
        ("Record created", _text(created_at)),
        ("Check", "phonewipe cert verify --trust FINGERPRINT FILE, with the fingerprint the "
                  "organization publishes (not one printed here): a PAdES signature"),
    )

def evidence_text(evidence: dict[str, Any]) -> str:
    """One line summing up the evidence bundle embedded in the record."""
    if not evidence:
        return "none"
    parts = [f"{_text(evidence.get('schema'))}, embedded in the record"]
    samples = evidence.get("samples") or {}
    if samples:
        parts.append(f"digests of {_count(samples.get('extents'))} samples")
    t = evidence.get("transcript") or {}
    if t:
        parts.append(f"{_count(t.get('commands'))} {_text(t.get('protocol'))} commands")
    timings = evidence.get("timings") or {}
    if timings:
        parts.append(", ".join(f"{k.removesuffix('_s')} {v:g} s" for k, v in sorted(timings.items())))
    return "; ".join(parts)
