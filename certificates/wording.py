"""Layout 4: the certificate in plain words, every NIST SP 800-88 Rev. 1 Appendix G field.

Every sentence that states a fact is built from the record field that proves it: the scope
from the method's details and the operator's attestations (`Record.media`), the sampling
from the plan and the counts really read, the locks from the identity the preflight filled
in. No raw field names, no pattern key, personal data (account e-mails) masked. A record
that is not a PASS is a "Sanitization record", not a certificate of sanitization.
"""
from __future__ import annotations

import re
from typing import Any

from phonewipe.erase.mdm import mask_email
from phonewipe.erase.model import Outcome, Record, VerificationResult

CERTIFICATE_TITLE = "Certificate of Sanitization"
RECORD_TITLE = "Sanitization record"
NOT_GIVEN = "not given"

OUTCOME_WORDS = {
    Outcome.ERASED_VERIFIED: "erased, and the erase verified by reading storage back",
    Outcome.ERASED_UNVERIFIED: "erase performed, but not verified by reading storage back",
    Outcome.FAILED: "the erase failed or did not verify: the device may still hold data",
    Outcome.BLOCKED: "not erased: the erase was stopped before anything was written",
    Outcome.DESTROYED: "physically destroyed, as the operator and a witness attest (nothing "
                       "was read back)",
}
TECHNIQUE_WORDS = {"overwrite": "overwrite", "block-erase": "block erase",
                   "crypto-erase": "cryptographic erase", "factory-reset": "factory reset",
                   "destruction": "destruction"}
ENCRYPTION_WORDS = {"file": "file-based encryption", "block": "full-disk (block) encryption",
                    "none": "not encrypted"}
EXPECTATION_WORDS = {"keyed-pattern": "the host-keyed pseudo-random pattern that was written",
                     "zeros": "zeros", "no-plaintext": "no readable data (high entropy, no known "
                                                     "file signatures)"}
STATUS_WORDS = {"passed": "passed", "failed": "FAILED", "not-performed": "not performed",
                "unavailable": "not possible"}
MODE_WORDS = {"nist": "NIST SP 800-88 Rev. 1 sampling", "quick": "statistical sampling",
              "full": "every block read", "none": "none"}
# method details and post-sanitization state: what each field means, in words
DETAIL_LABELS = {
    "device": "Block device", "bytes": "Bytes overwritten", "root": "Root access",
    "pattern": "Data written", "factory_reset": "Factory reset", "after_verification":
    "After verification", "data_partition_kib": "Data partition", "deleted_top_level_entries":
    "Deleted entries", "fill_bytes": "Bytes filled", "fill_file_max":
    "Largest fill file", "fill_files": "Fill files", "free_bytes_before": "Free space before",
    "not_reached": "Not reached by fill", "previous_fill_removed":
    "Earlier fill removed", "reserved_bytes": "Reserved blocks", "downloads":
    "Images sent", "image": "Image", "protocol": "Protocol",
}
POST_LABELS = {
    "returned_over_adb": "Back over adb after reset", "note": "Note",
    "google_accounts": "Google accounts after", "test_harness":
    "Test Harness Mode", "user_files": "User folders after", "reset_observed":
    "Reset observed", "mode": "Mode after the erase", "factory_reset": "Factory reset",
    "returned_after_s": "Returned after (seconds)",
}
BYTE_KEYS = {"bytes", "fill_bytes", "fill_file_max", "free_bytes_before", "reserved_bytes"}
NO_READBACK_CODES = re.compile(r"no[-_]?readback", re.I)


def title_for(record: Record) -> str:
    """A PASS is a certificate of sanitization; everything else is a record of what happened."""
    if record.outcome is Outcome.ERASED_VERIFIED:
        return CERTIFICATE_TITLE
    if record.outcome is Outcome.DESTROYED:
        from .manual import destruction_title
        return destruction_title(record)
    return f"{RECORD_TITLE}: {record.result_text}"


def words(value: Any) -> str:
    """One value in words: yes/no, lists joined, numbers with separators, never None."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(words(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{_label(k, {})}: {words(v)}" for k, v in sorted(value.items())) \
            if value else "none"
    text = mask_email(str(value).strip().rstrip(";").strip())
    return text if text else "none"


def _label(key: str, labels: dict[str, str]) -> str:
    return labels.get(key) or key.replace("_", " ").strip().capitalize()


def byte_words(value: int | None) -> str:
    if value is None:
        return "unknown"
    if value >= 10 ** 9:
        return f"{value / 10 ** 9:.1f} GB ({value:,} bytes)"
    if value >= 10 ** 6:
        return f"{value / 10 ** 6:.1f} MB ({value:,} bytes)"
    return f"{value:,} bytes"


def _given(text: str) -> str:
    return text.strip() or NOT_GIVEN


def _attested(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def covered_bytes(record: Record) -> int | None:
    """The size of the userdata partition the erase covered, as the record proves it."""
    s = record.sanitization
    if s is not None and isinstance(s.details.get("bytes"), int):
        return int(s.details["bytes"])
    if s is not None and isinstance(s.details.get("data_partition_kib"), int):
        return int(s.details["data_partition_kib"]) * 1024
    v = record.verification  # read back over the whole partition (not a fill's files)
    if v is not None and s is not None and "fill" not in s.method \
            and isinstance(v.plan.get("size"), int):
        return int(v.plan["size"])
    return record.device.capacity_bytes


def scope_sentence(record: Record, layout: int = 5) -> str:
    """What the erase covered: "userdata partition of N bytes; SIM and microSD removed by the
    operator: yes/no; eSIM: erased/not present/unknown" (attestations unknown when not given).
    From layout 5 on, the area is the method's own account of it (a disk, an eMMC, several
    partitions); layout 4 said "userdata partition" whatever the plugin erased."""
    m = record.media
    if record.sanitization is None:
        covered = "nothing was erased"
    elif layout >= 5 and record.sanitization.scope.strip() and record.device.platform != "ios":
        covered = words(record.sanitization.scope)  # an iPhone's own erase: "all user data"
    else:
        size = covered_bytes(record)
        what = "all user data" if record.device.platform == "ios" else "userdata partition"
        covered = what + (f" of {size:,} bytes" if size is not None else " (size unknown)")
    sim, sd = _attested(m.sim_removed), _attested(m.microsd_removed)
    removed = (f"SIM and microSD removed by the operator: {sim}" if sim == sd else
               f"SIM removed by the operator: {sim}; microSD removed by the operator: {sd}")
    return f"{covered}; {removed}; eSIM: {m.esim or 'unknown'}"


def post_classification(record: Record) -> str:
    given = record.media.post_classification.strip()
    if given:
        return given
    if record.outcome is Outcome.ERASED_VERIFIED:
        return NOT_GIVEN
    return ("not applicable: the media was not shown to be sanitized and keeps the "
            "classification of its data")


def _device_rows(record: Record) -> list[tuple[str, str]]:
    d, m = record.device, record.media
    kind = d.storage_type or "unknown type"
    storage = f"{kind}, {byte_words(d.capacity_bytes)}" if d.capacity_bytes is not None \
        else ("unknown" if not d.storage_type else f"{kind}, capacity unknown")
    rows = [
        ("Manufacturer", words(d.manufacturer)), ("Model", words(d.model)),
        ("Serial number", words(d.serial)),
        ("IMEI", ", ".join(d.imeis) if d.imeis else "unknown"),
        ("Media type", storage), ("OS version", words(d.os_version)),
        ("Platform", words(d.platform)),
        ("Encryption", ENCRYPTION_WORDS.get(d.encryption or "", words(d.encryption))),
        ("Asset tag", words(record.asset_tag) if record.asset_tag else "none"),
        ("Media source", _given(m.source)),
        ("Classification", _given(m.classification)), ("Data backup", _given(m.backup)),
        ("Connected via", f"{record.endpoint.plugin} ({record.endpoint.mode}), "
                          f"{words(record.endpoint.label or record.endpoint.address)}"),
    ]

    def checked(v: bool | None) -> str:
        return "not checked" if v is None else ("yes" if v else "no")

    ios = d.platform == "ios"  # an iPhone has no FRP; its lock is Activation Lock (Find My)
    rows += [] if ios else [("FRP (Google account)", checked(d.frp))]
    rows += [("Managed (MDM)", checked(d.mdm))]
    if d.activation_lock is not None:
        rows.append(("Activation Lock (Find My)" if ios else "Reactivation Lock",
                     checked(d.activation_lock)))
    if d.bootloader_locked is not None:
        rows.append(("Bootloader locked", checked(d.bootloader_locked)))
    return rows


def _sanitization_rows(record: Record, layout: int) -> list[tuple[str, str]]:
    s = record.sanitization
    rows = [("Scope", scope_sentence(record, layout))]
    if s is None:
        rows += [("Sanitization", "not performed")]
    else:
        rows += [
            ("Category", s.category or "unknown"),
            ("Technique", TECHNIQUE_WORDS.get(s.technique, words(s.technique))),
            ("Method", f"{words(s.title)} ({s.method})"),
        ]
        for key, value in sorted(s.details.items()):
            if value in ("", None, [], {}):
                continue
            text = byte_words(value) if key in BYTE_KEYS and isinstance(value, int) else \
                (f"{value:,} KiB" if key.endswith("_kib") and isinstance(value, int)
                 else words(value))
            rows.append((_label(key, DETAIL_LABELS), text))
        rows += [
            ("Justification", words(s.justification)), ("Standard", words(s.standard)),
            ("Started", words(s.started_at)), ("Finished", words(s.finished_at)),
            ("Bytes written", byte_words(s.bytes_written)),
        ]
    from .parts import tool_text
    rows += [("Tool", tool_text(record.tool)),
             ("Post-sanitization classification", post_classification(record)),
             ("Notes", record.media.notes.strip() or "none")]
    return rows


def _plan_words(v: VerificationResult) -> str:
    p = v.plan
    parts = [words(p.get("algorithm"))]
    if isinstance(p.get("seed"), int):
        parts.append(f"seed {p['seed']}")
    if isinstance(p.get("size"), int):
        parts.append(f"address space {byte_words(p['size'])}")
    if isinstance(p.get("block_size"), int):
        parts.append(f"blocks of {p['block_size']:,} bytes")
    if isinstance(p.get("samples"), int):
        parts.append(f"{p['samples']:,} samples planned")
    if isinstance(p.get("confidence"), (int, float)) and isinstance(p.get("residual"), (int, float)):
        parts.append(f"confidence {p['confidence']:g}, escaped share {p['residual']:g}")
    return "; ".join(parts) + " (re-derive it with `phonewipe verify --plan-from`)"


def _verification_rows(record: Record) -> list[tuple[str, str]]:
    v = record.verification
    if v is None:
        return [("Verification", "not performed")]
    if v.mode in ("none", ""):
        return [("Verification", f"not possible: {words(v.reason)}" if v.reason
                 else "not performed")]
    rows = [
        ("Method", MODE_WORDS.get(v.mode, words(v.mode))),
        ("Result", STATUS_WORDS.get(v.status, words(v.status))),
        ("Expected to read", EXPECTATION_WORDS.get(v.expectation or "", words(v.expectation))),
        ("Area sampled", words(v.scope)),
    ]
    if v.coverage:
        rows.append(("Coverage", v.coverage))
    rows += [("Samples read", f"{v.samples_read:,}"), ("Bytes read", byte_words(v.bytes_read)),
             ("Mismatched samples", f"{v.failures_total:,}")]
    for i, f in enumerate(v.failures[:5], 1):
        rows.append((f"Mismatch {i}", f"at byte {f.offset:,} (0x{f.offset:x}): {words(f.found)}"))
    hidden = max(v.failures_total, len(v.failures)) - min(len(v.failures), 5)
    if hidden > 0:
        rows.append(("More mismatches", f"{hidden:,} more, listed in the embedded record"))
    if v.capacity:
        status = str(v.capacity.get("status", "unknown"))
        label = "UNVERIFIED ASSUMPTION" if status == "unverified" else status
        rows.append(("Capacity", f"{label}: {words(v.capacity.get('note'))}"))
    else:
        rows.append(("Capacity", "not checked"))
    if v.plan:
        rows.append(("Sampling plan", _plan_words(v)))
    rows.append(("Samples SHA-256", words(v.digest)))
    if v.reason:
        rows.append(("Note", words(v.reason)))
    return rows


def _shown_findings(record: Record) -> list[tuple[str, str]]:
    """The findings in words (severity, message; e-mails masked). A finding that the record
    itself contradicts is left out: "cannot read back" when the phone was followed and read
    back to a PASS."""
    verified = record.outcome is Outcome.ERASED_VERIFIED and record.verification is not None \
        and record.verification.status == "passed"
    rows = []
    for f in record.findings:
        if verified and NO_READBACK_CODES.search(f.code):
            continue
        rows.append(({"blocker": "Blocker", "warning": "Warning"}.get(f.severity.value, "Checked"),
                     words(f.message)))
    return rows or [("Findings", "none")]


def sections_v4(record: Record, signing: Any, layout: int = 5) -> list[Any]:
    """The sections of a layout-4 or later certificate, as printed (see
    fields.visible_sections)."""
    from .parts import Section, evidence_text, signature_rows
    sections = [
        Section("Certificate", (
            ("Result", record.result_text),
            ("Outcome", OUTCOME_WORDS[record.outcome]),
            ("Record ID", words(record.record_id)),
            ("Job ID", words(record.job_id)),
            ("Batch ID", words(record.batch_id) if record.batch_id else "none"),
            ("Created", words(record.created_at)),
            ("Record SHA-256", record.sha256()),
            ("Schema", words(record.schema)),
        )),
        Section("Person performing sanitization", (
            ("Name", words(record.operator.name)), ("Title", words(record.operator.title)),
            ("Organization", words(record.operator.organization)),
            ("Location", words(record.operator.location)),
            ("Phone", words(record.operator.phone)),
        )),
        Section("Media information", tuple(_device_rows(record))),
        Section("Sanitization", tuple(_sanitization_rows(record, layout))),
        Section("Verification", tuple(_verification_rows(record))),
        Section("Evidence", (("Evidence bundle", evidence_text(record.evidence)),)),
        Section("Findings", tuple(_shown_findings(record))),
    ]
    blockers = " ".join(f.message for f in record.findings if f.severity.value == "blocker")
    if record.reason.strip() and record.reason.strip() == blockers.strip():
        sections.append(Section("Reason", (("Reason", "the blocker findings above"),)))
    elif record.reason.strip():
        sections.append(Section("Reason", (("Reason", words(record.reason)),)))
    post = tuple((_label(k, POST_LABELS), words(v)) for k, v in sorted(record.post_state.items()))
    sections.append(Section("After sanitization", post or (("State", "not observed"),)))
    sections.append(Section("Media destination", (
        ("Destination", words(record.destination.kind)),
        ("Details", record.destination.details.strip() or "none"),
    )))
    sections.append(Section("Validation (second person)", (
        ("Validation", "by a separate, signed addendum that cites this record's SHA-256 "
                       "(`phonewipe cert validate FILE --by NAME`); `cert verify` checks it"),
    )))
    sections.append(Section("Signature", signature_rows(signing, record.created_at)))
    from .manual import manual_sections  # attested wipes and destructions (#19)
    return manual_sections(record, sections)
