"""An emulated iPhone: what lockdownd knows and does, on the core's emulated storage.

Its state: the values lockdownd reports, the hosts it trusts (pairings), its RSA identity
(`DevicePublicKey`, renewed by an erase), Activation, Find My, supervision. The erase
(MCInstall ``EraseDevice``) takes it off the bus, destroys the storage key (the core's
`HandsetStorage.factory_reset`: what the medium keeps is ciphertext under a lost key) and
brings it back at the setup assistant, unactivated, trusting nobody — unless its profile
makes it lie (``erase = "lies"``: acks, reboots, changes nothing) or never return.
"""
from __future__ import annotations

import hashlib
import secrets
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning

from phonewipe.erase.emulation.storage import HandsetStorage

from .profile import IosSpec

LOCKDOWN_PORT = 62078
BASIC_KEYS = ("ActivationState", "BuildVersion", "DeviceClass", "DeviceName", "DevicePublicKey",
              "HardwareModel", "ProductName", "ProductType", "ProductVersion", "UniqueChipID",
              "UniqueDeviceID", "PasswordProtected", "WiFiAddress")  # answered without a session
SERVICES = ("com.apple.mobile.MCInstall",)


class LockdownRefusal(Exception):
    """An ``Error`` lockdownd answers with (``PasswordProtected``, ``InvalidHostID``...)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class Pairing:
    host_id: str
    system_buid: str
    device_certificate: bytes  # PEM, the host made it for this device's public key
    escrow_bag: bytes


def new_identity() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class EmulatedIphone:
    """One iPhone. ``plug(attached)`` is how it tells its usbmuxd it left or came back."""

    def __init__(self, storage: HandsetStorage, spec: IosSpec) -> None:
        self.storage = storage
        self.spec = spec
        self.serial = storage.state.serial
        self.udid = spec.udid(self.serial)
        self.imeis = tuple(storage.state.imeis)
        self._lock = threading.Lock()
        self.key = new_identity()
        self.pairings: dict[str, Pairing] = {}
        self._tls: dict[bytes, ssl.SSLContext] = {}  # device certificate -> lockdownd's TLS
        self._tls_lock = threading.Lock()
        self.activated = spec.activated
        self.setup_done = spec.activated
        self.passcode_locked = spec.passcode_locked
        self.find_my = spec.find_my
        self.supervised = spec.supervised
        self.mdm_profiles = list(spec.mdm_profiles)
        self.erases = 0
        self.plug: Callable[[bool], None] = lambda attached: None
        self.online = True
        self._connections: set[Any] = set()  # handlers, each with its .sock
        self._ports: dict[int, str] = {}
        self._next_port = 49152
        self.pem_dir = Path(storage.directory) / "lockdown"

    # -- what lockdownd reports --------------------------------------------------------------
    def public_key_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.PKCS1)

    def values(self) -> dict[str, Any]:
        spec = self.spec
        values: dict[str, Any] = {
            "ActivationState": "Activated" if self.activated else "Unactivated",
            "BuildVersion": spec.build_version, "CPUArchitecture": "arm64e",
            "DeviceClass": "iPad" if spec.product_type.startswith("iPad") else "iPhone",
            "DeviceName": spec.device_name, "DevicePublicKey": self.public_key_pem(),
            "HardwareModel": spec.hardware_model, "ProductName": "iPhone OS",
            "ProductType": spec.product_type, "ProductVersion": spec.ios_version,
            "ProtocolVersion": "2", "SerialNumber": self.serial,
            "UniqueChipID": int(self.udid.split("-")[1], 16), "ChipID": spec.chip_id,
            "UniqueDeviceID": self.udid, "PasswordProtected": self.passcode_locked,
            "TelephonyCapability": bool(self.imeis), "TrustedHostAttached": True,
            "WiFiAddress": ":".join(self.udid.replace("-", "").lower()[i:i + 2] for i in range(8, 20, 2)),
        }
        for i, imei in enumerate(self.imeis):
            values["InternationalMobileEquipmentIdentity" + (str(i + 1) if i else "")] = imei
        if self.imeis:
            values["MobileEquipmentIdentifier"] = self.imeis[0][:14]
        return values

    def domain(self, name: str) -> dict[str, Any] | None:
        size = self.storage.size
        if name == "com.apple.disk_usage":
            return {"TotalDiskCapacity": size, "TotalDataCapacity": size,
                    "TotalSystemCapacity": 0, "TotalDataAvailable": size // 2}
        if name == "com.apple.fmip":
            return {"IsAssociated": self.find_my}
        if name == "com.apple.purplebuddy":
            return {"SetupDone": self.setup_done}
        return None

    def get_value(self, domain: str | None, key: str | None, in_session: bool) -> Any:
        if domain:
            if not in_session:
                raise LockdownRefusal("GetProhibited")
            table = self.domain(domain)
        else:
            table = self.values() if in_session else \
                {k: v for k, v in self.values().items() if k in BASIC_KEYS}
        if table is None:
            raise LockdownRefusal("MissingValue")
        if key is None:
            return table
        if key not in table:
            raise LockdownRefusal("MissingValue" if key in self.values() or domain else "GetProhibited")
        return table[key]

    # -- trust -------------------------------------------------------------------------------
    def pair(self, record: dict[str, Any]) -> bytes:
        """The Trust prompt: the host's pair record accepted (the escrow bag returned), or
        the refusal lockdownd gives."""
        if self.passcode_locked:
            raise LockdownRefusal("PasswordProtected")
        if self.spec.trust == "never":
            raise LockdownRefusal("PairingDialogResponsePending")
        if self.spec.trust == "deny":
            raise LockdownRefusal("UserDeniedPairing")
        host_id, buid, cert = (record.get("HostID"), record.get("SystemBUID"),
                               record.get("DeviceCertificate"))
        if not isinstance(host_id, str) or not isinstance(cert, bytes) or not host_id:
            raise LockdownRefusal("InvalidPairRecord")
        try:
            with warnings.catch_warnings():  # libimobiledevice's certificates carry serial 0
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certified = x509.load_pem_x509_certificate(cert).public_key()
        except ValueError:
            raise LockdownRefusal("InvalidPairRecord") from None
        if certified.public_numbers() != self.key.public_key().public_numbers():  # type: ignore[union-attr]
            raise LockdownRefusal("InvalidPairRecord")  # made for another phone's key
        bag = secrets.token_bytes(32)
        with self._lock:
            self.pairings[host_id] = Pairing(host_id, str(buid or ""), cert, bag)
        return bag

    def pairing(self, host_id: Any) -> Pairing:
        with self._lock:
            found = self.pairings.get(host_id) if isinstance(host_id, str) else None
        if found is None:
            raise LockdownRefusal("InvalidHostID")
        return found

    def unpair(self, host_id: Any) -> None:
        with self._lock:
            self.pairings.pop(host_id, None)

    def tls_context(self, pairing: Pairing) -> ssl.SSLContext:
        """What lockdownd presents in a session's and a service's TLS: the certificate the
        host made for this identity, with the identity's key. Made once per pairing (loading
        the key is most of a handshake's cost), not once per connection."""
        cert = pairing.device_certificate
        with self._tls_lock:  # one thread builds it; the others take it
            with self._lock:
                key, found = self.key, self._tls.get(cert)
            if found is not None:
                return found
            self.pem_dir.mkdir(exist_ok=True)
            path = self.pem_dir / f"{hashlib.sha256(cert).hexdigest()[:16]}-{self.erases}.pem"
            path.write_bytes(cert + b"\n" + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption()))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
            context.load_cert_chain(str(path))
            with self._lock:
                if self.key is key:  # not kept across an erase: the identity it holds is gone
                    self._tls[cert] = context
            return context

    # -- services ------------------------------------------------------------------------------
    def start_service(self, name: str) -> int:
        if name not in SERVICES:
            raise LockdownRefusal("InvalidService")
        if self.passcode_locked:
            raise LockdownRefusal("PasswordProtected")
        with self._lock:
            port, self._next_port = self._next_port, self._next_port + 1
            self._ports[port] = name
        return port

    def service_at_peek(self, port: int) -> str | None:
        with self._lock:
            return "lockdownd" if port == LOCKDOWN_PORT else self._ports.get(port)

    def service_at(self, port: int) -> str | None:
        with self._lock:
            return "lockdownd" if port == LOCKDOWN_PORT else self._ports.pop(port, None)

    def track(self, conn: Any, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    # -- Erase All Content and Settings ------------------------------------------------------
    def erase_requested(self) -> None:
        threading.Thread(target=self._erase_and_reboot, name=f"ios-erase-{self.serial}",
                         daemon=True).start()

    def _erase_and_reboot(self) -> None:
        time.sleep(0.05)  # the acknowledgement leaves before the link drops
        self._go_offline()
        started = time.monotonic()
        if self.spec.erase == "never-returns":
            return  # stuck on the Apple logo
        if self.spec.erase == "honest":  # the work happens within the reboot's time, off the bus
            self.storage.factory_reset()  # the effaceable key is gone: ciphertext remains
            key = new_identity()
            with self._lock:
                self.key = key
                self.pairings.clear()
                self._tls.clear()
                self.activated = self.setup_done = False
                self.passcode_locked = self.supervised = False  # Activation Lock stays
                self.mdm_profiles = []
                self.erases += 1
        elif self.spec.erase == "lies-unactivated":  # shows the Hello screen, erased nothing
            with self._lock:
                self.activated = self.setup_done = False
        time.sleep(max(0.0, self.spec.reboot_s - (time.monotonic() - started)))
        self.online = True
        self.plug(True)

    def _go_offline(self) -> None:
        self.online = False
        self.plug(False)
        with self._lock:
            connections, self._connections = list(self._connections), set()
            self._ports.clear()
        for conn in connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
