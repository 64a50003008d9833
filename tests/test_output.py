"""Output people act on (#18 item 5): at 80 columns and in a pipe nothing essential is cut
(paths, methods, hashes, reasons); progress bars are named by phone; the station table has a
reason column, says what a reset phone is doing, measures throughput from recent progress,
and summarises what does not fit the screen."""
from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console
from test_certificates import blocked_record, erased_record

from phonewipe.erase.model import Outcome
from phonewipe.erase.runner import JobResult
from phonewipe.erase.station.rows import DeviceRow
from phonewipe.erase.station.view import LiveTable

MIB = 1024 * 1024
FRP = ("A Google account (owner.example@gmail.com) is signed in, so Factory Reset Protection "
       "would lock the next owner out: remove the account in Settings > Accounts, then run again.")
LONG_PATH = Path("/srv/refurb/bench-3/2026-12-02/results/certificates/"
                 "R58M12ABCDE0123456789-0b6f0000.pdf")


def words(text: str) -> str:
    """The text with box drawing and line breaks gone: what a reader reads across lines."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩┠┨━─┳┻╇┬┴├┤┼╋┣┫┯┷└┘┌┐╸╺]", " ", text).split())


# -- throughput and ETA from real progress ------------------------------------------------
def test_throughput_is_measured_over_recent_progress_not_the_first_burst() -> None:
    """A 4 MiB/s phone: the host pushes 12 MiB into socket buffers at once, then the phone
    takes 4 MiB/s. The figure (and the ETA from it) is the phone's, not 10-14 MiB/s."""
    t0 = 1000.0
    row = DeviceRow(key="k", port="p", plugin="adb", mode="adb", state="erasing", busy=True,
                    total=80 * MIB, stage_started=t0)
    rates = {}
    for step in range(1, 41):  # observed four times a second, as the live view does
        now = t0 + step * 0.25
        row.done = int(min(12 * MIB, 12 * MIB * (now - t0) / 0.3) + 4 * MIB * max(0.0, now - t0 - 0.3))
        rates[step] = row.rate(now)
    assert 3.8 * MIB < rates[40] < 4.2 * MIB, rates[40] / MIB  # at 10 s
    assert all(r == 0 or r < 4.6 * MIB for r in rates.values()), {k: v / MIB for k, v in rates.items()}
    eta = row.eta(t0 + 10)
    assert eta is not None and abs(eta - (80 * MIB - row.done) / (4 * MIB)) < 1.5
    row.done = 40 * MIB  # half-way: minutes left are not shown as 0:00
    assert row.eta(t0 + 10.1) is None or row.eta(t0 + 10.1) > 5


def test_a_stalled_phone_shows_its_speed_falling() -> None:
    t0 = 50.0
    row = DeviceRow(key="k", port="p", plugin="adb", mode="adb", busy=True, total=100 * MIB,
                    stage_started=t0)
    for step in range(1, 21):
        row.done = 2 * MIB * step
        row.rate(t0 + step * 0.5)
    moving = row.rate(t0 + 10)
    stalled = row.rate(t0 + 16)
    assert moving > 3 * MIB and stalled < moving / 2


# -- the station table ---------------------------------------------------------------------
def station(rows: list[DeviceRow]) -> Any:
    return SimpleNamespace(options=SimpleNamespace(batch_id="B20261202-1"), lock=threading.Lock(),
                           rows={r.key: r for r in rows}, started=time.monotonic(),
                           abort=threading.Event(), draining=False, discovery_errors=[])


def sample_rows() -> list[DeviceRow]:
    erasing = DeviceRow(key="a", port="usb:1-1.4.2.3", plugin="adb", mode="adb",
                        model="samsung SM-S918B", serial="R5CW1234567ABCDEF", imei="356938035643809",
                        state="erasing", busy=True, done=30 * MIB, total=64 * MIB)
    reset = DeviceRow(key="b", port="127.0.0.1:40001", plugin="adb", mode="adb",
                      model="Google Pixel 6a", serial="PWROOT0000", state="done",
                      outcome="ERASED_VERIFIED", result="PASS", reset=True, present=False)
    blocked = DeviceRow(key="c", port="127.0.0.1:40002", plugin="adb", mode="adb",
                        model="Google Pixel 6a", serial="PWFRPL0000", state="done",
                        outcome="BLOCKED", result="NOT ERASED", reason=FRP)
    pulled = DeviceRow(key="d", port="127.0.0.1:40003", plugin="adb", mode="adb",
                       model="Google Pixel 6a", serial="PWUNPL0000", state="done",
                       outcome="FAILED", result="FAIL", reason="the phone disconnected while "
                       "writing; run the erase again", present=False)
    return [erasing, reset, blocked, pulled]


def render(view: LiveTable, width: int, height: int = 200, terminal: bool = True) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None,
                      force_terminal=terminal)
    console.print(view)
    return console.file.getvalue()


def test_station_table_at_80_columns_cuts_nothing_and_has_the_reason() -> None:
    out = render(LiveTable(station(sample_rows())), 80)
    assert "…" not in out and "..." not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "reason" in out
    text = words(out)
    for whole in ("R5CW1234567ABCDEF", "samsung SM-S918B", "NOT ERASED", words(FRP)):
        assert whole in text, (whole, out)


def test_station_table_at_160_columns_gives_each_field_a_column() -> None:
    out = render(LiveTable(station(sample_rows())), 160)
    header = next(line for line in out.splitlines() if "port" in line)
    for column in ("port", "model", "serial / IMEI", "state", "progress", "speed / ETA",
                   "result", "reason"):
        assert column in header, header
    assert "…" not in out and "R5CW1234567ABCDEF" in out and "356938035643809" in out
    assert words(FRP) in words(out)


def test_a_reset_phone_is_shown_as_resetting_not_unplugged() -> None:
    for width in (80, 160):
        out = render(LiveTable(station(sample_rows())), width)
        line = next(line for line in out.splitlines() if "PWROOT0000" in line)
        assert "reset" in line and "unplugged" not in line, line
        pulled = next(line for line in out.splitlines() if "PWUNPL0000" in line)
        assert "unplugged" in pulled, pulled  # a FAIL that left: the cable, as before


def test_a_station_beyond_the_screen_summarises_instead_of_cutting() -> None:
    rows = []
    for i in range(60):
        row = DeviceRow(key=f"k{i}", port=f"127.0.0.1:{41000 + i}", plugin="adb", mode="adb",
                        model="Google Pixel 6a", serial=f"PWROOT{i:04d}")
        if i % 3:
            row.state, row.outcome, row.result = "done", "ERASED_VERIFIED", "PASS"
            row.reason = ""
        else:
            row.state, row.busy, row.done, row.total = "erasing", True, MIB, 8 * MIB
        if i == 1:
            row.outcome, row.result, row.reason = "BLOCKED", "NOT ERASED", FRP
        rows.append(row)
    for width in (80, 160):
        out = render(LiveTable(station(rows)), width, height=40)
        lines = out.splitlines()
        assert len(lines) <= 40, len(lines)
        assert "more not shown" in out and "the final table lists every one" in words(out)
        assert "PWROOT0000" in out  # the oldest running phone stays in view
        final = render(LiveTable(station(rows), fit=False), width, height=40)
        assert all(f"PWROOT{i:04d}" in final for i in range(60))  # the last frame: everyone


def test_a_pipe_gets_every_row() -> None:
    rows = [replace(sample_rows()[2], key=f"k{i}", serial=f"PWFRPL{i:04d}") for i in range(50)]
    out = render(LiveTable(station(rows)), 80, height=25, terminal=False)
    assert all(f"PWFRPL{i:04d}" in out for i in range(50))


# -- erase: results and progress -----------------------------------------------------------
def results() -> list[JobResult]:
    passed = replace(erased_record(), device=replace(erased_record().device,
                                                     serial="R58M12ABCDE0123456789"))
    failed = replace(erased_record(1), outcome=Outcome.FAILED,
                     sanitization=replace(erased_record().sanitization, method="fastboot-unlock-wipe"),
                     reason="verification failed: 45 of 4604 samples do not show keyed-pattern; "
                     "run the erase again")
    return [JobResult(passed, LONG_PATH), JobResult(failed, LONG_PATH.with_name("x-1.pdf")),
            JobResult(blocked_record(), None, "no certificate could be written (No space left "
                      "on device): the phone was not erased, but nothing proves it — erase it "
                      "again")]


def test_erase_results_at_80_columns_and_in_a_pipe_are_whole() -> None:
    from phonewipe.erasing import print_results
    for terminal in (True, False):
        console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=terminal)
        print_results(results(), console)
        out = console.file.getvalue()
        assert "…" not in out
        lines = out.splitlines()
        for r in results():  # copied values: whole, on one line each
            assert any(line.split()[-1:] == [r.record.sha256()] for line in lines), out
            if r.certificate:
                assert any(line.rstrip().endswith(str(r.certificate)) for line in lines), out
            if r.record.sanitization:
                assert any(line.split()[-1:] == [r.record.sanitization.method] for line in lines)
        assert "R58M12ABCDE0123456789" in out
        assert "erase it again" in words(out) and "NOT CERTIFIED" in out
        assert "45 of 4604 samples do not show keyed-pattern; run the erase again" in words(out)


def test_progress_bars_are_named_by_serial_and_model() -> None:
    from phonewipe.erasing import _NamingAudit, _ProgressView
    appended = []
    audit = SimpleNamespace(append=lambda *a: appended.append(a) or len(appended), head="h")
    view = _ProgressView({}, enabled=False)
    log = _NamingAudit(audit, view.names)  # type: ignore[arg-type]
    log.append("0f3c9a2e-job", "PWROOT0000", "identified",
               {"identity": {"serial": "PWROOT0000", "manufacturer": "Google", "model": "Pixel 6a"}})
    assert appended and log.head == "h"  # everything still reaches the real log
    view.update("0f3c9a2e-job", "erasing", 1, 10)
    [task] = view.progress.tasks
    assert task.description.startswith("PWROOT0000 Google Pixel 6a erasing")
    assert "0f3c9a2e" not in task.description


def test_the_demo_prints_its_check_command_whole_and_trusting_its_key(tmp_path: Path) -> None:
    from phonewipe.demo import check_command
    out = tmp_path / "a rather long directory name for the demo output" / "demo-output"
    command = check_command(out)
    assert "--trust" in command and "signing-cert.pem" in command
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(f"  {command}", highlight=False, soft_wrap=True, markup=False)
    assert console.file.getvalue().strip() == command  # one line, as the demo prints it
