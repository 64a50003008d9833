"""Failures are routed to destruction (#22 item 3): the destination follows the outcome
(PASS: the configured one; anything else: quarantine, not for resale until erased), a
device's earlier FAIL in the audit log is found by serial or IMEI, and a second FAIL says to
destroy it physically and record the destruction, with `earlier_failures` on the record."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_station_core import BenchPlugin, Phone, phone  # noqa: F401

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.certificates.verify import verify_certificate
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.destination import DESTRUCTION_ADVICE, QUARANTINE, destination_for, route, same_device
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record
from phonewipe.erase.station.station import Station, StationOptions


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys, "Test Org", "test signing")
    return CertificateSigner(keys)


def liar(tmp: Path, serial: str) -> Phone:
    profile = replace(load_profile("virtual-lying"), userdata_bytes=1 << 20)
    return Phone(HandsetStorage.create(tmp / f"{serial}-{len(list(tmp.iterdir()))}", profile,
                                       serial), serial)


def run_batch(tmp: Path, plugin: BenchPlugin, signer: CertificateSigner, batch: str) -> Station:
    audit = AuditLog(tmp / "audit.sqlite")
    opts = StationOptions(batch_id=batch, settings=JobSettings(
        operator=Operator("Tester"), destination=Destination("resale", "grade A")),
        cert_dir=tmp / batch, poll=0.05, exit_when_idle=True, idle_seconds=0.5,
        second_look_share=0)
    st = Station({"bench": plugin}, audit, signer, opts)
    assert st.run() == "idle"
    audit.close()
    return st


def records(tmp: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp / "audit.sqlite") as db:
        return [json.loads(p)["record"] for (p,) in
                db.execute("SELECT payload FROM events WHERE event='record' ORDER BY id")]


def test_pass_keeps_the_destination_and_fail_is_quarantined_on_record_and_certificate(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", phone(tmp_path, "GOODDEST")),
                      "usb:2": ("test", liar(tmp_path, "BADDEST1"))}
    run_batch(tmp_path, plugin, signer, "D1")
    by_serial = {r["device"]["serial"]: r for r in records(tmp_path)}
    assert by_serial["GOODDEST"]["outcome"] == "ERASED_VERIFIED"
    assert by_serial["GOODDEST"]["destination"] == {"kind": "resale", "details": "grade A"}
    bad = by_serial["BADDEST1"]
    assert bad["outcome"] == "FAILED"
    assert bad["destination"]["kind"] == "quarantine"
    assert bad["destination"]["details"].startswith("not for resale until erased")
    assert "earlier_failures" not in bad  # a first FAIL: the usual advice, nothing earlier
    assert DESTRUCTION_ADVICE in bad["reason"]
    cert = next((tmp_path / "D1").glob("BADDEST1-*.pdf"))
    checked = verify_certificate(cert)
    assert checked.ok and checked.record is not None
    assert checked.record.destination.kind == "quarantine"


def test_a_second_fail_of_the_same_device_proposes_destruction(
        tmp_path: Path, signer: CertificateSigner) -> None:
    plugin = BenchPlugin()
    plugin.plugged = {"usb:1": ("test", liar(tmp_path, "TWICE001"))}
    run_batch(tmp_path, plugin, signer, "D1")
    plugin.plugged = {"usb:1": ("test", liar(tmp_path, "TWICE001"))}
    run_batch(tmp_path, plugin, signer, "D2")  # redone in a later batch: fails again
    first, second = records(tmp_path)
    assert first["outcome"] == second["outcome"] == "FAILED"
    assert "physically destroy it and record the destruction" in second["reason"]
    assert DESTRUCTION_ADVICE not in second["reason"]  # not "if it fails a second time" again
    assert "batch D1" in second["reason"]
    [earlier] = second["earlier_failures"]
    assert earlier["record_id"] == first["record_id"] and earlier["batch_id"] == "D1"
    assert second["destination"]["kind"] == "quarantine"
    assert "destroy" in second["destination"]["details"]
    cert = next((tmp_path / "D2").glob("TWICE001-*.pdf"))
    checked = verify_certificate(cert)  # the record with its earlier failures is what is signed
    assert checked.ok and checked.record is not None
    assert checked.record.earlier_failures[0]["record_id"] == first["record_id"]
    assert checked.record.sha256() == Record.from_dict(second).sha256()


def _record(outcome: Outcome, serial: str | None, imeis: tuple[str, ...] = (),
            reason: str = "", job: str = "j") -> Record:
    return Record(record_id=f"r-{job}", job_id=job, created_at="2025-01-01T00:00:00Z",
                  outcome=outcome, device=Identity("android", serial=serial, imeis=imeis),
                  endpoint=Endpoint("virtual", "virtual", "x"), operator=Operator("T"),
                  destination=Destination("resale"), tool={}, reason=reason, batch_id="B")


class Log:
    """An audit log holding records (anything with `events(kinds=...)`)."""

    def __init__(self, *recs: Record) -> None:
        self.recs = recs

    def events(self, job_id: str | None = None, kinds: Any = ()) -> list[Any]:
        from phonewipe.erase.audit import Event
        return [Event(i, "", r.job_id, "", "record", json.dumps({"record": r.to_dict()}))
                for i, r in enumerate(self.recs)]


def test_earlier_failures_are_found_by_serial_or_imei_and_only_real_failures_count() -> None:
    imei = "353456789012348"
    now = _record(Outcome.FAILED, "S1", (imei,), f"verification failed; {DESTRUCTION_ADVICE}", "now")
    by_imei = _record(Outcome.FAILED, None, (imei,), "verification failed", "a")
    assert route(now, Log(by_imei)).earlier_failures[0]["record_id"] == "r-a"
    by_serial = _record(Outcome.FAILED, "S1", (), "verification failed", "b")
    assert len(route(now, Log(by_imei, by_serial)).earlier_failures) == 2
    interrupted = _record(Outcome.FAILED, "S1", (), "interrupted by the operator during erasing", "c")
    blocked = _record(Outcome.BLOCKED, "S1", (), "a Google account", "d")
    other_phone = _record(Outcome.FAILED, "S2", (imei,), "verification failed", "e")  # a cloned IMEI
    cheap_clone = _record(Outcome.FAILED, "S1", ("490154203237518",), "verification failed", "f")
    alone = route(now, Log(interrupted, blocked, other_phone, cheap_clone, now))
    assert alone.earlier_failures == () and DESTRUCTION_ADVICE in alone.reason
    assert alone.destination.kind == QUARANTINE


def test_destination_for_each_outcome() -> None:
    configured = Destination("internal reuse", "pool 3")
    assert destination_for(Outcome.ERASED_VERIFIED, configured) == configured
    for outcome in (Outcome.ERASED_UNVERIFIED, Outcome.FAILED, Outcome.BLOCKED):
        d = destination_for(outcome, configured, 1)
        assert d.kind == "quarantine" and d.details.startswith("not for resale until erased")
    assert "destroy" in destination_for(Outcome.FAILED, configured, 2).details
    # an iPhone's or an attested erase cannot reach a PASS: no advice to wait for one
    attested = destination_for(Outcome.ERASED_UNVERIFIED, configured, vendor_attested=True)
    assert attested.kind == "quarantine" and "after a PASS" not in attested.details
    assert "vendor-attested" in attested.details and "(internal reuse)" in attested.details
    assert destination_for(Outcome.FAILED, configured, 1, vendor_attested=True).details \
        .startswith("not for resale until erased")
    assert same_device({"serial": "A", "imeis": ["1"]}, {"serial": "a", "imeis": []})
    assert not same_device({"serial": "A", "imeis": ["1"]}, {"serial": "A", "imeis": ["2"]})
    assert not same_device({"serial": "A", "imeis": ["1"]}, {"serial": "B", "imeis": ["1"]})
    assert same_device({"serial": None, "imeis": ["1"]}, {"serial": "B", "imeis": ["1"]})
