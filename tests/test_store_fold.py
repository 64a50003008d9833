"""The SQLite store's long catch-up (erase/store/fold.py: events folded in memory, each
chunk's changed rows written at once) makes the same tables, row for row and in the same
row order, as projecting the events one by one (projection.py); on a log with the odd
events a real station rarely writes, in chunks that split jobs and batches, with rows read
back from the tables between chunks, and against a reader that projected first."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_store_read import fill, record, run_job

from phonewipe.erase import audit
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.model import Outcome
from phonewipe.erase.store import sqlite as sqlite_store
from phonewipe.erase.store.fold import Fold
from phonewipe.erase.store.sqlite import SqliteStore

TABLES = ("store_stations", "store_jobs", "store_batches", "store_batch_stations", "store_keys",
          "store_certificates", "store_meta")


def odd_events(log: AuditLog, certs: Path) -> None:
    """Events that take the projections' less travelled ways."""
    log.append("batch:B2", "", "batch-opened", {"batch_id": "B2", "manifest": None})
    log.append("batch:B2", "", "batch-closed", {})
    log.append("batch:B2", "", "batch-opened", {"batch_id": "B2", "manifest": {"assets": []}})
    log.append("batch:B2", "", "batch-resumed", {"batch_id": "B2"})
    log.append("batch:B2", "", "batch-opened", {"batch_id": "B2", "manifest": {"path": "late"}})
    log.append("batch:", "", "batch-closed", {})  # a batch without a name
    for event in ("batch-opened", "batch-closed", "batch-resumed"):  # open again at the end
        log.append("batch:B5", "", event, {"batch_id": "B5"})
    twice = record(5, "PWE5", Outcome.ERASED_VERIFIED, "B2", tag="T-5", imeis=("35 209900 1",))
    run_job(log, twice, certs)
    log.append("job-5", "PWE5", "record", {"record": {**twice.to_dict(), "outcome": "FAILED"}})
    log.append("job-5", "PWE5", "certified", {"certificate": str(certs / "other.pdf")})
    log.append("job-5", "PWE5", "second-look", {"selected": False, "why": "not chosen"})
    log.append("job-5", "PWE5", "second-look", {"selected": True, "found": 0})
    log.append("job-5", "PWE5", "second-look", {"selected": False, "why": "later, not chosen"})
    log.append("job-5", "PWE5", "late-result", {})
    log.append("job-6", "", "certified", {"certificate": str(certs / "early.pdf")})  # no record
    log.append("job-6", "PWF6", "queued", {"batch_id": "", "endpoint": "not a dict"})
    log.append("job-6", "PWF6", "identified", {"identity": ["not", "a", "dict"]})
    log.append("job-6", "PWF6", "record", {"record": {"outcome": "", "device": ["x"],
                                                      "batch_id": "B2", "asset_tag": "T-6"}})
    log.append("job-6", "PWF6", "record", {"record": {"outcome": "BLOCKED", "reason": "FRP",
                                                      "record_id": "rec-6", "batch_id": "B3",
                                                      "device": {"serial": "pwf6", "imeis": []}}})
    log.append("job-6", "PWF6", "certified", {"certificate": str(certs / "missing.pdf")})
    log.append("job-6", "PWF6", "certified", {"certificate": str(certs / "again.pdf")})
    same = record(7, "PWE5", Outcome.FAILED, "B3", tag="T-5", reason="lost")
    run_job(log, same, certs)  # the same serial and asset tag as job-5
    log.append("job-8", "PWH8", "record", {"record": "not a dict"})
    log.append("job-8", "PWH8", "certified", {"certificate": ""})
    log.append("batch:B3", "", "batch-closed", {})
    log.append("batch:B2", "", "batch-closed", {"how": "idle"})


def odd_rows(log: AuditLog) -> None:
    """Payloads no AuditLog writes (not JSON, not an object), as a damaged log holds them."""
    head = log.head()
    for n, (job, event, payload) in enumerate([("job-9", "queued", "not json"),
                                               ("job-9", "record", "[1, 2]"),
                                               ("job-9", "record", '{"record": {"outcome"'),
                                               ("batch:B4", "batch-opened", "{")]):
        log._db.execute("INSERT INTO events (id, ts, job_id, serial, event, payload, prev_hash,"
                        " hash) VALUES (?, ?, ?, 'PWI9', ?, ?, ?, ?)",
                        (head[0] + n + 1, f"2026-12-02T12:00:0{n}.000Z", job, event, payload,
                         head[1], head[1]))
    log._db.commit()


def write_log(path: Path, certs: Path) -> None:
    certs.mkdir(exist_ok=True)
    (certs / "other.pdf").write_bytes(b"%PDF other")
    store = SqliteStore(path, station="st-1", migrate=False)
    fill(store, certs)["log"].close()
    store.close()
    with AuditLog(path) as log:
        odd_events(log, certs)
        log.append("batch:B1", "", "batch-closed", {})
        odd_rows(log)


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT rowid, * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        db.close()


def copy(source: Path, to: Path) -> Path:
    target = sqlite3.connect(to)
    sqlite3.connect(source).backup(target)
    target.close()
    return to


def projected(path: Path, monkeypatch: pytest.MonkeyPatch, one_by_one: int, chunk: int,
              keep: int = 50_000, keep_pdf: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    monkeypatch.setattr(sqlite_store, "_CATCH_UP_ROWS", one_by_one)
    monkeypatch.setattr(sqlite_store, "_FOLD_ROWS", chunk)
    monkeypatch.setattr(sqlite_store, "_FOLD_KEEP", keep)
    store = SqliteStore(path, station="st-1", keep_pdf=keep_pdf)
    try:
        assert store.catch_up() > 0 and store.catch_up() == 0
        assert store._projected(store._db) == store.feed_end()
    finally:
        store.close()
    return tables(path)


@pytest.fixture(name="log")
def log_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite"
    write_log(path, tmp_path / "certs")
    return path


@pytest.mark.parametrize("chunk,keep", [(10_000, 50_000), (4, 50_000), (7, 1), (1, 1)])
@pytest.mark.parametrize("keep_pdf", [False, True])
def test_folding_makes_the_rows_projecting_makes(log: Path, tmp_path: Path, chunk: int,
                                                 keep: int, keep_pdf: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    one = projected(copy(log, tmp_path / "one.sqlite"), monkeypatch, 10**9, 10**9,
                    keep_pdf=keep_pdf)
    folded = projected(copy(log, tmp_path / "fold.sqlite"), monkeypatch, 0, chunk, keep, keep_pdf)
    assert folded == one
    jobs = {r[1]: r for r in one["store_jobs"]}
    assert len(jobs) == 9 and len(one["store_batches"]) == 6 and len(one["store_certificates"]) == 5
    assert any(r[-1] is not None for r in one["store_certificates"]) is keep_pdf


def test_folding_on_tables_a_reader_already_filled(log: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Events after a catch-up are folded into the rows that one wrote (jobs, batches and
    their stations read back from the tables), as one by one; a batch another station
    still works on (a row this file's own events never make) stays open."""
    paths = [copy(log, tmp_path / f"{name}.sqlite") for name in ("one", "fold")]
    monkeypatch.setattr(audit, "now_iso", lambda: "2026-12-02T13:00:00.000Z")  # the same events
    for path, one_by_one in zip(paths, (10**9, 0), strict=True):
        projected(path, monkeypatch, one_by_one, 5, keep=1)
        db = sqlite3.connect(path)
        db.execute("INSERT INTO store_batch_stations VALUES ('B2', 'st-2', '')")
        db.commit()
        db.close()
        with AuditLog(path) as more:
            more.append("batch:B2", "", "batch-resumed", {"batch_id": "B2"})
            more.append("job-4", "PWD4", "verifying", {})
            run_job(more, record(4, "PWD4", Outcome.ERASED_VERIFIED, "B1", tag="IT-4"))
            more.append("job-6", "PWF6", "second-look", {"found": 1})
            more.append("batch:B2", "", "batch-closed", {})
        projected(path, monkeypatch, one_by_one, 3, keep=1)
    assert tables(paths[1]) == tables(paths[0])
    assert [r[3] for r in tables(paths[0])["store_batches"] if r[1] == "B2"] == [""]


def test_a_fold_that_lost_the_race_writes_nothing(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two readers of one file: the one whose fold was read before the other projected
    writes nothing (a job's stage would go back, its station's row count too)."""
    monkeypatch.setattr(sqlite_store, "_CATCH_UP_ROWS", 0)
    first, second = SqliteStore(log, station="st-1"), SqliteStore(log, station="st-1")
    read = sqlite_store._new_events(second._db, 0)
    assert first.catch_up() == len(read) == first.feed_end()
    before = tables(log)
    assert second._fold(Fold("st-1"), 0, read) == 0
    assert tables(log) == before and second.catch_up() == 0
    first.close()
    second.close()
