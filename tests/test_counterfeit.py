"""Counterfeit capacity: flash that reports more than it holds, addresses wrapping onto the
start (profile `counterfeit-capacity`). Every write is acknowledged and every read answers,
so a tool that only checks for errors, or for "something was written here", passes it. The
keyed pattern is addressed by offset, so a sample read at X holds the pattern of X + k * real
size and fails; a zero fill really zeroes every block of the real flash, so it may pass, but
only with no planted data left. Driven through the real adb server, as a phone would be."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.pattern_samples import SamplePattern
from phonewipe.erase.wrap import describe, wrap_size

PROFILE = "counterfeit-capacity"


def test_the_flash_wraps_at_its_real_size(tmp_path: Path) -> None:
    storage = HandsetStorage.create(tmp_path / "h", load_profile(PROFILE), "CF1")
    real = storage.flash_size
    assert real == storage.size // 4 and storage.partition_size("userdata") == storage.size
    storage.write(real - 4096, b"\x11" * 8192)  # straddles the wrap
    assert storage.read(real - 4096, 8192) == b"\x11" * 8192  # reads as written...
    assert storage.read(0, 4096) == b"\x11" * 4096  # ...but its second half landed at 0
    storage.write(3 * real, b"\x22" * 4096)
    assert storage.read(0, 4096) == b"\x22" * 4096  # the newest write to the same flash wins
    storage.close()


def _erase(plugins: dict[str, Any], handset: Any, tmp_path: Path, **settings: Any) -> Any:
    adb = plugins["adb"]
    endpoint = [e for e in adb.discover() if e.address == handset.endpoints["adb"]][0]
    with AuditLog(tmp_path / f"audit-{handset.serial}.sqlite") as audit:
        return run_job(adb, endpoint, JobSettings(**settings), audit)


@pytest.mark.interop
def test_the_keyed_pattern_never_passes_counterfeit_flash(adb_fleet: Any, tmp_path: Path) -> None:
    plugins, start = adb_fleet
    for mode, seed in (("quick", 1), ("quick", 2), ("nist", 3), ("full", 4)):
        record = _erase(plugins, start(PROFILE), tmp_path, method="adb-raw-pattern",
                        verify_mode=mode, seed=seed)
        assert record.outcome is Outcome.FAILED, (mode, seed, record.reason)
        assert record.verification.failures_total > 0
        assert "holds about 8 MiB of the 32 MiB it reports" in record.reason, record.reason
        listed = record.verification.failures
        assert listed and all("wraps its addresses" in f.found for f in listed), listed
        # no second erase can help counterfeit flash: straight to destruction, not "again"
        assert "run the erase again" not in record.reason and "do not erase it again" in record.reason
        assert "counterfeit capacity: physically destroy it" in record.destination.details


@pytest.mark.interop
def test_the_default_method_fails_it_too(adb_fleet: Any, tmp_path: Path) -> None:
    plugins, start = adb_fleet
    record = _erase(plugins, start(PROFILE), tmp_path, seed=5)
    assert record.outcome is Outcome.FAILED, record.reason


@pytest.mark.interop
def test_a_zero_fill_passes_only_with_nothing_left(adb_fleet: Any, tmp_path: Path) -> None:
    plugins, start = adb_fleet
    handset = start(PROFILE)
    record = _erase(plugins, handset, tmp_path, method="adb-raw-zeros", verify_mode="full")
    image = (handset.storage.directory / "userdata.img").read_bytes()
    survivors = [m for m in planted_markers() if m in image]
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason  # truthfully: all zero
    assert survivors == [] and image[:handset.storage.flash_size].count(0) == \
        handset.storage.flash_size


# -- naming it: erase.wrap ----------------------------------------------------------------
def _wrapped_samples(key: bytes, size: int, real: int, offsets: list[int]) -> list[tuple[int, bytes]]:
    """What counterfeit flash of ``real`` bytes returns at each offset after an ascending
    overwrite of ``size`` bytes with the keyed pattern."""
    pattern = SamplePattern(key)
    return [(x, pattern.at(x + (size - 4096 - x) // real * real, 4096)) for x in offsets]


def test_the_real_size_is_named_from_the_failed_samples() -> None:
    key, size = bytes(range(32)), 1 << 30
    failed = _wrapped_samples(key, size, 64 << 20, [4096 * 7, 4096 * 1000, 4096 * 9000])
    assert wrap_size(size, failed, SamplePattern(key)) == 64 << 20
    assert "holds about 64 MiB of the 1 GiB it reports" in describe(64 << 20, size)


def test_old_data_and_other_keys_name_nothing() -> None:
    key, size = bytes(range(32)), 1 << 30
    old = [(4096 * i, random.Random(i).randbytes(4096)) for i in (3, 50, 700)]
    assert wrap_size(size, old, SamplePattern(key)) is None  # a medium that kept old data
    other = _wrapped_samples(b"\1" * 32, size, 64 << 20, [4096 * 3, 4096 * 50])
    assert wrap_size(size, other, SamplePattern(key)) is None
    mixed = _wrapped_samples(key, size, 64 << 20, [4096 * 3]) + old[:1]
    assert wrap_size(size, mixed, SamplePattern(key)) is None  # one size must explain all


def test_each_listed_failure_names_the_offset_whose_pattern_it_holds() -> None:
    from phonewipe.erase.model import SampleFailure
    from phonewipe.erase.wrap import relabel
    key, size, real = bytes(range(32)), 1 << 30, 64 << 20
    wrapped = _wrapped_samples(key, size, real, [4096 * 7, 4096 * 1000])
    old = (4096 * 50, random.Random(1).randbytes(4096))
    failures = [SampleFailure(o, "data that is not the keyed pattern (old content left in place)")
                for o, _ in [*wrapped, old]]
    found = [f.found for f in relabel(failures, [*wrapped, old], real, size, SamplePattern(key))]
    last = 4096 * 7 + (size - 4096 - 4096 * 7) // real * real
    assert found[0] == (f"the keyed pattern written at offset {last:,}, 960 MiB further on "
                        "(the medium wraps its addresses)")
    assert "wraps its addresses" in found[1]
    assert found[2] == failures[2].found  # old data stays old data
