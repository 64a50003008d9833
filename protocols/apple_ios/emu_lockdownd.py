"""lockdownd and the MCInstall service of an emulated iPhone, on a connection usbmuxd
handed over (``Connect`` to a device port): plist frames, TLS after ``StartSession`` with
the certificate the host made at pairing, services on the ports ``StartService`` names."""
from __future__ import annotations

import socket
import ssl
import uuid
from typing import Any

from .emu_device import EmulatedIphone, LockdownRefusal, Pairing
from .wire import WireError, build_frame, parse_frame_length, parse_lockdown_request, parse_plist

MC_INSTALL = "com.apple.mobile.MCInstall"


class Closed(Exception):
    """The peer hung up (or the phone went away)."""


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except (OSError, ssl.SSLError) as exc:
            raise Closed() from exc
        if not chunk:
            raise Closed()
        data += chunk
    return bytes(data)


def recv_frame(sock: socket.socket) -> bytes:
    return recv_exactly(sock, parse_frame_length(recv_exactly(sock, 4)))


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.sendall(build_frame(message))
    except (OSError, ssl.SSLError) as exc:
        raise Closed() from exc


def serve(device: EmulatedIphone, port: int, sock: socket.socket) -> None:
    """Serve one connection to ``port`` until the host or the phone ends it."""
    service = device.service_at(port)
    if service is None:
        return
    handler = Lockdownd(device, sock) if service == "lockdownd" else McInstall(device, sock)
    device.track(handler, True)
    try:
        handler.run()
    except (Closed, WireError, ssl.SSLError, OSError):
        pass  # a malformed frame or a hang-up ends the connection, as on a phone
    finally:
        device.track(handler, False)


class Lockdownd:
    def __init__(self, device: EmulatedIphone, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.pairing: Pairing | None = None
        self.session: str | None = None

    def run(self) -> None:
        while True:
            request, message = parse_lockdown_request(recv_frame(self.sock))
            reply: dict[str, Any] = {"Request": request}
            try:
                reply.update(self.handle(request, message))
            except LockdownRefusal as refusal:
                reply["Error"] = refusal.error
            send_frame(self.sock, reply)
            if request == "StartSession" and "Error" not in reply:
                assert self.pairing is not None
                self.sock = self.device.tls_context(self.pairing).wrap_socket(
                    self.sock, server_side=True)
            elif request == "StopSession" and isinstance(self.sock, ssl.SSLSocket):
                self.sock = self.sock.unwrap()
                self.session = None
            elif request == "Goodbye":
                return

    def handle(self, request: str, message: dict[str, Any]) -> dict[str, Any]:
        device = self.device
        if request == "QueryType":
            return {"Type": "com.apple.mobile.lockdown"}
        if request == "GetValue":
            domain, key = message.get("Domain"), message.get("Key")
            value = device.get_value(domain if isinstance(domain, str) else None,
                                     key if isinstance(key, str) else None, self.session is not None)
            return {k: v for k, v in (("Domain", domain), ("Key", key)) if v} | {"Value": value}
        if request in ("Pair", "ValidatePair", "Unpair"):
            record = message.get("PairRecord")
            if not isinstance(record, dict):
                raise LockdownRefusal("InvalidPairRecord")
            if request == "Pair":
                return {"EscrowBag": device.pair(record)}
            if request == "Unpair":
                device.unpair(record.get("HostID"))
                return {}
            device.pairing(record.get("HostID"))
            return {}
        if request == "StartSession":
            if self.session is not None:
                raise LockdownRefusal("SessionActive")
            self.pairing = device.pairing(message.get("HostID"))
            self.session = str(uuid.uuid4()).upper()
            return {"SessionID": self.session, "EnableSessionSSL": True}
        if request == "StopSession":
            return {}
        if request == "StartService":
            if self.session is None:
                raise LockdownRefusal("NoRunningSession")
            name = message.get("Service")
            port = device.start_service(name if isinstance(name, str) else "")
            return {"Service": name, "Port": port, "EnableServiceSSL": True}
        if request in ("SetValue", "RemoveValue"):
            raise LockdownRefusal("SetProhibited" if request == "SetValue" else "RemoveProhibited")
        if request == "Goodbye":
            return {}
        raise LockdownRefusal("InvalidRequest")


class McInstall:
    """``com.apple.mobile.MCInstall``: TLS from the first byte; profiles, the cloud
    configuration (supervision) and EraseDevice."""

    def __init__(self, device: EmulatedIphone, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock

    def run(self) -> None:
        pairing = next(iter(self.device.pairings.values()), None)
        if pairing is None:
            return
        self.sock = self.device.tls_context(pairing).wrap_socket(self.sock, server_side=True)
        while True:
            message = parse_plist(recv_frame(self.sock), "MCInstall request")
            kind = message.get("RequestType")
            send_frame(self.sock, self.handle(kind))
            if kind == "EraseDevice":
                self.device.erase_requested()
                return

    def handle(self, kind: Any) -> dict[str, Any]:
        device = self.device
        ok: dict[str, Any] = {"Status": "Acknowledged"}
        if kind in ("HelloHostIdentifier", "Flush", "EraseDevice"):
            return ok
        if kind == "GetCloudConfiguration":
            config = {"IsSupervised": True, "OrganizationName": device.spec.organization,
                      "IsMDMUnremovable": True, "IsMandatory": True} if device.supervised else {}
            return ok | {"CloudConfiguration": config}
        if kind == "GetProfileList":
            ids = list(device.mdm_profiles)
            return ok | {"OrderedIdentifiers": ids,
                         "ProfileMetadata": {i: {"PayloadDisplayName": "MDM Profile",
                                                 "PayloadOrganization": device.spec.organization,
                                                 "PayloadRemovalDisallowed": True} for i in ids},
                         "ProfileManifest": {i: {"Description": "MDM", "IsActive": True}
                                             for i in ids}}
        return {"Status": "Error", "ErrorChain": [{"ErrorCode": 1, "ErrorDomain": "MCInstallationErrorDomain",
                                                    "LocalizedDescription": f"unsupported {kind!r}"}]}
