"""The raw data of a Firehose program, made ahead into reused buffers (pieces.py): every
byte of the keyed pattern reaches the sender in order, a piece is not refilled while it is
being sent, and a failure on either side stops the worker and reaches the caller."""
from __future__ import annotations

import threading
import time

import pytest

from phonewipe.erase.pattern import PatternStream, new_key, pattern_bytes
from phonewipe.protocols.qualcomm_edl.pieces import Pieces
from phonewipe.protocols.qualcomm_edl.session import _pattern

STEP = 64 * 1024


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edl-pieces"]


@pytest.mark.parametrize("total", [STEP, 5 * STEP, 5 * STEP + 4096, 4096])
def test_pieces_carry_the_pattern_in_order(total: int) -> None:
    key, base = new_key(), 3 * 2**20
    sent = bytearray()
    sizes = []
    with Pieces(_pattern(key, base), total, STEP) as pieces:
        for piece in pieces:
            sent += piece.tobytes()
            sizes.append(len(piece))
    assert bytes(sent) == pattern_bytes(key, base, total)
    assert sizes == [min(STEP, total - pos) for pos in range(0, total, STEP)]
    assert not _workers()


def test_a_piece_is_not_refilled_while_it_is_being_sent() -> None:
    """The worker runs ahead as far as it can while the sender holds each piece."""
    key = new_key()
    total = 12 * STEP
    with Pieces(_pattern(key, 0), total, STEP, buffers=2) as pieces:
        for i, piece in enumerate(pieces):
            first = piece.tobytes()
            time.sleep(0.005)  # room for the worker to fill whatever it may
            assert piece.tobytes() == first == pattern_bytes(key, i * STEP, STEP)


def test_a_failing_fill_is_raised_to_the_sender() -> None:
    def fill(pos: int, out: memoryview) -> None:
        if pos >= 2 * STEP:
            raise ValueError("no more pattern")
        out[:] = bytes(len(out))

    got = 0
    with pytest.raises(ValueError, match="no more pattern"):
        with Pieces(fill, 10 * STEP, STEP) as pieces:
            for _ in pieces:
                got += 1
    assert got == 2
    assert not _workers()


def test_a_failing_send_stops_the_worker() -> None:
    with pytest.raises(ConnectionError):
        with Pieces(_pattern(new_key(), 0), 100 * STEP, STEP) as pieces:
            for _ in pieces:
                raise ConnectionError("unplugged")
    assert not _workers()


def test_pattern_fill_matches_random_access_in_exact_buffers() -> None:
    key = new_key()
    stream = PatternStream(key, 4096)
    pos = 4096
    for length in (STEP, STEP, 4096, 1, 17, STEP):
        out = bytearray(length)
        stream.fill(memoryview(out))
        assert bytes(out) == pattern_bytes(key, pos, length)
        pos += length


def test_out_of_order_pieces_still_get_their_own_bytes() -> None:
    key = new_key()
    fill = _pattern(key, 2**20)
    for pos in (0, 2 * STEP, STEP, 2 * STEP):
        out = bytearray(STEP)
        fill(pos, memoryview(out))
        assert bytes(out) == pattern_bytes(key, 2**20 + pos, STEP)
