"""`phonewipe station` as an operator runs it: emulated handsets of mixed profiles on a
private adb server, the live table under tmux, kill -9 and resume, Ctrl-C, timeouts, and
`phonewipe report` rebuilding the batch outputs from the audit log."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import IO, Iterator

import clirun
import pytest
from conftest import require_binary

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.station.ledger import read_ledger

PHONEWIPE = clirun.PHONEWIPE  # what the subprocess helpers start
ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ASSETS = ROOT / "fixtures" / "manifests" / "sample-batch.csv"
MIX = {"rooted": 7, "unrooted": 6, "frp-locked": 3, "lying-1pct": 3, "unplug-40": 3, "slow": 3,
       "partial-50": 2, "mdm-owned": 2, "unauthorized": 2, "screen-locked": 1}


def phonewipe(*args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "200", **(env or {})}, cwd=ROOT, timeout=timeout)


def slow_profile(tmp: Path, name: str, mib_s: float, expect: str) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(f'extends = "rooted"\ndescription = "rooted, {mib_s} MiB/s"\nexpect = "{expect}"\n'
                    f'[device]\nserial_prefix = "PW{name[:4].upper()}"\n[faults]\nslow_mib_s = {mib_s}\n')
    return str(path)


def only_batch(out: Path) -> Path:
    [batch] = (out / "batches").iterdir()
    return batch


def events(out: Path) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(out / "audit.sqlite") as db:
        return [(j, e, json.loads(p)) for j, e, p in
                db.execute("SELECT job_id, event, payload FROM events ORDER BY id")]


def assert_one_final_record_per_device(out: Path, devices: int) -> None:
    batch_id = only_batch(out).name
    with AuditLog(out / "audit.sqlite") as audit:
        ledger = read_ledger(audit, batch_id)
    finals = Counter(j.device_key for j in ledger.jobs.values() if j.final)
    assert len(finals) == devices and set(finals.values()) == {1}, finals
    assert ledger.unfinished() == []
    certified = Counter(p["record_sha256"] for _, e, p in events(out) if e == "certified")
    assert len(certified) == devices and set(certified.values()) == {1}  # nothing certified twice
    assert len(list((only_batch(out) / "certificates").glob("*.pdf"))) == devices
    result = phonewipe("audit", "verify", str(out / "audit.sqlite"))
    assert result.returncode == 0, result.stderr


def read_until(stream: IO[str], wanted, timeout: float = 60) -> list[dict]:
    """JSON lines from the station until `wanted(seen)` holds."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if wanted(seen):
            return seen
    raise AssertionError(f"station never reached the wanted state; last events: {seen[-5:]}")


# -- 32 handsets at once, watched through tmux ------------------------------------------------
@pytest.fixture(scope="module")
def batch32(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    require_binary("adb")
    tmux = require_binary("tmux")
    tmp = tmp_path_factory.mktemp("station32")
    out, rc_file = tmp / "out", tmp / "rc"
    socket_name = f"pw-{os.getpid()}"
    config = tmp / "phonewipe.toml"
    config.write_text('[operator]\nname = "Station Tester"\norganization = "Test Org"\n'
                      '[station]\nsecond_look = 0.5\nsecond_look_by = "Second Looker"\n')
    specs = [arg for name, n in MIX.items() for arg in ("--emulate", f"{name}:{n}")]
    command = " ".join([
        f"HOME={tmp}", "COLUMNS=200", "LINES=60", *PHONEWIPE, "--config", str(config), "station",
        "--out", str(out), *specs, "--userdata-mib", "4",
        "--exit-when-idle", "--idle-seconds", "2", "--assets", str(SAMPLE_ASSETS),
        f"; echo $? > {rc_file}; sleep 120"])
    subprocess.run([tmux, "-L", socket_name, "new-session", "-d", "-s", "station", "-x", "200",
                    "-y", "60", f"cd {ROOT} && {command}"], check=True)
    screens: list[str] = []

    def capture() -> None:
        screens.append(subprocess.run([tmux, "-L", socket_name, "capture-pane", "-p", "-t", "station"],
                                      capture_output=True, text=True).stdout)
    try:
        deadline = time.monotonic() + 150
        while not rc_file.exists() and time.monotonic() < deadline:
            capture()
            time.sleep(0.5)
        time.sleep(0.3)
        capture()
        # the last frame lists every phone and may scroll: read it with the scrollback
        screens.append(subprocess.run([tmux, "-L", socket_name, "capture-pane", "-p", "-S", "-300",
                                       "-t", "station"], capture_output=True, text=True).stdout)
    finally:
        subprocess.run([tmux, "-L", socket_name, "kill-server"], capture_output=True)
    assert rc_file.exists(), "the station did not finish in time:\n" + (screens[-1] if screens else "")
    assert rc_file.read_text().strip() == "0", screens[-1]
    yield out, screens


def test_32_mixed_handsets_each_end_as_their_profile_says(batch32: tuple[Path, list[str]]) -> None:
    out, _ = batch32
    records = json.loads((only_batch(out) / "records.json").read_text())
    assert len(records) == 32
    expected = Counter({load_profile(name).expect: 0 for name in MIX})
    for name, n in MIX.items():
        expected[load_profile(name).expect] += n
    assert Counter(r["outcome"] for r in records) == expected
    for r in records:  # phones that say who they are: their own profile's outcome
        serial = r["device"]["serial"]
        if serial:
            profile = next(n for n in MIX if load_profile(n).serial(0)[:-4] == serial[:-4])
            assert r["outcome"] == load_profile(profile).expect, (serial, r["reason"])
    assert_one_final_record_per_device(out, 32)


def test_live_table_stays_responsive_while_32_phones_run(batch32: tuple[Path, list[str]]) -> None:
    _, screens = batch32
    busy = [s for s in screens if re.search(r"32 devices, [1-9]\d* running", s)]
    assert len(busy) >= 4, screens[-1]
    clocks = {m.group(0) for s in busy for m in [re.search(r"\d\d:\d\d:\d\d", s)] if m}
    assert len(clocks) >= 3  # the table kept redrawing while every phone was busy
    # progress bars; throughput needs a few seconds of progress, more than a 4 MiB phone takes
    # (tests/test_output.py measures it)
    assert any("━" in s and "speed / ETA" in s for s in busy)
    final = screens[-1]
    assert "32 devices, 0 running" in final
    for word in ("PASS", "FAIL", "NOT ERASED", "PWROOT0006", "PWUNRT0005", "port", "ETA"):
        assert word in final, word


def test_batch_outputs_reconcile_and_report_rebuilds_them(batch32: tuple[Path, list[str]]) -> None:
    out, _ = batch32
    batch = only_batch(out)
    summary = json.loads((batch / "summary.json").read_text())
    rec = summary["reconciliation"]
    assert [a["asset_tag"] for a in rec["expected_never_seen"]] == ["IT-0005"]
    assert any("PWROOT0000 is listed 2 times" in d for d in rec["duplicates"])
    assert len(rec["seen_not_expected"]) == 28  # 32 seen, 4 distinct listed serials
    assert summary["operator"]["name"] == "Station Tester"
    picks = summary["second_look"]  # half of the 16 PASSes, by the person the config names;
    # the fill-and-reset phones cannot be re-read and pass their pick on to the next PASS
    assert len(picks) + summary["second_look_owed"] == 8, summary
    assert all(s["by"] == "Second Looker" and s["status"] == "passed" for s in picks), picks
    assert all(p["serial"].startswith("PWUNRT") for p in summary["second_look_passed_on"])
    before = json.loads((batch / "records.json").read_text())
    for name in ("summary.pdf", "records.csv", "records.json", "summary.json"):
        (batch / name).unlink()
    result = phonewipe("report", batch.name, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "expected but never seen: 1" in result.stdout.replace("expected never seen",
                                                                 "expected but never seen") \
        or "expected never seen: 1" in result.stdout
    assert json.loads((batch / "records.json").read_text()) == before
    pdfsig = require_binary("pdfsig")
    sig = subprocess.run([pdfsig, str(batch / "summary.pdf")], capture_output=True, text=True).stdout
    assert "Signature Validation: Signature is Valid." in sig
    text = subprocess.run([require_binary("pdftotext"), "-layout", str(batch / "summary.pdf"), "-"],
                          capture_output=True, text=True).stdout
    for needle in ("Batch Sanitization Summary", "Expected but never seen (1)", "IT-0005",
                   "PWGONE0042", "Duplicates", "PWUNPL0002", "Station Tester"):
        assert needle in text, needle
    cert = next((batch / "certificates").glob("PWROOT0000-*.pdf"))
    shown = json.loads(phonewipe("cert", "show", "--json", str(cert)).stdout)
    assert shown["batch_id"] == batch.name and shown["asset_tag"] == "IT-0001"
    shown["verification"]["plan"].pop("pattern_key")  # the certificate keeps it, exports do not
    assert shown in before


def test_report_of_an_unknown_batch_is_one_line(batch32: tuple[Path, list[str]]) -> None:
    out, _ = batch32
    result = phonewipe("report", "NO-SUCH-BATCH", "--out", str(out))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "NO-SUCH-BATCH" in lines[0] and "Traceback" not in result.stderr


# -- kill -9 in the middle of a batch, then restart ---------------------------------------------
def test_kill_9_mid_batch_then_restart_redoes_the_interrupted_erase(tmp_path: Path) -> None:
    adb = require_binary("adb")
    from phonewipe.demo import free_port
    port = str(free_port())
    env = {"HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    crawl = slow_profile(tmp_path, "crawl", 1.0, "ERASED_VERIFIED")
    emulate = subprocess.Popen([*PHONEWIPE, "--adb-port", port, "emulate", "rooted", "rooted",
                                "unrooted", "frp-locked", crawl, crawl, "--json", "--userdata-mib", "4",
                                "--workdir", str(tmp_path / "handsets")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, **env})
    out, keys = tmp_path / "out", tmp_path / "keys"
    assert phonewipe("keys", "init", "--dir", str(keys), "--organization", "Test Org").returncode == 0
    station = [*PHONEWIPE, "--adb-port", port, "station", "--out", str(out), "--json-lines",
               "--keys", str(keys), "--operator", "Test Operator", "--organization", "Test Org",
               "--exit-when-idle", "--idle-seconds", "2"]
    try:
        for _ in range(6):
            assert emulate.stdout.readline(), emulate.stderr.read()
        first = subprocess.Popen(station, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=ROOT, env={**os.environ, **env})
        crawling = lambda seen: ({e["serial"] for e in seen if e["event"] == "erasing"}  # noqa: E731
                                 >= {"PWCRAW0000", "PWCRAW0001"}
                                 and any(e["event"] == "record" for e in seen))
        read_until(first.stdout, crawling)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        interrupted = {j for j, e, _ in events(out) if e == "erasing"} - \
            {j for j, e, _ in events(out) if e == "record"}
        assert len(interrupted) >= 2
        second = subprocess.run(station, capture_output=True, text=True, timeout=90, cwd=ROOT,
                                env={**os.environ, **env})
        assert second.returncode == 11, second.stderr  # the batch's frp-locked phone (README)
        log = events(out)
        marked = {j for j, e, _ in log if e == "interrupted"}
        assert interrupted <= marked  # the audit shows the interrupted jobs...
        redone = {p["redo_of"]: j for j, e, p in log if e == "queued" and p.get("redo_of")}
        assert interrupted <= set(redone)  # ... and their redo, which ended in a real record
        outcomes = {j: p["outcome"] for j, e, p in log if e == "record"}
        assert all(outcomes[redone[j]] == "ERASED_VERIFIED" for j in interrupted), \
            [(p["outcome"], p.get("reason")) for j, e, p in log if e == "record" and j in redone.values()]
        assert_one_final_record_per_device(out, 6)
    finally:
        emulate.send_signal(signal.SIGTERM)
        try:
            emulate.wait(15)
        except subprocess.TimeoutExpired:
            emulate.kill()
        subprocess.run([adb, "-P", port, "kill-server"], capture_output=True, timeout=15,
                       env={**os.environ, **env})


# -- Ctrl-C twice aborts and records which; the restart redoes it, under a timeout ---------------
def test_ctrl_c_aborts_cleanly_and_a_restart_redoes_it_within_the_timeout(tmp_path: Path) -> None:
    require_binary("adb")
    crawl = slow_profile(tmp_path, "drag", 0.5, "FAILED")  # FAILED: the restart's timeout ends it
    out = tmp_path / "out"
    base = [*PHONEWIPE, "station", "--out", str(out), "--emulate", "rooted", "--emulate", crawl,
            "--userdata-mib", "4", "--json-lines", "--exit-when-idle", "--idle-seconds", "1"]
    env = {**os.environ, "HOME": str(tmp_path)}
    first = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)
    try:
        read_until(first.stdout, lambda seen: any(e["event"] == "erasing" and e["serial"] == "PWDRAG0000"
                                                  for e in seen))
        first.send_signal(signal.SIGINT)
        read_until(first.stdout, lambda seen: seen[-1]["event"] == "draining")
        first.send_signal(signal.SIGINT)
        rest = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 130, rest
    assert "aborted" in rest[1] and "PWDRAG0000" in rest[1]
    log = events(out)
    aborted = {j: p for j, e, p in log if e == "aborted"}
    [stopped] = [p for _, e, p in log if e == "station-stopped"]
    assert set(stopped["aborted"]) == set(aborted)  # the audit says which jobs were aborted
    [aborted_job] = [j for j, e, p in log if e == "queued" and j in aborted
                     and "PWDRAG" in str(p)] or [j for j, e, p in log if e == "identified"
                                                 and j in aborted and p["identity"]["serial"] == "PWDRAG0000"]
    assert aborted[aborted_job]["stage"] == "erasing"
    assert not [j for j, e, _ in log if e == "record" and j in aborted]

    second = subprocess.run([*base, "--timeout", "3"], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env=env)
    assert second.returncode == 0, second.stderr
    log = events(out)
    [redo] = [j for j, e, p in log if e == "queued" and p.get("redo_of") == aborted_job]
    [record] = [p for j, e, p in log if e == "record" and j == redo]
    assert record["outcome"] == "FAILED" and "timeout" in record["reason"]
    assert_one_final_record_per_device(out, 2)


def test_a_bad_asset_list_stops_the_station_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "assets.csv"
    bad.write_text("asset_tag,owner\nA-1,x\n")
    result = phonewipe("station", "--out", str(tmp_path / "out"), "--assets", str(bad))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "serial or IMEI" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "audit.sqlite").exists()  # nothing started


def test_plugin_options_given_to_an_emulated_station_are_named_as_unused(tmp_path: Path) -> None:
    """The emulated bench's private servers never take the operator's plugin options: one of
    them (--block-allow-internal) would put a real disk on the bench. So the station says so
    instead of ignoring them silently."""
    result = phonewipe("--block-imei", "356938035643809", "--allow-internal", "/dev/null",
                       "station", "--out", str(tmp_path / "out"), "--emulate", "virtual",
                       "--exit-when-idle", "--idle-seconds", "1", "--json-lines")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "--block-allow-internal" in warning and "--block-imei" in warning, warning
    ports = {json.loads(line).get("port") for line in result.stdout.splitlines()} - {None}
    assert ports == {"virtual:1"}, ports  # the virtual phone only: no disk joined the bench
