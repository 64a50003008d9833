"""Property tests of the iPhone wire parsers (usbmux header, plist framing, lockdown
messages) and of the emulated usbmuxd fed garbage: any input gives a value or one
`WireError` line, never another exception, and the daemon keeps serving."""
from __future__ import annotations

import plistlib
import socket
import struct
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd
from phonewipe.protocols.apple_ios.wire import (
    MAX_PLIST_FRAME,
    MUX_HEADER,
    MuxHeader,
    WireError,
    build_frame,
    build_mux_frame,
    parse_frame_length,
    parse_lockdown_reply,
    parse_lockdown_request,
    parse_mux_header,
    parse_mux_message,
    parse_plist,
)

texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)  # what XML plists hold
scalars = st.one_of(texts, st.integers(-2**63, 2**63 - 1), st.booleans(),
                    st.binary(max_size=20), st.floats(allow_nan=False),
                    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
messages = st.dictionaries(texts, values, max_size=6)


def one_line(exc: WireError) -> None:
    assert "\n" not in exc.line() and exc.message


@st.composite
def mangled_plists(draw: st.DrawFn) -> bytes:
    """A real plist (XML or binary) with a few bytes changed, cut, or left alone."""
    fmt = draw(st.sampled_from([plistlib.FMT_XML, plistlib.FMT_BINARY]))
    data = bytearray(plistlib.dumps(draw(messages), fmt=fmt))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


@given(st.one_of(st.binary(max_size=300), mangled_plists()))
def test_any_plist_body_parses_to_a_dict_or_one_error_line(raw: bytes) -> None:
    try:
        assert isinstance(parse_plist(raw, "test"), dict)
    except WireError as exc:
        one_line(exc)


@given(st.binary(min_size=0, max_size=20))
def test_any_usbmux_header_parses_or_is_one_error_line(raw: bytes) -> None:
    try:
        header = parse_mux_header(raw)
    except WireError as exc:
        one_line(exc)
        return
    assert len(raw) == MUX_HEADER.size and header.body_length() >= 0


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.one_of(st.binary(max_size=200), mangled_plists()))
def test_any_usbmux_message_is_a_typed_dict_or_one_error_line(version: int, kind: int, tag: int,
                                                             body: bytes) -> None:
    try:
        message = parse_mux_message(MuxHeader(16 + len(body), version, kind, tag), body)
    except WireError as exc:
        one_line(exc)
        return
    assert isinstance(message["MessageType"], str)


@given(messages, st.integers(0, 2**32 - 1))
def test_usbmux_frames_round_trip(message: dict, tag: int) -> None:
    frame = build_mux_frame({**message, "MessageType": "ListDevices"}, tag)
    header = parse_mux_header(frame[:16])
    assert header.tag == tag and header.length == len(frame)
    parsed = parse_mux_message(header, frame[16:])
    assert parsed["MessageType"] == "ListDevices"


@given(st.binary(max_size=6))
def test_any_frame_length_is_bounded_or_one_error_line(raw: bytes) -> None:
    try:
        n = parse_frame_length(raw)
    except WireError as exc:
        one_line(exc)
        return
    assert 0 < n <= MAX_PLIST_FRAME


@given(st.one_of(st.binary(max_size=200), mangled_plists(), messages.map(plistlib.dumps)))
def test_any_lockdown_message_parses_or_is_one_error_line(raw: bytes) -> None:
    try:
        request, message = parse_lockdown_request(raw)
        assert request == message["Request"]
    except WireError as exc:
        one_line(exc)
    try:
        reply = parse_lockdown_reply("GetValue", raw)
        assert reply["Request"] == "GetValue"
    except WireError as exc:
        one_line(exc)


@given(messages)
def test_lockdown_frames_round_trip(message: dict) -> None:
    frame = build_frame({**message, "Request": "QueryType"})
    assert parse_frame_length(frame[:4]) == len(frame) - 4
    assert parse_lockdown_request(frame[4:])[0] == "QueryType"


MUX = EmulatedUsbmuxd()  # one daemon for every example: it must survive them all


def ask_devices() -> dict:
    host, port = MUX.tcp_address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(build_mux_frame({"MessageType": "ListDevices"}, 3))
        header = parse_mux_header(s.recv(16, socket.MSG_WAITALL))
        return plistlib.loads(s.recv(header.body_length(), socket.MSG_WAITALL))


@given(st.one_of(st.binary(max_size=200),
                 mangled_plists().map(lambda b: struct.pack("<IIII", 16 + len(b), 1, 8, 1) + b)))
def test_the_emulated_usbmuxd_survives_garbage(raw: bytes) -> None:
    host, port = MUX.tcp_address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.settimeout(2)
        try:  # the daemon may hang up first: a bad header ends the connection
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        except OSError:
            pass
    assert ask_devices() == {"DeviceList": []}
