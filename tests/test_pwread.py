"""phonewipe-pwread (protocols/adb/helper): the unrooted fill's read-back past the page cache.

The committed builds must come from the committed source; the x86_64 build runs here for
real; the emulated phone runs what it is pushed after the checks a kernel makes (ABI), and an
unrooted fill on flash that drops writes below the page cache is caught through the real adb
server."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.protocols.adb import client_readback

HELPER = Path(client_readback.__file__).parent / "helper"


def test_the_committed_builds_come_from_the_committed_source() -> None:
    source = hashlib.sha256((HELPER / "pwread.c").read_bytes()).hexdigest()
    assert (HELPER / "bin" / "SOURCE.sha256").read_text().strip() == source, \
        "pwread.c changed: rebuild with `make helpers` and commit protocols/adb/helper/bin"
    machines = {"arm64-v8a": 183, "armeabi-v7a": 40, "x86_64": 62}
    for abi, machine in machines.items():
        image = (HELPER / "bin" / f"phonewipe-pwread-{abi}").read_bytes()
        assert image[:4] == b"\x7fELF" and int.from_bytes(image[18:20], "little") == machine
        assert b"phonewipe-pwread/1" in image


@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs the x86_64 build natively")
def test_the_x86_64_build_reads_extents_and_stops_at_a_short_file(tmp_path: Path) -> None:
    binary = str(HELPER / "bin" / "phonewipe-pwread-x86_64")
    data = os.urandom(64 * 1024)
    target = tmp_path / "fill.bin"
    target.write_bytes(data)
    out = subprocess.run([binary, f"{target}:8192:4096", f"{target}:0:8192"], capture_output=True)
    assert out.returncode == 0 and out.stdout == data[8192:12288] + data[:8192]
    probe = subprocess.run([binary, "--probe", str(target)], capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() in ("direct", "fadvise")
    short = subprocess.run([binary, f"{target}:0:4096", f"{target}:61440:8192"],
                           capture_output=True)
    assert short.returncode == 1 and short.stdout == data[:4096] + data[61440:]  # as dd does
    assert b"Input/output error" in short.stderr
    bad = subprocess.run([binary, f"{target}:100:4096"], capture_output=True)
    assert bad.returncode == 2 and b"4096-aligned" in bad.stderr


@pytest.fixture
def fleet(adb_fleet: Any) -> Any:
    return adb_fleet


def fill(plugins: dict[str, Any], handset: Any, tmp_path: Path, **settings: Any) -> Any:
    adb = plugins["adb"]
    endpoint = [e for e in adb.discover() if e.address == handset.endpoints["adb"]][0]
    with AuditLog(tmp_path / f"audit-{handset.serial}.sqlite") as audit:
        return run_job(adb, endpoint, JobSettings(method="adb-fill-reset", **settings), audit)


@pytest.mark.interop
def test_an_unrooted_fill_is_read_past_the_cache_and_passes(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    record = fill(plugins, start("unrooted"), tmp_path, verify_mode="nist")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    medium = record.evidence["readback"]["medium"]
    assert "phonewipe-pwread" in medium and "arm64-v8a" in medium and "O_DIRECT" in medium


@pytest.mark.interop
def test_flash_that_drops_part_of_the_fill_fails(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    for mode, seed in (("quick", 1), ("quick", 2), ("nist", 3), ("full", 4)):
        record = fill(plugins, start("unrooted-lying-storage"), tmp_path, verify_mode=mode,
                      seed=seed)
        assert record.outcome is Outcome.FAILED, (mode, seed, record.reason)
        assert record.verification.failures_total > 0


@pytest.mark.interop
def test_without_a_build_for_its_abi_the_fill_is_not_verified(fleet, tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(client_readback, "HELPER_BUILDS", tmp_path / "no-builds")
    plugins, start = fleet
    record = fill(plugins, start("unrooted"), tmp_path)
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert "no build for the phone's ABI arm64-v8a" in record.reason


@pytest.mark.interop
def test_the_emulated_kernel_refuses_a_build_for_another_abi(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("unrooted")
    device = plugins["adb"].server.client().device(serial=handset.endpoints["adb"])
    wrong = (HELPER / "bin" / "phonewipe-pwread-x86_64").read_bytes()
    device.sync.push(wrong, "/data/local/tmp/pw", mode=0o755)
    out = device.shell2("/data/local/tmp/pw --version")
    assert out.returncode == 126 and "Exec format error" in out.output
    right = (HELPER / "bin" / "phonewipe-pwread-arm64-v8a").read_bytes()
    device.sync.push(right, "/data/local/tmp/pw", mode=0o755)
    out = device.shell2("/data/local/tmp/pw --version")
    assert out.returncode == 0 and out.output.strip() == "phonewipe-pwread/1"
