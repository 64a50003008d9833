"""Interop with an implementation we did not write: Debian's libimobiledevice
(`idevice_id`, `idevicepair`, `ideviceinfo`, over libusbmuxd with USBMUXD_SOCKET_ADDRESS)
pairs with the emulated iPhone through our usbmuxd — its own certificates, its own TLS —
and prints what lockdownd reports; an untrusted phone makes it say so."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from conftest import require_binary

from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.protocols.apple_ios.emu_device import EmulatedIphone
from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd
from phonewipe.protocols.apple_ios.profile import load_spec

pytestmark = pytest.mark.interop


@pytest.fixture(params=["tcp", "unix"])
def muxed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EmulatedUsbmuxd, dict[str, str]]]:
    unix = request.param == "unix"
    mux = EmulatedUsbmuxd(unix_path=tmp_path / "usbmuxd" if unix else None, tcp=not unix)
    address = f"UNIX:{tmp_path / 'usbmuxd'}" if unix else mux.tcp_address
    env = {**os.environ, "USBMUXD_SOCKET_ADDRESS": address, "HOME": str(tmp_path)}
    yield mux, env
    mux.stop()


def plug(mux: EmulatedUsbmuxd, tmp: Path, profile: str) -> EmulatedIphone:
    p = load_profile(profile)
    phone = EmulatedIphone(HandsetStorage.create(tmp / profile, p, p.serial(0)), load_spec(profile))
    mux.attach(phone)
    return phone


def tool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary(args[0]), *args[1:]], env=env, capture_output=True,
                          text=True, timeout=60)


def test_libimobiledevice_pairs_and_reads_product_serial_activation(
        muxed: tuple[EmulatedUsbmuxd, dict[str, str]], tmp_path: Path) -> None:
    mux, env = muxed
    phone = plug(mux, tmp_path, "iphone")
    assert tool(env, "idevice_id", "-l").stdout.split() == [phone.udid]
    paired = tool(env, "idevicepair", "pair")
    assert paired.returncode == 0 and f"SUCCESS: Paired with device {phone.udid}" in paired.stdout, paired
    assert mux.pair_records[phone.udid]  # SavePairRecord: libimobiledevice keeps it in usbmuxd
    assert len(phone.pairings) == 1  # lockdownd took libimobiledevice's certificates
    assert "SUCCESS" in tool(env, "idevicepair", "validate").stdout
    info = tool(env, "ideviceinfo")  # StartSession, TLS with the pair record, GetValue
    assert info.returncode == 0, info.stderr
    lines = dict(line.split(": ", 1) for line in info.stdout.splitlines() if ": " in line)
    assert lines["ProductType"] == "iPhone14,2"
    assert lines["SerialNumber"] == phone.serial
    assert lines["ActivationState"] == "Activated"
    assert lines["InternationalMobileEquipmentIdentity"] == phone.imeis[0]
    disk = tool(env, "ideviceinfo", "-q", "com.apple.disk_usage", "-k", "TotalDiskCapacity")
    assert disk.stdout.strip() == str(phone.storage.size)


def test_libimobiledevice_is_told_the_untrusted_phone_waits_for_trust(
        muxed: tuple[EmulatedUsbmuxd, dict[str, str]], tmp_path: Path) -> None:
    mux, env = muxed
    phone = plug(mux, tmp_path, "iphone-untrusted")
    paired = tool(env, "idevicepair", "pair")
    assert paired.returncode != 0
    assert "Please accept the trust dialog" in paired.stdout + paired.stderr, paired
    assert phone.pairings == {} and phone.udid not in mux.pair_records
    simple = tool(env, "ideviceinfo", "-s", "-k", "ProductType")  # no session: the basics
    assert simple.stdout.strip() == "iPhone14,2", simple
