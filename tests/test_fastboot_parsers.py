"""Property tests of the fastboot reply and sparse-image parsers: any input gives a value
or a ProtocolError, never another exception; what we write, the emulator reads back."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonewipe.erase.errors import ProtocolError
from phonewipe.protocols.fastboot import sparse
from phonewipe.protocols.fastboot.client import parse_getvar_all
from phonewipe.protocols.fastboot.wire import MAX_REPLY, TAGS, parse_reply


@given(st.binary(max_size=400))
def test_any_reply_parses_or_is_a_protocol_error(raw: bytes) -> None:
    try:
        reply = parse_reply(raw)
    except ProtocolError as exc:
        assert "\n" not in exc.line()
        return
    assert reply.tag in TAGS and len(raw) <= MAX_REPLY


@given(st.sampled_from(["OKAY", "FAIL", "INFO", "TEXT"]), st.text(max_size=100))
def test_well_formed_replies_round_trip(tag: str, text: str) -> None:
    raw = (tag + text).encode()
    if len(raw) <= MAX_REPLY:
        assert parse_reply(raw).text == text


@given(st.integers(0, 0xFFFFFFFF))
def test_data_reply_carries_its_size(size: int) -> None:
    assert parse_reply(b"DATA%08x" % size).size == size


def test_oversized_and_malformed_replies_are_named() -> None:
    for raw, words in ((b"OKAY" + b"x" * 300, "oversized"), (b"HELO", "malformed"),
                       (b"DATA12", "malformed DATA")):
        try:
            parse_reply(raw)
        except ProtocolError as exc:
            assert words in exc.message
        else:
            raise AssertionError(raw)


@given(st.lists(st.tuples(st.text("abcdefgh-:", min_size=1, max_size=20).filter(
    lambda s: s.strip(" :") == s and ": " not in s),
    st.text("0123456789abxyz", max_size=12)), max_size=10))
def test_getvar_all_lines(pairs) -> None:
    lines = [f"{k}: {v}" for k, v in pairs]
    assert parse_getvar_all(lines) == {k: v for k, v in pairs}


def _apply(image: bytes, size: int) -> bytearray:
    out = bytearray(size)
    for extent in sparse.parse(image):
        if extent.data is not None:
            out[extent.offset:extent.offset + extent.length] = extent.data
        elif extent.fill is not None:
            out[extent.offset:extent.offset + extent.length] = extent.fill * (extent.length // 4)
    return out


@settings(deadline=None)
@given(st.integers(1, 40), st.integers(3, 20), st.binary(min_size=1, max_size=64))
def test_planned_pieces_rebuild_the_image(blocks: int, limit_blocks: int, seed: bytes) -> None:
    block = 512
    size = blocks * block
    image = (seed * (size // len(seed) + 1))[:size]
    limit = sparse.OVERHEAD + limit_blocks * block
    out = bytearray(size)
    for piece in sparse.plan_pieces(size, limit, block):
        data = piece.prefix + image[piece.offset:piece.offset + piece.length] + piece.suffix
        assert len(data) == piece.size <= limit
        applied = _apply(data, size)
        out[piece.offset:piece.offset + piece.length] = \
            applied[piece.offset:piece.offset + piece.length]
        assert not applied[:piece.offset].strip(b"\0")  # DONT_CARE before: untouched
    assert bytes(out) == image


@given(st.binary(max_size=200))
def test_any_sparse_input_parses_or_is_a_sparse_error(tail: bytes) -> None:
    header = struct.pack("<IHHHHIIII", sparse.MAGIC, 1, 0, 28, 12, 4096, 4, 2, 0)
    for image in (tail, header + tail):
        try:
            list(sparse.parse(image))
        except sparse.SparseError as exc:
            assert "\n" not in exc.line()


def test_sparse_chunks_past_the_image_are_refused() -> None:
    header = struct.pack("<IHHHHIIII", sparse.MAGIC, 1, 0, 28, 12, 4096, 1, 1, 0)
    chunk = struct.pack("<HHII", sparse.FILL, 0, 2, 16) + b"\xff" * 4
    with pytest.raises(sparse.SparseError) as caught:
        list(sparse.parse(header + chunk))
    assert "past the image" in caught.value.message
