"""The reboot is followed through usbmuxd's Listen: Listen first reports every phone already
attached, one Attached at a time, so a phone not yet reported is not a phone that left."""
from __future__ import annotations

import plistlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("pymobiledevice3")

from phonewipe.erase.emulation.profiles import load_profile  # noqa: E402
from phonewipe.erase.emulation.storage import HandsetStorage  # noqa: E402
from phonewipe.protocols.apple_ios.client import IosClient  # noqa: E402
from phonewipe.protocols.apple_ios.emu_device import EmulatedIphone  # noqa: E402
from phonewipe.protocols.apple_ios.emu_usbmuxd import EmulatedUsbmuxd  # noqa: E402
from phonewipe.protocols.apple_ios.profile import load_spec  # noqa: E402
from phonewipe.protocols.apple_ios.wire import build_mux_frame, parse_mux_header  # noqa: E402


def iphone(tmp: Path, n: int) -> EmulatedIphone:
    p = load_profile("iphone")
    return EmulatedIphone(HandsetStorage.create(tmp / f"phone{n}", p, p.serial(n)), load_spec("iphone"))


@pytest.fixture
def mux() -> Iterator[EmulatedUsbmuxd]:
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


def listen(address: str) -> socket.socket:
    host, port = address.split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(build_mux_frame({"MessageType": "Listen"}, 1))
    header = parse_mux_header(s.recv(16, socket.MSG_WAITALL))
    assert plistlib.loads(s.recv(header.body_length(), socket.MSG_WAITALL))["Number"] == 0
    return s


def test_a_listener_that_hangs_up_is_dropped_with_no_event_to_send(mux: EmulatedUsbmuxd) -> None:
    listen(mux.tcp_address).close()
    deadline = time.monotonic() + 10
    while mux._listeners and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mux._listeners  # its thread saw the hang-up, not a later event


def test_stopping_usbmuxd_ends_its_listeners(tmp_path: Path) -> None:
    m = EmulatedUsbmuxd()
    s = listen(m.tcp_address)
    m.stop()
    assert s.recv(1) == b""  # the connection closed (the socket's timeout would raise)
    s.close()
