"""The dashboard's read side: the facility's stores (erase/store), as plain dicts the pages
render. A source is one store: a station directory's audit.sqlite (`--out DIR`, one
station each) or, later, a facility's database (many stations). Every string here is data
as the store holds it: the pages set it as text, never as markup."""
from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from phonewipe.erase.errors import UsageError
from phonewipe.erase.store.base import BatchInfo, CertificateRef, JobInfo, RecordHit, StoreReader
from phonewipe.erase.store.projection import result_text

LIVE_JOBS = 200  # the newest jobs the live table shows
HOURS = 24  # the throughput plot's width
FEED_PAGE = 5000  # change-feed rows read per call
_DIGITS = re.compile(r"\d+")


@dataclass
class Source:
    key: str  # unique among the sources: the name in URLs
    reader: StoreReader
    directory: Path | None = None  # a station directory (its certificates may have moved)
    single: bool = True  # one station per store: shown by `key`, not the store's name
    cursor: int = 0  # the change feed's position the live view has reached
    error: str = ""

    def station(self, name: str) -> str:
        return self.key if self.single else name


@dataclass
class Change:
    cursor: dict[str, int]
    jobs: list[dict[str, Any]] = field(default_factory=list)


def open_facility(url: str) -> Source:
    """The facility's database (`[store] url`): every station that writes to it."""
    from phonewipe.erase.store.postgres import PostgresStore
    return Source("facility", PostgresStore(url), None, single=False)


def open_directories(outs: Iterable[Path], required: bool = True) -> list[Source]:
    """A source per station directory (its audit.sqlite, through the SQLite store)."""
    from phonewipe.erase.store.sqlite import SqliteStore
    sources: list[Source] = []
    for out in outs:
        log = Path(out) if Path(out).suffix == ".sqlite" else Path(out) / "audit.sqlite"
        if not log.is_file():
            raise UsageError(f"no audit log at {log}",
                             "give the --out directory of a station or an erase run (it holds "
                             "audit.sqlite)")
        sources.append(Source("", SqliteStore(log), log.parent))
    names = Counter(_wanted_key(s) for s in sources)
    used: Counter[str] = Counter()
    for s in sources:
        name = _wanted_key(s)
        used[name] += 1
        s.key = name if names[name] == 1 else f"{name}-{used[name]}"
    if not sources and required:
        raise UsageError("no station to show", "give at least one --out DIR (a station directory), "
                         "or set [store] url to the facility's database")
    return sources


def _wanted_key(source: Source) -> str:
    """A directory store's station name when it was given one, else the directory's name."""
    name = str(getattr(source.reader, "station", "") or "")
    if name and name != "local":
        return name
    return source.directory.resolve().name if source.directory else "station"


def job_view(source: Source, job: JobInfo) -> dict[str, Any]:
    return {"station": source.station(job.station), "source": source.key, "job_id": job.job_id,
            "batch_id": job.batch_id, "serial": job.serial, "model": job.model,
            "imeis": list(job.imeis), "asset_tag": job.asset_tag, "address": job.address,
            "stage": job.stage, "running": not job.final, "outcome": job.outcome,
            "result": job.result, "reason": job.reason, "started": job.started_at,
            "updated": job.updated_at, "certificate": bool(job.certificate),
            "record_id": job.record_id}


def batch_view(source: Source, batch: BatchInfo) -> dict[str, Any]:
    return {"source": source.key, "batch_id": batch.batch_id,
            "stations": [source.station(s) for s in batch.stations] or [source.key],
            "opened_at": batch.opened_at, "closed_at": batch.closed_at,
            "state": "closed" if batch.closed else "open", "jobs": batch.jobs,
            "running": batch.running, "has_manifest": batch.has_manifest,
            "outcomes": {result_text(k): v for k, v in batch.totals.items()}}


def hit_view(source: Source, hit: RecordHit) -> dict[str, Any]:
    device = hit.record.get("device") or {}
    return {"source": source.key, "station": source.station(hit.station),
            "record_id": hit.record_id, "record_sha256": hit.record_sha256,
            "job_id": hit.job_id, "batch_id": hit.batch_id, "created_at": hit.created_at,
            "outcome": hit.outcome, "result": result_text(hit.outcome),
            "matched_by": list(hit.matched_by), "serial": str(device.get("serial") or ""),
            "imeis": [str(i) for i in device.get("imeis") or ()],
            "model": " ".join(str(device.get(k)) for k in ("manufacturer", "model") if device.get(k)),
            "asset_tag": str(hit.record.get("asset_tag") or ""),
            "reason": str(hit.record.get("reason") or ""),
            "certificate": hit.certificate is not None,
            "second_look": (hit.second_look or {}).get("status") if hit.second_look else None}


def _station_totals(source: Source) -> dict[str, Counter[str]]:
    """Final records per station and result: PASS, FAIL and the rest ("other": NOT ERASED
    and ERASED, NOT VERIFIED) from the hourly buckets; a store of one station whose records
    all belong to batches has each result exactly, from the batches' totals (a facility's
    batch may span stations, an erase run's records belong to none)."""
    totals: dict[str, Counter[str]] = {}
    for b in source.reader.throughput():
        c = totals.setdefault(b.station, Counter())
        c.update({"finished": b.finished, "PASS": b.passed, "FAIL": b.failed, "other": b.other})
    if source.single and len(totals) <= 1:
        exact: Counter[str] = Counter()
        for batch in source.reader.batches():
            for outcome, n in batch.totals.items():
                exact[result_text(outcome)] += n
                exact["finished"] += n
        if sum(c["finished"] for c in totals.values()) == exact["finished"]:
            return {info.station: Counter(exact) for info in source.reader.stations()}
    return totals


class Facility:
    """The stores the dashboard watches; each view merges them."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = {s.key: s for s in sources}
        self.lock = threading.Lock()
        for s in sources:
            s.cursor = self._feed_end(s)

    def close(self) -> None:
        for s in self.sources.values():
            s.reader.close()

    @staticmethod
    def _feed_end(source: Source, start: int = 0) -> int:
        return max(start, source.reader.feed_end())

    # -- live ------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        stations = []
        for s in self.sources.values():
            totals = _station_totals(s)
            for info in s.reader.stations():
                c = totals.get(info.station, Counter())
                stations.append({
                    "name": s.station(info.station), "source": s.key,
                    "directory": str(s.directory or ""), "events": info.events,
                    "last_event": info.last_seen, "last_event_name": info.last_event,
                    "open_batches": list(info.open_batches), "running": info.running,
                    "finished": c.pop("finished", 0), "outcomes": {k: v for k, v in c.items() if v}})
        return {"stations": stations, "cursor": self.cursor()}

    def cursor(self) -> dict[str, int]:
        return {key: s.cursor for key, s in self.sources.items()}

    def live_jobs(self, limit: int = LIVE_JOBS) -> list[dict[str, Any]]:
        jobs = [job_view(s, j) for s in self.sources.values() for j in s.reader.jobs(limit=limit)]
        jobs.sort(key=lambda j: (j["updated"], j["started"]), reverse=True)
        return jobs[:limit]

    def end(self) -> dict[str, int]:
        """Each source's change feed's end: where a new live view starts."""
        for s in self.sources.values():
            s.cursor = self._feed_end(s, s.cursor)
        return self.cursor()

    def changes(self, since: dict[str, int]) -> Change:
        """The jobs the events after `since` touched, as the live table shows them, and
        the cursor after those events."""
        out, cursor = [], dict(since)
        for s in self.sources.values():
            touched: dict[str, None] = {}  # in the order last touched, newest last
            at = since.get(s.key, 0)
            while page := s.reader.events_after(at, FEED_PAGE):
                at = page[-1].cursor
                for e in page:
                    touched.pop(e.event.job_id, None)
                    touched[e.event.job_id] = None
                if len(page) < FEED_PAGE:
                    break
            cursor[s.key] = at
            s.cursor = max(s.cursor, at)
            for job_id in list(touched)[-LIVE_JOBS * 2:]:
                job = s.reader.job(job_id)
                if job is not None:
                    out.append(job_view(s, job))
        return Change(cursor, out)

    # -- batches ---------------------------------------------------------------------------
    def batches(self) -> list[dict[str, Any]]:
        out = [batch_view(s, b) for s in self.sources.values() for b in s.reader.batches()]
        return sorted(out, key=lambda b: b["opened_at"], reverse=True)

    def batch(self, source_key: str, batch_id: str) -> dict[str, Any] | None:
        s = self.sources.get(source_key)
        info = s.reader.batch(batch_id) if s else None
        if s is None or info is None:
            return None
        view = batch_view(s, info)
        view["reconciliation"] = s.reader.reconciliation(batch_id).to_dict()
        view["job_list"] = [job_view(s, j) for j in s.reader.jobs(batch_id=batch_id, limit=5000)]
        return view

    # -- throughput and failures -----------------------------------------------------------
    def throughput(self, now: datetime | None = None, hours: int = HOURS) -> dict[str, Any]:
        """Final records per hour and station over the last `hours` hours (UTC)."""
        now = now or datetime.now(timezone.utc)
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=hours)
        labels = [(start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:00Z") for h in range(hours)]
        slot = {label: i for i, label in enumerate(labels)}
        counts: dict[str, list[int]] = {}
        since = start.strftime("%Y-%m-%dT%H")
        for s in self.sources.values():
            for info in s.reader.stations():
                counts.setdefault(s.station(info.station), [0] * hours)
            for b in s.reader.throughput(since=since):
                row = counts.setdefault(s.station(b.station), [0] * hours)
                if b.hour in slot:
                    row[slot[b.hour]] += b.finished
        return {"hours": labels, "stations": [{"name": n, "counts": c} for n, c in counts.items()],
                "total": sum(sum(c) for c in counts.values())}

    def failures(self) -> list[dict[str, Any]]:
        """Every result but PASS by reason, merged across the stores; reasons that differ
        only in their numbers (44 of 4603 samples, 12 of 4604) are one group."""
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for s in self.sources.values():
            for f in s.reader.failures():
                key = (f.outcome, _DIGITS.sub("N", f.reason))
                g = groups.setdefault(key, {"outcome": f.outcome, "result": result_text(f.outcome),
                                            "reason": f.reason, "count": 0, "last_at": "",
                                            "stations": set()})
                g["count"] += f.count
                g["stations"].update(s.station(n) for n in f.stations)
                if f.last_at > g["last_at"]:
                    g["last_at"], g["reason"] = f.last_at, f.reason
        out = [{**g, "stations": sorted(g["stations"])} for g in groups.values()]
        return sorted(out, key=lambda f: (-f["count"], f["result"], f["reason"]))

    # -- search ----------------------------------------------------------------------------
    def search(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        hits = [hit_view(s, h) for s in self.sources.values() for h in s.reader.search(query)]
        hits.sort(key=lambda h: h["created_at"], reverse=True)
        return hits[:limit]

    def certificate(self, source_key: str, record_id: str) -> tuple[Source, CertificateRef] | None:
        s = self.sources.get(source_key)
        ref = s.reader.certificate(record_id) if s else None
        return (s, ref) if s is not None and ref is not None else None
