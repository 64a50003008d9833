"""The emulated iPhone speaks the real protocols: pymobiledevice3's own client code (usbmux,
lockdown, pairing, TLS, MCInstall) runs against it unchanged, over a UNIX socket and over
loopback TCP; usbmuxd's Listen reports a reboot as Detached then Attached."""
from __future__ import annotations

import asyncio
import plistlib
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("pymobiledevice3")

from pymobiledevice3 import usbmux  # noqa: E402
from pymobiledevice3.exceptions import PairingDialogResponsePendingError  # noqa: E402
from pymobiledevice3.lockdown import UsbmuxLockdownClient  # noqa: E402
from pymobiledevice3.service_connection import ServiceConnection  # noqa: E402
from pymobiledevice3.services.mobile_config import MobileConfigService  # noqa: E402

from phonewipe.erase.emulation.profiles import load_profile  # noqa: E402
from phonewipe.erase.emulation.storage import HandsetStorage  # noqa: E402
from phonewipe.protocols.apple_ios.emu_device import EmulatedIphone  # noqa: E402
from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd  # noqa: E402
from phonewipe.protocols.apple_ios.profile import load_spec  # noqa: E402
from phonewipe.protocols.apple_ios.wire import build_mux_frame, parse_mux_header  # noqa: E402


def iphone(tmp: Path, profile: str = "iphone") -> EmulatedIphone:
    p = load_profile(profile)
    return EmulatedIphone(HandsetStorage.create(tmp / profile, p, p.serial(0)), load_spec(profile))


@pytest.fixture(params=["unix", "tcp"])
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EmulatedUsbmuxd, str]]:
    unix = request.param == "unix"
    mux = EmulatedUsbmuxd(unix_path=tmp_path / "usbmuxd" if unix else None, tcp=not unix)
    yield mux, (str(tmp_path / "usbmuxd") if unix else mux.tcp_address)
    mux.stop()


async def lockdown(address: str, udid: str, tmp: Path, **kw: Any) -> UsbmuxLockdownClient:
    service = await ServiceConnection.create_using_usbmux(udid, 62078, usbmux_address=address)
    return await UsbmuxLockdownClient.create(service, identifier=udid, pair_timeout=0,
                                             pairing_records_cache_folder=tmp / "records",
                                             usbmux_address=address, **kw)


def test_pymobiledevice3_lists_pairs_reads_and_asks_mcinstall(bench: tuple[EmulatedUsbmuxd, str],
                                                             tmp_path: Path) -> None:
    mux, address = bench
    phone = iphone(tmp_path)
    mux.attach(phone)

    async def run() -> None:
        [listed] = await usbmux.list_devices(usbmux_address=address)
        assert listed.serial == phone.udid and listed.connection_type == "USB"
        client = await lockdown(address, phone.udid, tmp_path)
        try:
            assert client.paired  # Pair (the owner tapped Trust), StartSession, TLS
            assert client.all_values["SerialNumber"] == phone.serial
            assert client.all_values["InternationalMobileEquipmentIdentity"] == phone.imeis[0]
            assert client.display_name == "iPhone 13 Pro"
            usage = await client.get_value("com.apple.disk_usage")
            assert usage["TotalDiskCapacity"] == phone.storage.size
            assert await client.get_value("com.apple.fmip", "IsAssociated") is False
            async with MobileConfigService(client) as mc:
                assert await mc.get_cloud_configuration() == {}
        finally:
            await client.close()
    asyncio.run(run())
    assert len(phone.pairings) == 1


def test_untrusted_phone_keeps_the_prompt_pending_and_tells_only_basics(tmp_path: Path) -> None:
    mux = EmulatedUsbmuxd()
    phone = iphone(tmp_path, "iphone-untrusted")
    mux.attach(phone)

    async def run() -> None:
        with pytest.raises(PairingDialogResponsePendingError):
            await lockdown(mux.tcp_address, phone.udid, tmp_path)
        client = await lockdown(mux.tcp_address, phone.udid, tmp_path, autopair=False)
        assert not client.paired and "SerialNumber" not in client.all_values
        assert client.all_values["ProductType"] == "iPhone14,2"
        await client.close()
    try:
        asyncio.run(run())
    finally:
        mux.stop()
    assert phone.pairings == {}


def raw_mux(address: str, message: dict[str, Any], tag: int = 7) -> tuple[int, dict[str, Any]]:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(build_mux_frame(message, tag))
        header = parse_mux_header(s.recv(16, socket.MSG_WAITALL))
        return header.tag, plistlib.loads(s.recv(header.body_length(), socket.MSG_WAITALL))


def test_usbmuxd_pair_records_buid_and_refusals(tmp_path: Path) -> None:
    mux = EmulatedUsbmuxd()
    phone = iphone(tmp_path)
    mux.attach(phone)
    try:
        a = mux.tcp_address
        assert raw_mux(a, {"MessageType": "ReadPairRecord", "PairRecordID": phone.udid}) == \
            (7, {"MessageType": "Result", "Number": 2})
        assert raw_mux(a, {"MessageType": "SavePairRecord", "PairRecordID": phone.udid,
                           "PairRecordData": b"<plist/>", "DeviceID": 1})[1]["Number"] == 0
        assert raw_mux(a, {"MessageType": "ReadPairRecord", "PairRecordID": phone.udid})[1] == \
            {"PairRecordData": b"<plist/>"}
        assert raw_mux(a, {"MessageType": "ReadBUID"})[1] == {"BUID": mux.buid}
        assert raw_mux(a, {"MessageType": "Connect", "DeviceID": 1,
                           "PortNumber": socket.htons(1234)})[1]["Number"] == 3  # refused port
        assert raw_mux(a, {"MessageType": "Connect", "DeviceID": 99,
                           "PortNumber": socket.htons(62078)})[1]["Number"] == 2  # no such phone
        assert raw_mux(a, {"MessageType": "Frobnicate"})[1]["Number"] == 1
    finally:
        mux.stop()


def test_listen_sees_the_erase_reboot_as_detached_then_attached(tmp_path: Path) -> None:
    mux = EmulatedUsbmuxd()
    phone = iphone(tmp_path)
    mux.attach(phone)

    async def run() -> list[str]:
        conn = await usbmux.create_mux(usbmux_address=mux.tcp_address)
        assert isinstance(conn, usbmux.PlistMuxConnection)
        await conn.listen()
        seen = []
        phone.erase_requested()
        for _ in range(3):  # the phone as listed, it leaves, it comes back (a new device id)
            response = await asyncio.wait_for(conn._receive(), 10)
            seen.append(f"{response['MessageType']}:{response['DeviceID']}")
        await conn.close()
        return seen
    try:
        assert asyncio.run(run()) == ["Attached:1", "Detached:1", "Attached:2"]
    finally:
        mux.stop()
    assert phone.activated is False and phone.pairings == {} and phone.storage.state.resets == 1


@pytest.mark.parametrize("spelling", ["UNIX:{path}", "{path}"])
def test_the_plugin_finds_phones_at_usbmuxd_socket_address_as_libusbmuxd_spells_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    from phonewipe.erase.plugin import PluginOptions
    from phonewipe.protocols.apple_ios import IosPlugin
    mux = EmulatedUsbmuxd(unix_path=tmp_path / "usbmuxd", tcp=False)
    phone = iphone(tmp_path)
    mux.attach(phone)
    monkeypatch.setenv("USBMUXD_SOCKET_ADDRESS", spelling.format(path=tmp_path / "usbmuxd"))
    try:
        assert [e.address for e in IosPlugin(PluginOptions()).discover()] == [phone.udid]
    finally:
        mux.stop()


def test_a_bad_usbmux_address_is_one_line_before_anything_is_touched() -> None:
    from phonewipe.erase.errors import ConfigError
    from phonewipe.erase.plugin import PluginOptions
    from phonewipe.protocols.apple_ios import IosPlugin
    for bad in ("nonsense", "host:port", "127.0.0.1:70000"):
        with pytest.raises(ConfigError) as caught:
            IosPlugin(PluginOptions({"ios_usbmux": bad}))
        assert "\n" not in caught.value.line() and "UNIX:/path" in caught.value.line()
    for good in ("127.0.0.1:27015", "UNIX:/var/run/usbmuxd", "/var/run/usbmuxd", ""):
        IosPlugin(PluginOptions({"ios_usbmux": good}))
