"""The ADB wire format: headers, shell v2 packets, sync structs, Android RSA keys."""
from __future__ import annotations

import base64
import os
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phonewipe.erase.errors import ProtocolError
from phonewipe.protocols.adb import wire

COMMANDS = [wire.CNXN, wire.AUTH, wire.OPEN, wire.OKAY, wire.WRTE, wire.CLSE, wire.STLS]
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


def test_constants_match_the_protocol() -> None:
    assert wire.CNXN == 0x4E584E43
    assert wire.AUTH == 0x48545541
    assert wire.OPEN == 0x4E45504F
    assert wire.OKAY == 0x59414B4F
    assert wire.WRTE == 0x45545257
    assert wire.CLSE == 0x45534C43
    assert wire.STLS == 0x534C5453
    assert wire.A_VERSION == 0x01000001
    assert wire.MAX_PAYLOAD == 1024 * 1024
    assert wire.HEADER_SIZE == 24


def test_known_header_bytes() -> None:
    raw = wire.pack(wire.OKAY, 1, 2)
    assert raw == struct.pack("<6I", 0x59414B4F, 1, 2, 0, 0, 0x59414B4F ^ 0xFFFFFFFF)
    raw = wire.pack(wire.WRTE, 7, 9, b"\x01\x02\xff")
    assert struct.unpack("<6I", raw[:24])[3:5] == (3, 0x102)


@given(command=st.sampled_from(COMMANDS), arg0=u32, arg1=u32,
       data=st.binary(max_size=2048), with_checksum=st.booleans())
def test_message_round_trip(command: int, arg0: int, arg1: int, data: bytes,
                            with_checksum: bool) -> None:
    raw = wire.pack(command, arg0, arg1, data, with_checksum=with_checksum)
    message = wire.parse_message(raw)
    assert (message.command, message.arg0, message.arg1) == (command, arg0, arg1)
    assert message.data == data
    header = wire.parse_header(raw[:24])
    assert header.data_length == len(data)
    assert header.magic == command ^ 0xFFFFFFFF
    assert header.data_check == (sum(data) & 0xFFFFFFFF if with_checksum else 0)


@given(st.lists(st.tuples(st.sampled_from(COMMANDS), u32, u32, st.binary(max_size=64)),
                max_size=8))
def test_message_stream_round_trip(messages: list[tuple[int, int, int, bytes]]) -> None:
    raw = b"".join(wire.pack(*m) for m in messages)
    assert [(m.command, m.arg0, m.arg1, m.data) for m in wire.iter_messages(raw)] == messages


@given(command=st.sampled_from(COMMANDS), magic=u32)
def test_bad_magic_is_rejected(command: int, magic: int) -> None:
    if magic == command ^ 0xFFFFFFFF:
        return
    raw = struct.pack("<6I", command, 0, 0, 0, 0, magic)
    with pytest.raises(ProtocolError, match="bad magic"):
        wire.parse_header(raw)


@given(command=u32)
def test_unknown_command_is_rejected(command: int) -> None:
    if command in COMMANDS:
        return
    raw = struct.pack("<6I", command, 0, 0, 0, 0, command ^ 0xFFFFFFFF)
    with pytest.raises(ProtocolError, match="unknown command"):
        wire.parse_header(raw)


@given(length=st.integers(min_value=wire.MAX_PAYLOAD + 1, max_value=0xFFFFFFFF))
def test_payload_over_maxdata_is_rejected(length: int) -> None:
    raw = struct.pack("<6I", wire.WRTE, 1, 1, length, 0, wire.WRTE ^ 0xFFFFFFFF)
    with pytest.raises(ProtocolError, match="exceeds the negotiated maximum"):
        wire.parse_header(raw)


def test_negotiated_maxdata_is_enforced() -> None:
    raw = wire.pack(wire.WRTE, 1, 1, bytes(4097))
    with pytest.raises(ProtocolError, match="4097 bytes exceeds the negotiated maximum of 4096"):
        wire.parse_message(raw, max_data=4096)
    assert wire.parse_message(raw, max_data=4097).data == bytes(4097)


@given(data=st.binary(min_size=1, max_size=256), delta=st.integers(min_value=1, max_value=1000))
def test_bad_checksum_is_rejected(data: bytes, delta: int) -> None:
    raw = bytearray(wire.pack(wire.WRTE, 1, 2, data))
    check = (sum(data) + delta) & 0xFFFFFFFF
    if check == 0:
        return  # zero means "not checked"
    struct.pack_into("<I", raw, 16, check)
    with pytest.raises(ProtocolError, match="checksum"):
        wire.parse_message(raw)


def test_zero_checksum_is_not_checked() -> None:
    raw = wire.pack(wire.WRTE, 1, 2, b"payload", with_checksum=False)
    assert wire.parse_message(raw).data == b"payload"


def test_truncated_frames_are_rejected() -> None:
    raw = wire.pack(wire.WRTE, 1, 2, b"0123456789")
    with pytest.raises(ProtocolError, match="truncated"):
        list(wire.iter_messages(raw[:-1]))
    with pytest.raises(ProtocolError, match="header"):
        wire.parse_header(raw[:23])
    with pytest.raises(ProtocolError, match="announced"):
        wire.parse_message(raw[:-3])


def test_errors_are_one_line() -> None:
    for raw in (struct.pack("<6I", wire.WRTE, 0, 0, 0, 0, 0),
                struct.pack("<6I", 0x41414141, 0, 0, 0, 0, 0x41414141 ^ 0xFFFFFFFF),
                struct.pack("<6I", wire.WRTE, 0, 0, 1 << 30, 0, wire.WRTE ^ 0xFFFFFFFF)):
        with pytest.raises(ProtocolError) as info:
            wire.parse_header(raw)
        assert "\n" not in info.value.message and info.value.message.startswith("adb: ")


def test_pack_refuses_unknown_command_and_wide_args() -> None:
    with pytest.raises(ProtocolError):
        wire.pack(0x12345678, 0, 0)
    with pytest.raises(ProtocolError):
        wire.pack(wire.OKAY, 1 << 32, 0)


def test_banner_round_trip() -> None:
    raw = wire.make_banner("device", {"ro.product.name": "bluejay", "ro.product.model": "Pixel 6a"},
                           ["shell_v2", "cmd"])
    assert raw == b"device::ro.product.name=bluejay;ro.product.model=Pixel 6a;features=shell_v2,cmd"
    banner = wire.parse_banner(raw + b"\0")
    assert banner.system_type == "device" and banner.serial == ""
    assert banner.properties["ro.product.model"] == "Pixel 6a"
    assert banner.features == {"shell_v2", "cmd"}
    assert wire.parse_banner(b"host::features=a,b").features == {"a", "b"}
    with pytest.raises(ProtocolError):
        wire.parse_banner(b"garbage")


# -- shell v2 -----------------------------------------------------------------------------------

packets = st.lists(st.tuples(st.sampled_from(sorted(wire.SHELL_IDS)), st.binary(max_size=300)),
                   max_size=10)


@given(packets=packets, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_shell_packets_survive_any_split(packets: list[tuple[int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(wire.shell_packet(i, d) for i, d in packets)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    whole = wire.ShellDecoder()
    assert [p for piece in pieces for p in whole.packets(piece)] == packets
    assert whole.idle
    fragments = wire.ShellDecoder()
    joined: dict[int, bytes] = {}
    for piece in pieces:
        for packet_id, data in fragments.feed(piece):
            joined[packet_id] = joined.get(packet_id, b"") + bytes(data)
    expected: dict[int, bytes] = {}
    for packet_id, data in packets:
        expected[packet_id] = expected.get(packet_id, b"") + data
    assert joined == expected


def test_shell_packet_layout() -> None:
    assert wire.shell_packet(wire.SHELL_STDOUT, b"hi") == b"\x01\x02\x00\x00\x00hi"
    assert wire.shell_exit_packet(3) == b"\x03\x01\x00\x00\x00\x03"
    assert wire.shell_packet(wire.SHELL_CLOSE_STDIN) == b"\x04\x00\x00\x00\x00"


def test_shell_decoder_rejects_bad_ids_and_sizes() -> None:
    with pytest.raises(ProtocolError, match="unknown packet id 9"):
        wire.ShellDecoder().feed(b"\x09\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.ShellDecoder(max_packet=10).feed(b"\x00\x0b\x00\x00\x00")
    with pytest.raises(ProtocolError):
        wire.shell_header(7, 0)


def test_sync_struct_sizes() -> None:
    assert wire.STAT_V1.size == 16
    assert wire.STAT_V2.size == 72
    assert wire.DENT_V1.size == 20
    assert wire.DENT_V2.size == 76
    assert wire.sync_request(b"STAT", b"/sdcard") == b"STAT\x07\x00\x00\x00/sdcard"


# -- Android RSA public keys ------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_android_pubkey_round_trip(host_key: rsa.RSAPrivateKey) -> None:
    encoded = wire.encode_android_pubkey(host_key.public_key(), "tester@bench")
    assert encoded.endswith(b" tester@bench")
    blob = base64.b64decode(encoded.split(b" ")[0])
    assert len(blob) == 524 and struct.unpack_from("<I", blob)[0] == 64
    parsed = wire.parse_android_pubkey(encoded + b"\0")  # as sent in AUTH RSAPUBLICKEY
    assert parsed.public_numbers() == host_key.public_key().public_numbers()
    assert wire.android_pubkey_comment(encoded + b"\0") == "tester@bench"


def test_token_signature_verifies(host_key: rsa.RSAPrivateKey) -> None:
    token = os.urandom(wire.TOKEN_SIZE)
    signature = wire.sign_token(host_key, token)
    assert len(signature) == 256
    public = host_key.public_key()
    assert wire.verify_token_signature(public, token, signature)
    assert not wire.verify_token_signature(public, os.urandom(wire.TOKEN_SIZE), signature)
    assert not wire.verify_token_signature(public, token, signature[:-1] + b"\0")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not wire.verify_token_signature(other.public_key(), token, signature)


def _corrupt(encoded: bytes, offset: int, value: bytes) -> bytes:
    blob = bytearray(base64.b64decode(encoded.split(b" ")[0]))
    blob[offset:offset + len(value)] = value
    return base64.b64encode(bytes(blob)) + b" x@y"


def test_malformed_android_pubkeys(host_key: rsa.RSAPrivateKey) -> None:
    good = wire.encode_android_pubkey(host_key.public_key(), "x@y")
    cases = {
        b"": "empty",
        b"!!!not base64!!! user@host": "base64",
        base64.b64encode(b"short"): "only 5 bytes",
        _corrupt(good, 0, struct.pack("<I", 65)): "needs",
        _corrupt(good, 0, struct.pack("<I", 3)): "implausible",
        _corrupt(good, 4, b"\x00\x00\x00\x00"): "n0inv",
        _corrupt(good, 8 + 256, b"\x01"): "rr",
        _corrupt(good, 8 + 512, struct.pack("<I", 17)): "exponent",
    }
    for raw, message in cases.items():
        with pytest.raises(ProtocolError, match=message):
            wire.parse_android_pubkey(raw)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=600))
def test_random_pubkey_blobs_never_crash(blob: bytes) -> None:
    try:
        wire.parse_android_pubkey(base64.b64encode(blob) + b" a@b\0")
    except ProtocolError:
        pass
