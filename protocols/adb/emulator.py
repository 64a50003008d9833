"""An emulated adbd: one handset's ADB daemon over loopback TCP.

The real adb server connects to it with ``adb connect 127.0.0.1:PORT`` and then sees a
phone: CNXN/AUTH handshake, streams, ``shell:``/``shell,v2:``/``exec:``/``sync:``, reboots,
``root:``. Commands run in the emulated shell (`phonewipe.protocols.adb.shell`) against the handset's
`HandsetStorage`, so fault injection behaves as it does for every other protocol.

Threads: one accept loop, one reader per connection, one worker per stream (the command).
Flow control follows adbd: one WRTE in flight per stream, each host WRTE acknowledged with
OKAY once queued for the command, with a bounded queue so a fast host cannot make us
buffer without limit.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import posixpath
import socket
import stat as stat_mod
import struct
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import ProtocolError

from . import shell, wire

log = logging.getLogger(__name__)

FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")
SHELL_V2_SDK = 24  # Android 7: adbd before it advertises no features and knows only `shell:`
"""What we advertise: only what is implemented. No delayed_ack (adb 36 would then send
several WRTEs per stream without waiting), no sendrecv_v2* (compressed push/pull), no abb."""

STDIN_QUEUE_BYTES = 4 * 1024 * 1024  # host data queued per stream before we stop acking
PIPE_BUFFER_BYTES = 64 * 1024  # what a child still reads from its stdin pipe once adbd lets go
SMALL_WRITE = 64 * 1024  # output writes below this are coalesced
SYNC_BATCH = 1024 * 1024  # sync DATA is written to storage in batches of this size
ADBD_RESTART_DELAY = 0.2

ShellRunner = Callable[[str, shell.Reader, shell.Writer, shell.Writer, threading.Event], int]
"""Runs one shell-service command instead of the emulated shell (e.g. as a real process):
(command, stdin, stdout, stderr, cancelled) -> exit status."""


@dataclass(frozen=True)
class SyncStat:
    """One file as the sync service reports it (STAT, STA2/LST2, DENT/DNT2); ``error`` is the
    errno of a failed stat (the other fields then as the wire sends them)."""

    mode: int = 0
    size: int = 0
    mtime: int = 0
    error: int = 0
    dev: int = 0x10302
    ino: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0


class SyncSource(Protocol):
    def read(self, n: int) -> bytes | bytearray | memoryview: ...


class SyncSink(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


class SyncFiles(Protocol):
    """The files the sync service (push/pull/stat/list) reads and writes, one object per
    ``sync:`` stream; paths arrive as the host sent them. Failures raise OSError."""

    def stat(self, path: str, follow: bool = True) -> SyncStat:
        """``follow``: stat (STA2) rather than lstat (STAT, LST2), as adbd does."""
        ...

    def entries(self, path: str) -> list[tuple[str, SyncStat]]:
        """A directory's entries, "." and ".." first; empty when it cannot be listed."""
        ...

    def open_read(self, path: str) -> SyncSource: ...

    def create(self, path: str, mode: int) -> SyncSink:
        """Open for a push (SEND): parents made as needed, ``mode`` from the SEND spec."""
        ...

    def remove(self, path: str) -> None:
        """Unlink a push that could not be finished."""
        ...

    def close(self) -> None: ...


SyncFilesFactory = Callable[[], SyncFiles]
"""Makes the file access of one ``sync:`` stream (e.g. real files as the shell uid would see
them) instead of the handset's emulated storage."""


class _Closed(Exception):
    """The stream or connection went away."""


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class _Inbox:
    """Host data for one stream: a bounded queue of WRTE payloads."""

    def __init__(self, stream: "_Stream") -> None:
        self._stream = stream
        self._queue: collections.deque[bytearray] = collections.deque()
        self._bytes = 0
        self._owed = 0  # OKAYs held back while the queue was full
        self._eof = False
        self._cond = threading.Condition()

    def put(self, payload: bytearray) -> bool:
        """Queue a payload; True when the caller should acknowledge it now."""
        with self._cond:
            if self._eof:
                return True
            self._queue.append(payload)
            self._bytes += len(payload)
            self._cond.notify()
            if self._bytes <= STDIN_QUEUE_BYTES:
                return True
            self._owed += 1
            return False

    def get(self, flush: Callable[[], None] | None = None) -> bytearray | None:
        """Next payload, None at end of input. Flushes pending output before blocking."""
        with self._cond:
            if not self._queue and not self._eof and flush is not None:
                self._cond.release()
                try:
                    flush()
                finally:
                    self._cond.acquire()
            while not self._queue and not self._eof:
                if self._stream.cancelled.is_set():
                    raise shell.Cancelled()
                self._cond.wait(0.5)
            if not self._queue:
                return None
            payload = self._queue.popleft()
            self._bytes -= len(payload)
            acks = 0
            while self._owed and self._bytes <= STDIN_QUEUE_BYTES:
                self._owed -= 1
                acks += 1
        for _ in range(acks):
            self._stream.ack()
        return payload

    def close(self, keep: int | None = None) -> None:
        """End of input; with ``keep``, queued data past that many bytes is dropped, as
        adbd drops what it had not yet written into a child's pipe when the host goes."""
        with self._cond:
            self._eof = True
            if keep is not None:
                kept, size = collections.deque(), 0
                while self._queue and size < keep:
                    payload = self._queue.popleft()
                    kept.append(payload[:keep - size])
                    size += len(kept[-1])
                self._queue, self._bytes = kept, size
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _RawStdin:
    """stdin of a v1 shell / exec: stream: the WRTE payloads as they come."""

    def __init__(self, inbox: _Inbox, flush: Callable[[], None] | None = None) -> None:
        self._inbox = inbox
        self._flush = flush
        self._view = memoryview(b"")
        self._eof = False

    def read(self, n: int) -> memoryview:
        while not self._view:
            if self._eof:
                return memoryview(b"")
            payload = self._inbox.get(self._flush)
            if payload is None:
                self._eof = True
                return memoryview(b"")
            self._view = memoryview(payload)
        piece = self._view[:n]
        self._view = self._view[len(piece):]
        return piece

    def read_exact(self, n: int) -> bytes:
        parts = []
        while n:
            piece = self.read(n)
            if not piece:
                raise EOFError
            parts.append(piece)
            n -= len(piece)
        return b"".join(parts)


class _V2Stdin(_RawStdin):
    """stdin of a shell v2 stream: only id-0 packets, until close-stdin (id 4)."""

    def __init__(self, inbox: _Inbox, flush: Callable[[], None] | None = None) -> None:
        super().__init__(inbox, flush)
        self._decoder = wire.ShellDecoder()
        self._pieces: collections.deque[memoryview] = collections.deque()
        self._closing = False

    def read(self, n: int) -> memoryview:
        while not self._view:
            if self._pieces:
                self._view = self._pieces.popleft()
                continue
            if self._eof or self._closing:
                self._eof = True
                return memoryview(b"")
            payload = self._inbox.get(self._flush)
            if payload is None:
                self._eof = True
                return memoryview(b"")
            for packet_id, piece in self._decoder.feed(payload):
                if packet_id == wire.SHELL_STDIN and piece:
                    self._pieces.append(piece)
                elif packet_id == wire.SHELL_CLOSE_STDIN:
                    self._closing = True
        piece = self._view[:n]
        self._view = self._view[len(piece):]
        return piece


class _Output:
    """stdout/stderr of a stream: raw bytes (v1, exec) or shell v2 packets."""

    def __init__(self, stream: "_Stream", v2: bool) -> None:
        self._stream = stream
        self._v2 = v2
        self._pending = bytearray()

    def stdout(self, data: bytes | bytearray | memoryview) -> None:
        self._emit(wire.SHELL_STDOUT, data)

    def stderr(self, data: bytes | bytearray | memoryview) -> None:
        self._emit(wire.SHELL_STDERR if self._v2 else wire.SHELL_STDOUT, data)

    def _emit(self, packet_id: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        if self._stream.closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed")
        header = wire.shell_header(packet_id, n) if self._v2 else b""
        if n < SMALL_WRITE:
            self._pending += header
            self._pending += data
            if len(self._pending) >= self._stream.conn.max_data:
                self._send_full_packets()
            return
        parts: list = [bytes(self._pending)] if self._pending else []
        self._pending.clear()
        if header:
            parts.append(header)
        parts.append(data)
        self._pending += self._stream.write_parts(parts, keep_tail=True)

    def _send_full_packets(self) -> None:
        pending, self._pending = self._pending, bytearray()
        self._pending += self._stream.write_parts([pending], keep_tail=True)

    def raw(self, data: bytes) -> None:
        """Bytes outside shell framing (sync protocol), coalesced."""
        if self._stream.closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed")
        self._pending += data
        if len(self._pending) >= self._stream.conn.max_data:
            self._send_full_packets()

    def raw_parts(self, parts: list) -> None:
        """Bulk bytes: whole WRTE packets go out now, the tail waits for more."""
        if self._stream.closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed")
        if self._pending:
            parts = [bytes(self._pending), *parts]
            self._pending.clear()
        self._pending += self._stream.write_parts(parts, keep_tail=True)

    def flush(self) -> None:
        if self._pending and not self._stream.closed:
            data = bytes(self._pending)
            self._pending.clear()
            self._stream.write_parts([data])

    def exit(self, status: int) -> None:
        if self._v2 and not self._stream.closed:
            self._pending += wire.shell_exit_packet(status)
        self.flush()


class _Stream:
    def __init__(self, conn: "_Connection", local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.closed = False  # no more output: CLSE sent or received
        self.cancelled = threading.Event()
        self._okay = threading.Event()
        self._okay.set()
        self.inbox = _Inbox(self)
        options = service.partition(":")[0].split(",")
        self.stdin_in_band = options[0] == "shell" and "v2" in options[1:]  # end of stdin is a packet

    # -- from the reader thread ------------------------------------------------------------
    def on_okay(self) -> None:
        self._okay.set()

    def on_write(self, payload: bytearray) -> None:
        if self.inbox.put(payload):
            self.ack()

    def on_close(self, cancel: bool = False) -> None:
        self.closed = True
        if cancel:
            self.cancelled.set()
        # a v2 host ends stdin in-band (close-stdin): a CLSE while stdin is open means the
        # host went away, and only what sat in the child's pipe is still read
        self.inbox.close(keep=PIPE_BUFFER_BYTES if self.stdin_in_band else None)
        self._okay.set()

    # -- from the worker -------------------------------------------------------------------
    def ack(self) -> None:
        if not self.closed:
            self.conn.send(wire.OKAY, self.local_id, self.remote_id)

    def write_parts(self, parts: list, keep_tail: bool = False) -> bytes:
        """Send bytes as WRTE packets of at most the negotiated size, one in flight.

        With ``keep_tail`` a last, partly filled packet is not sent but returned, so bulk
        output goes out in full packets (each costs a round trip)."""
        limit = self.conn.max_data
        packet: list[memoryview] = []
        size = 0
        for part in parts:
            view = memoryview(part)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            while view:
                take = view[:limit - size]
                packet.append(take)
                size += len(take)
                view = view[len(take):]
                if size == limit:
                    self._send_wrte(packet, size)
                    packet, size = [], 0
        if packet:
            if keep_tail:
                return b"".join(packet)
            self._send_wrte(packet, size)
        return b""

    def _send_wrte(self, packet: list[memoryview], size: int) -> None:
        while not self._okay.wait(0.5):
            if self.cancelled.is_set():
                raise shell.Cancelled()
        if self.closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed")
        if self.cancelled.is_set():
            raise shell.Cancelled()
        self._okay.clear()
        self.conn.send(wire.WRTE, self.local_id, self.remote_id, packet, size)

    def finish(self) -> None:
        """The command is done: close our end (CLSE) unless the host already did."""
        try:
            if not self.closed:
                self.closed = True
                self.conn.send(wire.CLSE, self.local_id, self.remote_id)
        finally:
            self.conn.forget(self)


# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------


class _Connection:
    def __init__(self, adbd: "EmulatedAdbd", sock: socket.socket, peer: str) -> None:
        self.adbd = adbd
        self.sock = sock
        self.peer = peer
        self.max_data = wire.MAX_PAYLOAD
        self.version = wire.A_VERSION_MIN
        self.online = False
        self.closed = False
        self.host_features: frozenset[str] = frozenset()
        self._token: bytes | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}  # open streams by our id
        self._live: set[_Stream] = set()  # streams whose command is still running
        self._next_id = 1

    # -- sending ----------------------------------------------------------------------------
    def send(self, command: int, arg0: int, arg1: int, parts: list | bytes = b"",
             size: int | None = None) -> None:
        if isinstance(parts, (bytes, bytearray, memoryview)):
            parts = [parts] if len(parts) else []
        if size is None:
            size = sum(len(p) for p in parts)
        check = 0
        if command in (wire.CNXN, wire.AUTH) or self.version < wire.A_VERSION_SKIP_CHECKSUM:
            check = sum(wire.checksum(p) for p in parts) & 0xFFFFFFFF
        views = [memoryview(wire.header_bytes(command, arg0, arg1, size, check))]
        views.extend(memoryview(p) for p in parts if len(p))
        with self._send_lock:
            if self.closed:
                raise _Closed()
            try:
                while views:
                    sent = self.sock.sendmsg(views)
                    while sent:
                        first = views[0]
                        if sent >= len(first):
                            sent -= len(first)
                            views.pop(0)
                        else:
                            views[0] = first[sent:]
                            sent = 0
            except OSError as exc:
                self.closed = True
                raise _Closed() from exc

    # -- lifetime ---------------------------------------------------------------------------
    def serve(self) -> None:
        rfile = self.sock.makefile("rb", buffering=256 * 1024)
        try:
            while True:
                raw = rfile.read(wire.HEADER_SIZE)
                if len(raw) < wire.HEADER_SIZE:
                    break
                header = wire.parse_header(raw, wire.MAX_PAYLOAD)
                payload = bytearray(header.data_length)
                if header.data_length and rfile.readinto(payload) != header.data_length:
                    break
                if header.data_check:
                    wire.verify_payload(header, payload)
                self._handle(header, payload)
        except ProtocolError as exc:
            log.warning("adbd %s: dropping connection from %s: %s", self.adbd.address,
                        self.peer, exc.message)
        except (_Closed, OSError, ValueError):
            pass
        finally:
            self.close(cancel=False)
            try:
                rfile.close()
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.adbd._forget_connection(self)

    def close(self, cancel: bool, abort: bool = False) -> None:
        """Tear the connection down (idempotent). ``cancel`` stops running commands."""
        self.closed = True  # no lock: a sender may be blocked in sendmsg holding it
        try:
            if abort:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._lock:
            streams = set(self._streams.values())
            self._streams.clear()
            if cancel:
                streams |= self._live
        for stream in streams:
            stream.on_close(cancel=cancel)

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            if self._streams.get(stream.local_id) is stream:
                del self._streams[stream.local_id]
            self._live.discard(stream)

    # -- dispatch ---------------------------------------------------------------------------
    def _handle(self, header: wire.Header, payload: bytearray) -> None:
        cmd = header.command
        if cmd == wire.CNXN:
            self._on_connect(header, payload)
        elif cmd == wire.AUTH:
            self._on_auth(header, payload)
        elif cmd == wire.STLS:
            raise ProtocolError("adb: host sent STLS but this device never offered TLS")
        elif not self.online:
            return  # adbd ignores stream traffic before the handshake completes
        elif cmd == wire.OPEN:
            self._on_open(header, payload)
        elif cmd == wire.OKAY:
            stream = self._streams.get(header.arg1)
            if stream is not None and stream.remote_id == header.arg0:
                stream.on_okay()
        elif cmd == wire.WRTE:
            stream = self._streams.get(header.arg1)
            if stream is not None and stream.remote_id == header.arg0:
                stream.on_write(payload)
        elif cmd == wire.CLSE:
            with self._lock:
                stream = self._streams.get(header.arg1)
                if stream is not None and header.arg0 in (0, stream.remote_id):
                    del self._streams[header.arg1]
                else:
                    stream = None
            if stream is not None:
                stream.on_close()

    def _on_connect(self, header: wire.Header, payload: bytearray) -> None:
        if header.arg0 < wire.A_VERSION_MIN:
            raise ProtocolError(f"adb: host protocol version 0x{header.arg0:08x} is too old")
        if header.arg1 < 256:
            raise ProtocolError(f"adb: host maxdata {header.arg1} is too small")
        banner = wire.parse_banner(payload)
        if self.online:  # a second CNXN restarts the session
            self.close_streams()
        self.version = min(header.arg0, wire.A_VERSION)
        self.max_data = min(header.arg1, wire.MAX_PAYLOAD)
        self.host_features = banner.features
        self.online = False
        log.debug("adbd %s: CNXN from %s version=0x%08x maxdata=%d features=%s",
                  self.adbd.address, self.peer, header.arg0, header.arg1,
                  ",".join(sorted(banner.features)))
        if self.adbd.storage.profile.access.auth == "none":
            self._send_connect()
        else:
            self._send_token()

    def _send_connect(self) -> None:
        self.online = True
        self._token = None
        self.send(wire.CNXN, wire.A_VERSION, wire.MAX_PAYLOAD, self.adbd.banner())

    def _send_token(self) -> None:
        self._token = os.urandom(wire.TOKEN_SIZE)
        self.send(wire.AUTH, wire.AUTH_TOKEN, 0, self._token)

    def _on_auth(self, header: wire.Header, payload: bytearray) -> None:
        if self.online or self._token is None:
            return
        if header.arg0 == wire.AUTH_SIGNATURE:
            for key in self.adbd.authorized_keys():
                if wire.verify_token_signature(key, self._token, bytes(payload)):
                    log.debug("adbd %s: host key verified", self.adbd.address)
                    self._send_connect()
                    return
            self._send_token()
        elif header.arg0 == wire.AUTH_RSAPUBLICKEY:
            if self.adbd.storage.profile.access.auth != "accept":
                log.debug("adbd %s: USB debugging prompt left unanswered", self.adbd.address)
                return
            try:
                key = wire.parse_android_pubkey(bytes(payload))
            except ProtocolError as exc:
                log.warning("adbd %s: rejecting host key: %s", self.adbd.address, exc.message)
                return
            self.adbd.authorize(key)
            self._send_connect()
        else:
            raise ProtocolError(f"adb: AUTH type {header.arg0} is not valid from a host")

    def close_streams(self) -> None:
        with self._lock:
            streams = set(self._streams.values()) | self._live
            self._streams.clear()
        for stream in streams:
            stream.on_close(cancel=True)

    def _on_open(self, header: wire.Header, payload: bytearray) -> None:
        if header.arg0 == 0:
            raise ProtocolError("adb: OPEN with local-id 0")
        name = bytes(payload).split(b"\0", 1)[0].decode("utf-8", "replace")
        handler = self.adbd.service(name)
        if handler is None:
            log.debug("adbd %s: refusing service %r", self.adbd.address, name)
            self.send(wire.CLSE, 0, header.arg0)
            return
        with self._lock:
            local_id = self._next_id
            self._next_id = self._next_id % 0x7FFFFFFF + 1
            stream = _Stream(self, local_id, header.arg0, name)
            self._streams[local_id] = stream
            self._live.add(stream)
        self.send(wire.OKAY, local_id, header.arg0)
        self.adbd._spawn(self.adbd._run_stream, stream, handler, name=f"adbd-{name[:24]}")


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------


class EmulatedAdbd:
    """One emulated handset's adbd, serving on loopback TCP until `stop()`.

    ``start()`` binds and serves (``port``/``address``/``endpoints`` are valid afterwards);
    ``stop()`` cancels running commands, closes every socket and joins every thread.
    Services: ``shell:CMD``, ``shell,v2[,raw|,pty...]:CMD``, ``exec:CMD``, ``sync:``,
    ``reboot:[bootloader|recovery|fastboot]``, ``root:``, ``unroot:``; anything else is
    refused with CLSE. ``storage.state.mode`` follows reboots (adb, fastboot, recovery,
    setup-wizard); connections are accepted then closed while not in "adb" mode or during
    ``reboot_delay``. A `DeviceUnplugged` from the storage closes everything at once,
    listener included (``unplugged`` becomes True). With ``shell_runner``, ``shell`` and
    ``exec:`` commands run through it (e.g. as real processes) instead of the emulated shell;
    with ``sync_files``, ``sync:`` reads and writes the files it gives (e.g. the same real
    files) instead of the emulated storage.
    """

    def __init__(self, storage: HandsetStorage, host: str = "127.0.0.1", port: int = 0,
                 reboot_delay: float = 0.5, shell_runner: ShellRunner | None = None,
                 sync_files: SyncFilesFactory | None = None) -> None:
        self.storage = storage
        self.shell_runner = shell_runner
        self.sync_files = sync_files
        self.host = host
        self.reboot_delay = reboot_delay
        self.port = port
        self.adbd_root = False
        self.unplugged = False
        self.dirs: set[str] = set()  # directories made with mkdir (not in the file table)
        self._requested_port = port
        self._keys: list[rsa.RSAPublicKey] = []
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._down_until = 0.0
        self._started = False
        self._resets_seen = storage.state.resets

    # -- public ---------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoints(self) -> dict[str, str]:
        return {"adb": self.address}

    @property
    def mode(self) -> str:
        return self.storage.state.mode

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    @property
    def online(self) -> bool:
        """Whether a host connecting now would reach adbd."""
        return (not self.unplugged and not self.storage.faults.unplugged
                and not self._stopping.is_set() and self.storage.state.mode == "adb"
                and time.monotonic() >= self._down_until)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("emulated adbd already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(16)
        listener.settimeout(0.25)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._started = True
        self._spawn(self._accept_loop, name=f"adbd-accept-{self.port}")

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        self._drop_connections(cancel=True)
        deadline = time.monotonic() + 10
        current = threading.current_thread()
        while True:
            with self._lock:
                threads = [t for t in self._threads if t is not current]
            if not threads:
                break
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    log.warning("adbd %s: thread %s did not stop", self.address, t.name)
            with self._lock:
                self._threads.difference_update(t for t in threads if not t.is_alive())
            if time.monotonic() > deadline:
                break

    def __enter__(self) -> "EmulatedAdbd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authorized_keys(self) -> list[rsa.RSAPublicKey]:
        with self._lock:
            return list(self._keys)

    def authorize(self, key: rsa.RSAPublicKey) -> None:
        """What tapping "Allow" on the USB debugging prompt does."""
        with self._lock:
            numbers = key.public_numbers()
            if all(k.public_numbers() != numbers for k in self._keys):
                self._keys.append(key)

    def banner(self) -> bytes:
        d = self.storage.profile.device
        return wire.make_banner("device", {"ro.product.name": d.product,
                                           "ro.product.model": d.model,
                                           "ro.product.device": d.device},
                                 list(FEATURES) if d.sdk >= SHELL_V2_SDK else [])

    def wait_online(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.online:
                return True
            time.sleep(0.02)
        return self.online

    # -- threads --------------------------------------------------------------------------
    def _spawn(self, target: Callable, *args: object, name: str) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:  # stop() only ever sees started threads
            self._threads.add(thread)
            thread.start()
        return thread

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set() and not self.unplugged:
            try:
                sock, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if not self.online:
                sock.close()  # rebooting, in another mode, or gone: the host sees EOF
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, f"{peer[0]}:{peer[1]}")
            with self._lock:
                self._connections.add(conn)
            self._spawn(conn.serve, name=f"adbd-conn-{self.port}")

    def _forget_connection(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
            except OSError:
                pass
            try:
                listener.close()
            except OSError:
                pass

    def _drop_connections(self, cancel: bool, abort: bool = False) -> None:
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            conn.close(cancel=cancel, abort=abort)

    # -- device events --------------------------------------------------------------------
    def unplug(self) -> None:
        """The cable is out: every socket closes now and nothing connects any more."""
        with self._lock:
            if self.unplugged:
                return
            self.unplugged = True
        log.info("adbd %s: device unplugged", self.address)
        self._close_listener()
        self._drop_connections(cancel=True, abort=True)

    def reboot(self, target: str = "") -> None:
        """target: "" | "bootloader" | "fastboot" | "recovery" | "testharness" | "adbd"."""
        with self._lock:
            if self.unplugged or self._stopping.is_set():
                return
            state = self.storage.state
            delay = self.reboot_delay if target != "adbd" else min(self.reboot_delay,
                                                                     ADBD_RESTART_DELAY)
            if target != "adbd":
                self.adbd_root = False  # service.adb.root does not survive a reboot
                self.storage.drop_caches()  # nor does RAM
            if target in ("bootloader", "fastboot"):
                state.mode = "fastboot"
            elif target in ("recovery", "testharness"):
                state.mode = "recovery"
            self._down_until = time.monotonic() + delay
            self.storage.save()
        log.info("adbd %s: reboot %s", self.address, target or "(normal)")
        self._drop_connections(cancel=True)
        self._spawn(self._finish_reboot, target, delay, name=f"adbd-reboot-{self.port}")

    def _finish_reboot(self, target: str, delay: float) -> None:
        self._stopping.wait(delay)
        with self._lock:
            if self.unplugged:
                return
            state = self.storage.state
            if target == "recovery":
                if "--wipe_data" in state.recovery_command:
                    self.storage.factory_reset()
                    state.recovery_command = ""
                    state.mode = "setup-wizard"  # adb is off after a reset: the host loses us
                    self._keys.clear()
                    self.dirs.clear()
            elif target == "testharness":
                self.storage.factory_reset()
                state.test_harness = True
                state.google_accounts = []
                state.mode = "adb"  # test harness mode keeps adb on and the host key
                self.dirs.clear()
            elif target in ("", "adbd"):
                state.mode = "adb"
            self.storage.save()

    # -- services -------------------------------------------------------------------------
    def service(self, name: str) -> Callable[[_Stream], list[str]] | None:
        """The handler for an OPEN of ``name``, or None (the stream is refused)."""
        if name.startswith("shell"):
            head, sep, command = name.partition(":")
            options = head.split(",")
            if not sep or options[0] != "shell":
                return None
            v2 = "v2" in options[1:]
            if options[1:] and self.storage.profile.device.sdk < SHELL_V2_SDK:
                return None  # an old adbd refuses `shell,v2,...:` as an unknown service
            if not command:
                return None  # interactive shells are not emulated
            return lambda stream: self._shell(stream, command, v2)
        if name.startswith("exec:"):
            command = name[len("exec:"):]
            return (lambda stream: self._shell(stream, command, False)) if command else None
        if name == "sync:":
            return self._sync
        if name.startswith("reboot:"):
            target = name[len("reboot:"):]
            if target not in ("", "bootloader", "recovery", "fastboot"):
                return None
            return lambda stream: [f"reboot:{target}"]
        if name == "root:":
            return self._root
        if name == "unroot:":
            return self._unroot
        return None

    def _run_stream(self, stream: _Stream, handler: Callable[[_Stream], list[str]]) -> None:
        events: list[str] = []
        try:
            events = handler(stream) or []
        except DeviceUnplugged:
            stream.conn.forget(stream)
            self.unplug()
            return
        except (shell.Cancelled, _Closed, BrokenPipeError, EOFError, ConnectionError):
            pass
        except Exception:
            log.exception("adbd %s: service %r failed", self.address, stream.service)
        try:
            stream.finish()
        except _Closed:
            pass
        for event in events:
            if event.startswith("reboot:"):
                self.reboot(event[len("reboot:"):])
            elif event == "testharness":
                self.reboot("testharness")
            elif event == "adbd-restart":
                self.reboot("adbd")

    def _context(self, stream: _Stream, out: _Output, stdin: shell.Reader,
                 events: list[str]) -> shell.ShellContext:
        with self._lock:
            if self._resets_seen != self.storage.state.resets:  # a reset from elsewhere
                self._resets_seen = self.storage.state.resets
                self.dirs.clear()
        return shell.ShellContext(
            storage=self.storage, is_root=self.adbd_root, stdin=stdin, stdout=out.stdout,
            stderr=out.stderr, adbd_root=self.adbd_root, events=events.append,
            cancelled=stream.cancelled, flush=out.flush, dirs=self.dirs)

    def _shell(self, stream: _Stream, command: str, v2: bool) -> list[str]:
        out = _Output(stream, v2)
        if self.shell_runner is not None:  # its stdin is read on another thread: no flush
            stdin = (_V2Stdin if v2 else _RawStdin)(stream.inbox)
            out.exit(self.shell_runner(command, stdin, out.stdout, out.stderr, stream.cancelled))
            return []
        stdin = (_V2Stdin if v2 else _RawStdin)(stream.inbox, out.flush)
        events: list[str] = []
        ctx = self._context(stream, out, stdin, events)
        status = shell.run(command, ctx)
        out.exit(status)
        return events

    def _root(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        access = self.storage.profile.access.root
        if access != "adbd":
            out.stdout(b"adbd cannot run as root in production builds\n")
            out.flush()
            return []
        if self.adbd_root:
            out.stdout(b"adbd is already running as root\n")
            out.flush()
            return []
        out.stdout(b"restarting adbd as root\n")
        out.flush()
        with self._lock:
            self.adbd_root = True
        return ["adbd-restart"]

    def _unroot(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        if not self.adbd_root:
            out.stdout(b"adbd not running as root\n")
            out.flush()
            return []
        out.stdout(b"restarting adbd as non root\n")
        out.flush()
        with self._lock:
            self.adbd_root = False
        return ["adbd-restart"]

    # -- sync: ----------------------------------------------------------------------------
    def _sync(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        rd = _RawStdin(stream.inbox, out.flush)
        ctx = self._context(stream, out, rd, [])
        files = self.sync_files() if self.sync_files is not None else \
            _EmulatedSyncFiles(self, shell.Vfs(ctx, self.adbd_root))
        try:
            self._sync_requests(out, rd, files, ctx)
        finally:
            files.close()
        return []

    def _sync_requests(self, out: _Output, rd: _RawStdin, files: SyncFiles,
                       ctx: shell.ShellContext) -> None:
        ids = wire.SYNC_IDS
        while True:
            try:
                request = rd.read_exact(8)
            except EOFError:
                break
            rid, length = struct.unpack("<II", request)
            if rid == ids[b"QUIT"]:
                break
            if rid not in (ids[b"STAT"], ids[b"STA2"], ids[b"LST2"], ids[b"LIST"],
                           ids[b"LIS2"], ids[b"SEND"], ids[b"RECV"]):
                self._sync_fail(out, f"unknown sync request 0x{rid:08x}")
                break
            if length > wire.SYNC_PATH_MAX:
                self._sync_fail(out, "path too long")
                break
            path = rd.read_exact(length).decode("utf-8", "replace")
            log.debug("adbd %s: sync %s %s", self.address, struct.pack("<I", rid).decode(), path)
            if rid == ids[b"STAT"]:
                st = files.stat(path, follow=False)
                out.raw(wire.STAT_V1.pack(b"STAT", st.mode, st.size & 0xFFFFFFFF, st.mtime))
            elif rid in (ids[b"STA2"], ids[b"LST2"]):
                st = files.stat(path, follow=rid == ids[b"STA2"])
                name = b"STA2" if rid == ids[b"STA2"] else b"LST2"
                out.raw(wire.STAT_V2.pack(name, st.error, st.dev, st.ino, st.mode, st.nlink,
                                          st.uid, st.gid, st.size, st.mtime, st.mtime, st.mtime))
            elif rid in (ids[b"LIST"], ids[b"LIS2"]):
                self._sync_list(out, files, path, v2=rid == ids[b"LIS2"])
            elif rid == ids[b"RECV"]:
                if not self._sync_recv(out, files, path, ctx):
                    break
            elif rid == ids[b"SEND"]:
                if not self._sync_send(out, rd, files, path):
                    break
        out.flush()

    @staticmethod
    def _ino(path: str) -> int:
        return (hash(path) & 0xFFFFFF) + 1000

    @staticmethod
    def _sync_list(out: _Output, files: SyncFiles, path: str, v2: bool) -> None:
        for name, st in files.entries(path):
            encoded = name.encode()
            if v2:
                out.raw(wire.DENT_V2.pack(b"DNT2", st.error, st.dev, st.ino, st.mode, st.nlink,
                                          st.uid, st.gid, st.size, st.mtime, st.mtime, st.mtime,
                                          len(encoded)) + encoded)
            else:
                out.raw(wire.DENT_V1.pack(b"DENT", st.mode, st.size & 0xFFFFFFFF, st.mtime,
                                          len(encoded)) + encoded)
        if v2:
            out.raw(wire.DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        else:
            out.raw(wire.DENT_V1.pack(b"DONE", 0, 0, 0, 0))

    @staticmethod
    def _sync_fail(out: _Output, message: str) -> None:
        data = message.encode()
        out.raw(struct.pack("<4sI", b"FAIL", len(data)) + data)
        out.flush()

    def _sync_recv(self, out: _Output, files: SyncFiles, path: str,
                   ctx: shell.ShellContext) -> bool:
        try:
            source = files.open_read(path)
        except OSError as exc:
            self._sync_fail(out, f"open failed: {exc.strerror}")
            return True
        while True:
            ctx.check()
            try:
                data = source.read(SYNC_BATCH)
            except OSError as exc:
                self._sync_fail(out, f"read failed: {exc.strerror}")
                return False
            if not data:
                break
            view = memoryview(data)
            parts: list = []
            for off in range(0, len(view), wire.SYNC_DATA_MAX):
                piece = view[off:off + wire.SYNC_DATA_MAX]
                parts += [struct.pack("<4sI", b"DATA", len(piece)), piece]
            out.raw_parts(parts)
        out.raw(struct.pack("<4sI", b"DONE", 0))
        out.flush()
        return True

    def _sync_send(self, out: _Output, rd: _RawStdin, files: SyncFiles, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            self._sync_fail(out, "missing , in ID_SEND")
            return False
        sink: SyncSink | None = None
        error = ""
        try:
            sink = files.create(path, _strtoul(mode_text))
        except OSError as exc:
            error = f"couldn't create file: {exc.strerror}"
        batch: list = []
        batched = 0

        def commit() -> None:
            nonlocal batch, batched
            if sink is not None and batch:
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                batch, batched = [], 0
                sink.write(data)

        while True:
            rid, length = struct.unpack("<II", rd.read_exact(8))
            if rid == wire.SYNC_IDS[b"DONE"]:
                break
            if rid != wire.SYNC_IDS[b"DATA"] or length > wire.SYNC_DATA_MAX:
                self._sync_fail(out, "invalid data message")
                return False
            left = length
            while left:
                piece = rd.read(left)
                if not piece:
                    raise EOFError
                left -= len(piece)
                if error:
                    continue
                batch.append(piece)
                batched += len(piece)
            if not error and batched >= SYNC_BATCH:
                try:
                    commit()
                except OSError as exc:
                    error = f"write failed: {exc.strerror}"
                    batch, batched = [], 0
        if not error:
            try:
                commit()
            except OSError as exc:
                error = f"write failed: {exc.strerror}"
        if error:
            if sink is not None:  # adbd unlinks what it could not finish
                files.remove(path)
            self._sync_fail(out, error)
            return False
        if sink is not None:
            sink.close()
        out.raw(struct.pack("<4sI", b"OKAY", 0))
        out.flush()
        return True


def _strtoul(text: str) -> int:
    """The SEND spec's mode as adbd reads it (strtoul, base 0); 0 where it is no number."""
    text = text.strip()
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        return int(text, 8) if text.startswith("0") and len(text) > 1 else int(text)
    except ValueError:
        return 0


class _EmulatedSyncFiles:
    """The sync service's files in the handset's emulated storage (the default `SyncFiles`):
    what the emulated shell sees, as adbd's shell uid, without modes or owners of its own."""

    def __init__(self, adbd: EmulatedAdbd, vfs: shell.Vfs) -> None:
        self.adbd = adbd
        self.vfs = vfs

    def _stat(self, full: str, ino: int, missing: SyncStat) -> SyncStat:
        vfs = self.vfs
        try:
            kind = vfs.lookup(full)
            size = vfs.size(full)
        except OSError as exc:
            return replace(missing, error=exc.errno or errno.ENOENT)
        mode = {"dir": stat_mod.S_IFDIR | 0o771, "file": stat_mod.S_IFREG | 0o660,
                "blk": stat_mod.S_IFBLK | 0o600, "chr": stat_mod.S_IFCHR | 0o666}[kind]
        return SyncStat(mode, size, int(time.time()), 0, ino=ino, nlink=1, uid=2000, gid=2000)

    def stat(self, path: str, follow: bool = True) -> SyncStat:  # no symlinks here
        return self._stat(self.vfs.norm(path), EmulatedAdbd._ino(path), SyncStat())

    def entries(self, path: str) -> list[tuple[str, SyncStat]]:
        vfs = self.vfs
        full = vfs.norm(path)
        try:
            names = [".", ".."] + vfs.listdir(full)
        except OSError:
            names = []
        listed = []
        for name in names:
            child = full if name == "." else (posixpath.dirname(full) if name == ".." else
                                               posixpath.join(full, name))
            ino = EmulatedAdbd._ino(child)
            listed.append((name, self._stat(child, ino, SyncStat(ino=ino, nlink=1, uid=2000,
                                                                 gid=2000))))
        return listed

    def open_read(self, path: str) -> SyncSource:
        return self.vfs.open_read(self.vfs.norm(path))

    def create(self, path: str, mode: int) -> SyncSink:
        vfs = self.vfs
        full = vfs.norm(path)
        if vfs.kind(full) == "dir":
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        vfs.check_write(full)
        parent = posixpath.dirname(full)
        while parent != "/" and vfs.kind(parent) is None:  # fixed_push_mkdir
            vfs.ctx.dirs.add(parent)
            parent = posixpath.dirname(parent)
        sink = vfs.open_write(full)
        sink.truncate()
        return sink

    def remove(self, path: str) -> None:
        self.vfs.remove(self.vfs.norm(path))
        self.adbd.storage.save()

    def close(self) -> None:
        pass
