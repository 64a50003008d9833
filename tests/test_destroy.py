"""`phonewipe destroy` (#19 part B): physical destruction of one device or a batch, witnessed;
one signed certificate per device (category Destruct for the NIST techniques, none for a
drill, never "verified by read-back") plus a signed destruction list, both checked by
`cert verify` and pdfsig; the station's reconciliation counts destroyed devices and offers a
device that FAILED twice for destruction."""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_attest import OPERATOR, events, keys, one_line_error, pdf_text, phonewipe, verify_json

from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record
from phonewipe.erase.station.manifest import load_manifest
from phonewipe.erase.station.reconcile import reconcile

__all__ = ["keys"]  # the module-scoped signing key fixture, shared with test_attest
WITNESSED = ["--facility", "ACME Leeds secure room", "--witness", "John Smith",
             "--witness-title", "Security officer"]
DEAD_PHONE = ["--serial", "R58DEAD0001", "--imei", "490154203237518", "--manufacturer",
              "Samsung", "--model", "Galaxy S7"]


def destroy(out: Path, keys: Path, *args: str) -> subprocess.CompletedProcess:
    return phonewipe("destroy", *args, *OPERATOR, "--keys", str(keys), "--out", str(out),
                     "--json")


def outcome(result: subprocess.CompletedProcess) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_dead_phone_shredded_gets_a_destruct_certificate_that_says_what_was_witnessed(
        tmp_path: Path, keys: Path) -> None:
    from test_attest import jpeg_with_gps
    photo = jpeg_with_gps(tmp_path / "shredder-output.jpg")
    out = outcome(destroy(tmp_path / "out", keys, "--method", "shred", "--particle-mm", "2",
                          "--equipment", "HSM Powerline FA 400", *WITNESSED, *DEAD_PHONE,
                          "--photo", str(photo)))
    [cert] = out["certificates"]
    assert cert["result"] == "DESTROYED" and cert["category"] == "Destruct"
    path = Path(cert["certificate"])
    assert verify_json(path, keys)["verdict"] == "trusted"
    record = json.loads(phonewipe("cert", "show", "--json", str(path)).stdout)
    assert record["outcome"] == "DESTROYED" and record["verification"] is None
    s = record["sanitization"]
    assert s["technique"] == "destruction" and s["details"]["witness"] == "John Smith"
    assert "meets the NSA/CSS guidance" in s["justification"]
    text = " ".join(pdf_text(path).split())
    assert text.startswith("Certificate of Destruction")
    for words in ("DESTROYED", "Particle size at most 2 mm", "HSM Powerline FA 400",
                  "ACME Leeds secure room", "John Smith (Security officer)",
                  "by witness: John Smith saw the destruction", "Photos (evidence added"):
        assert words in text, words
    assert "PASS" not in text and "verified by read" not in text
    assert "Samples read" not in text
    listed = Path(out["list"])
    report = verify_json(listed, keys)
    assert report["verdict"] == "trusted" and report["kind"] == "destruction-list"
    kinds = [e for e, _ in events(tmp_path / "out" / "audit.sqlite")]
    assert kinds == ["destroy-started", "destroyed", "record", "certified", "destruction-list"]
    assert phonewipe("audit", "verify", str(tmp_path / "out" / "audit.sqlite")).returncode == 0


def test_pdfsig_says_the_destruction_certificate_and_list_are_valid(tmp_path: Path,
                                                                   keys: Path) -> None:
    from conftest import require_binary
    tool = require_binary("pdfsig")
    out = outcome(destroy(tmp_path / "out", keys, "--method", "incinerate", *WITNESSED,
                          *DEAD_PHONE))
    for pdf in (out["certificates"][0]["certificate"], out["list"]):
        result = subprocess.run([tool, pdf], capture_output=True, text=True)
        assert "Signature is Valid" in result.stdout and "Total document signed" in result.stdout


def test_a_batch_from_a_list_gets_a_certificate_each_and_one_list_of_their_hashes(
        tmp_path: Path, keys: Path) -> None:
    devices = tmp_path / "bin-07.csv"
    devices.write_text("asset_tag,serial,imei,owner\nIT-1,SN-A1,,Finance\n"
                       "IT-2,,356938035643809,Sales\nIT-3,SN-C3,490154203237518,Legal\n")
    out = outcome(destroy(tmp_path / "out", keys, "--method", "disintegrate", "--particle-mm",
                          "1.5", *WITNESSED, "--list", str(devices), "--batch", "BIN-07"))
    assert out["batch_id"] == "BIN-07" and len(out["certificates"]) == 3
    listed = json.loads(phonewipe("cert", "verify", "--json", out["list"]).stdout)
    assert listed["summary"]["device_count"] == 3
    from phonewipe.certificates.verify import verify_certificate
    report = verify_certificate(Path(out["list"]))
    assert report.summary is not None
    assert [d["record_sha256"] for d in report.summary["devices"]] == \
        [c["record_sha256"] for c in out["certificates"]]
    records = [json.loads(phonewipe("cert", "show", "--json", c["certificate"]).stdout)
               for c in out["certificates"]]
    assert [r["asset_tag"] for r in records] == ["IT-1", "IT-2", "IT-3"]
    assert records[1]["device"]["imeis"] == ["356938035643809"]
    assert records[0]["media"]["source"] == "Finance"


def test_a_drill_claims_no_category_and_a_coarse_shred_says_so(tmp_path: Path,
                                                               keys: Path) -> None:
    drilled = outcome(destroy(tmp_path / "a", keys, "--method", "drill", *WITNESSED,
                              *DEAD_PHONE))["certificates"][0]
    assert drilled["category"] == "None" and drilled["result"] == "DESTROYED"
    text = " ".join(pdf_text(Path(drilled["certificate"])).split())
    assert text.startswith("Destruction record: DESTROYED (no category claimed)")
    assert "drilling is not a Destruct technique" in text
    coarse = outcome(destroy(tmp_path / "b", keys, "--method", "shred", "--particle-mm", "20",
                             *WITNESSED, *DEAD_PHONE))["certificates"][0]
    record = json.loads(phonewipe("cert", "show", "--json", coarse["certificate"]).stdout)
    assert coarse["category"] == "Destruct"
    assert "is larger than the NSA/CSS guidance" in record["sanitization"]["justification"]


@pytest.mark.parametrize("args,words", [
    (["--method", "shread", "--particle-mm", "2", *WITNESSED], ("did you mean 'shred'",)),
    (["--method", "shred", *WITNESSED], ("--particle-mm",)),
    (["--method", "shred", "--particle-mm", "nan", *WITNESSED], ("particle size",)),
    (["--method", "shred", "--particle-mm", "-1", *WITNESSED], ("particle size",)),
    (["--method", "incinerate", "--particle-mm", "2", *WITNESSED], ("leaves no particles",)),
    (["--method", "drill", "--facility", "F"], ("no witness",)),
    (["--method", "drill", "--witness", "W"], ("no facility",)),
    (["--method", "drill", "--facility", "F", "--witness", " jane  DOE "], ("is the operator",)),
    (["--method", "drill", *WITNESSED, "--destroyed-at", "2999-01-01T00:00"], ("future",)),
    (["--method", "drill", *WITNESSED, "--destroyed-at", "yesterday"], ("not a date",)),
])
def test_bad_input_is_one_line_and_nothing_is_recorded(tmp_path: Path, keys: Path,
                                                       args: list[str],
                                                       words: tuple[str, ...]) -> None:
    result = destroy(tmp_path / "out", keys, *args, *DEAD_PHONE)
    one_line_error(result, 2, *words)
    assert json.loads(result.stdout.splitlines()[0])["exit_code"] == 2
    assert not (tmp_path / "out" / "audit.sqlite").exists()


def test_a_device_needs_a_name_and_a_list_excludes_one(tmp_path: Path, keys: Path) -> None:
    one_line_error(destroy(tmp_path / "out", keys, "--method", "drill", *WITNESSED), 2,
                   "not named")
    devices = tmp_path / "d.csv"
    devices.write_text("asset_tag,serial\nA,S1\n")
    one_line_error(destroy(tmp_path / "out", keys, "--method", "drill", *WITNESSED, "--list",
                           str(devices), "--serial", "S2"), 2, "both given")
    one_line_error(destroy(tmp_path / "out", keys, "--method", "drill", *WITNESSED,
                           "--serial", "S1", "--imei", "490154203237519"), 2, "check digit")


# -- the station's reconciliation -------------------------------------------------------------

def _record(serial: str, result: Outcome, n: int, earlier: int = 0, batch: str = "B1") -> Record:
    return Record(record_id=f"rec-{serial}-{n}", job_id=f"job-{serial}-{n}",
                  created_at=f"2026-12-02T0{n}:00:00Z", outcome=result,
                  device=Identity(platform="android", serial=serial),
                  endpoint=Endpoint("adb", "adb", serial), operator=Operator("T"),
                  destination=Destination(), tool={"name": "phonewipe"}, batch_id=batch,
                  earlier_failures=tuple({"record_id": f"e{i}"} for i in range(earlier)))


def test_reconciliation_counts_destroyed_devices_and_offers_the_twice_failed(
        tmp_path: Path) -> None:
    listed = tmp_path / "assets.csv"
    listed.write_text("asset_tag,serial_or_imei,owner\nT1,GOOD1,F\nT2,LIAR1,F\nT3,DEAD1,F\n"
                      "T4,LOST1,F\n")
    manifest = load_manifest(listed)
    batch = [_record("GOOD1", Outcome.ERASED_VERIFIED, 1),
             _record("LIAR1", Outcome.FAILED, 2, earlier=1)]
    r = reconcile(batch, manifest)
    assert [e["serial"] for e in r.offered_for_destruction] == ["LIAR1"]
    assert "phonewipe destroy --serial LIAR1 --asset-tag" not in r.offered_for_destruction[0][
        "command"]  # (the record carries no tag here)
    assert r.offered_for_destruction[0]["failures"] == 2
    assert {a["identifier"] for a in r.expected_never_seen} == {"DEAD1", "LOST1"}
    destroyed = [_record("LIAR1", Outcome.DESTROYED, 3, batch="D1"),
                 _record("DEAD1", Outcome.DESTROYED, 4, batch="D1"),
                 _record("ELSEWHERE", Outcome.DESTROYED, 5, batch="D1")]
    r = reconcile(batch, manifest, destroyed)
    assert sorted(e["serial"] for e in r.destroyed) == ["DEAD1", "LIAR1"]
    assert r.offered_for_destruction == []
    assert [a["identifier"] for a in r.expected_never_seen] == ["LOST1"]
    assert r.counts()["destroyed"] == 2
    assert reconcile(batch, None, destroyed).counts()["destroyed"] == 1  # no list: LIAR1 only


def test_a_station_offers_the_twice_failed_phone_and_counts_it_once_destroyed(
        tmp_path: Path) -> None:
    """Two station batches over a private adb server, the lying phone failing in both; the
    second offers it for destruction (console and summary); `destroy --out` the station
    directory, then `report` counts it (and a dead phone on the first batch's list)."""
    from conftest import require_binary
    require_binary("adb")
    st = tmp_path / "st"
    assets = tmp_path / "assets.csv"
    assets.write_text("asset_tag,serial_or_imei,owner\nIT-9,PWLIE10000,Ops\nIT-0,PWDEAD0000,Ops\n")
    for batch, extra in (("B1", ["--assets", str(assets)]), ("B2", [])):
        result = phonewipe("station", "--out", str(st), "--batch", batch, *extra, "--emulate",
                           "lying-1pct", "--userdata-mib", "4", "--exit-when-idle",
                           "--idle-seconds", "1", stdin=None)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr  # as expected
    assert "offered for destruction: PWLIE10000 failed 2 times" in result.stdout
    assert "phonewipe destroy --serial PWLIE10000" in result.stdout
    summary = json.loads((st / "batches" / "B2" / "summary.json").read_text())
    assert [e["serial"] for e in summary["reconciliation"]["offered_for_destruction"]] == \
        ["PWLIE10000"]
    station_keys = st / "keys"
    for device in (["--serial", "PWLIE10000"], ["--serial", "PWDEAD0000"]):
        done = outcome(phonewipe("destroy", "--method", "shred", "--particle-mm", "2",
                                 *WITNESSED, *device, *OPERATOR, "--keys", str(station_keys),
                                 "--out", str(st), "--json"))
    liar = json.loads(phonewipe("cert", "show", "--json", str(
        next((st / "destroyed").glob("*/certificates/PWLIE10000-*.pdf")))).stdout)
    assert [e["result"] for e in liar["evidence"]["earlier_records"]] == ["FAIL", "FAIL"]
    liar_pdf = next((st / "destroyed").glob("*/certificates/PWLIE10000-*.pdf"))
    assert "Why destroyed" in pdf_text(liar_pdf) and "Earlier record 2" in pdf_text(liar_pdf)
    assert done["certificates"][0]["serial"] == "PWDEAD0000"
    for batch, expected in (("B1", ["PWDEAD0000", "PWLIE10000"]), ("B2", ["PWLIE10000"])):
        report = phonewipe("report", batch, "--out", str(st), "--json")
        assert report.returncode == 0, report.stderr
        rec = json.loads(report.stdout)["reconciliation"]
        assert sorted(e["serial"] for e in rec["destroyed"]) == expected
        assert rec["offered_for_destruction"] == [] and rec["expected_never_seen"] == []
        summary_pdf = st / "batches" / batch / "summary.pdf"
        assert "Destroyed (Destruct records)" in pdf_text(summary_pdf)
        assert verify_json(summary_pdf, station_keys)["verdict"] == "trusted"


def test_a_second_person_validates_a_destruction_certificate(tmp_path: Path, keys: Path) -> None:
    out = outcome(destroy(tmp_path / "out", keys, "--method", "pulverize", "--particle-mm",
                          "0.5", *WITNESSED, *DEAD_PHONE))
    cert = Path(out["certificates"][0]["certificate"])
    result = phonewipe("cert", "validate", str(cert), "--by", "Grace Hopper", "--keys", str(keys))
    assert result.returncode == 0, result.stderr
    addendum = cert.parent / f"{cert.stem}-validation.pdf"
    report = verify_json(addendum, keys)
    assert report["kind"] == "addendum" and report["verdict"] == "trusted", report


def test_counterfeit_flash_is_offered_for_destruction_after_one_failure(tmp_path: Path) -> None:
    """A medium that holds less than it reports cannot be erased by a second try: it is
    offered at once, saying why, on the station's summary page too."""
    from phonewipe.certificates.batch import render_summary
    from phonewipe.erase.model import VerificationResult
    from phonewipe.erase.wrap import describe

    fake = replace(_record("FAKE1", Outcome.FAILED, 1), verification=VerificationResult(
        mode="quick", status="failed", reason=describe(8 << 20, 32 << 20)))
    worn = replace(_record("WORN1", Outcome.FAILED, 2),
                   verification=VerificationResult(mode="quick", status="failed", reason="x"))
    r = reconcile([fake, worn], None)
    [offered] = r.offered_for_destruction
    assert offered["serial"] == "FAKE1" and "counterfeit capacity" in offered["why"]
    pdf = tmp_path / "summary.pdf"
    pdf.write_bytes(render_summary({"batch_id": "B1", "generated_at": "2026-12-03T09:00:00Z",
                                    "device_count": 2, "totals": {"FAIL": 2}, "devices": [],
                                    "reconciliation": r.to_dict()}))
    text = " ".join(pdf_text(pdf).split())
    assert "Offered for destruction (1)" in text and "holds less than it reports" in text


@pytest.mark.parametrize("text", ["0001-01-01T00:00+01:00", "0001-01-01T00:00"])
def test_a_time_that_leaves_the_calendar_in_utc_is_one_usage_error(text: str) -> None:
    from phonewipe.destroy import parse_when
    from phonewipe.erase.errors import UsageError
    with pytest.raises(UsageError, match="is not a date and time"):
        parse_when(text)
