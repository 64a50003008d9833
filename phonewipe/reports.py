"""Per-batch outputs, rebuilt from the audit log alone: the signed summary PDF, and CSV and
JSON exports of the final records (the JSON is exactly each certificate's embedded record).

Nothing is signed from a log that does not check: the chain and its signed checkpoints must
verify (signed by the key that signs the summary), and every record must be the one its
`record` event hashed, its `certified` event named and its certificate on disk holds, with a
valid signature of the same key. A record edited in the log and the chain recomputed is
refused, not summarised."""
from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phonewipe.erase.audit import AuditLog, AuditReport, now_iso, verify_audit
from phonewipe.erase.errors import AuditBroken, UsageError
from phonewipe.erase.model import Outcome, Record
from phonewipe.erase.station.ledger import BatchLedger, batch_ids, read_ledger
from phonewipe.erase.station.manifest import Manifest
from phonewipe.erase.station.reconcile import device_keys, reconcile

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RecordMismatch(AuditBroken):
    """A record in the log disagrees with its certified hash or its certificate (exit 18)."""
    exit_code = 18


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula: a leading = + - @ tab or
    CR gets a ' in front (the CSV keeps the exact value after it)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def batch_dir(out_dir: Path, batch_id: str) -> Path:
    return Path(out_dir) / "batches" / (_SAFE.sub("_", batch_id).strip("._") or "batch")


@dataclass(frozen=True)
class BatchOutputs:
    directory: Path
    summary_pdf: Path
    records_csv: Path
    records_json: Path
    summary: dict[str, Any]
    assets_csv: Path | None = None


def export_dict(record: Record) -> dict[str, Any]:
    """The record as the exports carry it: everything but key material (the per-job pattern
    key stays in the signed certificate, for an auditor who holds it)."""
    data = record.to_dict()
    plan = (data.get("verification") or {}).get("plan")
    if isinstance(plan, dict):
        plan.pop("pattern_key", None)
    return data


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys of the record's JSON; lists stay JSON text in one cell."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True, ensure_ascii=False)}
    return {prefix: "" if value is None else str(value)}


def records_csv(records: list[Record]) -> str:
    rows = [flatten(export_dict(r)) | {"record_sha256": r.sha256()} for r in records]
    columns = sorted({k for row in rows for k in row})
    first = ["batch_id", "asset_tag", "device.serial", "device.imeis", "outcome", "reason",
             "record_id", "record_sha256"]
    columns = [c for c in first if c in columns] + [c for c in columns if c not in first]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)  # CRLF: a CR in a value is quoted too
    writer.writerow({c: csv_cell(c) for c in columns})
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _device_entry(record: Record, certificate: str | None) -> dict[str, Any]:
    d, s, v = record.device, record.sanitization, record.verification
    return {"serial": d.serial or "", "imei": ", ".join(d.imeis),
            "model": " ".join(x for x in (d.manufacturer, d.model) if x),
            "asset_tag": record.asset_tag, "outcome": record.outcome.value,
            "result": record.result_text, "method": s.method if s else "",
            "verification": f"{v.mode} {v.status}" if v else "", "reason": record.reason,
            "record_id": record.record_id, "record_sha256": record.sha256(),
            "certificate": Path(certificate).name if certificate else ""}


def _audit_block(report: AuditReport, row: int, head: str) -> dict[str, Any]:
    last = report.last_checkpoint
    chain = (f"intact; head {head}:{row} (pass it to `phonewipe audit verify --expect-head`); "
             f"{len(report.checkpoints)} signed checkpoint(s)")
    return {"rows": row, "head": head, "chain": chain, "checkpoints": len(report.checkpoints),
            "last_checkpoint": {"row": last.row, "ts": last.ts} if last else None}


def destroyed_records(audit: Any) -> list[Record]:
    """Every Destruct record in the audit log (`phonewipe destroy --out` the station's
    directory): the reconciliation counts those of a batch's devices and listed assets."""
    from phonewipe.erase.destination import logged_records
    return [Record.from_dict(rec) for _, rec in logged_records(audit)
            if rec.get("outcome") == Outcome.DESTROYED.value]


def build_summary(ledger: BatchLedger, audit_rows: int | dict[str, Any],
                  destroyed: list[Record] | None = None) -> dict[str, Any]:
    opened = ledger.opened or {}
    manifest = Manifest.from_dict(opened["manifest"]) if opened.get("manifest") else None
    jobs = [j for j in ledger.jobs.values() if j.record is not None]
    jobs.sort(key=lambda j: (j.record or {}).get("created_at", ""))
    records = [Record.from_dict(j.record) for j in jobs if j.record is not None]  # (all of them)
    totals: dict[str, int] = {}
    for r in records:
        totals[r.result_text] = totals.get(r.result_text, 0) + 1
    looks = [{"serial": (j.serial or ""), **{k: j.second_look[k] for k in (
        "status", "by", "fresh_seed", "verdict", "samples", "reason", "when") if k in j.second_look}}
             for j in ledger.jobs.values() if j.second_look and j.second_look.get("selected", True)]
    return {
        "schema": "phonewipe.batch-summary/1", "batch_id": ledger.batch_id,
        "generated_at": now_iso(), "operator": opened.get("operator", {}),
        "destination": opened.get("destination", {}),
        "manifest": f"{manifest.path} (sha256 {manifest.sha256[:16]}...)" if manifest else None,
        "closed": ledger.closed is not None, "device_count": len(records), "totals": totals,
        "devices": [_device_entry(r, j.certificate) for r, j in zip(records, jobs, strict=True)],
        "reconciliation": reconcile(records, manifest, destroyed or []).to_dict(),
        "interrupted_not_redone": [j.job_id for j in ledger.unfinished()],
        "second_look_share": opened.get("second_look_share", 0),
        "second_look": looks,
        **second_look_details(ledger),
        "audit": audit_rows if isinstance(audit_rows, dict) else {"rows": audit_rows,
                                                                  "chain": "intact"},
    }


def _verify_command(certificate: str | None, by: str) -> str:
    cert = certificate or "CERTIFICATE.pdf"
    return f"phonewipe verify --plan-from {shlex.quote(cert)} --fresh-seed --operator {shlex.quote(by)}"


def second_look_details(ledger: BatchLedger) -> dict[str, Any]:
    """What the summary adds about the batch's second looks: each look's verdict, the looks
    still pending (with the command that does them), the picks a phone passed on (it could not
    be re-read) and the looks the batch still owes; `second_look_notes` says it in words."""
    pending, passed_on, notes = [], [], []
    for j in ledger.jobs.values():
        look = j.second_look
        if not look:
            continue
        serial = j.serial or j.address
        if not look.get("selected", True):
            passed_on.append({"serial": serial, "reason": look.get("reason", "")})
            notes.append(f"{serial}: {look.get('reason', '')}")
            continue
        if look.get("status") == "pending":
            command = _verify_command(j.certificate, str(look.get("by", "")))
            pending.append({"serial": serial, "by": look.get("by", ""), "command": command,
                            "reason": look.get("reason", "")})
            notes.append(f"PENDING {serial} ({look.get('reason', '')}): {command}")
        elif look.get("status") == "failed":
            notes.append(f"{serial}: second look FAILED ({look.get('reason', '')})")
    closed = ledger.closed or {}
    due, done = closed.get("second_look_due"), closed.get("second_look_done")
    owed = max(0, int(due) - int(done)) if isinstance(due, int) and isinstance(done, int) else 0
    if owed:
        notes.append(f"{owed} second look(s) the share called for could not be placed: no later "
                     "PASS could be re-read (see the picks passed on)")
    return {"second_look_pending": pending,
            "second_look_passed_on": passed_on, "second_look_owed": owed,
            "second_look_notes": notes}


def assets_csv(ledger: BatchLedger) -> str:
    """The fixed per-asset export (`assets.csv`): one row per expected or seen asset, the
    same columns in every batch, plain cells, no key material. An expected asset that never
    arrived has its row with result NOT SEEN; a device not on the list has no tag."""
    opened = ledger.opened or {}
    manifest = Manifest.from_dict(opened["manifest"]) if opened.get("manifest") else None
    finals = [(Record.from_dict(j.record), j.certificate) for j in ledger.jobs.values()
              if j.record is not None]
    finals.sort(key=lambda rc: rc[0].created_at)
    latest: dict[str, tuple[Record, str | None]] = {}
    for record, cert in finals:  # a device redone in the batch: its newest record
        keys = device_keys(record)
        latest[keys[0] if keys else record.endpoint.address] = (record, cert)
    rows: list[list[str]] = []
    matched: set[str] = set()
    for asset in manifest.assets if manifest else ():
        hits = [(key, rc) for key, rc in latest.items() if set(device_keys(rc[0])) & set(asset.keys)]
        if hits:
            key, (record, cert) = hits[-1]
            matched.update(k for k, _ in hits)
            rows.append(_asset_row(asset.asset_tag, asset.owner, record, cert))
        else:
            imeis = [*asset.imeis, "", ""]
            serial = asset.serial or (asset.identifier if asset.identifier not in asset.imeis else "")
            rows.append([asset.asset_tag, asset.owner, serial, imeis[0], imeis[1], "NOT SEEN",
                         "", "", "", ledger.batch_id, "", ""])
    for key, (record, cert) in latest.items():
        if key not in matched:
            rows.append(_asset_row(record.asset_tag, "", record, cert))
    buf = io.StringIO()
    writer = csv.writer(buf)  # CRLF: a CR in a value is quoted too
    writer.writerow(ASSET_COLUMNS)
    writer.writerows([csv_cell(str(v)) for v in row] for row in rows)
    return buf.getvalue()


ASSET_COLUMNS = ("tag", "owner", "serial", "imei1", "imei2", "result", "category", "method",
                 "date", "batch", "certificate_file", "record_sha256")


def _asset_row(tag: str, owner: str, record: Record, certificate: str | None) -> list[str]:
    d, s = record.device, record.sanitization
    imeis = [*d.imeis, "", ""]
    return [tag, owner, d.serial or "", imeis[0], imeis[1], record.result_text,
            s.category if s else "", s.method if s else "", record.created_at,
            record.batch_id, f"certificates/{Path(certificate).name}" if certificate else "",
            record.sha256()]


def write_reports(audit: AuditLog, batch_id: str, out_dir: Path, signer: Any) -> BatchOutputs:
    if batch_id not in batch_ids(audit):
        known = ", ".join(batch_ids(audit)) or "none"
        raise UsageError(f"no batch {batch_id!r} in the audit log {audit.path} (batches: {known})",
                         "give a batch id that `phonewipe station` reported")
    from phonewipe.certificates.batch import sign_summary
    from phonewipe.certificates.sign import write_atomic
    # never report from a log that does not check, nor one another key signed
    verify = getattr(audit, "verify", None)  # a facility store's station log checks itself
    report = verify(trusted=[_fingerprint(signer)]) if verify else \
        verify_audit(audit.path, trusted=[_fingerprint(signer)])
    ledger = read_ledger(audit, batch_id)
    directory = batch_dir(out_dir, batch_id)
    cross_check(audit, ledger, directory, _fingerprint(signer))
    row, head = audit.checkpoint("summary") if getattr(audit, "signer", None) else audit.head()
    summary = build_summary(ledger, _audit_block(report, row, head), destroyed_records(audit))
    records = ledger.records()
    records.sort(key=lambda r: r.created_at)
    pdf = write_atomic(directory, "summary.pdf", sign_summary(signer, summary))
    csv_path = write_atomic(directory, "records.csv", records_csv(records).encode("utf-8"))
    json_path = write_atomic(directory, "records.json", json.dumps(
        [export_dict(r) for r in records], indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    assets_path = write_atomic(directory, "assets.csv", assets_csv(ledger).encode("utf-8"))
    write_atomic(directory, "summary.json", json.dumps(summary, indent=2, sort_keys=True,
                                                       ensure_ascii=False).encode("utf-8"))
    return BatchOutputs(directory, pdf, csv_path, json_path, summary, assets_path)


def _fingerprint(signer: Any) -> str:
    import hashlib

    from cryptography.hazmat.primitives import serialization
    return hashlib.sha256(signer.material.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _events_by_job(audit: AuditLog) -> dict[str, dict[str, list[dict[str, Any]]]]:
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in audit.events():
        if e.event in ("record", "certified", "certificate-failed"):
            try:
                payload = json.loads(e.payload)
            except ValueError:
                payload = {}
            found.setdefault(e.job_id, {}).setdefault(e.event, []).append(
                payload if isinstance(payload, dict) else {})
    return found


def cross_check(audit: AuditLog, ledger: BatchLedger, directory: Path, fingerprint: str) -> None:
    """Every record of the batch against the hash its `record` and `certified` events name
    and against the signed certificate on disk; RecordMismatch (one line) at the first that
    disagrees."""
    from phonewipe.certificates.verify import verify_certificate
    from phonewipe.erase.strings import escape_controls
    by_job = _events_by_job(audit)
    for job in ledger.jobs.values():
        if job.record is None:
            continue
        record = Record.from_dict(job.record)
        digest = record.sha256()
        who = f"{escape_controls(record.device.serial or job.address or '?')} (job {job.job_id[:8]})"
        events = by_job.get(job.job_id, {})
        logged = [p.get("record_sha256") for p in events.get("record", [])]
        if logged[:1] != [digest]:
            raise RecordMismatch(f"report refused: the record of {who} does not hash to the "
                                 "record_sha256 its record event logged", _EDITED)
        if not events.get("certified"):  # never signed: not an edit, and not to be reported
            failed = events.get("certificate-failed", [])
            why = f" (its signing failed: {escape_controls(str(failed[-1].get('error', '')))})" \
                if failed else ""
            raise RecordMismatch(f"report refused: the record of {who} was never certified{why}",
                                 "no summary is signed; fix what stopped the signing, then "
                                 "run the station on this batch again (it certifies the record "
                                 "and closes the batch)")
        certified = [p for p in events.get("certified", []) if p.get("record_sha256") == digest]
        if not certified:
            raise RecordMismatch(f"report refused: no certified event names the record of {who} "
                                 f"(sha256 {digest[:16]}...)", _EDITED)
        named = Path(str(certified[0].get("certificate", "")))
        path = directory / "certificates" / named.name  # where the station wrote it
        if not path.is_file():
            raise RecordMismatch(f"report refused: the certificate of {who} is missing "
                                 f"({path})", "restore the batch's certificates/ folder, "
                                 "then run the report again")
        checked = verify_certificate(path)
        if not checked.ok or checked.record is None:
            raise RecordMismatch(f"report refused: the certificate of {who} ({path.name}) is not "
                                 f"valid: {'; '.join(checked.problems)}", _EDITED)
        if checked.signer_fingerprint != fingerprint:
            raise RecordMismatch(f"report refused: the certificate of {who} ({path.name}) is "
                                 "signed by another key than this summary's", _EDITED)
        if checked.record.sha256() != digest:
            raise RecordMismatch(
                f"report refused: the audit log says {record.result_text} for {who}, its "
                f"certificate {path.name} says {checked.record.result_text} (record "
                f"{digest[:16]}... vs {checked.record.sha256()[:16]}...)", _EDITED)


_EDITED = "the audit log or the certificates were changed after signing: no summary is signed"
