"""#22's done means, end to end: a fleet batch whose asset list is an Intune-style export
(semicolons, "Device name", "Serial number", "IMEI", the owner's UPN) reconciles, matches a
phone by its second IMEI, flags an IMEI listed for two assets, skips an Excel-mangled IMEI
with a warning, and exports the fixed per-asset CSV — through the real command line, on
emulated dual-SIM phones over the real adb server."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import require_binary
from test_end_to_end import phonewipe

from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.reports import ASSET_COLUMNS


def test_an_intune_export_reconciles_a_fleet_batch(tmp_path: Path) -> None:
    require_binary("adb")
    rooted = load_profile("rooted")
    first, second = rooted.imeis("PWROOT0000"), rooted.imeis("PWROOT0001")
    assets = tmp_path / "intune.csv"
    assets.write_text("Device name;Serial number;IMEI;MEID;Primary user UPN;Ownership\n"
                      "LT-ANNA;PWROOT0000;;;anna@example.com;Corporate\n"
                      f"LT-BEN;;{second[1]};;ben@example.com;Corporate\n"  # the eSIM's IMEI
                      f"LT-CAROL;;{first[0]};;carol@example.com;Corporate\n"  # ANNA's phone
                      "LT-DAN;;3.56938E+14;;dan@example.com;Corporate\n"  # Excel mangled it
                      "LT-GONE;PWGONE0001;;;gone@example.com;Corporate\n")
    out = tmp_path / "st"
    # an Intune export has no asset-tag column: the device name is mapped to it
    result = phonewipe("station", "--out", str(out), "--batch", "FLEET1", "--assets", str(assets),
                       "--assets-map", "tag=Device name",
                       "--emulate", "rooted:2", "--userdata-mib", "4", "--exit-when-idle",
                       "--idle-seconds", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "line 5" in result.stderr and "scientific notation" in result.stderr
    assert "1 line(s) skipped, 4 device(s) listed" in result.stderr
    batch = out / "batches" / "FLEET1"
    rec = json.loads((batch / "summary.json").read_text())["reconciliation"]
    assert [a["asset_tag"] for a in rec["expected_never_seen"]] == ["LT-GONE"]
    assert rec["duplicates"] == ["device PWROOT0000 matches 2 different asset-list lines by "
                                 "serial and IMEI: LT-ANNA, LT-CAROL"], rec  # one IMEI, two assets
    with (batch / "assets.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == ASSET_COLUMNS
    by_tag = {r[0]: dict(zip(ASSET_COLUMNS, r, strict=True)) for r in rows[1:]}
    assert by_tag["LT-BEN"]["serial"] == "PWROOT0001" and by_tag["LT-BEN"]["result"] == "PASS"
    assert (by_tag["LT-BEN"]["imei1"], by_tag["LT-BEN"]["imei2"]) == tuple(second)
    assert by_tag["LT-BEN"]["owner"] == "ben@example.com"
    assert by_tag["LT-ANNA"]["serial"] == "PWROOT0000" and by_tag["LT-ANNA"]["result"] == "PASS"
    assert by_tag["LT-GONE"]["result"] == "NOT SEEN"
    for row in by_tag.values():
        if row["result"] == "PASS":
            assert (batch / row["certificate_file"]).is_file() and len(row["record_sha256"]) == 64
