"""The R2v3 second look as it must happen (#18 item 3): picked at random among the phones
that pass, at least one per batch, re-read through a second reader under a fresh seed
*before* the finish step (the factory reset), by the person named; a phone that cannot be
re-read passes its pick on, a look the phone cannot finish stays pending with its command in
summary.json and summary.pdf, and a look that finds what the first read missed FAILs the
phone (no reset follows). On the virtual bench of tests/test_station_core.py."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
from conftest import require_binary
from test_station_core import BenchPlugin, Phone, PhoneSession, phone  # noqa: F401

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.errors import DeviceCommandFailed
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import EraseMethod, Operator
from phonewipe.erase.plugin import BlockReader, Endpoint, Extent, Session
from phonewipe.erase.second_look import LookPicker, Pick
from phonewipe.erase.station.ledger import read_ledger
from phonewipe.erase.station.station import Station, StationOptions
from phonewipe.protocols.virtual.session import VirtualReader
from phonewipe.reports import build_summary, second_look_details


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys, "Test Org", "test signing")
    return CertificateSigner(keys)


class Bench(BenchPlugin):
    """Phones whose sessions behave as `kind[serial]` says: "fill" (cannot be re-read, like
    adb-fill-reset), "liar" (its second reader finds plaintext the first did not), "flaky"
    (the second reader fails mid-look)."""

    def __init__(self, kinds: dict[str, str] | None = None,
                 delays: dict[str, float] | None = None) -> None:
        super().__init__()
        self.kinds = kinds or {}
        self.delays = delays or {}  # serial -> seconds its erase takes longer: a fixed order
        self.calls: list[tuple[str, str]] = []  # (serial, call) in order

    def open(self, endpoint: Endpoint) -> Session:
        with self.lock:
            p = self.plugged[endpoint.address][1]
        return TracedSession(p, endpoint, self)


class PlaintextReader(VirtualReader):
    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        for (offset, length), data in zip(extents, super().read_many(extents), strict=True):
            yield (b"PWMARK-secret-photo " * (length // 20 + 1))[:length] if offset else data


class BrokenReader(VirtualReader):
    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        raise DeviceCommandFailed("dd: /dev/block/by-name/userdata: I/O error", "check the cable")


class TracedSession(PhoneSession):
    def __init__(self, p: Phone, endpoint: Endpoint, bench: Bench) -> None:
        super().__init__(p, endpoint)
        self.bench, self.kind = bench, bench.kinds.get(p.serial, "")

    def _trace(self, call: str) -> None:
        self.bench.calls.append((self.phone.serial, call))

    def erase(self, method: EraseMethod, context: Any, progress: Any) -> Any:
        time.sleep(self.bench.delays.get(self.phone.serial, 0.0))
        return super().erase(method, context, progress)

    def reader(self) -> BlockReader | None:
        self._trace("reader")
        return super().reader()

    def readback(self) -> BlockReader | None:
        self._trace("readback")
        if self.kind == "liar":
            return PlaintextReader(self)
        if self.kind == "flaky":
            return BrokenReader(self)
        return super().readback()

    def not_recheckable(self, record: Any) -> str | None:
        return "its samples were read from fill files that the factory reset removes" \
            if self.kind == "fill" else None

    def finish(self, method: EraseMethod, progress: Any) -> dict[str, Any]:
        self._trace("finish")
        return {**super().finish(method, progress), "factory_reset": "emulated"}


def station_for(tmp: Path, plugin: Bench, signer: CertificateSigner, share: float,
                batch: str = "T1", by: str = "Second Person") -> Station:
    audit = AuditLog(tmp / "audit.sqlite")
    opts = StationOptions(batch_id=batch, settings=JobSettings(operator=Operator("Tester")),
                          cert_dir=tmp / "certs", poll=0.05, exit_when_idle=True,
                          idle_seconds=0.5, second_look_share=share, second_look_by=by)
    return Station({"bench": plugin}, audit, signer, opts)


def events(tmp: Path, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return [(j, s, json.loads(p)) for j, s, p in db.execute(
            "SELECT job_id, serial, payload FROM events WHERE event=? ORDER BY id", (name,))]


def job_trail(tmp: Path, job_id: str) -> list[str]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return [e for (e,) in db.execute("SELECT event FROM events WHERE job_id=? ORDER BY id",
                                         (job_id,))]


def plug(plugin: Bench, tmp: Path, serials: list[str]) -> None:
    plugin.plugged.update({f"usb:{s}": ("test", phone(tmp, s)) for s in serials})


def wait_for(pred: Callable[[], bool], seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_a_small_batch_gets_its_look_before_the_reset_through_a_second_reader(
        tmp_path: Path, signer: CertificateSigner) -> None:
    """5 % of three PASSes is less than one phone: one is looked at all the same, with a
    fresh seed, through readback() (not the erase's reader), before its finish step."""
    plugin = Bench()
    plug(plugin, tmp_path, ["LOOK0001", "LOOK0002", "LOOK0003"])
    st = station_for(tmp_path, plugin, signer, 0.05)
    assert st.run() == "idle"
    st.audit.close()
    looks = events(tmp_path, "second-look")
    assert len(looks) == 1, looks
    job_id, serial, look = looks[0]
    assert look["selected"] and look["status"] == "passed" and look["by"] == "Second Person"
    assert look["verdict"] == "as-certified" and look["samples"] > 0
    trail = job_trail(tmp_path, job_id)
    assert trail.index("verified") < trail.index("rechecking") < trail.index("second-look") \
        < trail.index("finishing") < trail.index("record")
    calls = [c for s, c in plugin.calls if s == serial]
    assert calls.index("reader") < calls.index("readback") < calls.index("finish")
    [(_, _, record)] = [e for e in events(tmp_path, "record") if e[0] == job_id]
    certified_seed = record["record"]["verification"]["plan"]["seed"]
    assert look["fresh_seed"] != certified_seed  # new offsets, not the certified ones
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        ledger = read_ledger(audit, "T1")
    closed = ledger.closed or {}
    assert closed["second_look_due"] == 1 and closed["second_look_done"] == 1


@pytest.mark.parametrize("share,passes,due", [(0.05, 1, 1), (0.05, 19, 1), (0.05, 40, 2),
                                              (0.5, 16, 8), (1.0, 5, 5), (0.0, 30, 0)])
def test_the_share_is_met_at_random_positions(tmp_path: Path, signer: CertificateSigner,
                                              share: float, passes: int, due: int) -> None:
    seen = set()
    for _ in range(20):
        st = station_for(tmp_path, Bench(), signer, share)
        assert st.looks.due(passes) == due
        seen.add(tuple(st.looks.positions))
        st.audit.close()
    if share == 0.05:  # the positions are drawn at random, not fixed by the share
        assert len(seen) > 1


def test_a_phone_that_cannot_be_re_read_passes_its_pick_on(tmp_path: Path,
                                                           signer: CertificateSigner) -> None:
    plugin = Bench({"FILL0001": "fill"})
    plug(plugin, tmp_path, ["FILL0001"])
    st = station_for(tmp_path, plugin, signer, 0.05)
    thread = threading.Thread(target=st.run, daemon=True)
    thread.start()
    assert wait_for(lambda: any(r.final for r in st.rows.values()))
    plug(plugin, tmp_path, ["NEXT0001"])  # the next phone that passes takes the pick
    thread.join(60)
    st.audit.close()
    looks = {serial: look for _, serial, look in events(tmp_path, "second-look")}
    assert looks["FILL0001"]["status"] == "passed-on" and not looks["FILL0001"]["selected"]
    assert "fill files" in looks["FILL0001"]["reason"]
    assert looks["NEXT0001"]["status"] == "passed" and looks["NEXT0001"]["selected"]
    assert ("FILL0001", "readback") not in plugin.calls
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        summary = build_summary(read_ledger(audit, "T1"), 0)
    assert [s["serial"] for s in summary["second_look"]] == ["NEXT0001"]
    assert summary["second_look_passed_on"][0]["serial"] == "FILL0001"
    assert any(n.startswith("FILL0001: cannot be re-read") and "fill files" in n
               and "the pick goes to the next phone" in n
               for n in summary["second_look_notes"])
    assert summary["second_look_owed"] == 0


def test_a_pick_no_later_phone_can_take_is_owed_in_the_summary(tmp_path: Path,
                                                               signer: CertificateSigner) -> None:
    plugin = Bench({"FILL0002": "fill"})
    plug(plugin, tmp_path, ["FILL0002"])
    st = station_for(tmp_path, plugin, signer, 0.05)
    assert st.run() == "idle"
    st.audit.close()
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        details = second_look_details(read_ledger(audit, "T1"))
    assert details["second_look_owed"] == 1
    assert any("could not be placed" in n for n in details["second_look_notes"])


def test_a_look_the_phone_cannot_finish_is_pending_with_its_command(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = Bench({"FLAK0001": "flaky"})
    plug(plugin, tmp_path, ["FLAK0001"])
    st = station_for(tmp_path, plugin, signer, 1.0, by="Ann O'Brien")
    assert st.run() == "idle"
    st.audit.close()
    [(_, _, look)] = events(tmp_path, "second-look")
    assert look["status"] == "pending" and "I/O error" in look["reason"]
    [row] = st.rows.values()
    assert row.outcome == "ERASED_VERIFIED"  # the first verification stands; the reset followed
    assert ("FLAK0001", "finish") in plugin.calls
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        details = second_look_details(read_ledger(audit, "T1"))
    [pending] = details["second_look_pending"]
    cert = next((tmp_path / "certs").glob("*.pdf"))
    assert pending["command"] == (f"phonewipe verify --plan-from {cert} --fresh-seed "
                                  "--operator 'Ann O'\"'\"'Brien'")
    assert any(n.startswith("PENDING FLAK0001") and pending["command"] in n
               for n in details["second_look_notes"])
    from phonewipe.certificates.batch import render_summary  # the signed summary.pdf shows it
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        summary = build_summary(read_ledger(audit, "T1"), 0)
    assert summary["second_look_pending"] == details["second_look_pending"]
    (tmp_path / "summary.pdf").write_bytes(render_summary(summary))
    text = subprocess.run([require_binary("pdftotext"), str(tmp_path / "summary.pdf"), "-"],
                          capture_output=True, text=True).stdout
    assert "PENDING FLAK0001" in text and "--fresh-seed" in text and "I/O error" in text


def test_a_look_that_finds_plaintext_fails_the_phone_and_no_reset_follows(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = Bench({"LIAR0001": "liar"})
    plug(plugin, tmp_path, ["LIAR0001"])
    st = station_for(tmp_path, plugin, signer, 0.05)
    assert st.run() == "idle"
    st.audit.close()
    [row] = st.rows.values()
    assert row.outcome == "FAILED"
    assert "second look" in row.reason and "Second Person" in row.reason
    assert ("LIAR0001", "finish") not in plugin.calls
    [(job_id, _, look)] = events(tmp_path, "second-look")
    assert look["status"] == "failed" and look["verdict"] == "mismatch"
    assert "finishing" not in job_trail(tmp_path, job_id)
    [(_, _, record)] = events(tmp_path, "record")
    assert record["record"]["destination"]["kind"] == "quarantine"


def test_share_zero_looks_at_nobody(tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = Bench()
    plug(plugin, tmp_path, ["ZERO0001", "ZERO0002"])
    st = station_for(tmp_path, plugin, signer, 0.0)
    assert st.run() == "idle"
    st.audit.close()
    assert events(tmp_path, "second-look") == []
    assert not any(c == "readback" for _, c in plugin.calls)


def test_a_resumed_batch_remembers_its_looks(tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = Bench()
    plug(plugin, tmp_path, ["RESU0001"])
    st = station_for(tmp_path, plugin, signer, 0.05)
    st.options = replace(st.options, exit_when_idle=True)
    thread = threading.Thread(target=st.run, daemon=True)
    thread.start()
    assert wait_for(lambda: any(r.final for r in st.rows.values()))
    st.interrupt()
    st.interrupt()
    thread.join(30)
    st.audit.close()
    again = station_for(tmp_path, Bench(), signer, 0.05)
    again.open()
    assert again.looks.taken == 1 and again.looks.passes == 1
    again.audit.close()


# -- the picks are random, and the first one too (#18 leftover) --------------------------------
def test_the_first_look_is_drawn_among_the_phones_waiting_before_their_reset() -> None:
    picker = LookPicker(0.05)
    for job in "ABC":
        picker.started(job)
    picks: dict[str, Pick] = {}

    def passes(job: str) -> None:
        picks[job] = picker.passed(job, f"SERIAL-{job}", True)
    first = threading.Thread(target=passes, args=("A",))
    first.start()
    time.sleep(0.3)
    assert "A" not in picks  # it waits, unreset: B and C are still being erased
    picker.ended("B")  # B failed: no candidate
    time.sleep(0.2)
    assert "A" not in picks
    passes("C")  # the last one running passes: the draw
    first.join(5)
    assert sum(p.picked for p in picks.values()) == 1
    assert picks["A"].candidates == picks["C"].candidates == ("SERIAL-A", "SERIAL-C")
    assert "secrets.SystemRandom" in picks["A"].how
    assert (picker.passes, picker.taken) == (2, 1)
    later = picker.passed("D", "SERIAL-D", True)  # the first look is placed: no waiting
    assert not later.picked and "positions drawn at random" in later.how


def _passes(picker: LookPicker, picks: dict[str, Pick], job: str) -> None:
    picks[job] = picker.passed(job, job, True)


def test_the_first_pick_is_not_the_first_phone_to_pass() -> None:
    """Four phones on the bench, always passing in the same order: each is picked about a
    quarter of the time (the first PASS was always picked before)."""
    counts = {job: 0 for job in "ABCD"}
    for _ in range(200):
        picker = LookPicker(0.05)
        for job in "ABCD":
            picker.started(job)
        picks: dict[str, Pick] = {}
        waiting = [threading.Thread(target=_passes, args=(picker, picks, job)) for job in "ABC"]
        for thread in waiting:  # in this order, each after the one before is waiting
            thread.start()
            time.sleep(0.002)
        picks["D"] = picker.passed("D", "D", True)
        for thread in waiting:
            thread.join(5)
        [picked] = [job for job, p in picks.items() if p.picked]
        counts[picked] += 1
    assert all(20 <= n <= 90 for n in counts.values()), counts


def test_a_phone_stops_waiting_when_it_must_go_on() -> None:
    picker = LookPicker(0.05)
    picker.started("A")
    picker.started("HUNG")  # never passes nor ends
    go = threading.Event()
    picks: list[Pick] = []
    thread = threading.Thread(target=lambda: picks.append(picker.passed("A", "A", True, go.is_set)))
    thread.start()
    time.sleep(0.3)
    assert not picks
    go.set()  # aborted, or its deadline near
    thread.join(5)
    assert picks and picks[0].picked and picks[0].candidates == ("A",)


def test_a_station_draws_its_first_look_among_the_phones_on_the_bench(
        tmp_path: Path, signer: CertificateSigner) -> None:
    """Four phones that pass in a fixed order: the first to pass waits, unreset, for the
    others; one of the four is drawn, and over five batches not always the first."""
    serials = ["ORDR0001", "ORDR0002", "ORDR0003", "ORDR0004"]
    picked = []
    for run in range(5):
        tmp = tmp_path / f"run{run}"
        plugin = Bench(delays={s: 0.3 * i for i, s in enumerate(serials)})
        plug(plugin, tmp, serials)
        st = station_for(tmp, plugin, signer, 0.05)
        assert st.run() == "idle"
        st.audit.close()
        [(job_id, serial, look)] = events(tmp, "second-look")
        assert look["status"] == "passed" and sorted(look["pick"]["among"]) == serials
        assert "SystemRandom" in look["pick"]["how"]
        picked.append(serial)
        with sqlite3.connect(tmp / "audit.sqlite") as db:
            order = [(s, e) for s, e in db.execute(
                "SELECT serial, event FROM events WHERE event IN ('verified', 'finishing') "
                "ORDER BY id")]
        assert order.index(("ORDR0004", "verified")) < order.index(("ORDR0001", "finishing"))
    assert set(picked) != {"ORDR0001"}, picked


# -- a single `phonewipe erase` gets its second look too ---------------------------------------
@pytest.fixture
def virtual_run(tmp_path: Path) -> Iterator[Callable[..., list[Any]]]:
    import click

    from phonewipe.certificates.keys import init_keys
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    from phonewipe.erasing import run_erase
    from phonewipe.protocols.virtual import VirtualPlugin
    keys = tmp_path / "keys"
    init_keys(keys, "Test Org", "Test Org signing")
    plugin = VirtualPlugin()
    handsets = start_handsets(["virtual"] * 3, tmp_path / "handsets", {"virtual": plugin},
                              userdata_bytes=1 << 20)
    settings = JobSettings(operator=Operator(name="First Person", organization="Test Org"))

    def run(**kw: Any) -> list[Any]:
        with click.Context(click.Command("erase"), obj={}):
            return run_erase([(plugin, e) for e in plugin.discover()], settings,
                             tmp_path / "out", keys, as_json=False, **kw)
    try:
        yield run
    finally:
        stop_handsets(handsets)


def test_a_single_erase_run_gets_its_look_before_the_reset(virtual_run, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from phonewipe.erasing import result_dict
    results = virtual_run(second_look_share=0.05, second_look_by="Second Person")
    looked = [r for r in results if r.second_look]
    assert len(looked) == 1 and len(results) == 3
    look = looked[0].second_look
    assert look["status"] == "passed" and look["by"] == "Second Person" and look["samples"] > 0
    assert sorted(look["pick"]["among"]) == sorted(r.record.device.serial for r in results)
    assert look["fresh_seed"] != looked[0].record.verification.plan["seed"]
    assert result_dict(looked[0])["second_look"]["status"] == "passed"
    assert "second look" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "out" / "audit.sqlite") as db:
        trail = [(j, e) for j, e in db.execute("SELECT job_id, event FROM events ORDER BY id")]
    job = looked[0].record.job_id
    mine = [e for j, e in trail if j == job]
    assert mine.index("verified") < mine.index("rechecking") < mine.index("second-look") \
        < mine.index("finishing") < mine.index("record")
    last_verified = max(i for i, (_, e) in enumerate(trail) if e == "verified")
    first_reset = min(i for i, (_, e) in enumerate(trail) if e == "finishing")
    assert last_verified < first_reset  # every phone waited, readable, for the draw


def test_a_single_erase_without_a_share_looks_at_nobody(virtual_run, tmp_path: Path) -> None:
    results = virtual_run()
    assert not any(r.second_look for r in results)
    with sqlite3.connect(tmp_path / "out" / "audit.sqlite") as db:
        assert not db.execute("SELECT 1 FROM events WHERE event='rechecking'").fetchall()


def test_phonewipe_erase_takes_the_look_through_the_command_line(tmp_path: Path) -> None:
    """A rooted phone over the real adb server: `erase` re-reads it before its reset, by the
    person named; `--second-look 0` looks at nobody."""
    from test_end_to_end import Bench as AdbBench
    more = []  # a fresh rooted phone for each run: after its reset a phone is offline
    for name in ("rooted-b", "rooted-c"):
        (tmp_path / f"{name}.toml").write_text(
            f'extends = "rooted"\ndescription = "{name}"\n[device]\nserial_prefix = '
            f'"PW{name[-1].upper()}RTD"\n')
        more.append(str(tmp_path / f"{name}.toml"))
    bench = AdbBench(tmp_path / "bench", ["rooted", "unrooted", *more])
    try:
        looked = bench.run("erase", *(bench.handsets[p]["endpoints"]["adb"] for p in
                                      ("rooted", "unrooted")),
                           "--out", str(tmp_path / "out"), "--keys", str(bench.keys),
                           "--second-look-by", "Second Person", "--json")
        assert looked.returncode == 0, looked.stdout + looked.stderr
        by_serial = {r["serial"]: r["second_look"] for r in json.loads(looked.stdout)}
        rooted, unrooted = by_serial["PWROOT0000"], by_serial["PWUNRT0000"]
        assert rooted["status"] == "passed" and rooted["by"] == "Second Person"
        assert rooted["samples"] > 0 and rooted["pick"]["among"] == ["PWROOT0000"]
        assert unrooted["status"] == "passed-on" and "fill files" in unrooted["reason"]
        with sqlite3.connect(tmp_path / "out" / "audit.sqlite") as db:
            trail = [e for (e,) in db.execute(
                "SELECT event FROM events WHERE serial='PWROOT0000' ORDER BY id")]
        assert trail.index("verified") < trail.index("rechecking") < trail.index("finishing")
        plain = bench.run("erase", bench.handsets["rooted-b"]["endpoints"]["adb"], "--out",
                          str(tmp_path / "out2"), "--keys", str(bench.keys))
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert "second look" in plain.stdout and "Test Operator" in plain.stdout
        nobody = bench.run("erase", bench.handsets["rooted-c"]["endpoints"]["adb"], "--out",
                           str(tmp_path / "out3"), "--keys", str(bench.keys), "--second-look", "0",
                           "--json")
        assert nobody.returncode == 0 and json.loads(nobody.stdout)[0]["second_look"] is None
    finally:
        bench.close()


def test_a_look_an_erase_run_could_not_finish_gives_its_command(
        virtual_run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from phonewipe.erasing import result_dict
    from phonewipe.protocols.virtual.session import VirtualSession
    monkeypatch.setattr(VirtualSession, "readback", lambda self: BrokenReader(self))
    results = virtual_run(second_look_share=1.0, second_look_by="Ann O'Brien")
    assert all(r.second_look["status"] == "pending" and "I/O error" in r.second_look["reason"]
               for r in results)
    assert all(r.record.outcome.value == "ERASED_VERIFIED" for r in results)  # it stands
    command = result_dict(results[0])["second_look_command"]
    assert command == (f"phonewipe verify --plan-from {results[0].certificate} --fresh-seed "
                       "--operator 'Ann O'\"'\"'Brien'")
    out = capsys.readouterr().out
    assert "PENDING" in out and command in out  # whole, on its own line
