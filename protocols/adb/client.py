"""One phone over ADB: identify, check locks, erase, read back, reset.

Every command runs through shell protocol v2 (exit status and stderr travel separately)
and sticks to the portable toybox subset described in shared/protocols/adb.md.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import adbutils

from phonewipe.erase.errors import (DeviceCommandFailed, DeviceGone, MediumUnreachable, PhonewipeError,
                          ProtocolError)
from phonewipe.erase.model import (Category, Endpoint, EraseMethod, Expectation, Finding, Identity,
                         Severity, Technique)
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import EraseContext, EraseReport, Extent, ProgressFn, Session

from . import wire

if TYPE_CHECKING:
    from . import AdbPlugin

USERDATA = "/dev/block/by-name/userdata"
HELPER_BUILDS = Path(__file__).parent / "helper" / "bin"  # make helpers
HELPER_ON_PHONE = "/data/local/tmp/phonewipe-pwread"
FILL_DIR = "/sdcard/phonewipe-fill"
BLOCK = 4096
STREAM_CHUNK = 1024 * 1024
ZERO_CHUNK_MIB = 64
_FULL = ("No space left on device", "Disk quota exceeded")  # how a full file system says it
NO_SHELL_V2 = "device without shell v2"  # session state of a pre-Android-7 phone
READ_BATCH = 256  # samples per shell command (about 20 KB of command line)
MAX_SHELL_PACKET = 64 * 1024 * 1024  # larger is a malformed frame, not a real answer
RECV_CHUNK = 256 * 1024

RAW_PATTERN = EraseMethod(
    "adb-raw-pattern", "Overwrite of the userdata block device with a host-keyed pseudo-random "
    "pattern, streamed from the host", Category.CLEAR, Technique.OVERWRITE, True,
    Expectation.PATTERN, "needs root; the device cannot produce the pattern without storing it")
RAW_ZEROS = EraseMethod(
    "adb-raw-zeros", "Overwrite of the userdata block device with zeros, written on the device",
    Category.CLEAR, Technique.OVERWRITE, True, Expectation.ZEROS, "needs root; fastest")
FILL_RESET = EraseMethod(
    "adb-fill-reset", "Deletion of user files, fill of all free user storage with a host-keyed "
    "pattern, sampled read-back, then factory reset", Category.CLEAR, Technique.OVERWRITE, True,
    Expectation.PATTERN, "no root needed")
FACTORY_RESET = EraseMethod(
    "adb-factory-reset", "Factory reset (cryptographic erase of file-encryption keys, "
    "vendor-attested)", Category.CLEAR, Technique.CRYPTO_ERASE, False, None,
    "no read-back is possible")


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


@dataclass(frozen=True)
class _FillSpace:
    free: int  # bytes an app may fill (statfs f_bavail)
    reserved: int | None  # f_bfree - f_bavail: the file system keeps these from apps
    total: int


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


class AdbSession(Session):
    def __init__(self, plugin: "AdbPlugin", endpoint: Endpoint, state: str) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.state = state
        self.client = plugin.server.client()
        self.device = self.client.device(serial=endpoint.address)
        self.props: dict[str, str] = {}
        self.root: str | None = None  # None, "su" or "adbd"
        self._reader: _DdReader | None = None
        self._reset_done = False
        self.reader_helper = "not installed"  # install_reader_helper
        self._identity: Identity | None = None
        self._log = _Transcript()

    # -- plumbing --------------------------------------------------------------------------
    def _alive(self) -> bool:
        try:
            return any(d.serial == self.endpoint.address and d.state == "device"
                       for d in self.client.list())
        except _LINK_ERRORS:
            return False

    def _server_answers(self) -> bool:
        try:
            self.client.server_version()
            return True
        except _LINK_ERRORS:
            return False

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

    # -- identity and preflight ------------------------------------------------------------
    def identify(self) -> Identity:
        if self.state == "device" and not self._speaks_shell_v2():
            self.state = NO_SHELL_V2
        if self.state == NO_SHELL_V2:  # who it is, through the old shell, for the record
            self.props = parse_getprop(self._v1_text("getprop"))
            p = self.props
            self._identity = Identity(
                platform="android", manufacturer=p.get("ro.product.manufacturer") or None,
                model=p.get("ro.product.model") or None, serial=p.get("ro.serialno") or None,
                os_version=p.get("ro.build.version.release") or None,
                build_type=p.get("ro.build.type") or None)
            return self._identity
        if self.state != "device":
            self._identity = Identity(platform="android")
            return self._identity
        self.props = parse_getprop(self.check("getprop").text)
        self.root = self._detect_root()
        p = self.props
        capacity = None
        if self.root:
            size = self.run(f"blockdev --getsize64 {USERDATA}", root=True)
            capacity = int(size.text.strip()) if size.status == 0 and size.text.strip().isdigit() else None
        if capacity is None:
            df = parse_df_kib(self.run("df /data").text)
            capacity = df[0] * 1024 if df else None
        imei = parse_imei_parcel(self.run("service call iphonesubinfo 1 s16 com.android.shell").text)
        locked = p.get("ro.boot.flash.locked")
        self._identity = Identity(
            platform="android", manufacturer=p.get("ro.product.manufacturer") or None,
            model=p.get("ro.product.model") or None, serial=p.get("ro.serialno") or None,
            imeis=(imei,) if imei else (), os_version=p.get("ro.build.version.release") or None,
            storage_type=None, capacity_bytes=capacity,
            bootloader_locked=None if locked is None else locked == "1",
            frp=None, mdm=None, encryption=p.get("ro.crypto.type") or None,
            build_type=p.get("ro.build.type") or None)
        return self._identity

    def _speaks_shell_v2(self) -> bool:
        try:
            return "shell_v2" in self.device.get_features().split(",")
        except _LINK_ERRORS as exc:
            if not self._alive():
                raise self._gone("while being identified") from exc
            return True  # the server could not say: shell v2 itself will tell

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

    def _detect_root(self) -> str | None:
        if "uid=0(" in self.run("id").text:
            return "adbd"
        su = self.run(_quote_for_su("id"))
        if su.status == 0 and "uid=0(" in su.text:
            return "su"
        return None

    def preflight(self) -> list[Finding]:
        if self.state == "unauthorized":
            return [Finding(Severity.BLOCKER, "usb-debugging-unauthorized",
                            "Unlock the phone and accept the 'Allow USB debugging?' prompt, then run again.")]
        if self.state == NO_SHELL_V2:
            version = self.props.get("ro.build.version.release") or "6 or older"
            return [Finding(Severity.BLOCKER, "adb-without-shell-v2",
                            f"This phone's adb (Android {version}) predates shell protocol v2, which "
                            "phonewipe needs to erase and read back storage over adb: reboot it into "
                            "the bootloader (`adb reboot bootloader`) and run the erase again to erase "
                            "it there, or factory-reset it from the recovery menu.")]
        if self.state != "device":
            return [Finding(Severity.BLOCKER, f"adb-{self.state}",
                            f"The phone is {self.state} over adb: reconnect the cable (another port), then run again.")]
        findings = self._account_findings() + self._owner_findings()
        if self.run("locksettings verify").status != 0:
            findings.append(Finding(
                Severity.WARNING if self.root else Severity.BLOCKER, "screen-lock",
                "A screen lock is set and the phone is not rooted, so adb cannot reset it: remove the "
                "lock in Settings > Security, then run again."
                if not self.root else "A screen lock is set (root methods still work)."))
        findings.append(Finding(Severity.INFO, "root",
                                {"su": "Root available through su.", "adbd": "adbd runs as root.",
                                 None: "No root: the userdata block device cannot be overwritten directly."}[self.root]))
        return findings

    def _account_findings(self) -> list[Finding]:
        """Factory Reset Protection engages after a reset when a Google account is signed in."""
        result = self.run("dumpsys account")
        if result.status != 0:  # the check did not run: frp stays unknown on the record
            return [Finding(Severity.WARNING, "frp-unchecked",
                            f"Could not list the phone's accounts (`dumpsys account`: "
                            f"{result.error_line()}): check Settings > Accounts for a Google account.")]
        accounts = re.findall(r"Account \{name=([^,]+), type=com\.google\}", result.text)
        self._identity = self._with(frp=bool(accounts))
        if accounts:
            return [Finding(
                Severity.BLOCKER, "frp-google-account",
                f"A Google account ({', '.join(accounts)}) is signed in, so Factory Reset Protection "
                "would lock the next owner out: remove the account in Settings > Accounts, then run again.")]
        return [Finding(Severity.INFO, "frp-clear", "No Google account is signed in (checked with "
                        "`dumpsys account`): Factory Reset Protection will not engage.")]

    def _owner_findings(self) -> list[Finding]:
        result = self.run("dumpsys device_policy")
        if result.status != 0:
            return [Finding(Severity.WARNING, "mdm-unchecked",
                            f"Could not read the device policy (`dumpsys device_policy`: "
                            f"{result.error_line()}): check Settings > Security for a device admin.")]
        owner = re.search(r"Device Owner:.*?admin=ComponentInfo\{([^}]+)\}", result.text, re.S)
        self._identity = self._with(mdm=bool(owner))
        if owner:
            return [Finding(
                Severity.BLOCKER, "mdm-device-owner",
                f"The phone is managed by {owner.group(1)} (MDM device owner): have the organisation "
                "release it from management, then run again.")]
        return [Finding(Severity.INFO, "mdm-clear", "No device owner or MDM enrolment (checked with "
                        "`dumpsys device_policy`).")]

    def _with(self, **changes: Any) -> Identity:
        from dataclasses import replace
        return replace(self._identity or Identity(platform="android"), **changes)

    @property
    def identity(self) -> Identity:
        return self._identity or Identity(platform="android")

    def methods(self) -> list[EraseMethod]:
        if self.state != "device":
            return []
        testharness = int(self.props.get("ro.build.version.sdk", "0") or 0) >= 29
        locked_screen = self.run("locksettings verify").status != 0
        methods = []
        if self.root:
            methods += [RAW_PATTERN, RAW_ZEROS]
        if not locked_screen and testharness:
            methods.append(FILL_RESET)
        if self.root or (testharness and not locked_screen):
            methods.append(FACTORY_RESET)
        return methods

    # -- erase -----------------------------------------------------------------------------
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method is RAW_PATTERN or method is RAW_ZEROS:
            return self._erase_raw(method, context, progress)
        if method is FILL_RESET:
            return self._erase_fill(context, progress)
        if method is FACTORY_RESET:
            details = self._factory_reset()
            return EraseReport(0, None, "whole device (factory reset)", details)
        raise DeviceCommandFailed(f"unknown adb method {method.name}", "choose a listed method")

    def _userdata_size(self) -> int:
        text = self.check(f"blockdev --getsize64 {USERDATA}", root=True).text.strip()
        if not text.isdigit():
            raise ProtocolError(f"`blockdev --getsize64` answered {text[:40]!r}, not a size in bytes",
                                "this phone needs a different method (--method)")
        return int(text)

    def _erase_raw(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        size = self._userdata_size()
        if size % BLOCK:
            raise DeviceCommandFailed(f"userdata size {size} is not a multiple of {BLOCK}",
                                      "this phone needs a different method (--method)")
        if method is RAW_PATTERN:
            stream = PatternStream(context.pattern_key)
            chunks = (stream.next(min(STREAM_CHUNK, size - off)) for off in range(0, size, STREAM_CHUNK))
            self.check(f"dd of={USERDATA} bs={STREAM_CHUNK} conv=notrunc", root=True,
                       stdin=chunks, progress=progress, total=size)
        else:
            self._zero_fill(size, progress)
        self.check("sync", root=True)
        self._reader = _DdReader(self, [(USERDATA, size)], root=True)
        return EraseReport(size, method.expectation, f"userdata block device, {size} bytes",
                           {"device": USERDATA, "bytes": size, "root": self.root,
                            "pattern": "AES-256-CTR keystream, key held by the host"
                            if method is RAW_PATTERN else "zeros"},
                           capacity_evidence=self.table_sizes())

    def _zero_fill(self, size: int, progress: ProgressFn) -> None:
        mib = 1024 * 1024
        whole = size // mib
        for start in range(0, whole, ZERO_CHUNK_MIB):
            count = min(ZERO_CHUNK_MIB, whole - start)
            self.check(f"dd if=/dev/zero of={USERDATA} bs={mib} seek={start} count={count} conv=notrunc",
                       root=True)
            progress((start + count) * mib, size)
        tail = size - whole * mib
        if tail:
            self.check(f"dd if=/dev/zero of={USERDATA} bs={BLOCK} seek={whole * mib // BLOCK} "
                       f"count={tail // BLOCK} conv=notrunc", root=True)
        progress(size, size)

    def _erase_fill(self, context: EraseContext, progress: ProgressFn) -> EraseReport:
        self.install_reader_helper()  # before the fill: a full /data takes no push
        self._owner_files = "untouched"
        try:
            removed, leftover = self._delete_user_entries()
            space = self._fill_space()
            files = self._fill(context, progress, space.free)
        except Exception as exc:
            if self._owner_files == "untouched":
                raise
            raise self._fill_failed(exc) from exc
        except BaseException:
            if self._owner_files != "untouched":
                self._remove_fill()
            raise
        written = sum(size for _, size in files)
        self._reader = _DdReader(self, [(path, size // BLOCK * BLOCK) for path, size in files],
                                 root=False)
        return EraseReport(written, Expectation.PATTERN,
                           f"free user storage fill, {written} bytes in {len(files)} files",
                           {"deleted_top_level_entries": removed, "previous_fill_removed": leftover,
                            "fill_bytes": written, "fill_files": len(files),
                            "fill_file_max": self._fill_file_max(),
                            "free_bytes_before": space.free,
                            "reserved_bytes": space.reserved,
                            "data_partition_kib": space.total // 1024,
                            "not_reached": self._not_reached(written, space)})

    def _fill_file_max(self) -> int:
        return int(self.plugin.option("fill_file_max"))

    def _delete_user_entries(self) -> tuple[list[str], bool]:
        """Delete every top-level entry of /sdcard, hidden ones included, then commit (a file
        system reuses freed blocks only after its journal commits). Returns the owner's
        entries, and whether a previous run's fill was there too."""
        listing = self.run("ls -A /sdcard")
        if listing.status != 0:
            raise DeviceCommandFailed(f"cannot list /sdcard: {_explain(listing)}",
                                      "unlock the phone and run the erase again")
        names = [n for n in listing.text.splitlines() if n.strip() and n not in (".", "..")]
        fill_name = FILL_DIR.rsplit("/", 1)[1]
        if names:
            self._owner_files = "partly deleted"
            result = self.run("rm -rf " + " ".join(shlex.quote(f"/sdcard/{n}") for n in names))
            if result.status != 0:
                raise DeviceCommandFailed(f"the owner's files could not all be deleted: "
                                          f"{_explain(result)}", "")
        self._owner_files = "deleted"
        self._fill_command("sync")
        return [n for n in names if n != fill_name], fill_name in names

    def _fill_space(self) -> _FillSpace:
        """What the fill may take (statfs f_bavail, df's Available) and the file system's
        reserved share (f_bfree - f_bavail), out of an app's reach; df when the phone's
        `stat` has no -f."""
        fields = self.run("stat -f -c '%b %f %a %S' /data").text.split()
        if len(fields) == 4 and all(f.isdigit() for f in fields):
            blocks, bfree, bavail, bsize = map(int, fields)
            return _FillSpace(bavail * bsize, (bfree - bavail) * bsize, blocks * bsize)
        df = parse_df_kib(self.run("df /data").text)
        if df is None:
            raise DeviceCommandFailed("cannot read free space from `stat -f /data` or `df /data`",
                                      "use --method adb-factory-reset")
        return _FillSpace(df[1] * 1024, None, df[0] * 1024)

    def _fill(self, context: EraseContext, progress: ProgressFn, free: int) -> list[tuple[str, int]]:
        """Fill files until the file system says it is full: the last dd ends with ENOSPC,
        and the phone says how much of it was stored."""
        self._fill_command(f"mkdir -p {FILL_DIR}")
        stream = PatternStream(context.pattern_key)
        files: list[tuple[str, int]] = []
        written = 0
        while True:
            path = f"{FILL_DIR}/fill-{len(files):04d}.bin"
            # no more than the space left plus a chunk: a file system rarely takes more
            size = min(self._fill_file_max(), max(free - written, 0) + STREAM_CHUNK)
            result = self._fill_file(path, stream, size, written, free, progress)
            if result.status == 0:
                files.append((path, size))
                written += size
                continue
            if not any(full in _explain(result) for full in _FULL):
                raise DeviceCommandFailed(f"`dd` failed on the phone while writing {path}: "
                                          f"{_explain(result)}", "")
            stored = int(self._fill_command(f"stat -c %s {path}").text.strip() or 0)
            if stored:
                files.append((path, stored))
            else:
                self._fill_command(f"rm -f {path}")
            if not files:
                raise DeviceCommandFailed("the file system took no fill at all "
                                          f"({_explain(result)})", "")
            self._fill_command("sync")
            progress(free, free)
            return files

    def _fill_file(self, path: str, stream: PatternStream, size: int, base: int, free: int,
                   progress: ProgressFn) -> ShellResult:
        chunks = (stream.next(min(STREAM_CHUNK, size - off)) for off in range(0, size, STREAM_CHUNK))

        def report(done: int, _total: int) -> None:
            progress(min(base + done, free), free)
        return self.run(f"dd of={path} bs={STREAM_CHUNK}", stdin=chunks, progress=report, total=size)

    def _fill_command(self, command: str) -> ShellResult:
        result = self.run(command)
        if result.status != 0:
            raise DeviceCommandFailed(f"`{command.split()[0]}` failed on the phone: "
                                      f"{_explain(result)}", "")
        return result

    def _not_reached(self, written: int, space: _FillSpace) -> str:
        """What the certificate must say the fill did not overwrite, and what covers it."""
        reserved = space.reserved
        held = (f"reserved blocks ({reserved:,} bytes, kept for the reserved_disk group)"
                if reserved is not None else "reserved blocks (their size was not reported)")
        gap = max(0, space.free - written)
        covered = ("the factory reset that follows covers them by destroying the "
                   "file-encryption keys (key erasure)"
                   if self.props.get("ro.crypto.type") in ("file", "block") else
                   "only the factory reset that follows covers them, and the phone reports no "
                   "encryption, so no key erasure is claimed")
        return (f"The fill overwrote {written:,} bytes of free user storage; it could not reach "
                f"the file system's {held}, its metadata (inodes, directories, extent trees, "
                f"journal) or the {gap:,} bytes of free space it was refused; {covered}.")

    def _remove_fill(self) -> str:
        """Remove the fill and commit; "" when done, else why not."""
        try:
            result = self.run(f"rm -rf {FILL_DIR} && sync")
        except PhonewipeError as exc:
            return exc.message
        except _LINK_ERRORS as exc:
            return str(exc) or type(exc).__name__
        return "" if result.status == 0 else _explain(result)

    def _finish_fill(self) -> None:
        """The verified fill goes before the reset; a phone whose fill stays is not reset."""
        problem = self._remove_fill()
        if problem:
            raise DeviceCommandFailed(f"the fill could not be removed after verification "
                                      f"({problem}); the owner's files were deleted, {FILL_DIR} "
                                      "may still fill the storage; the phone was NOT reset",
                                      "reset it from Settings, or run the erase again")

    def _fill_failed(self, exc: Exception) -> DeviceCommandFailed:
        """The failure of a fill that began deleting: remove the fill, then say exactly what
        state the phone is in."""
        cause = exc.message if isinstance(exc, PhonewipeError) else (str(exc) or repr(exc))
        owner = ("some of the owner's files were deleted" if self._owner_files == "partly deleted"
                 else "the owner's files were deleted")
        problem = self._remove_fill()
        if problem:
            return DeviceCommandFailed(
                f"the fill failed: {cause}; {owner}, the fill could NOT be removed ({problem}), "
                f"so {FILL_DIR} may still fill the storage; the phone was NOT reset",
                "reconnect the phone and run the erase again (it removes the old fill first), "
                "or reset it from Settings")
        return DeviceCommandFailed(f"the fill failed: {cause}; {owner}, the fill was removed; "
                                   "the phone was NOT reset",
                                   "reset it from Settings, or run the erase again")

    def reader(self) -> "_DdReader | None":
        return self._reader

    def install_reader_helper(self) -> None:
        """Push phonewipe-pwread (protocols/adb/helper) for the phone's ABI to
        /data/local/tmp, where the shell uid may run it: a reader of the fill files past the
        page cache. It runs with the shell's rights only. `reader_helper` says how it went."""
        abi = self.props.get("ro.product.cpu.abi", "")
        build = HELPER_BUILDS / f"phonewipe-pwread-{abi}"
        if not build.is_file():
            self.reader_helper = f"no build for the phone's ABI {abi or '(unknown)'}"
            return
        binary = build.read_bytes()
        try:
            self.device.sync.push(binary, HELPER_ON_PHONE, mode=0o755)
        except _LINK_ERRORS as exc:
            self.reader_helper = f"push to {HELPER_ON_PHONE} failed: {exc}"
            return
        self.reader_helper = f"sha256 {hashlib.sha256(binary).hexdigest()[:16]}, {abi}"

    def readback(self) -> "_DdReader | None":
        """The userdata block device, read with root, without erasing anything."""
        if self.state != "device" or not self.root:
            return None
        return _DdReader(self, [(USERDATA, self._userdata_size())], root=True)

    def not_recheckable(self, record: Any) -> str | None:
        if record.sanitization and record.sanitization.method == FILL_RESET.name:
            return ("its samples were read from fill files that the recorded factory reset "
                    "removed, so they cannot be read again")
        return None

    def transcript(self) -> dict[str, Any]:
        return self._log.summary()

    def table_sizes(self) -> dict[str, int]:
        """The userdata partition's size from the partition table (/proc/partitions and
        sysfs), independent of the BLKGETSIZE64 ioctl behind `blockdev`."""
        table = self.run("cat /proc/partitions")
        kib = {parts[3]: int(parts[2]) for parts in (line.split() for line in table.text.splitlines())
               if len(parts) == 4 and parts[2].isdigit()}
        if table.status != 0 or not kib:
            return {}
        events = self.run("cat " + " ".join(f"/sys/class/block/{name}/uevent" for name in sorted(kib)))
        dev = current = None
        for line in events.text.splitlines():
            key, _, value = line.partition("=")
            current = value if key == "DEVNAME" else current
            if key == "PARTNAME" and value == "userdata":
                dev = current
        if dev not in kib:
            return {}
        evidence = {"/proc/partitions": kib[dev] * 1024}
        sectors = self.run(f"cat /sys/class/block/{dev}/size").text.strip()
        if sectors.isdigit():
            evidence[f"/sys/class/block/{dev}/size"] = int(sectors) * 512
        return evidence

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        if method is FACTORY_RESET:
            return {}
        if method is FILL_RESET:
            self._finish_fill()
        return {"after_verification": "fill deleted; " if method is FILL_RESET else "",
                **self._factory_reset()}

    def _factory_reset(self) -> dict[str, Any]:
        if self.root:
            self.check("mkdir -p /cache/recovery", root=True)
            self.check("echo --wipe_data > /cache/recovery/command", root=True)
            self._reboot("reboot:recovery")
            self._reset_done = True
            return {"factory_reset": "recovery --wipe_data"}
        result = self.run("cmd testharness enable")
        if result.status != 0:
            raise DeviceCommandFailed(f"the phone refused the factory reset: {result.error_line()}",
                                      "remove the screen lock, or reset from Settings and run again")
        self._reset_done = True
        return {"factory_reset": "cmd testharness enable (Test Harness Mode reset)"}

    def _reboot(self, service: str) -> None:
        try:
            with self._transport(timeout=10) as conn:
                conn.send_command(service)
                conn.check_okay()
                conn.read_until_close(encoding=None)
        except _LINK_ERRORS:
            pass  # the phone drops the link as it reboots

    def preflight_for(self, mode: str) -> list[Finding]:
        # a screen lock only stops adb's own reset; an erase in another mode removes it
        return [Finding(Severity.WARNING, f.code, f"A screen lock is set (the erase in {mode} "
                        "mode removes it).") if f.code == "screen-lock" else f
                for f in self.preflight()]

    def reboot_to(self, mode: str) -> bool:
        """Into the bootloader (fastboot) on request; "adb" is where the phone already is."""
        if mode != "fastboot":
            return False
        self._reboot("reboot:bootloader")
        return True

    def post_state(self) -> dict[str, Any]:
        if not self._reset_done:
            return {}
        wait = float(self.plugin.option("reboot_wait"))
        if self.root:
            return {"returned_over_adb": False,
                    "note": "rebooted to recovery to wipe; after a reset USB debugging is off, so "
                            "the post-reset state is not observable over adb"}
        deadline = time.monotonic() + wait
        address = self.endpoint.address
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if ":" in address:
                try:
                    self.client.connect(address, timeout=3)
                except _LINK_ERRORS:
                    continue
            if self._alive():
                accounts = re.findall(r"Account \{name=", self.run("dumpsys account").text)
                harness = self.run("getprop persist.sys.test_harness").text.strip()
                files = self.run("ls -A /sdcard").text.split()
                return {"returned_over_adb": True, "google_accounts": len(accounts),
                        "test_harness": harness == "1", "user_files": files,
                        "reset_observed": not accounts and not files}
        return {"returned_over_adb": False, "note": f"did not return over adb within {wait:.0f} s"}


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


class _DdReader:
    """Read-back with `dd` batches over shell v2: one command reads many samples."""

    def __init__(self, session: AdbSession, sources: list[tuple[str, int]], root: bool) -> None:
        self.session = session
        self.sources = sources
        self.root = root
        self.size = sum(size for _, size in sources)
        self.block_size = BLOCK
        self.direct = False  # dd iflag=direct (O_DIRECT) instead of dropped caches
        self.helper = False  # phonewipe-pwread on the phone reads the samples

    def bypass_cache(self) -> str:
        """Right after an overwrite the phone's page cache still holds what was written, and a
        buffered `dd` is answered from it whatever the flash stored. Drop the cache (root:
        BLKFLSBUF, then drop_caches) or read with O_DIRECT; refuse to vouch otherwise."""
        tried = []
        if self.root:
            devices = " ".join(sorted({path for path, _ in self.sources}))
            for what, command in (("blockdev --flushbufs (the BLKFLSBUF ioctl)",
                                   f"sync && blockdev --flushbufs {devices}"),
                                  ("echo 3 > /proc/sys/vm/drop_caches",
                                   "sync && echo 3 > /proc/sys/vm/drop_caches")):
                result = self.session.run(command, root=True)
                if result.status == 0:
                    self.direct = False
                    return f"the phone's page cache was dropped before reading ({what})"
                tried.append(f"{what}: {result.error_line()}")
        path = self.sources[0][0]
        probe = self.session.run(f"dd if={path} of=/dev/null iflag=direct bs={BLOCK} count=1",
                                 root=self.root)
        if probe.status == 0:
            self.direct = True
            return "read with O_DIRECT (dd iflag=direct), past the phone's page cache"
        tried.append(f"dd iflag=direct: {probe.error_line()}")
        if not self.root:
            how = self._install_helper(path, tried)
            if how:
                return how
        raise MediumUnreachable(
            "the phone allows neither dropping its page cache nor direct reads ("
            + "; ".join(tried) + "), so a read-back could come from RAM, not the flash",
            "erase it with a method whose read-back reaches the storage (root, or the bootloader)")

    def _install_helper(self, path: str, tried: list[str]) -> str | None:
        """Ask phonewipe-pwread, pushed before the fill, how it will read ``path``."""
        helper = self.session.reader_helper
        if not helper.startswith("sha256 "):
            tried.append(f"phonewipe-pwread: {helper}")
            return None
        probe = self.session.run(f"{HELPER_ON_PHONE} --probe {path}")
        mode = probe.text.strip()
        if probe.status != 0 or mode not in ("direct", "fadvise"):
            tried.append(f"phonewipe-pwread: {probe.error_line()}")
            return None
        self.helper = True
        how = "with O_DIRECT into an aligned buffer" if mode == "direct" else \
            "after dropping each file's cached pages (posix_fadvise DONTNEED)"
        return f"read by phonewipe-pwread ({helper}) on the phone {how}, past its page cache"

    def _pieces(self, offset: int, length: int) -> list[tuple[str, int, int]]:
        pieces, base = [], 0
        for path, size in self.sources:
            lo, hi = max(offset, base), min(offset + length, base + size)
            if lo < hi:
                pieces.append((path, lo - base, hi - lo))
            base += size
        return pieces

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        """Batch k+1 is already running on the phone while the caller checks batch k: one
        command ahead, no extra thread."""
        batches = [list(extents[i:i + READ_BATCH]) for i in range(0, len(extents), READ_BATCH)]
        ahead: tuple[list[Extent], str, list[int], Any] | None = None
        try:
            for i, batch in enumerate(batches):
                current = ahead or self._start(batch)
                ahead = self._start(batches[i + 1]) if i + 1 < len(batches) else None
                pending, command, lengths, conn = current
                samples, rest = self._parse(self.session.collect_command(command, conn), pending, lengths)
                yield from samples
                if rest:
                    yield from self._read_batch(rest)
        finally:
            if ahead is not None:  # the caller stopped early, or a read failed
                ahead[3].conn.close()

    def _read_batch(self, batch: Sequence[Extent]) -> list[bytes | None]:
        samples: list[bytes | None] = []
        pending = list(batch)
        while pending:
            pending, command, lengths, conn = self._start(pending)
            done, pending = self._parse(self.session.collect_command(command, conn), pending, lengths)
            samples += done
        return samples

    def _start(self, pending: list[Extent]) -> tuple[list[Extent], str, list[int], Any]:
        runs: list[list] = []  # [path, offset, length]: adjacent samples share one dd
        lengths = []
        for offset, length in pending:
            pieces = self._pieces(offset, length)
            lengths.append(sum(n for *_, n in pieces))
            for path, off, n in pieces:
                if runs and runs[-1][0] == path and runs[-1][1] + runs[-1][2] == off:
                    runs[-1][2] += n
                else:
                    runs.append([path, off, n])
        flag = " iflag=direct" if self.direct else ""
        command = f"{HELPER_ON_PHONE} " + " ".join(f"{path}:{off}:{n}" for path, off, n in runs) \
            if self.helper else " && ".join(f"dd if={path}{flag} bs={BLOCK} skip={off // BLOCK} "
                              f"count={n // BLOCK} 2>/dev/null" for path, off, n in runs)
        return pending, command, lengths, self.session.start_command(command, root=self.root)

    @staticmethod
    def _parse(result: ShellResult, pending: list[Extent],
               lengths: list[int]) -> tuple[list[bytes | None], list[Extent]]:
        """The samples a batch's answer holds, and the extents still to read."""
        data, pos = result.stdout, 0
        samples: list[bytes | None] = []
        if result.status == 0:
            for length in lengths:  # a short answer shows up as a short sample
                samples.append(data[pos:pos + length])
                pos += length
            return samples, []
        # `&&` stopped at the first dd that failed, and dd stops at an unreadable block after
        # writing the ones before it: every whole sample ahead of the bad one is there
        index = 0
        while index < len(lengths) and pos + lengths[index] <= len(data):
            samples.append(data[pos:pos + lengths[index]])
            pos += lengths[index]
            index += 1
        if index < len(pending):
            samples.append(None)
        return samples, pending[index + 1:]
