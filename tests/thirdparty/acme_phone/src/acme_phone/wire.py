"""The ACME service link: a line protocol over TCP.

Each request is one ASCII line; each reply is one line, ``OK [words]`` or ``ERR CODE text``,
followed by raw bytes when the reply says so::

    IDENTIFY                 -> OK {json: vendor, model, serial, imei, storage, capacity,
                                    partition_table, block}
    STATE                    -> OK {json: accounts, owner, screen_lock}
    WRITE offset length      (then `length` raw bytes) -> OK length
    READ offset length       -> OK length (then `length` raw bytes) | ERR EIO ...
    FLUSHCACHE               -> OK how | ERR EPERM ...   (drop the handset's write cache)
    RESET                    -> OK                       (format userdata, sign out)
    BYE                      -> OK, then the handset closes the link
"""
from __future__ import annotations

import json
import socket
from typing import Any

from phonewipe.erase.errors import DeviceCommandFailed, DeviceGone, ProtocolError

MAX_PAYLOAD = 4 * 1024 * 1024
MAX_LINE = 4096


class AcmeError(DeviceCommandFailed):
    """The handset answered ERR."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"the ACME handset refused: {code} {text}".strip(),
                         "see the ACME service manual for this code")
        self.code = code


def parse_reply(line: bytes) -> list[str]:
    """The words after OK; AcmeError for ERR; ProtocolError for anything else."""
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ProtocolError("the ACME handset sent an over-long or unterminated reply line",
                            "check the cable and run again")
    text = line.decode("ascii", "replace").rstrip("\r\n")
    head, _, rest = text.partition(" ")
    if head == "OK":
        return rest.split(" ", 1) if rest else []
    if head == "ERR":
        code, _, why = rest.partition(" ")
        raise AcmeError(code, why)
    raise ProtocolError(f"the ACME handset sent an unknown reply {text[:40]!r}",
                        "check that the port belongs to an ACME handset")


class AcmeLink:
    """One TCP connection to one handset's service port."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.where = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise DeviceGone(f"no ACME handset answers at {self.where}: {exc}",
                             "check the handset's link and --acme-port") from exc
        self.file = self.sock.makefile("rb")
        self.sent = 0
        self.received = 0
        self.commands: dict[str, int] = {}

    def _send(self, line: str, payload: bytes | memoryview = b"") -> None:
        verb = line.split(" ", 1)[0]
        self.commands[verb] = self.commands.get(verb, 0) + 1
        try:
            self.sock.sendall(line.encode("ascii") + b"\n")
            if payload:
                self.sock.sendall(payload)
        except OSError as exc:
            raise DeviceGone(f"the ACME handset at {self.where} dropped the link: {exc}",
                             "check the cable, then run again") from exc
        self.sent += len(payload)

    def _reply(self) -> list[str]:
        try:
            line = self.file.readline(MAX_LINE + 1)
        except OSError as exc:
            raise DeviceGone(f"the ACME handset at {self.where} stopped answering: {exc}",
                             "check the cable, then run again") from exc
        if not line:
            raise DeviceGone(f"the ACME handset at {self.where} closed the link",
                             "check the cable, then run again")
        return parse_reply(line)

    def _payload(self, length: int) -> bytes:
        try:
            data = self.file.read(length)
        except OSError as exc:
            raise DeviceGone(f"the ACME handset at {self.where} stopped answering: {exc}",
                             "check the cable, then run again") from exc
        if len(data) != length:
            raise DeviceGone(f"the ACME handset at {self.where} closed the link mid-reply",
                             "check the cable, then run again")
        self.received += length
        return data

    def call(self, line: str, payload: bytes | memoryview = b"") -> list[str]:
        self._send(line, payload)
        return self._reply()

    def call_json(self, line: str) -> dict[str, Any]:
        words = self.call(line)
        try:
            value = json.loads(" ".join(words))
        except ValueError as exc:
            raise ProtocolError(f"the ACME handset's {line} reply is not JSON",
                                "check that the port belongs to an ACME handset") from exc
        if not isinstance(value, dict):
            raise ProtocolError(f"the ACME handset's {line} reply is not an object", "")
        return value

    def write(self, offset: int, data: bytes | memoryview) -> int:
        words = self.call(f"WRITE {offset} {len(data)}", data)
        return int(words[0]) if words and words[0].isdigit() else 0

    def read_many(self, extents: list[tuple[int, int]]) -> list[bytes | None]:
        """Pipelined reads: every request of the batch goes out, then every reply is read;
        None for an extent the handset could not read (ERR EIO)."""
        for offset, length in extents:
            if length > MAX_PAYLOAD:
                raise ValueError("an ACME read is at most 4 MiB")
            self._send(f"READ {offset} {length}")
        out: list[bytes | None] = []
        for offset, length in extents:
            try:
                words = self._reply()
            except AcmeError as exc:
                if exc.code != "EIO":
                    raise
                out.append(None)
                continue
            if not words or not words[0].isdigit() or int(words[0]) != length:
                raise ProtocolError(f"the ACME handset answered READ {offset} {length} with "
                                    f"{' '.join(words)[:40]!r}", "check the cable and run again")
            out.append(self._payload(length))
        return out

    def close(self) -> None:
        try:
            self._send("BYE")
        except DeviceGone:
            pass
        self.file.close()
        self.sock.close()
