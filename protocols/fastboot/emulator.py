"""An emulated bootloader: one handset in fastboot mode, over loopback TCP and over the
core's emulated USB bus (interface FF/42/03), both acting on the handset's `HandsetStorage`.

`FastbootDevice` is the command logic; `_TcpServer` and `FastbootGadget` carry its bytes.
The handset is reachable only while ``storage.state.mode == "fastboot"``: otherwise a TCP
connection is closed at once and the USB device is off the bus. ``reboot`` hands the
handset to Android (mode "adb"), ``reboot-bootloader`` re-enumerates it.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.registry import withdraw
from phonewipe.erase.emulation.storage import CHUNK, HandsetStorage
from phonewipe.erase.emulation.usbbus import DeviceSpec, EmulatedUsbBus, EndpointSpec, InPipe, InterfaceSpec
from phonewipe.erase.errors import ProtocolError

from . import sparse
from .wire import MAX_COMMAND, TCP_HANDSHAKE, TCP_LENGTH

log = logging.getLogger(__name__)

GOOGLE_VID, FASTBOOT_PID = 0x18D1, 0x4EE0
EP_OUT, EP_IN = 0x01, 0x81
PARTITION_TYPES = {"userdata": "f2fs", "metadata": "ext4", "frp": "raw", "misc": "raw"}
REBOOT_DOWN_S = 0.3


@dataclass
class _Download:
    buffer: bytearray
    received: int = 0

    @property
    def left(self) -> int:
        return len(self.buffer) - self.received


@dataclass
class FastbootDevice:
    """The bootloader's command handler. ``quirks`` (for tests) maps a command prefix to a
    raw reply sent instead of the real one, or to None for silence."""

    storage: HandsetStorage
    max_download: int = 16 * 1024 * 1024
    quirks: dict[str, bytes | None] = field(default_factory=dict)
    unplugged: bool = False
    staged: bytes | bytearray = b""
    download: _Download | None = None
    down_until: float = 0.0
    boots: int = 0
    _pending: str | None = None  # a reboot that happens once the reply is out
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def present(self) -> bool:
        return (self.storage.state.mode == "fastboot" and not self.unplugged
                and not self.storage.faults.unplugged and time.monotonic() >= self.down_until)

    def unplug(self) -> None:
        self.unplugged = True

    # -- variables ------------------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        st, profile = self.storage.state, self.storage.profile
        out = {"version": "0.4", "version-bootloader": f"{profile.device.product}-1.0",
               "product": profile.device.product, "serialno": st.serial, "secure": "yes",
               "unlocked": "no" if st.bootloader_locked else "yes",
               "max-download-size": f"0x{self.max_download:x}", "slot-count": "2",
               "current-slot": "a", "is-userspace": "no", "variant": profile.device.storage_type,
               "hw-revision": "MP1.0", "off-mode-charge": "0"}
        for part, kind in PARTITION_TYPES.items():
            out[f"partition-size:{part}"] = f"0x{self.storage.partition_size(part):x}"
            out[f"partition-type:{part}"] = kind
            out[f"has-slot:{part}"] = "no"
            out[f"is-logical:{part}"] = "no"
        out["has-slot:boot"] = "yes"
        return out

    # -- commands -------------------------------------------------------------------------
    def command(self, text: str) -> list[bytes | None]:
        """Replies to one command (None: say nothing). After ``DATA`` the caller feeds the
        data phase to `receive`."""
        with self._lock:
            for prefix, reply in self.quirks.items():
                if text.startswith(prefix):
                    return [reply]
            try:
                return self._command(text)
            except DeviceUnplugged:
                self.unplugged = True
                return []
            except (OSError, ProtocolError) as exc:
                return [b"FAIL" + str(exc).encode()[:200]]

    def _command(self, text: str) -> list[bytes | None]:
        name, _, arg = text.partition(":")
        locked = self.storage.state.bootloader_locked
        if name == "getvar":
            if arg == "all":
                return [*(b"INFO" + f"{k}: {v}".encode() for k, v in self.variables().items()),
                        b"OKAY"]
            value = self.variables().get(arg)
            return [b"OKAY" + value.encode()] if value is not None else \
                [b"FAILGetVar Variable Not found"]
        if name == "download":
            try:
                size = int(arg, 16)
            except ValueError:
                return [b"FAILinvalid download size"]
            if not 0 < size <= self.max_download:
                return [b"FAILdata too large" if size else b"FAILinvalid size"]
            self.download = _Download(bytearray(size))
            return [b"DATA%08x" % size]
        if name in ("flash", "erase"):
            if locked:
                return [b"FAIL" + (b"Flashing" if name == "flash" else b"Erase") +
                        b" is not allowed in Lock State"]
            if arg not in PARTITION_TYPES:
                return [b"FAILpartition (" + arg.encode()[:64] + b") doesn't exist"]
            return self._flash(arg) if name == "flash" else self._erase(arg)
        if text == "flashing get_unlock_ability":
            able = self.storage.profile.locks.oem_unlocking
            return [b"INFOget_unlock_ability: " + (b"1" if able else b"0"), b"OKAY"]
        if text == "flashing unlock":
            return self._unlock()
        if text == "flashing lock":
            self.storage.state.bootloader_locked = True
            self.storage.save()
            return [b"OKAY"]
        if text in ("reboot", "continue", "reboot-bootloader"):
            self._pending = "bootloader" if text == "reboot-bootloader" else "adb"
            return [b"OKAY"]
        if name == "set_active" and arg in ("a", "b"):
            return [b"OKAY"]
        return [b"FAILunknown command"]

    def _flash(self, partition: str) -> list[bytes | None]:
        data = memoryview(self.staged)
        if not data:
            return [b"FAILno image downloaded"]
        size = self.storage.partition_size(partition)
        if sparse.is_sparse(data):
            extents = list(sparse.parse(data))  # check the whole image before writing
            if extents and extents[-1].offset + extents[-1].length > size:
                return [b"FAILsparse image larger than the partition"]
            for extent in extents:
                if extent.data is not None:
                    self._write(partition, extent.offset, extent.data)
                elif extent.fill is not None:
                    self._fill(partition, extent.offset, extent.length, extent.fill)
        else:
            if len(data) > size:
                return [b"FAILimage larger than the partition"]
            self._write(partition, 0, data)
        self._wiped(partition)
        return [b"OKAY"]

    def _erase(self, partition: str) -> list[bytes | None]:
        """A discard that reads back as zeros (DRZAT flash), through fault injection."""
        self._fill(partition, 0, self.storage.partition_size(partition), b"\0\0\0\0")
        self._wiped(partition)
        return [b"OKAY"]

    def _unlock(self) -> list[bytes | None]:
        state = self.storage.state
        if not state.bootloader_locked:
            return [b"FAILDevice already unlocked"]
        if not self.storage.profile.locks.oem_unlocking:
            return [b"FAILFlashing Unlock is not allowed (enable OEM unlocking in Developer "
                    b"options)"]
        self.storage.factory_reset()  # the unlock wipe: user-data keys destroyed
        state.bootloader_locked = False
        self.storage.save()
        return [b"INFOunlocked; user data erased", b"OKAY"]

    def _write(self, partition: str, offset: int, data: memoryview) -> None:
        for pos in range(0, len(data), CHUNK):
            self.storage.write_partition(partition, offset + pos, data[pos:pos + CHUNK])

    def _fill(self, partition: str, offset: int, length: int, value: bytes) -> None:
        block = value * (CHUNK // 4)
        for pos in range(0, length, CHUNK):
            self.storage.write_partition(partition, offset + pos, block[:min(CHUNK, length - pos)])

    def _wiped(self, partition: str) -> None:
        if partition == "userdata":
            self.storage.userdata_wiped()

    # -- data phase -----------------------------------------------------------------------
    def receive(self, data: bytes | memoryview) -> list[bytes | None]:
        """Bytes of the data phase; the OKAY once the whole download is in."""
        with self._lock:
            d = self.download
            if d is None:
                return [b"FAILunexpected data"]
            take = min(len(data), d.left)
            d.buffer[d.received:d.received + take] = data[:take]
            d.received += take
            return self.download_complete()

    def download_complete(self) -> list[bytes | None]:
        """The OKAY that ends a data phase once every byte is in (nothing before)."""
        with self._lock:
            if self.download is None or self.download.left:
                return []
            self.staged, self.download = self.download.buffer, None
            return [b"OKAY"]

    @property
    def reboot_pending(self) -> bool:
        return self._pending is not None

    def after_reply(self) -> None:
        """The reply to a reboot went out: now the handset reboots."""
        with self._lock:
            target, self._pending = self._pending, None
            if target is None:
                return
            self.staged = b""
            self.boots += 1
            if target == "adb":
                self.storage.state.mode = "adb"
                self.storage.save()
            else:
                self.down_until = time.monotonic() + REBOOT_DOWN_S


class _TcpServer:
    """fastboot over TCP for one handset: one connection at a time, as a phone does."""

    def __init__(self, device: FastbootDevice, host: str = "127.0.0.1") -> None:
        self.device = device
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.25)
        self.host, self.port = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"fastboot-tcp-{self.port}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if not self.device.present:
                sock.close()  # not in the bootloader: the host sees the connection close
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name=f"fastboot-conn-{self.port}").start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if _recv_exact(sock, 4)[:2] != TCP_HANDSHAKE[:2]:
                return
            sock.sendall(TCP_HANDSHAKE)
            while not self._stop.is_set() and self.device.present:
                (length,) = TCP_LENGTH.unpack(_recv_exact(sock, 8))
                if self.device.download is not None:
                    replies = self._data(sock, length)
                elif length > MAX_COMMAND:
                    return
                else:
                    replies = self.device.command(_recv_exact(sock, length).decode("ascii", "replace"))
                if not self._send(sock, replies):
                    return
        except (OSError, ConnectionError):
            pass
        finally:
            self._conns.discard(sock)
            sock.close()

    def _data(self, sock: socket.socket, length: int) -> list[bytes | None]:
        d = self.device.download
        assert d is not None
        if length > d.left:
            return [b"FAILtoo much data"]
        view = memoryview(d.buffer)[d.received:d.received + length]
        while view:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError("host closed")
            view = view[n:]
            d.received += n
            if self.device.unplugged or not self.device.present:
                raise ConnectionError("unplugged")
        return self.device.download_complete()

    def _send(self, sock: socket.socket, replies: list[bytes | None]) -> bool:
        """False when the connection must end (unplugged, rebooted)."""
        for reply in replies:
            if reply is not None:
                sock.sendall(TCP_LENGTH.pack(len(reply)) + reply)
        if self.device.reboot_pending:
            self.device.after_reply()
            return False
        return self.device.present

    def drop(self) -> None:
        for sock in list(self._conns):
            try:  # a pulled cable: the host sees a reset, not an orderly close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self.drop()
        self._thread.join(5)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        piece = sock.recv(n - len(buf))
        if not piece:
            raise ConnectionError("peer closed")
        buf += piece
    return bytes(buf)


class FastbootGadget:
    """The handset's fastboot USB function on an `EmulatedUsbBus` (interface FF/42/03).
    A reply whose length is a multiple of the packet size is followed by a zero-length
    packet, as a USB device controller sends it."""

    def __init__(self, device: FastbootDevice, max_packet: int = 512) -> None:
        self.device = device
        self.max_packet = max_packet
        d = device.storage.profile.device
        self.spec = DeviceSpec(
            vendor_id=GOOGLE_VID, product_id=FASTBOOT_PID, manufacturer=d.manufacturer,
            product=f"{d.model} (bootloader)", serial=device.storage.state.serial,
            interfaces=(InterfaceSpec(0xFF, 0x42, 0x03, (EndpointSpec(EP_OUT, max_packet),
                                                         EndpointSpec(EP_IN, max_packet)),
                                      name="fastboot"),))
        self._in = InPipe(lambda: self.device.present)
        self._was_present = False

    @property
    def generation(self) -> int:
        return self.device.boots

    def present(self) -> bool:
        now = self.device.present
        if now and not self._was_present:
            self._in.clear()  # a fresh enumeration starts with empty endpoints
        self._was_present = now
        return now

    def bulk_out(self, endpoint: int, data: bytes) -> None:
        if endpoint != EP_OUT:
            return
        if self.device.download is not None:
            replies = self.device.receive(data)
        elif len(data) > MAX_COMMAND:
            replies = [b"FAILcommand too long"]
        else:
            replies = self.device.command(data.decode("ascii", "replace"))
        for reply in replies:
            if reply is not None:
                self._in.put(reply)
                if len(reply) % self.max_packet == 0:
                    self._in.put(b"")
        if not self.device.present:
            self._in.wake()

    def wake(self) -> None:
        self._in.wake()

    def bulk_in(self, endpoint: int, size: int, timeout: float | None) -> bytes:
        data = self._in.get(size, timeout)
        if self.device.reboot_pending and not self._in.pending():
            self.device.after_reply()
        return data


class EmulatedBootloader:
    """A running emulated bootloader (a `RunningEmulator`): TCP listener plus, when a bus
    is given, a USB gadget on it."""

    def __init__(self, storage: HandsetStorage, bus: EmulatedUsbBus | None = None,
                 max_download: int = 16 * 1024 * 1024,
                 quirks: dict[str, bytes | None] | None = None) -> None:
        self.device = FastbootDevice(storage, max_download, dict(quirks or {}))
        self.tcp = _TcpServer(self.device)
        self.bus = bus
        self.gadget = FastbootGadget(self.device)
        if bus is not None:
            bus.add(self.gadget)
        self.published: list[Path] = []  # registry entries naming it (withdrawn on stop)

    @property
    def address(self) -> str:
        return f"tcp:{self.tcp.host}:{self.tcp.port}"

    @property
    def endpoints(self) -> dict[str, str]:
        return {"fastboot": self.address}

    def unplug(self) -> None:
        """The cable is out: the TCP link drops and the USB device leaves the bus."""
        self.device.unplug()
        self.tcp.drop()
        self.gadget.wake()

    def stop(self) -> None:
        for entry in self.published:
            withdraw(entry)
        self.tcp.stop()
        if self.bus is not None:
            self.bus.remove(self.gadget)

