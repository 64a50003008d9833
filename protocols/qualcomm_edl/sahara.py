"""Sahara, the first stage of Qualcomm Emergency Download: the wire format (little-endian
packets: u32 command, u32 length of the whole packet, then fields) and the host side.

The host reads the phone's identity in command mode (serial number, MSM HW id, OEM
public-key hash, SBL version), then switches back to image transfer and serves the
programmer the phone asks for, piece by piece, until it reports the end of the image.
"""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from typing import Any, Protocol

from phonewipe.erase.errors import ProtocolError

HELLO, HELLO_RESP, READ_DATA, END_IMAGE_TX, DONE, DONE_RESP = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
RESET, RESET_RESP, CMD_READY, SWITCH_MODE = 0x07, 0x08, 0x0B, 0x0C
EXECUTE, EXECUTE_RSP, EXECUTE_DATA, READ_DATA_64 = 0x0D, 0x0E, 0x0F, 0x12

MODE_IMAGE_TX, MODE_COMMAND = 0x00, 0x03
EXEC_SERIAL, EXEC_HWID, EXEC_PKHASH, EXEC_SBL_VERSION = 0x01, 0x02, 0x03, 0x07
PROTOCOL_VERSION = 2
MAX_PACKET = 4096
MAX_EXEC_DATA = 1024  # no identity answer is longer: a bigger one is not Sahara
MAX_RESENT = 4  # a boot ROM re-asks for a piece now and then; not for the image four times over

# the fields after (command, length) of each packet
LAYOUTS: dict[int, str] = {
    HELLO: "<10I", HELLO_RESP: "<10I", READ_DATA: "<3I", END_IMAGE_TX: "<2I", DONE: "<",
    DONE_RESP: "<I", RESET: "<", RESET_RESP: "<", CMD_READY: "<", SWITCH_MODE: "<I",
    EXECUTE: "<I", EXECUTE_RSP: "<2I", EXECUTE_DATA: "<I", READ_DATA_64: "<3Q",
}
NAMES = {HELLO: "HELLO", HELLO_RESP: "HELLO_RESP", READ_DATA: "READ_DATA",
         END_IMAGE_TX: "END_IMAGE_TX", DONE: "DONE", DONE_RESP: "DONE_RESP", RESET: "RESET",
         RESET_RESP: "RESET_RESP", CMD_READY: "CMD_READY", SWITCH_MODE: "SWITCH_MODE",
         EXECUTE: "EXECUTE", EXECUTE_RSP: "EXECUTE_RSP", EXECUTE_DATA: "EXECUTE_DATA",
         READ_DATA_64: "READ_DATA_64"}
HEAD = struct.Struct("<2I")


@dataclass(frozen=True)
class Packet:
    command: int
    fields: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return NAMES.get(self.command, f"0x{self.command:x}")


def encode(command: int, *fields: int) -> bytes:
    body = struct.pack(LAYOUTS[command], *fields)
    return HEAD.pack(command, HEAD.size + len(body)) + body


def decode(raw: bytes) -> Packet:
    """One Sahara packet; ProtocolError for anything else (wrong length, unknown command)."""
    if len(raw) < HEAD.size:
        raise ProtocolError(f"the phone sent a truncated Sahara packet ({len(raw)} bytes)",
                            "this is not a Qualcomm EDL device, or the link is corrupt")
    command, length = HEAD.unpack_from(raw)
    layout = LAYOUTS.get(command)
    if layout is None:
        raise ProtocolError(f"the phone sent an unknown Sahara command 0x{command:x}",
                            "this is not a Qualcomm EDL device, or the link is corrupt")
    want = HEAD.size + struct.calcsize(layout)
    if length != len(raw) or length != want:
        raise ProtocolError(f"the phone sent a Sahara {NAMES[command]} of {len(raw)} bytes that "
                            f"says {length} (expected {want})",
                            "this is not a Qualcomm EDL device, or the link is corrupt")
    return Packet(command, struct.unpack_from(layout, raw, HEAD.size))


class Link(Protocol):
    address: str

    def write(self, data: bytes | array[int]) -> None: ...

    def read(self, size: int, timeout: float) -> bytes: ...


@dataclass(frozen=True)
class SaharaInfo:
    """What a phone in EDL says of itself in Sahara command mode."""

    serial: int
    hwid: int  # MSM HW id: MSM id (high 32 bits), OEM id, model id
    pkhash: bytes  # the OEM public-key hash the boot ROM trusts (SHA-256 or SHA-384)
    sbl_version: int
    version: int

    @property
    def serial_text(self) -> str:
        return f"{self.serial:08X}"

    @property
    def hwid_text(self) -> str:
        return f"{self.hwid:016x}"

    @property
    def msm_id(self) -> int:
        return self.hwid >> 32

    @property
    def oem_id(self) -> int:
        return (self.hwid >> 16) & 0xFFFF

    @property
    def model_id(self) -> int:
        return self.hwid & 0xFFFF

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial_text, "hwid": self.hwid_text, "msm_id": f"{self.msm_id:08x}",
                "oem_id": f"{self.oem_id:04x}", "model_id": f"{self.model_id:04x}",
                "pkhash": self.pkhash.hex(), "sbl_version": self.sbl_version,
                "sahara_version": self.version}


def parse_pkhash(data: bytes) -> bytes:
    """Loaders repeat the hash to fill the answer: keep one SHA-384 or SHA-256 digest."""
    if len(data) >= 64 and data[:32] == data[32:64]:
        return data[:32]
    for size in (48, 32):
        if len(data) >= size:
            return data[:size]
    return data


class LoaderRejected(ProtocolError):
    """The boot ROM refused the programmer (END_IMAGE_TX with an error status)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the phone rejected the programmer (Sahara status 0x{status:x})")
        self.status = status


@dataclass
class SaharaClient:
    link: Link
    timeout: float = 5.0
    sent: list[str] = field(default_factory=list)
    version: int = 0

    def _send(self, command: int, *fields: int) -> None:
        self.sent.append(NAMES[command])
        self.link.write(encode(command, *fields))

    def _packet(self, *expect: int) -> Packet:
        packet = decode(self.link.read(MAX_PACKET, self.timeout))
        if expect and packet.command not in expect:
            wanted = " or ".join(NAMES[e] for e in expect)
            raise ProtocolError(f"the phone sent Sahara {packet.name} where {wanted} was due",
                                "power-cycle it back into EDL mode and run again")
        return packet

    def hello(self, mode: int) -> Packet:
        """Answer the phone's HELLO, asking for ``mode``."""
        hello = self._packet(HELLO)
        self.version = hello.fields[0]
        self._send(HELLO_RESP, PROTOCOL_VERSION, 1, 0, mode, 0, 0, 0, 0, 0, 0)
        return hello

    def execute(self, client_command: int) -> bytes:
        self._send(EXECUTE, client_command)
        rsp = self._packet(EXECUTE_RSP)
        if rsp.fields[0] != client_command or rsp.fields[1] > MAX_EXEC_DATA:
            raise ProtocolError(f"the phone answered Sahara command {client_command} with "
                                f"{rsp.fields[1]} bytes for command {rsp.fields[0]}",
                                "power-cycle it back into EDL mode and run again")
        self._send(EXECUTE_DATA, client_command)
        data = b""
        while len(data) < rsp.fields[1]:
            piece = self.link.read(MAX_PACKET, self.timeout)
            if not piece:
                break
            data += piece
        if len(data) != rsp.fields[1]:
            raise ProtocolError(f"the phone sent {len(data)} of {rsp.fields[1]} bytes for Sahara "
                                f"command {client_command}", "power-cycle it and run again")
        return data

    def read_info(self) -> SaharaInfo:
        """Command mode: the phone's identity. The phone is left waiting for a HELLO_RESP
        again, so the next session (or `upload`) starts where this one did."""
        self.hello(MODE_COMMAND)
        self._packet(CMD_READY)
        serial = int.from_bytes(self.execute(EXEC_SERIAL)[:4].ljust(4, b"\0"), "little")
        hwid = int.from_bytes(self.execute(EXEC_HWID)[:8].ljust(8, b"\0"), "little")
        pkhash = parse_pkhash(self.execute(EXEC_PKHASH))
        raw = self.execute(EXEC_SBL_VERSION)
        sbl = int.from_bytes(raw[:4].ljust(4, b"\0"), "little")
        self._send(SWITCH_MODE, MODE_IMAGE_TX)  # the phone says HELLO again
        return SaharaInfo(serial, hwid, pkhash, sbl, self.version)

    def upload(self, image: bytes) -> int:
        """Image transfer: serve every piece of ``image`` the phone asks for. Returns the
        bytes sent; LoaderRejected when the phone reports an error status."""
        self.hello(MODE_IMAGE_TX)
        sent = empty = 0
        while True:
            packet = self._packet(READ_DATA, READ_DATA_64, END_IMAGE_TX)
            if packet.command == END_IMAGE_TX:
                if packet.fields[1] != 0:
                    raise LoaderRejected(packet.fields[1])
                break
            _, offset, length = packet.fields
            if not 0 < length <= 16 * 1024 * 1024 or offset > len(image):
                raise ProtocolError(f"the phone asked for {length} bytes at {offset} of a "
                                    f"{len(image)}-byte programmer",
                                    "the programmer is not the one this phone needs")
            piece = image[offset:offset + length]
            empty += not piece  # a ROM reading to a piece boundary asks once past the end
            if sent + len(piece) > MAX_RESENT * len(image) + (1 << 20) or empty > MAX_RESENT:
                raise ProtocolError(f"the phone asked for {sent + len(piece):,} bytes of a "
                                    f"{len(image):,}-byte programmer and still wants more",
                                    "power-cycle it back into EDL mode and run again")
            self.link.write(piece)
            sent += len(piece)
        self._send(DONE)
        status = self._packet(DONE_RESP).fields[0]
        if status not in (0, 1):
            raise LoaderRejected(status)
        return sent
