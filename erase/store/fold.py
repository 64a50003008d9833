"""Many events' projections at once, folded in memory: what `projection.project` does to the
tables event by event, done to rows held in dicts, so a store that reads a long log (the
first start of a dashboard on a station's audit.sqlite) writes each changed row once per
chunk of events instead of running several statements per event.

A row the fold has not seen is asked of `Tables` (the projections as committed) before the
chunk is folded; `changes()` gives what to write, in the order `project` would have made the
rows. Payload meanings are projection.py's own functions, so both ways read an event alike."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Protocol

from ..audit import Event
from ..station.ledger import BATCH_PREFIX
from .projection import (
    NO_STAGE,
    _identity_args,
    _json,
    batch_manifest,
    file_sha256,
    queued_fields,
    record_args,
    record_keys,
)

JOB_COLUMNS = ("job_id", "station", "batch_id", "serial", "imeis", "model", "asset_tag", "address",
               "stage", "started_at", "updated_at", "outcome", "reason", "record_id",
               "record_sha256", "record_row", "finished_at", "certificate", "second_look")
BATCH_COLUMNS = ("batch_id", "opened_at", "closed_at", "manifest")


@dataclass(slots=True)
class JobRow:
    """One store_jobs row (JOB_COLUMNS, in that order); `record` is never written."""

    job_id: str
    station: str
    batch_id: str
    serial: str
    imeis: str
    model: str
    asset_tag: str
    address: str
    stage: str
    started_at: str
    updated_at: str
    outcome: str = ""
    reason: str = ""
    record_id: str = ""
    record_sha256: str = ""
    record_row: int = 0
    finished_at: str = ""
    certificate: str = ""
    second_look: str | None = None

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in JOB_COLUMNS)


@dataclass(slots=True)
class BatchRow:
    batch_id: str
    opened_at: str
    closed_at: str = ""
    manifest: str | None = None

    def values(self) -> tuple[Any, ...]:
        return (self.batch_id, self.opened_at, self.closed_at, self.manifest)


class Tables(Protocol):
    """The committed projection rows with these keys (absent ones are left out)."""

    def jobs(self, job_ids: Collection[str]) -> Iterable[JobRow]: ...

    def batches(self, batch_ids: Collection[str]) -> Iterable[BatchRow]: ...

    def batch_stations(self, batch_ids: Collection[str]) -> Iterable[tuple[str, str, str]]:
        """(batch_id, station, closed_at) of every station of these batches."""


@dataclass
class Changes:
    """Rows to write, each once: jobs, batches and batch stations as they now are (insert or
    replace), search keys and certificates to insert unless present."""

    jobs: list[tuple[Any, ...]]
    batches: list[tuple[Any, ...]]
    batch_stations: list[tuple[str, str, str]]
    keys: list[tuple[str, str, str]]
    certificates: list[tuple[Any, ...]]


@dataclass
class Fold:
    station: str
    keep_pdf: bool = False
    jobs: dict[str, JobRow | None] = field(default_factory=dict)  # None: not in the tables
    batches: dict[str, BatchRow | None] = field(default_factory=dict)
    stations_of: dict[str, dict[str, str]] = field(default_factory=dict)  # batch -> station -> closed
    _jobs_out: dict[str, None] = field(default_factory=dict)  # changed keys, first change first
    _batches_out: dict[str, None] = field(default_factory=dict)
    _stations_out: dict[tuple[str, str], None] = field(default_factory=dict)
    _keys: list[tuple[str, str, str]] = field(default_factory=list)
    _certificates: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, events: list[Event], tables: Tables) -> None:
        """Fold `events` (in chain order) in, after reading the rows they touch."""
        parsed = [(e, _json(e.payload)) for e in events]
        self._load(parsed, tables)
        for e, payload in parsed:
            if e.job_id.startswith(BATCH_PREFIX):
                self._batch_event(e, payload)
            else:
                self._job_event(e, payload)

    def changes(self) -> Changes:
        """What the events folded since the last call changed."""
        out = Changes([self._job(j).values() for j in self._jobs_out],
                      [self._batch(b).values() for b in self._batches_out],
                      [(b, s, self.stations_of[b][s]) for b, s in self._stations_out],
                      self._keys, self._certificates)
        self._jobs_out, self._batches_out, self._stations_out = {}, {}, {}
        self._keys, self._certificates = [], []
        return out

    # -- reading the rows a chunk touches -------------------------------------------------
    def _load(self, parsed: list[tuple[Event, dict[str, Any]]], tables: Tables) -> None:
        job_ids: dict[str, None] = {}
        batch_ids: dict[str, None] = {}
        for e, payload in parsed:
            if e.job_id.startswith(BATCH_PREFIX):
                batch_ids[e.job_id[len(BATCH_PREFIX):]] = None
                continue
            job_ids[e.job_id] = None
            if e.event == "queued":
                batch_ids[queued_fields(payload)[0]] = None
            elif e.event == "record" and isinstance(payload.get("record"), dict):
                batch_ids[str(payload["record"].get("batch_id") or "")] = None
        jobs = [j for j in job_ids if j not in self.jobs]
        self.jobs.update(dict.fromkeys(jobs))
        self.jobs.update({row.job_id: row for row in tables.jobs(jobs)} if jobs else {})
        batches = [b for b in batch_ids if b not in self.batches]
        self.batches.update(dict.fromkeys(batches))
        if batches:
            self.batches.update({row.batch_id: row for row in tables.batches(batches)})
            for b in batches:
                self.stations_of.setdefault(b, {})
            for b, s, closed in tables.batch_stations(batches):
                self.stations_of[b][s] = closed

    def _job(self, job_id: str) -> JobRow:
        row = self.jobs[job_id]
        assert row is not None
        return row

    def _batch(self, batch_id: str) -> BatchRow:
        row = self.batches[batch_id]
        assert row is not None
        return row

    # -- the events, as projection.py folds them ------------------------------------------
    def _batch_event(self, e: Event, payload: dict[str, Any]) -> None:
        batch_id = e.job_id[len(BATCH_PREFIX):]
        manifest = batch_manifest(e, payload)
        batch = self.batches[batch_id]
        if batch is None:
            batch = self.batches[batch_id] = BatchRow(batch_id, e.ts, manifest=manifest)
        elif manifest and batch.manifest is None:
            batch.manifest = manifest
        self._batches_out[batch_id] = None
        self._batch_station(batch_id)
        stations = self.stations_of[batch_id]
        if e.event in ("batch-opened", "batch-resumed"):  # open again, on this station at least
            self._close(batch_id, "")
            batch.closed_at = ""
        elif e.event == "batch-closed":  # a batch spanning stations closes with the last of them
            self._close(batch_id, e.ts)
            if "" not in stations.values():
                batch.closed_at = e.ts

    def _close(self, batch_id: str, closed_at: str) -> None:
        stations = self.stations_of[batch_id]
        if self.station in stations:
            stations[self.station] = closed_at
            self._stations_out[(batch_id, self.station)] = None

    def _batch_station(self, batch_id: str) -> None:
        stations = self.stations_of[batch_id]
        if batch_id and self.station not in stations:
            stations[self.station] = ""
            self._stations_out[(batch_id, self.station)] = None

    def _job_event(self, e: Event, payload: dict[str, Any]) -> None:
        staged = e.event not in NO_STAGE  # the job's stage is its latest event but these
        job = self.jobs[e.job_id]
        if job is None:
            job = self.jobs[e.job_id] = JobRow(e.job_id, self.station, "", e.serial, "[]", "", "",
                                               "", e.event if staged else "queued", e.ts, e.ts)
        elif staged:
            job.stage, job.updated_at = e.event, e.ts
        self._jobs_out[e.job_id] = None
        if e.event == "queued":
            job.batch_id, job.asset_tag, job.address = queued_fields(payload)
            self._batch_station(job.batch_id)
        elif e.event == "identified" and isinstance(payload.get("identity"), dict):
            ident = _identity_args(payload["identity"])
            job.serial, job.imeis, job.model = ident["serial"], ident["imeis"], ident["model"]
        elif e.event == "record" and isinstance(payload.get("record"), dict):
            self._record(job, e, payload)
        elif e.event == "certified" and payload.get("certificate"):
            self._certified(job, payload)
        elif e.event == "second-look" and payload.get("selected", True):
            job.second_look = json.dumps(payload)

    def _record(self, job: JobRow, e: Event, payload: dict[str, Any]) -> None:
        args = record_args(e, payload)
        if job.outcome != "":
            return  # a job's first record is its record
        if "serial" in args:
            job.serial, job.imeis, job.model = args["serial"], args["imeis"], args["model"]
        job.outcome, job.reason, job.record_id = args["o"], args["r"], args["rid"]
        job.record_sha256, job.record_row, job.finished_at = args["sha"], args["row"], args["ts"]
        job.asset_tag = args["tag"]
        job.batch_id = job.batch_id or args["b"]
        self._batch_station(args["b"])
        self._keys += [(key, kind, job.job_id) for kind, key in record_keys(payload["record"])]

    def _certified(self, job: JobRow, payload: dict[str, Any]) -> None:
        if job.record_id == "" or job.certificate != "":
            return  # no record yet (cannot happen in a sound log), or already certified
        job.certificate = path = str(payload["certificate"])
        sha, data = file_sha256(path)
        self._certificates.append((job.record_id, job.job_id, self.station, path, sha,
                                   str(payload.get("record_sha256", "")),
                                   data if self.keep_pdf else None))
