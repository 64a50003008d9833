"""This computer pairs every iPhone with one identity (one root CA and host key, as
libimobiledevice kept them per host): each phone gets its own device certificate, signed by
that root for that phone's key, the record is kept on disk and in usbmuxd, and a phone
already paired is not paired again."""
from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

pytest.importorskip("pymobiledevice3")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey  # noqa: E402

from phonewipe.erase.emulation.profiles import load_profile  # noqa: E402
from phonewipe.erase.emulation.storage import HandsetStorage  # noqa: E402
from phonewipe.protocols.apple_ios.client import IosClient  # noqa: E402
from phonewipe.protocols.apple_ios.emu_device import EmulatedIphone  # noqa: E402
from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd  # noqa: E402
from phonewipe.protocols.apple_ios.host_identity import HostIdentity  # noqa: E402
from phonewipe.protocols.apple_ios.profile import load_spec  # noqa: E402


def iphone(tmp: Path, n: int) -> EmulatedIphone:
    p = load_profile("iphone")
    return EmulatedIphone(HandsetStorage.create(tmp / f"phone{n}", p, p.serial(n)), load_spec("iphone"))


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    assert isinstance(key, RSAPublicKey) and cert.signature_hash_algorithm is not None
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm)
    except Exception:  # noqa: BLE001 - cryptography's InvalidSignature
        return False
    return True


def test_one_host_identity_pairs_each_phone_for_its_own_key(tmp_path: Path) -> None:
    mux = EmulatedUsbmuxd()
    phones = [iphone(tmp_path, n) for n in range(2)]
    for phone in phones:
        mux.attach(phone)
    identity = HostIdentity.make()
    records = []
    try:
        for phone in phones:
            client = IosClient(mux.tcp_address, phone.udid, tmp_path / "records", identity)
            try:
                lockdown = client.open(autopair=True, pair_timeout=0)
                assert lockdown.paired  # Pair accepted, StartSession and TLS with it
                assert lockdown.all_values["SerialNumber"] == phone.serial
                assert lockdown.pair_record is not None
                records.append(lockdown.pair_record)
            finally:
                client.close()
            assert plistlib.loads(mux.pair_records[phone.udid]) == records[-1]  # SavePairRecord
    finally:
        mux.stop()
    a, b = records
    assert a["RootCertificate"] == b["RootCertificate"] and a["HostCertificate"] == b["HostCertificate"]
    root = x509.load_pem_x509_certificate(a["RootCertificate"])
    for record, phone in zip(records, phones, strict=True):
        device = x509.load_pem_x509_certificate(record["DeviceCertificate"])
        assert device.public_key().public_numbers() == phone.key.public_key().public_numbers()  # type: ignore[union-attr]
        assert signed_by(device, root)
        assert signed_by(x509.load_pem_x509_certificate(record["HostCertificate"]), root)
    assert a["DeviceCertificate"] != b["DeviceCertificate"]
    # the records hold private keys: this user's alone, whatever the umask
    assert (tmp_path / "records").stat().st_mode & 0o777 == 0o700
    on_disk = sorted((tmp_path / "records").glob("*.plist"))
    assert len(on_disk) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in on_disk)


def test_a_paired_phone_is_reached_with_its_stored_record_not_paired_again(tmp_path: Path) -> None:
    mux = EmulatedUsbmuxd()
    phone = iphone(tmp_path, 0)
    mux.attach(phone)
    identity = HostIdentity.make()
    try:
        first = IosClient(mux.tcp_address, phone.udid, tmp_path / "records", identity)
        try:
            record = first.open(autopair=True, pair_timeout=0).pair_record
        finally:
            first.close()
        [bag] = [p.escrow_bag for p in phone.pairings.values()]
        again = IosClient(mux.tcp_address, phone.udid, tmp_path / "records", HostIdentity.make())
        try:
            lockdown = again.open(autopair=True, pair_timeout=0)
            assert lockdown.paired and lockdown.pair_record == record
        finally:
            again.close()
    finally:
        mux.stop()
    assert [p.escrow_bag for p in phone.pairings.values()] == [bag]  # no second Pair
