"""What the adb client makes of what a phone or the adb server sends: parsers that never crash
on arbitrary text, and one clear line when a frame, the phone or the server goes wrong."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonewipe.protocols.adb.client import (
    parse_df_kib,
    parse_getprop,
    parse_imei_parcel,
)

prop_names = st.from_regex(r"[a-z][a-z0-9_.]{0,30}", fullmatch=True)
prop_values = st.text(st.characters(blacklist_characters="\n\r]", codec="utf-8"), max_size=40)


@given(st.dictionaries(prop_names, prop_values, max_size=20))
def test_getprop_round_trips(props: dict[str, str]) -> None:
    text = "".join(f"[{k}]: [{v}]\n" for k, v in props.items())
    assert parse_getprop(text) == props


@given(st.text())
def test_parsers_accept_any_text(text: str) -> None:
    assert isinstance(parse_getprop(text), dict)
    imei = parse_imei_parcel(text)
    assert imei is None or (imei.isdigit() and 14 <= len(imei) <= 16)
    df = parse_df_kib(text)
    assert df is None or (df[0] >= 0 and df[1] >= 0)


@given(st.from_regex(r"[0-9]{15}", fullmatch=True))
def test_imei_from_a_parcel_dump(imei: str) -> None:
    chunks = [imei[i:i + 6] for i in range(0, len(imei), 6)]
    lines = [f"0x{i:08x}: 00000000 00000000 '{'.'.join(c)}'" for i, c in enumerate(chunks)]
    assert parse_imei_parcel("Result: Parcel(\n" + "\n".join(lines) + ")") == imei


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_df_reads_total_and_available(total: int, avail: int) -> None:
    text = ("Filesystem     1K-blocks    Used Available Use% Mounted on\n"
            f"/dev/block/dm-5 {total} 0 {avail} 1% /data\n")
    assert parse_df_kib(text) == (total, avail)
    assert parse_df_kib("Filesystem 1K-blocks Used Available Use% Mounted on\n") is None


# -- the client's reading of a shell v2 answer, over a real socket ----------------------------
@contextlib.contextmanager
def _session_reading(answer: bytes, piece: int) -> Iterator[tuple[Any, Any]]:
    """An AdbSession and a connection whose far end sends ``answer`` ``piece`` bytes at a
    time, then closes; the adb server the session started is stopped afterwards."""
    import socket
    import threading
    from types import SimpleNamespace

    from phonewipe.demo import free_port
    from phonewipe.erase.model import Endpoint
    from phonewipe.erase.plugin import PluginOptions, load_plugins
    from phonewipe.protocols.adb.client import AdbSession

    plugin = load_plugins(PluginOptions({"adb_port": free_port()}), only=["adb"])["adb"]
    session = AdbSession(plugin, Endpoint("adb", "adb", "127.0.0.1:9"), "device")
    near, far = socket.socketpair()
    near.settimeout(10)

    def send() -> None:
        for i in range(0, len(answer), piece):
            far.sendall(answer[i:i + piece])
        far.close()
    threading.Thread(target=send, daemon=True).start()
    try:
        yield session, SimpleNamespace(conn=near)
    finally:
        near.close()
        plugin.server.stop()


def test_a_shell_answer_in_many_packets_and_odd_pieces_is_read_whole() -> None:
    from phonewipe.protocols.adb import wire
    blocks = [bytes([i % 256]) * 4096 for i in range(300)]
    answer = b"".join(wire.shell_header(wire.SHELL_STDOUT, len(b)) + b for b in blocks)
    answer += wire.shell_header(wire.SHELL_STDERR, 3) + b"err" + wire.shell_exit_packet(7)
    with _session_reading(answer, piece=1021) as (session, conn):
        result = session._collect(conn, 0, 0)
    assert (result.status, result.stdout, result.stderr) == (7, b"".join(blocks), b"err")


@pytest.mark.parametrize("answer, words", [
    (b"\x01\xff\xff\xff\x7f", "exceeds"),  # 2 GiB of stdout announced
    (b"\x09\x00\x00\x00\x00", "unknown packet id 9"),
])
def test_a_malformed_shell_frame_is_one_clear_line(answer: bytes, words: str) -> None:
    from phonewipe.erase.errors import ProtocolError
    with _session_reading(answer, piece=len(answer)) as (session, conn), \
            pytest.raises(ProtocolError) as caught:
        session._collect(conn, 0, 0)
    line = caught.value.line()
    assert "malformed shell frame" in line and words in line and "\n" not in line


def test_an_adb_server_that_dies_is_named_not_blamed_on_the_cable(tmp_path, monkeypatch) -> None:
    """A phone whose commands fail because the host's adb server went away is told apart
    from a pulled cable: the advice differs."""

    from conftest import require_binary

    from phonewipe.demo import free_port
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    from phonewipe.erase.errors import DeviceGone
    from phonewipe.erase.plugin import PluginOptions, load_plugins
    from phonewipe.protocols.adb.server import AdbServer
    require_binary("adb")
    monkeypatch.delenv("ANDROID_ADB_SERVER_PORT", raising=False)  # adb's own default: 5037
    users_server = AdbServer().probe(timeout=2)  # the default port 5037, this user's own
    plugins = load_plugins(PluginOptions({"adb_port": free_port(), "adb_home": tmp_path / "home"}),
                           only=["adb"])
    handsets = start_handsets(["rooted"], tmp_path / "handsets", plugins, userdata_bytes=4 << 20)
    try:
        plugin = plugins["adb"]
        [endpoint] = [e for e in plugin.discover() if e.address == handsets[0].endpoints["adb"]]
        session = plugin.open(endpoint)
        assert session.run("true").status == 0
        plugin.server.stop()
        with pytest.raises(DeviceGone) as gone:
            session.run("true")
        assert "adb server" in gone.value.message and "cable" not in gone.value.line()
        if users_server == "free":  # adbutils, refused, would start one there and wait for it
            assert AdbServer().probe(timeout=2) == "free", "a server was started on port 5037"
    finally:
        stop_handsets(handsets)
        plugins["adb"].server.stop()
