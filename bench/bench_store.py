"""Audit events per second: one station on SQLite (today's audit.sqlite through `AuditLog`)
and 8 stations at once on one PostgreSQL (each its own process, `PgStationLog`: journal in
its directory, then one transaction with the projections), side by side in one run. One
station on PostgreSQL is shown too, for the cost of the database per station.

Both are durable: SQLite WAL with synchronous=FULL (as AuditLog opens it), the journal the
same, and the PostgreSQL cluster (Debian's server, a private cluster in a temporary
directory) with fsync and synchronous commits on. Events are a job's, in a job's order and
sizes (queued, identified, progress, ..., the record with its evidence, certified).
BENCH_STORE_EVENTS changes the events per station.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the private cluster the store tests use

from pgcluster import Cluster  # noqa: E402

from phonewipe.erase.audit import AuditLog  # noqa: E402
from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record  # noqa: E402

EVENTS = int(os.environ.get("BENCH_STORE_EVENTS", "1200"))
STATIONS = 8


def job_events(n: int, station: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One job's events: (job_id, serial, event, payload)."""
    job, serial = f"{station}-job-{n}", f"PW{station[-1]}{n:06d}"
    record = Record(record_id=f"rec-{station}-{n}", job_id=job, created_at="2026-12-02T10:00:00Z",
                    outcome=Outcome.ERASED_VERIFIED,
                    device=Identity("android", "Google", "Pixel 6a", serial=serial,
                                    imeis=(f"35693803{n:07d}",)),
                    endpoint=Endpoint("adb", "adb", f"127.0.0.1:{5000 + n % 1000}"),
                    operator=Operator("Bench"), destination=Destination("resale"),
                    tool={"name": "phonewipe"}, batch_id="BENCH",
                    evidence={"samples": {"digests": "x" * 6000}})
    payload = {"outcome": record.outcome.value, "record_sha256": record.sha256(),
               "record": record.to_dict()}
    steps: list[tuple[str, dict[str, Any]]] = [
        ("queued", {"batch_id": "BENCH", "endpoint": {"address": "127.0.0.1:5555"}}),
        ("identified", {"identity": {"serial": serial, "model": "Pixel 6a"}}),
        ("preflight", {"findings": ["frp-clear", "mdm-clear"]}),
        ("erasing", {"method": "adb-raw-pattern"}),
        *[("progress", {"done": i * 1 << 20, "total": 4 << 20}) for i in range(1, 4)],
        ("verifying", {"samples": 1024}), ("verified", {"status": "passed"}),
        ("record", payload), ("certified", {"certificate": f"/nonexistent/{serial}.pdf",
                                            "record_sha256": record.sha256()})]
    return [(job, serial, event, p) for event, p in steps]


def workload(station: str, count: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    n = 0
    while len(out) < count:
        out += job_events(n, station)
        n += 1
    return out[:count]


def sqlite_rate(tmp: Path) -> float:
    events = workload("local", EVENTS)
    with AuditLog(tmp / "sqlite" / "audit.sqlite") as log:
        start = time.perf_counter()
        for job, serial, event, payload in events:
            log.append(job, serial, event, payload)
        return len(events) / (time.perf_counter() - start)


def _pg_station(url: str, station: str, directory: str, barrier: Any, out: Any) -> None:
    from phonewipe.erase.store.postgres import PostgresStore
    store = PostgresStore(url, spool_dir=Path(directory), migrate=False, max_size=1)
    log = store.station_log(station)
    events = workload(station, EVENTS)
    barrier.wait()
    start = time.perf_counter()
    for job, serial, event, payload in events:
        log.append(job, serial, event, payload)
    end = time.perf_counter()
    log.close()
    store.close()
    out.put((station, start, end, len(events)))


def pg_rate(url: str, tmp: Path, stations: int) -> tuple[float, float]:
    """(events per second over all stations, the slowest station's events per second)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(stations), ctx.Queue()
    procs = [ctx.Process(target=_pg_station, args=(url, f"st-{stations}-{n}",
                                                   str(tmp / f"pg{stations}-{n}"), barrier, out))
             for n in range(stations)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[3] for r in results)
    span = max(r[2] for r in results) - min(r[1] for r in results)
    slowest = min(r[3] / (r[2] - r[1]) for r in results)
    return total / span, slowest


def main() -> None:
    from phonewipe.erase.store.postgres import PostgresStore
    with tempfile.TemporaryDirectory(prefix="bench-store-") as name:
        tmp = Path(name)
        cluster = Cluster(durable=True)
        try:
            url = cluster.new_database()
            PostgresStore(url).close()  # the schema
            lite = sqlite_rate(tmp)
            one, _ = pg_rate(url, tmp, 1)
            eight, slowest = pg_rate(url, tmp, STATIONS)
        finally:
            cluster.close()
    print(f"audit events per second, {EVENTS} events per station, durable commits, "
          f"{os.cpu_count()} cores")
    print(f"  SQLite, 1 station (AuditLog):            {lite:8.0f} events/s")
    print(f"  PostgreSQL, 1 station (journal + db):    {one:8.0f} events/s")
    print(f"  PostgreSQL, {STATIONS} stations at once:         {eight:8.0f} events/s in all "
          f"(slowest station {slowest:.0f}/s)")
    print(f"  ratio {STATIONS} stations on PostgreSQL / 1 station on SQLite: {eight / lite:.2f}")
    print(f"  ratio 1 station on PostgreSQL / 1 station on SQLite:  {one / lite:.2f}")


if __name__ == "__main__":
    main()
