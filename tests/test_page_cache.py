"""Issue #12: read-back must come from the flash, not the phone's page cache.

The emulated kernel keeps what was written in RAM (phonewipe.erase.emulation.pagecache); a flash that
drops writes below it looks perfect to a buffered `dd` right after the overwrite. These tests
drive the real adb server against such handsets and show that no adb or fastboot method
passes them, that the honest ones still do, and that the cache model is real: with the
client's cache bypass switched off the same liar gets a PASS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.pagecache import PageCache
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome

LIARS = ["lying-storage-1pct", "lying-storage-scattered"]


# -- the model ---------------------------------------------------------------------------
def test_the_cache_answers_buffered_reads_until_dropped(tmp_path: Path) -> None:
    storage = HandsetStorage.create(tmp_path / "h", load_profile("lying-storage-1pct"), "PC1")
    lo, hi = storage.faults.untouched[0]
    old = storage.read(lo, 4096)
    storage.write(lo - 4096, b"\xaa" * 12288, cached=True)
    storage.sync()  # sync writes back dirty pages; it does not empty the cache
    assert storage.read(lo, 4096, cached=True) == b"\xaa" * 4096  # RAM
    assert storage.read(lo, 4096) == old  # the flash dropped it
    assert storage.read(lo - 4096, 4096) == b"\xaa" * 4096  # landed before the bad run
    storage.drop_caches()
    assert storage.read(lo, 4096, cached=True) == old
    storage.close()


def test_the_cache_is_bounded_by_ram_in_write_order() -> None:
    cache = PageCache(capacity=8192)
    cache.note_write(0, b"a" * 4096, landed=[])  # dropped by the flash: held in RAM only
    assert cache.overlay(0, bytes(4096)) == b"a" * 4096
    cache.note_write(4096, b"b" * 4096, landed=[(4096, 4096)])
    assert cache.overlay(0, bytes(4096)) == b"a" * 4096
    cache.note_write(8192, b"c" * 4096, landed=[(8192, 4096)])  # 8 KiB later: evicted
    assert cache.overlay(0, bytes(4096)) == bytes(4096)


def test_a_newer_write_that_lands_replaces_what_the_cache_held() -> None:
    cache = PageCache(capacity=1 << 20)
    cache.note_write(0, b"x" * 8192, landed=[(4096, 4096)])
    cache.note_write(0, b"y" * 2048, landed=[(0, 2048)])
    assert cache.overlay(0, bytes(8192)) == bytes(2048) + b"x" * 2048 + bytes(4096)
    assert cache.held_bytes == 2048


# -- through the real adb server --------------------------------------------------------
@pytest.fixture
def fleet(adb_fleet: Any) -> Any:
    return adb_fleet


def erase(plugins: dict[str, Any], handset: Any, tmp_path: Path, **settings: Any) -> Any:
    adb = plugins["adb"]
    endpoint = [e for e in adb.discover() if e.address == handset.endpoints["adb"]][0]
    with AuditLog(tmp_path / f"audit-{handset.serial}.sqlite") as audit:
        return run_job(adb, endpoint, JobSettings(**settings), audit)


@pytest.mark.interop
@pytest.mark.parametrize("profile", LIARS)
def test_storage_that_drops_writes_below_the_cache_never_passes(fleet, tmp_path: Path,
                                                                profile: str) -> None:
    plugins, start = fleet
    for method in ("adb-raw-pattern", "adb-raw-zeros"):
        for mode, seeds in (("quick", (1, 2, 3)), ("nist", (4,)), ("full", (5,))):
            for seed in seeds:
                handset = start(profile)
                record = erase(plugins, handset, tmp_path, method=method, verify_mode=mode,
                               seed=seed)
                assert record.outcome is Outcome.FAILED, (method, mode, seed, record.reason)
                assert record.verification.failures_total > 0
                assert "flushbufs" in record.evidence["readback"]["medium"]


@pytest.mark.interop
def test_without_the_bypass_the_liar_would_pass(fleet, tmp_path: Path, monkeypatch) -> None:
    """The emulated cache is what a buffered read-back sees: proof the tests above can fail."""
    from phonewipe.protocols.adb import client_readback
    monkeypatch.setattr(client_readback._DdReader, "bypass_cache", lambda self: "nothing (test)")
    plugins, start = fleet
    record = erase(plugins, start("lying-storage-1pct"), tmp_path, method="adb-raw-pattern",
                   verify_mode="full")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason


@pytest.mark.interop
def test_the_honest_phone_still_passes_and_says_how_it_read(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    for method in ("adb-raw-pattern", "adb-raw-zeros"):
        record = erase(plugins, start("rooted"), tmp_path, method=method, verify_mode="nist")
        assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
        assert "page cache was dropped" in record.evidence["readback"]["medium"]
    assert record.device.frp is False and record.device.mdm is False  # checked, not unknown
    assert {"frp-clear", "mdm-clear"} <= {f.code for f in record.findings}


@pytest.mark.interop
def test_a_phone_that_locks_its_cache_is_not_verified(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    record = erase(plugins, start("cache-locked"), tmp_path, method="adb-raw-pattern")
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert "page cache" in record.reason and "iflag=direct" in record.reason
    assert record.verification.status == "unavailable"


@pytest.mark.interop
def test_direct_reads_stand_in_for_a_locked_cache(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    record = erase(plugins, start("cache-locked-direct"), tmp_path, method="adb-raw-pattern",
                   verify_mode="nist")
    assert record.outcome is Outcome.FAILED, record.reason
    assert "O_DIRECT" in record.evidence["readback"]["medium"]


@pytest.mark.interop
@pytest.mark.parametrize("profile", LIARS)
def test_erased_in_the_bootloader_the_liar_still_fails_in_android(fleet, tmp_path: Path,
                                                                   profile: str) -> None:
    plugins, start = fleet
    handset = start(profile)
    record = erase(plugins, handset, tmp_path, via="fastboot", seed=7)
    assert record.outcome is Outcome.FAILED, record.reason
    assert record.sanitization.method.startswith("fastboot-")
