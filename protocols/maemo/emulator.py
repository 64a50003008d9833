"""The emulated N900: a real SSH server (asyncssh) on loopback, as the phone's OpenSSH is
reached over USB networking, whose sessions run the BusyBox-like shell (shell.py) over the
core's emulated storage. It logs in ``user`` with the profile's password; root is `sudo
gainroot`, as on the phone."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import asyncssh

from .profile import MaemoProfile
from .shell import Phone, Shell


class _Channel:
    """The shell's view of one SSH session: binary stdin lines and reads, stdout, stderr.
    Output is sent when the shell next waits for input or ends (one SSH packet per many
    short writes, as a pipe's buffer would)."""

    FLUSH_AT = 1 << 16

    def __init__(self, process: asyncssh.SSHServerProcess) -> None:
        self.process = process
        self.pending: dict[str, list[bytes]] = {"out": [], "err": []}
        self.pending_bytes = 0

    def flush(self) -> None:
        for name, stream in (("out", self.process.stdout), ("err", self.process.stderr)):
            if self.pending[name]:
                stream.write(b"".join(self.pending[name]))
                self.pending[name].clear()
        self.pending_bytes = 0

    async def _ready_to_read(self) -> None:
        if self.pending_bytes or self.pending["err"]:
            self.flush()
            await self.process.stdout.drain()

    async def readline(self) -> bytes:
        """The next line; output waits unless the line is not there yet (an interactive
        user sees each answer before typing the next command)."""
        task = asyncio.ensure_future(self.process.stdin.readline())
        for _ in range(3):  # a line already received completes within a few loop turns
            if task.done():
                break
            await asyncio.sleep(0)
        if not task.done():
            await self._ready_to_read()
        return bytes(await task)

    async def read(self, n: int) -> bytes:
        await self._ready_to_read()
        return bytes(await self.process.stdin.read(n))

    def _queue(self, name: str, data: bytes) -> None:
        self.pending[name].append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= self.FLUSH_AT:
            self.flush()

    def out(self, data: bytes) -> None:
        self._queue("out", data)

    def err(self, data: bytes) -> None:
        self._queue("err", data)


class _Server(asyncssh.SSHServer):
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == (self.user, self.password)


@dataclass
class EmulatedN900:
    """`start_emulator`'s answer: the SSH server of one emulated N900 until stopped."""

    phone: Phone
    profile: MaemoProfile
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: Any
    port: int

    @property
    def endpoints(self) -> dict[str, str]:
        return {"maemo": f"127.0.0.1:{self.port}"}

    @classmethod
    def start(cls, storage: Any, maemo: MaemoProfile) -> "EmulatedN900":
        phone = Phone(storage, maemo.software_version, maemo.product,
                      (storage.state.imeis or [""])[0], maemo.gainroot)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="emulated-n900", daemon=True)
        thread.start()
        key = asyncssh.generate_private_key("ssh-ed25519")

        async def handle(process: asyncssh.SSHServerProcess) -> None:
            channel = _Channel(process)
            shell = Shell(phone, channel)
            try:
                if process.command:
                    status, ends = await shell.run_line(process.command)
                    if not ends and process.command.strip() == "sh":
                        status = await shell.run_script()
                else:
                    status = await shell.run_script()
                channel.flush()
            except (BrokenPipeError, ConnectionError, asyncssh.Error):
                return
            process.exit(status)

        async def listen() -> Any:
            return await asyncssh.create_server(
                lambda: _Server(maemo.user, maemo.password), "127.0.0.1", 0,
                server_host_keys=[key], process_factory=handle, encoding=None,
                line_editor=False)

        server = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
        port = server.sockets[0].getsockname()[1]
        return cls(phone, maemo, loop, thread, server, port)

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
