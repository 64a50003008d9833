"""The station's promises on a bench of virtual handsets (protocols/virtual: in-process, on
real emulated storage, through the profile's faults and page cache): hot-plug, a hung phone
never stalls the others and still ends with exactly one record, and a phone seen again in
another mode is followed, not erased twice.

The bench plugs phones in and out in any mode it likes (test_station_fixes.py too), so it
is a small plugin of its own; its sessions are the virtual plugin's, plus an erase counter
and a hang."""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import AuditLog, verify_log
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Endpoint, EraseMethod, Operator
from phonewipe.erase.plugin import EraseContext, EraseReport, Plugin, Session
from phonewipe.erase.station.station import Station, StationOptions
from phonewipe.protocols.virtual.session import VirtualSession


class Phone:
    def __init__(self, storage: HandsetStorage, serial: str, hang: threading.Event | None = None) -> None:
        self.storage, self.serial, self.hang = storage, serial, hang
        self.erases = 0


class PhoneSession(VirtualSession):
    """A virtual handset's session on the bench (no bus: the bench says what is plugged)."""

    def __init__(self, phone: Phone, endpoint: Endpoint) -> None:
        super().__init__(None, endpoint, phone.storage)
        self.phone = phone

    def erase(self, method: EraseMethod, context: EraseContext, progress: Any) -> EraseReport:
        self.phone.erases += 1
        if self.phone.hang is not None:
            self.phone.hang.wait(30)  # a phone that stops answering in the middle of a call
        return super().erase(method, context, progress)


class BenchPlugin(Plugin):
    """Phones plugged in and out by the test: address -> (mode, phone)."""

    name = "bench"

    def __init__(self) -> None:
        super().__init__()
        self.plugged: dict[str, tuple[str, Phone]] = {}
        self.lock = threading.Lock()

    def discover(self) -> list[Endpoint]:
        with self.lock:
            return [Endpoint("bench", mode, address) for address, (mode, _) in self.plugged.items()]

    def open(self, endpoint: Endpoint) -> Session:
        with self.lock:
            return PhoneSession(self.plugged[endpoint.address][1], endpoint)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys, "Test Org", "test signing")
    return CertificateSigner(keys)


def phone(tmp: Path, serial: str, hang: threading.Event | None = None) -> Phone:
    profile = replace(load_profile("virtual"), userdata_bytes=1 << 20)
    return Phone(HandsetStorage.create(tmp / serial, profile, serial), serial, hang)


def run_station(tmp: Path, plugin: BenchPlugin, signer: CertificateSigner, **options: Any) -> Station:
    audit = AuditLog(tmp / "audit.sqlite")
    opts = StationOptions(batch_id="T1", settings=JobSettings(operator=Operator("Tester")),
                          cert_dir=tmp / "certs", poll=0.05, exit_when_idle=True,
                          idle_seconds=0.5, second_look_share=0, **options)
    return Station({"bench": plugin}, audit, signer, opts)


def job_events(tmp: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return list(db.execute("SELECT job_id, serial, event FROM events ORDER BY id"))


def test_a_hung_phone_never_stalls_the_others_and_ends_with_one_record(tmp_path: Path,
                                                                        signer: CertificateSigner) -> None:
    release = threading.Event()
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "HUNG0001", release))}
    plugin.plugged.update({f"usb:{i}": ("test", phone(tmp_path, f"GOOD000{i}")) for i in (2, 3, 4)})
    station = run_station(tmp_path, plugin, signer, timeout=1.0, grace=0.5)
    assert station.run() == "idle"
    outcomes = {r.serial: r.outcome for r in station.rows.values()}
    assert outcomes == {"HUNG0001": "FAILED", "GOOD0002": "ERASED_VERIFIED",
                        "GOOD0003": "ERASED_VERIFIED", "GOOD0004": "ERASED_VERIFIED"}
    hung = next(r for r in station.rows.values() if r.serial == "HUNG0001")
    assert "per-device timeout" in hung.reason and "during erasing" in hung.reason
    release.set()  # the stuck call returns after the batch closed: nothing more is recorded
    worker = station.workers[hung.key][0]
    worker.join(10)
    records = [j for j, _, e in job_events(tmp_path) if e == "record"]
    assert len(records) == 4 and len(set(records)) == 4
    assert len(list((tmp_path / "certs").glob("*.pdf"))) == 4
    assert verify_log(tmp_path / "audit.sqlite") == len(job_events(tmp_path))


def test_a_phone_seen_again_in_another_mode_is_followed_not_erased_twice(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    same = phone(tmp_path, "FOLLOW01")
    plugin.plugged = {"usb:1": ("test", same)}
    station = run_station(tmp_path, plugin, signer)
    original_step = station.step

    def step() -> None:  # hot-plug while the station runs: the same phone in a second mode,
        original_step()  # then a new phone on another port
        row = next(iter(station.rows.values()), None)
        if row is not None and row.final and "usb:9" not in plugin.plugged:
            with plugin.lock:
                plugin.plugged["usb:9"] = ("recovery", same)
                plugin.plugged["usb:5"] = ("test", phone(tmp_path, "LATE0005"))
    station.step = step  # type: ignore[method-assign]
    assert station.run() == "idle"
    assert same.erases == 1
    follow = next(r for r in station.rows.values() if r.serial == "FOLLOW01")
    assert sorted(follow.modes) == ["recovery", "test"]
    assert {r.serial: r.outcome for r in station.rows.values()} == {
        "FOLLOW01": "ERASED_VERIFIED", "LATE0005": "ERASED_VERIFIED"}
    queued = [s for _, s, e in job_events(tmp_path) if e == "queued"]
    assert sorted(queued) == ["FOLLOW01", "LATE0005"]


def test_one_ctrl_c_lets_running_jobs_finish_and_starts_nothing_new(
        tmp_path: Path, signer: CertificateSigner) -> None:
    release = threading.Event()
    plugin = BenchPlugin()
    busy = phone(tmp_path, "BUSY0001", release)
    plugin.plugged = {"usb:1": ("test", busy)}
    station = run_station(tmp_path, plugin, signer)
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(station.run()))
    runner.start()
    for _ in range(200):
        if busy.erases:
            break
        threading.Event().wait(0.02)
    station.interrupt()  # what the SIGINT handler calls
    with plugin.lock:
        plugin.plugged["usb:2"] = ("test", phone(tmp_path, "LATE0002"))
    threading.Event().wait(0.3)
    release.set()
    runner.join(20)
    assert result == ["drained"]
    assert {r.serial: r.outcome for r in station.rows.values()} == {"BUSY0001": "ERASED_VERIFIED"}
    events = [e for _, _, e in job_events(tmp_path)]
    assert events[-1] == "batch-closed" and "aborted" not in events


def test_a_record_left_unsigned_is_certified_once_when_the_station_comes_back(
        tmp_path: Path, signer: CertificateSigner) -> None:
    from phonewipe.erase.errors import OutputError

    class FullDisk:
        def write_certificate(self, record: Any, out_dir: Path) -> Path:
            raise OutputError("cannot write certificate: no space left on device", "free disk space")

    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "UNSIGNED1"))}
    first = run_station(tmp_path, plugin, signer)
    first.signer = FullDisk()
    first.options = replace(first.options, exit_when_idle=False)
    first.open()
    first.step()
    first.workers[next(iter(first.workers))][0].join(20)
    first.audit.close()  # the station dies here: the batch stays open, the record unsigned
    assert [e for _, _, e in job_events(tmp_path)][-2:] == ["record", "certificate-failed"]

    plugin.plugged = {}  # the phone has left the bench
    second = run_station(tmp_path, plugin, signer)
    assert second.run() == "idle"
    second.audit.close()
    events = [e for _, _, e in job_events(tmp_path)]
    assert events.count("certified") == 1 and events.count("record") == 1
    assert events.count("queued") == 1  # not erased again: its record stands
    assert len(list((tmp_path / "certs").glob("UNSIGNED1-*.pdf"))) == 1
