"""The ADB transport wire format: message headers, shell protocol v2 packets, sync
requests and the Android RSA public-key format.

Everything here is pure (no sockets, no threads) so the emulated adbd and any client code
share one strict implementation. Every malformed input raises `ProtocolError` with one line
an operator can read.
"""
from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from phonewipe.erase.errors import ProtocolError

# -- transport messages -------------------------------------------------------------------


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN = _cmd(b"CNXN")
AUTH = _cmd(b"AUTH")
OPEN = _cmd(b"OPEN")
OKAY = _cmd(b"OKAY")
WRTE = _cmd(b"WRTE")
CLSE = _cmd(b"CLSE")
STLS = _cmd(b"STLS")
SYNC = _cmd(b"SYNC")  # obsolete; never valid on the wire today

COMMANDS = {CNXN: "CNXN", AUTH: "AUTH", OPEN: "OPEN", OKAY: "OKAY", WRTE: "WRTE",
            CLSE: "CLSE", STLS: "STLS"}

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
A_STLS_VERSION = 0x01000000

MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

HEADER_SIZE = 24
_HEADER = struct.Struct("<6I")


def command_name(command: int) -> str:
    """'WRTE' for a known command, else the raw value in hex."""
    known = COMMANDS.get(command)
    if known:
        return known
    raw = command.to_bytes(4, "little", signed=False) if 0 <= command < 1 << 32 else b""
    if raw and all(0x20 <= b < 0x7F for b in raw):
        return f"{raw.decode('ascii')!r} (0x{command:08x})"
    return f"0x{command:08x}"


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The legacy payload checksum: the sum of all bytes, modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


class Header(NamedTuple):
    command: int
    arg0: int
    arg1: int
    data_length: int
    data_check: int
    magic: int

    @property
    def name(self) -> str:
        return command_name(self.command)


@dataclass(frozen=True)
class Message:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return command_name(self.command)

    def pack(self, with_checksum: bool = True) -> bytes:
        return pack(self.command, self.arg0, self.arg1, self.data, with_checksum=with_checksum)


def pack_header(command: int, arg0: int, arg1: int, data: bytes | bytearray | memoryview = b"",
                *, with_checksum: bool = True, length: int | None = None) -> bytes:
    """The 24-byte header for a message carrying ``data`` (or ``length`` bytes when the
    payload is sent separately and its checksum is not wanted)."""
    if command not in COMMANDS:
        raise ProtocolError(f"adb: refusing to send unknown command {command_name(command)}")
    for name, value in (("arg0", arg0), ("arg1", arg1)):
        if not 0 <= value < 1 << 32:
            raise ProtocolError(f"adb: {COMMANDS[command]} {name}={value} does not fit in 32 bits")
    size = len(data) if length is None else length
    check = checksum(data) if with_checksum and data else 0
    return _HEADER.pack(command, arg0, arg1, size, check, command ^ 0xFFFFFFFF)


def header_bytes(command: int, arg0: int, arg1: int, length: int, check: int = 0) -> bytes:
    """Fast header packing for hot paths (no validation of the command)."""
    return _HEADER.pack(command, arg0, arg1, length, check, command ^ 0xFFFFFFFF)


def pack(command: int, arg0: int, arg1: int, data: bytes | bytearray | memoryview = b"",
         *, with_checksum: bool = True) -> bytes:
    """A whole message: header then payload."""
    return pack_header(command, arg0, arg1, data, with_checksum=with_checksum) + bytes(data)


def parse_header(buf: bytes | bytearray | memoryview, max_data: int = MAX_PAYLOAD) -> Header:
    """Decode and validate one 24-byte header.

    Rejects a short buffer, a magic that is not the command's complement, an unknown
    command and a payload longer than ``max_data`` (the negotiated maximum).
    """
    if len(buf) != HEADER_SIZE:
        raise ProtocolError(f"adb: message header is {len(buf)} bytes, expected {HEADER_SIZE}")
    header = Header(*_HEADER.unpack(buf))
    if header.magic != header.command ^ 0xFFFFFFFF:
        raise ProtocolError(f"adb: bad magic 0x{header.magic:08x} for command "
                            f"{command_name(header.command)} (expected "
                            f"0x{header.command ^ 0xFFFFFFFF:08x})")
    if header.command not in COMMANDS:
        raise ProtocolError(f"adb: unknown command {command_name(header.command)}")
    if header.data_length > max_data:
        raise ProtocolError(f"adb: {header.name} payload of {header.data_length} bytes exceeds "
                            f"the negotiated maximum of {max_data}")
    return header


def verify_payload(header: Header, data: bytes | bytearray | memoryview) -> None:
    """Check the payload length and, when the header carries one, its checksum."""
    if len(data) != header.data_length:
        raise ProtocolError(f"adb: {header.name} payload is {len(data)} bytes, header "
                            f"announced {header.data_length}")
    if header.data_check and checksum(data) != header.data_check:
        raise ProtocolError(f"adb: {header.name} payload checksum 0x{checksum(data):08x} does "
                            f"not match header 0x{header.data_check:08x}")


def parse_message(buf: bytes | bytearray | memoryview, max_data: int = MAX_PAYLOAD) -> Message:
    """Decode exactly one whole message (header + payload) with full validation."""
    view = memoryview(buf)
    if len(view) < HEADER_SIZE:
        raise ProtocolError(f"adb: message of {len(view)} bytes is shorter than a header")
    header = parse_header(view[:HEADER_SIZE], max_data)
    data = view[HEADER_SIZE:]
    verify_payload(header, data)
    return Message(header.command, header.arg0, header.arg1, bytes(data))


def iter_messages(buf: bytes | bytearray | memoryview,
                  max_data: int = MAX_PAYLOAD) -> Iterator[Message]:
    """Decode a concatenation of whole messages; a truncated tail is an error."""
    view = memoryview(buf)
    pos = 0
    while pos < len(view):
        if len(view) - pos < HEADER_SIZE:
            raise ProtocolError(f"adb: {len(view) - pos} trailing bytes do not make a header")
        header = parse_header(view[pos:pos + HEADER_SIZE], max_data)
        end = pos + HEADER_SIZE + header.data_length
        if end > len(view):
            raise ProtocolError(f"adb: {header.name} payload truncated "
                                f"({len(view) - pos - HEADER_SIZE} of {header.data_length} bytes)")
        data = view[pos + HEADER_SIZE:end]
        verify_payload(header, data)
        yield Message(header.command, header.arg0, header.arg1, bytes(data))
        pos = end


# -- CNXN banners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Banner:
    """``SYSTEMTYPE:SERIAL:key=value;key=value;features=a,b`` as sent in CNXN."""

    system_type: str
    serial: str
    properties: dict[str, str]
    features: frozenset[str]


def parse_banner(data: bytes | bytearray | memoryview) -> Banner:
    text = bytes(data).rstrip(b"\0").decode("utf-8", "replace")
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise ProtocolError(f"adb: CNXN banner {text[:60]!r} is not SYSTEMTYPE:SERIAL:PROPS")
    system_type, serial, props = parts
    properties: dict[str, str] = {}
    features: frozenset[str] = frozenset()
    for item in props.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key == "features":
            features = frozenset(f for f in value.split(",") if f)
        else:
            properties[key] = value
    return Banner(system_type, serial, properties, features)


def make_banner(system_type: str, properties: dict[str, str], features: list[str],
                serial: str = "") -> bytes:
    props = "".join(f"{k}={v};" for k, v in properties.items())
    return f"{system_type}:{serial}:{props}features={','.join(features)}".encode()


# -- shell protocol v2 ------------------------------------------------------------------------

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5
SHELL_IDS = {SHELL_STDIN: "stdin", SHELL_STDOUT: "stdout", SHELL_STDERR: "stderr",
             SHELL_EXIT: "exit", SHELL_CLOSE_STDIN: "close-stdin",
             SHELL_WINDOW_SIZE: "window-size"}
SHELL_HEADER_SIZE = 5
_SHELL_HEADER = struct.Struct("<BI")


def shell_header(packet_id: int, length: int) -> bytes:
    if packet_id not in SHELL_IDS:
        raise ProtocolError(f"adb shell v2: unknown packet id {packet_id}")
    if not 0 <= length < 1 << 32:
        raise ProtocolError(f"adb shell v2: packet length {length} does not fit in 32 bits")
    return _SHELL_HEADER.pack(packet_id, length)


def shell_packet(packet_id: int, data: bytes | bytearray | memoryview = b"") -> bytes:
    return shell_header(packet_id, len(data)) + bytes(data)


def shell_exit_packet(status: int) -> bytes:
    return shell_packet(SHELL_EXIT, bytes([status & 0xFF]))


class ShellDecoder:
    """Incremental decoder of a shell v2 byte stream.

    ``feed(data)`` returns the fragments it could decode as ``(packet_id, memoryview)``:
    a packet split across feeds comes out as several fragments with the same id, without
    copying the payload. ``packets(data)`` joins fragments into whole packets instead.
    """

    def __init__(self, max_packet: int = 1 << 31) -> None:
        self.max_packet = max_packet
        self._header = bytearray()
        self._id = -1
        self._left = 0
        self._partial: list[memoryview] = []

    @property
    def idle(self) -> bool:
        """True between packets (nothing half-decoded)."""
        return not self._header and self._left == 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, memoryview]]:
        return [(packet_id, piece) for packet_id, piece, _ in self.fragments(data)]

    def packets(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Whole packets completed by ``data`` (fragments are joined)."""
        out: list[tuple[int, bytes]] = []
        for packet_id, piece, done in self.fragments(data):
            self._partial.append(piece)
            if done:
                out.append((packet_id, b"".join(self._partial)))
                self._partial = []
        return out

    def fragments(self, data: bytes | bytearray | memoryview) -> list[tuple[int, memoryview, bool]]:
        """``(packet_id, piece, last piece of its packet)`` for everything ``data`` completes."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        out: list[tuple[int, memoryview, bool]] = []
        pos, end = 0, len(view)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                out.append((self._id, view[pos:pos + take], not self._left))
                pos += take
                continue
            need = SHELL_HEADER_SIZE - len(self._header)
            self._header += view[pos:pos + need]
            pos += min(need, end - pos)
            if len(self._header) < SHELL_HEADER_SIZE:
                break
            packet_id, length = _SHELL_HEADER.unpack(self._header)
            self._header.clear()
            if packet_id not in SHELL_IDS:
                raise ProtocolError(f"adb shell v2: unknown packet id {packet_id}")
            if length > self.max_packet:
                raise ProtocolError(f"adb shell v2: {SHELL_IDS[packet_id]} packet of {length} "
                                    f"bytes exceeds {self.max_packet}")
            self._id = packet_id
            if length == 0:
                out.append((packet_id, memoryview(b""), True))
            else:
                self._left = length
        return out

    @property
    def current_id(self) -> int:
        """Id of the packet being decoded (valid while ``idle`` is False)."""
        return self._id


# -- sync protocol ----------------------------------------------------------------------------


def sync_id(name: bytes) -> int:
    return int.from_bytes(name, "little")


SYNC_IDS = {name: sync_id(name) for name in (
    b"STAT", b"STA2", b"LST2", b"LIST", b"LIS2", b"DENT", b"DNT2", b"SEND", b"SND2",
    b"RECV", b"RCV2", b"DONE", b"DATA", b"OKAY", b"FAIL", b"QUIT")}
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_REQUEST = struct.Struct("<4sI")
STAT_V1 = struct.Struct("<4sIII")
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT_V1 = struct.Struct("<4sIIII")
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")


def sync_request(name: bytes, payload: bytes = b"") -> bytes:
    return SYNC_REQUEST.pack(name, len(payload)) + payload


# -- Android RSA public keys ------------------------------------------------------------------

ANDROID_PUBKEY_MODULUS_WORDS = 64  # 2048-bit keys, the only size adb makes


def _words_le(value: int, words: int) -> bytes:
    return value.to_bytes(words * 4, "little")


def encode_android_pubkey(key: rsa.RSAPublicKey, comment: str = "unknown@unknown") -> bytes:
    """The adb_keys line of ``key``: base64 of the mincrypt structure, a space, a comment."""
    numbers = key.public_numbers()
    words = (numbers.n.bit_length() + 31) // 32
    n0inv = (-pow(numbers.n, -1, 1 << 32)) % (1 << 32)
    rr = pow(2, 64 * words, numbers.n)
    blob = (struct.pack("<II", words, n0inv) + _words_le(numbers.n, words) + _words_le(rr, words)
            + struct.pack("<I", numbers.e))
    return base64.b64encode(blob) + (b" " + comment.encode() if comment else b"")


def parse_android_pubkey(data: bytes | bytearray | str) -> rsa.RSAPublicKey:
    """Parse an Android adb public key (as sent in AUTH RSAPUBLICKEY or in adb_keys).

    Layout (little endian): u32 len (modulus size in 32-bit words), u32 n0inv (-1/n[0] mod
    2^32), n[len], rr[len] (R^2 mod n, R = 2^(32*len)), u32 exponent; base64-encoded,
    optionally followed by " user@host" and a NUL. Every redundant field is checked.
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    raw = raw.split(b"\0", 1)[0].strip()
    if not raw:
        raise ProtocolError("adb: empty RSA public key")
    b64 = raw.split(None, 1)[0]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"adb: RSA public key is not valid base64 ({exc})") from exc
    if len(blob) < 12:
        raise ProtocolError(f"adb: RSA public key blob is only {len(blob)} bytes")
    words, n0inv = struct.unpack_from("<II", blob)
    if not 16 <= words <= 256:  # 512 .. 8192 bits
        raise ProtocolError(f"adb: RSA public key claims an implausible modulus of {words} words")
    expected = 8 + 8 * words + 4
    if len(blob) != expected:
        raise ProtocolError(f"adb: RSA public key blob is {len(blob)} bytes, a {words * 32}-bit "
                            f"key needs {expected}")
    n = int.from_bytes(blob[8:8 + 4 * words], "little")
    rr = int.from_bytes(blob[8 + 4 * words:8 + 8 * words], "little")
    (exponent,) = struct.unpack_from("<I", blob, 8 + 8 * words)
    if n.bit_length() <= 32 * (words - 1) or n % 2 == 0:
        raise ProtocolError("adb: RSA public key modulus is malformed (too short or even)")
    if (n0inv * n + 1) % (1 << 32):
        raise ProtocolError("adb: RSA public key n0inv does not match its modulus")
    if rr != pow(2, 64 * words, n):
        raise ProtocolError("adb: RSA public key rr does not match its modulus")
    if exponent not in (3, 65537):
        raise ProtocolError(f"adb: RSA public key exponent {exponent} is not 3 or 65537")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def android_pubkey_comment(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    parts = raw.split(b"\0", 1)[0].strip().split(None, 1)
    return parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""


def sign_token(private_key: rsa.RSAPrivateKey, token: bytes) -> bytes:
    """What an adb host sends in AUTH SIGNATURE: PKCS#1 v1.5 over the token taken as an
    already-computed SHA-1 digest."""
    return private_key.sign(token, padding.PKCS1v15(), Prehashed(hashes.SHA1()))


def verify_token_signature(public_key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    if len(token) != TOKEN_SIZE:
        return False
    try:
        public_key.verify(bytes(signature), bytes(token), padding.PKCS1v15(),
                          Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError):
        return False
    return True
