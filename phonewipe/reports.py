"""Per-batch outputs, rebuilt from the audit log alone: the signed summary PDF, and CSV and
JSON exports of the final records (the JSON is exactly each certificate's embedded record)."""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phonewipe.erase.audit import AuditLog, now_iso, verify_log
from phonewipe.erase.errors import UsageError
from phonewipe.erase.model import Record
from phonewipe.erase.station.ledger import BatchLedger, batch_ids, read_ledger
from phonewipe.erase.station.manifest import Manifest
from phonewipe.erase.station.reconcile import reconcile

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def batch_dir(out_dir: Path, batch_id: str) -> Path:
    return Path(out_dir) / "batches" / (_SAFE.sub("_", batch_id).strip("._") or "batch")


@dataclass(frozen=True)
class BatchOutputs:
    directory: Path
    summary_pdf: Path
    records_csv: Path
    records_json: Path
    summary: dict[str, Any]


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
    rows = [flatten(r.to_dict()) | {"record_sha256": r.sha256()} for r in records]
    columns = sorted({k for row in rows for k in row})
    first = ["batch_id", "asset_tag", "device.serial", "device.imeis", "outcome", "reason",
             "record_id", "record_sha256"]
    columns = [c for c in first if c in columns] + [c for c in columns if c not in first]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
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


def build_summary(ledger: BatchLedger, audit_rows: int) -> dict[str, Any]:
    opened = ledger.opened or {}
    manifest = Manifest.from_dict(opened["manifest"]) if opened.get("manifest") else None
    jobs = [j for j in ledger.jobs.values() if j.record is not None]
    jobs.sort(key=lambda j: (j.record or {}).get("created_at", ""))
    records = [Record.from_dict(j.record) for j in jobs]  # type: ignore[arg-type]
    totals: dict[str, int] = {}
    for r in records:
        totals[r.result_text] = totals.get(r.result_text, 0) + 1
    looks = [{"serial": (j.serial or ""), **{k: j.second_look[k] for k in ("status", "by", "fresh_seed")
                                              if k in j.second_look}}
             for j in ledger.jobs.values() if j.second_look]
    return {
        "schema": "phonewipe.batch-summary/1", "batch_id": ledger.batch_id,
        "generated_at": now_iso(), "operator": opened.get("operator", {}),
        "destination": opened.get("destination", {}),
        "manifest": f"{manifest.path} (sha256 {manifest.sha256[:16]}...)" if manifest else None,
        "closed": ledger.closed is not None, "device_count": len(records), "totals": totals,
        "devices": [_device_entry(r, j.certificate) for r, j in zip(records, jobs)],
        "reconciliation": reconcile(records, manifest).to_dict(),
        "interrupted_not_redone": [j.job_id for j in ledger.unfinished()],
        "second_look_share": opened.get("second_look_share", 0),
        "second_look": looks,
        "audit": {"rows": audit_rows, "chain": "intact"},
    }


def write_reports(audit: AuditLog, batch_id: str, out_dir: Path, signer: Any) -> BatchOutputs:
    if batch_id not in batch_ids(audit):
        known = ", ".join(batch_ids(audit)) or "none"
        raise UsageError(f"no batch {batch_id!r} in the audit log {audit.path} (batches: {known})",
                         "give a batch id that `phonewipe station` reported")
    rows = verify_log(audit.path)  # never report from a log whose chain is broken
    ledger = read_ledger(audit, batch_id)
    summary = build_summary(ledger, rows)
    from phonewipe.certificates.batch import sign_summary
    from phonewipe.certificates.sign import write_atomic
    directory = batch_dir(out_dir, batch_id)
    records = ledger.records()
    records.sort(key=lambda r: r.created_at)
    pdf = write_atomic(directory, "summary.pdf", sign_summary(signer, summary))
    csv_path = write_atomic(directory, "records.csv", records_csv(records).encode("utf-8"))
    json_path = write_atomic(directory, "records.json", json.dumps(
        [r.to_dict() for r in records], indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    write_atomic(directory, "summary.json", json.dumps(summary, indent=2, sort_keys=True,
                                                       ensure_ascii=False).encode("utf-8"))
    return BatchOutputs(directory, pdf, csv_path, json_path, summary)
