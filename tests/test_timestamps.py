"""Trusted time (issue #13): RFC 3161 timestamps from a real TSA on loopback (certomancer's
Animator, served by werkzeug; see tests/tsa.py), shown by `cert verify` and carried in the
file pdfsig validates; the signer's validity checked against the timestamp's time."""
from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
from pathlib import Path
from typing import Iterator

import click
import clirun
import pytest
from asn1crypto import cms
from conftest import require_binary
from test_certificates import erased_record
from test_trust import summary_dict
from tsa import LoopbackTSA, start_tsa

from phonewipe.certificates.keys import _write_material, describe, init_keys, make_self_signed
from phonewipe.certificates.sign import CertificateSigner, TimestampUnavailable
from phonewipe.certificates.trust import TrustStore
from phonewipe.certificates.verify import verify_bytes, verify_certificate
from phonewipe.erase.ports import free_port


def phonewipe(*args: str) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "400"}, timeout=120)


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackTSA]:
    server = start_tsa(tmp_path_factory.mktemp("tsa"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ts-keys") / "keys"
    init_keys(d, "ACME Refurb", "ACME Refurb erasure signing")
    return d


@pytest.fixture(scope="module")
def stamped(tsa: LoopbackTSA, keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    signer = CertificateSigner(keys, tsa_url=tsa.url)
    return signer.write_certificate(erased_record(), tmp_path_factory.mktemp("stamped"))


def fp(keys: Path) -> str:
    return describe(keys)["fingerprint_sha256"]


def token_time(path: Path) -> dt.datetime:
    from pyhanko.pdf_utils.reader import PdfFileReader
    sig = PdfFileReader(io.BytesIO(path.read_bytes())).embedded_signatures[0]
    [attr] = [a for a in sig.signer_info["unsigned_attrs"]
              if a["type"].native == "signature_time_stamp_token"]
    return attr["values"][0]["content"]["encap_content_info"]["content"].parsed["gen_time"].native


def test_a_timestamped_certificate_shows_its_timestamp(stamped: Path, tsa: LoopbackTSA,
                                                       keys: Path) -> None:
    report = verify_certificate(stamped, trust=TrustStore.build(trust=[fp(keys)],
                                                                trust_ca=[tsa.root_pem]))
    assert report.verdict == "trusted", report.problems
    assert report.timestamp_trusted and "Loopback Test TSA" in report.timestamp_by
    assert dt.datetime.fromisoformat(report.timestamp) == token_time(stamped)
    assert report.time_source.startswith("RFC 3161 timestamp by")
    result = phonewipe("cert", "verify", "--trust", fp(keys), "--trust-ca", str(tsa.root_pem),
                       str(stamped))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"time: RFC 3161 timestamp {report.timestamp} by CN=Loopback Test TSA" in result.stdout
    # a TSA nobody trusts: the timestamp is shown, and said not to prove the time
    result = phonewipe("cert", "verify", "--trust", fp(keys), str(stamped))
    assert result.returncode == 0
    assert "(authority not trusted)" in result.stdout and "--trust-ca" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr and not result.stderr.strip()


def test_validation_data_is_embedded_in_the_signed_revision(stamped: Path, tsa: LoopbackTSA,
                                                            keys: Path) -> None:
    """B-LT where at hand: the signer's and the TSA's certificates and the CRL the TSA
    certificate names, in a DSS the signature covers (nothing appended after signing)."""
    from asn1crypto import crl as asn1_crl
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    reader = PdfFileReader(io.BytesIO(stamped.read_bytes()))
    dss = DocumentSecurityStore.read_dss(reader)
    subjects = {c.subject.human_friendly for c in dss.load_certs()}
    assert any("Loopback Test TSA" in s for s in subjects)
    assert any("ACME Refurb erasure signing" in s for s in subjects)
    [crl_ref] = dss.crls
    crl = asn1_crl.CertificateList.load(crl_ref.get_object().data)
    assert "Loopback Test Root CA" in crl.issuer.human_friendly
    report = verify_certificate(stamped, trust=TrustStore.build(trust=[fp(keys)],
                                                                trust_ca=[tsa.root_pem]))
    assert report.verdict == "trusted"
    assert any("PAdES B-LT: 3 certificates, 1 CRLs" in n for n in report.notes), report.notes


def test_the_page_says_where_its_time_comes_from(stamped: Path, keys: Path, tmp_path: Path) -> None:
    pdftotext = require_binary("pdftotext")
    text = subprocess.run([pdftotext, str(stamped), "-"], capture_output=True, text=True).stdout
    assert "RFC 3161 timestamp from a time-stamping authority" in text
    plain = CertificateSigner(keys).write_certificate(erased_record(), tmp_path)
    text = subprocess.run([pdftotext, str(plain), "-"], capture_output=True, text=True).stdout
    assert "the signing station's own clock (no trusted timestamp)" in text
    result = phonewipe("cert", "verify", "--trust", fp(keys), str(plain))
    assert "by the signing station's own clock, no timestamp" in result.stdout


def test_pdfsig_validates_the_timestamped_signature_and_carries_the_token(
        stamped: Path, tmp_path: Path) -> None:
    pdfsig = require_binary("pdfsig")
    out = subprocess.run([pdfsig, str(stamped)], capture_output=True, text=True, timeout=60).stdout
    assert "Signature Validation: Signature is Valid." in out, out
    assert "Total document signed" in out
    # poppler prints the signing time; the token's time is within a second or two of it
    shown = re.search(r"Signing Time: (.+)", out).group(1).strip()
    when = dt.datetime.strptime(shown, "%b %d %Y %H:%M:%S")
    token = token_time(stamped).astimezone().replace(tzinfo=None)
    assert abs((token - when).total_seconds()) <= 3, (shown, token)
    # the CMS pdfsig validated carries the RFC 3161 token (pdfsig -dump writes it out)
    subprocess.run([pdfsig, "-dump", str(stamped.resolve())], cwd=tmp_path, capture_output=True,
                   timeout=60, check=True)
    [dumped] = list(tmp_path.glob("*.sig0"))
    info = cms.ContentInfo.load(dumped.read_bytes())
    attrs = info["content"]["signer_infos"][0]["unsigned_attrs"]
    assert [a["type"].native for a in attrs] == ["signature_time_stamp_token"]


def test_a_stripped_timestamp_is_caught(stamped: Path, tmp_path: Path) -> None:
    """Removing the token (not covered by the signature) leaves a page that promises a
    timestamp the signature no longer has."""
    data = stamped.read_bytes()
    start = data.index(b"/Contents <") + len(b"/Contents <")
    end = data.index(b">", start)
    der = bytes.fromhex(data[start:end].decode())
    info = cms.ContentInfo.load(der)
    # asn1crypto's DER after stripping: drop unsigned attrs, keep the length of the slot
    si = info["content"]["signer_infos"][0]
    si["unsigned_attrs"] = cms.CMSAttributes([])
    stripped = cms.ContentInfo.load(info.dump(force=True)).dump()
    hexed = stripped.hex().upper().encode()
    forged = data[:start] + hexed + b"0" * (end - start - len(hexed)) + data[end:]
    report = verify_bytes(forged, tmp_path / "stripped.pdf")
    assert report.verdict == "invalid"
    assert report.timestamp is None


def test_a_damaged_token_is_caught(stamped: Path, tmp_path: Path) -> None:
    data = bytearray(stamped.read_bytes())
    from pyhanko.pdf_utils.reader import PdfFileReader
    sig = PdfFileReader(io.BytesIO(bytes(data))).embedded_signatures[0]
    token = [a for a in sig.signer_info["unsigned_attrs"]][0]["values"][0]
    sig_value = token["content"]["signer_infos"][0]["signature"].native
    at = data.index(sig_value.hex().upper().encode()) + 10
    data[at:at + 1] = b"0" if data[at:at + 1] != b"0" else b"1"
    report = verify_bytes(bytes(data), tmp_path / "damaged.pdf")
    assert report.verdict == "invalid"


class _Backdated(dt.datetime):
    @classmethod
    def now(cls, tz=None):  # a station whose clock says 2001
        return dt.datetime(2001, 6, 1, tzinfo=dt.timezone.utc)


def test_a_backdated_clock_cannot_revive_an_expired_signer_when_timestamped(
        tsa: LoopbackTSA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signer valid 2000-2010 signs today on a station whose clock says 2001. Without a
    timestamp the claim is all there is (accepted, with a note); with a trusted timestamp
    the TSA's time decides: refused."""
    import pyhanko.sign.signers.pdf_signer as pdf_signer
    key, cert = make_self_signed("ACME Refurb", "ACME old key",
                                 now=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    keys = tmp_path / "old-keys"
    _write_material(keys, key, cert)
    pin = str(keys / "signing-cert.pem")
    monkeypatch.setattr(pdf_signer, "datetime", _Backdated)
    plain = CertificateSigner(keys).sign_record(erased_record())
    stamped = CertificateSigner(keys, tsa_url=tsa.url).sign_record(erased_record())
    monkeypatch.undo()
    store = TrustStore.build(trust=[pin], trust_ca=[tsa.root_pem])
    report = verify_bytes(plain, tmp_path / "plain.pdf", store)
    assert report.verdict == "trusted", report.problems
    assert any("expired since" in n for n in report.notes)
    report = verify_bytes(stamped, tmp_path / "stamped.pdf", store)
    assert report.verdict == "invalid"
    assert any("not valid at the signing time" in p for p in report.problems)


def test_the_summary_is_timestamped_too(tsa: LoopbackTSA, keys: Path, tmp_path: Path) -> None:
    from phonewipe.certificates.batch import sign_summary
    path = tmp_path / "summary.pdf"
    path.write_bytes(sign_summary(CertificateSigner(keys, tsa_url=tsa.url), summary_dict()))
    report = verify_certificate(path, trust=TrustStore.build(trust=[fp(keys)],
                                                             trust_ca=[tsa.root_pem]))
    assert report.verdict == "trusted" and report.kind == "summary", report.problems
    assert report.timestamp_trusted


def test_tsa_url_from_the_config_reaches_the_signer(tsa: LoopbackTSA, keys: Path,
                                                    tmp_path: Path) -> None:
    from phonewipe.cli import cli
    from phonewipe.common import load_signer
    from phonewipe.erase.config import load_config
    config = tmp_path / "phonewipe.toml"
    config.write_text(f'[signing]\ntsa_url = "{tsa.url}"\ntsa_timeout = 5\n'
                      f'[trust]\nfingerprints = ["{fp(keys)}"]\n'
                      f'ca_certificates = ["{tsa.root_pem}"]\n')
    loaded = load_config(config)
    assert loaded.tsa_url == tsa.url and loaded.tsa_timeout == 5
    with click.Context(cli, obj={"config": loaded}):
        signer = load_signer(keys)
    assert signer.tsa_url == tsa.url and signer.signing_info.timestamped
    path = signer.write_certificate(erased_record(), tmp_path / "out")
    result = phonewipe("--config", str(config), "cert", "verify", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RFC 3161 timestamp" in result.stdout and "not trusted" not in result.stdout
    config.write_text('[signing]\ntsa_url = "ftp://nowhere"\n')
    result = phonewipe("--config", str(config), "cert", "verify", str(path))
    assert result.returncode == 2 and "tsa_url" in result.stderr


def test_an_unreachable_tsa_stops_before_signing(keys: Path) -> None:
    port = free_port()  # nothing listens here (and no connection can talk to itself through it)
    with pytest.raises(TimestampUnavailable) as e:
        CertificateSigner(keys, tsa_url=f"http://127.0.0.1:{port}/tsa", tsa_timeout=2)
    assert e.value.exit_code == 5 and "tsa_url" in e.value.advice
