"""The evidence bundle inside the record, what the certificate says about sampling, and
`cert verify` checking the bundle against its record."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_job import StoragePlugin

from phonewipe.certificates.fields import visible_fields
from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.certificates.verify import verify_certificate
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.evidence import EVIDENCE_SCHEMA, decode_digests, evidence_problems
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys, "Test Org", "test signing")
    return CertificateSigner(keys)


def certified(tmp_path: Path, mode: str) -> object:
    storage = HandsetStorage.create(tmp_path / mode, load_profile("rooted"), "TEST0001")
    with AuditLog(tmp_path / f"{mode}.sqlite") as audit:
        record = run_job(StoragePlugin(storage, "honest"), StoragePlugin(storage, "").discover()[0],
                         JobSettings(seed=3, verify_mode=mode), audit)
    storage.close()
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    return record


def test_nist_certificate_names_the_rule_and_what_it_covered(tmp_path: Path) -> None:
    record = certified(tmp_path, "nist")
    fields = dict(visible_fields(record))
    assert fields["Verification: Method"] == "NIST SP 800-88 Rev. 1 sampling"
    assert dict(visible_fields(record, 3))["Verification: Mode"] == \
        "nist (NIST SP 800-88 Rev. 1 sampling)"  # as layout 3 printed it
    coverage = fields["Verification: Coverage"]
    assert coverage.startswith("NIST SP 800-88 Rev. 1 sampling: 1,000 equal subsections")
    assert "first and last addressable blocks" in coverage and "%) read" in coverage
    # a plugin without independent size evidence: the size is printed as an assumption
    assert fields["Verification: Capacity"].startswith("UNVERIFIED ASSUMPTION")


def test_evidence_bundle_holds_one_digest_per_sample_and_stays_small(tmp_path: Path) -> None:
    record = certified(tmp_path, "quick")
    evidence = record.evidence
    assert evidence["schema"] == EVIDENCE_SCHEMA
    assert evidence["tool"]["name"] == "phonewipe" and evidence["timings"]["verify_s"] >= 0
    assert "pattern_key" not in evidence["plan"]
    digests = decode_digests(evidence["samples"]["digests"])
    assert len(digests) == record.verification.samples_read == record.verification.plan["samples"]
    assert len(record.canonical_json()) < 100_000
    assert evidence_problems(evidence, record.verification) == []


def test_cert_verify_rejects_evidence_that_does_not_fit_its_record(tmp_path: Path,
                                                                   signer: CertificateSigner) -> None:
    record = certified(tmp_path, "quick")
    good = signer.write_certificate(record, tmp_path / "good")
    assert verify_certificate(good).ok
    samples = dict(record.evidence["samples"])
    samples["digests"] = samples["digests"][:-12]  # one digest (8 bytes) dropped
    short = replace(record, evidence={**record.evidence, "samples": samples})
    report = verify_certificate(signer.write_certificate(short, tmp_path / "short"))
    assert not report.ok
    assert report.problems == ["the evidence bundle holds the wrong number of sample digests"]
    other_plan = replace(record, evidence={**record.evidence,
                                           "plan": {**record.evidence["plan"], "seed": 4}})
    report = verify_certificate(signer.write_certificate(other_plan, tmp_path / "plan"))
    assert report.problems == ["the evidence bundle's plan is not the record's plan"]


def test_records_round_trip_with_evidence(tmp_path: Path) -> None:
    record = certified(tmp_path, "quick")
    again = type(record).from_dict(json.loads(record.canonical_json()))
    assert again == record and again.sha256() == record.sha256()
