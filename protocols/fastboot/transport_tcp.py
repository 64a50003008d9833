"""fastboot over TCP: ``FB01`` handshake, then 8-byte big-endian lengths before every
message in both directions."""
from __future__ import annotations

import socket
import time

from phonewipe.erase.errors import ProtocolError

from .wire import MAX_REPLY, TCP_HANDSHAKE, TCP_LENGTH, FastbootTimeout, gone, not_found

HANDSHAKE = "during the handshake"


def parse_address(address: str) -> tuple[str, int]:
    """``tcp:HOST:PORT`` or ``HOST:PORT`` -> (host, port)."""
    rest = address[4:] if address.startswith("tcp:") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ProtocolError(f"bad fastboot TCP address {address!r}", "use tcp:HOST:PORT")
    return host, int(port)


class TcpTransport:
    def __init__(self, address: str, timeout: float = 5.0) -> None:
        self.host, self.port = parse_address(address)
        self.address = f"tcp:{self.host}:{self.port}"
        self.timeout = timeout
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise not_found(self.address, exc.strerror or str(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(TCP_HANDSHAKE)
            answer = self._exact(sock, 4, HANDSHAKE)
        except OSError as exc:
            sock.close()
            raise not_found(self.address, exc.strerror or str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        if answer[:2] != TCP_HANDSHAKE[:2] or not answer[2:].isdigit():
            sock.close()
            raise ProtocolError(f"{self.address} answered {answer!r} instead of a fastboot "
                                "handshake", "check the address: it is not a fastboot device")
        return sock

    def _exact(self, sock: socket.socket, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                piece = sock.recv(n - len(buf))
            except socket.timeout as exc:
                raise FastbootTimeout(f"the fastboot device {self.address} did not answer {what}",
                                      "check that the phone is in the bootloader and not frozen; "
                                      "reboot it to the bootloader and run again") from exc
            except OSError as exc:
                if what == HANDSHAKE:
                    raise not_found(self.address, exc.strerror or str(exc)) from exc
                raise gone(self.address, what) from exc
            if not piece:
                if what == HANDSHAKE:
                    raise not_found(self.address, "the connection closed (not in the bootloader?)")
                raise gone(self.address, what)
            buf += piece
        return bytes(buf)

    def send(self, data: bytes | memoryview) -> None:
        try:
            self.sock.sendall(TCP_LENGTH.pack(len(data)))
            self.sock.sendall(data)
        except socket.timeout as exc:
            raise FastbootTimeout(f"the fastboot device {self.address} stopped accepting data",
                                  "reboot it to the bootloader and run again") from exc
        except OSError as exc:
            raise gone(self.address, "while the host was sending") from exc

    def recv(self, timeout: float | None) -> bytes:
        self.sock.settimeout(timeout)
        try:
            (length,) = TCP_LENGTH.unpack(self._exact(self.sock, 8, "with a reply"))
            if length > MAX_REPLY:
                raise ProtocolError(f"the device sent an oversized reply ({length} bytes, the "
                                    f"limit is {MAX_REPLY})",
                                    "this is not a fastboot bootloader; reconnect it")
            return self._exact(self.sock, length, "with a reply")
        finally:
            self.sock.settimeout(self.timeout)

    def reopen(self, timeout: float) -> None:
        """Connect again after a reboot into the bootloader: once the phone has closed the
        old connection, so that a connection made in the moment between its reply and its
        reboot is not taken for the rebooted bootloader."""
        deadline = time.monotonic() + timeout
        self._await_close(min(timeout, 5.0))
        self.close()
        while True:
            try:
                self.sock = self._connect()
                return
            except ProtocolError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _await_close(self, timeout: float) -> None:
        try:
            self.sock.settimeout(timeout)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass  # reset, or not closed within the timeout: reconnect all the same

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
