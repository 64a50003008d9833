"""`phonewipe cert validate`: the second person's validation written as a signed addendum
that `cert verify` recognises (#22 item 4)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_certificates import erased_record

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, organization="Example Refurb GmbH", common_name="Example signing")
    return directory


@pytest.fixture(scope="module")
def signer(keys: Path) -> CertificateSigner:
    return CertificateSigner(keys)


def test_cert_validate_writes_the_addendum_that_cert_verify_accepts(
        signer: CertificateSigner, keys: Path, tmp_path: Path) -> None:
    from phonewipe.cli import cli
    record = erased_record()
    cert = signer.write_certificate(record, tmp_path)
    result_json = tmp_path / "reverify.json"
    result_json.write_text(json.dumps({"record_id": record.record_id, "verdict": "consistent",
                                       "samples": 12, "fresh_seed": True, "reason": "ok",
                                       "plan": {"seed": 5}}))
    runner = CliRunner()
    args = ["cert", "validate", str(cert), "--by", "Grace Hopper", "--reverify", str(result_json),
            "--keys", str(keys)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    written = tmp_path / f"{cert.stem}-validation.pdf"
    assert written.is_file()
    result = runner.invoke(cli, ["cert", "verify", str(written), "--json"])
    line = json.loads(result.output.splitlines()[-1])
    assert line["kind"] == "addendum" and line["verdict"] in ("untrusted", "trusted")
    assert line["addendum"]["reverification"]["verdict"] == "consistent"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"record_id": "another", "verdict": "identical"}))
    result = runner.invoke(cli, ["cert", "validate", str(cert), "--by", "G", "--reverify",
                                 str(wrong), "--keys", str(keys)])
    assert result.exit_code == 2 and "another record" in result.output
