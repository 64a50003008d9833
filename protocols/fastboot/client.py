"""Our fastboot client, over any transport with ``send``/``recv``/``reopen``/``close``
(`TcpTransport`, `UsbTransport`).

Every failure is a `PhonewipeError` with one line: `FastbootFailed` when the device says
FAIL, `ProtocolError` for malformed or oversized replies, `FastbootTimeout`, `DeviceGone`
(with how far a download got).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from phonewipe.erase.errors import DeviceCommandFailed, PhonewipeError, ProtocolError, UsageError

from . import sparse
from .wire import Reply, parse_reply

MAX_COMMAND_BYTES = 64  # what every bootloader accepts over USB
STREAM_CHUNK = 4 * 1024 * 1024
Source = Callable[[int, int], bytes]
"""source(offset, length) -> the image bytes at that offset."""
ProgressFn = Callable[[int, int], None]


class Transport(Protocol):
    address: str

    def send(self, data: bytes | memoryview) -> None: ...

    def recv(self, timeout: float | None) -> bytes: ...

    def reopen(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class FastbootFailed(DeviceCommandFailed):
    """The bootloader answered FAIL."""

    def __init__(self, command: str, reason: str, advice: str = "") -> None:
        super().__init__(f"the bootloader refused `{command}`: {reason or 'no reason given'}",
                         advice or "see the phone's screen; reboot it to the bootloader and run again")
        self.command = command
        self.reason = reason


@dataclass
class Transcript:
    commands: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "fastboot", "commands": len(self.commands),
                "last_commands": self.commands[-8:], "bytes_sent": self.bytes_sent,
                "failures": self.failures}


class FastbootClient:
    def __init__(self, transport: Transport, timeout: float = 30.0) -> None:
        self.transport = transport
        self.timeout = timeout
        self.transcript = Transcript()
        self.info: list[str] = []  # INFO/TEXT lines of the last command

    # -- the exchange ---------------------------------------------------------------------
    def _send_command(self, command: str) -> None:
        raw = command.encode("ascii")
        if len(raw) > MAX_COMMAND_BYTES:
            raise UsageError(f"fastboot command too long ({len(raw)} bytes): {command[:40]}...",
                             f"commands are limited to {MAX_COMMAND_BYTES} bytes")
        self.transcript.commands.append(command)
        self.transport.send(raw)

    def _reply(self, command: str, timeout: float | None) -> Reply:
        """The final reply (OKAY or DATA), collecting INFO/TEXT lines on the way."""
        self.info = []
        while True:
            reply = parse_reply(self.transport.recv(timeout))
            if reply.tag in ("INFO", "TEXT"):
                self.info.append(reply.text)
                continue
            if reply.tag == "FAIL":
                self.transcript.failures += 1
                raise FastbootFailed(command, reply.text)
            return reply

    def command(self, command: str, timeout: float | None = None) -> str:
        """Run a command that ends in OKAY; its text (e.g. a variable's value)."""
        self._send_command(command)
        reply = self._reply(command, timeout or self.timeout)
        if reply.tag != "OKAY":
            raise ProtocolError(f"the device answered `{command}` with {reply.tag}",
                                "reboot it to the bootloader and run again")
        return reply.text

    def getvar(self, name: str) -> str:
        return self.command(f"getvar:{name}")

    def getvar_all(self) -> dict[str, str]:
        self.command("getvar:all")
        return parse_getvar_all(self.info)

    def max_download_size(self) -> int:
        text = self.getvar("max-download-size")
        try:
            return int(text, 0)
        except ValueError as exc:
            raise ProtocolError(f"the device gave a bad max-download-size {text!r}",
                                "reboot it to the bootloader and run again") from exc

    # -- downloads and flashing -----------------------------------------------------------
    def download(self, size: int, parts: Iterable[bytes | memoryview],
                 progress: ProgressFn | None = None, what: str = "the image") -> None:
        """``download:SIZE`` then the data phase; ``parts`` must add up to ``size``."""
        command = f"download:{size:08x}"
        self._send_command(command)
        reply = self._reply(command, self.timeout)
        if reply.tag != "DATA" or reply.size != size:
            raise ProtocolError(f"the device answered `{command}` with {reply.tag}{reply.text}",
                                "reboot it to the bootloader and run again")
        sent = 0
        try:
            for part in parts:
                if not len(part):
                    continue
                if sent + len(part) > size:
                    raise ValueError("download parts exceed the announced size")
                self.transport.send(part)
                sent += len(part)
                self.transcript.bytes_sent += len(part)
                if progress:
                    progress(sent, size)
            if sent != size:
                raise ValueError("download parts are shorter than the announced size")
            self._reply(command, self.timeout)
        except PhonewipeError as exc:
            raise type(exc)(f"{exc.message} (download of {what}: {sent} of {size} bytes sent)",
                            exc.advice) from exc

    def flash(self, partition: str, data: bytes | memoryview,
              progress: ProgressFn | None = None) -> None:
        """Flash an image held in memory (sparse pieces when it exceeds max-download-size)."""
        view = memoryview(data)
        if len(view) <= self.max_download_size():
            self.download(len(view), _chunks(view), progress, f"{partition}")
            self.command(f"flash:{partition}")
            return
        padded = -(-len(view) // 4096) * 4096
        self.flash_stream(partition, padded,
                          lambda off, n: bytes(view[off:off + n]).ljust(n, b"\0"), progress)

    def flash_stream(self, partition: str, size: int, source: Source,
                     progress: ProgressFn | None = None, block_size: int = 4096) -> int:
        """Write ``size`` bytes produced by ``source`` over the partition, in sparse pieces
        when they do not fit one download. Returns the number of downloads."""
        limit = self.max_download_size()
        if size <= limit:
            self.download(size, _generate(source, 0, size), _offset(progress, 0, size, size),
                          partition)
            self.command(f"flash:{partition}")
            return 1
        pieces = sparse.plan_pieces(size, limit, block_size)
        for number, piece in enumerate(pieces, 1):
            parts = [piece.prefix, *_generate(source, piece.offset, piece.length), piece.suffix]
            self.download(piece.size, parts, _offset(progress, piece.offset, piece.length, size,
                                                     len(piece.prefix)),
                          f"{partition} piece {number}/{len(pieces)}")
            self.command(f"flash:{partition}")
        return len(pieces)

    # -- other commands -------------------------------------------------------------------
    def erase(self, partition: str) -> None:
        self.command(f"erase:{partition}", timeout=max(self.timeout, 300))

    def unlock_ability(self) -> bool | None:
        """`flashing get_unlock_ability`: True when OEM unlocking is allowed; None when the
        bootloader does not say."""
        try:
            self.command("flashing get_unlock_ability")
        except FastbootFailed:
            return None
        for line in self.info:
            if "get_unlock_ability" in line:
                return line.rsplit(":", 1)[-1].strip() == "1"
        return None

    def flashing_unlock(self, confirm_timeout: float = 120.0) -> None:
        """Unlock (the phone asks its owner on screen, then wipes user data)."""
        self.command("flashing unlock", timeout=confirm_timeout)

    def reboot(self) -> None:
        """Boot Android; the bootloader session ends."""
        self.command("reboot")
        self.transport.close()

    def reboot_bootloader(self, timeout: float = 30.0) -> None:
        """Reboot into the bootloader again and reattach to the re-enumerated device."""
        self.command("reboot-bootloader")
        self.transport.reopen(timeout)

    def close(self) -> None:
        self.transport.close()


def parse_getvar_all(lines: Iterable[str]) -> dict[str, str]:
    """``getvar all`` INFO lines (``NAME: VALUE``, where NAME may hold colons) -> dict."""
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.rpartition(": ")
        if not sep:
            name, sep, value = line.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _chunks(view: memoryview) -> Iterable[memoryview]:
    for pos in range(0, len(view), STREAM_CHUNK):
        yield view[pos:pos + STREAM_CHUNK]


def _generate(source: Source, offset: int, length: int) -> Iterable[bytes]:
    for pos in range(offset, offset + length, STREAM_CHUNK):
        yield source(pos, min(STREAM_CHUNK, offset + length - pos))


def _offset(progress: ProgressFn | None, base: int, length: int, total: int,
            header: int = 0) -> ProgressFn | None:
    """Progress of one download (``length`` image bytes after ``header`` bytes of sparse
    headers) mapped onto the whole image."""
    if progress is None:
        return None
    return lambda done, _size: progress(base + min(length, max(0, done - header)), total)
