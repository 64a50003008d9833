"""The two framings an iPhone speaks over USB, parsed strictly (both sides use these).

* usbmuxd: a 16-byte little-endian header (total length, version, message type, tag) and,
  for version 1 / type 8, an XML plist body;
* lockdownd and the services behind it: a 4-byte big-endian length and a plist.

Whatever arrives is untrusted: a malformed frame raises `WireError`, one line, never
anything else (tests/test_ios_wire.py fuzzes these with hypothesis).
"""
from __future__ import annotations

import plistlib
import struct
from dataclasses import dataclass
from typing import Any

from phonewipe.erase.errors import ProtocolError

MUX_HEADER = struct.Struct("<IIII")
MUX_VERSION_PLIST = 1
MUX_TYPE_RESULT = 1
MUX_TYPE_PLIST = 8
MAX_MUX_FRAME = 1 << 20  # pair records and device lists are a few KiB
MAX_PLIST_FRAME = 16 << 20
LENGTH = struct.Struct(">I")


class WireError(ProtocolError):
    """A frame that breaks the protocol: one line, what was wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "the peer does not speak usbmuxd/lockdownd correctly; "
                                  "reconnect the iPhone and run again")


@dataclass(frozen=True)
class MuxHeader:
    length: int  # the whole frame, these 16 bytes included
    version: int
    message: int
    tag: int

    def body_length(self) -> int:
        return self.length - MUX_HEADER.size


def parse_mux_header(data: bytes) -> MuxHeader:
    if len(data) != MUX_HEADER.size:
        raise WireError(f"usbmux header of {len(data)} bytes, expected {MUX_HEADER.size}")
    header = MuxHeader(*MUX_HEADER.unpack(data))
    if not MUX_HEADER.size <= header.length <= MAX_MUX_FRAME:
        raise WireError(f"usbmux frame length {header.length} outside "
                        f"{MUX_HEADER.size}..{MAX_MUX_FRAME}")
    return header


def build_mux_frame(message: dict[str, Any], tag: int) -> bytes:
    body = plistlib.dumps(message)
    return MUX_HEADER.pack(MUX_HEADER.size + len(body), MUX_VERSION_PLIST, MUX_TYPE_PLIST, tag) + body


def parse_plist(data: bytes, what: str) -> dict[str, Any]:
    """A dictionary-rooted plist (XML or binary)."""
    try:
        value = plistlib.loads(data)
    except Exception as exc:  # noqa: BLE001 - plistlib's failures are a zoo (LookupError for
        # an XML declaration naming an unknown encoding, ExpatError, struct.error, ...):
        # whatever it raises on bytes from the wire is one WireError line
        raise WireError(f"{what} is not a valid plist ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise WireError(f"{what} is a plist {type(value).__name__}, expected a dictionary")
    return value


def parse_mux_message(header: MuxHeader, body: bytes) -> dict[str, Any]:
    if header.version != MUX_VERSION_PLIST or header.message != MUX_TYPE_PLIST:
        raise WireError(f"usbmux message version {header.version} type {header.message}: only "
                        "plist messages (version 1, type 8) are spoken here")
    message = parse_plist(body, "usbmux message")
    if not isinstance(message.get("MessageType"), str):
        raise WireError("usbmux message without a MessageType string")
    return message


def build_frame(message: dict[str, Any]) -> bytes:
    """XML as lockdownd sends it; binary when a string holds what XML cannot (controls)."""
    try:
        body = plistlib.dumps(message)
    except ValueError:
        body = plistlib.dumps(message, fmt=plistlib.FMT_BINARY)
    return LENGTH.pack(len(body)) + body


def parse_frame_length(data: bytes) -> int:
    if len(data) != LENGTH.size:
        raise WireError(f"plist frame length field of {len(data)} bytes, expected 4")
    (length,) = LENGTH.unpack(data)
    if not 0 < length <= MAX_PLIST_FRAME:
        raise WireError(f"plist frame length {length} outside 1..{MAX_PLIST_FRAME}")
    return length


def parse_lockdown_request(body: bytes) -> tuple[str, dict[str, Any]]:
    """(the request's name, the whole message) of a lockdownd request."""
    message = parse_plist(body, "lockdownd request")
    request = message.get("Request")
    if not isinstance(request, str) or not request:
        raise WireError("lockdownd request without a Request string")
    return request, message


def parse_lockdown_reply(request: str, body: bytes) -> dict[str, Any]:
    """A lockdownd reply to ``request``: its own name echoed, an Error string if any."""
    message = parse_plist(body, f"lockdownd reply to {request}")
    if message.get("Request") != request:
        raise WireError(f"lockdownd answered {str(message.get('Request'))[:40]!r} to {request}")
    if "Error" in message and not isinstance(message["Error"], str):
        raise WireError(f"lockdownd reply to {request} with a non-string Error")
    return message
