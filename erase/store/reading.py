"""The read side both backends share: SQL over the projections (`projection.py`), with
%(name)s parameters; a backend supplies `_read` (and keeps its projections current)."""
from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from ..audit import Event
from ..model import Outcome, Record
from ..station.manifest import Manifest, normalise
from ..station.reconcile import Reconciliation, reconcile
from .base import (
    BatchInfo,
    CertificateRef,
    FailureCount,
    JobInfo,
    RecordHit,
    StationInfo,
    StoredEvent,
    StoreReader,
    ThroughputBucket,
)
from .projection import result_text

_JOB_COLUMNS = ("job_id, station, batch_id, serial, imeis, model, asset_tag, stage, started_at,"
                " updated_at, outcome, reason, record_id, finished_at, certificate, address")
_CERT_COLUMNS = "record_id, job_id, station, path, sha256, pdf IS NOT NULL, record_sha256"
_MATCHED = {"serial": "serial", "imei": "IMEI", "asset": "asset tag"}


def _imeis(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(i) for i in value) if isinstance(value, list) else ()


def _job(row: tuple[Any, ...]) -> JobInfo:
    (job_id, station, batch_id, serial, imeis, model, tag, stage, started, updated, outcome,
     reason, record_id, finished, certificate, address) = row
    return JobInfo(job_id, station, batch_id, serial, _imeis(imeis), model, tag, stage, started,
                   updated, outcome, result_text(outcome) if outcome else "", reason, record_id,
                   finished, certificate, address)


def _record_of(payload: str | None) -> dict[str, Any]:
    """The final record a `record` event's payload holds."""
    try:
        value = json.loads(payload or "{}").get("record")
    except (ValueError, AttributeError):
        return {}
    return value if isinstance(value, dict) else {}


def _where(clauses: list[tuple[str, str, Any]]) -> tuple[str, dict[str, Any]]:
    """' WHERE a AND b' from the (sql, name, value) whose value is given."""
    used = [(sql, name, value) for sql, name, value in clauses if value not in (None, "")]
    if not used:
        return "", {}
    return " WHERE " + " AND ".join(sql for sql, _, _ in used), {n: v for _, n, v in used}


class SqlReader(StoreReader):
    dialect = ""

    @abstractmethod
    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one query, on projections that are current."""

    def _records_join(self) -> str:
        """store_jobs j with its `record` event e (the record's JSON is kept only there)."""
        station = " AND e.station = j.station" if self.dialect == "postgresql" else ""
        return f" FROM store_jobs j LEFT JOIN events e ON e.id = j.record_row{station}"

    def job(self, job_id: str) -> JobInfo | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM store_jobs WHERE job_id = %(j)s",
                          {"j": job_id})
        return _job(rows[0]) if rows else None

    def stations(self) -> list[StationInfo]:
        running = dict(self._read("SELECT station, COUNT(*) FROM store_jobs WHERE outcome = ''"
                                  " GROUP BY station"))
        open_batches: dict[str, list[str]] = {}
        for batch_id, station in self._read(
                "SELECT bs.batch_id, bs.station FROM store_batch_stations bs JOIN store_batches b"
                " ON b.batch_id = bs.batch_id WHERE bs.closed_at = '' ORDER BY bs.batch_id"):
            open_batches.setdefault(station, []).append(batch_id)
        return [StationInfo(s, first, last, int(n), head, running.get(s, 0),
                            tuple(open_batches.get(s, ())), ev)
                for s, first, last, n, head, ev in self._read(
                    "SELECT station, first_seen, last_seen, events, head, last_event"
                    " FROM store_stations ORDER BY station")]

    def live_jobs(self, station: str | None = None) -> list[JobInfo]:
        where, args = _where([("outcome = ''", "_", True), ("station = %(s)s", "s", station)])
        return [_job(r) for r in self._read(f"SELECT {_JOB_COLUMNS} FROM store_jobs{where}"
                                            " ORDER BY started_at, job_id", args)]

    def jobs(self, batch_id: str | None = None, station: str | None = None,
             limit: int = 1000) -> list[JobInfo]:
        where, args = _where([("batch_id = %(b)s", "b", batch_id), ("station = %(s)s", "s", station)])
        return [_job(r) for r in self._read(
            f"SELECT {_JOB_COLUMNS} FROM store_jobs{where} ORDER BY started_at DESC, job_id"
            f" LIMIT {int(limit)}", args)]

    def batches(self) -> list[BatchInfo]:
        return self._batches("")

    def batch(self, batch_id: str) -> BatchInfo | None:
        found = self._batches(batch_id)
        return found[0] if found else None

    def _batches(self, batch_id: str) -> list[BatchInfo]:
        where, args = _where([("b.batch_id = %(b)s", "b", batch_id)])
        stations: dict[str, list[str]] = {}
        for bid, station in self._read("SELECT batch_id, station FROM store_batch_stations b"
                                       f"{where} ORDER BY station", args):
            stations.setdefault(bid, []).append(station)
        counts: dict[str, dict[str, int]] = {}
        jobs: dict[str, int] = {}
        running: dict[str, int] = {}
        for bid, outcome, n in self._read("SELECT batch_id, outcome, COUNT(*) FROM store_jobs b"
                                          f"{where} GROUP BY batch_id, outcome", args):
            jobs[bid] = jobs.get(bid, 0) + int(n)
            if outcome:
                counts.setdefault(bid, {})[outcome] = int(n)
            else:
                running[bid] = int(n)
        return [BatchInfo(bid, opened, closed, tuple(stations.get(bid, ())), jobs.get(bid, 0),
                          running.get(bid, 0), counts.get(bid, {}), bool(has_manifest))
                for bid, opened, closed, has_manifest in self._read(
                    "SELECT batch_id, opened_at, closed_at, manifest IS NOT NULL FROM store_batches b"
                    f"{where} ORDER BY opened_at DESC, batch_id", args)]

    def reconciliation(self, batch_id: str) -> Reconciliation:
        manifest_rows = self._read("SELECT manifest FROM store_batches WHERE batch_id = %(b)s",
                                   {"b": batch_id})
        manifest = None
        if manifest_rows and manifest_rows[0][0]:
            manifest = Manifest.from_dict(json.loads(manifest_rows[0][0]))
        records = [Record.from_dict(_record_of(payload)) for (payload,) in self._read(
            f"SELECT e.payload{self._records_join()} WHERE j.batch_id = %(b)s AND j.outcome <> ''"
            " ORDER BY j.finished_at, j.job_id", {"b": batch_id})]
        return reconcile(records, manifest)

    def throughput(self, since: str = "", station: str | None = None) -> list[ThroughputBucket]:
        where, args = _where([("outcome <> ''", "_", True), ("finished_at >= %(t)s", "t", since),
                              ("station = %(s)s", "s", station)])
        buckets: dict[tuple[str, str], list[int]] = {}
        for hour, st, outcome, n in self._read(
                "SELECT substr(finished_at, 1, 13), station, outcome, COUNT(*) FROM store_jobs"
                f"{where} GROUP BY substr(finished_at, 1, 13), station, outcome", args):
            counts = buckets.setdefault((hour + ":00Z", st), [0, 0, 0, 0])
            counts[0] += int(n)
            slot = {Outcome.ERASED_VERIFIED.value: 1, Outcome.FAILED.value: 2}.get(outcome, 3)
            counts[slot] += int(n)
        return [ThroughputBucket(hour, st, *c) for (hour, st), c in sorted(buckets.items())]

    def failures(self, since: str = "", station: str | None = None) -> list[FailureCount]:
        where, args = _where([("outcome NOT IN ('', 'ERASED_VERIFIED')", "_", True),
                              ("finished_at >= %(t)s", "t", since), ("station = %(s)s", "s", station)])
        groups: dict[tuple[str, str], list[Any]] = {}
        for outcome, reason, st, n, last in self._read(
                "SELECT outcome, reason, station, COUNT(*), MAX(finished_at) FROM store_jobs"
                f"{where} GROUP BY outcome, reason, station", args):
            g = groups.setdefault((outcome, reason), [0, "", []])
            g[0] += int(n)
            g[1] = max(g[1], last)
            g[2].append(st)
        out = [FailureCount(o, r, n, last, tuple(sorted(sts))) for (o, r), (n, last, sts) in groups.items()]
        return sorted(out, key=lambda f: (-f.count, f.outcome, f.reason))

    def search(self, query: str) -> list[RecordHit]:
        key = normalise(query)
        if not key:
            return []
        matched: dict[str, list[str]] = {}
        for job_id, kind in self._read("SELECT job_id, kind FROM store_keys WHERE key = %(k)s"
                                       " ORDER BY kind", {"k": key}):
            matched.setdefault(job_id, []).append(_MATCHED.get(kind, kind))
        hits = []
        for job_id, how in matched.items():
            rows = self._read("SELECT e.payload, j.record_id, j.record_sha256, j.station,"
                              " j.batch_id, j.finished_at, j.outcome, j.second_look, j.record_row"
                              f"{self._records_join()} WHERE j.job_id = %(j)s", {"j": job_id})
            if not rows:
                continue
            payload, rid, sha, st, bid, at, outcome, look, row = rows[0]
            rec = _record_of(payload)
            hits.append(RecordHit(rec, rid, sha, st, bid, job_id,
                                  str(rec.get("created_at") or at), outcome,
                                  tuple(how), self.certificate(rid),
                                  json.loads(look) if look else None, int(row)))
        return sorted(hits, key=lambda h: (h.created_at, h.row), reverse=True)

    def certificate(self, record_id: str) -> CertificateRef | None:
        rows = self._read(f"SELECT {_CERT_COLUMNS} FROM store_certificates WHERE record_id = %(r)s",
                          {"r": record_id})
        if not rows:
            return None
        rid, job, st, path, sha, stored, rsha = rows[0]
        return CertificateRef(rid, job, st, path, sha, bool(stored), rsha)

    def certificate_pdf(self, record_id: str) -> bytes | None:
        rows = self._read("SELECT pdf FROM store_certificates WHERE record_id = %(r)s",
                          {"r": record_id})
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def _event(self, cursor: int, station: str, row: tuple[Any, ...]) -> StoredEvent:
        return StoredEvent(cursor, station, Event(*row))
