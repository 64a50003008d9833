"""The EDL plugin in jobs against the emulated phone on the pyusb bus: dead phones end
PASS only when the read-back shows the pattern; a lying programmer FAILS; a missing or
rejected programmer, an unreadable partition table, NAKs, short reads, timeouts and an
unplugged cable end as one clear line in a BLOCKED or FAILED record, never a PASS."""
from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import FIXTURES_DIR, load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import UsageError
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import PluginOptions, load_plugins
from phonewipe.protocols.qualcomm_edl.emulator import EmulatedEdl
from phonewipe.protocols.qualcomm_edl.profile import load_spec

LOADERS = str(FIXTURES_DIR / "edl-loaders")


def surviving(directory: Path) -> list[bytes]:
    """Planted markers still anywhere on the phone: its partitions and its LUN images."""
    data = b"".join(p.read_bytes() for p in sorted(directory.glob("*.img")))
    return [m for m in planted_markers() if m in data]


class Run:
    def __init__(self, record: Any, events: list[str], storage: HandsetStorage, emu: EmulatedEdl) -> None:
        self.record, self.events, self.storage, self.emu = record, events, storage, emu

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.record.findings]


@pytest.fixture
def job(tmp_path: Path):
    started: list[EmulatedEdl] = []

    def run(profile: str = "edl-ufs", *, spec: dict[str, Any] | None = None,
            faults: dict[str, Any] | None = None, method: str | None = None,
            verify: str = "quick", **options: Any) -> Run:
        p = load_profile(profile)
        if faults:
            p = replace(p, faults=replace(p.faults, **faults))
        storage = HandsetStorage.create(tmp_path / f"h{len(started)}", p, p.serial(len(started)))
        plugin = load_plugins(PluginOptions({"edl_loaders": LOADERS, "edl_timeout": 2.0, **options}),
                              only=["edl"])["edl"]
        emu = EmulatedEdl(storage, replace(load_spec(profile), **(spec or {})), plugin.usb_bus)
        started.append(emu)
        (endpoint,) = [e for e in plugin.discover() if e.address == emu.address]
        audit_path = tmp_path / f"audit{len(started)}.sqlite"
        with AuditLog(audit_path) as audit:
            record = run_job(plugin, endpoint, JobSettings(seed=5, method=method, verify_mode=verify),
                             audit)
        with sqlite3.connect(audit_path) as db:
            events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
        return Run(record, events, storage, emu)

    yield run
    for emu in started:
        emu.stop()
        emu.device.storage.close()


# -- honest phones ------------------------------------------------------------------------
def test_boot_looping_emmc_phone_is_overwritten_and_verified(job) -> None:
    run = job("bootloop")
    rec = run.record
    assert rec.outcome is Outcome.ERASED_VERIFIED, rec.reason
    assert rec.sanitization.method == "edl-raw-pattern" and rec.sanitization.category == "Clear"
    assert rec.device.serial == run.storage.state.serial == "5EDC0000"
    assert rec.device.storage_type == "eMMC"
    # every user-data partition of the eMMC user area, the old cache partition too
    parts = " ".join(rec.sanitization.details["partitions"])
    for name in ("userdata", "metadata", "frp", "cache"):
        assert name in parts
    assert rec.verification.status == "passed" and rec.verification.samples_read > 4000
    assert "page cache" in rec.evidence["readback"]["medium"]
    transcript = rec.evidence["transcript"]
    assert transcript["sahara_info"]["hwid"] == "0009a0e100724a51"
    assert transcript["programmer"]["file"].startswith("0009a0e100724a51_")
    assert surviving(run.storage.directory) == []


def test_ufs_phone_with_several_luns(job) -> None:
    run = job("edl-ufs")
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert run.record.device.storage_type == "UFS"
    assert run.record.evidence["transcript"]["gpt"] == {"0": "primary", "1": "primary",
                                                        "2": "primary", "3": "primary"}
    assert surviving(run.storage.directory) == []


def test_only_userdata_leaves_the_other_partitions(job) -> None:
    run = job("bootloop", edl_only_userdata=True)
    assert run.record.outcome is Outcome.ERASED_VERIFIED
    assert [p.split()[0] for p in run.record.sanitization.details["partitions"]] == ["userdata"]
    assert surviving(run.storage.directory)  # the cache partition kept its old download


def test_erase_command_is_verified_as_zeros(job) -> None:
    run = job("edl-ufs", method="edl-erase")
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert run.record.verification.status == "passed"
    assert surviving(run.storage.directory) == []


def test_programmer_without_erase_offers_no_erase_method(job) -> None:
    run = job("edl-ufs", method="edl-erase",
              spec={"functions": ("configure", "program", "read", "nop", "power", "getstorageinfo")})
    assert run.record.outcome is Outcome.BLOCKED
    assert "edl-erase" in run.record.reason and "edl-raw-pattern" in run.record.reason


def test_payload_size_is_negotiated_down(job) -> None:
    run = job("edl-ufs", spec={"max_payload": 64 * 1024})
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    # the first configure asked for 1 MiB and was refused, naming what the programmer takes
    assert run.record.evidence["transcript"]["configured"] == {"memory": "ufs", "max_payload": 65536}


def test_a_payload_larger_than_asked_for_is_not_taken(job) -> None:
    """The host allocates its transfer buffers by the agreed payload: a programmer agreeing
    to a terabyte gets the megabyte the host asked for."""
    run = job(spec={"quirks": {"configure": "huge-payload"}})
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert run.record.evidence["transcript"]["configured"]["max_payload"] == 1024 * 1024


def test_damaged_primary_table_uses_the_backup(job) -> None:
    run = job("edl-gpt-corrupt")
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert "GPT_PRIMARY_DAMAGED" in run.codes
    assert run.record.evidence["transcript"]["gpt"]["0"] == "backup"


def test_sizes_are_confirmed_by_the_backup_table(job) -> None:
    run = job("edl-ufs")
    capacity = run.record.verification.capacity
    assert capacity["status"] == "consistent" and "backup GPT" in capacity["evidence"]


def test_primary_table_hiding_part_of_userdata_is_not_erased_by_it(job) -> None:
    """The backup table places userdata otherwise: which one is true cannot be told, so
    nothing is written by either; the whole-LUN overwrite covers both."""
    run = job("edl-ufs", spec={"gpt": "primary-hides"})
    assert run.record.outcome is Outcome.BLOCKED, run.record.reason
    assert "GPT_TABLES_DISAGREE" in run.codes and "--edl-whole-lun" in run.record.reason
    assert "userdata is LBA" in run.record.reason and "erasing" not in run.events
    assert surviving(run.storage.directory)  # untouched
    run = job("edl-ufs", spec={"gpt": "primary-hides"}, edl_whole_lun=True)
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert surviving(run.storage.directory) == []


def test_hiding_table_with_no_valid_backup_is_erased_over_the_space_it_leaves(job) -> None:
    """No second table to compare: the user-data partitions are grown over the unallocated
    space next to them, which is where a shrunk userdata leaves the rest of itself."""
    run = job("edl-ufs", spec={"gpt": "primary-hides-backup-bad"})
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason
    assert "GPT_BACKUP_DAMAGED" in run.codes
    assert run.record.sanitization.details["unallocated_bytes_included"] >= 16 * 2**20
    assert "MiB of unallocated space beside them" in run.record.sanitization.scope
    assert surviving(run.storage.directory) == []


def test_both_tables_damaged_blocks_without_the_whole_lun_option(job) -> None:
    run = job("edl-gpt-corrupt", spec={"gpt": "both-bad"})
    assert run.record.outcome is Outcome.BLOCKED
    assert "GPT_UNREADABLE" in run.codes and "--edl-whole-lun" in run.record.reason
    assert "erasing" not in run.events
    assert surviving(run.storage.directory)  # untouched


def test_both_tables_damaged_whole_lun_overwrites_every_lun(job) -> None:
    run = job("edl-gpt-corrupt", spec={"gpt": "both-bad"}, edl_whole_lun=True)
    rec = run.record
    assert rec.outcome is Outcome.ERASED_VERIFIED, rec.reason
    assert rec.sanitization.method == "edl-lun-raw-pattern"
    assert [p.split()[1] for p in rec.sanitization.details["partitions"]] == ["0", "1", "2", "3"]
    assert surviving(run.storage.directory) == []


def test_operator_entered_imei_is_marked(job) -> None:
    run = job("bootloop", edl_imei=["5EDC0000=866196041234567"], edl_manufacturer="Xiaomi",
              edl_asset_tag="ACME-0042")
    rec = run.record
    assert rec.outcome is Outcome.ERASED_VERIFIED
    assert rec.device.imeis == ("866196041234567",) and rec.device.manufacturer == "Xiaomi"
    (entered,) = [f for f in rec.findings if f.code == "operator-entered"]
    assert "866196041234567" in entered.message and "not read from the device" in entered.message
    assert rec.sanitization.details["operator_entered"]["imeis"] == ["866196041234567"]
    assert "asset_tag ACME-0042" in entered.message


def test_imei_for_another_phone_is_not_applied(job) -> None:
    run = job("bootloop", edl_imei=["0BADCAFE=866196041234567"])
    assert run.record.device.imeis == ()


def test_bad_imei_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a valid IMEI"):
        load_plugins(PluginOptions({"edl_imei": ["866196041234568"]}), only=["edl"])


# -- liars and bad input --------------------------------------------------------------------
@pytest.mark.parametrize("verify", ["quick", "nist", "full"])
def test_lying_programmer_never_passes(job, verify: str) -> None:
    run = job("edl-lying", verify=verify)
    assert run.record.outcome is Outcome.FAILED, run.record.reason
    assert run.record.verification.status == "failed"
    assert "do not show the keyed pattern" in run.record.reason


def test_lying_programmer_never_passes_its_erase_command_either(job) -> None:
    """The zeros an erase promises are no proof on their own: a programmer that drops part
    of the erase leaves old data there, and the read-back finds it."""
    run = job("edl-lying", method="edl-erase")
    assert run.record.outcome is Outcome.FAILED, f"false {run.record.outcome.value}"
    assert run.record.verification.status == "failed"
    assert "do not show zeros" in run.record.reason, run.record.reason


def test_rejected_programmer_is_not_erased_and_says_what_to_get(job) -> None:
    run = job("edl-nak-loader")
    assert run.record.outcome is Outcome.BLOCKED
    assert "EDL_PROGRAMMER_REJECTED" in run.codes
    assert "0008b0e100514985" in run.record.reason and "e1d6c045e60cda7e" in run.record.reason
    assert "erasing" not in run.events and run.events[-1] == "record"
    assert surviving(run.storage.directory)


@pytest.mark.parametrize("loaders", ["", "empty", "missing"])
def test_missing_programmer_names_the_file_to_get(job, tmp_path: Path, loaders: str) -> None:
    folder = {"": "", "empty": str(tmp_path), "missing": str(tmp_path / "nope")}[loaders]
    run = job("edl-ufs", edl_loaders=folder)
    assert run.record.outcome is Outcome.BLOCKED
    assert "EDL_NO_PROGRAMMER" in run.codes
    assert "0008b0e100514985_e1d6c045e60cda7e_fhprg.bin" in run.record.reason
    assert "\n" not in run.record.reason
    assert surviving(run.storage.directory)


@pytest.mark.parametrize("case,kwargs,words,stage", [
    ("nak", {"spec": {"quirks": {"program": "nak"}}}, "refused programming", "erasing"),
    ("timeout", {"spec": {"quirks": {"program": "silent"}}, "edl_timeout": 0.5}, "did not answer",
     "erasing"),
    ("chatter", {"spec": {"quirks": {"program": "chatter"}}, "edl_timeout": 0.5},
     "log lines but no response", "erasing"),
    ("endless-loader", {"spec": {"loader": "endless"}}, "still wants more", "identified"),
    ("zero-length-loader", {"spec": {"loader": "endless-zero"}}, "asked for 0 bytes",
     "identified"),
    ("past-end-loader", {"spec": {"loader": "endless-past-end"}}, "still wants more",
     "identified"),
    ("negative-lun", {"spec": {"quirks": {"getstorageinfo": "negative"}}, "edl_whole_lun": True},
     "no usable geometry for LUN 1", "identified"),
    ("nested-json", {"spec": {"quirks": {"getstorageinfo": "nested"}}},
     "no usable geometry for LUN 0", "identified"),
    ("short-read", {"spec": {"quirks": {"read": "short"}}}, "short read", "identified"),
    ("unplugged", {"faults": {"unplug_at": 0.4}}, "disconnected", "erasing"),
    ("unreadable", {"faults": {"unreadable": ((0.5, 0.51),)}}, "verification failed", "verified"),
], ids=["nak", "timeout", "chatter", "endless-loader", "zero-length-loader", "past-end-loader",
        "negative-lun", "nested-json", "short-read", "unplugged", "unreadable"])
def test_device_failures_end_as_failed_records(job, case, kwargs, words, stage) -> None:
    run = job(**kwargs)
    assert run.record.outcome is Outcome.FAILED, run.record.reason
    assert words in run.record.reason and "\n" not in run.record.reason
    assert stage in run.events and run.events[-1] == "record"
    if case == "unplugged":
        assert re.search(r"during erasing, \d+\.\d of 33\.5 MiB sent", run.record.reason), run.record.reason


def test_a_programmer_trickling_a_read_is_stopped_not_waited_for(
        job, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each transfer within the timeout, the whole far too slow (here about 100 KiB/s
    against a floor raised to 1 MiB/s, so the test stays short)."""
    from phonewipe.protocols.qualcomm_edl import firehose
    monkeypatch.setattr(firehose, "MIN_READ_RATE", 1 << 20)
    run = job(spec={"quirks": {"read": "trickle"}}, edl_timeout=0.5)
    assert run.record.outcome is Outcome.FAILED, run.record.reason
    assert "slower than 1024 KiB/s" in run.record.reason and "\n" not in run.record.reason


def test_an_erase_answered_after_the_reply_timeout_is_waited_for_by_its_size(job) -> None:
    """A whole-partition erase is one command: its answer may come later than any other's
    (here about 0.7 s for 33.5 MiB against a 0.5 s reply timeout)."""
    run = job(method="edl-erase", spec={"quirks": {"erase": "slow"}}, edl_timeout=0.5)
    assert run.record.outcome is Outcome.ERASED_VERIFIED, run.record.reason


def test_programmer_text_in_a_nak_is_shown_escaped(job) -> None:
    hostile = "[red]boom[/] \u202eevil\r\nsecond line"  # bidi override, line break: valid XML
    run = job(spec={"quirks": {"program": "nak:" + hostile}})
    reason = run.record.reason
    assert run.record.outcome is Outcome.FAILED
    assert "boom" in reason and "\\u202e" in reason
    assert "\u202e" not in reason and "\n" not in reason and "\r" not in reason
    # a control character is not even XML: the reply is malformed, still one line
    run = job(spec={"quirks": {"program": "nak:\x1b[2J"}})
    assert run.record.outcome is Outcome.FAILED and "malformed XML" in run.record.reason
    assert "\x1b" not in run.record.reason and "\n" not in run.record.reason


def test_phone_already_running_a_programmer_says_to_power_cycle_it(tmp_path: Path) -> None:
    p = load_profile("edl-ufs")
    storage = HandsetStorage.create(tmp_path / "h", p, p.serial())
    plugin = load_plugins(PluginOptions({"edl_loaders": LOADERS, "edl_timeout": 0.5}),
                          only=["edl"])["edl"]
    emu = plugin.start_emulator(storage, p)
    try:
        (endpoint,) = plugin.discover()
        session = plugin.open(endpoint)  # loads the programmer, then the host crashes
        session.identify()
        session.preflight()
        session.link.close()
        with AuditLog(tmp_path / "a.sqlite") as audit:
            record = run_job(plugin, endpoint, JobSettings(seed=5), audit)
        assert record.outcome is Outcome.FAILED
        assert "already running a programmer" in record.reason and "power" in record.reason
        assert surviving(storage.directory)
    finally:
        emu.stop()
        storage.close()


@pytest.mark.parametrize("profile,options", [("bootloop", {}), ("edl-gpt-corrupt", {"gpt": "both-bad"})],
                         ids=["partitions", "whole-lun"])
def test_certified_phone_is_re_verified_over_edl(tmp_path: Path, profile: str,
                                                 options: dict[str, Any]) -> None:
    """After the erase the programmer resets the phone, which falls back into EDL: a
    re-verification loads the programmer again and samples the same areas."""
    from phonewipe.erase.reverify import AS_CERTIFIED, IDENTICAL, MISMATCH, reverify_session

    p = load_profile(profile)
    storage = HandsetStorage.create(tmp_path / "h", p, p.serial())
    plugin = load_plugins(PluginOptions({"edl_loaders": LOADERS, "edl_whole_lun": bool(options)}),
                          only=["edl"])["edl"]
    emu = EmulatedEdl(storage, replace(load_spec(profile), **options), plugin.usb_bus)
    try:
        (endpoint,) = plugin.discover()
        with AuditLog(tmp_path / "a.sqlite") as audit:
            record = run_job(plugin, endpoint, JobSettings(seed=5), audit)
        assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
        (endpoint,) = plugin.discover()  # the reset phone enumerated afresh
        with plugin.open(endpoint) as session:
            result = reverify_session(session, record)
        assert result.verdict in (IDENTICAL, AS_CERTIFIED), result.reason
        storage.write(storage.size // 3, b"owner's data is back" * 500, faulty=False)
        (endpoint,) = plugin.discover()
        with plugin.open(endpoint) as session:
            result = reverify_session(session, record, fresh_seed=True)
        assert result.verdict == MISMATCH
    finally:
        emu.stop()
        storage.close()


def test_the_emulated_programmer_naks_as_real_ones_do(tmp_path: Path) -> None:
    """Unknown tags, sectors outside the LUN, a wrong sector size and a raw transfer larger
    than the negotiated payload are refused, with the programmer's reason."""
    from phonewipe.protocols.qualcomm_edl.errors import FirehoseNak

    p = load_profile("edl-ufs")
    storage = HandsetStorage.create(tmp_path / "h", p, p.serial())
    plugin = load_plugins(PluginOptions({"edl_loaders": LOADERS}), only=["edl"])["edl"]
    emu = EmulatedEdl(storage, replace(load_spec("edl-ufs"), max_payload=64 * 1024), plugin.usb_bus)
    try:
        (endpoint,) = plugin.discover()
        with plugin.open(endpoint) as session:
            session.identify()
            session.preflight()
            fh, total = session.firehose, session.geometry[0].total_sectors
            reply = fh.command("frobnicate", value=1)
            assert not reply.ack and "Unrecognized XML tag" in reply.why()
            with pytest.raises(FirehoseNak, match="exceeds the LUN"):
                fh.read(0, total - 1, 2, 4096)
            with pytest.raises(FirehoseNak, match="SECTOR_SIZE_IN_BYTES 512"):
                fh.read(0, 0, 1, 512)
            with pytest.raises(FirehoseNak, match="invalid physical partition"):
                fh.read(9, 0, 1, 4096)
            assert fh.nop().ack
            fh.max_payload = 128 * 1024  # more than the programmer agreed to take
            with pytest.raises(FirehoseNak, match="larger than MaxPayloadSizeToTargetInBytes"):
                fh.program(0, total - 64, 32, 4096, lambda pos, out: None, lambda n: None)
    finally:
        emu.stop()
        storage.close()
