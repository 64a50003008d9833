"""A batch as the audit log tells it: which jobs ran, which ended in a record, which were
certified, which were interrupted. The station resumes from this and `phonewipe report`
rebuilds every batch output from it; nothing else is trusted."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..audit import AuditLog
from ..model import Record

BATCH_PREFIX = "batch:"


def batch_job_id(batch_id: str) -> str:
    """The audit job id under which a batch's own events (opened, closed...) are logged."""
    return BATCH_PREFIX + batch_id


@dataclass
class JobTrace:
    job_id: str
    batch_id: str
    endpoint: dict[str, Any]
    asset_tag: str = ""
    redo_of: str = ""
    stage: str = "queued"
    identity: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    certificate: str | None = None
    aborted: bool = False
    interrupted: bool = False
    second_look: dict[str, Any] | None = None
    probe_serial: str | None = None  # what the station's probe learnt before the job started

    @property
    def serial(self) -> str | None:
        return (self.identity or {}).get("serial") or self.probe_serial or None

    @property
    def address(self) -> str:
        return str(self.endpoint.get("address", ""))

    @property
    def device_key(self) -> str:
        """Who this job was about: the phone's serial, else how it was reached."""
        return self.serial or self.address

    @property
    def final(self) -> bool:
        return self.record is not None


@dataclass
class BatchLedger:
    batch_id: str
    opened: dict[str, Any] | None = None
    closed: dict[str, Any] | None = None
    jobs: dict[str, JobTrace] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # batch-level

    def records(self) -> list[Record]:
        return [Record.from_dict(j.record) for j in self.jobs.values() if j.record is not None]

    def finished_keys(self) -> set[str]:
        keys: set[str] = set()
        for j in self.jobs.values():
            if j.final:
                keys.add(j.device_key)
                keys.add(j.address)
        return keys - {""}

    def unfinished(self) -> list[JobTrace]:
        """Jobs with no record whose device has no record from any later job either:
        these devices still need their erase redone."""
        done = self.finished_keys()
        return [j for j in self.jobs.values()
                if not j.final and j.device_key not in done and j.address not in done]

    def uncertified(self) -> list[JobTrace]:
        return [j for j in self.jobs.values() if j.final and j.certificate is None]


def _json(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_ledger(audit: AuditLog, batch_id: str) -> BatchLedger:
    ledger = BatchLedger(batch_id)
    own = batch_job_id(batch_id)
    for e in audit.events():
        payload = _json(e.payload)
        if e.job_id == own:
            ledger.events.append((e.event, payload))
            if e.event == "batch-opened" and ledger.opened is None:
                ledger.opened = payload
            elif e.event == "batch-closed":
                ledger.closed = payload
            continue
        if e.event == "queued" and payload.get("batch_id") == batch_id:
            ledger.jobs[e.job_id] = JobTrace(e.job_id, batch_id, payload.get("endpoint", {}),
                                             payload.get("asset_tag", ""),
                                             payload.get("redo_of", ""),
                                             probe_serial=payload.get("serial") or None)
            continue
        job = ledger.jobs.get(e.job_id)
        if job is None:
            continue
        if e.event == "identified":
            job.identity = payload.get("identity")
        elif e.event == "record" and job.record is None:
            job.record = payload.get("record")
        elif e.event == "certified" and job.certificate is None:
            job.certificate = payload.get("certificate")
        elif e.event == "aborted":
            job.aborted = True
        elif e.event == "interrupted":
            job.interrupted = True
        elif e.event == "second-look":
            job.second_look = payload
        if e.event not in ("certified", "second-look", "late-result"):
            job.stage = e.event
    return ledger


def batch_ids(audit: AuditLog) -> list[str]:
    """Every batch in the log, oldest first, and whether each is closed."""
    seen: dict[str, bool] = {}
    for e in audit.events():
        if e.job_id.startswith(BATCH_PREFIX):
            bid = e.job_id[len(BATCH_PREFIX):]
            seen.setdefault(bid, False)
            if e.event == "batch-closed":
                seen[bid] = True
    return list(seen)


def open_batch(audit: AuditLog) -> str | None:
    """The newest batch that was opened and never closed (a station that died), if any."""
    open_ids = []
    closed = set()
    for e in audit.events():
        if e.job_id.startswith(BATCH_PREFIX):
            bid = e.job_id[len(BATCH_PREFIX):]
            if e.event == "batch-opened":
                open_ids.append(bid)
            elif e.event == "batch-closed":
                closed.add(bid)
    remaining = [b for b in open_ids if b not in closed]
    return remaining[-1] if remaining else None
