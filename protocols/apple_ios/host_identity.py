"""This computer's pairing identity: one root CA and one host key, made once per plugin and
signing every pair record it makes, as libimobiledevice kept them per host
(~/.config/libimobiledevice: RootCertificate, HostCertificate and their keys).

pymobiledevice3's own `pair()` makes a new 2048-bit root key for every phone: about 50 ms of
CPU each, which with 16 phones at once is the largest part of the host's work. The phone
only checks that the host certificate chains to the root the pair record names, so one root
per host pairs exactly as well. `HostLockdownClient` is pymobiledevice3's usbmux lockdown
client with `pair()` signing with this identity; every other step (ValidatePair,
StartSession, TLS, the Trust prompt) is pymobiledevice3's.
"""
from __future__ import annotations

import plistlib
import socket
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any, Optional

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import Certificate
from pymobiledevice3 import usbmux
from pymobiledevice3.ca import (
    build_device_certificate,
    build_host_certificate,
    build_root_certificate,
    select_hash_algorithm,
    serialize_cert_pem,
    serialize_private_key_pkcs8_pem,
)
from pymobiledevice3.exceptions import PairingError
from pymobiledevice3.lockdown import UsbmuxLockdownClient
from pymobiledevice3.safe_paths import device_file_path
from pymobiledevice3.service_connection import ServiceConnection

ALG = select_hash_algorithm((4, 0, 0))  # SHA-256, as pymobiledevice3 pairs iOS >= 4


@dataclass(frozen=True)
class HostIdentity:
    root_key: RSAPrivateKey
    root: Certificate
    root_key_pem: bytes
    host_pem: bytes
    host_key_pem: bytes

    @classmethod
    def make(cls) -> "HostIdentity":
        root_key, host_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                              for _ in range(2))
        root = build_root_certificate(root_key, ALG)
        return cls(root_key, root, serialize_private_key_pkcs8_pem(root_key),
                   serialize_cert_pem(build_host_certificate(host_key, root, root_key, ALG)),
                   serialize_private_key_pkcs8_pem(host_key))

    def pair_record(self, device_public_key_pem: bytes) -> dict[str, Any]:
        """The certificates of a new pair record for the phone with this public key (the
        caller adds HostID, SystemBUID, WiFiMACAddress): only the device certificate is new."""
        device_key = load_pem_public_key(device_public_key_pem)
        if not isinstance(device_key, RSAPublicKey):
            raise PairingError("the iPhone's DevicePublicKey is not an RSA key")
        device = build_device_certificate(device_key, self.root, self.root_key, ALG)
        return {"DeviceCertificate": serialize_cert_pem(device), "HostCertificate": self.host_pem,
                "RootCertificate": serialize_cert_pem(self.root), "RootPrivateKey": self.root_key_pem}


class HostLockdownClient(UsbmuxLockdownClient):
    """pymobiledevice3's lockdown client over usbmuxd, pairing with `HostIdentity`."""

    def __init__(self, *args: Any, host_identity: HostIdentity | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host_identity = host_identity

    async def pair(self, timeout: Optional[float] = None,
                   private_key: Optional[RSAPrivateKey] = None) -> None:
        """pymobiledevice3's `pair()` (the Pair request, the Trust prompt, the record saved),
        its certificates from this host's identity instead of a new root per phone."""
        if self.host_identity is None:
            return await super().pair(timeout, private_key)
        self.device_public_key = await self.get_value("", "DevicePublicKey")
        if not self.device_public_key:
            await self.service.close()
            raise PairingError("the iPhone did not give its DevicePublicKey")
        record = self.host_identity.pair_record(self.device_public_key) | {
            "HostID": self.host_id, "SystemBUID": self.system_buid,
            "WiFiMACAddress": self.wifi_mac_address}
        reply = await self._request_pair({
            "HostName": socket.gethostname(), "PairRecord": record, "ProtocolVersion": "2",
            "PairingOptions": {"ExtendedPairingErrors": True}}, timeout=timeout)
        record["HostPrivateKey"] = self.host_identity.host_key_pem
        if reply.get("EscrowBag") is not None:
            record["EscrowBag"] = reply["EscrowBag"]
        self.pair_record = record
        await self.save_pair_record()
        self.paired = True

    async def save_pair_record(self) -> None:
        """On disk (pymobiledevice3's folder), and handed to usbmuxd with SavePairRecord at
        this client's address, as the real usbmuxd keeps them."""
        await super().save_pair_record()
        _private(self.pairing_records_cache_folder, self.identifier)
        device = self.service.mux_device
        if self.pair_record is None or device is None:
            return
        async with await usbmux.create_mux(usbmux_address=self.usbmux_address) as mux:
            if isinstance(mux, usbmux.PlistMuxConnection):
                await mux.save_pair_record(self.identifier or device.serial, device.devid,
                                           plistlib.dumps(self.pair_record))

    async def create_service_connection(self, port: int, ssl_context: Optional[SSLContext] = None,
                                        strip_ssl: bool = False) -> ServiceConnection:
        """A connection to one of the phone's ports: ``Connect`` to the device usbmuxd listed
        when lockdownd was reached (a phone that left since is refused: BadDev)."""
        device = self.service.mux_device
        if device is None:
            return await super().create_service_connection(port, ssl_context, strip_ssl)
        return await ServiceConnection.from_socket(
            await device.connect(port, usbmux_address=self.usbmux_address),
            ssl_context=ssl_context, strip_ssl=strip_ssl, mux_device=device)


def _private(folder: Path | None, identifier: str | None) -> None:
    """A pair record holds the keys that open the phone's services to whoever has them
    (RootPrivateKey, HostPrivateKey): this user's alone, folder and file, whatever the umask."""
    if folder is None or identifier is None:
        return
    folder.chmod(0o700)
    record = device_file_path(folder, identifier, ".plist")
    if record.exists():
        record.chmod(0o600)
