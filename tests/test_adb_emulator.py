"""The emulated adbd, driven by the real adb servers (Debian's adb 29 and the adb 36 that
adbutils ships) through adbutils, by raw sockets, and its shell directly."""
from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import adbutils
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from phonewipe.erase.emulation.profiles import PROFILES_DIR, HandsetProfile, load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.ports import free_port
from phonewipe.protocols.adb import shell, shell_syntax, wire
from phonewipe.protocols.adb.emulator import EmulatedAdbd

MIB = 1024 * 1024
REBOOT_DELAY = 0.3
USERDATA = "/dev/block/by-name/userdata"

ADB_BINARIES = {
    "adb-29-debian": Path("/usr/bin/adb"),
    "adb-36-adbutils": Path(adbutils.__file__).parent / "binaries" / "adb",
}


def require_binary(name: str) -> str:
    """Path of an adb binary we interoperate with; skip (or fail on CI) when missing."""
    path = ADB_BINARIES[name]
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    reason = f"{name} not available at {path}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the interop tests against every adb server)")
    pytest.skip(reason)


def _free_port() -> int:
    return free_port()  # outside the ephemeral range: no connection takes it meanwhile


def wait_for(condition: Callable[[], bool], timeout: float = 10.0,
             interval: float = 0.01) -> bool:
    """Wait until ``condition()`` holds, at most ``timeout`` seconds; its last answer."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()  # never set: a bounded wait between two looks
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        tick.wait(min(interval, max(0.0, deadline - time.monotonic())))
    return True


def rebooted(emu: EmulatedAdbd, timeout: float = 10.0) -> bool:
    """Wait for the emulated phone to finish a reboot: its down time over and the thread
    that boots it (into the mode it was sent to) ended."""
    deadline = time.monotonic() + timeout
    while True:
        with emu._lock:
            booting = [t for t in emu._threads if t.name.startswith("adbd-reboot-")]
        for thread in booting:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not booting and time.monotonic() >= emu._down_until:
            return True
        if time.monotonic() >= deadline:
            return False
        if not booting:  # reboot() sets the down time, then starts that thread
            wait_for(lambda: time.monotonic() >= emu._down_until or any(
                t.name.startswith("adbd-reboot-") for t in list(emu._threads)),
                max(0.0, deadline - time.monotonic()))


def commands_running(emu: EmulatedAdbd) -> bool:
    """Is a command of any stream still running? (A stream is live from its OPEN, before
    the host sees OKAY, until its command has returned.)"""
    with emu._lock:
        connections = list(emu._connections)
    return any(conn._live for conn in connections)


@dataclass
class AdbServer:
    """A private adb server: its own port, HOME and host key."""

    name: str
    binary: str
    port: int
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "-P", str(self.port), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def devices(self) -> dict[str, str]:
        out = self.run("devices").stdout.splitlines()[1:]
        return dict(line.split("\t")[:2] for line in out if "\t" in line)

    def wait_state(self, serial: str, accept: Callable[[str | None], bool],
                   timeout: float = 10) -> str | None:
        state = [self.devices().get(serial)]

        def settled() -> bool:
            state[0] = self.devices().get(serial)
            return accept(state[0])
        if not accept(state[0]):
            wait_for(settled, timeout, interval=0.05)
        return state[0]

    @property
    def client(self) -> adbutils.AdbClient:
        return adbutils.AdbClient(host="127.0.0.1", port=self.port)

    def attach(self, emu: EmulatedAdbd, want: str = "device") -> adbutils.AdbDevice:
        self.run("connect", emu.address)
        state = self.wait_state(emu.address, lambda s: s == want)
        assert state == want, f"{emu.address} is {state!r} on {self.name}, expected {want}"
        return self.client.device(serial=emu.address)


@pytest.fixture(scope="session", params=sorted(ADB_BINARIES))
def adb_server(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    binary = require_binary(request.param)
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    (home / ".android").mkdir()
    (home / "vendor-keys").mkdir()
    env = dict(os.environ, HOME=str(home), ANDROID_USER_HOME=str(home / ".android"),
               ADB_VENDOR_KEYS=str(home / "vendor-keys"),
               ADB_LIBUSB="0")  # adb 36 spends 3 s failing to init libusb in containers
    env.pop("ANDROID_SERIAL", None)
    env.pop("ANDROID_ADB_SERVER_PORT", None)
    server = AdbServer(request.param, binary, _free_port(), env)
    started = server.run("start-server")
    assert started.returncode == 0, started.stderr
    yield server
    server.run("kill-server")


def custom_profile(directory: Path, base: str, extra: str = "", **values: str) -> HandsetProfile:
    """A fixture profile with some ``key = value`` lines replaced (values in TOML syntax)."""
    text = (PROFILES_DIR / f"{base}.toml").read_text()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"{key} not in profile {base}"
    path = directory / f"{base}-custom.toml"
    path.write_text(text + extra)
    return load_profile(str(path))


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Callable[..., tuple[HandsetStorage, EmulatedAdbd]]]:
    """Factory: an emulated handset from a profile, serving adb on loopback."""
    running: list[EmulatedAdbd] = []

    def make(profile: str | HandsetProfile,
             **kwargs: object) -> tuple[HandsetStorage, EmulatedAdbd]:
        prof = load_profile(profile) if isinstance(profile, str) else profile
        storage = HandsetStorage.create(tmp_path / f"{prof.name}-{len(running)}", prof,
                                        prof.serial(len(running)))
        emu = EmulatedAdbd(storage, reboot_delay=kwargs.pop("reboot_delay", REBOOT_DELAY),
                           **kwargs)  # type: ignore[arg-type]
        emu.start()
        running.append(emu)
        return storage, emu

    yield make
    for emu in running:
        emu.stop()
        emu.storage.close()


@pytest.fixture
def detach(adb_server: AdbServer) -> Iterator[list[EmulatedAdbd]]:
    """Emulators to `adb disconnect` at teardown so the session server stays clean."""
    attached: list[EmulatedAdbd] = []
    yield attached
    for emu in attached:
        adb_server.run("disconnect", emu.address)


def _read_to_close(conn: adbutils.AdbConnection) -> bytes:
    buf = bytearray()
    chunk = bytearray(MIB)
    view = memoryview(chunk)
    while True:
        n = conn.conn.recv_into(view)
        if not n:
            return bytes(buf)
        buf += view[:n]


def _v2_exchange(conn: adbutils.AdbConnection, stdin: bytes,
                 chunk: int = MIB) -> tuple[int | None, bytes, bytes]:
    """Feed stdin as shell v2 packets, close stdin, collect (exit, stdout, stderr)."""
    sock = conn.conn
    view = memoryview(stdin)
    for off in range(0, len(view), chunk):
        piece = view[off:off + chunk]
        sock.sendall(wire.shell_header(wire.SHELL_STDIN, len(piece)))
        sock.sendall(piece)
    sock.sendall(wire.shell_packet(wire.SHELL_CLOSE_STDIN))
    decoder = wire.ShellDecoder()
    out, err = bytearray(), bytearray()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return None, bytes(out), bytes(err)
        for packet_id, payload in decoder.packets(data):
            if packet_id == wire.SHELL_STDOUT:
                out += payload
            elif packet_id == wire.SHELL_STDERR:
                err += payload
            elif packet_id == wire.SHELL_EXIT:
                return payload[0], bytes(out), bytes(err)


# =============================================================================================
# Through the real adb servers
# =============================================================================================


@pytest.mark.interop
def test_getprop_identity(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("unrooted")
    info = storage.profile.device
    device = adb_server.attach(emu)
    detach.append(emu)
    assert adb_server.devices()[emu.address] == "device"
    assert device.shell("getprop ro.product.model") == info.model
    assert device.shell("getprop ro.serialno") == storage.state.serial
    assert device.shell("getprop ro.build.version.sdk") == str(info.sdk)
    assert device.shell("getprop ro.no.such.prop") == ""
    listing = device.shell("getprop")
    assert "[ro.crypto.type]: [file]" in listing and "[ro.boot.flash.locked]: [1]" in listing
    assert "shell_v2" in device.get_features().split(",")
    out = adb_server.run("-s", emu.address, "shell", "getprop", "ro.product.manufacturer")
    assert out.stdout == info.manufacturer + "\n"
    listing = adb_server.run("devices", "-l").stdout  # the host sanitizes the model name
    assert "model:" + re.sub(r"[^A-Za-z0-9]", "_", info.model) in listing


@pytest.mark.interop
def test_shell_exit_codes_v1_and_v2(adb_server: AdbServer, phone, detach) -> None:
    _, emu = phone("rooted")
    device = adb_server.attach(emu)
    detach.append(emu)
    result = device.shell2("echo out; echo err >&2; exit 3", v2=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    missing = device.shell2("frobnicate --all", v2=True)
    assert missing.returncode == 127
    assert missing.stderr == "/system/bin/sh: frobnicate: inaccessible or not found\n"
    assert device.shell2("false", v2=False).returncode == 1  # v1: "; echo $?" appended
    assert device.shell("nosuch 2>/dev/null; echo $?") == "127"
    assert device.shell2("dd if=/dev/zero of=/dev/null status=progress", v2=True).returncode == 1
    binary = adb_server.run("-s", emu.address, "shell", "exit 5")
    assert binary.returncode == 5
    assert device.shell2("id", v2=True).stdout.startswith("uid=2000(shell)")
    assert device.shell2("su -c id", v2=True).stdout.startswith("uid=0(root)")


@pytest.mark.interop
def test_exec_dd_reads_the_block_device(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("rooted")
    device = adb_server.attach(emu)
    detach.append(emu)
    with device.open_transport() as conn:
        conn.send_command(f"exec:su -c 'dd if={USERDATA} bs=4096 skip=8 count=300 2>/dev/null'")
        conn.check_okay()
        data = _read_to_close(conn)
    assert data == storage.read(8 * 4096, 300 * 4096)
    with device.open_transport() as conn:  # shell uid may not read the block device
        conn.send_command(f"exec:dd if={USERDATA} bs=4096 count=1")
        conn.check_okay()
        assert _read_to_close(conn) == f"dd: {USERDATA}: Permission denied\n".encode()


@pytest.mark.interop
def test_host_streamed_write_lands_in_userdata(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("rooted")
    device = adb_server.attach(emu)
    detach.append(emu)
    payload = os.urandom(8 * MIB)
    after = storage.read(8 * MIB, 4096)
    with device.open_transport() as conn:
        conn.send_command(f"shell,v2,raw:su -c 'dd of={USERDATA} bs=1048576'")
        conn.check_okay()
        status, out, err = _v2_exchange(conn, payload, chunk=MIB - 1000)
    assert status == 0, err
    assert b"8388608 bytes" in err and out == b""
    assert storage.read(0, 8 * MIB) == payload
    assert storage.read(8 * MIB, 4096) == after


@pytest.mark.interop
def test_adb_push_and_sync(adb_server: AdbServer, phone, detach, tmp_path: Path) -> None:
    storage, emu = phone("unrooted")
    adb_server.attach(emu)
    detach.append(emu)
    data = os.urandom(3 * MIB + 12345)
    (tmp_path / "blob").write_bytes(data)
    pushed = adb_server.run("-s", emu.address, "push", str(tmp_path / "blob"), "/data/local/tmp/x")
    assert pushed.returncode == 0, pushed.stderr
    assert storage.read_file("/data/local/tmp/x", 0, len(data)) == data
    pulled = adb_server.run("-s", emu.address, "pull", "/sdcard/Documents/notes.txt",
                            str(tmp_path / "notes"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "notes").read_bytes() == storage.read_file(
        "/sdcard/Documents/notes.txt", 0, 1 << 20)
    denied = adb_server.run("-s", emu.address, "push", str(tmp_path / "blob"), "/system/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stdout + denied.stderr
    sync = adb_server.client.device(serial=emu.address).sync
    assert sync.stat("/data/local/tmp/x").size == len(data)
    assert "DCIM" in {entry.path for entry in sync.list("/sdcard")}


@pytest.mark.interop
def test_unauthorized_profile_stays_unauthorized(adb_server: AdbServer, phone, detach) -> None:
    _, emu = phone("unauthorized")
    adb_server.attach(emu, want="unauthorized")
    detach.append(emu)
    result = adb_server.run("-s", emu.address, "shell", "true")
    assert result.returncode != 0 and "unauthorized" in result.stderr
    assert emu.authorized_keys() == []


@pytest.mark.interop
def test_accepting_profile_becomes_device(adb_server: AdbServer, phone, detach) -> None:
    _, emu = phone("unrooted")  # auth = accept: the emulated user taps "Allow"
    device = adb_server.attach(emu)
    detach.append(emu)
    assert len(emu.authorized_keys()) == 1
    assert device.shell("echo hi") == "hi"
    adb_server.run("disconnect", emu.address)
    adb_server.attach(emu)  # second time the host's signature verifies
    assert len(emu.authorized_keys()) == 1


@pytest.mark.interop
def test_unplug_drops_off_mid_write(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("unplug-40")
    device = adb_server.attach(emu)
    detach.append(emu)
    status = "not finished"
    try:
        with device.open_transport() as conn:
            conn.send_command(f"shell,v2,raw:su -c 'dd of={USERDATA} bs=1048576'")
            conn.check_okay()
            status, _, _ = _v2_exchange(conn, bytes(storage.size))
    except OSError:
        pass
    assert status in ("not finished", None)  # never an exit status: the device vanished
    assert emu.unplugged and storage.faults.unplugged
    assert storage.faults.written <= 0.4 * storage.size + 2 * MIB
    assert adb_server.wait_state(emu.address, lambda s: s != "device") != "device"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=2).recv(1)


@pytest.mark.interop
def test_reboot_bootloader_disappears(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("rooted")
    device = adb_server.attach(emu)
    detach.append(emu)
    with device.open_transport() as conn:
        conn.send_command("reboot:bootloader")
        conn.check_okay()
        _read_to_close(conn)
    assert adb_server.wait_state(emu.address, lambda s: s != "device") != "device"
    assert storage.state.mode == "fastboot"
    assert rebooted(emu)  # booted into the bootloader: adbd's down time is over
    assert not emu.online and storage.state.mode == "fastboot"
    assert adb_server.devices().get(emu.address) != "device"  # adb is off in fastboot


@pytest.mark.interop
def test_reboot_comes_back(adb_server: AdbServer, phone, detach) -> None:
    storage, emu = phone("rooted")
    device = adb_server.attach(emu)
    detach.append(emu)
    device.shell("reboot")  # what adbutils' reboot() does
    assert adb_server.wait_state(emu.address, lambda s: s != "device", timeout=5) != "device"
    adb_server.run("connect", emu.address)  # the server also retries by itself
    assert adb_server.wait_state(emu.address, lambda s: s == "device", timeout=10) == "device"
    assert storage.state.mode == "adb"


@pytest.mark.interop
def test_adbd_root_on_engineering_build(adb_server: AdbServer, phone, detach) -> None:
    _, emu = phone("engineering")
    device = adb_server.attach(emu)
    detach.append(emu)
    assert device.shell("id -u") == "2000"
    assert device.root().startswith("restarting adbd as root")
    adb_server.run("connect", emu.address)
    assert adb_server.wait_state(emu.address, lambda s: s == "device") == "device"

    def as_root() -> bool:
        try:
            return device.shell("id -u") == "0"
        except adbutils.AdbError:
            return False
    assert wait_for(as_root, timeout=10)
    assert device.shell("id -u") == "0"
    assert device.shell("getprop service.adb.root") == "1"


# =============================================================================================
# Raw frames, no adb server
# =============================================================================================


class RawHost:
    """A minimal adb host speaking the transport protocol over a socket."""

    def __init__(self, emu: EmulatedAdbd) -> None:
        self.sock = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
        self._buf = bytearray()
        self._next = 100

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.sock.sendall(wire.pack(command, arg0, arg1, data))

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return False
            if not data:
                return False
            self._buf += data
        return True

    def recv(self, timeout: float = 5) -> wire.Message | None:
        """The next message; None at EOF. Raises socket.timeout."""
        self.sock.settimeout(timeout)
        if not self._fill(wire.HEADER_SIZE):
            return None
        header = wire.parse_header(self._buf[:wire.HEADER_SIZE])
        if not self._fill(wire.HEADER_SIZE + header.data_length):
            return None
        data = bytes(self._buf[wire.HEADER_SIZE:wire.HEADER_SIZE + header.data_length])
        del self._buf[:wire.HEADER_SIZE + header.data_length]
        return wire.Message(header.command, header.arg0, header.arg1, data)

    def connect(self, maxdata: int = wire.MAX_PAYLOAD) -> wire.Message:
        self.send(wire.CNXN, wire.A_VERSION, maxdata, b"host::features=shell_v2,cmd")
        reply = self.recv()
        assert reply is not None
        return reply

    def open(self, service: str) -> tuple[int, wire.Message]:
        self._next += 1
        self.send(wire.OPEN, self._next, 0, service.encode() + b"\0")
        reply = self.recv()
        assert reply is not None
        return self._next, reply

    def run(self, service: str) -> bytes:
        local, reply = self.open(service)
        assert reply.command == wire.OKAY and reply.arg1 == local
        out = bytearray()
        while True:
            msg = self.recv()
            assert msg is not None
            if msg.command == wire.WRTE:
                out += msg.data
                self.send(wire.OKAY, local, msg.arg0)
            elif msg.command == wire.CLSE:
                return bytes(out)

    def closed(self, timeout: float = 3) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.recv(timeout=deadline - time.monotonic()) is None:
                    return True
            except (socket.timeout, OSError):
                return False
        return False

    def close(self) -> None:
        self.sock.close()


def test_handshake_banner_and_features(phone) -> None:
    _, emu = phone("rooted")
    host = RawHost(emu)
    reply = host.connect()
    assert (reply.command, reply.arg0, reply.arg1) == (wire.CNXN, wire.A_VERSION, wire.MAX_PAYLOAD)
    banner = wire.parse_banner(reply.data)
    assert banner.system_type == "device"
    info = emu.storage.profile.device
    assert banner.properties == {"ro.product.name": info.product, "ro.product.model": info.model,
                                 "ro.product.device": info.device}
    assert banner.features == {"shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir"}
    assert emu.endpoints == {"adb": f"127.0.0.1:{emu.port}"} and emu.address.endswith(str(emu.port))
    host.close()


def test_malformed_frames_close_only_that_connection(phone) -> None:
    _, emu = phone("rooted")
    good = RawHost(emu)
    good.connect()
    bad_frames = [
        struct.pack("<6I", wire.CNXN, wire.A_VERSION, 4096, 0, 0, 0xDEADBEEF),  # bad magic
        struct.pack("<6I", wire.WRTE, 1, 1, 0x7FFFFFFF, 0, wire.WRTE ^ 0xFFFFFFFF),  # huge
        struct.pack("<6I", 0x4B4E554A, 0, 0, 0, 0, 0x4B4E554A ^ 0xFFFFFFFF),  # unknown
        wire.pack(wire.STLS, wire.A_STLS_VERSION, 0),  # TLS was never offered
    ]
    for frame in bad_frames:
        bad = RawHost(emu)
        bad.sock.sendall(frame)
        assert bad.closed(), f"connection survived {frame[:24].hex()}"
        bad.close()
    checksum = RawHost(emu)  # a wrong (nonzero) checksum is refused too
    raw = bytearray(wire.pack(wire.CNXN, wire.A_VERSION, 4096, b"host::"))
    struct.pack_into("<I", raw, 16, 12345)
    checksum.sock.sendall(raw)
    assert checksum.closed()
    assert good.run("shell:echo still here") == b"still here\n"
    fresh = RawHost(emu)
    assert fresh.connect().command == wire.CNXN
    good.close()
    fresh.close()


def test_streams_flow_control_and_maxdata(phone) -> None:
    _, emu = phone("rooted")
    host = RawHost(emu)
    host.connect(maxdata=4096)
    local, reply = host.open("exec:dd if=/dev/zero bs=65536 count=4 status=none")
    assert reply.command == wire.OKAY
    first = host.recv()
    assert first is not None and first.command == wire.WRTE and len(first.data) == 4096
    with pytest.raises(socket.timeout):  # nothing more until we acknowledge
        host.recv(timeout=0.3)
    total = len(first.data)
    host.send(wire.OKAY, local, first.arg0)
    while True:
        msg = host.recv()
        assert msg is not None
        if msg.command == wire.CLSE:
            break
        assert msg.command == wire.WRTE and len(msg.data) <= 4096
        total += len(msg.data)
        host.send(wire.OKAY, local, msg.arg0)
    assert total == 4 * 65536
    unknown, reply = host.open("jdwp:1234")
    assert (reply.command, reply.arg0, reply.arg1) == (wire.CLSE, 0, unknown)
    _, reply = host.open("shell:")  # interactive shells are not emulated
    assert reply.command == wire.CLSE
    # Host data for a command that does not read stdin: acknowledged only while it fits
    # the bounded queue, then the host must wait.
    local, reply = host.open("shell:sleep 30")
    acked = 0
    for probe in range(1000, 1012):
        host.send(wire.WRTE, local, reply.arg0, bytes(MIB))
        # adbd handles a connection's packets in order: the answer to this OPEN of an
        # unknown service (CLSE) comes after the WRTE's OKAY, if that was sent at all
        host.send(wire.OPEN, probe, 0, b"jdwp:0\0")
        answers = []
        while not answers or answers[-1].command != wire.CLSE:
            msg = host.recv()
            assert msg is not None
            answers.append(msg)
        assert answers[-1].arg1 == probe
        if not answers[:-1]:
            break
        assert [(m.command, m.arg1) for m in answers[:-1]] == [(wire.OKAY, local)]
        acked += 1
    assert 2 <= acked <= 6
    emu.stop()  # ends the sleeping command
    host.close()


def test_concurrent_streams_on_one_connection(phone) -> None:
    _, emu = phone("rooted")
    host = RawHost(emu)
    host.connect()
    streams = {}
    for n in range(3):
        local, reply = host.open(f"shell,v2:sleep 0.{3 - n}; echo stream{n}")
        assert reply.command == wire.OKAY
        streams[local] = bytearray()
    done: list[int] = []
    while len(done) < 3:
        msg = host.recv()
        assert msg is not None
        if msg.command == wire.WRTE:
            streams[msg.arg1] += msg.data
            host.send(wire.OKAY, msg.arg1, msg.arg0)
        elif msg.command == wire.CLSE:
            done.append(msg.arg1)
    assert done == sorted(streams)[::-1]  # the shortest sleep finishes first
    for n, local in enumerate(sorted(streams)):
        packets = wire.ShellDecoder().packets(streams[local])
        assert packets == [(1, f"stream{n}\n".encode()), (3, b"\0")]
    host.close()


def test_auth_accept_and_never(phone) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _, emu = phone("unrooted")
    host = RawHost(emu)
    token = host.connect()
    assert (token.command, token.arg0, len(token.data)) == (wire.AUTH, wire.AUTH_TOKEN, 20)
    host.send(wire.AUTH, wire.AUTH_SIGNATURE, 0, wire.sign_token(stranger, token.data))
    again = host.recv()
    assert again is not None and again.arg0 == wire.AUTH_TOKEN and again.data != token.data
    host.send(wire.AUTH, wire.AUTH_RSAPUBLICKEY, 0,
              wire.encode_android_pubkey(key.public_key(), "tester@bench") + b"\0")
    online = host.recv()
    assert online is not None and online.command == wire.CNXN
    host.close()
    second = RawHost(emu)  # the key is remembered: a signature is enough now
    token = second.connect()
    second.send(wire.AUTH, wire.AUTH_SIGNATURE, 0, wire.sign_token(key, token.data))
    reply = second.recv()
    assert reply is not None and reply.command == wire.CNXN
    assert second.run("shell:echo ok") == b"ok\n"
    second.close()

    _, never = phone("unauthorized")
    host = RawHost(never)
    token = host.connect()
    host.send(wire.AUTH, wire.AUTH_RSAPUBLICKEY, 0,
              wire.encode_android_pubkey(key.public_key(), "tester@bench") + b"\0")
    host.send(wire.OPEN, 1, 0, b"shell:id\0")  # ignored before the handshake completes
    with pytest.raises(socket.timeout):
        host.recv(timeout=0.3)
    host.close()


def test_recovery_wipe_turns_adb_off(phone) -> None:
    storage, emu = phone("rooted")
    assert storage.files_under("/sdcard")
    host = RawHost(emu)
    host.connect()
    assert host.run("shell:echo --wipe_data > /cache/recovery/command; echo $?") == \
        b"/system/bin/sh: can't create /cache/recovery/command: Permission denied\n1\n"
    host.run("shell:su -c 'echo --wipe_data > /cache/recovery/command'")
    assert storage.state.recovery_command == "--wipe_data\n"
    host.run("reboot:recovery")
    assert host.closed()
    assert storage.state.mode == "recovery"
    assert rebooted(emu, timeout=5)  # recovery has run the wipe
    assert storage.state.mode == "setup-wizard" and storage.state.resets == 1
    assert storage.state.recovery_command == "" and not storage.files_under("/sdcard")
    late = RawHost(emu)  # adb is off after the reset: accepted, then closed
    assert late.closed()
    late.close()


def test_testharness_resets_and_keeps_adb(phone) -> None:
    storage, emu = phone("frp-locked")
    assert storage.state.google_accounts
    host = RawHost(emu)
    host.connect()
    assert b"Accounts: 1" in host.run("shell:dumpsys account")
    assert wire.ShellDecoder().packets(host.run("shell,v2:cmd testharness enable")) == \
        [(wire.SHELL_EXIT, b"\0")]
    assert host.closed()
    assert emu.wait_online(5)
    assert storage.state.test_harness and storage.state.resets == 1
    assert storage.state.google_accounts == [] and storage.state.mode == "adb"
    again = RawHost(emu)
    again.connect()
    assert again.run("shell:getprop persist.sys.test_harness; dumpsys account") .startswith(
        b"1\nUser UserInfo{0:Owner:c13}:\n  Accounts: 0\n")
    again.close()
    old, old_emu = phone(custom_profile(emu.storage.directory.parent, "reset-only",
                                        android='"9"', sdk="28"))  # no test harness service
    raw = RawHost(old_emu)
    raw.connect()
    assert raw.run("shell:cmd testharness enable; echo $?") == \
        b"cmd: Can't find service: testharness\n1\n"
    raw.close()


def test_a_host_gone_mid_stdin_leaves_only_a_pipe_full_to_write(phone, tmp_path: Path) -> None:
    """adbd drops the stdin it had not yet handed to the child when the host goes: a killed
    station must not leave the phone writing megabytes of an old pattern under its redo."""
    prof = custom_profile(tmp_path, "rooted", "\n[faults]\nslow_mib_s = 2\n")
    storage, emu = phone(prof)
    host = RawHost(emu)
    host.connect()
    local, reply = host.open(f"shell,v2:su -c 'dd of={USERDATA} bs=65536 conv=notrunc'")
    assert reply.command == wire.OKAY
    piece = 64 * 1024
    for _ in range(32):  # 2 MiB, queued faster than the phone writes it
        host.send(wire.WRTE, local, reply.arg0, wire.shell_header(wire.SHELL_STDIN, piece) + b"\xa5" * piece)
    host.send(wire.CLSE, local, reply.arg0)

    def written() -> int:
        data = storage.read(0, 2 * MIB)
        return sum(data[i:i + 4096] == b"\xa5" * 4096 for i in range(0, len(data), 4096)) * 4096
    assert wait_for(lambda: not commands_running(emu), timeout=30)  # dd has ended
    seen = written()
    assert 0 < seen <= 512 * 1024, f"{seen} bytes written after the host went"
    host.close()


def test_stop_interrupts_commands_and_joins_threads(phone) -> None:
    _, emu = phone("rooted")
    host = RawHost(emu)
    host.connect()
    local, reply = host.open("shell,v2:sleep 30")
    assert reply.command == wire.OKAY
    other = RawHost(emu)
    other.connect()
    other.open("exec:dd if=/dev/zero of=/dev/null")  # endless
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 3
    assert not [t for t in emu._threads if t.is_alive()]
    assert host.closed() and other.closed()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=1).recv(1)
    host.close()
    other.close()


def test_unreadable_sector_is_an_io_error(phone, tmp_path: Path) -> None:
    prof = custom_profile(tmp_path, "rooted", "\n[faults]\nunreadable = [[0.5, 0.51]]\n")
    storage = HandsetStorage.create(tmp_path / "bad", prof, "PWBAD0000")
    with EmulatedAdbd(storage) as emu:
        host = RawHost(emu)
        host.connect()
        skip = storage.size // 2 // MIB
        packets = wire.ShellDecoder().packets(host.run(
            f"shell,v2:su -c 'dd if={USERDATA} bs=1048576 skip={skip} count=1 of=/dev/null'"))
        assert (wire.SHELL_STDERR, f"dd: {USERDATA}: I/O error\n".encode()) in packets
        assert packets[-1] == (wire.SHELL_EXIT, b"\x01")
        host.close()


# =============================================================================================
# The shell, directly
# =============================================================================================


@pytest.fixture
def handset(tmp_path: Path) -> HandsetStorage:
    return HandsetStorage.create(tmp_path / "h", load_profile("rooted"), "PWROOT0000")


def sh(storage: HandsetStorage, command: str, root: bool = False,
       stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    ctx = shell.ShellContext(storage, is_root=root, stdin=shell.BytesReader(stdin),
                             stdout=out.extend, stderr=err.extend)
    status = shell.run(command, ctx)
    return status, out.decode(errors="replace"), err.decode(errors="replace")


_PLAIN_PIECES = st.sampled_from([" ", "\t", "\n", ";", ";;", "&", "&&", "|", "||", "(", ")", "<", ">",
                                  ">>", ">&", "<&", ">|", "2>", "12>", "a", "b2", "7", "=",
                                  "/dev/null", "if=/x", "bs=4096", "-c"])


@given(st.lists(_PLAIN_PIECES, max_size=40).map("".join))
def test_the_fast_lexer_reads_plain_lines_as_the_general_one_does(src: str) -> None:
    """A read-back batch (thousands of unquoted words) takes the one-regex path."""
    assert shell_syntax._NOTHING_TO_QUOTE_RE.fullmatch(src)
    assert shell_syntax._lex_plain(src) == shell_syntax._lex_any(src)


def test_shell_sequencing_quotes_and_status(handset: HandsetStorage) -> None:
    assert sh(handset, "false; echo $?")[1] == "1\n"
    assert sh(handset, "false || echo a && echo b")[1] == "a\nb\n"
    assert sh(handset, "true && false || echo c; echo \"q $?\" 'n $?'")[1] == "c\nq 0 n $?\n"
    assert sh(handset, "echo -n x; echo y")[1] == "xy\n"
    assert sh(handset, "echo $(getprop ro.product.device)-x")[1] == "bluejay-x\n"
    status, _, err = sh(handset, "echo 'open")
    assert status == 1 and "syntax error" in err
    assert sh(handset, "exit 7; echo no") == (7, "", "")


def test_shell_pipelines_are_bounded_and_stop(handset: HandsetStorage) -> None:
    import hashlib
    status, out, _ = sh(handset, "dd if=/dev/zero bs=1048576 count=48 2>/dev/null | sha256sum")
    assert (status, out) == (0, hashlib.sha256(bytes(48 * MIB)).hexdigest() + "  -\n")
    started = time.monotonic()
    status, _, err = sh(handset, "dd if=/dev/zero bs=65536 | nosuchapplet")  # endless producer
    assert status == 127 and "nosuchapplet: inaccessible or not found" in err
    assert time.monotonic() - started < 5
    assert sh(handset, "echo a b | cat; echo $?")[1] == "a b\n0\n"


def test_shell_rejects_what_toybox_rejects(handset: HandsetStorage) -> None:
    assert sh(handset, "busybox dd") == (127, "", "/system/bin/sh: busybox: inaccessible or "
                                                   "not found\n")
    for bad in ("status=progress", "conv=fdatasync", "bogus=1", "xyz"):
        status, _, err = sh(handset, f"dd if=/dev/zero of=/dev/null count=1 {bad}")
        assert status == 1 and err.startswith("dd: unknown argument"), bad
    # toybox knows iflag=direct, but reads into an unaligned buffer: O_DIRECT says EINVAL
    assert sh(handset, f"dd if={USERDATA} iflag=direct bs=4096 count=1", root=True) == (
        1, "", f"dd: {USERDATA}: Invalid argument\n")
    status, _, err = sh(handset, "dd if=/dev/zero of=/dev/null bs=1Q count=1")
    assert status == 1 and "invalid number" in err
    assert sh(handset, f"dd if={USERDATA} bs=512 count=1") == (
        1, "", f"dd: {USERDATA}: Permission denied\n")


def test_shell_dd_summary_and_block_device_bounds(handset: HandsetStorage) -> None:
    status, out, err = sh(handset, "dd if=/dev/zero bs=1024 count=3", root=True)
    assert status == 0 and out == "\0" * 3072
    assert err.startswith("3+0 records in\n3+0 records out\n3072 bytes (3.0 K) copied, ")
    size_mib = handset.size // MIB
    status, _, err = sh(handset, f"dd if=/dev/zero of={USERDATA} bs=1048576 seek={size_mib - 1} "
                                 "count=2", root=True)
    assert status == 1 and "No space left on device" in err
    assert handset.read(handset.size - 4096, 4096) == bytes(4096)
    out, err = bytearray(), bytearray()
    ctx = shell.ShellContext(handset, is_root=True, stdout=out.extend, stderr=err.extend)
    assert shell.run(f"dd if={USERDATA} bs=4096 skip=1 count=2 status=none", ctx) == 0
    assert err == b"" and bytes(out) == handset.read(4096, 8192)
    assert sh(handset, "su -c 'blockdev --getsize64 /dev/block/by-name/userdata'")[1] == \
        f"{handset.size}\n"


def test_shell_files_df_and_full_disk(handset: HandsetStorage) -> None:
    assert "DCIM" in sh(handset, "ls /sdcard")[1].split("\n")
    assert sh(handset, "ls /data") == (1, "", "ls: /data: Permission denied\n")
    assert sh(handset, "stat -c %s /sdcard/Documents/notes.txt")[1] == \
        f"{handset.table.sizes['/sdcard/Documents/notes.txt']}\n"
    assert sh(handset, "echo hello > /sdcard/a.txt; echo more >> /sdcard/a.txt; cat /sdcard/a.txt"
              )[1] == "hello\nmore\n"
    assert sh(handset, "mkdir -p /sdcard/x/y && ls /sdcard/x")[1] == "y\n"
    assert sh(handset, "rm -rf /sdcard/x /sdcard/a.txt; ls /sdcard/x")[0] == 1
    assert sh(handset, "rm /data/data/com.android.calendar/files/events.ics")[0] == 1
    assert sh(handset, "su -c 'rm -r /data/data/com.android.calendar'")[0] == 0
    free_kib = handset.table.available_bytes() // 1024  # the reserved share left out
    lines = sh(handset, "df /data")[1].splitlines()
    assert lines[0].split() == ["Filesystem", "1K-blocks", "Used", "Available", "Use%",
                                "Mounted", "on"]
    assert lines[1].split()[3] == str(free_kib) and lines[1].endswith(" /data")
    assert sh(handset, "df /sdcard")[1].splitlines()[1].split()[1:4] == lines[1].split()[1:4]
    status, _, err = sh(handset, "dd if=/dev/zero of=/sdcard/fill bs=1048576")
    assert status == 1 and "dd: write error: No space left on device" in err
    assert handset.table.allocatable_bytes() < 2 * 4096  # at most a block short: the extent tree
    digest = sh(handset, "sha256sum /sdcard/Documents/notes.txt")[1]
    assert digest.endswith("  /sdcard/Documents/notes.txt\n") and len(digest.split()[0]) == 64


def test_shell_android_services(handset: HandsetStorage, tmp_path: Path) -> None:
    parcel = sh(handset, "service call iphonesubinfo 1 s16 com.android.shell")[1]
    imei = handset.state.imeis[0]  # the handset's own, derived from the profile's (Luhn)
    words = " ".join(f"{ord(b):04x}{ord(a):04x}" for a, b in (imei[0:2], imei[2:4]))
    assert parcel.startswith(f"Result: Parcel(\n  0x00000000: 00000000 {len(imei):08x} {words} "
                             f"'........{'.'.join(imei[:4])}.'\n")
    digits = "".join(ch for line in parcel.splitlines()[1:]
                     for ch in line.split("'")[1] if ch.isdigit())
    assert digits == imei
    assert sh(handset, "dumpsys account")[1].splitlines()[1] == "  Accounts: 0"
    assert "Device Owner" not in sh(handset, "dumpsys device_policy")[1]
    assert sh(handset, "locksettings verify") == (0, "Lock credential verified successfully\n", "")
    mdm = HandsetStorage.create(tmp_path / "mdm", load_profile("mdm-owned"), "PWMDMO0000")
    policy = sh(mdm, "dumpsys device_policy")[1]
    assert "Device Owner: \n  admin=ComponentInfo{com.example.mdm/.AdminReceiver}\n  name=\n" \
           "  package=com.example.mdm\n" in policy
    handset.state.screen_lock = True
    assert sh(handset, "locksettings verify")[0] == 1
    assert sh(handset, "cmd testharness enable") == (
        1, "", "Test Harness Mode cannot be enabled if there is a lock screen\n")


def test_shell_su_only_on_su_profiles(tmp_path: Path) -> None:
    unrooted = HandsetStorage.create(tmp_path / "u", load_profile("unrooted"), "PWUNRT0000")
    assert sh(unrooted, "su -c id") == (127, "", "/system/bin/sh: su: inaccessible or not found\n")
    engineering = HandsetStorage.create(tmp_path / "e", load_profile("engineering"), "PWENGR0000")
    assert sh(engineering, "su -c id")[0] == 127
    assert sh(engineering, "id", root=True)[1].startswith("uid=0(root) gid=0(root)")
    props = sh(engineering, "getprop ro.debuggable; getprop ro.build.type")[1]
    assert props == "1\nuserdebug\n"
