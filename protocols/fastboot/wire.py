"""fastboot wire format shared by the client and the emulator: replies and TCP framing.

A reply is a 4-byte tag and text, 256 bytes at most: ``OKAY``, ``FAIL``, ``INFO``, ``TEXT``,
or ``DATA`` with 8 hex digits. Over TCP both sides first send ``FB01``; then every message
is an 8-byte big-endian length and that many bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from phonewipe.erase.errors import DeviceGone, DeviceNotFound, ProtocolError

MAX_REPLY = 256
MAX_COMMAND = 4096  # the protocol allows 64 bytes over USB; newer bootloaders take 4 KiB
TAGS = ("OKAY", "FAIL", "INFO", "TEXT", "DATA")
TCP_HANDSHAKE = b"FB01"
TCP_LENGTH = struct.Struct(">Q")
DEFAULT_TCP_PORT = 5554


@dataclass(frozen=True)
class Reply:
    tag: str
    text: str  # for DATA: the 8 hex digits
    size: int = 0  # DATA: the length the device is ready to receive


def parse_reply(raw: bytes) -> Reply:
    """One device reply; ProtocolError when it is oversized or not a fastboot reply."""
    if len(raw) > MAX_REPLY:
        raise ProtocolError(f"the device sent an oversized reply ({len(raw)} bytes, the limit "
                            f"is {MAX_REPLY})", "this is not a fastboot bootloader; reconnect it")
    tag = raw[:4].decode("ascii", "replace")
    if tag not in TAGS:
        raise ProtocolError(f"the device sent a malformed reply {raw[:16]!r}",
                            "this is not a fastboot bootloader, or the link is corrupt; "
                            "reconnect it")
    body = raw[4:]
    text = body.decode("utf-8", "replace")
    if tag == "DATA":
        if len(body) != 8 or not all(c in b"0123456789abcdefABCDEF" for c in body):
            raise ProtocolError(f"the device sent a malformed DATA reply {raw!r}",
                                "reconnect the phone and run again")
        return Reply(tag, text, int(text, 16))
    return Reply(tag, text)


def frame(payload_length: int) -> bytes:
    return TCP_LENGTH.pack(payload_length)


class FastbootTimeout(ProtocolError):
    """The device did not answer in time."""


def gone(address: str, what: str) -> DeviceGone:
    return DeviceGone(f"the fastboot device {address} disconnected {what}",
                      "check the cable and that the phone is still in the bootloader, then run again")


def not_found(address: str, why: str) -> DeviceNotFound:
    return DeviceNotFound(f"no fastboot device at {address}: {why}",
                          "put the phone in the bootloader (adb reboot bootloader) and run "
                          "`phonewipe devices`")
