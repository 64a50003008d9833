"""An emulated adbd: one handset's ADB daemon over loopback TCP.

The real adb server connects to it with ``adb connect 127.0.0.1:PORT`` and then sees a
phone: CNXN/AUTH handshake, streams, ``shell:``/``shell,v2:``/``exec:``/``sync:``, reboots,
``root:``. Commands run in the emulated shell (`phonewipe.protocols.adb.shell`) against the handset's
`HandsetStorage`, so fault injection behaves as it does for every other protocol.

Threads: one accept loop, one reader per connection, one worker per stream (the command).
Flow control follows adbd: one WRTE in flight per stream, each host WRTE acknowledged with
OKAY once queued for the command, with a bounded queue so a fast host cannot make us
buffer without limit.

The parts: `emulator_transport` (a host connection, its handshake and dispatch),
`emulator_streams` (streams, their stdin and output, flow control), `emulator_sync` (the
``sync:`` service and its `SyncFiles` hook); this module is the daemon: lifetime, device
events (unplug, reboots), the services and the hooks ``shell_runner`` and ``sync_files``.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.storage import HandsetStorage

from . import shell, wire
from .emulator_streams import _Closed, _Output, _RawStdin, _Stream, _V2Stdin
from .emulator_sync import (
    EmulatedSyncFiles,
    SyncFiles,
    SyncFilesFactory,
    SyncSink,
    SyncSource,
    SyncStat,
    serve_sync,
)
from .emulator_transport import _Connection

__all__ = ["ADBD_RESTART_DELAY", "FEATURES", "SHELL_V2_SDK", "EmulatedAdbd", "ShellRunner",
           "SyncFiles", "SyncFilesFactory", "SyncSink", "SyncSource", "SyncStat"]

log = logging.getLogger(__name__)

FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")
SHELL_V2_SDK = 24  # Android 7: adbd before it advertises no features and knows only `shell:`
"""What we advertise: only what is implemented. No delayed_ack (adb 36 would then send
several WRTEs per stream without waiting), no sendrecv_v2* (compressed push/pull), no abb."""

ADBD_RESTART_DELAY = 0.2

ShellRunner = Callable[[str, shell.Reader, shell.Writer, shell.Writer, threading.Event], int]
"""Runs one shell-service command instead of the emulated shell (e.g. as a real process):
(command, stdin, stdout, stderr, cancelled) -> exit status."""


class EmulatedAdbd:
    """One emulated handset's adbd, serving on loopback TCP until `stop()`.

    ``start()`` binds and serves (``port``/``address``/``endpoints`` are valid afterwards);
    ``stop()`` cancels running commands, closes every socket and joins every thread.
    Services: ``shell:CMD``, ``shell,v2[,raw|,pty...]:CMD``, ``exec:CMD``, ``sync:``,
    ``reboot:[bootloader|recovery|fastboot]``, ``root:``, ``unroot:``; anything else is
    refused with CLSE. ``storage.state.mode`` follows reboots (adb, fastboot, recovery,
    setup-wizard); connections are accepted then closed while not in "adb" mode or during
    ``reboot_delay``. A `DeviceUnplugged` from the storage closes everything at once,
    listener included (``unplugged`` becomes True). With ``shell_runner``, ``shell`` and
    ``exec:`` commands run through it (e.g. as real processes) instead of the emulated shell;
    with ``sync_files``, ``sync:`` reads and writes the files it gives (e.g. the same real
    files) instead of the emulated storage.
    """

    def __init__(self, storage: HandsetStorage, host: str = "127.0.0.1", port: int = 0,
                 reboot_delay: float = 0.5, shell_runner: ShellRunner | None = None,
                 sync_files: SyncFilesFactory | None = None) -> None:
        self.storage = storage
        self.shell_runner = shell_runner
        self.sync_files = sync_files
        self.host = host
        self.reboot_delay = reboot_delay
        self.port = port
        self.adbd_root = False
        self.unplugged = False
        self.dirs: set[str] = set()  # directories made with mkdir (not in the file table)
        self._requested_port = port
        self._keys: list[rsa.RSAPublicKey] = []
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._down_until = 0.0
        self._started = False
        self._resets_seen = storage.state.resets

    # -- public ---------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoints(self) -> dict[str, str]:
        return {"adb": self.address}

    @property
    def mode(self) -> str:
        return self.storage.state.mode

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    @property
    def online(self) -> bool:
        """Whether a host connecting now would reach adbd."""
        return (not self.unplugged and not self.storage.faults.unplugged
                and not self._stopping.is_set() and self.storage.state.mode == "adb"
                and time.monotonic() >= self._down_until)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("emulated adbd already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(16)
        listener.settimeout(0.25)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._started = True
        self._spawn(self._accept_loop, name=f"adbd-accept-{self.port}")

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        self._drop_connections(cancel=True)
        deadline = time.monotonic() + 10
        current = threading.current_thread()
        while True:
            with self._lock:
                threads = [t for t in self._threads if t is not current]
            if not threads:
                break
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    log.warning("adbd %s: thread %s did not stop", self.address, t.name)
            with self._lock:
                self._threads.difference_update(t for t in threads if not t.is_alive())
            if time.monotonic() > deadline:
                break

    def __enter__(self) -> "EmulatedAdbd":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authorized_keys(self) -> list[rsa.RSAPublicKey]:
        with self._lock:
            return list(self._keys)

    def authorize(self, key: rsa.RSAPublicKey) -> None:
        """What tapping "Allow" on the USB debugging prompt does."""
        with self._lock:
            numbers = key.public_numbers()
            if all(k.public_numbers() != numbers for k in self._keys):
                self._keys.append(key)

    def banner(self) -> bytes:
        d = self.storage.profile.device
        return wire.make_banner("device", {"ro.product.name": d.product,
                                           "ro.product.model": d.model,
                                           "ro.product.device": d.device},
                                 list(FEATURES) if d.sdk >= SHELL_V2_SDK else [])

    def wait_online(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.online:
                return True
            time.sleep(0.02)
        return self.online

    # -- threads --------------------------------------------------------------------------
    def _spawn(self, target: Callable, *args: object, name: str) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:  # stop() only ever sees started threads
            self._threads.add(thread)
            thread.start()
        return thread

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set() and not self.unplugged:
            try:
                sock, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if not self.online:
                sock.close()  # rebooting, in another mode, or gone: the host sees EOF
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, f"{peer[0]}:{peer[1]}")
            with self._lock:
                self._connections.add(conn)
            self._spawn(conn.serve, name=f"adbd-conn-{self.port}")

    def _forget_connection(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
            except OSError:
                pass
            try:
                listener.close()
            except OSError:
                pass

    def _drop_connections(self, cancel: bool, abort: bool = False) -> None:
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            conn.close(cancel=cancel, abort=abort)

    # -- device events --------------------------------------------------------------------
    def unplug(self) -> None:
        """The cable is out: every socket closes now and nothing connects any more."""
        with self._lock:
            if self.unplugged:
                return
            self.unplugged = True
        log.info("adbd %s: device unplugged", self.address)
        self._close_listener()
        self._drop_connections(cancel=True, abort=True)

    def reboot(self, target: str = "") -> None:
        """target: "" | "bootloader" | "fastboot" | "recovery" | "testharness" | "adbd"."""
        with self._lock:
            if self.unplugged or self._stopping.is_set():
                return
            state = self.storage.state
            delay = self.reboot_delay if target != "adbd" else min(self.reboot_delay,
                                                                     ADBD_RESTART_DELAY)
            if target != "adbd":
                self.adbd_root = False  # service.adb.root does not survive a reboot
                self.storage.drop_caches()  # nor does RAM
            if target in ("bootloader", "fastboot"):
                state.mode = "fastboot"
            elif target in ("recovery", "testharness"):
                state.mode = "recovery"
            self._down_until = time.monotonic() + delay
            self.storage.save()
        log.info("adbd %s: reboot %s", self.address, target or "(normal)")
        self._drop_connections(cancel=True)
        self._spawn(self._finish_reboot, target, delay, name=f"adbd-reboot-{self.port}")

    def _finish_reboot(self, target: str, delay: float) -> None:
        self._stopping.wait(delay)
        with self._lock:
            if self.unplugged:
                return
            state = self.storage.state
            if target == "recovery":
                if "--wipe_data" in state.recovery_command:
                    self.storage.factory_reset()
                    state.recovery_command = ""
                    state.mode = "setup-wizard"  # adb is off after a reset: the host loses us
                    self._keys.clear()
                    self.dirs.clear()
            elif target == "testharness":
                self.storage.factory_reset()
                state.test_harness = True
                state.google_accounts = []
                state.mode = "adb"  # test harness mode keeps adb on and the host key
                self.dirs.clear()
            elif target in ("", "adbd"):
                state.mode = "adb"
            self.storage.save()

    # -- services -------------------------------------------------------------------------
    def service(self, name: str) -> Callable[[_Stream], list[str]] | None:
        """The handler for an OPEN of ``name``, or None (the stream is refused)."""
        if name.startswith("shell"):
            head, sep, command = name.partition(":")
            options = head.split(",")
            if not sep or options[0] != "shell":
                return None
            v2 = "v2" in options[1:]
            if options[1:] and self.storage.profile.device.sdk < SHELL_V2_SDK:
                return None  # an old adbd refuses `shell,v2,...:` as an unknown service
            if not command:
                return None  # interactive shells are not emulated
            return lambda stream: self._shell(stream, command, v2)
        if name.startswith("exec:"):
            command = name[len("exec:"):]
            return (lambda stream: self._shell(stream, command, False)) if command else None
        if name == "sync:":
            return self._sync
        if name.startswith("reboot:"):
            target = name[len("reboot:"):]
            if target not in ("", "bootloader", "recovery", "fastboot"):
                return None
            return lambda stream: [f"reboot:{target}"]
        if name == "root:":
            return self._root
        if name == "unroot:":
            return self._unroot
        return None

    def _run_stream(self, stream: _Stream, handler: Callable[[_Stream], list[str]]) -> None:
        events: list[str] = []
        try:
            events = handler(stream) or []
        except DeviceUnplugged:
            stream.conn.forget(stream)
            self.unplug()
            return
        except (shell.Cancelled, _Closed, BrokenPipeError, EOFError, ConnectionError):
            pass
        except Exception:
            log.exception("adbd %s: service %r failed", self.address, stream.service)
        try:
            stream.finish()
        except _Closed:
            pass
        for event in events:
            if event.startswith("reboot:"):
                self.reboot(event[len("reboot:"):])
            elif event == "testharness":
                self.reboot("testharness")
            elif event == "adbd-restart":
                self.reboot("adbd")

    def _context(self, stream: _Stream, out: _Output, stdin: shell.Reader,
                 events: list[str]) -> shell.ShellContext:
        with self._lock:
            if self._resets_seen != self.storage.state.resets:  # a reset from elsewhere
                self._resets_seen = self.storage.state.resets
                self.dirs.clear()
        return shell.ShellContext(
            storage=self.storage, is_root=self.adbd_root, stdin=stdin, stdout=out.stdout,
            stderr=out.stderr, adbd_root=self.adbd_root, events=events.append,
            cancelled=stream.cancelled, flush=out.flush, dirs=self.dirs)

    def _shell(self, stream: _Stream, command: str, v2: bool) -> list[str]:
        out = _Output(stream, v2)
        if self.shell_runner is not None:  # its stdin is read on another thread: no flush
            stdin = (_V2Stdin if v2 else _RawStdin)(stream.inbox)
            out.exit(self.shell_runner(command, stdin, out.stdout, out.stderr, stream.cancelled))
            return []
        stdin = (_V2Stdin if v2 else _RawStdin)(stream.inbox, out.flush)
        events: list[str] = []
        ctx = self._context(stream, out, stdin, events)
        status = shell.run(command, ctx)
        out.exit(status)
        return events

    def _root(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        access = self.storage.profile.access.root
        if access != "adbd":
            out.stdout(b"adbd cannot run as root in production builds\n")
            out.flush()
            return []
        if self.adbd_root:
            out.stdout(b"adbd is already running as root\n")
            out.flush()
            return []
        out.stdout(b"restarting adbd as root\n")
        out.flush()
        with self._lock:
            self.adbd_root = True
        return ["adbd-restart"]

    def _unroot(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        if not self.adbd_root:
            out.stdout(b"adbd not running as root\n")
            out.flush()
            return []
        out.stdout(b"restarting adbd as non root\n")
        out.flush()
        with self._lock:
            self.adbd_root = False
        return ["adbd-restart"]

    # -- sync: ----------------------------------------------------------------------------
    def _sync(self, stream: _Stream) -> list[str]:
        out = _Output(stream, False)
        rd = _RawStdin(stream.inbox, out.flush)
        ctx = self._context(stream, out, rd, [])
        files = self.sync_files() if self.sync_files is not None else \
            EmulatedSyncFiles(self, shell.Vfs(ctx, self.adbd_root))
        try:
            serve_sync(out, rd, files, ctx, self.address)
        finally:
            files.close()
        return []
