"""The emulated adbd's streams: one per OPEN, each with a bounded inbox of host data
(acknowledged with OKAY as it is queued, held back when the queue is full), stdin as a
v1/exec byte stream or shell v2 packets, and output coalesced into WRTE packets with one in
flight, as adbd sends them."""
from __future__ import annotations

import collections
import errno
import threading
from typing import TYPE_CHECKING, Callable

from . import shell, wire

if TYPE_CHECKING:
    from .emulator_transport import _Connection

STDIN_QUEUE_BYTES = 4 * 1024 * 1024  # host data queued per stream before we stop acking
PIPE_BUFFER_BYTES = 64 * 1024  # what a child still reads from its stdin pipe once adbd lets go
SMALL_WRITE = 64 * 1024  # output writes below this are coalesced


class _Closed(Exception):
    """The stream or connection went away."""


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
                kept: collections.deque[bytearray] = collections.deque()
                size = 0
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
