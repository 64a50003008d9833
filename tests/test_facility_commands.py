"""`phonewipe store verify|migrate|sync` (#16) against a private PostgreSQL cluster: every
station's chain checked from the command line (and a rewritten row named), the schema taken
down and up, and a station's journal sent after the database was away."""
from __future__ import annotations

import subprocess
from pathlib import Path

import clirun
import psycopg
import pytest
from conftest import fingerprint
from pgcluster import Cluster
from store_backends import pg_cluster  # noqa: F401  (the fixture)

from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.config import load_config
from phonewipe.erase.store import schema
from phonewipe.erase.store.open import station_log
from phonewipe.erase.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]


def phonewipe(config: Path, *args: str) -> subprocess.CompletedProcess:
    return clirun.run("--config", str(config), *args, env={"COLUMNS": "80"}, cwd=ROOT, timeout=120)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def facility(pg_cluster: Cluster, tmp_path: Path) -> tuple[str, Path]:  # noqa: F811
    url = pg_cluster.new_database()
    config = tmp_path / "facility.toml"
    config.write_text(f'[station]\nname = "bench-1"\n[store]\nurl = "{url}"\n')
    return url, config


def test_store_verify_checks_every_station(facility: tuple[str, Path], tmp_path: Path,
                                           signer: CertificateSigner) -> None:
    url, config = facility
    store = PostgresStore(url, spool_dir=tmp_path)
    try:
        for name in ("bench-1", "bench-2"):
            log = store.station_log(name, signer)
            for i in range(5):
                log.append("job", "S", "step", {"i": i})
            log.close()
    finally:
        store.close()
    done = phonewipe(config, "store", "verify", "--trust", fingerprint(signer))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("5 rows, hash chain intact" in line for line in lines)
    assert "station bench-1" in lines[0] and "(trusted)" in lines[0]
    with psycopg.connect(url) as db:
        db.execute("UPDATE events SET payload = '{}' WHERE station = 'bench-2' AND id = 3")
    broken = phonewipe(config, "store", "verify", "--station", "bench-2")
    assert broken.returncode == 7 and "row 3" in one_error_line(broken)
    assert phonewipe(config, "store", "verify", "--station", "bench-1").returncode == 0


def test_store_migrate_down_and_up(facility: tuple[str, Path]) -> None:
    url, config = facility
    PostgresStore(url).close()
    down = phonewipe(config, "store", "migrate", "--to", "1")
    assert down.returncode == 0 and f"schema version {schema.LATEST} -> 1" in down.stdout
    up = phonewipe(config, "store", "migrate")
    assert up.returncode == 0 and f"schema version 1 -> {schema.LATEST}" in up.stdout
    wrong = phonewipe(config, "store", "migrate", "--to", str(schema.LATEST + 1))
    assert wrong.returncode == 2 and "does not exist" in one_error_line(wrong)


def test_store_sync_sends_a_journal_after_the_database_was_away(
        facility: tuple[str, Path], pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    url, config = facility
    station = tmp_path / "station"
    told: list[str] = []
    try:
        with station_log(load_config(config), station, None, notify=told.append) as log:
            log.append("job", "S", "queued", {})
            pg_cluster.stop()
            for i in range(3):
                log.append("job", "S", "step", {"i": i})
    finally:  # the database was away when the station stopped: three rows in the journal
        pg_cluster.start()
    [notice] = told
    assert notice.startswith("3 audit row(s) wait in") and "phonewipe store sync" in notice
    with psycopg.connect(url) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
    done = phonewipe(config, "store", "sync", "--out", str(station))
    assert done.returncode == 0, done.stderr
    assert "3 journaled row(s) sent, 0 waiting" in done.stdout
    with psycopg.connect(url) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (4,)
    again = phonewipe(config, "store", "sync", "--out", str(station))
    assert "0 journaled row(s) sent, 0 waiting" in again.stdout


def test_without_a_facility_store_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "plain.toml"
    config.write_text('[station]\nname = "bench-1"\n')
    done = phonewipe(config, "store", "verify")
    assert done.returncode == 2 and "[store] url" in one_error_line(done)
