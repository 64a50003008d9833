"""Certificates an auditor accepts (#22 items 1, 2, 4; #18 item 7): every NIST SP 800-88
App. G field from the record, claims that match the evidence, plain words, the second
person's validation as a signed addendum. Each outcome and method is rendered and read back
with pdftotext, and every claim is checked against the record."""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_binary
from test_certificates import blocked_record, erased_record, failed_record

from phonewipe.certificates.addendum import build_addendum, sign_addendum
from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.render import render_pdf
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.certificates.verify import verify_bytes, verify_certificate
from phonewipe.erase.config import load_config
from phonewipe.erase.errors import ConfigError
from phonewipe.erase.model import (
    Category,
    EraseMethod,
    Finding,
    Media,
    Outcome,
    Record,
    Severity,
    Technique,
    VerificationResult,
)
from phonewipe.erase.policy import assess

FIXTURES = Path(__file__).parent.parent / "fixtures" / "certificates"
MEDIA = Media(source="Finance dept. (cost centre 4711)", classification="Confidential",
              backup="yes, to the corporate OneDrive", notes="returned after lease end",
              sim_removed=True, microsd_removed=False, esim="not present")
PATTERN_KEY = "5f" * 32


def unverified_reset() -> Record:
    r = erased_record(7)
    method = EraseMethod("adb-factory-reset", "Factory reset (cryptographic erase of "
                         "file-encryption keys, vendor-attested)", Category.CLEAR,
                         Technique.CRYPTO_ERASE, False)
    verification = VerificationResult(mode="none", status="unavailable",
                                      scope="whole device (factory reset)",
                                      reason="this device and method offer no read-back of storage")
    a = assess(method, r.device, Outcome.ERASED_UNVERIFIED, verification)
    return replace(r, outcome=Outcome.ERASED_UNVERIFIED, verification=verification,
                   sanitization=replace(r.sanitization, method=method.name, title=method.title,
                                        technique=method.technique.value, category=a.category,
                                        justification=a.justification, standard=a.standard,
                                        details={}, bytes_written=0),
                   reason="the device offers no read-back of its storage, so the erase is "
                          "reported as performed but not verified")


def fastboot_pass() -> Record:
    r = erased_record(8)
    return replace(r, findings=(
        Finding(Severity.INFO, "FASTBOOT_NO_READBACK", "fastboot cannot read storage back: the "
                "erase is verified only if the phone returns to adb with root."),
        Finding(Severity.INFO, "AB_SLOTS", "A/B device (2 slots, current slot a).")),
        sanitization=replace(r.sanitization, method="fastboot-raw-pattern",
                             details={"downloads": 3, "image": "sparse pieces",
                                      "protocol": "fastboot"}),
        post_state={"mode": "rebooted to Android"})


def with_key(r: Record) -> Record:
    """As the job records it: the plan holds the pattern key (for re-verification)."""
    v = r.verification
    return replace(r, verification=replace(v, plan={**v.plan, "pattern_key": PATTERN_KEY})) \
        if v is not None and v.plan else r


def blocked_by_account() -> Record:
    r = blocked_record()
    message = ("A Google account (jane.doe@gmail.com) is signed in, so Factory Reset "
               "Protection would lock the next owner out")
    return replace(r, findings=(Finding(Severity.BLOCKER, "frp-google-account", message),),
                   reason=message)


def failed() -> Record:
    """As the job records a FAIL: the policy claims no category."""
    r = failed_record()
    return replace(r, sanitization=replace(r.sanitization, category=Category.NONE.value))


OUTCOMES = {"pass-raw": erased_record, "pass-fastboot": fastboot_pass,
            "unverified-reset": unverified_reset, "fail": failed,
            "not-erased": blocked_by_account}


def text_of(pdf: bytes, tmp_path: Path, name: str = "c") -> list[str]:
    """pdftotext of each page (layout kept), a page per item."""
    tool = require_binary("pdftotext")
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([tool, "-layout", str(path), "-"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [page for page in out.split("\f") if page.strip()]


def flat(pages: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(pages))


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_every_appendix_g_field_and_claim_comes_from_the_record(name: str, tmp_path: Path) -> None:
    record = with_key(replace(OUTCOMES[name](), media=MEDIA))
    pages = text_of(render_pdf(record), tmp_path)
    text = flat(pages)
    # Appendix G: media information, sanitization details, destination - from the record
    for label, value in (("Media source", MEDIA.source), ("Classification", MEDIA.classification),
                         ("Data backup", MEDIA.backup), ("Notes", MEDIA.notes),
                         ("Destination", record.destination.kind)):
        assert label in text and value in text, (label, value)
    assert "Post-sanitization" in text and "classification" in text
    for value in (record.device.manufacturer, record.device.model, record.device.serial):
        if value:
            assert value in text
    # the scope sentence, from the method's details and the operator's attestations
    scope = ("SIM removed by the operator: yes; microSD removed by the operator: no; "
             "eSIM: not present")
    assert scope in text
    if record.sanitization is not None and record.sanitization.scope:  # its own words (layout 5)
        assert f"Scope {record.sanitization.scope};" in text
    elif record.sanitization is not None:  # a record that kept no scope: as layout 4 said it
        assert f"userdata partition of {record.verification.plan.get('size', 0):,} bytes" in text \
            if record.verification and record.verification.plan else "userdata partition" in text
    else:
        assert "nothing was erased" in text
    # plain words: no raw field names, never the pattern key, no enum names
    for raw in ("pattern_key", "Plan pattern_key", PATTERN_KEY, "returned_over_adb",
                "ERASED_VERIFIED", "ERASED_UNVERIFIED", "FASTBOOT_NO_READBACK", "frp-google"):
        assert raw not in text, raw
    # the title says what the document is
    title = pages[0].strip().splitlines()[0].strip()
    if record.outcome is Outcome.ERASED_VERIFIED:
        assert title == "Certificate of Sanitization"
    else:
        assert title == f"Sanitization record: {record.result_text}"
        assert "Certificate of Sanitization" not in text
    # claims: the category printed is the record's, and no Clear without a verified erase
    if record.sanitization is not None:
        assert f"Category {record.sanitization.category}" in text
    if record.outcome is not Outcome.ERASED_VERIFIED:
        assert "Category Clear" not in text
    if record.verification is not None and record.verification.samples_read:
        assert f"Samples read {record.verification.samples_read:,}" in text
    # no page holds only a box: every page carries rows of the record besides its footer
    for page in pages:
        body = [line for line in page.splitlines() if line.strip() and "page " not in line]
        assert len(body) >= 3, page
    assert "Signature Date" not in text and "Name Title Signature Date" not in text


def test_a_verified_fastboot_pass_lists_no_missing_read_back(tmp_path: Path) -> None:
    text = flat(text_of(render_pdf(fastboot_pass()), tmp_path))
    assert "cannot read storage back" not in text
    assert "A/B device" in text


def test_personal_data_is_masked_in_findings_and_on_the_page(tmp_path: Path) -> None:
    text = flat(text_of(render_pdf(blocked_by_account()), tmp_path))
    assert "jane.doe@gmail.com" not in text and "j***@gmail.com" in text


def test_an_unverified_reset_claims_no_category() -> None:
    r = unverified_reset()
    assert r.sanitization.category == Category.NONE.value
    assert "No category is claimed" in r.sanitization.justification
    assert "Clear is claimed only for an erase verified by read-back" in r.sanitization.justification


def test_unknown_attestations_say_unknown(tmp_path: Path) -> None:
    text = flat(text_of(render_pdf(erased_record()), tmp_path))
    assert "SIM and microSD removed by the operator: unknown; eSIM: unknown" in text
    assert "Media source not given" in text


def test_older_records_keep_their_hash_and_new_ones_carry_the_media() -> None:
    old = replace(erased_record(), schema="phonewipe.record/2")
    assert "media" not in old.to_dict()
    assert old.sha256() == replace(old, media=MEDIA).sha256()
    new = replace(erased_record(), media=MEDIA)
    assert new.schema == "phonewipe.record/3" and new.to_dict()["media"]["esim"] == "not present"
    assert Record.from_dict(json.loads(new.canonical_json())) == new
    assert Record.from_dict(json.loads(old.canonical_json())).media == Media()


@pytest.mark.parametrize("layout", ["layout-1", "layout-3"])
def test_certificates_of_earlier_layouts_still_verify(layout: str) -> None:
    directory = FIXTURES / layout
    pdfs = sorted(directory.glob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        report = verify_certificate(pdf, trust=directory / "signing-cert.pem")
        assert report.ok, (pdf, report.problems)
        assert report.record.schema in ("phonewipe.record/1", "phonewipe.record/2")


def test_media_and_fleet_come_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "phonewipe.toml"
    path.write_text('[media]\nsource = "ACME leasing"\nclassification = "Internal"\n'
                    'backup = "no"\nsim_removed = true\nmicrosd_removed = true\n'
                    'esim = "erased"\n[fleet]\nmdm = "Microsoft Intune"\n')
    config = load_config(path)
    assert config.media == Media(source="ACME leasing", classification="Internal", backup="no",
                                 sim_removed=True, microsd_removed=True, esim="erased")
    assert config.fleet_mdm == "Microsoft Intune"
    path.write_text('[media]\nesim = "maybe"\n')
    with pytest.raises(ConfigError, match=r"\[media\] esim"):
        load_config(path)
    path.write_text('[media]\nsim_removed = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[media\] sim_removed must be true or false"):
        load_config(path)


# -- the second person's validation -------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, organization="Example Refurb GmbH", common_name="Example signing")
    return directory


@pytest.fixture(scope="module")
def signer(keys: Path) -> CertificateSigner:
    return CertificateSigner(keys)


def test_the_validation_is_a_signed_addendum_citing_the_certificate(
        signer: CertificateSigner, tmp_path: Path) -> None:
    record = erased_record()
    cert = signer.write_certificate(record, tmp_path)
    reverify = {"record_id": record.record_id, "verdict": "as-certified", "samples": 4605,
                "fresh_seed": True, "reason": "every sample shows the certified pattern",
                "plan": {"seed": 99}, "finished_at": "2025-10-02T09:00:00+00:00"}
    addendum = build_addendum(cert, cert.read_bytes(), record, name="Grace Hopper",
                              title="QA lead", reverification=reverify,
                              validated_at="2025-10-02T09:05:00+00:00")
    path = tmp_path / "validation.pdf"
    path.write_bytes(sign_addendum(signer, addendum))
    report = verify_certificate(path)
    assert report.ok, report.problems
    assert report.kind == "addendum"
    assert report.addendum["certificate"]["record_sha256"] == record.sha256()
    assert any("validates" in n for n in report.notes)
    text = flat(text_of(path.read_bytes(), tmp_path, "addendum"))
    assert "Grace Hopper" in text and record.sha256() in text and "AS-CERTIFIED" in text
    # another certificate beside it under the cited name: the addendum no longer fits
    cert.write_bytes(signer.sign_record(erased_record(5)))
    assert not verify_certificate(path).ok
    # and the certificate no longer draws an empty box for a hand signature
    assert "Name Title Signature Date" not in flat(text_of(render_pdf(record), tmp_path))


def test_a_changed_addendum_fails(signer: CertificateSigner, tmp_path: Path) -> None:
    record = erased_record()
    cert = signer.write_certificate(record, tmp_path)
    data = bytearray(sign_addendum(signer, build_addendum(
        cert, cert.read_bytes(), record, name="Grace Hopper", validated_at="2025-10-02")))
    data[len(data) // 3] ^= 0x01
    assert not verify_bytes(bytes(data), tmp_path / "x.pdf").ok


def test_the_scope_row_says_what_the_method_erased_and_layout_4_still_renders_as_issued() -> None:
    """A disk in a reader is not a "userdata partition": from layout 5 the scope row is the
    method's own account of the area; a layout-4 certificate re-renders as it was issued."""
    from phonewipe.certificates.fields import visible_fields
    record = erased_record()
    assert record.sanitization is not None
    disk = replace(record, sanitization=replace(
        record.sanitization, scope="whole block device sdb, 7,818,182,656 bytes"))
    assert disk.sha256() != record.sha256() and "scope" not in record.to_dict()["sanitization"]
    assert dict(visible_fields(disk))["Sanitization: Scope"].startswith(
        "whole block device sdb, 7,818,182,656 bytes;")
    assert dict(visible_fields(disk, layout=4))["Sanitization: Scope"].startswith("userdata partition")
    assert Record.from_dict(json.loads(disk.canonical_json())) == disk
