"""The emulated adbd's transport: one host connection (a reader thread), its CNXN/AUTH
handshake with the host's RSA keys, packet dispatch to the streams, and OPEN of a service
(each stream's command runs on a worker thread of the daemon)."""
from __future__ import annotations

import io
import logging
import os
import socket
import struct
import threading
from typing import TYPE_CHECKING, cast

from phonewipe.erase.errors import ProtocolError

from . import wire
from .emulator_streams import _Closed, _Stream

if TYPE_CHECKING:
    from .emulator import EmulatedAdbd

log = logging.getLogger("phonewipe.protocols.adb.emulator")


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
        # typeshed types a buffered binary makefile as IOBase; "rb" with buffering > 1 is a
        # BufferedReader (socket.makefile wraps its SocketIO in one)
        rfile = cast(io.BufferedReader, self.sock.makefile("rb", buffering=256 * 1024))
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
