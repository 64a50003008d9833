"""A PASS record the station could not sign is never left out of its batch (the exit 18 of
the `batch32` fixture at aa2c4e6): two jobs signing at once broke the signer's shared
asn1crypto objects with a TypeError, which escaped `_certify` as a station-error; the batch
closed with a record and no certified event, and its report was refused as an edit.

Now: signing is one at a time (certificates/sign.py), a signing error of any kind is logged
as certificate-failed, the station signs again before it closes the batch, and a record it
still cannot sign keeps the batch open (the next run certifies it) with a report refusal
that says so instead of "changed after signing"."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_station_core import BenchPlugin, job_events, phone, run_station

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.model import Record
from phonewipe.reports import RecordMismatch, write_reports


class FlakySigner:
    """The real signer, but its first `failures` certificates raise what the unlocked
    signer raised under load (a TypeError, not a PhonewipeError)."""

    def __init__(self, signer: CertificateSigner, failures: int) -> None:
        self.signer, self.failures = signer, failures
        self.material = signer.material  # the report checks the summary's key against it

    def write_certificate(self, record: Record, out_dir: Path) -> Path:
        if self.failures > 0:
            self.failures -= 1
            raise TypeError("can't concat NoneType to bytes\n    while constructing "
                            "asn1crypto.cms.CMSAttributes")
        return self.signer.write_certificate(record, out_dir)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.signer, name)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys, "Test Org", "test signing")
    return CertificateSigner(keys)


def station_on(tmp: Path, plugin: BenchPlugin, signer: Any) -> Any:
    """The bench's station, its certificates where `phonewipe report` looks for them."""
    station = run_station(tmp, plugin, signer)
    station.options = replace(station.options,
                              cert_dir=tmp / "out" / "batches" / "T1" / "certificates")
    station.audit.close()
    station.audit = AuditLog(tmp / "audit.sqlite", signer=signer)  # signed checkpoints
    return station


def reports(tmp: Path, signer: Any) -> Any:
    with AuditLog(tmp / "audit.sqlite") as audit:
        return write_reports(audit, "T1", tmp / "out", signer)


def bench(tmp: Path, serials: list[str]) -> BenchPlugin:
    plugin = BenchPlugin()
    plugin.plugged = {f"usb:{i}": ("test", phone(tmp, s)) for i, s in enumerate(serials)}
    return plugin


def test_a_record_whose_signing_failed_is_signed_before_the_batch_closes(
        tmp_path: Path, signer: CertificateSigner) -> None:
    flaky = FlakySigner(signer, failures=1)
    station = station_on(tmp_path, bench(tmp_path, ["SIGN0001", "SIGN0002"]), flaky)
    assert station.run() == "idle"
    station.audit.close()
    outputs = reports(tmp_path, signer)  # was: exit 18, "no certified event names the record"
    events = [e for _, _, e in job_events(tmp_path)]
    assert events.count("record") == 2 and events.count("certificate-failed") == 1
    assert events.count("certified") == 2 and "batch-closed" in events
    assert outputs.summary["totals"] == {"PASS": 2} and outputs.summary["closed"]


def test_a_record_that_cannot_be_signed_keeps_the_batch_open_until_it_is(
        tmp_path: Path, signer: CertificateSigner) -> None:
    first = station_on(tmp_path, bench(tmp_path, ["NOSIGN01"]), FlakySigner(signer, 99))
    assert first.run() == "idle"
    first.audit.close()
    events = [e for _, _, e in job_events(tmp_path)]
    assert "batch-closed" not in events and events[-1] == "station-stopped"
    assert events.count("certificate-failed") == 2  # the job's try and the one at close
    with pytest.raises(RecordMismatch) as refused:
        reports(tmp_path, signer)
    assert "NOSIGN01" in str(refused.value) and "was never certified" in str(refused.value)
    assert "can't concat NoneType" in str(refused.value)
    assert "changed after signing" not in str(refused.value)

    second = station_on(tmp_path, BenchPlugin(), signer)  # the phone has left the bench
    assert second.run() == "idle"
    second.audit.close()
    events = [e for _, _, e in job_events(tmp_path)]
    assert events.count("record") == 1 and events.count("certified") == 1
    assert events[-1] == "batch-closed"
    reports(tmp_path, signer)


def test_certificates_are_signed_one_at_a_time(tmp_path: Path, signer: CertificateSigner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """pyHanko's signer shares lazily parsed asn1crypto objects: at aa2c4e6, 8 threads
    signing at once with a fresh signer failed in 1 of 15 rounds (TypeError ... while
    constructing asn1crypto.cms.CMSAttributes). Here: no two signatures overlap."""
    inside, most = 0, 0
    lock = threading.Lock()
    real = CertificateSigner._sign_once

    def counting(self: CertificateSigner, *args: Any, **kwargs: Any) -> bytes:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.05)
            return real(self, *args, **kwargs)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(CertificateSigner, "_sign_once", counting)
    from phonewipe.certificates.render import render_pdf
    pdf = render_pdf(_a_record(tmp_path, signer), signing=signer.signing_info)
    threads = [threading.Thread(target=signer.sign_pdf, args=(pdf, b"{}")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most == 1


def _a_record(tmp: Path, signer: CertificateSigner) -> Record:
    station = run_station(tmp, bench(tmp, ["ONE00001"]), signer)
    assert station.run() == "idle"
    station.audit.close()
    from phonewipe.erase.station.ledger import read_ledger
    with AuditLog(tmp / "audit.sqlite") as audit:
        [record] = read_ledger(audit, "T1").records()
    return record


def test_erase_records_a_signing_failure_of_any_kind_instead_of_raising(tmp_path: Path) -> None:
    """`erase` (not the station): a signer that raises what a library raises (the TypeError
    of pyHanko's race) leaves a certificate-failed event and a result that says to erase
    again — never a traceback, never a lost record."""
    from test_certificates import erased_record

    from phonewipe.erase.audit import AuditLog
    from phonewipe.erase.model import Endpoint
    from phonewipe.erase.runner import _certified

    class BrokenSigner:
        def write_certificate(self, record: object, cert_dir: Path) -> Path:
            raise TypeError("can't concat NoneType to bytes")

    record = erased_record()
    audit = AuditLog(tmp_path / "audit.sqlite")
    result = _certified(record, Endpoint("adb", "adb", "127.0.0.1:5555"), audit, BrokenSigner(),
                        tmp_path / "certificates")
    assert result.certificate is None and "signing failed: TypeError" in (result.error or "")
    assert "erase it again" in (result.error or "")
    assert [e.event for e in audit.events(kinds=("certificate-failed",))] == ["certificate-failed"]
