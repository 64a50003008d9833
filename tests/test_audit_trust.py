"""An audit log that proves its own length: the organization key signs checkpoints (row
count, head hash, time); `audit verify` checks the chain and every checkpoint, and names an
empty, truncated, recomputed or fabricated log as such, each with its own exit code.

Every attack here passed `audit verify` ("hash chain intact", exit 0) before checkpoints."""
from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from pathlib import Path

import clirun
import pytest
from conftest import fingerprint

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import (
    GENESIS,
    AuditEmpty,
    AuditLog,
    AuditRewritten,
    AuditTruncated,
    AuditUnproven,
    row_hash,
    verify_audit,
    verify_log,
)
from phonewipe.erase.errors import AuditBroken


def phonewipe(*args: str) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "300"}, timeout=60)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> CertificateSigner:
    """A key made elsewhere with the same names: the forger's."""
    keys = tmp_path_factory.mktemp("forger") / "keys"
    init_keys(keys, "ACME Refurb", "ACME Refurb erasure signing")
    return CertificateSigner(keys)


def make_log(path: Path, signer, rows: int = 30, every: int = 10) -> None:
    """A job's worth of events; checkpoints every `every` rows, after `certified`, at close."""
    with AuditLog(path, signer=signer, every=every) as log:
        for i in range(rows):
            log.append("job-1", "SERIAL1", "certified" if i == 14 else f"step-{i}", {"i": i})


def recompute_chain(db: sqlite3.Connection) -> None:
    """What a forger does after editing or deleting rows: renumber and rehash everything."""
    rows = db.execute("SELECT id, ts, job_id, serial, event, payload FROM events ORDER BY id").fetchall()
    db.execute("DELETE FROM events")
    prev = GENESIS
    for n, r in enumerate(rows, start=1):
        row = dict(zip(("id", "ts", "job_id", "serial", "event", "payload"), (n, *r[1:]),
                       strict=True))
        digest = row_hash(prev, row)
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row.values(), prev, digest))
        prev = digest
    db.commit()


def checkpoint_rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [r for (r,) in db.execute("SELECT row FROM checkpoints ORDER BY row")]


def test_an_intact_log_verifies_with_its_checkpoints(tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    assert checkpoint_rows(path) == [10, 15, 25, 30]  # every 10, after `certified`, every 10, close
    report = verify_audit(path, trusted=[fingerprint(signer)])
    assert report.rows == 30 and report.pinned and report.uncovered == 0
    result = phonewipe("audit", "verify", str(path), "--trust", fingerprint(signer))
    assert result.returncode == 0, result.stderr
    assert "30 rows, hash chain intact" in result.stdout and "4 signed checkpoint(s)" in result.stdout
    assert "(trusted)" in result.stdout and f"head {report.head}:30" in result.stdout


def test_an_empty_log_is_reported_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    AuditLog(path).close()
    assert verify_log(path) == 0  # the chain alone says nothing is wrong
    with pytest.raises(AuditEmpty):
        verify_audit(path)
    result = phonewipe("audit", "verify", str(path))
    assert result.returncode == 14
    assert "is empty" in one_error_line(result)


def test_every_row_deleted_is_a_truncation_not_an_empty_log(tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events")
    assert verify_log(path) == 0
    result = phonewipe("audit", "verify", str(path))
    assert result.returncode == 15
    assert "truncated" in (line := one_error_line(result)) and "every row" in line


def test_rows_a_checkpoint_covers_deleted_from_the_end_is_truncation(tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE id > 17")
    assert verify_log(path) == 17  # the chain of what is left still checks
    with pytest.raises(AuditTruncated, match="rows 18-30 were deleted"):
        verify_audit(path)
    result = phonewipe("audit", "verify", str(path))
    assert result.returncode == 15 and "truncated" in one_error_line(result)


def test_rows_after_the_last_checkpoint_are_caught_by_an_expected_head(tmp_path: Path, signer) -> None:
    """The log alone cannot show rows after its last checkpoint were deleted; the head a
    certificate or summary carries can."""
    path = tmp_path / "audit.sqlite"
    with AuditLog(path, signer=signer, every=100) as log:
        for i in range(5):
            log.append("job-1", "S", "certified" if i == 2 else "step", {"i": i})
        row, head = log.head()  # what a certificate signed now would carry
        log.signer = None  # the station died before its next checkpoint
    assert (row, checkpoint_rows(path)) == (5, [3])
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE id > 3")
    report = verify_audit(path)
    assert report.rows == 3 and report.uncovered == 0  # undetectable from the log alone
    result = phonewipe("audit", "verify", str(path), "--expect-head", f"{head}:{row}")
    assert result.returncode == 15 and "expected head is at row 5" in one_error_line(result)


def test_deleting_rows_before_the_last_checkpoint_and_rechaining_is_a_rewrite(
        tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE id IN (4, 5)")
        recompute_chain(db)
    assert verify_log(path) == 28
    with pytest.raises(AuditRewritten, match="row 10's hash"):
        verify_audit(path)


def test_an_edited_row_with_the_chain_recomputed_is_a_rewrite(tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 12")
        recompute_chain(db)
    assert verify_log(path) == 30  # the chain alone: "intact"
    result = phonewipe("audit", "verify", str(path))
    assert result.returncode == 16
    line = one_error_line(result)
    assert "rewritten" in line and "row 15's hash" in line and "recomputed" in line


def test_a_fabricated_log_without_checkpoints_is_unproven(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:  # anyone can write a chain: no key needed
        for _ in range(8):
            log.append("job-x", "FAKE", "record", {"outcome": "ERASED_VERIFIED"})
    assert verify_log(path) == 8
    result = phonewipe("audit", "verify", str(path))
    assert result.returncode == 17
    assert "no signed checkpoint" in one_error_line(result)


def test_a_fabricated_log_signed_by_another_key_is_not_trusted(
        tmp_path: Path, signer, other_signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, other_signer)
    verify_audit(path)  # self-consistent...
    with pytest.raises(AuditUnproven, match="not trusted"):
        verify_audit(path, trusted=[fingerprint(signer)])
    keys_dir = Path(signer.material.cert_path).parent if hasattr(signer.material, "cert_path") \
        else None
    trust = str(keys_dir) if keys_dir else fingerprint(signer)
    result = phonewipe("audit", "verify", str(path), "--trust", trust)
    assert result.returncode == 17 and "not trusted" in one_error_line(result)


def test_genuine_checkpoints_copied_into_a_fabricated_log_do_not_fit(tmp_path: Path, signer) -> None:
    genuine, fake = tmp_path / "genuine.sqlite", tmp_path / "fake.sqlite"
    make_log(genuine, signer)
    with AuditLog(fake) as log:
        for i in range(30):
            log.append("job-1", "SERIAL1", f"forged-{i}", {"i": i})
    with sqlite3.connect(fake) as db:
        db.execute("ATTACH DATABASE ? AS g", (str(genuine),))
        db.execute("INSERT INTO checkpoints SELECT * FROM g.checkpoints")
    result = phonewipe("audit", "verify", str(fake))
    assert result.returncode == 16 and "rewritten" in one_error_line(result)


def test_a_checkpoint_moved_to_fit_a_rewritten_chain_has_no_valid_signature(
        tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 12")
        recompute_chain(db)
        for row, in db.execute("SELECT row FROM checkpoints").fetchall():
            head = db.execute("SELECT hash FROM events WHERE id = ?", (row,)).fetchone()[0]
            db.execute("UPDATE checkpoints SET head = ? WHERE row = ?", (head, row))
    with pytest.raises(AuditRewritten, match="valid signature"):
        verify_audit(path)


def test_an_expected_head_that_is_not_in_the_log_is_named(tmp_path: Path, signer) -> None:
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    report = verify_audit(path)
    ok = phonewipe("audit", "verify", str(path), "--expect-head", f"{report.head}:30")
    assert ok.returncode == 0 and "expected head" in ok.stdout
    wrong = phonewipe("audit", "verify", str(path), "--expect-head", f"{'ab' * 32}:12")
    assert wrong.returncode == 16 and "row 12" in one_error_line(wrong)
    bad = phonewipe("audit", "verify", str(path), "--expect-head", "nothex")
    assert bad.returncode == 2 and "HASH:ROWS" in one_error_line(bad)


def test_a_station_never_signs_a_head_over_a_rewritten_log(tmp_path: Path, signer) -> None:
    """Opening the log with the key checks it first: the next checkpoint would otherwise
    launder the rewrite."""
    path = tmp_path / "audit.sqlite"
    make_log(path, signer)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 3")
        recompute_chain(db)
    with pytest.raises(AuditRewritten):
        AuditLog(path, signer=signer)
    before = checkpoint_rows(path)
    with pytest.raises(AuditBroken):
        AuditLog(path, signer=signer).append("job-2", "S", "detected")
    assert checkpoint_rows(path) == before


def test_checkpoint_signatures_are_the_organization_keys(tmp_path: Path, signer) -> None:
    from cryptography import x509
    path = tmp_path / "audit.sqlite"
    make_log(path, signer, rows=3)
    with sqlite3.connect(path) as db:
        cert = db.execute("SELECT certificate FROM checkpoints").fetchone()[0]
    assert x509.load_der_x509_certificate(base64.b64decode(cert)) == signer.material.cert
    report = verify_audit(path)
    assert list(report.signers) == [fingerprint(signer)]
    assert json.loads(json.dumps(report.line()))  # one line of text
