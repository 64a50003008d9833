"""SSH to an N900 (asyncssh, on a private event loop so the plugin's callers stay
synchronous): commands as ``user``, root scripts through `sudo gainroot` (a root shell
that reads its commands from standard input), a stream written to the eMMC with `dd`, and
extents read back with `dd` in batches.

Reading: each batch is one root shell running ``echo pw-begin`` (whatever banner the root
shell prints comes before it), then per extent ``echo "<i" >&2; dd if=...
conv=noerror,sync; echo ">i" >&2``. `conv=sync` keeps standard output exactly as long as
the extents asked for; an I/O error shows as dd's message between the extent's markers on
standard error, and that extent is then reported unreadable (None), never as the zeros
dd padded it with."""
from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import asyncssh

from phonewipe.erase.errors import DeviceGone, PhonewipeError, ProtocolError

DEVICE = "/dev/mmcblk0"
READY = b"pw-ready"
# before the overwrite: MyDocs unmounted, everything synced, and every file system (/home on
# the eMMC included) remounted read-only with SysRq "u", so nothing the phone still has
# mounted writes over the pattern afterwards (the phone is re-flashed before reuse anyway)
PREPARE = (b"umount /home/user/MyDocs 2>/dev/null; sync; echo s > /proc/sysrq-trigger; "
           b"echo u > /proc/sysrq-trigger; ")
BEGIN = "pw-begin"  # what follows it on stdout is the extents (gainroot prints a banner)
BATCH_BYTES = 8 << 20
TIMEOUT = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: bytes


GONE_ADVICE = "check the USB cable and that USB networking is up (192.168.2.15), then run again"


class LoginRefused(PhonewipeError):
    """The phone answered SSH but refused the user and password."""


class MaemoClient:
    def __init__(self, host: str, port: int, user: str, password: str,
                 timeout: float = TIMEOUT) -> None:
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="maemo-ssh", daemon=True)
        self.thread.start()
        self.host_key = ""
        self.commands = 0
        async def connect() -> asyncssh.SSHClientConnection:
            try:
                return await asyncssh.connect(
                    host, port, username=user, password=password, known_hosts=None,
                    client_keys=None, agent_path=None, connect_timeout=min(timeout, 10))
            except asyncssh.PermissionDenied as exc:
                raise LoginRefused(f"the N900 at {self.address} refused the login of {user!r}",
                                   "give that user's password in PHONEWIPE_MAEMO_PASSWORD or "
                                   "with --maemo-password (and the user with --maemo-user)") from exc
        try:
            self.conn = self._wait(connect())
        except BaseException:
            self._stop_loop()
            raise
        key = self.conn.get_server_host_key()
        self.host_key = key.get_fingerprint() if key is not None else ""

    def _wait(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        future: "concurrent.futures.Future[T]" = asyncio.run_coroutine_threadsafe(
            coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout or self.timeout)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            future.cancel()
            raise DeviceGone(f"the N900 at {self.address} stopped answering over SSH "
                             f"({exc or type(exc).__name__})", GONE_ADVICE) from exc

    def close(self) -> None:
        try:
            if getattr(self, "conn", None) is not None:
                self.conn.close()
                self._wait(self.conn.wait_closed(), 5)
        except DeviceGone:
            pass
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    # -- commands ---------------------------------------------------------------------------
    def run(self, command: str, stdin: bytes = b"") -> Result:
        async def go() -> Result:
            process = await self.conn.create_process(command, encoding=None)
            try:
                if stdin:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
            except (BrokenPipeError, ConnectionError, asyncssh.ChannelOpenError):
                pass  # the command ended without reading its input (a refused sudo)
            done = await process.wait()
            return Result(_status(done.exit_status), _bytes(done.stdout), _bytes(done.stderr))
        self.commands += 1
        return self._wait(go())

    def run_root(self, script: str) -> Result:
        """``script`` run by the root shell `sudo gainroot` opens."""
        return self.run("sudo gainroot", script.encode())

    # -- the eMMC ---------------------------------------------------------------------------
    def write_device(self, chunks: Iterator[bytes], progress: Callable[[int], None]) -> Result:
        """Stream ``chunks`` into `dd of=/dev/mmcblk0` in the root shell, from offset 0."""
        async def go() -> Result:
            process = await self.conn.create_process("sudo gainroot", encoding=None)
            process.stdin.write(PREPARE + b"echo %s; exec dd of=%s bs=65536\n"
                                % (READY, DEVICE.encode()))
            seen = b""
            while READY not in seen and len(seen) < 65536:
                more = await asyncio.wait_for(process.stdout.read(4096), self.timeout)
                if not more:
                    break
                seen += more
            if READY not in seen:
                await process.wait()
                return Result(_status(process.exit_status) or 1, seen, b"")
            done = 0
            try:
                for chunk in chunks:
                    process.stdin.write(chunk)
                    # a dd that stops reading (a hung eMMC) is a stalled phone, not a slow one
                    await asyncio.wait_for(process.stdin.drain(), self.timeout)
                    done += len(chunk)
                    progress(done)
                process.stdin.write_eof()
            except (BrokenPipeError, ConnectionError):
                pass  # dd stopped reading (a full or failing eMMC): its status and words say why
            finished = await asyncio.wait_for(process.wait(), self.timeout)
            return Result(_status(finished.exit_status), _bytes(finished.stdout),
                          _bytes(finished.stderr))
        self.commands += 1
        return self._wait(go(), 24 * 3600)  # the whole eMMC: no short limit

    def read_extents(self, extents: Sequence[tuple[int, int]], block: int
                     ) -> Iterator[bytes | None]:
        batch: list[tuple[int, int]] = []
        size = 0
        for extent in extents:
            batch.append(extent)
            size += extent[1]
            if size >= BATCH_BYTES:
                yield from self._read_batch(batch, block)
                batch, size = [], 0
        if batch:
            yield from self._read_batch(batch, block)

    def root_output(self, script: str) -> tuple[Result, bytes | None]:
        """``script`` run as root, and its standard output without the root shell's banner
        (None when the script never started)."""
        result = self.run_root(f"echo {BEGIN}\n{script}")
        begin = BEGIN.encode() + b"\n"
        return result, result.stdout.split(begin, 1)[1] if begin in result.stdout else None

    def _read_batch(self, batch: list[tuple[int, int]], block: int) -> Iterator[bytes | None]:
        lines = [f'echo "<{i}" >&2; dd if={DEVICE} bs={block} skip={off // block} '
                 f'count={length // block} conv=noerror,sync; echo ">{i}" >&2'
                 for i, (off, length) in enumerate(batch)]
        result, out = self.root_output("\n".join(lines) + "\nexit 0\n")
        expected = sum(length for _, length in batch)
        data = out or b""
        if len(data) != expected:
            raise ProtocolError(f"the N900 returned {len(data):,} bytes for "
                                f"{expected:,} requested", "run again; check the SSH link")
        bad = _failed_extents(result.stderr.decode(errors="replace"))
        pos = 0
        for i, (_, length) in enumerate(batch):
            yield None if i in bad else data[pos:pos + length]
            pos += length


def _status(status: int | None) -> int:
    """A command's exit status; a channel that closed without one (a lost link, a killed
    shell) is not a success."""
    return 255 if status is None else status


def _bytes(data: bytes | str | None) -> bytes:
    """What a binary channel (encoding=None) returned."""
    return data.encode() if isinstance(data, str) else bytes(data or b"")


def _failed_extents(stderr: str) -> set[int]:
    """Extents whose markers enclose an error message (anything but dd's record counts)."""
    bad, current = set(), None
    for line in stderr.splitlines():
        if m := re.fullmatch(r"<([0-9]{1,9})", line):
            current = int(m.group(1))
        elif re.fullmatch(r">[0-9]{1,9}", line):
            current = None
        elif current is not None and line.strip() and \
                not re.fullmatch(r"[0-9]{1,20}\+[0-9]{1,20} records (in|out)", line):
            bad.add(current)
    return bad


def records_out(stderr: bytes, block: int) -> int | None:
    """Bytes dd reports writing (full records only count exactly; None when not said)."""
    m = re.search(rb"([0-9]{1,20})\+([0-9]{1,20}) records out", stderr)
    return int(m.group(1)) * block if m else None


def parse_partitions(text: str) -> dict[str, int]:
    """/proc/partitions: name -> size in bytes."""
    sizes = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2].isascii() and fields[2].isdigit() and len(fields[2]) <= 20:
            sizes[fields[3]] = int(fields[2]) * 1024
    return sizes


def parse_imei(text: str) -> str:
    m = re.search(r'string "([0-9]{14,16})"', text)
    return m.group(1) if m else ""


