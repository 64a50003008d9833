"""`phonewipe report` signs nothing the log and the certificates disagree on: a FAILED record
edited to ERASED_VERIFIED with the chain recomputed used to get a freshly signed summary
and CSV saying PASS."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import clirun
import pytest
from conftest import require_binary
from test_audit_trust import recompute_chain

from phonewipe.erase.model import Record

ROOT = Path(__file__).resolve().parents[1]


def phonewipe(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "250"}, cwd=ROOT, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two batches: B1 (one honest phone), then B2 (an honest and a lying phone)."""
    require_binary("adb")
    out = tmp_path_factory.mktemp("station") / "st"
    for batch, specs in (("B1", ["rooted"]), ("B2", ["rooted", "lying-1pct"])):
        result = phonewipe("station", "--out", str(out), "--batch", batch,
                           *[a for s in specs for a in ("--emulate", s)], "--userdata-mib", "4",
                           "--exit-when-idle", "--idle-seconds", "1", "--json-lines")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return out


@pytest.fixture
def copy(station: Path, tmp_path: Path) -> Path:
    target = tmp_path / "st"
    shutil.copytree(station, target)
    for name in ("summary.pdf", "records.csv", "records.json", "summary.json"):
        (target / "batches" / "B2" / name).unlink()
    return target


def forge_pass(out: Path) -> int:
    """Edit B2's FAILED record to ERASED_VERIFIED, fix every hash that names it, recompute
    the chain: what someone with write access to the log and no key does. Returns the row."""
    with sqlite3.connect(out / "audit.sqlite") as db:
        row, job, payload = db.execute(
            "SELECT id, job_id, payload FROM events WHERE event = 'record' AND payload LIKE "
            "'%\"outcome\":\"FAILED\"%' ORDER BY id DESC LIMIT 1").fetchone()
        data = json.loads(payload)
        record = data["record"]
        record["outcome"] = data["outcome"] = "ERASED_VERIFIED"
        record["reason"] = data["reason"] = ""
        record["verification"]["status"] = "passed"
        record["verification"]["failures_total"] = 0
        record["verification"]["failures"] = []
        digest = Record.from_dict(record).sha256()
        data["record_sha256"] = digest
        db.execute("UPDATE events SET payload = ? WHERE id = ?",
                   (json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False), row))
        cid, cpayload = db.execute("SELECT id, payload FROM events WHERE event = 'certified' AND "
                                   "job_id = ?", (job,)).fetchone()
        certified = json.loads(cpayload)
        certified["record_sha256"] = digest
        db.execute("UPDATE events SET payload = ? WHERE id = ?",
                   (json.dumps(certified, sort_keys=True, separators=(",", ":")), cid))
        recompute_chain(db)
    return row


def no_outputs(out: Path) -> bool:
    return not any((out / "batches" / "B2" / n).exists()
                   for n in ("summary.pdf", "records.csv", "records.json", "summary.json"))


def test_the_genuine_batch_reports_and_its_summary_carries_the_audit_head(copy: Path) -> None:
    result = phonewipe("report", "B2", "--out", str(copy))
    assert result.returncode == 0, result.stderr
    summary = json.loads((copy / "batches" / "B2" / "summary.json").read_text())
    audit = summary["audit"]
    assert audit["checkpoints"] >= 3 and len(audit["head"]) == 64
    verified = phonewipe("audit", "verify", str(copy / "audit.sqlite"), "--expect-head",
                         f"{audit['head']}:{audit['rows']}")
    assert verified.returncode == 0, verified.stderr
    text = subprocess.run([require_binary("pdftotext"), "-layout",
                           str(copy / "batches" / "B2" / "summary.pdf"), "-"],
                          capture_output=True, text=True).stdout.replace("\n", " ")
    assert audit["head"][:24] in text.replace(" ", "")  # printed on the signed summary


def test_an_edited_and_rechained_record_is_refused_by_its_checkpoints(copy: Path) -> None:
    forge_pass(copy)
    assert phonewipe("audit", "verify", str(copy / "audit.sqlite")).returncode == 16
    result = phonewipe("report", "B2", "--out", str(copy))
    assert result.returncode == 16
    assert "rewritten" in one_error_line(result)
    assert no_outputs(copy)


def test_with_the_later_checkpoints_deleted_too_the_certificate_on_disk_refuses_it(copy: Path) -> None:
    row = forge_pass(copy)
    with sqlite3.connect(copy / "audit.sqlite") as db:  # drop what would show the rewrite
        db.execute("DELETE FROM checkpoints WHERE row >= ?", (row,))
    assert phonewipe("audit", "verify", str(copy / "audit.sqlite")).returncode == 0  # B1's checkpoints
    result = phonewipe("report", "B2", "--out", str(copy))
    assert result.returncode == 18
    line = one_error_line(result)
    assert "report refused" in line and "says PASS" in line and "says FAIL" in line
    assert no_outputs(copy)


def test_with_the_certificate_deleted_the_report_is_refused(copy: Path) -> None:
    row = forge_pass(copy)
    with sqlite3.connect(copy / "audit.sqlite") as db:
        db.execute("DELETE FROM checkpoints WHERE row >= ?", (row,))
    for pdf in (copy / "batches" / "B2" / "certificates").glob("PWLIE*.pdf"):
        pdf.unlink()
    result = phonewipe("report", "B2", "--out", str(copy))
    assert result.returncode == 18 and "is missing" in one_error_line(result)
    assert no_outputs(copy)


def test_with_every_checkpoint_deleted_the_log_is_unproven(copy: Path) -> None:
    forge_pass(copy)
    with sqlite3.connect(copy / "audit.sqlite") as db:
        db.execute("DELETE FROM checkpoints")
    result = phonewipe("report", "B2", "--out", str(copy))
    assert result.returncode == 17 and "no signed checkpoint" in one_error_line(result)
    assert no_outputs(copy)
