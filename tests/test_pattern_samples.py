"""The verification's pattern for scattered samples (one ECB context, counters made by
integer arithmetic) gives exactly the keyed pattern's bytes, aligned or not, short or long."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phonewipe.erase.model import Expectation
from phonewipe.erase.pattern import new_key, pattern_bytes
from phonewipe.erase.pattern_samples import MAX_FAST, SamplePattern
from phonewipe.erase.verify import check_sample

KEY = bytes(range(32))


@given(st.integers(0, 1 << 62), st.integers(0, 2 * MAX_FAST))
def test_any_range_is_the_keyed_patterns(offset: int, length: int) -> None:
    assert SamplePattern(KEY).at(offset, length) == pattern_bytes(KEY, offset, length)


@given(st.integers(0, 1 << 40).map(lambda b: b * 4096), st.sampled_from([16, 512, 4096, MAX_FAST]))
def test_aligned_samples_the_fast_way(offset: int, length: int) -> None:
    pattern = SamplePattern(KEY)
    assert pattern.at(offset, length) == pattern_bytes(KEY, offset, length)
    assert pattern.at(offset + length, length) == pattern_bytes(KEY, offset + length, length)


def test_counters_near_the_top_of_the_counter_space_wrap_as_ctr_does() -> None:
    offset = ((1 << 128) - 3) * 16
    assert SamplePattern(KEY).at(offset, 4096) == pattern_bytes(KEY, offset, 4096)


def test_a_sample_one_block_off_or_under_another_key_is_caught() -> None:
    key = new_key()
    good = pattern_bytes(key, 8192, 4096)
    pattern = SamplePattern(key)
    assert check_sample(good, 8192, Expectation.PATTERN, pattern) is None
    assert check_sample(good, 8192 + 16, Expectation.PATTERN, pattern) is not None
    assert check_sample(good, 8192, Expectation.PATTERN, SamplePattern(new_key())) is not None
    assert check_sample(good, 8192, Expectation.PATTERN, key) is None  # a bare key still works
