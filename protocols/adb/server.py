"""The adb server our client talks to: the real one (Debian's `adb` or the one adbutils
ships), started on a chosen port so tests and the demo never disturb a user's server."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import DeviceNotFound, PhonewipeError

if TYPE_CHECKING:
    import adbutils

DEFAULT_PORT = 5037
PORT_VARIABLE = "ANDROID_ADB_SERVER_PORT"  # adb's own: the server port when -P is not given
PROBE_TIMEOUT = 5.0  # seconds an adb server has to answer host:version
KILL_TIMEOUT = 10.0  # seconds `adb kill-server` has before the server is ended by signal


def adbutils_module() -> ModuleType:
    """adbutils, imported when first needed: it brings Pillow and requests along, about
    0.15 s of CPU that every command line would pay when the plugins load."""
    import adbutils
    return adbutils


def link_errors() -> tuple[type[BaseException], ...]:
    """What a request to the adb server raises when the server or the link fails."""
    return (adbutils_module().AdbError, OSError)


@functools.cache
def _client_class() -> Any:
    """adbutils' client, except that a refused connection is an error: adbutils would run
    `adb start-server` for the default port 5037 (not ours under --adb-port, and a server
    left running after phonewipe exits) and wait up to 20 s for it. Made when first needed,
    as adbutils is imported."""
    import adbutils

    class ServerOnlyConnection(adbutils.AdbConnection):
        def _safe_connect(self) -> Any:
            return self._create_socket()

    class ServerOnlyClient(adbutils.AdbClient):
        def __init__(self, host: str, port: int, socket_timeout: float) -> None:
            super().__init__(host=host, port=port, socket_timeout=socket_timeout)
            self.server_address, self.server_timeout = (host, port), socket_timeout

        def make_connection(self, timeout: float | None = None) -> Any:
            conn = ServerOnlyConnection(*self.server_address)
            conn.conn.settimeout(timeout or self.server_timeout)
            return conn

    return ServerOnlyClient


def port_from_environment(environ: Mapping[str, str]) -> int:
    """The port adb itself would use: ANDROID_ADB_SERVER_PORT when set, else 5037."""
    value = environ.get(PORT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_PORT
    if value.isascii() and value.isdigit() and 1 <= int(value) <= 65535:
        return int(value)
    raise PhonewipeError(f"{PORT_VARIABLE} is {value[:20]!r}, not a port number",
                         "set it to a number from 1 to 65535, unset it, or pass --adb-port")


def find_adb(explicit: str | None = None) -> str:
    if explicit:
        if not shutil.which(explicit) and not Path(explicit).is_file():
            raise PhonewipeError(f"adb binary {explicit!r} not found", "install the Debian package adb "
                                 "or pass --adb-path")
        return explicit
    system_adb = shutil.which("adb")  # the distribution's adb server, as a user runs it
    if system_adb:
        return system_adb
    adbutils = adbutils_module()
    try:
        return adbutils.adb_path()
    except adbutils.AdbError as exc:
        raise PhonewipeError("no adb binary found", "install the Debian package adb "
                             "(apt-get install adb)") from exc


@dataclass
class AdbServer:
    """One adb server on ``port``. ``home`` isolates its keys (~/.android) when given."""

    port: int = DEFAULT_PORT
    adb_path: str | None = None
    home: Path | None = None
    kill_timeout: float = KILL_TIMEOUT
    _started_here: bool = field(default=False, init=False)

    @property
    def binary(self) -> str:
        return find_adb(self.adb_path)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            env["HOME"] = str(self.home)
            env["ANDROID_USER_HOME"] = str(self.home / ".android")
            env["ADB_VENDOR_KEYS"] = str(self.home / ".android")
        env.pop("ANDROID_ADB_SERVER_PORT", None)
        return env

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.binary, "-P", str(self.port), *args], env=self.env(),
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PhonewipeError(f"`adb {' '.join(args)}` on port {self.port} did not finish "
                                 f"within {timeout:.0f} s", "check what listens on that port "
                                 "(--adb-port), or restart adb with `adb kill-server`") from exc

    def probe(self, timeout: float = PROBE_TIMEOUT) -> str:
        """"adb" when an adb server answers on the port, "free" when nothing listens there,
        else what is there. Asked by hand: adbutils, when it cannot connect, runs
        `adb start-server` for the default port 5037 (starting the user's own server) and
        tries again. A service that accepts and never answers times out, never hangs."""
        try:
            conn = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        except ConnectionRefusedError:
            return "free"
        except OSError as exc:
            return f"no connection: {exc}"
        try:
            with conn:
                conn.sendall(b"%04xhost:version" % len(b"host:version"))
                status = conn.recv(4)
        except OSError as exc:
            return f"a service that does not answer an adb request ({exc})"
        return "adb" if status == b"OKAY" else f"a service that answers {status!r}"

    def running(self, timeout: float = PROBE_TIMEOUT) -> bool:
        return self.probe(timeout) == "adb"

    def ensure_started(self) -> None:
        found = self.probe()
        if found == "adb":
            return
        if found != "free":  # starting adb there would only wait for it
            raise PhonewipeError(f"port {self.port} is held by something that is not an adb "
                                 f"server: {found}", "choose another port with --adb-port, or "
                                 "stop what listens there")
        result = self.run("start-server", timeout=10)  # a server starts in about a second
        if result.returncode != 0 or not self.running():
            raise PhonewipeError(f"cannot start the adb server on port {self.port}: "
                                 f"{(result.stderr or result.stdout).strip()[:200]}",
                                 "check that adb is installed and the port is free")
        self._started_here = True

    def client(self) -> adbutils.AdbClient:
        self.ensure_started()
        return _client_class()(host="127.0.0.1", port=self.port, socket_timeout=30)

    def connect(self, address: str, timeout: float = 10.0) -> str:
        """`adb connect ADDRESS`, then wait until the device is listed. Returns its serial."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            answer = client.connect(address, timeout=5)
            if "connected to" in answer and "unable" not in answer and "failed" not in answer:
                states = {d.serial: d.state for d in client.list()}
                if states.get(address) in ("device", "unauthorized"):
                    return address
            if time.monotonic() > deadline:
                raise DeviceNotFound(f"cannot connect the adb server to {address}: {answer.strip()}",
                                     "check the address and that the device or emulator is running")
            time.sleep(0.2)

    def stop(self) -> None:
        """`adb kill-server`; a server that takes the request and then hangs on its way out
        (Debian's adb 29 now and then, stopped right after it started, on a loaded host) is
        ended by signal: it is an adb process listening on our port."""
        if not self.running():
            return
        try:
            self.run("kill-server", timeout=self.kill_timeout)
        except PhonewipeError:
            hung = server_pids(self.port)
            if not hung:
                raise
            for pid in hung:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def server_pids(port: int) -> list[int]:
    """The adb server processes of ``port``: an adb listening there, or one whose command
    line is a server's for that port (`adb -L tcp:PORT fork-server server ...`): a server on
    its way out may have closed its listening socket and still hold the client waiting."""
    pids = {pid for pid in listening_pids(port) if _process_name(pid) == "adb"}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _serves_port(proc, port):
            pids.add(int(proc.name))
    return sorted(pids)


def _serves_port(proc: Path, port: int) -> bool:
    try:
        args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "fork-server" in args and _process_name(int(proc.name)) == "adb" \
        and any(a in (f"tcp:{port}", f"tcp:localhost:{port}", f"tcp:127.0.0.1:{port}") for a in args)


def listening_pids(port: int) -> list[int]:
    """The processes with a TCP socket listening on ``port`` (Linux /proc; [] elsewhere)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" \
                    and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    found = []
    for proc in Path("/proc").iterdir() if inodes else ():
        if proc.name.isdigit() and _holds_any(proc, inodes):
            found.append(int(proc.name))
    return found


def _holds_any(proc: Path, links: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in links for fd in (proc / "fd").iterdir())
    except OSError:  # gone meanwhile, or not ours to look at
        return False


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
