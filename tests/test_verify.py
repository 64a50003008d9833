"""Sampling plans and sample checks, against emulated storage with planted data and faults."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import UsageError
from phonewipe.erase.model import Expectation
from phonewipe.erase.pattern import PatternStream, new_key, pattern_bytes
from phonewipe.erase.verify import (
    NIST_SUBSECTIONS,
    check_sample,
    make_plan,
    quick_sample_count,
    run_verification,
)


class StorageReader:
    """A BlockReader straight over emulated storage (the plugin-free path)."""

    def __init__(self, storage: HandsetStorage) -> None:
        self.storage = storage
        self.size = storage.size
        self.block_size = 4096

    def bypass_cache(self) -> str:
        return "reads the emulated medium directly"

    def read_many(self, extents):
        for offset, length in extents:
            try:
                yield self.storage.read(offset, length)
            except OSError:
                yield None


def overwrite(storage: HandsetStorage, key: bytes) -> None:
    stream = PatternStream(key)
    for off in range(0, storage.size, 1 << 20):
        storage.write(off, stream.next(min(1 << 20, storage.size - off)))


@pytest.fixture
def handset(tmp_path: Path):
    def make(profile_name: str, **faults) -> HandsetStorage:
        profile = load_profile(profile_name)
        if faults:
            profile = replace(profile, faults=replace(profile.faults, **faults))
        return HandsetStorage.create(tmp_path / f"{profile_name}-{len(faults)}", profile, "T0")
    return make


def test_quick_sample_counts_match_the_standard_table():
    assert quick_sample_count(0.99, 0.001) == 4603
    assert quick_sample_count(0.95, 0.01) == 299
    assert quick_sample_count(0.99, 0.01) == 459
    assert quick_sample_count(0.95, 0.001) == 2995
    with pytest.raises(UsageError):
        quick_sample_count(1.0, 0.001)


def test_plans_are_reproducible_from_their_parameters():
    a = make_plan("quick", 1 << 30, seed=42)
    b = make_plan("quick", 1 << 30, seed=42)
    c = make_plan("quick", 1 << 30, seed=43)
    assert a.extents() == b.extents()
    assert a.extents() != c.extents()
    extents = a.extents()
    assert extents[0] == (0, 4096) and extents[-1] == ((1 << 30) - 4096, 4096)
    assert len(extents) == 4603 + 2


def test_quick_plan_is_stratified():
    plan = make_plan("quick", 1 << 30, seed=7)
    blocks = plan.blocks
    n = quick_sample_count(0.99, 0.001)
    starts = {off // 4096 for off, _ in plan.extents()}
    for i in range(n):
        lo, hi = i * blocks // n, (i + 1) * blocks // n
        assert any(lo <= b < hi for b in starts), f"stratum {i} has no sample"


def test_nist_plan_follows_rev1_rule():
    size = 4 << 30
    plan = make_plan("nist", size, seed=3)
    extents = plan.extents()
    assert extents[0][0] == 0 and extents[-1][0] + extents[-1][1] == size
    assert plan.coverage() >= 0.10
    blocks = plan.blocks
    edges = {(0, 4096), (size - 4096, 4096)}  # the first and last addressable blocks
    samples = [e for e in extents if e not in edges]
    for s in range(NIST_SUBSECTIONS):
        lo, hi = s * blocks // NIST_SUBSECTIONS * 4096, (s + 1) * blocks // NIST_SUBSECTIONS * 4096
        inside = [(o, n) for o, n in samples if lo <= o < hi]
        assert len(inside) == 2, f"subsection {s} has {len(inside)} samples"
        (a, na), (b, nb) = inside
        assert a + na <= b and b + nb <= hi, "samples overlap or leave their subsection"
        assert min(na, nb) >= 0.05 * (hi - lo)


def test_full_plan_reads_everything():
    plan = make_plan("full", 32 << 20, seed=1)
    assert sum(n for _, n in plan.extents()) == 32 << 20


def test_sample_checks_name_what_they_found():
    key = new_key()
    assert check_sample(pattern_bytes(key, 8192, 4096), 8192, Expectation.PATTERN, key) is None
    assert "zeros" in check_sample(bytes(4096), 8192, Expectation.PATTERN, key)
    assert check_sample(bytes(4096), 0, Expectation.ZEROS, None) is None
    found = check_sample(b"x" * 100 + b"PWMARK-SMS-PIN-30KQ7" + bytes(3976), 4096, Expectation.ZEROS, None)
    assert found == "planted marker PWMARK-SMS-PIN-30KQ7"
    assert "SQLite" in check_sample(b"SQLite format 3\x00" + bytes(4080), 4096,
                                    Expectation.NO_PLAINTEXT, None)
    assert "entropy" in check_sample(b"ab" * 2048, 4096, Expectation.NO_PLAINTEXT, None)
    assert check_sample(pattern_bytes(key, 0, 4096), 4096, Expectation.NO_PLAINTEXT, None) is None


def test_honest_overwrite_passes_every_mode(handset):
    storage = handset("rooted")
    key = new_key()
    overwrite(storage, key)
    for mode in ("quick", "nist", "full"):
        result = run_verification(StorageReader(storage), make_plan(mode, storage.size, seed=9),
                                  Expectation.PATTERN, key)
        assert result.status == "passed", (mode, result.failures[:3])
        assert result.digest and result.samples_read > 0


def test_unerased_device_fails_and_names_planted_data(handset):
    storage = handset("rooted")
    result = run_verification(StorageReader(storage), make_plan("full", storage.size, seed=1),
                              Expectation.PATTERN, new_key())
    assert result.status == "failed"
    assert result.failures_total == len(make_plan("full", storage.size, seed=1).extents())
    assert len(result.failures) <= 20


@pytest.mark.parametrize("faults", [
    {"lying_fraction": 0.01, "lying_layout": "scattered"},
    {"lying_fraction": 0.01, "lying_layout": "contiguous"},
    {"lying_fraction": 0.01, "lying_layout": "middle"},
    {"partial_at": 0.5},
])
def test_cheating_devices_fail_under_quick_defaults_across_seeds(handset, faults):
    storage = handset("rooted", **faults)
    key = new_key()
    overwrite(storage, key)
    for seed in range(25):
        result = run_verification(StorageReader(storage), make_plan("quick", storage.size, seed=seed),
                                  Expectation.PATTERN, key)
        assert result.status == "failed", f"false PASS with seed {seed} for {faults}"


def test_unreadable_sectors_fail_verification(handset):
    storage = handset("rooted", unreadable=((0.25, 0.26),))
    key = new_key()
    overwrite(storage, key)
    result = run_verification(StorageReader(storage), make_plan("quick", storage.size, seed=2),
                              Expectation.PATTERN, key)
    assert result.status == "failed"
    assert any("unreadable" in f.found for f in result.failures)


@pytest.mark.parametrize("blocks", [1_000, 100_000])
def test_the_coverage_sentence_states_the_blocks_really_read(blocks: int) -> None:
    plan = make_plan("quick", blocks * 4096, seed=3)
    sentence = plan.describe()
    assert f"{len(plan.extents()):,} blocks" in sentence
    if blocks < quick_sample_count(0.99, 0.001):
        assert sentence.startswith("statistical sampling: all 1,000 blocks")


@pytest.mark.parametrize("blocks, seed", [(8_192, 0), (8_192, 1), (100_000, 3)])
def test_the_coverage_sentence_adds_up(blocks: int, seed: int) -> None:
    """The blocks read are the stratified picks plus exactly the ends the sentence says were
    added: never "4,603 read (4,603 stratified ones and the first and last)"."""
    plan = make_plan("quick", blocks * 4096, seed=seed)
    read = [offset // 4096 for offset, _ in plan.extents()]
    sentence = plan.describe()
    n = quick_sample_count(0.99, 0.001)
    added = ("first" in sentence.split("plus")[-1]) + ("last" in sentence.split("plus")[-1]) \
        if "plus" in sentence else 0
    assert len(read) == n + added and {0, blocks - 1} <= set(read)
    assert f"{len(read):,} blocks read ({n:,} stratified" in sentence
