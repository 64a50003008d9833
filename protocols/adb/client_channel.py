"""The shell v2 channel to one phone over the adb server: run a command with its exit
status (stderr apart), stream stdin to it, collect its output in large reads, start one
and collect it later; what a dropped link or a vanished server means; the parsers of what
the phone's tools print; and the transcript of every command, for the evidence bundle."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import adbutils

from phonewipe.erase.errors import DeviceCommandFailed, DeviceGone, ProtocolError
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import ProgressFn

from . import wire

if TYPE_CHECKING:
    from . import AdbPlugin

STREAM_CHUNK = 1024 * 1024
MAX_SHELL_PACKET = 64 * 1024 * 1024  # larger is a malformed frame, not a real answer
RECV_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ShellResult:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        text = (self.stderr or self.stdout).decode("utf-8", "replace").strip().splitlines()
        return text[-1] if text else f"exit status {self.status}"


_LINK_ERRORS = (adbutils.AdbError, OSError, EOFError)  # what a dropped connection raises
_DD_STATS = re.compile(r"^\d+\+\d+ records (in|out)$|^\d+ bytes .*copied")


def _explain(result: ShellResult) -> str:
    """The output line that says why a command failed: dd ends with its statistics, after
    the line that matters ("dd: write error: No space left on device")."""
    text = (result.stderr or result.stdout).decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reasons = [line for line in lines if not _DD_STATS.match(line)]
    return (reasons or lines or [f"exit status {result.status}"])[-1]


def _quote_for_su(command: str) -> str:
    if "'" in command:
        raise ValueError("commands run through su must not contain single quotes")
    return f"su -c '{command}'"


def parse_getprop(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.MULTILINE))


def parse_imei_parcel(text: str) -> str | None:
    """`service call iphonesubinfo` prints a Parcel dump; the IMEI is its UTF-16 string."""
    chars = "".join(re.findall(r"'([^']*)'", text)).replace(".", "")
    digits = re.sub(r"\D", "", chars)
    return digits if 14 <= len(digits) <= 16 else None


def parse_df_kib(text: str) -> tuple[int, int] | None:
    """(total KiB, available KiB) from toybox `df` output for one mount."""
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[1].isdigit() and parts[3].isdigit():
            return int(parts[1]), int(parts[3])
    return None


class _Transcript:
    """Counts of the shell commands a session ran, by program, for the evidence bundle."""

    MAX_PROGRAMS = 32

    def __init__(self) -> None:
        self.commands = self.failed = self.sent = self.received = 0
        self.programs: dict[str, int] = {}

    def add(self, command: str, sent: int, result: ShellResult | None) -> None:
        self.commands += 1
        self.sent += sent
        if result is None or result.status != 0:
            self.failed += 1
        if result is not None:
            self.received += len(result.stdout) + len(result.stderr)
        program = command.split()[0] if command.split() else ""
        if program in self.programs or len(self.programs) < self.MAX_PROGRAMS:
            self.programs[program] = self.programs.get(program, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {"protocol": "adb shell v2", "commands": self.commands, "failed": self.failed,
                "stdin_bytes": self.sent, "output_bytes": self.received,
                "by_program": dict(sorted(self.programs.items()))}


class ShellChannel:
    """The shell v2 channel of an `AdbSession` (a mixin): commands with their exit status,
    stdin streamed, output collected in large reads, each one counted in the transcript."""

    client: Any  # adbutils.AdbClient
    device: Any  # adbutils.AdbDevice
    endpoint: Endpoint
    plugin: AdbPlugin
    root: str | None  # None, "su" or "adbd"
    _log: _Transcript

    def _alive(self) -> bool:
        if not self._server_answers():  # adbutils would start a server on port 5037 first
            return False
        try:
            return any(d.serial == self.endpoint.address and d.state == "device"
                       for d in self.client.list())
        except _LINK_ERRORS:
            return False

    def _server_answers(self) -> bool:
        # never starts one (adbutils would); as patient as a command on a loaded machine
        return bool(self.plugin.server.running(timeout=30))

    def _gone(self, what: str) -> DeviceGone:
        if not self._server_answers():  # not the cable: the host's own adb server went away
            return DeviceGone(f"the adb server on port {self.plugin.server.port} stopped answering "
                              f"{what}", "run the erase again (phonewipe starts the server): the "
                              "phone itself may still be connected")
        return DeviceGone(f"the phone {self.endpoint.address} disconnected {what}",
                          "check the cable and USB port, then run the erase again")

    def _transport(self, timeout: float) -> Any:
        """A connection switched to this phone. Done by hand because adbutils asks the
        server its version and sleeps 10 ms on every close: 20 ms per command, which
        dominates a read-back made of many short commands."""
        conn = self.client.make_connection(timeout=timeout)
        conn.send_command(f"host:transport:{self.endpoint.address}")
        conn.check_okay()
        return conn

    def _open(self, command: str) -> Any:
        try:
            conn = self._transport(timeout=60)
            conn.send_command(f"shell,v2,raw:{command}")
            conn.check_okay()
            return conn
        except _LINK_ERRORS as exc:
            if not self._alive():
                raise self._gone("before a command could run") from exc
            raise DeviceCommandFailed(f"the phone refused a shell: {exc}",
                                      "unlock the phone and check USB debugging is still allowed") from exc

    def _as_root(self, command: str) -> str:
        return _quote_for_su(command) if self.root == "su" else command

    def run(self, command: str, root: bool = False, stdin: Iterable[bytes] | None = None,
            progress: ProgressFn | None = None, total: int = 0) -> ShellResult:
        """Run one command with shell protocol v2, optionally streaming stdin."""
        conn = self.start_command(command, root)
        sock = conn.conn
        sent = 0
        try:
            for chunk in stdin or ():
                sock.sendall(struct.pack("<BI", 0, len(chunk)))
                sock.sendall(chunk)
                sent += len(chunk)
                if progress:
                    progress(sent, total)
            if stdin is not None:
                sock.sendall(struct.pack("<BI", 4, 0))  # close stdin
        except OSError:
            pass  # the command ended early; its exit status says why
        except BaseException:
            sock.close()  # stopped by the caller (e.g. an abort from progress)
            self._log.add(command, sent, None)
            raise
        return self.collect_command(command, conn, sent, total)

    def _collect(self, conn: Any, sent: int, total: int) -> ShellResult:
        """Read shell v2 packets to the exit packet, in large reads: a read-back batch
        answers with hundreds of 4 KiB packets."""
        out, err = bytearray(), bytearray()
        decoder = wire.ShellDecoder(max_packet=MAX_SHELL_PACKET)
        exit_status = bytearray()
        try:
            while True:
                chunk = conn.conn.recv(RECV_CHUNK)
                if not chunk:
                    raise EOFError("the shell connection closed")
                for kind, piece, done in decoder.fragments(chunk):
                    if kind == wire.SHELL_STDOUT:
                        out += piece
                    elif kind == wire.SHELL_STDERR:
                        err += piece
                    elif kind == wire.SHELL_EXIT:
                        exit_status += piece
                        if done:
                            return ShellResult(exit_status[0] if exit_status else 255,
                                               bytes(out), bytes(err))
        except ProtocolError as exc:
            raise ProtocolError(f"the phone sent a malformed shell frame ({exc})",
                                "reconnect the phone and run again") from exc
        except _LINK_ERRORS as exc:
            where = f"while writing ({sent:,} of {total:,} bytes sent, none confirmed written)" \
                if total else "while a command was running"
            if not self._alive():
                raise self._gone(where) from exc
            raise DeviceCommandFailed(f"the phone closed the shell {where} without an exit status",
                                      "run the erase again") from exc

    def start_command(self, command: str, root: bool = False) -> Any:
        """Start a command without stdin and return at once: the phone runs it while the
        caller does something else; `collect_command` gets its result."""
        return self._open(self._as_root(command) if root else command)

    def collect_command(self, command: str, conn: Any, sent: int = 0, total: int = 0) -> ShellResult:
        """The result of a started command (``sent`` of ``total`` stdin bytes went to it)."""
        result: ShellResult | None = None
        try:
            result = self._collect(conn, sent, total)
            return result
        finally:
            conn.conn.close()  # the exit frame has been read: nothing is left to drain
            self._log.add(command, sent, result)

    def check(self, command: str, root: bool = False, **kw: Any) -> ShellResult:
        result = self.run(command, root=root, **kw)
        if result.status != 0:
            raise DeviceCommandFailed(f"`{command.split()[0]}` failed on the phone: {result.error_line()}",
                                      "see the audit log; run the erase again")
        return result

    def _v1_text(self, command: str) -> str:
        """Output of a command over the pre-Android-7 shell (no exit status); "" when that
        fails too: the record then names the phone by its adb serial only."""
        try:
            conn = self._transport(timeout=30)
            conn.send_command(f"shell:{command}")
            conn.check_okay()
            with conn:
                return conn.read_until_close()
        except _LINK_ERRORS:
            return ""

    def _reboot(self, service: str) -> None:
        try:
            with self._transport(timeout=10) as conn:
                conn.send_command(service)
                conn.check_okay()
                conn.read_until_close(encoding=None)
        except _LINK_ERRORS:
            pass  # the phone drops the link as it reboots
