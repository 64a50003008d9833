"""The block plugin's write loop on real files (the device's part is in
tests/test_block_loop.py): what lands at each offset when two writers make the keyed
pattern, zeros, the tally and the progress calls, and a failing write."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from phonewipe.erase.pattern import new_key, pattern_bytes
from phonewipe.erase.plugin import EraseContext
from phonewipe.protocols.block import directio
from phonewipe.protocols.block.session import PATTERN, ZEROS, BlockSession

SIZE = 7 * directio.MADE_CHUNK + 3 * 4096  # neither chunk size divides it


def write(path: Path, method, key: bytes) -> tuple[directio.Tally, list[tuple[int, int]]]:
    path.write_bytes(b"\xa5" * SIZE)  # old content everywhere
    calls: list[tuple[int, int]] = []
    tally = directio.Tally()
    fd = os.open(path, os.O_WRONLY)
    try:
        directio.write_stream(fd, SIZE, BlockSession._filler(method, EraseContext(key)),
                              lambda done, total: calls.append((done, total)), tally)
    finally:
        os.close(fd)
    return tally, calls


def test_two_writers_put_the_pattern_of_each_offset_at_that_offset(tmp_path: Path) -> None:
    key = new_key()
    tally, calls = write(tmp_path / "medium", PATTERN, key)
    assert (tmp_path / "medium").read_bytes() == pattern_bytes(key, 0, SIZE)
    assert (tally.bytes, tally.writes) == (SIZE, 8)
    assert calls[-1] == (SIZE, SIZE) and calls.count((SIZE, SIZE)) == 1


def test_zeros_from_one_buffer(tmp_path: Path) -> None:
    tally, calls = write(tmp_path / "medium", ZEROS, new_key())
    assert not (tmp_path / "medium").read_bytes().strip(b"\x00")
    assert (tally.bytes, tally.writes) == (SIZE, -(-SIZE // directio.CHUNK))
    assert calls == [(SIZE, SIZE)]  # fast: only the end is reported


@pytest.mark.parametrize("method", [PATTERN, ZEROS])
def test_a_failing_write_stops_the_writers_and_is_raised(method) -> None:
    tally = directio.Tally()
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as raised:
            directio.write_stream(fd, SIZE, BlockSession._filler(method, EraseContext(new_key())),
                                  lambda done, total: None, tally)
    finally:
        os.close(fd)
    assert raised.value.errno == 28 and tally.bytes == 0  # ENOSPC, nothing acknowledged


def test_a_device_that_takes_no_more_bytes_is_an_error_not_a_hang(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """pwrite returning 0 (nothing taken, no error) must end the erase, not spin on it."""
    path = tmp_path / "medium.img"
    path.write_bytes(bytes(SIZE))
    monkeypatch.setattr(directio.os, "pwrite", lambda fd, data, offset: 0)
    fd = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="took no more bytes"):
            directio.write_stream(fd, SIZE, BlockSession._filler(ZEROS, EraseContext(new_key())),
                                  lambda done, total: None, directio.Tally())
    finally:
        os.close(fd)
