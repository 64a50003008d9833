"""What a certificate says: every printed field, as pure functions of the `Record`.

The renderer prints exactly `visible_sections(record)`; nothing else on the page depends on
the record except the QR code and the footer, which carry the record's SHA-256 and id.
Missing values print as "unknown", never guessed.
"""
from __future__ import annotations

from typing import Any

from phonewipe.erase.model import Record, VerificationResult

from .parts import (
    STATION_CLOCK,
    TSA_TIME,
    UNKNOWN,
    Section,
    SigningInfo,
    _count,
    _text,
    evidence_text,
    signature_rows,
    tool_text,
)

__all__ = ["STATION_CLOCK", "TSA_TIME", "UNKNOWN", "Section", "SigningInfo", "evidence_text",
           "signature_rows", "tool_text"]  # re-exported: the layout's building blocks

STANDARD_LINE = "NIST SP 800-88 Rev. 2 (2025) / IEEE 2883-2022"
TITLE = "Certificate of Sanitization"
QR_PREFIX = "phonewipe:record-sha256:"
MAX_FAILURES_SHOWN = 5


def subject_text(cert_der: bytes) -> str:
    """The signer's subject as printed (RFC 4514), the same from signer and verifier."""
    from cryptography import x509
    return x509.load_der_x509_certificate(cert_der).subject.rfc4514_string()




def _bytes(value: int | None) -> str:
    if value is None:
        return UNKNOWN
    if value >= 10 ** 9:
        return f"{value / 10 ** 9:.1f} GB ({value:,} bytes)"
    if value >= 10 ** 6:
        return f"{value / 10 ** 6:.1f} MB ({value:,} bytes)"
    return f"{value:,} bytes"


def _ratio(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    return f"{value:g} ({value * 100:g}%)"


def _mapping(data: dict[str, Any]) -> str:
    if not data:
        return UNKNOWN
    return "; ".join(f"{k}: {_text(v)}" for k, v in sorted(data.items()))


def _storage(record: Record) -> str:
    kind = record.device.storage_type or "unknown type"
    cap = record.device.capacity_bytes
    return f"{kind}, {_bytes(cap) if cap is not None else 'unknown capacity'}" \
        if (record.device.storage_type or cap is not None) else UNKNOWN




def _endpoint(record: Record) -> str:
    e = record.endpoint
    return f"{e} ({e.label})" if e.label else str(e)


def _plan_value(v: VerificationResult, key: str, fmt: Any = _text) -> str:
    if key in v.plan and v.plan[key] is not None:
        return fmt(v.plan[key])
    if key in ("confidence", "residual") and v.mode in ("nist", "full", "none"):
        return f"not applicable ({v.mode} mode)"
    return UNKNOWN


MODE_NAMES = {"nist": "nist (NIST SP 800-88 Rev. 1 sampling)", "quick": "quick (statistical sampling)",
              "full": "full (every block read)"}


def _capacity(v: VerificationResult) -> str:
    if not v.capacity:
        return "not checked" if v.mode != "none" else "not applicable"
    status = str(v.capacity.get("status", UNKNOWN))
    label = "UNVERIFIED ASSUMPTION" if status == "unverified" else status
    return f"{label}: {_text(v.capacity.get('note'))}"


def _verification_rows(v: VerificationResult | None, layout: int) -> tuple[tuple[str, str], ...]:
    if v is None:
        return (("Verification", "not performed"),)
    rows = [
        ("Mode", MODE_NAMES.get(v.mode, _text(v.mode)) if layout >= 2 else _text(v.mode)),
        ("Status", _text(v.status)),
        ("Expectation", _text(v.expectation)),
        ("Scope", _text(v.scope)),
        ("Plan algorithm", _plan_value(v, "algorithm")),
        ("Address space", _plan_value(v, "size", _bytes)),
        ("Plan seed", _plan_value(v, "seed")),
        ("Block size", _plan_value(v, "block_size", lambda x: _count(x, "bytes"))),
        ("Planned samples", _plan_value(v, "samples", _count)),
        ("Confidence", _plan_value(v, "confidence", _ratio)),
        ("Residual fraction", _plan_value(v, "residual", _ratio)),
    ]
    if v.coverage and layout >= 2:
        rows.append(("Coverage", v.coverage))
    if v.mode != "none" and layout >= 2:
        rows.append(("Capacity", _capacity(v)))
    known = {"algorithm", "size", "seed", "block_size", "samples", "confidence", "residual",
             "mode", "rule", "subsections", "sample_share", "bytes_planned"}
    rows += [(f"Plan {k}", _text(val)) for k, val in sorted(v.plan.items()) if k not in known]
    rows += [
        ("Samples read", _count(v.samples_read)),
        ("Bytes read", _bytes(v.bytes_read)),
        ("Sample digest (SHA-256)", _text(v.digest)),
        ("Failures", _count(v.failures_total)),
    ]
    for i, f in enumerate(v.failures[:MAX_FAILURES_SHOWN], 1):
        rows.append((f"Failure {i}", f"offset {f.offset:,} (0x{f.offset:x}): {_text(f.found)}"))
    hidden = max(v.failures_total, len(v.failures)) - min(len(v.failures), MAX_FAILURES_SHOWN)
    if hidden > 0:
        rows.append(("More failures", f"{hidden:,} more not shown (see the embedded record)"))
    if v.reason:
        rows.append(("Verification note", v.reason))
    return tuple(rows)


LAYOUT_VERSION = 5  # bump whenever the drawn page changes: verify re-renders to compare
"""Layouts: 1 the first certificates; 2 adds the evidence summary, coverage and capacity;
3 names the signer (subject and SHA-256 fingerprint, also in the QR code) and the source of
the signing time; 4 plain words and every NIST SP 800-88 App. G field (certificates/
wording.py), a record that is not a PASS titled "Sanitization record: ...", the second
person's validation as a signed addendum instead of an empty box; 5 the scope row in the
method's own words (a whole disk, an eMMC, several partitions), not always "userdata
partition". Older layouts stay
renderable so that certificates issued by older versions still verify."""


def visible_sections(record: Record, layout: int = LAYOUT_VERSION,
                     signing: SigningInfo | None = None) -> list[Section]:
    """Every field the certificate prints, grouped as printed (as `layout` printed them);
    `signing` names the signer (layout 3 and later)."""
    if layout >= 4:
        from .wording import sections_v4
        return sections_v4(record, signing, layout)
    d, o, s = record.device, record.operator, record.sanitization
    org = o.organization.strip() or UNKNOWN
    sections = [
        Section("Certificate", (
            ("Result", record.result_text),
            ("Outcome", record.outcome.value),
            ("Record ID", _text(record.record_id)),
            ("Job ID", _text(record.job_id)),
            ("Batch ID", _text(record.batch_id) if record.batch_id else "none"),
            ("Created", _text(record.created_at)),
            ("Record SHA-256", record.sha256()),
            ("Schema", _text(record.schema)),
        )),
        Section("Person performing sanitization", (
            ("Name", _text(o.name)),
            ("Title", _text(o.title)),
            ("Organization", _text(o.organization)),
            ("Location", _text(o.location)),
            ("Phone", _text(o.phone)),
        )),
        Section("Media / device", (
            ("Manufacturer", _text(d.manufacturer)),
            ("Model", _text(d.model)),
            ("Serial number", _text(d.serial)),
            ("IMEI", ", ".join(d.imeis) if d.imeis else UNKNOWN),
            ("Storage", _storage(record)),
            ("OS version", _text(d.os_version)),
            ("Platform", _text(d.platform)),
            ("Encryption", _text(d.encryption)),
            ("Asset tag", _text(record.asset_tag)),
            ("Endpoint", _endpoint(record)),
        )),
    ]
    if s is None:
        san_rows: tuple[tuple[str, str], ...] = (
            ("Sanitization", "not performed"),
            ("Tool", tool_text(record.tool)),
        )
    else:
        san_rows = (
            ("Category", _text(s.category)),
            ("Technique", _text(s.technique)),
            ("Method", f"{_text(s.title)} ({_text(s.method)})"),
            ("Method details", _mapping(s.details)),
            ("Justification", _text(s.justification)),
            ("Standard", _text(s.standard)),
            ("Tool", tool_text(record.tool)),
            ("Started", _text(s.started_at)),
            ("Finished", _text(s.finished_at)),
            ("Bytes written", _bytes(s.bytes_written)),
        )
    sections.append(Section("Sanitization", san_rows))
    sections.append(Section("Verification", _verification_rows(record.verification, layout)))
    findings = tuple((f.severity.value.upper(), f"{f.code}: {_text(f.message)}")
                     for f in record.findings) or (("Findings", "none"),)
    if layout >= 2:
        sections.append(Section("Evidence", (("Evidence bundle", evidence_text(record.evidence)),)))
    sections.append(Section("Findings", findings))
    sections.append(Section("Reason", (("Reason", record.reason.strip() or "none"),)))
    post = tuple((str(k), _text(v)) for k, v in sorted(record.post_state.items())) \
        or (("Post state", UNKNOWN),)
    sections.append(Section("Post-sanitization state", post))
    dest = record.destination
    sections.append(Section("Media destination", (
        ("Destination", _text(dest.kind)),
        ("Details", dest.details.strip() or "none"),
    )))
    if layout >= 3:
        sections.append(Section("Signature", signature_rows(signing, record.created_at)))
    else:
        sections.append(Section("Signature", (
            ("Signature", f"Digitally signed (PAdES) by {org}; "
                          "validate with `phonewipe cert verify`"),
            ("Date", _text(record.created_at)),
        )))
    return sections


def visible_fields(record: Record, layout: int = LAYOUT_VERSION,
                   signing: SigningInfo | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs as printed, labels qualified by their section."""
    return [(f"{sec.title}: {label}", value)
            for sec in visible_sections(record, layout, signing) for label, value in sec.rows]


def title_text(record: Record, layout: int = LAYOUT_VERSION) -> str:
    """The document's title: from layout 4 on, only a PASS is a certificate of sanitization."""
    if layout >= 4:
        from .wording import title_for
        return title_for(record)
    return TITLE


def qr_text(digest: str, layout: int = LAYOUT_VERSION,
            signing: SigningInfo | None = None) -> str:
    """The QR code: the record's SHA-256 and, from layout 3 on, the signer's fingerprint."""
    if layout >= 3:
        return f"{QR_PREFIX}{digest};signer-sha256:{signing.fingerprint if signing else UNKNOWN}"
    return QR_PREFIX + digest


def qr_payload(record: Record, signing: SigningInfo | None = None) -> str:
    return qr_text(record.sha256(), LAYOUT_VERSION, signing)
