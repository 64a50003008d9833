"""Many stations, one truth (#16): four `phonewipe station` processes, sixteen emulated
in-process handsets each, one batch spanning them, all writing to one PostgreSQL at once, and
the database restarted while they work. Afterwards: exactly one final record per device,
every job's events in the database once (no row lost, none doubled), every station's chain
and signed checkpoints verify in the database, and rows written while the database was
down reached it from the stations' journals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import Cluster
from store_backends import pg_cluster  # noqa: F401  (the fixture)

from phonewipe.erase.audit import now_iso
from phonewipe.erase.store.postgres import PostgresStore
from phonewipe.erase.store.spool import Spool

STATIONS = 4
HANDSETS = 16
ROOT = Path(__file__).resolve().parents[1]


def rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(sql, args).fetchall()


def wait_for(url: str, sql: str, want: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if int(rows(url, sql)[0][0]) >= want:
                return
        except psycopg.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {sql}")


@pytest.fixture(scope="module")
def facility(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("facility")
    url = pg_cluster.new_database()
    PostgresStore(url).close()  # the schema, before four stations race to make it
    procs = []
    for n in range(1, STATIONS + 1):
        (tmp / f"bench-{n}.toml").write_text(f'extends = "virtual"\n[device]\nserial_prefix = "PWF{n}"\n')
        (tmp / f"c{n}.toml").write_text(f'[station]\nname = "bench-{n}"\n[store]\nurl = "{url}"\n')
        out = open(tmp / f"bench-{n}.out", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "phonewipe", "--config", str(tmp / f"c{n}.toml"), "station",
             "--out", str(tmp / f"bench-{n}"), "--batch", "FAC",
             "--emulate", f"{tmp / f'bench-{n}.toml'}:{HANDSETS}", "--userdata-mib", "1",
             "--exit-when-idle", "--idle-seconds", "2", "--json-lines"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "COLUMNS": "80"}),
            out))
    try:
        # the restart: once final records are arriving, the database goes away for a while
        wait_for(url, "SELECT COUNT(*) FROM events WHERE event = 'record'", 3,
                 time.monotonic() + 240)
        down = now_iso()
        pg_cluster.stop()
        time.sleep(2.5)
        pg_cluster.start()
        up = now_iso()
        codes = [p.wait(timeout=300) for p, _ in procs]
    finally:
        for p, out in procs:
            if p.poll() is None:
                p.kill()
            out.close()
    return {"url": url, "tmp": tmp, "codes": codes, "down": down, "up": up}


def test_every_station_finished(facility: dict[str, Any]) -> None:
    tmp = facility["tmp"]
    for n, code in enumerate(facility["codes"], start=1):
        assert code == 0, (tmp / f"bench-{n}.out").read_text()[-3000:]


def test_exactly_one_final_record_per_device(facility: dict[str, Any]) -> None:
    url = facility["url"]
    finals = rows(url, "SELECT serial, COUNT(*) FROM store_jobs WHERE outcome <> ''"
                       " GROUP BY serial")
    assert len(finals) == STATIONS * HANDSETS
    assert {count for _, count in finals} == {1}
    assert {s[:4] for s, _ in finals} == {f"PWF{n}" for n in range(1, STATIONS + 1)}
    records = rows(url, "SELECT payload::jsonb->'record'->'device'->>'serial', COUNT(*)"
                        " FROM events WHERE event = 'record' GROUP BY 1")
    assert len(records) == STATIONS * HANDSETS and {c for _, c in records} == {1}
    assert rows(url, "SELECT outcome, COUNT(*) FROM store_jobs GROUP BY outcome") == \
        [("ERASED_VERIFIED", STATIONS * HANDSETS)]


def test_no_event_lost_or_doubled(facility: dict[str, Any]) -> None:
    url, tmp = facility["url"], facility["tmp"]
    for n in range(1, STATIONS + 1):
        station = f"bench-{n}"
        journal = Spool(tmp / station / "spool.sqlite")
        try:
            assert journal.count(station) == 0  # nothing left unsent
            mine = [(e.id, e.hash) for e in journal.entries(station, "event")]
            signed = {e.idem for e in journal.entries(station, "checkpoint")}
        finally:
            journal.close()
        held = rows(url, "SELECT id, hash FROM events WHERE station = %s ORDER BY id", (station,))
        assert held == mine  # the same rows, in order, each once
        assert {r[0] for r in rows(url, "SELECT idem FROM checkpoints WHERE station = %s",
                                   (station,))} == signed
        kinds = dict(rows(url, "SELECT event, COUNT(*) FROM events WHERE station = %s"
                               " GROUP BY event", (station,)))
        assert kinds["queued"] == kinds["record"] == kinds["certified"] == HANDSETS
        assert kinds["batch-opened"] == kinds["batch-closed"] == 1


def test_every_chain_verifies_in_the_database(facility: dict[str, Any]) -> None:
    store = PostgresStore(facility["url"])
    try:
        for n in range(1, STATIONS + 1):
            report = store.verify_station(f"bench-{n}")
            assert report.rows > HANDSETS * 10 and report.checkpoints
            assert report.uncovered == 0  # the station's last act is a signed checkpoint
        batch = store.batch("FAC")
        assert batch is not None and batch.closed
        assert batch.stations == tuple(f"bench-{n}" for n in range(1, STATIONS + 1))
        assert batch.totals == {"ERASED_VERIFIED": STATIONS * HANDSETS}
        assert len(store.search("PWF30007")) == 1
        assert all(s.running == 0 and not s.open_batches for s in store.stations())
    finally:
        store.close()


def test_rows_written_while_the_database_was_down_were_replayed(facility: dict[str, Any]) -> None:
    during = rows(facility["url"], "SELECT COUNT(*) FROM events WHERE ts > %s AND ts < %s",
                  (facility["down"], facility["up"]))
    assert during[0][0] > 0


def test_find_searches_the_whole_facility(facility: dict[str, Any]) -> None:
    tmp = facility["tmp"]

    def find(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "phonewipe", "--config", str(tmp / "c1.toml"),
                               "find", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
    found = find("PWF30007", "--json")  # written by bench-3, asked from bench-1's config
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    [record] = result["records"]
    assert record["station"] == "bench-3" and record["result"] == "PASS"
    assert record["certificate"].endswith(".pdf") and record["batch_id"] == "FAC"
    again = json.loads(find("pwf3 0007", "--json").stdout)  # compared as find compares
    assert [r["record_id"] for r in again["records"]] == [record["record_id"]]
    missing = find("PWNOBODY")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


def test_report_rebuilds_a_stations_outputs_and_reconciles_the_facility(
        facility: dict[str, Any]) -> None:
    tmp = facility["tmp"]
    done = subprocess.run([sys.executable, "-m", "phonewipe", "--config", str(tmp / "c2.toml"),
                           "report", "FAC", "--out", str(tmp / "bench-2"), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["device_count"] == HANDSETS  # this station's own outputs
    facility_view = summary["facility"]
    assert facility_view["stations"] == [f"bench-{n}" for n in range(1, STATIONS + 1)]
    assert facility_view["closed"] is True
    assert facility_view["reconciliation_counts"]["erased"] == STATIONS * HANDSETS
    assert facility_view["reconciliation_counts"]["duplicates"] == 0
