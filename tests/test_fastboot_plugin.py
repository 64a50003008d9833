"""The fastboot plugin in jobs and through the `phonewipe` command: a locked bootloader is
BLOCKED (never erased), device failures end as FAILED records whose audit trail says how
far the job got, and `phonewipe devices/erase/emulate` reach bootloader handsets."""
from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from test_end_to_end import Bench, one_error_line

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.emulation.usbbus import EmulatedUsbBus
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import PluginOptions, load_plugins
from phonewipe.protocols.fastboot.emulator import EmulatedBootloader

MIB = 1024 * 1024


@pytest.fixture
def job(tmp_path: Path):
    """Run one job against an emulated bootloader over TCP, without following to adb."""
    started: list[EmulatedBootloader] = []

    def run(profile: str = "bootloader-unlocked", quirks=None, method: str | None = None,
            faults=None, **options):
        p = load_profile(profile)
        if faults:
            p = replace(p, faults=replace(p.faults, **faults))
        storage = HandsetStorage.create(tmp_path / f"h{len(started)}", p, f"FB{len(started):04d}")
        emu = EmulatedBootloader(storage, EmulatedUsbBus(), 4 * MIB, quirks)
        started.append(emu)
        plugin = load_plugins(PluginOptions({"fastboot_tcp": [emu.address], "follow_modes": False,
                                             **options}), only=["fastboot"])["fastboot"]
        (endpoint,) = [e for e in plugin.discover() if e.address == emu.address]
        audit_path = tmp_path / f"audit{len(started)}.sqlite"
        with AuditLog(audit_path) as audit:
            record = run_job(plugin, endpoint, JobSettings(seed=5, method=method), audit)
        with sqlite3.connect(audit_path) as db:
            events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
        return record, events, storage

    yield run
    for emu in started:
        emu.stop()
        emu.device.storage.close()


def test_locked_bootloader_is_blocked_and_never_erased(job) -> None:
    record, events, storage = job("bootloader-locked")
    assert record.outcome is Outcome.BLOCKED
    assert "BOOTLOADER_LOCKED" in [f.code for f in record.findings]
    assert "OEM unlocking" in record.reason and "adb" in record.reason
    assert "erasing" not in events and events[-1] == "record"
    image = (storage.directory / "userdata.img").read_bytes()
    assert all(m in image for m in planted_markers() if m)  # untouched


def test_oem_unlockable_bootloader_gets_the_unlock_wipe(job) -> None:
    record, _, storage = job("bootloader-oem-unlock")
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert record.sanitization.method == "fastboot-unlock-wipe"
    # performed, not read back: the record says so and claims no category (#22 item 2)
    assert record.sanitization.category == "None"
    assert "No category is claimed" in record.sanitization.justification
    assert not storage.state.bootloader_locked
    image = (storage.directory / "userdata.img").read_bytes()
    assert not any(m in image[:storage.size] for m in planted_markers())


@pytest.mark.parametrize("method", ["fastboot-raw-pattern", "fastboot-erase"])
def test_unlocked_erase_without_following_is_unverified(job, method: str) -> None:
    record, events, storage = job(method=method)
    assert record.outcome is Outcome.ERASED_UNVERIFIED
    assert record.verification.status == "unavailable"
    assert record.evidence["transcript"]["protocol"] == "fastboot"
    image = (storage.directory / "userdata.img").read_bytes()
    assert not any(m in image for m in planted_markers())


@pytest.mark.parametrize("case,kwargs,words", [
    ("fail", {"quirks": {"flash:userdata": b"FAILflash write failure"}}, "flash write failure"),
    ("malformed", {"quirks": {"flash:userdata": b"\x00\x01garbage"}}, "malformed reply"),
    ("oversized", {"quirks": {"erase:userdata": b"INFO" + b"!" * 300}, "method": "fastboot-erase"},
     "oversized reply"),
    ("timeout", {"quirks": {"flash:userdata": None}, "fastboot_timeout": 0.5},
     "did not answer"),
    ("unplugged", {"faults": {"unplug_at": 0.4}}, "disconnected"),
], ids=["fail", "malformed", "oversized", "timeout", "unplugged"])
def test_device_failures_end_as_failed_records(job, case, kwargs, words) -> None:
    record, events, _ = job(**kwargs)
    assert record.outcome is Outcome.FAILED
    assert words in record.reason and "(during erasing" in record.reason
    if case == "unplugged":  # the reason says how far the download got
        assert re.search(r"during erasing, \d+\.\d of 32\.0 MiB sent", record.reason), record.reason
    assert "\n" not in record.reason
    assert "erasing" in events and "erased" not in events and events[-1] == "record"


# -- through the command line -----------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    b = Bench(tmp_path_factory.mktemp("fastboot-bench"),
              ["bootloader-locked", "bootloader-unlocked-user", "rooted"])
    try:
        yield b
    finally:
        b.close()


def fastboot_args(bench: Bench) -> list[str]:
    args = []
    for info in bench.handsets.values():
        args += ["--fastboot-tcp", info["endpoints"]["fastboot"]]
    return args


def test_emulate_prints_the_fastboot_endpoint(bench: Bench) -> None:
    for info in bench.handsets.values():
        assert info["endpoints"]["fastboot"].startswith("tcp:127.0.0.1:")


def test_devices_lists_bootloader_phones(bench: Bench) -> None:
    result = bench.run(*fastboot_args(bench), "devices", "--json")
    assert result.returncode == 0, result.stderr
    listed = {d["address"]: d for d in json.loads(result.stdout)}
    for name in ("bootloader-locked", "bootloader-unlocked-user"):
        info = bench.handsets[name]
        assert listed[info["endpoints"]["fastboot"]]["plugin"] == "fastboot"
        assert listed[info["endpoints"]["fastboot"]]["mode"] == "fastboot"


def test_cli_erase_of_a_locked_bootloader_is_blocked(bench: Bench, tmp_path: Path) -> None:
    serial = bench.handsets["bootloader-locked"]["serial"]
    result = bench.run(*fastboot_args(bench), "erase", serial, "--out", str(tmp_path),
                       "--keys", str(bench.keys), "--json")
    assert result.returncode == 11, result.stderr
    (entry,) = json.loads(result.stdout) if result.stdout.strip().startswith("[") else \
        [json.loads(result.stdout)]
    assert "BLOCKED" in json.dumps(entry)


def test_cli_erase_in_fastboot_follows_the_phone_to_adb(bench: Bench, tmp_path: Path) -> None:
    serial = bench.handsets["bootloader-unlocked-user"]["serial"]
    result = bench.run(*fastboot_args(bench), "erase", serial, "--method", "fastboot-erase",
                       "--out", str(tmp_path), "--keys", str(bench.keys))
    assert result.returncode == 10, result.stdout + result.stderr  # ERASED_UNVERIFIED
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
    assert "following" in events and "followed" in events
    assert bench.run("audit", "verify", str(tmp_path / "audit.sqlite")).returncode == 0


def test_cli_unknown_fastboot_method_is_one_line(bench: Bench, tmp_path: Path) -> None:
    result = bench.run("--fastboot-tcp", "tcp:127.0.0.1:1", "erase", "NO-SUCH", "--out",
                       str(tmp_path), "--keys", str(bench.keys))
    assert result.returncode == 3
    assert "NO-SUCH" in one_error_line(result)


def test_cli_erase_via_fastboot_takes_a_phone_from_android_and_back(bench: Bench, tmp_path: Path) -> None:
    serial = bench.handsets["rooted"]["serial"]
    result = bench.run(*fastboot_args(bench), "erase", serial, "--via", "fastboot", "--out",
                       str(tmp_path), "--keys", str(bench.keys), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["outcome"] == "ERASED_VERIFIED", entry
    shown = json.loads(bench.run("cert", "show", "--json", entry["certificate"]).stdout)
    assert shown["sanitization"]["method"] == "fastboot-raw-pattern"
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        trips = [json.loads(p)["to"] for (p,) in
                 db.execute("SELECT payload FROM events WHERE event = 'following' ORDER BY id")]
    assert trips == ["fastboot", "adb"]
