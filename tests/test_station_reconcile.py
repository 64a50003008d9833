"""Reconciliation of a batch against its expected-asset list, and the batch exports, without
any phone: records are built directly."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from phonewipe.erase.errors import ConfigError
from phonewipe.erase.model import Destination, Endpoint, Identity, Operator, Outcome, Record
from phonewipe.erase.station.manifest import load_manifest
from phonewipe.erase.station.reconcile import reconcile
from phonewipe.reports import records_csv

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "sample-batch.csv"


def record(serial: str, outcome: Outcome, imei: str = "", n: int = 0) -> Record:
    return Record(record_id=f"rec-{serial}-{n}", job_id=f"job-{serial}-{n}",
                  created_at="2026-11-23T00:00:00.000Z", outcome=outcome,
                  device=Identity(platform="android", serial=serial, imeis=(imei,) if imei else ()),
                  endpoint=Endpoint("adb", "adb", f"tcp:{serial}"), operator=Operator("T"),
                  destination=Destination(), tool={"name": "phonewipe"}, batch_id="B1")


def test_every_planted_discrepancy_is_named() -> None:
    manifest = load_manifest(SAMPLE)
    records = [record("PWROOT0000", Outcome.ERASED_VERIFIED),
               record("PWUNRT0000", Outcome.ERASED_UNVERIFIED),
               record("PWFRPL0000", Outcome.BLOCKED),
               record("PWLIE10000", Outcome.FAILED),
               record("PWSTRAY001", Outcome.ERASED_VERIFIED),  # seen, not on the list
               record("PWTWICE001", Outcome.FAILED), record("PWTWICE001", Outcome.FAILED, n=1)]
    rec = reconcile(records, manifest)
    assert {e["serial"] for e in rec.erased} == {"PWROOT0000", "PWUNRT0000", "PWSTRAY001"}
    assert [e["serial"] for e in rec.blocked] == ["PWFRPL0000"]
    assert {e["serial"] for e in rec.failed} == {"PWLIE10000", "PWTWICE001"}
    assert [a["asset_tag"] for a in rec.expected_never_seen] == ["IT-0005"]
    assert {e["serial"] for e in rec.seen_not_expected} == {"PWSTRAY001", "PWTWICE001"}
    dupes = " | ".join(rec.duplicates)
    assert "PWROOT0000 is listed 2 times" in dupes and "IT-0006" in dupes
    assert "PWTWICE001 has 2 final records" in dupes
    assert [e["asset_tags"] for e in rec.erased if e["serial"] == "PWROOT0000"] == [["IT-0001", "IT-0006"]]


def test_a_device_is_matched_by_imei_when_the_list_gives_one(tmp_path: Path) -> None:
    path = tmp_path / "assets.csv"
    path.write_text("Asset Tag,IMEI,Cost Centre\nA-1, 3569 3803 5643 809 ,CC-1\n"
                    "A-1,352099001761481,CC-2\n")
    manifest = load_manifest(path)
    rec = reconcile([record("ANY", Outcome.ERASED_VERIFIED, imei="356938035643809")], manifest)
    assert rec.erased[0]["asset_tags"] == ["A-1"] and rec.erased[0]["owners"] == ["CC-1"]
    assert [a["identifier"] for a in rec.expected_never_seen] == ["352099001761481"]
    assert any("asset tag A-1 is given to 2 different devices" in d for d in rec.duplicates)


def test_an_asset_list_without_an_identifier_column_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "assets.csv"
    path.write_text("asset_tag,owner\nA-1,x\n")
    with pytest.raises(ConfigError, match="no serial or IMEI column"):
        load_manifest(path)


def test_no_asset_list_reconciles_records_only() -> None:
    rec = reconcile([record("X1", Outcome.BLOCKED)], None)
    assert not rec.has_manifest and rec.seen_not_expected == [] and rec.expected_never_seen == []
    assert [e["serial"] for e in rec.blocked] == ["X1"]


def test_csv_export_has_the_record_fields_under_their_json_names() -> None:
    records = [record("PWROOT0000", Outcome.ERASED_VERIFIED, imei="356938035643809")]
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    assert rows[0]["device.serial"] == "PWROOT0000"
    assert json.loads(rows[0]["device.imeis"]) == ["356938035643809"]
    assert rows[0]["outcome"] == "ERASED_VERIFIED" and rows[0]["batch_id"] == "B1"
    assert rows[0]["record_sha256"] == records[0].sha256()


INTUNE = ("Device name;Serial number;IMEI;MEID;Primary user UPN;Ownership\n"
          "LT-ANNA;R58N123ABC;352099001761481;;anna@example.com;Corporate\n"
          "LT-BEN;;3.52099E+14;;ben@example.com;Corporate\n"
          "LT-CAROL;R58N999XYZ;352099001761482;;carol@example.com;Corporate\n"
          "LT-DAN;;;;dan@example.com;Corporate\n"
          "LT-EVE;R58N777QQQ;356938035643809;;eve@example.com;Corporate\n")


def test_an_intune_export_is_read_and_its_bad_lines_are_skipped_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "intune.csv"
    path.write_text(INTUNE)
    manifest = load_manifest(path)
    assert [a.serial for a in manifest.assets] == ["R58N123ABC", "R58N777QQQ"]
    assert manifest.assets[0].owner == "anna@example.com"
    assert len(manifest.warnings) == 3
    assert "line 3" in manifest.warnings[0] and "scientific notation" in manifest.warnings[0]
    assert "line 4" in manifest.warnings[1] and "check digit" in manifest.warnings[1]
    assert "line 5" in manifest.warnings[2] and "no serial or IMEI" in manifest.warnings[2]
    # matched on the serial and on the IMEI alike
    assert manifest.lookup("R58N123ABC") is manifest.assets[0]
    assert manifest.lookup(None, ["356938035643809"]) is manifest.assets[1]


def test_a_column_map_names_other_columns(tmp_path: Path) -> None:
    from phonewipe.erase.station.manifest import parse_column_map
    path = tmp_path / "custom.csv"
    path.write_text("Inventar,Geraet,Kostenstelle\nINV-1,SN-1,K-100\n")
    with pytest.raises(ConfigError):
        load_manifest(path)
    manifest = load_manifest(path, parse_column_map("tag=Inventar,serial=Geraet,owner=Kostenstelle"))
    assert (manifest.assets[0].asset_tag, manifest.assets[0].serial) == ("INV-1", "SN-1")
    with pytest.raises(ConfigError, match="no column 'Nope'"):
        load_manifest(path, {"serial": "Nope"})


def test_a_header_only_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("asset_tag,serial\n")
    with pytest.raises(ConfigError, match="no usable device"):
        load_manifest(path)


def test_a_device_sharing_an_imei_with_another_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "assets.csv"
    path.write_text("asset_tag,serial,imei\nA-1,SN-1,356938035643809\nA-2,SN-2,356938035643809\n")
    rec = reconcile([record("SN-1", Outcome.ERASED_VERIFIED, imei="356938035643809")],
                    load_manifest(path))
    assert any("356938035643809 is listed 2 times" in d for d in rec.duplicates)
    assert any("matches 2 different asset-list lines" in d for d in rec.duplicates)


@pytest.mark.parametrize("spec", ["rooted:0", "rooted:-2", "rooted:x", ":3"])
def test_an_emulate_spec_that_emulates_nothing_is_refused(spec: str) -> None:
    from phonewipe.erase.errors import UsageError
    from phonewipe.station_commands import parse_emulate
    with pytest.raises(UsageError) as caught:
        parse_emulate((spec,))
    assert "at least 1" in caught.value.line()


REAL_INTUNE = ("\ufeffDevice ID,Device name,Enrollment date,Serial number,Manufacturer,Model,IMEI,"
               "MEID,Primary user UPN,Ownership\n"
               "0b1c,LT-ANNA,2025-01-02,R58N123ABC,samsung,SM-G991B,35 209900 176148 1,,"
               "anna@example.com,Corporate\n"
               "0b1d,LT-IPHONE,2025-01-02,,Apple,iPhone 13,13440001234569,,ben@example.com,"
               "Corporate\n"
               "0b1e,LT-OLD,2025-01-02,,samsung,SM-A505F,35693803564380,,carol@example.com,"
               "Corporate\n")


def test_an_intune_export_as_downloaded_needs_no_column_map(tmp_path: Path) -> None:
    """Comma-separated with a byte-order mark, no asset-tag column (the device name is the
    tag), an IMEI in groups, one whose leading 0 a spreadsheet dropped (01344...), and one
    given as 14 digits without its check digit: each still finds its phone."""
    path = tmp_path / "DevicesWithInventory.csv"
    path.write_text(REAL_INTUNE, encoding="utf-8")
    manifest = load_manifest(path)
    assert [a.asset_tag for a in manifest.assets] == ["LT-ANNA", "LT-IPHONE", "LT-OLD"]
    assert manifest.warnings == ()
    assert manifest.lookup(None, ["352099001761481"]).asset_tag == "LT-ANNA"
    assert manifest.lookup("X", ["013440001234569"]).asset_tag == "LT-IPHONE"
    assert manifest.lookup(None, ["356938035643809"]).asset_tag == "LT-OLD"
    rec = reconcile([record("F2LX", Outcome.ERASED_VERIFIED, imei="013440001234569"),
                     record("R58A", Outcome.ERASED_VERIFIED, imei="356938035643809")], manifest)
    assert [e["asset_tags"] for e in rec.erased] == [["LT-IPHONE"], ["LT-OLD"]]
    assert [a["asset_tag"] for a in rec.expected_never_seen] == ["LT-ANNA"]
