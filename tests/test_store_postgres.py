"""The facility database (erase/store/postgres.py) on a private PostgreSQL cluster: one hash
chain per station with signed checkpoints, stations writing at once, a database that goes
away and comes back (the spool replays exactly once), two stations under one name refused."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from conftest import fingerprint
from pgcluster import Cluster
from store_backends import pg_cluster  # noqa: F401  (the fixture)

from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import AuditRewritten
from phonewipe.erase.errors import AuditBroken, OutputError
from phonewipe.erase.store import schema
from phonewipe.erase.store.postgres import PgStationLog, PostgresStore


@pytest.fixture
def url(pg_cluster: Cluster) -> str:  # noqa: F811
    return pg_cluster.new_database()


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[PostgresStore]:
    made = PostgresStore(url, spool_dir=tmp_path / "spool", retry=0.2, timeout=2)
    yield made
    made.close()


def station_log(store: PostgresStore, name: str, signer: CertificateSigner | None,
                every: int = 10) -> PgStationLog:
    log = store.station_log(name, signer)
    assert isinstance(log, PgStationLog)
    log.every = every
    return log


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_each_station_has_its_own_signed_chain(store: PostgresStore, signer: CertificateSigner) -> None:
    logs = [station_log(store, f"st-{n}", signer) for n in range(3)]

    def write(log: PgStationLog) -> None:
        for i in range(40):
            log.append(f"job-{log.station}-{i % 4}", "SER", "step", {"i": i})
    threads = [threading.Thread(target=write, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
        report = store.verify_station(log.station, trusted=[fingerprint(signer)])
        assert report.rows == 40 and report.uncovered == 0 and len(report.checkpoints) >= 4
    assert {s.station: s.events for s in store.stations()} == {"st-0": 40, "st-1": 40, "st-2": 40}


def test_a_rewritten_row_is_found(store: PostgresStore, url: str, signer: CertificateSigner) -> None:
    log = station_log(store, "st-1", signer)
    for i in range(12):
        log.append("job", "S", "step", {"i": i})
    log.close()
    with psycopg.connect(url) as db:
        db.execute("UPDATE events SET payload = '{\"i\":99}' WHERE station = 'st-1' AND id = 5")
    with pytest.raises(AuditBroken, match="row 5"):
        store.verify_station("st-1")
    with psycopg.connect(url) as db:  # and recomputed from there on: the checkpoint says no
        rows = db.execute("SELECT id, ts, job_id, serial, event, payload FROM events"
                          " WHERE station = 'st-1' ORDER BY id").fetchall()
        from phonewipe.erase.audit import GENESIS, row_hash
        prev = GENESIS
        for r in rows:
            digest = row_hash(prev, dict(zip(("id", "ts", "job_id", "serial", "event", "payload"),
                                             r, strict=True)))
            db.execute("UPDATE events SET prev_hash = %s, hash = %s WHERE station = 'st-1'"
                       " AND id = %s", (prev, digest, r[0]))
            prev = digest
    with pytest.raises(AuditRewritten):
        store.verify_station("st-1")


def test_the_database_goes_away_and_the_spool_replays_once(
        pg_cluster: Cluster, url: str, tmp_path: Path, signer: CertificateSigner) -> None:  # noqa: F811
    store = PostgresStore(url, spool_dir=tmp_path, retry=0.2, timeout=2)
    log = station_log(store, "st-1", signer)
    try:
        for i in range(10):
            log.append("job-a", "S", "step", {"i": i})
        pg_cluster.stop()
        try:
            for i in range(10, 25):
                log.append("job-a", "S", "step", {"i": i})  # not one raises
            assert log.pending() >= 15 and log.head()[0] == 25
            assert [e.id for e in log.events()][-15:] == list(range(11, 26))  # spooled rows read
        finally:
            pg_cluster.start()
        log.append("job-a", "S", "step", {"i": 25})  # within `retry`: may still spool
        for _ in range(50):
            if log.pending() == 0:
                break
            threading.Event().wait(0.1)
            log.append("job-a", "S", "step", {"i": "more"})
        assert log.pending() == 0 and log.replayed >= 15
        log.close()
        total = log.head()[0]
        assert count(url, "SELECT COUNT(*) FROM events WHERE station = 'st-1'") == total
        assert count(url, "SELECT COUNT(DISTINCT id) FROM events WHERE station = 'st-1'") == total
        report = store.verify_station("st-1", trusted=[fingerprint(signer)])
        assert report.rows == total and report.uncovered == 0
    finally:
        store.close()


def test_an_entry_the_database_already_committed_is_not_written_twice(
        store: PostgresStore, url: str) -> None:
    """The commit landed but the station died before it noted so: its journal still has the
    entry as unsent. The next run replays it, finds it by its key and skips it."""
    log = station_log(store, "st-1", None)
    log.append("job", "S", "queued", {})
    log.spool._upto["st-1"] = 0  # the note that never reached the disk
    log.spool.close()
    again = station_log(store, "st-1", None)
    assert again.pending() == 0 and again.head() == log.head()
    again.append("job", "S", "record", {})
    again.close()
    assert count(url, "SELECT COUNT(*) FROM events") == 2
    store.verify_station("st-1", require_checkpoint=False)


def test_a_new_station_directory_learns_its_chain(store: PostgresStore, tmp_path: Path,
                                                  signer: CertificateSigner) -> None:
    log = station_log(store, "st-1", signer)
    for i in range(7):
        log.append("job", "S", "step", {"i": i})
    log.close()
    elsewhere = PostgresStore(store.url, spool_dir=tmp_path / "new", retry=0.2, timeout=2)
    try:
        again = station_log(elsewhere, "st-1", signer)
        assert again.head() == log.head() and len(again.events()) == 7
        again.append("job", "S", "step", {"i": 7})
        assert again.verify([fingerprint(signer)]).rows == 8
        again.close()
        assert store.verify_station("st-1", trusted=[fingerprint(signer)]).rows == 8
    finally:
        elsewhere.close()


def test_two_stations_under_one_name_are_refused(store: PostgresStore, tmp_path: Path) -> None:
    first = station_log(store, "bench-1", None)
    other = PostgresStore(store.url, spool_dir=tmp_path / "other", retry=0.2, timeout=2)
    try:
        second = station_log(other, "bench-1", None)
        first.append("job", "S", "queued", {})
        with pytest.raises(AuditBroken, match="at row 1, but this station continues row 0"):
            second.append("job2", "T", "queued", {})
    finally:
        other.close()


def test_an_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot reach the facility database"):
        PostgresStore("postgresql://nobody:secret@127.0.0.1:1/none", spool_dir=tmp_path, timeout=1)
    try:
        PostgresStore("postgresql://nobody:secret@127.0.0.1:1/none", spool_dir=tmp_path, timeout=1)
    except OutputError as exc:
        assert "secret" not in exc.line()


def test_migrations_down_and_up(store: PostgresStore, url: str) -> None:
    log = station_log(store, "st-1", None)
    log.append("job", "S", "queued", {"batch_id": "B"})
    assert store.version() == schema.LATEST
    assert store.migrate(1) == schema.LATEST
    assert count(url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'store_keys'") == 0
    assert count(url, "SELECT COUNT(*) FROM events") == 1  # version 1 keeps the events
    store.migrate(0)
    assert count(url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'") == 0
    store.migrate(schema.LATEST)
    assert store.version() == schema.LATEST and store.stations() == []
