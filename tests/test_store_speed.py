"""The store's read side at a facility's size (issue 16): a job by its id, the change
feed's end, the newest jobs by index, the record's JSON kept only in its event, schema 4
both ways, and the SQLite store catching up in short transactions that read the same as one
long one. Timings are benchmarks (bench/bench_serve.py), not tests."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from store_backends import Backend, backend_fixture, backends, pg_cluster  # noqa: F401  (fixtures)
from test_store_read import fill, record, run_job

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.model import Outcome, Record
from phonewipe.erase.store import sqlite as sqlite_store
from phonewipe.erase.store.postgres import PostgresStore
from phonewipe.erase.store.reading import _JOB_COLUMNS
from phonewipe.erase.store.sqlite import SqliteStore

both = pytest.mark.parametrize("backend", backends(), indirect=True)


@both
def test_a_job_by_its_id(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    fill(store, tmp_path)
    for job in store.jobs():
        assert store.job(job.job_id) == job
    ok = store.job("job-1")
    assert ok is not None and ok.outcome == "ERASED_VERIFIED" and ok.serial == "PWA1"
    running = store.job("job-4")
    assert running is not None and not running.final and running.stage == "erasing"
    assert store.job("no-such-job") is None and store.job("batch:B1") is None


@both
def test_the_change_feeds_end(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    assert store.feed_end() == 0
    made = fill(store, tmp_path)
    everything = store.events_after(0, limit=1000)
    assert store.feed_end() == everything[-1].cursor
    made["log"].append("job-4", "PWD4", "verifying", {})
    assert store.feed_end() > everything[-1].cursor
    assert store.events_after(store.feed_end()) == []


@both
def test_the_record_json_is_read_from_its_event(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    made = fill(store, tmp_path)
    [hit] = store.search("PWA1")
    assert Record.from_dict(hit.record).sha256() == made["ok"].sha256()
    recon = store.reconciliation("B1")
    assert recon.to_dict() and store.batch("B1") is not None
    assert rows(backend, store, "SELECT COUNT(*) FROM store_jobs WHERE record IS NOT NULL") == [(0,)]


def rows(backend: Backend, store: object, sql: str) -> list[tuple[object, ...]]:
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    assert isinstance(store, SqliteStore)
    return [tuple(r) for r in sqlite3.connect(store.path).execute(sql).fetchall()]


def test_postgres_schema_4_both_ways(pg_cluster: object, tmp_path: Path) -> None:  # noqa: F811
    backend = Backend("postgresql", pg_cluster)  # type: ignore[arg-type]
    store = backend.store(tmp_path)
    try:
        made = fill(store, tmp_path)
        assert isinstance(store, PostgresStore)
        assert store.migrate(3) == 4  # an older phonewipe reads store_jobs.record again
        [(text,)] = rows(backend, store, "SELECT record FROM store_jobs WHERE job_id = 'job-1'")
        assert Record.from_dict(json.loads(str(text))).sha256() == made["ok"].sha256()
        assert rows(backend, store, "SELECT COUNT(*) FROM pg_indexes"
                    " WHERE indexname = 'store_jobs_started'") == [(0,)]
        assert store.migrate(4) == 3
        assert rows(backend, store, "SELECT COUNT(*) FROM store_jobs WHERE record IS NOT NULL") \
            == [(0,)]
        assert rows(backend, store, "SELECT COUNT(*) FROM pg_indexes"
                    " WHERE indexname = 'store_jobs_started'") == [(1,)]
        assert Record.from_dict(store.search("PWA1")[0].record).sha256() == made["ok"].sha256()
    finally:
        store.close()


def test_newest_jobs_come_from_the_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.sqlite", station="st-1")
    fill(store, tmp_path)
    plan = " ".join(str(r[-1]) for r in store._db.execute(
        f"EXPLAIN QUERY PLAN SELECT {_JOB_COLUMNS} FROM store_jobs ORDER BY started_at DESC,"
        " job_id LIMIT 200"))
    assert "store_jobs_started" in plan and "TEMP B-TREE" not in plan, plan


def test_catching_up_in_short_transactions_reads_the_same(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A log read in transactions of 3 events (and appended to between reads) projects as
    one read in a single transaction does."""
    monkeypatch.setattr(sqlite_store, "_CATCH_UP_ROWS", 3)
    monkeypatch.setattr(sqlite_store, "_FOLD_ROWS", 3)  # read 3 at a time: one by one, not folded
    short = SqliteStore(tmp_path / "audit.sqlite", station="st-1")
    log = fill(short, tmp_path)["log"]
    assert short.catch_up() == 18  # read once, then more is appended
    log.append("job-4", "PWD4", "verifying", {})
    log.append("batch:B1", "", "batch-resumed", {"batch_id": "B1"})
    run_job(log, record(5, "PWE5", Outcome.ERASED_VERIFIED, "B1", tag="IT-9"), tmp_path)
    log.append("batch:B1", "", "batch-closed", {})
    assert short.catch_up() == 8 and short._projected(short._db) == short.feed_end() == 26
    copy = sqlite3.connect(tmp_path / "whole.sqlite")
    sqlite3.connect(short.path).backup(copy)
    copy.close()
    monkeypatch.setattr(sqlite_store, "_CATCH_UP_ROWS", 500)
    monkeypatch.setattr(sqlite_store, "_FOLD_ROWS", 500)
    whole = SqliteStore(tmp_path / "whole.sqlite", station="st-1")
    whole.migrate(3)
    whole.migrate(4)  # projections emptied, then rebuilt in one transaction
    assert whole.catch_up() == 26

    def same(store: SqliteStore) -> tuple[object, ...]:
        [station] = store.stations()
        [batch] = store.batches()
        return (station.events, station.head, station.last_event, station.first_seen,
                store.jobs(), batch.closed, batch.totals, store.reconciliation("B1").to_dict(),
                [h.record_id for h in store.search("PWE5")], store.failures())
    with AuditLog(short.path) as audit:
        assert same(short)[1] == audit.head()[1]
    assert same(short) == same(whole)
    assert same(short)[5] is True

def test_a_reader_that_lost_the_race_projects_nothing_twice(tmp_path: Path) -> None:
    """Two readers of one file: events one read before the other projected them are not
    folded in again (a job's stage would go back, its station's row count too)."""
    path = tmp_path / "audit.sqlite"
    first = SqliteStore(path, station="st-1")
    fill(first, tmp_path)
    second = SqliteStore(path, station="st-1")
    read = second._db.execute(sqlite_store._NEW_EVENTS, (len("batch:"), "batch:", 0, 10)).fetchall()
    assert first.catch_up() == 18
    assert second._project(0, read) == 0
    assert second.stations()[0].events == 18 and second.catch_up() == 0
    assert [j.job_id for j in second.jobs()] == [j.job_id for j in first.jobs()]
