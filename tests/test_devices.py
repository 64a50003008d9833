"""`phonewipe devices` says who is connected (serial, model, IMEI, mode, state), and
`erase --all` never certifies an entry that cannot say who it is (#18 item 2)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from test_end_to_end import Bench, phonewipe


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path, ["rooted", "unauthorized"])
    try:
        yield b
    finally:
        b.close()


def test_devices_shows_serial_model_imei_mode_and_state(bench: Bench) -> None:
    rooted, unauthorized = bench.handsets["rooted"], bench.handsets["unauthorized"]
    result = bench.run("devices", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["address"]: row for row in json.loads(result.stdout)}
    row = rows[rooted["endpoints"]["adb"]]
    assert row["identified"] and row["serial"] == rooted["serial"] and row["model"] == "Pixel 6a"
    assert row["mode"] == "adb" and row["state"] == "device" and len(row["imeis"]) == 2
    state = json.loads((Path(rooted["storage"]) / "state.json").read_text())
    assert row["imeis"] == state["imeis"]
    locked = rows[unauthorized["endpoints"]["adb"]]
    assert not locked["identified"] and locked["serial"] is None and locked["state"] == "unauthorized"
    assert "accept" in locked["note"]  # what to do

    table = bench.run("devices").stdout
    assert rooted["serial"] in table and state["imeis"][0] in table and "Pixel 6a" in table
    assert "unidentified" in table and "unauthorized" in table
    narrow = phonewipe("--adb-port", str(bench.port), "devices",
                       env={**bench.env, "COLUMNS": "80"}).stdout  # as in a pipe: nothing cut
    [line] = [line for line in narrow.splitlines() if line.startswith(rooted["serial"])]
    assert rooted["endpoints"]["adb"] in line and ", ".join(state["imeis"]) in line
    assert any(line.startswith(f"adb {unauthorized['endpoints']['adb']} (unauthorized): ")
               and "accept" in line for line in narrow.splitlines())


def test_erase_all_leaves_unidentifiable_entries_uncertified(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench.run("erase", "--all", "--out", str(out), "--keys", str(bench.keys), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["serial"] == bench.handsets["rooted"]["serial"]
    assert entry["outcome"] == "ERASED_VERIFIED"
    certificates = sorted(p.name for p in (out / "certificates").glob("*.pdf"))
    assert len(certificates) == 1 and not any(n.startswith("unknown") for n in certificates)
    unauthorized = bench.handsets["unauthorized"]["endpoints"]["adb"]
    [line] = [line for line in result.stderr.splitlines() if unauthorized in line]
    assert line.startswith("not erased:") and "accept" in line
