"""The reboot is followed through usbmuxd's Listen: Listen first reports every phone already
attached, one Attached at a time, so a phone not yet reported is not a phone that left."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("pymobiledevice3")

from phonewipe.erase.emulation.profiles import load_profile  # noqa: E402
from phonewipe.erase.emulation.storage import HandsetStorage  # noqa: E402
from phonewipe.protocols.apple_ios.client import IosClient  # noqa: E402
from phonewipe.protocols.apple_ios.emu_device import EmulatedIphone  # noqa: E402
from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd  # noqa: E402
from phonewipe.protocols.apple_ios.profile import load_spec  # noqa: E402


def iphone(tmp: Path, n: int) -> EmulatedIphone:
    p = load_profile("iphone")
    return EmulatedIphone(HandsetStorage.create(tmp / f"phone{n}", p, p.serial(n)), load_spec("iphone"))


@pytest.fixture
def mux() -> EmulatedUsbmuxd:
    m = EmulatedUsbmuxd()
    yield m
    m.stop()


def test_a_phone_listed_after_others_has_not_left(tmp_path: Path, mux: EmulatedUsbmuxd) -> None:
    phones = [iphone(tmp_path, n) for n in range(3)]
    for phone in phones:  # the one followed gets the highest DeviceID: reported last
        mux.attach(phone)
    client = IosClient(mux.tcp_address, phones[-1].udid, tmp_path / "records")
    try:
        assert client.wait_listed(False, timeout=1.0) is None  # it stayed on the bus
        assert client.wait_listed(True, timeout=1.0) is not None
    finally:
        client.close()


def test_the_phone_is_seen_leaving_and_coming_back(tmp_path: Path, mux: EmulatedUsbmuxd) -> None:
    phones = [iphone(tmp_path, n) for n in range(3)]
    for phone in phones:
        mux.attach(phone)
    followed = phones[1]
    unplugged, replugged = threading.Event(), threading.Event()

    def plug(attached: bool) -> None:
        (replugged if attached else unplugged).set()
        followed.plug(attached)
    client = IosClient(mux.tcp_address, followed.udid, tmp_path / "records")
    unplug, replug = threading.Timer(0.3, plug, (False,)), threading.Timer(0.6, plug, (True,))
    try:
        unplug.start()
        replug.start()
        assert client.wait_listed(False, timeout=30.0) is not None
        assert unplugged.is_set()  # not before it left
        assert client.wait_listed(True, timeout=30.0) is not None
        assert replugged.is_set()
    finally:
        unplug.cancel()
        replug.cancel()
        client.close()
