"""Certificates: keys, deterministic rendering, PAdES signing, offline verification."""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from forgery import swap_embedded_record
from pyhanko.pdf_utils import generic

from phonewipe.certificates import sign as sign_mod
from phonewipe.certificates.fields import visible_fields
from phonewipe.certificates.keys import (
    describe,
    import_pkcs12,
    init_keys,
    load_signing_material,
    make_self_signed,
)
from phonewipe.certificates.render import STANDARD_LINE, printable, render_pdf, wrap
from phonewipe.certificates.sign import CertificateSigner, certificate_filename
from phonewipe.certificates.verify import show_certificate, verify_bytes, verify_certificate
from phonewipe.erase.errors import CertificateInvalid, KeyMissing, OutputError, PhonewipeError
from phonewipe.erase.model import (
    Category,
    Destination,
    Endpoint,
    Finding,
    Identity,
    Operator,
    Outcome,
    Record,
    SampleFailure,
    Sanitization,
    Severity,
    VerificationResult,
)

ORG = "Example Refurb GmbH"


# ---------------------------------------------------------------------------------------
# fixtures and helpers

def erased_record(n: int = 0, serial: str | None = "R58M12ABCDE") -> Record:
    return Record(
        record_id=f"0b6f{n:04x}-3c1e-4d2a-9a53-2f1c0e7d9b11", job_id="job-20251001-0001",
        created_at="2025-10-01T12:34:56.789Z", outcome=Outcome.ERASED_VERIFIED,
        device=Identity(platform="android", manufacturer="samsung", model="SM-G991B",
                        serial=serial, imeis=("356789104512345", "356789104512346"),
                        os_version="Android 14", storage_type="UFS",
                        capacity_bytes=128_000_000_000, encryption="file"),
        endpoint=Endpoint(plugin="adb", mode="adb", address="usb:1-2.3 04e8:6860",
                          label=serial or ""),
        operator=Operator(name="Ada Lovelace", title="Technician", organization=ORG,
                          location="Berlin, bench 4", phone="+49 30 1234567"),
        destination=Destination(kind="resale", details="grade A"),
        tool={"name": "phonewipe", "version": "0.1.0", "plugin": "adb"},
        findings=(Finding(Severity.INFO, "build-type", "the device runs a user build"),),
        sanitization=Sanitization(
            method="adb-raw-pattern", title="Keyed pseudo-random overwrite of userdata",
            technique="overwrite", category=Category.CLEAR.value,
            standard="NIST SP 800-88 Rev. 2 / IEEE 2883-2022",
            justification="every user-addressable block of userdata was overwritten",
            details={"partition": "/dev/block/by-name/userdata", "passes": 1},
            started_at="2025-10-01T12:00:00.000Z", finished_at="2025-10-01T12:30:00.000Z",
            bytes_written=110_000_000_000),
        verification=VerificationResult(
            mode="quick", status="passed", expectation="keyed-pattern", scope="userdata",
            plan={"mode": "quick", "size": 110_000_000_000, "block_size": 4096, "seed": 42,
                  "confidence": 0.99, "residual": 0.001, "samples": 4605,
                  "algorithm": "phonewipe-plan/1 (sha256 counter, stratified)"},
            samples_read=4605, bytes_read=4605 * 4096, digest="ab" * 32),
        post_state={"factory_reset": True}, asset_tag="A-000123", batch_id="batch-7")


def blocked_record() -> Record:
    return Record(
        record_id="7d1e2f3a-0000-4bbb-8ccc-123456789abc", job_id="job-2", outcome=Outcome.BLOCKED,
        created_at="2025-10-02T08:00:00.000Z",
        device=Identity(platform="android", serial="ZX1G22", frp=True),
        endpoint=Endpoint(plugin="adb", mode="adb", address="usb:1-1"),
        operator=Operator(name="Ada Lovelace", organization=ORG),
        destination=Destination(kind="recycling"), tool={"name": "phonewipe", "version": "0.1.0"},
        findings=(Finding(Severity.BLOCKER, "frp", "Factory Reset Protection is on; remove "
                                                   "the Google account in Settings"),),
        reason="no erase method is available for this device in this mode; see the findings")


def failed_record() -> Record:
    r = erased_record(7)
    v = replace(r.verification, status="failed", failures_total=12,
                failures=tuple(SampleFailure(4096 * i, "plaintext: 'BEGIN:VCARD'")
                               for i in range(6)), reason="12 samples did not match")
    return replace(r, outcome=Outcome.FAILED, verification=v,
                   reason="verification failed; send the device to physical destruction")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    init_keys(d, ORG, "Example Refurb certificate signing")
    return d


@pytest.fixture(scope="module")
def other_keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other-keys")
    init_keys(d, "Mallory Ltd", "Mallory signing")
    return d


@pytest.fixture(scope="module")
def signer(keydir: Path) -> CertificateSigner:
    return CertificateSigner(keydir)


@pytest.fixture(scope="module")
def signed(signer: CertificateSigner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signer.write_certificate(erased_record(), tmp_path_factory.mktemp("out"))


def pdf_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the interop tests: {name} (poppler-utils) is not installed")
    pytest.skip(f"{name} (poppler-utils) not installed")


def not_ok(report) -> str:
    assert not report.ok
    assert report.problems
    return " | ".join(report.problems)


# ---------------------------------------------------------------------------------------
# keys

def test_init_keys_writes_private_key_0600(tmp_path: Path) -> None:
    paths = init_keys(tmp_path / "k", ORG, "signing")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert paths.cert.exists()
    info = describe(tmp_path / "k")
    assert "O=Example Refurb GmbH" in info["subject"] and "CN=signing" in info["subject"]
    assert len(info["fingerprint_sha256"]) == 64
    assert info["not_after"][:4] >= "2035"
    assert not [p for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")]


def test_init_keys_refuses_to_overwrite(tmp_path: Path) -> None:
    init_keys(tmp_path, ORG, "signing")
    before = (tmp_path / "signing-key.pem").read_bytes()
    with pytest.raises(PhonewipeError) as e:
        init_keys(tmp_path, ORG, "signing")
    assert "--force" in e.value.advice
    assert (tmp_path / "signing-key.pem").read_bytes() == before
    init_keys(tmp_path, ORG, "signing", force=True)
    assert (tmp_path / "signing-key.pem").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "signing-key.pem").stat().st_mode) == 0o600


def test_missing_or_corrupt_key_is_keymissing(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing) as e:
        load_signing_material(tmp_path)
    assert e.value.message.startswith(f"no signing key in {tmp_path}")
    assert f"phonewipe keys init --dir {tmp_path}" in e.value.advice
    with pytest.raises(KeyMissing):
        CertificateSigner(tmp_path)
    (tmp_path / "signing-key.pem").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n")
    (tmp_path / "signing-cert.pem").write_text("nonsense")
    with pytest.raises(KeyMissing):
        load_signing_material(tmp_path)


def test_import_pkcs12(tmp_path: Path) -> None:
    key, cert = make_self_signed(ORG, "imported")
    p12 = tmp_path / "org.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"org", key, cert, None, serialization.BestAvailableEncryption(b"s3cret")))
    with pytest.raises(PhonewipeError):
        import_pkcs12(p12, "wrong", tmp_path / "keys")
    paths = import_pkcs12(p12, "s3cret", tmp_path / "keys")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    material = load_signing_material(tmp_path / "keys")
    assert material.cert == cert
    data = CertificateSigner(tmp_path / "keys").sign_record(erased_record())
    assert verify_bytes(data, tmp_path / "x.pdf").ok


# ---------------------------------------------------------------------------------------
# rendering

def test_render_is_deterministic() -> None:
    a, b = render_pdf(erased_record()), render_pdf(erased_record())
    assert a.startswith(b"%PDF-") and a == b
    assert render_pdf(erased_record(1)) != a


def test_visible_fields_print_unknown_never_none() -> None:
    fields = dict(visible_fields(blocked_record(), 3))  # as layout 3 printed them
    assert fields["Media / device: Manufacturer"] == "unknown"
    assert fields["Media / device: IMEI"] == "unknown"
    assert fields["Certificate: Result"] == "NOT ERASED"
    assert fields["Sanitization: Sanitization"] == "not performed"
    assert fields["Certificate: Record SHA-256"] == blocked_record().sha256()
    assert all(v and v != "None" for v in fields.values())
    # the signature line names the key's subject and fingerprint, not the config's organization
    from phonewipe.certificates.fields import SigningInfo, visible_sections
    signing = SigningInfo("CN=Example Refurb signing,O=Example Refurb GmbH", "ab" * 32)
    signature = dict(visible_sections(blocked_record(), 3, signing)[-1].rows)
    assert signature["Signed by"] == signing.subject
    assert signature["Signer SHA-256"] == "ab" * 32
    assert "station's own clock" in signature["Signing time"]
    # layout 2 printed the organization, and still renders so for old certificates
    old = dict(visible_sections(blocked_record(), 2)[-1].rows)
    assert "Digitally signed (PAdES) by Example Refurb GmbH" in old["Signature"]


def test_wrap_breaks_long_words() -> None:
    lines = wrap("x" * 400 + " tail", "Helvetica", 8, 100)
    assert len(lines) > 4 and "".join(lines).replace(" ", "").startswith("x" * 400)
    from reportlab.pdfbase.pdfmetrics import stringWidth
    assert all(stringWidth(line, "Helvetica", 8) <= 100 for line in lines)


def test_text_outside_the_standard_fonts_is_transliterated() -> None:
    assert printable("Łukasz Żółć 山田 Müller") == "Lukasz Zólc ?? Müller"
    assert printable("plain ascii") == "plain ascii"


def test_long_record_spans_pages_and_verifies(signer: CertificateSigner, tmp_path: Path) -> None:
    many = tuple(Finding(Severity.WARNING, f"w{i}", "a long warning " * 12 + "Z" * 150)
                 for i in range(40))
    record = replace(erased_record(3), findings=many,
                     operator=replace(erased_record().operator, name="Łukasz Żółć 山田 " * 3))
    assert render_pdf(record).count(b"/Type /Page\n") >= 2
    report = verify_bytes(signer.sign_record(record), tmp_path / "long.pdf")
    assert report.ok, report.problems


# ---------------------------------------------------------------------------------------
# signing and verification

@pytest.mark.parametrize("make", [erased_record, blocked_record, failed_record])
def test_sign_then_verify_ok(signer: CertificateSigner, tmp_path: Path, make) -> None:
    record = make()
    path = signer.write_certificate(record, tmp_path)
    assert path.name == certificate_filename(record)
    report = verify_certificate(path)
    assert report.ok, report.problems
    assert report.record == record
    assert "Example Refurb GmbH" in (report.signer_subject or "")
    assert report.signed_at
    assert not report.trusted  # nothing pinned
    assert show_certificate(path) == record


def test_pdfsig_says_signature_is_valid(signed: Path) -> None:
    out = subprocess.run([pdf_tool("pdfsig"), str(signed)], capture_output=True, text=True,
                         timeout=60).stdout
    assert "Signature is Valid" in out
    assert "Total document signed" in out


def test_pdftotext_shows_serial_result_and_standard(signed: Path) -> None:
    text = subprocess.run([pdf_tool("pdftotext"), str(signed), "-"], capture_output=True,
                          text=True, timeout=60).stdout
    assert "R58M12ABCDE" in text
    assert "PASS" in text
    assert "NIST SP 800-88" in text and STANDARD_LINE in text
    assert erased_record().sha256()[:32] in text


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75, 0.99])
def test_one_byte_changed_fails(signed: Path, tmp_path: Path, where: float) -> None:
    data = bytearray(signed.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x01
    assert not_ok(verify_bytes(bytes(data), tmp_path / "t.pdf"))


def test_embedded_record_swapped_by_incremental_update_fails(signed: Path, tmp_path: Path) -> None:
    forged = replace(erased_record(), device=replace(erased_record().device, serial="OTHER1"))
    data = swap_embedded_record(signed.read_bytes(), forged.canonical_json())
    assert verify_bytes(data, tmp_path / "x.pdf").record == forged  # the swap took effect
    problems = not_ok(verify_bytes(data, tmp_path / "x.pdf"))
    assert "whole file" in problems


def test_reembedded_record_signed_by_other_key_fails(other_keydir: Path, keydir: Path,
                                                     tmp_path: Path) -> None:
    """A forger re-signs the genuine page with an edited record: the page no longer
    matches the record, and pinning the real signer rejects it."""
    genuine = blocked_record()
    forged = replace(genuine, outcome=Outcome.ERASED_VERIFIED, reason="")
    data = CertificateSigner(other_keydir).sign_pdf(render_pdf(genuine), forged.canonical_json())
    problems = not_ok(verify_bytes(data, tmp_path / "f.pdf"))
    assert "SHA-256" in problems or "does not match the visible certificate" in problems
    # a fully consistent forgery is intact, and its signer is not the trusted one
    consistent = CertificateSigner(other_keydir).sign_record(forged)
    path = tmp_path / "consistent.pdf"
    path.write_bytes(consistent)
    assert verify_certificate(path).verdict == "untrusted"
    report = verify_certificate(path, trust=keydir / "signing-cert.pem")
    assert report.ok and not report.trusted and report.verdict == "untrusted"


def test_same_hash_but_different_visible_page_fails(signer: CertificateSigner, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The QR code and printed hash match the record, but a printed field was changed."""
    import phonewipe.certificates.render as render_mod
    genuine = erased_record()
    real = render_mod.visible_sections

    def doctored(record: Record, layout: int, *signing):
        return [replace(sec, rows=tuple((k, "SM-X999" if k == "Model" else v)
                                        for k, v in sec.rows))
                for sec in real(record, layout, *signing)]

    monkeypatch.setattr(render_mod, "visible_sections", doctored)
    page = render_pdf(genuine, signing=signer.signing_info)
    monkeypatch.setattr(render_mod, "visible_sections", real)
    assert page != render_pdf(genuine, signing=signer.signing_info)
    data = signer.sign_pdf(page, genuine.canonical_json())
    problems = not_ok(verify_bytes(data, tmp_path / "d.pdf"))
    assert "embedded record does not match the visible certificate" in problems


def test_changed_signature_padding_fails(signed: Path, tmp_path: Path) -> None:
    data = signed.read_bytes()
    start = data.index(b"/Contents <") + len(b"/Contents <")
    end = data.index(b">", start)
    pad = data.rindex(b"00", start, end) - 1
    tampered = data[:pad] + b"1" + data[pad + 1:]
    assert "altered after signing" in not_ok(verify_bytes(tampered, tmp_path / "p.pdf"))
    upper = next(i for i in range(start, end) if data[i:i + 1] in b"ABCDEF")
    same_value = data[:upper] + data[upper:upper + 1].lower() + data[upper + 1:]
    assert "altered after signing" in not_ok(verify_bytes(same_value, tmp_path / "c.pdf"))


@pytest.mark.parametrize("content", [b"", b"hello, not a pdf", b"%PDF-1.7\n%garbage\n" * 50,
                                     bytes(range(256)) * 40])
def test_garbage_files_fail_without_exception(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(content)
    assert not_ok(verify_certificate(path))


def test_truncated_and_missing_files_fail(signed: Path, tmp_path: Path) -> None:
    data = signed.read_bytes()
    for cut in (len(data) // 2, len(data) - 40):
        assert not_ok(verify_bytes(data[:cut], tmp_path / "cut.pdf"))
    assert "cannot read" in not_ok(verify_certificate(tmp_path / "nope.pdf"))
    assert "not signed" in not_ok(verify_bytes(render_pdf(erased_record()), tmp_path / "u"))
    with pytest.raises(CertificateInvalid):
        show_certificate(tmp_path / "nope.pdf")
    (tmp_path / "junk.pdf").write_bytes(b"junk")
    with pytest.raises(CertificateInvalid):
        show_certificate(tmp_path / "junk.pdf")


def test_trust_pins_the_signer(signed: Path, keydir: Path, other_keydir: Path) -> None:
    right = verify_certificate(signed, trust=keydir / "signing-cert.pem")
    assert right.ok and right.trusted, right.problems
    wrong = verify_certificate(signed, trust=other_keydir / "signing-cert.pem")
    assert wrong.ok and not wrong.trusted and wrong.verdict == "untrusted"
    assert "not one of the pinned signers" in wrong.trust_note


def test_bad_trust_file_is_an_operator_error(signed: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(PhonewipeError):
        verify_certificate(signed, trust=tmp_path / "bad.pem")


def test_batch_of_50_shares_one_signer(keydir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real = sign_mod.load_signing_material
    monkeypatch.setattr(sign_mod, "load_signing_material",
                        lambda d: loads.append(d) or real(d))
    batch_signer = CertificateSigner(keydir)
    paths = [batch_signer.write_certificate(erased_record(i), tmp_path) for i in range(50)]
    assert len(loads) == 1
    assert len(set(paths)) == 50 and all(p.exists() for p in paths)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    for p in paths[::10]:
        assert verify_certificate(p).ok


def test_filenames() -> None:
    assert certificate_filename(erased_record()) == "R58M12ABCDE-0b6f0000.pdf"
    assert certificate_filename(erased_record(serial=None)) == "unknown-0b6f0000.pdf"
    assert certificate_filename(erased_record(serial="../a b/c")) == "a_b_c-0b6f0000.pdf"


def test_unwritable_output_is_output_error(signer: CertificateSigner, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as e:
        signer.write_certificate(erased_record(), blocker / "sub")
    assert e.value.message.startswith(f"cannot write certificate to {blocker / 'sub'}")
    assert "writable --out" in e.value.advice


def test_signed_update_carries_attachment_and_layout_marker(signed: Path) -> None:
    """The signed update adds the attachment (AF /Data) and the layout marker."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    reader = PdfFileReader(io.BytesIO(signed.read_bytes()), strict=False)
    assert int(reader.root[sign_mod.LAYOUT_KEY]) >= 1
    af = reader.root["/AF"]
    assert af[0].get_object()["/AFRelationship"] == generic.pdf_name("/Data")


OLD_CERTIFICATES = Path(__file__).parent.parent / "fixtures" / "certificates" / "layout-1"


@pytest.mark.parametrize("pdf", sorted(OLD_CERTIFICATES.glob("*.pdf")), ids=lambda p: p.name)
def test_certificates_from_earlier_versions_still_verify(pdf: Path, tmp_path: Path) -> None:
    report = verify_certificate(pdf, trust=OLD_CERTIFICATES / "signing-cert.pem")
    assert report.ok, report.problems
    assert report.record.schema == "phonewipe.record/1"
    data = bytearray(pdf.read_bytes())
    data[len(data) // 2] ^= 0x01
    assert not_ok(verify_bytes(bytes(data), tmp_path / pdf.name))


def test_pages_are_the_same_bytes_with_and_without_reportlabs_accelerators() -> None:
    """rl-accel speeds rendering up; a certificate drawn where it is installed must
    re-render identically where it is not (and the reverse), or `cert verify` would fail."""
    import sys
    script = (
        "import sys, hashlib\n"
        "if sys.argv[1] == 'py': sys.modules['_rl_accel'] = None\n"
        "from test_certificates import erased_record, failed_record, blocked_record\n"
        "from phonewipe.certificates.render import render_pdf\n"
        "from phonewipe.certificates.fields import SigningInfo\n"
        "h = hashlib.sha256()\n"
        "for layout in (1, 2, 3, 4):\n"
        "    for r in (erased_record(), failed_record(), blocked_record()):\n"
        "        h.update(render_pdf(r, layout, SigningInfo('CN=x', 'ab' * 32)))\n"
        "print(h.hexdigest())\n")
    here = str(Path(__file__).parent)
    digests = {subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                              cwd=here, timeout=120, check=True).stdout for mode in ("py", "c")}
    assert len(digests) == 1
