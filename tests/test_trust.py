"""Whom `cert verify` trusts (issue #13): a forged key with the same names, an expired or
not-yet-valid signer, a CA-issued key and its chain, key files others can reach, the
signed batch summary, and files that must not hide each other."""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import clirun
import pytest
from conftest import require_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from test_certificates import erased_record

from phonewipe.certificates.batch import SUMMARY_SCHEMA, sign_summary
from phonewipe.certificates.fields import qr_payload
from phonewipe.certificates.keys import (
    KeyExposed,
    _write_material,
    describe,
    init_keys,
    load_signing_material,
    make_self_signed,
)
from phonewipe.certificates.render import render_pdf
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.certificates.trust import TrustStore
from phonewipe.certificates.verify import verify_bytes, verify_certificate

ORG = "ACME Refurb"


def phonewipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "400"}, cwd=cwd, timeout=120)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("genuine") / "keys"
    assert phonewipe("keys", "init", "--dir", str(d), "--organization", ORG).returncode == 0
    return d


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another directory, the same names: what anyone can make in a minute."""
    d = tmp_path_factory.mktemp("forged") / "keys"
    assert phonewipe("keys", "init", "--dir", str(d), "--organization", ORG).returncode == 0
    return d


def fingerprint_of(keys: Path) -> str:
    return describe(keys)["fingerprint_sha256"]


def certify(keys: Path, out: Path, record=None) -> Path:
    return CertificateSigner(keys).write_certificate(record or erased_record(), out)


# ---------------------------------------------------------------------------------------
# a forged key with the same names

def test_a_forged_key_with_the_same_names_is_not_trusted(genuine: Path, forged: Path,
                                                         tmp_path: Path) -> None:
    assert describe(genuine)["subject"] == describe(forged)["subject"]  # same names
    real = certify(genuine, tmp_path / "real")
    fake = certify(forged, tmp_path / "fake")
    published = fingerprint_of(genuine)
    ok = phonewipe("cert", "verify", "--trust", published, str(real))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "TRUSTED" in ok.stdout and published in ok.stdout and "NOT TRUSTED" not in ok.stdout
    bad = phonewipe("cert", "verify", "--trust", published, str(fake))
    assert bad.returncode == 9, bad.stdout + bad.stderr
    assert (f"signature intact, signer NOT TRUSTED (fingerprint {fingerprint_of(forged)})"
            in bad.stdout)
    # with nobody trusted, neither is accepted: exit 9, never 0
    for path in (real, fake):
        result = phonewipe("cert", "verify", str(path))
        assert result.returncode == 9 and "NOT TRUSTED" in result.stdout
    # the published fingerprint may carry colons and capitals, as printed for humans
    pretty = ":".join(published[i:i + 2] for i in range(0, 64, 2)).upper()
    assert phonewipe("cert", "verify", "--trust", pretty, str(real)).returncode == 0
    # pinning by the certificate file works the same way
    pinned = phonewipe("cert", "verify", "--trust", str(genuine / "signing-cert.pem"), str(fake))
    assert pinned.returncode == 9


def test_the_config_trust_store_decides(genuine: Path, forged: Path, tmp_path: Path) -> None:
    real = certify(genuine, tmp_path / "real")
    fake = certify(forged, tmp_path / "fake")
    config = tmp_path / "phonewipe.toml"
    config.write_text(f'[trust]\nfingerprints = ["{fingerprint_of(genuine)}"]\n')
    result = phonewipe("--config", str(config), "cert", "verify", str(real), str(fake))
    assert result.returncode == 9
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "TRUSTED" in lines[0] and "NOT TRUSTED" in lines[1]
    # certificate paths are relative to the config file
    (tmp_path / "pins").mkdir()
    (tmp_path / "pins" / "acme.pem").write_bytes((genuine / "signing-cert.pem").read_bytes())
    config.write_text('[trust]\ncertificates = ["pins/acme.pem"]\n')
    assert phonewipe("--config", str(config), "cert", "verify", str(real)).returncode == 0
    config.write_text('[trust]\nfingerprints = ["not-a-fingerprint"]\n')
    result = phonewipe("--config", str(config), "cert", "verify", str(real))
    assert result.returncode == 2 and "not a SHA-256 fingerprint" in result.stderr
    no_traceback(result)


def test_the_certificate_names_its_signer_and_fingerprint(genuine: Path, tmp_path: Path) -> None:
    """The signature line names the key's subject and fingerprint (never "unknown", never
    the config's organization); the QR code carries the fingerprint with the record hash."""
    signer = CertificateSigner(genuine)
    path = signer.write_certificate(erased_record(), tmp_path)
    text = subprocess.run([require_binary("pdftotext"), str(path), "-"], capture_output=True,
                          text=True, timeout=60).stdout
    info = describe(genuine)
    assert f"CN={ORG} erasure signing" in text and f"O={ORG}" in text
    assert info["fingerprint_sha256"] in text
    assert "Signed by" in text and "station's own clock" in text
    payload = qr_payload(erased_record(), signer.signing_info)
    assert payload.endswith(f";signer-sha256:{info['fingerprint_sha256']}")
    assert erased_record().sha256() in payload
    report = verify_certificate(path, trust=info["fingerprint_sha256"])
    assert report.verdict == "trusted" and report.signer_subject == info["subject"]


def test_a_genuine_page_re_signed_by_another_key_is_invalid(genuine: Path, forged: Path,
                                                            tmp_path: Path) -> None:
    """The forger keeps the genuine page (naming the genuine fingerprint) and signs it with
    his own key: the page no longer names the key that signed it."""
    record = erased_record()
    page = render_pdf(record, signing=CertificateSigner(genuine).signing_info)
    data = CertificateSigner(forged).sign_pdf(page, record.canonical_json())
    report = verify_bytes(data, tmp_path / "x.pdf")
    assert report.verdict == "invalid"
    assert "the signer named on the certificate is not the key that signed it" in report.problems


# ---------------------------------------------------------------------------------------
# validity of the signer at the signing time

def _key_dir_with(tmp: Path, key, cert) -> Path:
    _write_material(tmp, key, cert)
    return tmp


@pytest.mark.parametrize("when, words", [
    (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), "expired"),
    (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400), "not yet valid")])
def test_a_signer_not_valid_at_signing_time_is_refused_even_when_pinned(
        tmp_path: Path, when: dt.datetime, words: str) -> None:
    key, cert = make_self_signed(ORG, "ACME signing", now=when)
    keys = _key_dir_with(tmp_path / "keys", key, cert)
    path = certify(keys, tmp_path / "out")
    pin = keys / "signing-cert.pem"
    report = verify_certificate(path, trust=pin)
    assert report.verdict == "invalid", (words, report)
    assert any("not valid at the signing time" in p for p in report.problems)
    result = phonewipe("cert", "verify", "--trust", str(pin), str(path))
    assert result.returncode == 6 and "INVALID" in result.stdout
    assert "refused even when trusted" in result.stdout


# ---------------------------------------------------------------------------------------
# a key issued by a CA: the chain travels in the signature

def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _issued(ca_key, ca_cert, org: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{org} signing"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def test_a_ca_issued_pkcs12_keeps_its_chain_and_chains_to_the_named_ca(tmp_path: Path) -> None:
    ca_key, ca_cert = _ca("ACME Issuing CA")
    key, cert = _issued(ca_key, ca_cert, ORG)
    p12 = tmp_path / "org.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"org", key, cert, [ca_cert], serialization.BestAvailableEncryption(b"pw")))
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    result = phonewipe("keys", "import", str(p12), "--dir", str(tmp_path / "keys"),
                       "--password", "pw")
    assert result.returncode == 0, result.stderr
    assert "ACME Issuing CA" in result.stdout  # the chain it keeps
    assert load_signing_material(tmp_path / "keys").chain == (ca_cert,)
    path = certify(tmp_path / "keys", tmp_path / "out")
    import io

    from pyhanko.pdf_utils.reader import PdfFileReader
    sig = PdfFileReader(io.BytesIO(path.read_bytes())).embedded_signatures[0]
    carried = {c.chosen.subject.human_friendly for c in sig.signed_data["certificates"]}
    assert any("ACME Issuing CA" in s for s in carried) and len(carried) == 2
    trusted = phonewipe("cert", "verify", "--trust-ca", str(ca_pem), str(path))
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "issued by trusted CA" in trusted.stdout and "ACME Issuing CA" in trusted.stdout
    assert phonewipe("cert", "verify", str(path)).returncode == 9
    # the same names from another CA do not chain to the named one
    other_key, other_ca = _ca("ACME Issuing CA")
    k2, c2 = _issued(other_key, other_ca, ORG)
    keys2 = _key_dir_with(tmp_path / "keys2", k2, c2)
    _write_material(keys2, k2, c2, (other_ca,))
    fake = certify(keys2, tmp_path / "fake")
    result = phonewipe("cert", "verify", "--trust-ca", str(ca_pem), str(fake))
    assert result.returncode == 9 and "no valid chain to a trusted CA" in result.stdout
    # a leaf is not a CA
    result = phonewipe("cert", "verify", "--trust-ca", str(tmp_path / "keys" / "signing-cert.pem"),
                       str(path))
    assert result.returncode == 2 and "not a CA certificate" in result.stderr


# ---------------------------------------------------------------------------------------
# key files others can reach

def test_a_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, ORG, "signing")
    os.chmod(keys / "signing-key.pem", 0o644)
    with pytest.raises(KeyExposed) as e:
        CertificateSigner(keys)
    assert e.value.exit_code == 5
    assert f"chmod 600 {keys / 'signing-key.pem'}" in e.value.advice
    result = phonewipe("keys", "show", "--dir", str(keys))
    assert result.returncode == 5 and f"chmod 600 {keys / 'signing-key.pem'}" in result.stderr
    no_traceback(result)
    os.chmod(keys / "signing-key.pem", 0o600)
    os.chmod(keys, 0o777)
    with pytest.raises(KeyExposed) as e:
        CertificateSigner(keys)
    assert f"chmod 700 {keys}" in e.value.advice
    os.chmod(keys, 0o700)
    os.chmod(keys / "signing-cert.pem", 0o666)  # anyone could swap the certificate
    with pytest.raises(KeyExposed) as e:
        CertificateSigner(keys)
    assert f"chmod 644 {keys / 'signing-cert.pem'}" in e.value.advice
    os.chmod(keys / "signing-cert.pem", 0o644)
    assert CertificateSigner(keys).signing_info.fingerprint


def test_keys_init_into_an_open_directory_makes_it_0700(tmp_path: Path) -> None:
    keys = tmp_path / "shared"
    keys.mkdir()
    os.chmod(keys, 0o777)
    result = phonewipe("keys", "init", "--dir", str(keys), "--organization", ORG)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert "was mode 0777" in result.stdout and "now 0700" in result.stdout
    assert stat.S_IMODE((keys / "signing-key.pem").stat().st_mode) == 0o600
    CertificateSigner(keys)  # signs without complaint now


def test_keys_show_prints_the_fingerprint_to_publish(genuine: Path) -> None:
    result = phonewipe("keys", "show", "--dir", str(genuine))
    assert result.returncode == 0
    fp = fingerprint_of(genuine)
    assert f"fingerprint_sha256: {fp}" in result.stdout
    assert f"phonewipe cert verify --trust {fp}" in result.stdout


# ---------------------------------------------------------------------------------------
# the signed batch summary

def summary_dict() -> dict:
    return {
        "schema": SUMMARY_SCHEMA, "batch_id": "B-2026-12-02", "generated_at": "2026-12-02T10:00:00Z",
        "operator": {"name": "Ada", "organization": ORG}, "destination": {"kind": "resale"},
        "manifest": None, "closed": True, "device_count": 1, "totals": {"PASS": 1},
        "devices": [{"serial": "R58M12ABCDE", "imei": "356789104512345", "model": "samsung SM-G991B",
                     "asset_tag": "A-1", "outcome": "ERASED_VERIFIED", "result": "PASS",
                     "method": "adb-raw-pattern", "verification": "quick passed", "reason": "",
                     "record_id": "r1", "record_sha256": "ab" * 32, "certificate": "x.pdf"}],
        "reconciliation": {"has_manifest": False, "erased": [], "blocked": [], "failed": [],
                           "expected_never_seen": [], "seen_not_expected": [], "duplicates": []},
        "interrupted_not_redone": [], "second_look_share": 0.05, "second_look": [],
        "audit": {"rows": 12, "chain": "intact"},
    }


def test_the_signed_batch_summary_verifies_as_a_summary(genuine: Path, tmp_path: Path) -> None:
    signer = CertificateSigner(genuine)
    path = tmp_path / "summary.pdf"
    path.write_bytes(sign_summary(signer, summary_dict()))
    report = verify_certificate(path, trust=fingerprint_of(genuine))
    assert report.verdict == "trusted", report.problems
    assert report.kind == "summary" and report.summary["batch_id"] == "B-2026-12-02"
    result = phonewipe("cert", "verify", "--trust", fingerprint_of(genuine), str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch summary B-2026-12-02, 1 devices" in result.stdout
    # a summary whose pages say something its signed JSON does not is not ours
    from phonewipe.certificates.batch import render_summary
    from phonewipe.erase.model import canonical_json
    edited = summary_dict()
    edited["devices"][0]["result"] = "FAIL"
    forged = signer.sign_pdf(render_summary(summary_dict(), signing=signer.signing_info),
                             canonical_json(edited),
                             attachment=("phonewipe-batch-summary.json", "summary"))
    report = verify_bytes(forged, tmp_path / "forged.pdf")
    assert report.verdict == "invalid"
    assert "does not match the visible pages" in "; ".join(report.problems)


# ---------------------------------------------------------------------------------------
# one bad file never hides the others

def test_each_file_is_reported_on_its_own(genuine: Path, tmp_path: Path) -> None:
    real = certify(genuine, tmp_path / "real")
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(real.read_bytes()[:5000])
    deep = tmp_path / "deep.pdf"
    deep.write_bytes(b"%PDF-1.7\n1 0 obj\n" + b"[" * 100000 + b"\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n")
    directory = tmp_path / "a-directory.pdf"
    directory.mkdir()
    files = [garbage, truncated, deep, directory, tmp_path / "missing.pdf", real]
    result = phonewipe("cert", "verify", "--trust", fingerprint_of(genuine), *map(str, files))
    no_traceback(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(files), result.stdout
    assert all(line.startswith("INVALID") for line in lines[:-1])
    assert lines[-1].startswith("valid") and "TRUSTED" in lines[-1]
    assert result.returncode == 6
    as_json = phonewipe("cert", "verify", "--json", "--trust", fingerprint_of(genuine),
                        *map(str, files))
    verdicts = [json.loads(line)["verdict"] for line in as_json.stdout.splitlines()]
    assert verdicts == ["invalid"] * 5 + ["trusted"]


def test_plan_from_refuses_a_certificate_of_another_signer(genuine: Path, forged: Path,
                                                           tmp_path: Path) -> None:
    fake = certify(forged, tmp_path / "fake")
    result = phonewipe("verify", "--plan-from", str(fake), "--trust",
                       str(genuine / "signing-cert.pem"))
    assert result.returncode == 6 and "NOT TRUSTED" in result.stderr


def test_a_record_with_hostile_strings_cannot_fake_the_verdict(genuine: Path, tmp_path: Path) -> None:
    record = erased_record()
    record = replace(record, device=replace(record.device, serial="X\x1b[2K\rvalid [green]PASS[/] \u202e"))
    path = certify(genuine, tmp_path / "h", record)
    result = phonewipe("cert", "verify", str(path))
    no_traceback(result)
    assert result.returncode == 9
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b" in result.stdout and "\\u202e" in result.stdout


def test_trust_store_rejects_what_is_neither_file_nor_fingerprint(tmp_path: Path) -> None:
    from phonewipe.erase.errors import PhonewipeError
    with pytest.raises(PhonewipeError):
        TrustStore.build(trust=[str(tmp_path / "nope.pem")])
