"""`--via fastboot` and following work with `phonewipe emulate` handsets without extra flags
(#18 item 4): the emulating process publishes its bootloaders' loopback endpoints in a
directory only the user can write, and the fastboot plugin of another process finds them."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from test_end_to_end import Bench
from test_fastboot_follow import fleet  # noqa: F401 - a fixture

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation import registry
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import PluginOptions, load_plugins


# -- the directory ------------------------------------------------------------------------------
def other_process_entry(directory: Path, address: str = "tcp:127.0.0.1:5555") -> Path:
    """An entry as a live process other than this one writes it."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    path = registry.publish(directory, "fastboot", address, "PW0001")
    data = json.loads(path.read_text())
    data["pid"] = sleeper.pid
    path.write_text(json.dumps(data))
    other_process_entry.sleepers.append(sleeper)  # type: ignore[attr-defined]
    return path


other_process_entry.sleepers = []  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _stop_sleepers() -> Iterator[None]:
    yield
    for p in other_process_entry.sleepers:  # type: ignore[attr-defined]
        p.kill()
        p.wait()
    other_process_entry.sleepers.clear()  # type: ignore[attr-defined]


def test_another_live_process_entries_are_found(tmp_path: Path) -> None:
    directory = tmp_path / "reg"
    other_process_entry(directory)
    [entry] = registry.published(directory, "fastboot")
    assert entry.address == "tcp:127.0.0.1:5555" and entry.serial == "PW0001"
    assert registry.published(directory, "adb") == []
    assert oct(directory.stat().st_mode & 0o777) == "0o700"


def test_own_and_dead_entries_are_not_listed_and_dead_ones_removed(tmp_path: Path) -> None:
    directory = tmp_path / "reg"
    own = registry.publish(directory, "fastboot", "tcp:127.0.0.1:5556", "PW0002")
    assert registry.published(directory, "fastboot") == []  # this process sees its own directly
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data = json.loads(own.read_text())
    data["pid"] = dead.pid
    own.write_text(json.dumps(data))
    assert registry.published(directory, "fastboot") == [] and not own.exists()


def test_entries_others_could_have_written_are_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "reg"
    path = other_process_entry(directory)
    os.chmod(path, 0o666)  # a file anyone could have rewritten
    assert registry.published(directory, "fastboot") == []
    os.chmod(path, 0o600)
    os.chmod(directory, 0o777)  # a directory anyone could have written into
    assert registry.published(directory, "fastboot") == []
    os.chmod(directory, 0o700)
    assert len(registry.published(directory, "fastboot")) == 1


def test_only_loopback_endpoints_are_published_or_listed(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        registry.publish(tmp_path / "reg", "fastboot", "tcp:192.0.2.7:5554", "PW1")
    path = other_process_entry(tmp_path / "reg")
    data = json.loads(path.read_text())
    data["address"] = "tcp:192.0.2.7:5554"  # a phone cannot write here; still: loopback only
    path.write_text(json.dumps(data))
    assert registry.published(tmp_path / "reg", "fastboot") == []


def test_the_fastboot_plugin_lists_published_bootloaders_once(tmp_path: Path) -> None:
    directory = tmp_path / "reg"
    other_process_entry(directory, "tcp:127.0.0.1:1")
    plugin = load_plugins(PluginOptions({registry.DIR_KEY: directory,
                                         "fastboot_tcp": ["127.0.0.1:1"]}),
                          only=["fastboot"])["fastboot"]
    assert plugin._tcp_addresses() == ["tcp:127.0.0.1:1"]  # given and published: once
    assert plugin.discover() == []  # nothing answers there: absent, not an error


# -- through the command line, as a user runs it -------------------------------------------------
@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path, ["rooted", "bootloader-unlocked-user"])
    try:
        yield b
    finally:
        b.close()


def test_erase_via_fastboot_finds_the_emulated_bootloader_without_flags(bench: Bench,
                                                                         tmp_path: Path) -> None:
    listed = json.loads(bench.run("devices", "--json").stdout)
    bootloader = bench.handsets["bootloader-unlocked-user"]
    assert [(d["mode"], d["serial"]) for d in listed if d["plugin"] == "fastboot"] == \
        [("fastboot", bootloader["serial"])]  # no --fastboot-tcp
    serial = bench.handsets["rooted"]["serial"]
    started = time.monotonic()
    result = bench.run("erase", serial, "--via", "fastboot", "--out", str(tmp_path / "out"),
                       "--keys", str(bench.keys), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["outcome"] == "ERASED_VERIFIED", entry
    assert time.monotonic() - started < 60  # found at once, not after the 90 s follow timeout
    shown = json.loads(bench.run("cert", "show", "--json", entry["certificate"]).stdout)
    assert shown["sanitization"]["method"] == "fastboot-raw-pattern"
    assert shown["device"]["manufacturer"] == "Google" and len(shown["device"]["imeis"]) == 2


def test_emulate_withdraws_its_entries_when_it_stops(tmp_path: Path) -> None:
    bench = Bench(tmp_path, ["bootloader-unlocked-user"])
    directory = tmp_path / "home" / ".cache" / "phonewipe" / "emulators"
    try:
        assert len(list(directory.glob("*.json"))) == 1
    finally:
        bench.close()
    assert list(directory.glob("*.json")) == []


# -- advice that ends somewhere (Android 6) ------------------------------------------------------
def test_android_6_advice_leads_somewhere_and_never_back(fleet, tmp_path: Path) -> None:  # noqa: F811
    plugins, start = fleet
    handset = start("android-6")  # adb without shell v2, bootloader locked, no OEM unlocking
    adb = plugins["adb"]
    (endpoint,) = [e for e in adb.discover() if e.address == handset.endpoints["adb"]]
    with AuditLog(tmp_path / "a.sqlite") as audit:
        over_adb = run_job(adb, endpoint, JobSettings(seed=1), audit)
    assert over_adb.outcome is Outcome.BLOCKED
    assert f"phonewipe erase {endpoint.address} --via fastboot" in over_adb.reason  # step 1
    assert "recovery menu" in over_adb.reason  # ... and where it ends if that is locked too
    with AuditLog(tmp_path / "b.sqlite") as audit:  # the advice followed
        via = run_job(adb, endpoint, JobSettings(seed=1, via="fastboot"), audit)
    assert via.outcome is Outcome.BLOCKED and "bootloader is locked" in via.reason
    assert "Android 6 or older" in via.reason and "recovery menu" in via.reason  # the end
    assert "--via fastboot" not in via.reason  # not sent round again
    events = [e for (e,) in sqlite3.connect(tmp_path / "b.sqlite").execute(
        "SELECT event FROM events ORDER BY id")]
    assert "following" in events and "returned" in events and "erasing" not in events
    assert handset.storage.state.mode == "adb"  # back in Android, not stranded


def test_android_6_with_an_unlocked_bootloader_is_erased_there(fleet, tmp_path: Path) -> None:  # noqa: F811
    plugins, start = fleet
    profile = tmp_path / "android-6-unlocked.toml"
    profile.write_text('extends = "android-6"\ndescription = "unlocked"\n'
                       'expect = "ERASED_UNVERIFIED"\n[locks]\nbootloader_locked = false\n')
    handset = start(str(profile))
    adb = plugins["adb"]
    (endpoint,) = [e for e in adb.discover() if e.address == handset.endpoints["adb"]]
    with AuditLog(tmp_path / "c.sqlite") as audit:
        record = run_job(adb, endpoint, JobSettings(seed=1, via="fastboot"), audit)
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason  # no read-back on Android 6
    assert record.sanitization.method == "fastboot-raw-pattern"
    assert "adb-without-shell-v2" in [f.code for f in record.findings]
    assert record.device.frp is False  # the account check ran over the old shell
