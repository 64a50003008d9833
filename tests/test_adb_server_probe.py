"""Asking whether an adb server answers on a port starts nothing: adbutils, when it cannot
connect, runs `adb start-server` for the default port 5037 (the user's own server) and waits
up to 20 s; the probe asks host:version by hand. A port held by something else is refused
at once instead of after a start-server that could only time out."""
from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import adbutils._adb
import pytest

from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.ports import free_port
from phonewipe.protocols.adb.server import AdbServer


@pytest.fixture
def no_adb_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"an adb command was run: {args}")
    monkeypatch.setattr(adbutils._adb.subprocess, "run", refuse)
    monkeypatch.setattr(AdbServer, "run", refuse)


@pytest.fixture
def talker() -> Iterator[int]:
    """A service that answers every connection with something that is not adb's OKAY."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_a_free_port_is_free_and_nothing_is_started(no_adb_runs: None) -> None:
    server = AdbServer(port=free_port())
    assert server.probe() == "free"
    assert not server.running()
    server.stop()  # nothing to stop: runs nothing


def test_a_port_held_by_another_service_is_refused_at_once(no_adb_runs: None, talker: int) -> None:
    server = AdbServer(port=talker)
    assert "HTTP" in server.probe()
    started = time.monotonic()
    with pytest.raises(PhonewipeError) as caught:
        server.ensure_started()
    assert time.monotonic() - started < 2
    assert "not an adb server" in str(caught.value) and "--adb-port" in caught.value.advice
