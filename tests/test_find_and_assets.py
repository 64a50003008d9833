"""Exports a fleet can use and finding a phone across batches (#22 items 3, 6, 7), on emulated
stations over a private adb server: two batches in one station directory, the lying phone
failing in both.

* `assets.csv`: one row per expected or seen asset with a fixed header, plain cells, formula
  prefixes neutralised, no key material (nor in records.csv, records.json, summary.json).
* the second FAIL of the same phone proposes destruction and lists the earlier failure.
* the second look happened on the rooted phone over adb, before its reset.
* `phonewipe find IMEI|SERIAL|TAG`: newest first, "superseded by", certificates, duplicates.
"""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import clirun
import pytest
from conftest import require_binary

from phonewipe.certificates.verify import verify_certificate
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record
from phonewipe.find import find_device
from phonewipe.reports import ASSET_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
HEADER = ["tag", "owner", "serial", "imei1", "imei2", "result", "category", "method", "date",
          "batch", "certificate_file", "record_sha256"]


def phonewipe(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "80"}, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """B1: rooted, unrooted and lying phones against an asset list (one tag on two phones, one
    asset never seen, a tag a spreadsheet would run as a formula); B2: the lying phone again."""
    require_binary("adb")
    tmp = tmp_path_factory.mktemp("fleet")
    out = tmp / "st"
    assets = tmp / "assets.csv"
    assets.write_text("asset_tag,serial_or_imei,owner\nIT-1,PWROOT0000,Finance\n"
                      "IT-2,PWUNRT0000,Sales\nIT-2,PWLIE10000,Sales\n"
                      "=HYPERLINK(\"http://x\"),PWGONE0042,@Legal\n")
    runs = (("B1", ["rooted", "unrooted", "lying-1pct"], ["--assets", str(assets)]),
            ("B2", ["lying-1pct"], []))
    for batch, specs, extra in runs:
        result = phonewipe("station", "--out", str(out), "--batch", batch, *extra,
                           *[a for s in specs for a in ("--emulate", s)], "--userdata-mib", "4",
                           "--exit-when-idle", "--idle-seconds", "1")
        assert result.returncode in (0, 12), result.stdout[-3000:] + result.stderr
        (tmp / f"{batch}.stdout").write_text(result.stdout)
    return out


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_assets_csv_has_one_plain_row_per_expected_or_seen_asset(station: Path) -> None:
    b1 = station / "batches" / "B1"
    table = rows(b1 / "assets.csv")
    assert table[0] == HEADER == list(ASSET_COLUMNS)
    by_serial = {r[2]: dict(zip(HEADER, r, strict=True)) for r in table[1:]}
    assert by_serial["PWROOT0000"]["tag"] == "IT-1" and by_serial["PWROOT0000"]["owner"] == "Finance"
    assert by_serial["PWROOT0000"]["result"] == "PASS"
    assert by_serial["PWROOT0000"]["category"] == "Clear"
    assert by_serial["PWROOT0000"]["method"] == "adb-raw-pattern"
    assert by_serial["PWLIE10000"]["result"] == "FAIL"
    never = by_serial["PWGONE0042"]
    assert never["result"] == "NOT SEEN" and never["record_sha256"] == "" and never["batch"] == "B1"
    assert never["tag"] == "'=HYPERLINK(\"http://x\")" and never["owner"] == "'@Legal"
    assert len(table) == 1 + 4  # IT-2 on two phones: one row per listed asset line
    for row in table[1:]:
        assert not any(cell.startswith(("[", "{", "=", "+", "-", "@")) for cell in row), row
        record = dict(zip(HEADER, row, strict=True))
        if record["record_sha256"]:
            cert = b1 / record["certificate_file"]
            checked = verify_certificate(cert)
            assert checked.ok and checked.record is not None
            assert checked.record.sha256() == record["record_sha256"]
            assert record["date"] == checked.record.created_at
    b2 = rows(station / "batches" / "B2" / "assets.csv")  # no asset list: seen phones only
    assert b2[0] == HEADER and [r[2] for r in b2[1:]] == ["PWLIE10000"] and b2[1][0] == ""


def test_no_key_material_in_any_export(station: Path) -> None:
    b1 = station / "batches" / "B1"
    cert = next((b1 / "certificates").glob("PWROOT0000-*.pdf"))
    checked = verify_certificate(cert)
    assert checked.record is not None and checked.record.verification is not None
    key = checked.record.verification.plan["pattern_key"]  # the certificate keeps it
    for name in ("records.csv", "records.json", "summary.json", "assets.csv"):
        text = (b1 / name).read_text()
        assert key not in text and "pattern_key" not in text, name
    found = phonewipe("find", "PWROOT0000", "--out", str(station), "--json")
    assert found.returncode == 0 and key not in found.stdout and "pattern_key" not in found.stdout


def test_the_second_fail_of_the_same_phone_is_routed_to_destruction(station: Path) -> None:
    first = next(r for r in json.loads((station / "batches" / "B1" / "records.json").read_text())
                 if r["device"]["serial"] == "PWLIE10000")
    [second] = json.loads((station / "batches" / "B2" / "records.json").read_text())
    assert first["outcome"] == second["outcome"] == "FAILED"
    assert first["destination"]["kind"] == second["destination"]["kind"] == "quarantine"
    assert "earlier_failures" not in first
    assert [f["record_id"] for f in second["earlier_failures"]] == [first["record_id"]]
    assert "physically destroy it and record the destruction" in second["reason"]
    assert "if it fails a second time" not in second["reason"]


def test_the_second_look_happened_over_adb_before_the_reset(station: Path) -> None:
    summary = json.loads((station / "batches" / "B1" / "summary.json").read_text())
    [look] = summary["second_look"]
    assert look["serial"] == "PWROOT0000" and look["status"] == "passed", summary["second_look"]
    assert look["when"].startswith("before")
    assert summary["second_look_pending"] == [] and summary["second_look_owed"] == 0
    assert all(p["serial"] == "PWUNRT0000" for p in summary["second_look_passed_on"])


def test_find_by_serial_lists_every_batch_newest_first_with_superseded_links(station: Path) -> None:
    result = phonewipe("find", "PWLIE10000", "--out", str(station), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    newest, oldest = found["records"]
    assert [newest["batch_id"], oldest["batch_id"]] == ["B2", "B1"] and found["devices"] == 1
    assert oldest["superseded_by"] == newest["record_id"] and newest["superseded_by"] is None
    assert newest["supersedes"] == oldest["record_id"]
    assert newest["earlier_failures"] == [oldest["record_id"]]
    for r in found["records"]:
        assert r["certificate_found"] and Path(r["certificate"]).is_file()
        assert r["result"] == "FAIL" and r["verification"]["status"] == "failed"
        assert r["destination"]["kind"] == "quarantine"
    text = phonewipe("find", "PWLIE10000", "--out", str(station))  # 80 columns: nothing cut
    assert text.returncode == 0
    assert f"superseded by: {newest['record_id']}" in text.stdout
    assert newest["record_sha256"] in text.stdout and newest["certificate"] in text.stdout
    assert "…" not in text.stdout


def test_find_by_imei_and_tag_flags_a_tag_on_two_phones(station: Path) -> None:
    by_tag = json.loads(phonewipe("find", "it-2", "--out", str(station), "--json").stdout)
    assert {r["serial"] for r in by_tag["records"]} == {"PWUNRT0000", "PWLIE10000"}
    assert by_tag["devices"] == 2
    assert any(d.startswith("asset tag IT-2 is on 2 phones") for d in by_tag["duplicates"])
    root = next(r for r in by_tag["records"] if r["serial"] == "PWUNRT0000")
    if root["imeis"]:
        imei = root["imeis"][0]
        by_imei = json.loads(phonewipe("find", imei, "--out", str(station), "--json").stdout)
        assert "PWUNRT0000" in {r["serial"] for r in by_imei["records"]}
        assert all("IMEI" in r["matched_by"] for r in by_imei["records"])
    missing = phonewipe("find", "NOSUCHPHONE", "--out", str(station))
    assert missing.returncode == 3 and "NOSUCHPHONE" in missing.stderr


def test_station_console_lists_the_exports(station: Path) -> None:
    stdout = (station.parent / "B1.stdout").read_text()
    assert "assets.csv" in stdout
    assert "PWUNRT0000: cannot be re-read" in stdout.replace("\n", " ") or \
        "PWUNRT0000" not in json.dumps(json.loads(
            (station / "batches" / "B1" / "summary.json").read_text())["second_look_passed_on"])


def _logged(audit: AuditLog, serial: str, imeis: tuple[str, ...], tag: str, n: int) -> None:
    record = Record(record_id=f"rec-{n}", job_id=f"job-{n}", created_at=f"2025-01-0{n}T00:00:00Z",
                    outcome=Outcome.ERASED_VERIFIED, device=Identity("android", serial=serial,
                                                                     imeis=imeis),
                    endpoint=Endpoint("adb", "adb", "x"), operator=Operator("T"),
                    destination=Destination("resale"), tool={}, asset_tag=tag, batch_id="B")
    audit.append(record.job_id, serial, "record", {"outcome": record.outcome.value,
                                                   "record_sha256": record.sha256(),
                                                   "record": record.to_dict()})


def test_find_flags_one_imei_on_several_phones(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        _logged(audit, "AAA1", ("353456789012348",), "T-1", 1)
        _logged(audit, "BBB2", ("353456789012348",), "T-2", 2)
        _logged(audit, "AAA1", ("353456789012348",), "T-1", 3)  # AAA1 redone
    result = find_device("353456789012348", [tmp_path])
    assert [f.record["record_id"] for f in result.found] == ["rec-3", "rec-2", "rec-1"]
    assert result.devices == 2
    assert result.found[2].superseded_by == "rec-3" and result.found[1].superseded_by is None
    assert result.duplicates == ["IMEI 353456789012348 is reported by 2 phones: serials AAA1, BBB2"]
