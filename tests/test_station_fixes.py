"""Station regressions: a reused USB port, a phone hung while being identified, a forced
record certified once, drain past a recorded hung job, kill -9 before `identified`, closed
batches and changed asset lists, bad asset CSVs, [station] timeout, batch ids."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytest
import test_station_core as core
from click.testing import CliRunner
from test_station_core import BenchPlugin, phone, run_station

from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.config import load_config
from phonewipe.erase.errors import ConfigError, UsageError
from phonewipe.erase.station.ledger import read_ledger
from phonewipe.erase.station.manifest import load_manifest
from phonewipe.station_commands import check_batch_id

signer = core.signer  # test_station_core's signing fixture, used here too


def wait_for(pred: Callable[[], bool], seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def records(tmp: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return [json.loads(p) | {"job": j} for j, p in
                db.execute("SELECT job_id, payload FROM events WHERE event='record' ORDER BY id")]


def events(tmp: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return [(j, json.loads(p)) for j, p in
                db.execute("SELECT job_id, payload FROM events WHERE event=? ORDER BY id", (name,))]


def start(station: Any) -> tuple[threading.Thread, list[str]]:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(station.run()), daemon=True)
    thread.start()
    return thread, result


# -- 1: a new phone in a reused port -------------------------------------------------------------
def finished(station: Any, serial: str) -> bool:
    """Whether the station has a final row for `serial` that no job is busy with."""
    return any(r.serial == serial and r.final and not r.busy for r in station.rows.values())


def test_a_new_phone_in_a_finished_phones_port_is_erased_and_the_same_phone_is_not(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    a, b = phone(tmp_path, "PORTA001"), phone(tmp_path, "PORTB001")
    station = run_station(tmp_path, plugin, signer)
    station.options.exit_when_idle = False
    thread, result = start(station)
    for serial, handset in (("PORTA001", a), ("PORTB001", b), ("PORTA001", a)):
        with plugin.lock:
            plugin.plugged["usb:1-1"] = ("fastboot", handset)
        assert wait_for(partial(finished, station, serial))
        assert wait_for(lambda: not station.active())
        with plugin.lock:
            del plugin.plugged["usb:1-1"]
        assert wait_for(lambda: all(not r.present for r in station.rows.values()))
    station.interrupt()
    thread.join(20)
    assert result == ["drained"]
    assert (a.erases, b.erases) == (1, 1)
    assert sorted(r["record"]["device"]["serial"] for r in records(tmp_path)) == ["PORTA001", "PORTB001"]


def test_after_a_restart_a_new_phone_in_a_finished_phones_port_is_erased(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1-1": ("fastboot", phone(tmp_path, "PORTA001"))}
    station = run_station(tmp_path, plugin, signer)
    station.close_batch = lambda: None  # type: ignore[method-assign]  # dies before closing
    assert station.run() == "idle"
    plugin = BenchPlugin()
    b = phone(tmp_path, "PORTB001")
    plugin.plugged = {"usb:1-1": ("fastboot", b)}  # the restart restores A's row on usb:1-1
    station = run_station(tmp_path, plugin, signer)
    assert station.run() == "idle"
    assert b.erases == 1
    assert sorted(r["record"]["device"]["serial"] for r in records(tmp_path)) == ["PORTA001", "PORTB001"]


# -- 2 and 3: hung phones -------------------------------------------------------------------------
class HangInIdentify(core.PhoneSession):
    def identify(self) -> Any:
        if self.phone.hang is not None:
            self.phone.hang.wait(30)
        return super().identify()

    def erase(self, *args: Any) -> Any:
        self.phone.hang = None
        return super().erase(*args)


def test_a_phone_hung_while_being_identified_gets_one_failed_record_at_its_deadline(
        tmp_path: Path, signer: CertificateSigner) -> None:
    release = threading.Event()
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "PROBE001", release)),
                      "usb:2": ("test", phone(tmp_path, "GOOD0002"))}
    plugin.open = lambda ep: HangInIdentify(plugin.plugged[ep.address][1], ep)  # type: ignore
    station = run_station(tmp_path, plugin, signer, timeout=1.0, grace=0.3)
    try:
        thread, result = start(station)
        thread.join(20)
        assert result == ["idle"]
    finally:
        release.set()
    outcomes = sorted((r.port, r.outcome) for r in station.rows.values())
    assert outcomes == [("usb:1", "FAILED"), ("usb:2", "ERASED_VERIFIED")]
    hung = next(r for r in station.rows.values() if r.port == "usb:1")
    assert "during identifying" in hung.reason
    station.workers[hung.key][0].join(20)  # the probe returns: no job follows, nothing more logged
    recs = records(tmp_path)
    assert len(recs) == 2 and len({r["job"] for r in recs}) == 2
    queued = [j for j, _ in events(tmp_path, "queued")]
    assert sorted(queued) == sorted(r["job"] for r in recs)
    assert len(events(tmp_path, "certified")) == 2
    ledger = read_ledger(station.audit, "T1")
    assert all(j.final for j in ledger.jobs.values()) and ledger.closed is not None


def test_a_forced_record_is_certified_once_when_the_hung_job_returns(
        tmp_path: Path, signer: CertificateSigner) -> None:
    release = threading.Event()
    plugin = BenchPlugin()
    hung = phone(tmp_path, "HUNG0001", release)
    plugin.plugged = {"usb:1": ("test", hung)}
    station = run_station(tmp_path, plugin, signer, timeout=1.0, grace=0.3)
    station.options.exit_when_idle = False
    thread, result = start(station)
    try:
        assert wait_for(lambda: len(events(tmp_path, "certified")) == 1)
    finally:
        release.set()
    row = next(iter(station.rows.values()))
    worker = station.workers[row.key][0]
    worker.join(20)
    assert not worker.is_alive()
    station.interrupt()
    thread.join(20)
    assert result == ["drained"]
    assert len(events(tmp_path, "late-result")) == 1
    certified = Counter(j for j, _ in events(tmp_path, "certified"))
    assert list(certified.values()) == [1]
    assert len(list((tmp_path / "certs").glob("*.pdf"))) == 1


# -- 8: a single Ctrl-C does not wait on a job the station already recorded ----------------------
def test_one_ctrl_c_closes_the_batch_past_a_hung_job_already_recorded(
        tmp_path: Path, signer: CertificateSigner) -> None:
    release = threading.Event()
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "HUNG0001", release))}
    station = run_station(tmp_path, plugin, signer, timeout=1.0, grace=0.3)
    station.options.exit_when_idle = False
    thread, result = start(station)
    try:
        assert wait_for(lambda: len(events(tmp_path, "certified")) == 1)
        station.interrupt()
        thread.join(10)
        assert result == ["drained"]
        assert len(events(tmp_path, "batch-closed")) == 1
    finally:
        release.set()


# -- 6: kill -9 between `queued` and `identified` -------------------------------------------------
def test_kill_9_before_identified_redoes_the_phone_by_the_serial_the_probe_knew(
        tmp_path: Path, signer: CertificateSigner) -> None:
    calls = {"n": 0}
    stop = threading.Event()

    class Session(core.PhoneSession):
        def identify(self) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:  # the job's own identify: the station "dies" here
                stop.wait(30)
            return super().identify()

    plugin = BenchPlugin()
    same = phone(tmp_path, "KILL0001")
    plugin.plugged = {"usb:1": ("test", same)}
    plugin.open = lambda ep: Session(plugin.plugged[ep.address][1], ep)  # type: ignore
    first = run_station(tmp_path, plugin, signer)
    try:
        start(first)
        assert wait_for(lambda: len(events(tmp_path, "queued")) == 1)
        with first.final_lock:
            first.sealed = True  # kill -9: nothing more reaches the log from this process
        plugin2 = BenchPlugin()
        plugin2.plugged = {"usb:7": ("test", same)}  # the same phone on another port
        assert run_station(tmp_path, plugin2, signer).run() == "idle"
    finally:
        stop.set()
    recs = records(tmp_path)
    assert [(r["record"]["device"]["serial"], r["outcome"]) for r in recs] == [
        ("KILL0001", "ERASED_VERIFIED")]
    (old, _), (new, payload) = events(tmp_path, "queued")
    assert payload["redo_of"] == old and recs[0]["job"] == new


# -- 7 and 5: closed batches and asset lists on resume --------------------------------------------
def test_a_closed_batch_is_not_reopened(tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "CLOSED01"))}
    assert run_station(tmp_path, plugin, signer).run() == "idle"
    again = run_station(tmp_path, BenchPlugin(), signer)
    with pytest.raises(UsageError) as err:
        again.open()
    assert "already closed" in err.value.line() and "phonewipe report T1" in err.value.line()
    assert len(events(tmp_path, "batch-opened")) == 1 and not events(tmp_path, "batch-resumed")


def test_resuming_with_a_different_asset_list_is_refused(tmp_path: Path, signer: CertificateSigner) -> None:
    (tmp_path / "m1.csv").write_text("asset_tag,serial_or_imei\nT-1,WRONG\n")
    (tmp_path / "m2.csv").write_text("asset_tag,serial_or_imei\nT-1,PHONE-1\n")
    (tmp_path / "m1-copy.csv").write_text("asset_tag,serial_or_imei\nT-1,WRONG\n")
    run_station(tmp_path, BenchPlugin(), signer, manifest=load_manifest(tmp_path / "m1.csv")).open()
    with pytest.raises(UsageError) as err:
        run_station(tmp_path, BenchPlugin(), signer, manifest=load_manifest(tmp_path / "m2.csv")).open()
    assert "m1.csv" in err.value.line() and "new batch" in err.value.line()
    # the same content (or no --assets) resumes
    run_station(tmp_path, BenchPlugin(), signer, manifest=load_manifest(tmp_path / "m1-copy.csv")).open()
    run_station(tmp_path, BenchPlugin(), signer).open()
    assert len(events(tmp_path, "batch-resumed")) == 2


# -- 4: asset CSVs ------------------------------------------------------------------------------
def test_asset_csv_with_an_oversized_field_is_one_config_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("asset_tag,serial_or_imei\nA1,S1\nA2," + "x" * 200_000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert f"{path} line 3" in err.value.line() and "\n" not in err.value.line()


def test_asset_csv_blank_lines_before_header_and_grouped_imeis(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("\ufeff\n\n asset_tag,serial_or_imei\nA1,35-209900-176148-1\nA2,35 209900 176149 9\n"
                    "A3,ab-cd 12\n")
    manifest = load_manifest(path)
    assert [a.line for a in manifest.assets] == [4, 5, 6]
    assert manifest.lookup(None, ("352099001761481",)).asset_tag == "A1"
    assert manifest.lookup("352099001761499").asset_tag == "A2"
    assert manifest.lookup("ABCD12") is None and manifest.lookup("ab-cd12").asset_tag == "A3"


# -- 9 and 10: [station] timeout, batch ids ----------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "0.5", "nan"])
def test_station_timeout_below_one_second_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[station]\ntimeout = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "[station] timeout must be at least 1" in err.value.line()
    path.write_text("[station]\ntimeout = 1\n")
    assert load_config(path).station_timeout == 1


def test_config_error_brackets_survive_the_cli_one_line(tmp_path: Path) -> None:
    from phonewipe.cli import cli
    path = tmp_path / "c.toml"
    path.write_text("[station]\ntimeout = -1\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "station", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "[station] timeout must be at least 1" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["a/b", "a_", "_a", "..", "a b", "", "x" * 101])
def test_batch_ids_that_would_share_a_folder_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_batch_id(bad)


def test_good_batch_ids_pass() -> None:
    for good in ("a", "a_b", "B20240101-120000", "line-3.v2"):
        assert check_batch_id(good) == good
