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


# -- ANDROID_ADB_SERVER_PORT: the port adb itself uses when given none -----------------------
@pytest.mark.parametrize("value, port", [(None, 5037), ("", 5037), (" 6037 ", 6037), ("65535", 65535)])
def test_the_port_adb_would_use(value: str | None, port: int) -> None:
    from phonewipe.protocols.adb.server import PORT_VARIABLE, port_from_environment
    assert port_from_environment({} if value is None else {PORT_VARIABLE: value}) == port


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "²", "5037\x1b[2J"])
def test_a_port_variable_that_is_no_port_is_named(value: str) -> None:
    from phonewipe.protocols.adb.server import PORT_VARIABLE, port_from_environment
    with pytest.raises(PhonewipeError) as error:
        port_from_environment({PORT_VARIABLE: value})
    assert PORT_VARIABLE in error.value.message and "--adb-port" in error.value.line()
    assert "\x1b" not in error.value.line()


def test_the_plugin_takes_the_port_given_then_adbs_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from phonewipe.erase.plugin import PluginOptions, load_plugins
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "6123")
    assert load_plugins(PluginOptions(), only=["adb"])["adb"].server.port == 6123
    given = PluginOptions({"adb_port": 6124})
    assert load_plugins(given, only=["adb"])["adb"].server.port == 6124
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT")
    assert load_plugins(PluginOptions(), only=["adb"])["adb"].server.port == 5037


def test_a_bad_port_variable_stops_adb_not_the_other_plugins(monkeypatch: pytest.MonkeyPatch,
                                                             no_adb_runs: None) -> None:
    """Every command loads every plugin: a bad variable is said when adb is asked."""
    from phonewipe.erase.model import Endpoint
    from phonewipe.erase.plugin import PluginOptions, load_plugins
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "adb")
    plugins = load_plugins(PluginOptions())
    adb = plugins.pop("adb")
    for call in (adb.discover, lambda: adb.open(Endpoint("adb", "adb", "serial"))):
        with pytest.raises(PhonewipeError, match="ANDROID_ADB_SERVER_PORT"):
            call()
    assert plugins  # the others load as ever
