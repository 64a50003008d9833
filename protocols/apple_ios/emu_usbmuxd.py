"""An emulated usbmuxd: the plist protocol on a UNIX socket and/or loopback TCP.

ListDevices, Listen (Attached/Detached as phones come and go), Connect (the connection
becomes a pipe to a port on the phone: here, the phone's lockdownd or a service it
started), ReadPairRecord/SavePairRecord/DeletePairRecord (kept per UDID, as the real
daemon keeps /var/lib/lockdown), ReadBUID. Unknown messages get result 1 (bad command),
an unknown device 2, a refused port 3.
"""
from __future__ import annotations

import itertools
import os
import queue
import select
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from .emu_device import EmulatedIphone
from .emu_lockdownd import Closed, recv_exactly, serve
from .wire import WireError, build_mux_frame, parse_mux_header, parse_mux_message

RESULT_OK, RESULT_BADCOMMAND, RESULT_BADDEV, RESULT_CONNREFUSED = 0, 1, 2, 3


class EmulatedUsbmuxd:
    def __init__(self, unix_path: Path | None = None, tcp: bool = True) -> None:
        self.buid = str(uuid.uuid4()).upper()
        self._lock = threading.Lock()
        self._devices: dict[int, EmulatedIphone] = {}
        self._ids = itertools.count(1)
        self._listeners: list[Listener] = []
        self.pair_records: dict[str, bytes] = {}
        self._sockets: list[socket.socket] = []
        self.unix_path = unix_path
        self.tcp_address = ""
        self._stopped = threading.Event()
        if unix_path is not None:
            if unix_path.exists():
                unix_path.unlink()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(unix_path))
            self._listen(s)
        if tcp:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            self.tcp_address = f"127.0.0.1:{s.getsockname()[1]}"
            self._listen(s)

    @property
    def address(self) -> str:
        """What USBMUXD_SOCKET_ADDRESS (or a plugin's usbmux option) takes: HOST:PORT."""
        return self.tcp_address or f"UNIX:{self.unix_path}"

    def _listen(self, s: socket.socket) -> None:
        s.listen(64)
        self._sockets.append(s)
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="usbmuxd-accept").start()

    def _accept(self, s: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True,
                             name="usbmuxd-client").start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            for listener in self._listeners:
                listener.wake()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self.unix_path is not None and self.unix_path.exists():
            os.unlink(self.unix_path)

    # -- phones --------------------------------------------------------------------------
    def attach(self, device: EmulatedIphone) -> None:
        """Plug the phone in (and let it unplug and replug itself when it reboots)."""
        def plug(attached: bool) -> None:
            self._plug(device, attached)
        device.plug = plug
        plug(True)

    def detach(self, device: EmulatedIphone) -> None:
        self._plug(device, False)

    def _plug(self, device: EmulatedIphone, attached: bool) -> None:
        with self._lock:
            old = [i for i, d in self._devices.items() if d is device]
            for i in old:
                del self._devices[i]
            events = [{"MessageType": "Detached", "DeviceID": i} for i in old]
            if attached:  # a replugged phone gets a new id, as from the real daemon
                device_id = next(self._ids)
                self._devices[device_id] = device
                events.append(_attached(device_id, device))
            for listener in self._listeners:  # under the lock: a listener closes under it
                listener.tell(events)

    def devices(self) -> dict[int, EmulatedIphone]:
        with self._lock:
            return dict(self._devices)

    # -- one client connection ---------------------------------------------------------------
    def _client(self, conn: socket.socket) -> None:
        try:
            while True:
                header = parse_mux_header(recv_exactly(conn, 16))
                body = recv_exactly(conn, header.body_length())
                try:
                    message = parse_mux_message(header, body)
                except WireError:
                    conn.sendall(_result(RESULT_BADCOMMAND, header.tag))
                    continue
                if not self._handle(conn, message, header.tag):
                    return
        except (Closed, WireError, OSError):
            pass
        finally:
            conn.close()

    def _handle(self, conn: socket.socket, message: dict[str, Any], tag: int) -> bool:
        """Answer one message; False when the connection is no longer usbmuxd's."""
        kind = message["MessageType"]
        if kind == "ListDevices":
            listed = [_attached(i, d) for i, d in sorted(self.devices().items())]
            conn.sendall(build_mux_frame({"DeviceList": listed}, tag))
        elif kind == "Listen":
            conn.sendall(_result(RESULT_OK, tag))
            self._events(conn)
            return False
        elif kind == "Connect":
            return self._connect(conn, message, tag)
        elif kind == "ReadBUID":
            conn.sendall(build_mux_frame({"BUID": self.buid}, tag))
        elif kind == "ReadPairRecord":
            record = self.pair_records.get(str(message.get("PairRecordID")))
            conn.sendall(build_mux_frame({"PairRecordData": record}, tag) if record is not None
                         else _result(RESULT_BADDEV, tag))
        elif kind == "SavePairRecord":
            data, udid = message.get("PairRecordData"), message.get("PairRecordID")
            ok = isinstance(data, bytes) and isinstance(udid, str)
            if ok:
                self.pair_records[str(udid)] = bytes(data)  # type: ignore[arg-type]
            conn.sendall(_result(RESULT_OK if ok else RESULT_BADCOMMAND, tag))
        elif kind == "DeletePairRecord":
            self.pair_records.pop(str(message.get("PairRecordID")), None)
            conn.sendall(_result(RESULT_OK, tag))
        else:
            conn.sendall(_result(RESULT_BADCOMMAND, tag))
        return True

    def _connect(self, conn: socket.socket, message: dict[str, Any], tag: int) -> bool:
        device = self.devices().get(message.get("DeviceID"))  # type: ignore[arg-type]
        port = message.get("PortNumber")
        if device is None or not isinstance(port, int):
            conn.sendall(_result(RESULT_BADDEV, tag))
            return True
        port = socket.ntohs(port & 0xFFFF)
        if device.service_at_peek(port) is None:
            conn.sendall(_result(RESULT_CONNREFUSED, tag))
            return True
        conn.sendall(_result(RESULT_OK, tag))
        serve(device, port, conn)
        return False

    def _events(self, conn: socket.socket) -> None:
        """Attached for each phone plugged in now, then each change as it happens, until the
        client hangs up: the thread sleeps in select until either happens."""
        listener = Listener()
        with self._lock:
            listener.tell([_attached(i, d) for i, d in sorted(self._devices.items())])
            self._listeners.append(listener)
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select([conn.fileno(), listener.wake_r], [], [])
                if conn.fileno() in readable and not conn.recv(4096):
                    return  # the client hung up (what else it sends here is ignored)
                for event in listener.take():
                    conn.sendall(build_mux_frame(event, 0))
        finally:
            with self._lock:
                self._listeners.remove(listener)
                listener.close()


class Listener:
    """A Listen connection's events, and a pipe that wakes its thread when there are some."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self._wake_w, False)

    def tell(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.events.put(event)
        if events:
            self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: its thread is awake already

    def take(self) -> list[dict[str, Any]]:
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        events = []
        while not self.events.empty():
            events.append(self.events.get())
        return events

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self._wake_w)


def _attached(device_id: int, device: EmulatedIphone) -> dict[str, Any]:
    return {"MessageType": "Attached", "DeviceID": device_id,
            "Properties": {"ConnectionSpeed": 480000000, "ConnectionType": "USB",
                           "DeviceID": device_id, "LocationID": device_id << 16,
                           "ProductID": 0x12A8, "SerialNumber": device.udid,
                           "USBSerialNumber": device.udid.replace("-", "")}}


def _result(number: int, tag: int) -> bytes:
    return build_mux_frame({"MessageType": "Result", "Number": number}, tag)
