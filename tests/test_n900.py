"""The Nokia N900 over real SSH: the emulated phone is an asyncssh server on loopback whose
shell serves the core's emulated storage; the maemo plugin's client logs in, becomes root
with `sudo gainroot`, streams the keyed pattern into dd and samples it back."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Destination, Operator
from phonewipe.erase.plugin import close_plugins, sandbox_plugins
from phonewipe.erasing import run_erase
from phonewipe.protocols.maemo import client as maemo_client
from phonewipe.protocols.maemo import session as maemo_session

SETTINGS = JobSettings(operator=Operator(name="Test", organization="Test Org"),
                       destination=Destination("resale"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phonewipe.certificates.keys import init_keys
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, "Test Org", "n900 tests")
    return directory


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Any]:
    """start(PROFILE) -> (plugin, handset): an emulated N900 on loopback."""
    plugins = sandbox_plugins(tmp_path)
    started: list[Any] = []

    def start(profile: str) -> Any:
        [handset] = start_handsets([profile], tmp_path / "handsets" / str(len(started)), plugins)
        started.append(handset)
        return plugins["maemo"], handset

    yield start
    stop_handsets(started)
    close_plugins(plugins)


def erase(plugin: Any, keys: Path, out: Path) -> Any:
    targets = [(plugin, e) for e in plugin.discover()]
    assert len(targets) == 1
    [result] = run_erase(targets, SETTINGS, out, keys, True)
    return result.record


def test_emulated_n900_is_erased_and_verified_over_ssh(bench: Any, keys: Path,
                                                      tmp_path: Path) -> None:
    plugin, handset = bench("n900")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "ERASED_VERIFIED", record.reason
    assert (record.device.manufacturer, record.device.model) == ("Nokia", "N900 (RX-51)")
    assert record.device.imeis == tuple(handset.storage.state.imeis)
    assert record.device.os_version == "RX-51_2009SE_21.2011.38-1_PR_MR0"
    assert record.device.capacity_bytes == handset.storage.size
    assert "flasher" in record.sanitization.details["reuse"]
    assert record.verification.status == "passed" and record.verification.samples_read > 1000


def test_lying_n900_fails(bench: Any, keys: Path, tmp_path: Path) -> None:
    plugin, _ = bench("n900-lying")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED", f"false {record.outcome.value}"
    assert "verification failed" in record.reason


def test_an_emmc_hiding_its_tail_behind_its_reported_size_fails(bench: Any, keys: Path,
                                                                tmp_path: Path) -> None:
    plugin, handset = bench("n900-hidden-area")
    assert handset.storage.table_size("userdata") > handset.storage.size
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED", f"false {record.outcome.value}"
    assert "dd on the N900 failed after" in record.reason, record.reason
    assert "No space left on device" in record.reason and "\n" not in record.reason


def test_a_dd_that_stops_reading_and_says_it_succeeded_fails(
        bench: Any, keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lying dd: takes the first half of the stream, then exits 0 with no complaint."""
    from phonewipe.protocols.maemo import shell_dd

    async def half(shell: Any, bs: int, seek: int, err: Any) -> int:
        await shell.channel.read(shell.phone.storage.size // 2)
        return 0

    monkeypatch.setattr(shell_dd, "_write", half)
    plugin, _ = bench("n900")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED", f"false {record.outcome.value}"
    assert "stopped reading after" in record.reason and "yet reported success" in record.reason


@pytest.mark.parametrize("rows", ["disk-only", "without-partitions"])
def test_an_emmc_size_said_too_small_is_not_erased_by_it(
        bench: Any, keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: str) -> None:
    """/proc/partitions gives mmcblk0 as 3/4 of the eMMC: an erase of that size would leave
    the last quarter with the old data. Its partitions then add up to more than the disk;
    with no partition rows, dd finds data past the said end."""
    from phonewipe.protocols.maemo import shell as maemo_shell
    real_file = maemo_shell.Shell._file

    def lying_file(self: Any, path: str) -> bytes | None:
        data = real_file(self, path)
        if path == "/proc/partitions" and data is not None:
            total = self.phone.storage.size // 1024
            data = data.replace(f" {total} mmcblk0\n".encode(), f" {total * 3 // 4} mmcblk0\n".encode())
            if rows == "without-partitions":
                data = b"".join(line for line in data.splitlines(True) if b"mmcblk0p" not in line)
        return data

    monkeypatch.setattr(maemo_shell.Shell, "_file", lying_file)
    plugin, handset = bench("n900")
    before = (handset.storage.directory / "userdata.img").read_bytes()
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "BLOCKED", f"false {record.outcome.value}: {record.reason}"
    assert "could leave old data beyond it" in record.reason
    assert ("partitions add up" if rows == "disk-only" else "dd reads data past") in record.reason
    assert (handset.storage.directory / "userdata.img").read_bytes() == before


def test_a_disconnect_message_from_the_phone_reaches_the_record_escaped_and_cut(
        bench: Any, keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The phone's sshd drops the link with words of its own: they are device strings."""
    from phonewipe.erase.job import MAX_REASON
    from phonewipe.protocols.maemo import emulator
    hostile = "bye\x1b[2K\x1b[1A\u202eSSAP DEIFIREV_DESARE " + "A" * 5000

    def refuse(self: Any, username: str, password: str) -> bool:
        raise asyncssh.HostKeyNotVerifiable(hostile)  # sent to the client as its reason

    monkeypatch.setattr(emulator._Server, "validate_password", refuse)
    plugin, _ = bench("n900")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED"
    assert "\x1b" not in record.reason and "\u202e" not in record.reason
    assert "\\u202e" in record.reason and len(record.reason) < MAX_REASON + 40


def test_a_read_back_answered_by_the_page_cache_would_pass_the_liar(
        bench: Any, keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulated phone's page cache is real enough to matter: a client that skips the
    cache drop passes the lying N900 (so the test above can fail)."""
    plugin, _ = bench("n900-lying")
    monkeypatch.setattr(maemo_session.MaemoReader, "bypass_cache", lambda self: "trusted RAM")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "ERASED_VERIFIED"


def test_a_home_left_mounted_writes_over_the_pattern(bench: Any, keys: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the client remounts everything read-only first: the emulated /home commits its
    journal after the dd, and a client that skips that step fails an honest phone."""
    plugin, _ = bench("n900")
    monkeypatch.setattr(maemo_client, "PREPARE", b"")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED"


def test_unreadable_emmc_blocks_are_not_taken_for_data(bench: Any, keys: Path,
                                                       tmp_path: Path) -> None:
    plugin, _ = bench("n900-unreadable")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "FAILED"
    assert any("unreadable" in f.found for f in record.verification.failures)


def test_without_gainroot_nothing_is_written(bench: Any, keys: Path, tmp_path: Path) -> None:
    plugin, handset = bench("n900-no-rootsh")
    before = (handset.storage.directory / "userdata.img").read_bytes()
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "BLOCKED" and "rootsh" in record.reason
    assert (handset.storage.directory / "userdata.img").read_bytes() == before


def test_the_phone_shell_over_ssh(bench: Any) -> None:
    """What an SSH client sees: Maemo's files, user and root, dd refused to the user."""
    plugin, handset = bench("n900")
    [endpoint] = plugin.discover()
    client = plugin.connect(endpoint.address)
    try:
        assert client.run("cat /etc/osso_software_version").stdout.startswith(b"RX-51_2009SE")
        sizes = maemo_client.parse_partitions(client.run("cat /proc/partitions").stdout.decode())
        assert sizes["mmcblk0"] == handset.storage.size
        assert client.run("id -u").stdout == b"29999\n"
        denied = client.run("dd if=/dev/mmcblk0 bs=4096 count=1")
        assert denied.status == 1 and b"Permission denied" in denied.stderr
        root = client.run_root("id -u\n")
        assert root.stdout == b"Root shell enabled\n0\n"
    finally:
        client.close()


def test_a_wrong_password_is_refused(bench: Any) -> None:
    plugin, _ = bench("n900")
    [endpoint] = plugin.discover()
    plugin.emulated[endpoint.address] = ("user", "wrong")
    with pytest.raises(maemo_client.LoginRefused) as caught:
        plugin.open(endpoint)
    assert "refused the login of 'user'" in caught.value.line()
    assert "--maemo-password" in caught.value.line()
    assert isinstance(caught.value.__cause__, asyncssh.PermissionDenied)


def test_the_password_can_come_from_the_environment(bench: Any, monkeypatch) -> None:
    """Not from the command line, which every user sees in `ps`."""
    plugin, _ = bench("n900")
    [endpoint] = plugin.discover()
    user, password = plugin.emulated.pop(endpoint.address)  # as a real N900: the options'
    assert user == plugin.option("user") and not plugin.option("password")
    with pytest.raises(maemo_client.LoginRefused):
        plugin.open(endpoint)
    monkeypatch.setenv("PHONEWIPE_MAEMO_PASSWORD", password)
    session = plugin.open(endpoint)
    try:
        assert session.identify().imeis
    finally:
        session.close()


# -- parsers --------------------------------------------------------------------------------------
def test_dd_errors_between_an_extents_markers_mark_it_unreadable() -> None:
    stderr = ("<0\n1+0 records in\n1+0 records out\n>0\n<1\ndd: /dev/mmcblk0: Input/output error\n"
              "1+0 records in\n1+0 records out\n>1\n<2\n>2\n")
    assert maemo_client._failed_extents(stderr) == {1}


@given(st.text())
def test_stderr_parser_never_raises(text: str) -> None:
    assert isinstance(maemo_client._failed_extents(text), set)


@given(st.text())
def test_partitions_parser_never_raises(text: str) -> None:
    sizes = maemo_client.parse_partitions(text)
    assert all(v >= 0 for v in sizes.values())


@given(st.text())
def test_imei_parser_finds_only_digits(text: str) -> None:
    imei = maemo_client.parse_imei(text)
    assert imei == "" or imei.isdigit()


def test_discovery_finds_an_ssh_server_by_its_banner(bench: Any) -> None:
    """A configured address is listed when an SSH server answers there (no login yet)."""
    from phonewipe.erase.plugin import PluginOptions
    from phonewipe.protocols.maemo import MaemoPlugin, answers_ssh
    plugin, _ = bench("n900")
    [endpoint] = plugin.discover()
    other = MaemoPlugin(PluginOptions({"maemo_host": [endpoint.address, "127.0.0.1:1"]}))
    assert [e.address for e in other.discover()] == [endpoint.address]
    assert answers_ssh(endpoint.address, 3) and not answers_ssh("127.0.0.1:1", 1)


def test_hostile_software_strings_are_shown_escaped(bench: Any, keys: Path,
                                                    tmp_path: Path) -> None:
    plugin, _ = bench("n900-hostile-strings")
    record = erase(plugin, keys, tmp_path / "out")
    assert record.outcome.value == "ERASED_VERIFIED", record.reason
    shown = f"{record.device.os_version} {record.device.model}"
    assert not any(ch in shown for ch in "\x1b\x07\u202e")
    assert "\\x1b[2K" in record.device.os_version and "\\u202e" in record.device.os_version
    assert "device_strings" in record.evidence


def test_the_method_the_plugin_names_is_the_session_s() -> None:
    from phonewipe.protocols.maemo import MaemoPlugin
    assert MaemoPlugin.method_names == (maemo_session.PATTERN.name,)
