"""The certificate of an operator-attested manual wipe and of a physical destruction: the
layout-4 sections (wording.py) with what these records are made of put in words — the
operator's confirmations step by step, the destruction and its witness, the photos — and
nothing that would suggest a read-back that never happened. Every row is built from the
record, so `cert verify` re-renders it exactly."""
from __future__ import annotations

from typing import Any

from phonewipe.erase.model import Outcome, Record

from .parts import Section, _text

ATTESTED_METHOD = "manual-attested"  # erase.attest.METHOD_NAME
DESTRUCTION_TITLE = "Certificate of Destruction"
DESTRUCTION_RECORD = "Destruction record"
IDENTITY_SOURCE = ("entered by the operator (from the label, the box or the phone's screen), "
                   "not read from the device")


def is_attested(record: Record) -> bool:
    return record.sanitization is not None and record.sanitization.method == ATTESTED_METHOD


def is_destroyed(record: Record) -> bool:
    return record.outcome is Outcome.DESTROYED


def destruction_title(record: Record) -> str:
    s = record.sanitization
    if s is not None and s.category == "Destruct":
        return DESTRUCTION_TITLE
    return f"{DESTRUCTION_RECORD}: {record.result_text} (no category claimed)"


def photos_of(record: Record) -> list[dict[str, Any]]:
    photos = record.evidence.get("photos") if isinstance(record.evidence, dict) else None
    return [p for p in photos if isinstance(p, dict)] if isinstance(photos, list) else []


def _photo_rows(record: Record) -> tuple[tuple[str, str], ...]:
    rows = []
    for n, p in enumerate(photos_of(record), 1):
        e = p.get("embedded") or {}
        rows.append((f"Photo {n}", f"{_text(p.get('file'))}: {_text(p.get('format'))} "
                                   f"{_text(p.get('width'))}x{_text(p.get('height'))} pixels, "
                                   f"{_text(p.get('bytes'))} bytes, original SHA-256 "
                                   f"{_text(p.get('sha256'))}; a reduced copy without metadata "
                                   f"({_text(e.get('width'))}x{_text(e.get('height'))}) is "
                                   "printed on the photo pages"))
    return tuple(rows)


def _replace(sections: list[Section], title: str, new: Section) -> list[Section]:
    return [new if s.title == title else s for s in sections]


def _insert_after(sections: list[Section], title: str, new: list[Section]) -> list[Section]:
    out: list[Section] = []
    for s in sections:
        out.append(s)
        if s.title == title:
            out += new
    return out


def _with_identity_source(sections: list[Section]) -> list[Section]:
    out = []
    for s in sections:
        if s.title == "Media information":
            rows = [r for r in s.rows if r[0] not in ("FRP (Google account)", "Managed (MDM)")]
            rows.insert(next((i + 1 for i, r in enumerate(rows) if r[0] == "Platform"),
                             len(rows)), ("Identity", IDENTITY_SOURCE))
            s = Section(s.title, tuple(rows))
        out.append(s)
    return out


def _attestation_rows(record: Record) -> tuple[tuple[str, str], ...]:
    att = record.evidence.get("attestation") or {}
    steps = {s.get("id"): s for s in (att.get("platform") or {}).get("steps", [])
             if isinstance(s, dict)}
    rows = []
    for n, c in enumerate(att.get("steps") or [], 1):
        step = steps.get(c.get("step"), {})
        rows.append((f"Step {n} ({_text(c.get('step'))})",
                     f"{_text(step.get('do'))} Asked: {_text(c.get('confirm'))} Answer: "
                     f"{_text(c.get('answer')).upper()}, at {_text(c.get('at'))} by "
                     f"{_text(c.get('by'))} ({_text(c.get('how'))})"))
    total = len(steps)
    if len(rows) < total:
        rows.append(("Not reached", f"{total - len(rows)} of {total} steps were not asked"))
    return tuple(rows) or (("Steps", "none confirmed"),)


def attested_sections(record: Record, sections: list[Section]) -> list[Section]:
    s = record.sanitization
    details = s.details if s is not None else {}
    scope = (f"the whole phone, as far as the vendor's function covers it "
             f"({_text(details.get('vendor_function'))}); not covered: "
             f"{_text(details.get('not_covered'))}")
    dropped = ("Bytes written", "Not covered", "Platform")  # nothing written; said above
    out = []
    for sec in _with_identity_source(sections):
        if sec.title == "Sanitization":
            sec = Section(sec.title, tuple(("Scope", scope) if r[0] == "Scope" else r
                                           for r in sec.rows if r[0] not in dropped))
        out.append(sec)
    out = _insert_after(out, "Sanitization", [Section("Operator attestation",
                                                      _attestation_rows(record))])
    out = _replace(out, "Verification", Section("Verification", (
        ("Verification", "none: this platform offers no way to read storage back; the "
                         "operator attests each step of the vendor's wipe and the screen it "
                         "ended on (above)"),)))
    if photos_of(record):
        out = _insert_after(out, "Verification", [Section("Photos", _photo_rows(record))])
    return out


def _destruction_rows(record: Record, rows: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    s = record.sanitization
    d = s.details if s is not None else {}
    shown = dict(rows)
    particle = d.get("particle_size_mm")
    out = [("Scope", "the whole device, every memory chip in it (physical destruction)"),
           ("Category", shown.get("Category", "unknown")), ("Technique", "destruction"),
           ("Method", shown.get("Method", "unknown")),
           ("Equipment", _text(d.get("equipment")) if d.get("equipment") else "not given"),
           ("Particle size", f"at most {particle:g} mm" if isinstance(particle, (int, float))
            else "not applicable"),
           ("Facility", _text(d.get("facility"))),
           ("Destroyed at", shown.get("Started", "unknown")),
           ("Operator", _text(record.operator.name)),
           ("Witness", _text(d.get("witness")) + (f" ({d['witness_title']})"
                                                  if d.get("witness_title") else ""))]
    out += [(k, v) for k, v in rows if k in ("Justification", "Standard", "Tool")]
    destroyed = s is not None and s.category == "Destruct"
    out += [("Post-sanitization classification", record.media.post_classification.strip()
             or ("none: the media no longer exists" if destroyed else
                 "not applicable: no category is claimed, the media keeps the classification "
                 "of its data")),
            ("Notes", record.media.notes.strip() or "none")]
    return tuple(out)


def _earlier_rows(record: Record) -> tuple[tuple[str, str], ...]:
    rows = []
    for n, e in enumerate(record.evidence.get("earlier_records") or [], 1):
        if isinstance(e, dict):
            rows.append((f"Earlier record {n}", f"{_text(e.get('result'))} on "
                                                f"{_text(e.get('created_at'))}, record "
                                                f"{_text(e.get('record_id'))}: "
                                                f"{_text(e.get('reason'))}"))
    return tuple(rows)


def destroyed_sections(record: Record, sections: list[Section]) -> list[Section]:
    out = []
    for sec in _with_identity_source(sections):
        if sec.title == "Sanitization":
            sec = Section("Destruction", _destruction_rows(record, sec.rows))
        elif sec.title == "Verification":
            witness = _text((record.sanitization.details if record.sanitization else {})
                            .get("witness"))
            sec = Section("Verification", (
                ("Verification", f"by witness: {witness} saw the destruction; nothing was "
                                 "read back (a destroyed device cannot be read)"),))
        out.append(sec)
    if photos_of(record):
        out = _insert_after(out, "Verification", [Section("Photos", _photo_rows(record))])
    earlier = _earlier_rows(record)
    if earlier:
        out = _insert_after(out, "Destruction", [Section("Why destroyed", earlier)])
    return out


def manual_sections(record: Record, sections: list[Section]) -> list[Section]:
    """The layout-4 sections of `record`, adjusted when it is attested or a destruction."""
    if is_destroyed(record):
        return destroyed_sections(record, sections)
    if is_attested(record):
        return attested_sections(record, sections)
    return sections
