"""An emulated ACME handset: the service link (acme_phone.wire) over loopback TCP, served
from phonewipe's emulated storage (`phonewipe.erase.emulation.storage.HandsetStorage`).

Writes go through the handset's kernel (``storage.write(..., cached=True)``): its cache keeps
what the flash drops, and buffered reads are answered from it until FLUSHCACHE. Fault
injection (lying, partial, unplug, unreadable, hidden area) comes with the storage, from the
profile, as for phonewipe's own emulators.

Standalone: ``python -m acme_phone.emulator PROFILE.toml --dir DIR`` prints the port.
"""
from __future__ import annotations

import json
import socketserver
import threading
from pathlib import Path

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.storage import HandsetStorage

from .wire import MAX_LINE, MAX_PAYLOAD


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        storage = self.server.storage
        while not storage.faults.unplugged:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            try:
                reply, payload = self.answer(storage, line.decode("ascii", "replace").split())
            except DeviceUnplugged:
                return  # the cable is out: the link just ends
            self.wfile.write(reply.encode("ascii") + b"\n" + payload)
            if reply == "OK" and line.startswith(b"BYE"):
                return

    def answer(self, storage: HandsetStorage, words: list[str]) -> tuple[str, bytes]:
        verb, args = (words[0], words[1:]) if words else ("", [])
        if verb == "IDENTIFY":
            device = storage.profile.device
            return "OK " + json.dumps({
                "vendor": device.manufacturer, "model": device.model,
                "serial": storage.state.serial, "imei": device.imei,
                "storage": device.storage_type, "capacity": storage.size,
                "partition_table": storage.table_size("userdata"), "block": 4096}), b""
        if verb == "STATE":
            state = storage.state
            return "OK " + json.dumps({"accounts": state.google_accounts,
                                       "owner": state.device_owner,
                                       "screen_lock": state.screen_lock}), b""
        if verb in ("WRITE", "READ"):
            try:
                offset, length = int(args[0]), int(args[1])
            except (IndexError, ValueError):
                return f"ERR EINVAL {verb} needs offset and length", b""
            if not 0 < length <= MAX_PAYLOAD or offset < 0 or offset + length > storage.size:
                if verb == "WRITE" and 0 < length <= MAX_PAYLOAD:
                    self.rfile.read(length)  # keep the link in step
                return "ERR EINVAL out of range", b""
            if verb == "WRITE":
                data = self.rfile.read(length)
                if len(data) != length:
                    raise DeviceUnplugged("the host went away mid-write")
                storage.write(offset, data, cached=True)
                return f"OK {length}", b""
            try:
                data = storage.read(offset, length, cached=True)
            except OSError:
                return "ERR EIO unreadable sector", b""
            return f"OK {len(data)}", data
        if verb == "FLUSHCACHE":
            access = storage.profile.access
            if not (access.flushbufs or access.drop_caches):
                return "ERR EPERM the cache cannot be flushed on this firmware", b""
            storage.drop_caches()
            return "OK dropped", b""
        if verb == "RESET":
            storage.userdata_wiped()
            return "OK", b""
        if verb == "BYE":
            return "OK", b""
        return f"ERR EBADCMD {verb[:20]}", b""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, storage: HandsetStorage) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.storage = storage


class AcmeEmulator:
    """One ACME handset serving on a loopback port until `stop`."""

    def __init__(self, storage: HandsetStorage) -> None:
        self.storage = storage
        self._server = _Server(storage)
        self.port: int = self._server.server_address[1]
        self.endpoints = {"acme": f"tcp:127.0.0.1:{self.port}"}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"acme-{self.port}")

    def start(self) -> "AcmeEmulator":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from phonewipe.erase.emulation.profiles import load_profile

    parser = argparse.ArgumentParser(description="serve an emulated ACME handset")
    parser.add_argument("profile", help="a profile .toml (acme_phone/profiles/*.toml)")
    parser.add_argument("--dir", type=Path, required=True, help="where its storage goes")
    args = parser.parse_args(argv)
    profile = load_profile(str(Path(args.profile).resolve()))
    storage = HandsetStorage.create(args.dir, profile, profile.serial())
    emulator = AcmeEmulator(storage).start()
    print(json.dumps({"serial": storage.state.serial, "port": emulator.port}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        storage.close()


if __name__ == "__main__":
    main()
