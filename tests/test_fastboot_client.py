"""Our fastboot client and the Debian `fastboot` binary against the emulated bootloader,
over loopback TCP and over the emulated USB bus (the same pyusb code path as a real phone)."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_binary

from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.emulation.usbbus import EmulatedUsbBus
from phonewipe.erase.errors import DeviceGone, DeviceNotFound, PhonewipeError, ProtocolError
from phonewipe.erase.pattern import pattern_bytes
from phonewipe.protocols.fastboot import sparse
from phonewipe.protocols.fastboot.client import FastbootClient, FastbootFailed
from phonewipe.protocols.fastboot.emulator import EmulatedBootloader
from phonewipe.protocols.fastboot.transport_tcp import TcpTransport
from phonewipe.protocols.fastboot.transport_usb import UsbTransport, find_devices
from phonewipe.protocols.fastboot.wire import FastbootTimeout

MIB = 1024 * 1024


def make_storage(tmp_path: Path, profile: str = "bootloader-unlocked", **locks) -> HandsetStorage:
    p = load_profile(profile)
    p = replace(p, locks=replace(p.locks, **locks))
    return HandsetStorage.create(tmp_path / "handset", p, "FBTEST01")


@pytest.fixture
def bootloader(tmp_path: Path):
    made: list[EmulatedBootloader] = []

    def start(quirks=None, max_download: int = 4 * MIB, **locks) -> EmulatedBootloader:
        storage = make_storage(tmp_path, **locks)
        emu = EmulatedBootloader(storage, EmulatedUsbBus(), max_download, quirks)
        made.append(emu)
        return emu

    yield start
    for emu in made:
        emu.stop()
        emu.device.storage.close()


def connect(emu: EmulatedBootloader, how: str, timeout: float = 5.0) -> FastbootClient:
    if how == "tcp":
        return FastbootClient(TcpTransport(emu.address, timeout), timeout)
    backend = emu.bus.backend()
    (device,) = list(find_devices(backend))
    return FastbootClient(UsbTransport(device, backend, timeout), timeout)


TRANSPORTS = pytest.mark.parametrize("how", ["tcp", "usb"])


def fastboot(emu: EmulatedBootloader, *args: str) -> subprocess.CompletedProcess:
    binary = require_binary("fastboot")
    return subprocess.run([binary, "-s", emu.address, *args], capture_output=True, text=True,
                          timeout=60)


# -- interop: the Debian fastboot binary ------------------------------------------------
@pytest.mark.interop
def test_debian_fastboot_getvar_all(bootloader) -> None:
    emu = bootloader()
    result = fastboot(emu, "getvar", "all")
    assert result.returncode == 0, result.stderr
    assert "(bootloader) product: bluejay" in result.stderr
    assert "(bootloader) serialno: FBTEST01" in result.stderr
    assert f"(bootloader) partition-size:userdata: 0x{32 * MIB:x}" in result.stderr


@pytest.mark.interop
def test_debian_fastboot_erase_userdata(bootloader) -> None:
    emu = bootloader()
    storage = emu.device.storage
    image = storage.directory / "userdata.img"
    assert any(m in image.read_bytes() for m in planted_markers())
    result = fastboot(emu, "erase", "userdata")
    assert result.returncode == 0, result.stderr
    data = image.read_bytes()
    assert not any(m in data for m in planted_markers()) and not data.strip(b"\0")


@pytest.mark.interop
@pytest.mark.parametrize("extra", [[], ["-S", "256K"]], ids=["raw", "sparse"])
def test_debian_fastboot_flash(bootloader, tmp_path: Path, extra: list[str]) -> None:
    emu = bootloader()
    payload = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "small.img").write_bytes(payload)
    result = fastboot(emu, *extra, "flash", "userdata", str(tmp_path / "small.img"))
    assert result.returncode == 0, result.stderr
    if extra:
        assert "sparse" in result.stderr  # the binary split it into sparse images
    assert emu.device.storage.read(0, len(payload)) == payload


@pytest.mark.interop
def test_debian_fastboot_is_refused_by_a_locked_bootloader(bootloader) -> None:
    emu = bootloader(bootloader_locked=True)
    result = fastboot(emu, "erase", "userdata")
    assert result.returncode != 0 and "not allowed in Lock State" in result.stderr


# -- our client, over both transports --------------------------------------------------
@TRANSPORTS
def test_getvar_all_and_single_variables(bootloader, how: str) -> None:
    client = connect(bootloader(), how)
    variables = client.getvar_all()
    assert variables["product"] == "bluejay" and variables["unlocked"] == "yes"
    assert int(variables["partition-size:userdata"], 0) == 32 * MIB
    assert client.getvar("serialno") == "FBTEST01"
    assert client.max_download_size() == 4 * MIB
    with pytest.raises(FastbootFailed, match="Variable Not found"):
        client.getvar("no-such-variable")


@TRANSPORTS
def test_erase_userdata(bootloader, how: str) -> None:
    emu = bootloader()
    connect(emu, how).erase("userdata")
    data = (emu.device.storage.directory / "userdata.img").read_bytes()
    assert not data.strip(b"\0")


@TRANSPORTS
def test_flash_small_image(bootloader, how: str) -> None:
    emu = bootloader()
    payload = b"phonewipe" * 1000
    connect(emu, how).flash("misc", payload)
    assert emu.device.storage.read_partition("misc", 0, len(payload)) == payload


@TRANSPORTS
def test_image_larger_than_max_download_goes_as_sparse_pieces(bootloader, how: str) -> None:
    emu = bootloader()
    size = emu.device.storage.size
    key = b"k" * 32

    def fill(off: int, n: int) -> bytes:
        return pattern_bytes(key, off, n)

    seen = []
    downloads = connect(emu, how).flash_stream("userdata", size, fill,
                                               lambda done, total: seen.append(done))
    assert downloads == len(sparse.plan_pieces(size, 4 * MIB)) > 1
    for offset in (0, 4 * MIB - 40, 5 * MIB - 1, size - 7):
        assert emu.device.storage.read(offset, 7) == fill(offset, 7)
    assert seen == sorted(seen) and seen[-1] == size


@TRANSPORTS
def test_reboot_bootloader_reattaches(bootloader, how: str) -> None:
    emu = bootloader()
    client = connect(emu, how)
    before = client.transport.address
    client.reboot_bootloader()
    assert client.getvar("product") == "bluejay"
    assert client.transport.address == before  # same port path, new enumeration
    assert emu.device.boots == 1


def test_usb_descriptors_are_those_of_a_fastboot_phone(bootloader) -> None:
    emu = bootloader()
    (device,) = list(find_devices(emu.bus.backend()))
    assert (device.idVendor, device.idProduct) == (0x18D1, 0x4EE0)
    assert device.serial_number == "FBTEST01"
    intf = device.get_active_configuration()[(0, 0)]
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (0xFF, 0x42, 0x03)
    assert sorted(e.bEndpointAddress for e in intf) == [0x01, 0x81]


def test_zero_length_packet_after_a_full_packet_reply_is_skipped(bootloader) -> None:
    emu = bootloader(quirks={"getvar:product": b"OKAY" + b"x" * 508})  # 512: one full packet
    client = connect(emu, "usb")
    with pytest.raises(ProtocolError, match="oversized"):
        client.getvar("product")
    emu2 = bootloader(quirks={"getvar:product": b"OKAY" + b"y" * 60})
    emu2.gadget.max_packet = 64  # full speed: a 64-byte reply is followed by a ZLP
    client2 = connect(emu2, "usb")
    assert client2.getvar("product") == "y" * 60
    assert client2.getvar("serialno") == "FBTEST01"  # the ZLP did not shift the replies


def test_device_absent_in_another_mode(bootloader) -> None:
    emu = bootloader()
    emu.device.storage.state.mode = "adb"
    assert list(find_devices(emu.bus.backend())) == []
    with pytest.raises(DeviceNotFound):
        TcpTransport(emu.address, 2)


# -- failures: one clear line each -----------------------------------------------------
@TRANSPORTS
def test_locked_bootloader_refuses_erase_and_flash(bootloader, how: str) -> None:
    emu = bootloader(bootloader_locked=True)
    before = (emu.device.storage.directory / "userdata.img").read_bytes()
    client = connect(emu, how)
    with pytest.raises(FastbootFailed, match="not allowed in Lock State"):
        client.erase("userdata")
    with pytest.raises(FastbootFailed, match="not allowed in Lock State"):
        client.flash("userdata", b"\1" * 4096)
    assert (emu.device.storage.directory / "userdata.img").read_bytes() == before


@TRANSPORTS
@pytest.mark.parametrize("reply,error,match", [
    (b"BOGUS reply", ProtocolError, "malformed reply"),
    (b"OKAY" + b"z" * 300, ProtocolError, "oversized reply"),
    (None, FastbootTimeout, "did not answer"),
], ids=["malformed", "oversized", "silent"])
def test_bad_replies_are_one_line_errors(bootloader, how, reply, error, match) -> None:
    emu = bootloader(quirks={"getvar:product": reply})
    client = connect(emu, how, timeout=0.3)
    with pytest.raises(error, match=match) as info:
        client.getvar("product")
    assert "\n" not in info.value.line() and info.value.advice


@TRANSPORTS
def test_device_unplugged_mid_download(bootloader, how: str) -> None:
    emu = bootloader()
    client = connect(emu, how, timeout=10)

    def pull_cable(done: int, total: int) -> None:
        if done >= total // 2:
            emu.unplug()

    with pytest.raises(DeviceGone, match=r"download of misc: \d+ of 4194304 bytes sent") as info:
        client.download(4 * MIB, [bytes(MIB)] * 4, pull_cable, "misc")
    assert isinstance(info.value, PhonewipeError) and "\n" not in info.value.line()
