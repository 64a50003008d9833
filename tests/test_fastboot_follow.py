"""One phone followed across modes: erased in the bootloader (emulated USB bus), rebooted
to adb, found again by serial, sampled there. Real adb server on a private port."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import require_binary

from phonewipe.demo import free_port
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import PluginOptions, load_plugins


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = load_plugins(PluginOptions({"adb_port": free_port(), "adb_home": tmp_path / "adb",
                                          "follow_timeout": 30}))
    started = []

    def start(profile: str):
        handsets = start_handsets([profile], tmp_path / "handsets", plugins)
        started.extend(handsets)
        return handsets[0]

    yield plugins, start
    stop_handsets(started)
    plugins["adb"].server.stop()


def erase_in_bootloader(plugins, handset, tmp_path: Path, method: str | None = None):
    fastboot = plugins["fastboot"]
    endpoints = [e for e in fastboot.discover() if e.label == handset.serial]
    assert len(endpoints) == 1 and endpoints[0].address.startswith("usb:")
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        record = run_job(fastboot, endpoints[0], JobSettings(seed=3, method=method), audit)
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
    return record, events


def test_rooted_phone_erased_in_fastboot_is_verified_in_adb(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("bootloader-unlocked")
    assert handset.storage.state.mode == "fastboot"
    assert not [e for e in plugins["adb"].discover() if e.mode == "adb" and e.label == "device"]
    record, events = erase_in_bootloader(plugins, handset, tmp_path)
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert record.sanitization.method == "fastboot-raw-pattern"
    assert record.verification.status == "passed" and record.verification.samples_read > 100
    assert record.endpoint.plugin == "fastboot" and record.device.serial == handset.serial
    assert events.index("erased") < events.index("following") < events.index("followed") \
        < events.index("verifying")
    assert handset.storage.state.mode == "adb"


def test_user_build_erased_in_fastboot_stays_unverified(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("bootloader-unlocked-user")
    record, events = erase_in_bootloader(plugins, handset, tmp_path)
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert record.verification.status == "unavailable"
    assert "followed" in events and "verifying" not in events


def test_lying_discard_is_caught_after_following(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    profile = tmp_path / "lying-bootloader.toml"
    profile.write_text('extends = "bootloader-unlocked"\ndescription = "lies"\n'
                       'expect = "FAILED"\n[faults]\nlying_fraction = 0.05\n')
    handset = start(str(profile))
    record, _ = erase_in_bootloader(plugins, handset, tmp_path, method="fastboot-erase")
    assert record.outcome is Outcome.FAILED
    assert record.verification.status == "failed"


def test_adb_reboot_bootloader_and_fastboot_reboot_move_one_handset(fleet) -> None:
    plugins, start = fleet
    handset = start("rooted")
    adb, fastboot = plugins["adb"], plugins["fastboot"]
    address = handset.endpoints["adb"]
    assert [e for e in fastboot.discover()] == []  # in Android: no bootloader on the bus
    adb.server.client().device(serial=address).shell("reboot bootloader", timeout=5)
    deadline = time.monotonic() + 10
    while not (found := fastboot.discover()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [e.label for e in found] == [handset.serial]
    # adb loses it too: the adb server notices the dropped transport in its own time (under
    # load after the bootloader is already listening), so the check waits for it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            d.serial == address and d.state == "device" for d in adb.server.client().list()):
        time.sleep(0.1)
    assert not any(d.serial == address and d.state == "device" for d in adb.server.client().list())
    with fastboot.open(found[0]) as session:
        assert session.identify().serial == handset.serial
        assert session.reboot_to("adb")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            d.serial == address and d.state == "device" for d in adb.server.client().list()):
        time.sleep(0.2)
    assert handset.storage.state.mode == "adb" and fastboot.discover() == []
    assert any(d.serial == address and d.state == "device" for d in adb.server.client().list())


# -- adb -> bootloader -> adb: one job, `JobSettings.via` ----------------------------------
def erase_via_fastboot(plugins, handset, tmp_path: Path):
    adb = plugins["adb"]
    (endpoint,) = [e for e in adb.discover() if e.address == handset.endpoints["adb"]]
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        record = run_job(adb, endpoint, JobSettings(seed=4, via="fastboot"), audit)
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        log = [(e, json.loads(p)) for e, p in db.execute("SELECT event, payload FROM events ORDER BY id")]
    return record, log


def test_phone_in_android_is_erased_in_the_bootloader_and_verified_back_in_android(
        fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("rooted")
    record, log = erase_via_fastboot(plugins, handset, tmp_path)
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert record.sanitization.method == "fastboot-raw-pattern" and record.tool["plugin"] == "fastboot"
    assert record.verification.status == "passed" and record.verification.samples_read > 100
    assert record.device.model == "Pixel 6a"  # the identity read over adb, not just "bluejay"
    trips = [p["to"] for e, p in log if e == "following"]
    assert trips == ["fastboot", "adb"]  # adb -> bootloader (erase) -> adb (sample)
    events = [e for e, _ in log]
    assert events.index("switched") < events.index("erasing") < events.index("verifying")
    assert handset.storage.state.mode == "adb"
    image = (handset.storage.directory / "userdata.img").read_bytes()
    assert not any(m in image for m in planted_markers() if m)


def test_a_locked_bootloader_is_blocked_and_the_phone_goes_back_to_android(
        fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("unrooted")
    before = (handset.storage.directory / "userdata.img").read_bytes()
    record, log = erase_via_fastboot(plugins, handset, tmp_path)
    assert record.outcome is Outcome.BLOCKED and "bootloader is locked" in record.reason
    events = [e for e, _ in log]
    assert "following" in events and "returned" in events and "erasing" not in events
    assert handset.storage.state.mode == "adb"  # not left stranded in the bootloader
    assert (handset.storage.directory / "userdata.img").read_bytes() == before


def test_an_account_blocks_before_any_reboot(fleet, tmp_path: Path) -> None:
    plugins, start = fleet
    handset = start("frp-locked")
    record, log = erase_via_fastboot(plugins, handset, tmp_path)
    assert record.outcome is Outcome.BLOCKED and "remove the account" in record.reason
    assert "following" not in [e for e, _ in log] and handset.storage.state.mode == "adb"
