"""An emulated EDL phone served to other processes of the same user: the emulated USB bus
lives in the process that runs the emulator, so `phonewipe emulate` relays the phone's USB
function over loopback TCP, and a plugin in another process (`phonewipe erase`) attaches it
to its own emulated bus as a `RemoteGadget`. The client code still opens it through pyusb,
exactly as it opens a phone on the local bus; only the gadget's transfers cross processes.

Requests and answers are framed as one byte (operation or status), a little-endian u32
length and that many bytes. Operations: D (describe: the device's descriptors as JSON),
P (present and generation), O (bulk OUT: endpoint byte, data), I (bulk IN: endpoint byte,
u32 size, u32 timeout in ms, 0 for none). Status: 0 ok, 1 gone, 2 timed out.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import asdict
from typing import Any

from phonewipe.erase.emulation.usbbus import DeviceSpec, EndpointSpec, Gadget, InterfaceSpec

FRAME = struct.Struct("<cI")
OK, GONE, TIMEOUT = b"\0", b"\1", b"\2"
IN_REQUEST = struct.Struct("<BII")
MAX_FRAME = 64 * 1024 * 1024


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        piece = sock.recv(min(n - len(buf), 1 << 20))
        if not piece:
            raise ConnectionError("peer closed")
        buf += piece
    return bytes(buf)


def _send(sock: socket.socket, code: bytes, body: bytes = b"") -> None:
    sock.sendall(FRAME.pack(code, len(body)) + body)


def _recv(sock: socket.socket) -> tuple[bytes, bytes]:
    code, length = FRAME.unpack(_recv_exact(sock, FRAME.size))
    if length > MAX_FRAME:
        raise ConnectionError("oversized frame")
    return code, _recv_exact(sock, length)


class RelayServer:
    """Serves one gadget on 127.0.0.1 until stopped; one thread per connection."""

    def __init__(self, gadget: Gadget) -> None:
        self.gadget = gadget
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.25)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name=f"edl-relay-{self.port}").start()

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                op, body = _recv(sock)
                code, answer = self._answer(op, body)
                _send(sock, code, answer)
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            self._conns.discard(sock)
            sock.close()

    def _answer(self, op: bytes, body: bytes) -> tuple[bytes, bytes]:
        g = self.gadget
        if op == b"D":
            return OK, json.dumps(asdict(g.spec)).encode()
        if op == b"P":
            return OK, struct.pack("<?I", g.present(), g.generation)
        try:
            if op == b"O":
                g.bulk_out(body[0], body[1:])
                return OK, b""
            if op == b"I":
                endpoint, size, ms = IN_REQUEST.unpack(body)
                return OK, g.bulk_in(endpoint, size, ms / 1000 if ms else None)
        except TimeoutError:
            return TIMEOUT, b""
        except ConnectionResetError:
            return GONE, b""
        return GONE, b""

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in list(self._conns):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _spec(data: dict[str, Any]) -> DeviceSpec:
    interfaces = tuple(InterfaceSpec(i["klass"], i["subclass"], i["protocol"],
                                     tuple(EndpointSpec(**e) for e in i["endpoints"]), i["name"])
                       for i in data.pop("interfaces"))
    return DeviceSpec(interfaces=interfaces, **data)


class RemoteGadget:
    """A gadget another process serves (`RelayServer`), for the local emulated bus. One
    connection carries the transfers, another the presence queries the bus makes while a
    transfer waits."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        host, port = address.removeprefix("tcp:").rsplit(":", 1)
        self.address = address
        self._data = socket.create_connection((host, int(port)), timeout)
        self._ctl = socket.create_connection((host, int(port)), timeout)
        for sock in (self._data, self._ctl):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._data_lock, self._ctl_lock = threading.Lock(), threading.Lock()
        self.dead = False
        self._generation = 0
        code, body = self._call(self._ctl, self._ctl_lock, b"D")
        self.spec = _spec(json.loads(body))

    def _call(self, sock: socket.socket, lock: threading.Lock, op: bytes,
              body: bytes = b"") -> tuple[bytes, bytes]:
        with lock:
            try:
                _send(sock, op, body)
                return _recv(sock)
            except (OSError, ConnectionError, struct.error):
                self.dead = True
                return GONE, b""

    @property
    def generation(self) -> int:
        return self._generation

    def present(self) -> bool:
        if self.dead:
            return False
        code, body = self._call(self._ctl, self._ctl_lock, b"P")
        if code != OK or len(body) != 5:
            return False
        here, self._generation = struct.unpack("<?I", body)
        return bool(here)

    def bulk_out(self, endpoint: int, data: bytes) -> None:
        code, _ = self._call(self._data, self._data_lock, b"O", bytes([endpoint]) + data)
        if code != OK:
            raise ConnectionResetError("device left the bus")

    def bulk_in(self, endpoint: int, size: int, timeout: float | None) -> bytes:
        ms = max(1, int(timeout * 1000)) if timeout else 0
        code, body = self._call(self._data, self._data_lock, b"I",
                                IN_REQUEST.pack(endpoint, size, ms))
        if code == TIMEOUT:
            raise TimeoutError("no IN transfer")
        if code != OK:
            raise ConnectionResetError("device left the bus")
        return body

    def close(self) -> None:
        self.dead = True
        for sock in (self._data, self._ctl):
            try:
                sock.close()
            except OSError:
                pass
