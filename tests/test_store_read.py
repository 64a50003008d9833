"""The store's read side (erase/store/base.py) on each backend, from events a station writes:
stations, live jobs, batches with their reconciliation, throughput, failures, search with
the certificate's path and SHA-256, the change feed; and the schema's migrations both ways."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from store_backends import Backend, backend_fixture, backends, pg_cluster  # noqa: F401  (fixtures)

from phonewipe.erase.audit import verify_audit
from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record
from phonewipe.erase.station.manifest import Manifest
from phonewipe.erase.store import schema
from phonewipe.erase.store.base import StationLog, Store
from phonewipe.erase.store.sqlite import SqliteStore

both = pytest.mark.parametrize("backend", backends(), indirect=True)


def record(n: int, serial: str, outcome: Outcome, batch: str, tag: str = "",
           imeis: tuple[str, ...] = (), reason: str = "") -> Record:
    return Record(record_id=f"rec-{n}", job_id=f"job-{n}", created_at=f"2026-12-02T10:0{n}:00.000Z",
                  outcome=outcome, device=Identity("android", "Google", "Pixel", serial=serial,
                                                   imeis=imeis),
                  endpoint=Endpoint("adb", "adb", f"127.0.0.1:{5000 + n}"), operator=Operator("T"),
                  destination=Destination("resale"), tool={}, asset_tag=tag, batch_id=batch,
                  reason=reason)


def run_job(log: StationLog, rec: Record, certs: Path | None = None, finish: bool = True) -> None:
    serial = rec.device.serial or ""
    log.append(rec.job_id, serial, "queued", {"batch_id": rec.batch_id, "asset_tag": rec.asset_tag,
                                              "endpoint": {"address": rec.endpoint.address}})
    log.append(rec.job_id, serial, "identified", {"identity": {
        "serial": serial, "imeis": list(rec.device.imeis), "manufacturer": "Google",
        "model": "Pixel"}})
    log.append(rec.job_id, serial, "erasing", {})
    if not finish:
        return
    log.append(rec.job_id, serial, "record", {"outcome": rec.outcome.value,
                                              "record_sha256": rec.sha256(), "record": rec.to_dict()})
    if certs is not None:
        pdf = certs / f"{serial}.pdf"
        pdf.write_bytes(b"%PDF-1.7 " + serial.encode())
        log.append(rec.job_id, serial, "certified", {"certificate": str(pdf),
                                                     "record_sha256": rec.sha256()})


def fill(store: Store, tmp_path: Path, station: str = "st-1") -> dict[str, Any]:
    log = store.station_log(station)
    manifest = Manifest.from_dict({"path": "assets.csv", "sha256": "0" * 64, "assets": [
        {"asset_tag": "IT-1", "identifier": "PWA1", "owner": "Fin", "line": 2},
        {"asset_tag": "IT-9", "identifier": "PWGONE", "owner": "Fin", "line": 3}]})
    log.append("batch:B1", "", "batch-opened", {"batch_id": "B1", "manifest": manifest.to_dict()})
    ok = record(1, "PWA1", Outcome.ERASED_VERIFIED, "B1", tag="IT-1", imeis=("35-209900-176148-1",))
    bad = record(2, "PWB2", Outcome.FAILED, "B1", reason="verification failed")
    bad2 = record(3, "PWC3", Outcome.FAILED, "B1", reason="verification failed")
    run_job(log, ok, tmp_path)
    run_job(log, bad, tmp_path)
    run_job(log, bad2)
    running = record(4, "PWD4", Outcome.FAILED, "B1")
    run_job(log, running, finish=False)
    return {"log": log, "ok": ok, "bad": bad, "running": running}


@both
def test_stations_jobs_and_batches(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    made = fill(store, tmp_path)
    [st] = store.stations()
    assert st.station == "st-1" and st.running == 1
    assert st.open_batches == ("B1",) and st.last_event == "erasing"
    assert st.head == made["log"].head()[1] and st.events == made["log"].head()[0] == 18
    live = store.live_jobs()
    assert [j.job_id for j in live] == ["job-4"] and live[0].stage == "erasing"
    assert live[0].serial == "PWD4" and live[0].model == "Google Pixel" and not live[0].final
    jobs = {j.job_id: j for j in store.jobs(batch_id="B1")}
    assert jobs["job-1"].result == "PASS" and jobs["job-1"].asset_tag == "IT-1"
    assert jobs["job-1"].imeis == ("35-209900-176148-1",)
    assert jobs["job-2"].outcome == "FAILED" and jobs["job-2"].certificate.endswith("PWB2.pdf")
    [batch] = store.batches()
    assert batch.batch_id == "B1" and not batch.closed and batch.has_manifest
    assert batch.totals == {"ERASED_VERIFIED": 1, "FAILED": 2} and batch.running == 1
    assert batch.jobs == 4 and batch.stations == ("st-1",)
    made["log"].append("batch:B1", "", "batch-closed", {"totals": batch.totals})
    closed = store.batch("B1")
    assert closed is not None and closed.closed and store.batch("nope") is None


@both
def test_reconciliation_throughput_and_failures(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    fill(store, tmp_path)
    rec = store.reconciliation("B1")
    assert rec.counts()["erased"] == 1 and rec.counts()["failed"] == 2
    assert [a["asset_tag"] for a in rec.expected_never_seen] == ["IT-9"]
    assert {e["serial"] for e in rec.seen_not_expected} == {"PWB2", "PWC3"}
    [bucket] = store.throughput()
    assert (bucket.finished, bucket.passed, bucket.failed, bucket.other) == (3, 1, 2, 0)
    assert bucket.hour.endswith(":00Z") and bucket.station == "st-1"
    assert store.throughput(since="2999") == []
    [fail] = store.failures()
    assert (fail.outcome, fail.reason, fail.count) == ("FAILED", "verification failed", 2)


@both
def test_search_returns_the_record_and_its_certificate(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    made = fill(store, tmp_path)
    for query, how in (("PWA1", ("serial",)), ("35 209900 176148 1", ("IMEI",)),
                       ("it-1", ("asset tag",))):
        [hit] = store.search(query)
        assert hit.record_id == "rec-1" and hit.matched_by == how, query
        assert hit.record_sha256 == made["ok"].sha256() and hit.batch_id == "B1"
        assert Record.from_dict(hit.record).sha256() == hit.record_sha256
        cert = hit.certificate
        assert cert is not None and cert.path == str(tmp_path / "PWA1.pdf")
        assert cert.sha256 == hashlib.sha256((tmp_path / "PWA1.pdf").read_bytes()).hexdigest()
    assert store.search("PWD4") == []  # live, not final
    assert store.search("") == [] and store.search("nobody") == []
    [uncertified] = store.search("PWC3")
    assert uncertified.certificate is None
    assert store.certificate("rec-2") is not None and store.certificate_pdf("rec-2") is None


@both
def test_a_job_has_one_record_the_first(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    log = store.station_log("st-1")
    first = record(1, "PWA1", Outcome.FAILED, "B1", reason="first")
    run_job(log, first)
    again = record(1, "PWA1", Outcome.ERASED_VERIFIED, "B1")
    log.append("job-1", "PWA1", "record", {"outcome": "ERASED_VERIFIED", "record": again.to_dict()})
    [job] = store.jobs()
    assert job.outcome == "FAILED" and job.reason == "first"
    assert len(store.search("PWA1")) == 1


@both
def test_change_feed(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path)
    fill(store, tmp_path)
    feed = store.events_after(0, limit=5)
    assert [e.event.id for e in feed] == [1, 2, 3, 4, 5]
    assert feed[0].event.event == "batch-opened" and feed[0].station == "st-1"
    rest = store.events_after(feed[-1].cursor, limit=100)
    assert len(rest) == 13 and rest[0].cursor > feed[-1].cursor


def test_sqlite_store_is_todays_audit_log(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.sqlite", station="st-1")
    fill(store, tmp_path)
    path = tmp_path / "audit.sqlite"
    assert verify_audit(path, require_checkpoint=False).rows == 18
    assert isinstance(store, SqliteStore) and store.version() == schema.LATEST
    assert store.migrate(0) == schema.LATEST and store.version() == 0
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"events", "checkpoints"}
    assert verify_audit(path, require_checkpoint=False).rows == 18
    store.migrate(1)
    assert store.version() == 1
    store.migrate(schema.LATEST)  # projections rebuilt from the events
    assert len(store.search("PWA1")) == 1 and len(store.live_jobs()) == 1


def test_migrations_step_both_ways() -> None:
    up = schema.steps(0, schema.LATEST, "sqlite")
    assert [v for v, _ in up] == list(range(1, schema.LATEST + 1))
    down = schema.steps(schema.LATEST, 0, "postgresql")
    assert [v for v, _ in down] == list(range(schema.LATEST - 1, -1, -1))
    with pytest.raises(ValueError):
        schema.steps(0, schema.LATEST + 1, "sqlite")


@both
def test_the_pdf_itself_when_asked(backend: Backend, tmp_path: Path) -> None:
    store = backend.store(tmp_path, keep_pdf=True)
    fill(store, tmp_path)
    cert = store.certificate("rec-1")
    assert cert is not None and cert.stored
    assert store.certificate_pdf("rec-1") == (tmp_path / "PWA1.pdf").read_bytes()


@both
def test_a_batch_spanning_stations_closes_with_the_last(backend: Backend, tmp_path: Path) -> None:
    if backend.name == "sqlite":
        pytest.skip("one station per audit.sqlite")
    store = backend.store(tmp_path)
    logs = [store.station_log(name) for name in ("st-1", "st-2")]
    for n, log in enumerate(logs, start=1):
        log.append("batch:B", "", "batch-opened", {"batch_id": "B"})
        run_job(log, record(n, f"PW{n}", Outcome.ERASED_VERIFIED, "B"))
    logs[0].append("batch:B", "", "batch-closed", {})
    batch = store.batch("B")
    assert batch is not None and not batch.closed and batch.stations == ("st-1", "st-2")
    assert batch.totals == {"ERASED_VERIFIED": 2}
    assert [s.open_batches for s in store.stations()] == [(), ("B",)]
    logs[1].append("batch:B", "", "batch-closed", {})
    batch = store.batch("B")
    assert batch is not None and batch.closed
