"""Issue #21: the unrooted fill on an ext4-like file system.

The emulated file system keeps a reserved share from the shell uid, charges directory and
extent-tree blocks, and reuses freed blocks only after a commit, so a fill that trusts `df`
hits ENOSPC early. The fill must go on to ENOSPC in bounded files, delete hidden entries,
record what it could not reach, and never leave a phone full of fill when it fails.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import require_binary

from phonewipe.certificates.fields import visible_sections
from phonewipe.demo import free_port
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.fleet import start_handsets
from phonewipe.erase.emulation.profiles import Faults, load_profile
from phonewipe.erase.emulation.storage import BLOCK, COMMIT_INTERVAL, FileTable, HandsetStorage, StorageFull
from phonewipe.erase.guard import GuardedPlugin, JobGuard
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.pattern import new_key
from phonewipe.erase.plugin import EraseContext, PluginOptions, load_plugins
from phonewipe.protocols.adb import shell
from phonewipe.protocols.adb.client import FILL_DIR, FILL_RESET

MIB = 1024 * 1024
FILL_FILE_MAX = 4 * MIB  # small fill files: a 32 MiB phone takes several


def sh(storage: HandsetStorage, command: str, dirs: set[str] | None = None) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    ctx = shell.ShellContext(storage=storage, stdout=out.extend, stderr=err.extend,
                             dirs=dirs if dirs is not None else set())
    status = shell.run(command, ctx)
    return status, out.decode(), err.decode()


# -- the file system model -----------------------------------------------------------------
def test_a_reserved_share_is_kept_from_the_shell_uid(tmp_path: Path) -> None:
    table = FileTable(free=[[16 * BLOCK, 32 * MIB]])
    assert table.reserved == int(32 * MIB * 0.02) // BLOCK * BLOCK
    assert table.available_bytes() == table.free_bytes() - table.reserved
    assert not table.fits("/sdcard/f", table.available_bytes() + BLOCK)
    storage = HandsetStorage.create(tmp_path / "h", load_profile("unrooted"), "FS1")
    status, out, _ = sh(storage, "stat -f -c '%b %f %a %S' /data")
    blocks, bfree, bavail, bsize = map(int, out.split())
    assert status == 0 and bsize == BLOCK and blocks == storage.size // BLOCK
    assert (bfree - bavail) * BLOCK == storage.table.reserved
    df = sh(storage, "df /data")[1].splitlines()[1].split()
    assert int(df[3]) * 1024 == bavail * BLOCK  # df's Available leaves the reserve out
    storage.close()


def test_freed_blocks_are_reused_only_after_a_commit() -> None:
    table = FileTable(free=[[0, 64 * BLOCK]], reserved=0)
    table.grow("/a", 64 * BLOCK)
    table.release("/a")
    assert table.free_bytes() == 64 * BLOCK  # statfs counts them free...
    with pytest.raises(StorageFull):  # ...the allocator may not take them yet
        table.grow("/b", BLOCK)
    table.commit()
    table.grow("/b", BLOCK)
    table.release("/b")
    table.pending_since -= COMMIT_INTERVAL  # the journal commits on its own, too
    table.grow("/c", 64 * BLOCK)


def test_a_fragmented_file_needs_extent_blocks_and_hits_enospc_before_df_says_0(
        tmp_path: Path) -> None:
    storage = HandsetStorage.create(tmp_path / "h", load_profile("unrooted"), "FS2")
    dirs: set[str] = set()
    for i in range(40):  # free space in many small holes, as on a used phone
        storage.create_file(f"/sdcard/Download/p{i:02d}", b"x" * 3 * BLOCK)
    for i in range(0, 40, 2):
        storage.delete_file(f"/sdcard/Download/p{i:02d}")
    assert sh(storage, "sync")[0] == 0
    assert sh(storage, "mkdir /sdcard/fill", dirs)[0] == 0
    assert "/sdcard/fill" in storage.table.dirs  # a directory costs a block
    df_available = int(sh(storage, "df /data")[1].splitlines()[1].split()[3]) * 1024
    status, _, err = sh(storage, "dd if=/dev/zero of=/sdcard/fill/f bs=65536", dirs)
    assert status == 1 and "No space left on device" in err
    tree = storage.table.meta["/sdcard/fill/f"]  # more extents than the inode holds
    # ENOSPC while df still offered the extent-tree blocks' worth
    assert storage.table.sizes["/sdcard/fill/f"] == df_available - sum(n for _, n in tree)
    assert sh(storage, "rm -rf /sdcard/fill", dirs)[0] == 0
    assert not storage.table.meta and "/sdcard/fill" not in storage.table.dirs
    storage.close()


def test_hidden_entries_need_ls_dash_a(tmp_path: Path) -> None:
    storage = HandsetStorage.create(tmp_path / "h", load_profile("unrooted"), "FS3")
    assert storage.files_under("/sdcard/.vault")  # planted
    assert ".vault" not in sh(storage, "ls /sdcard")[1].split()
    assert ".vault" in sh(storage, "ls -A /sdcard")[1].split()
    assert sh(storage, "ls -a /sdcard")[1].split()[:3] == [".", "..", ".vault"]
    storage.close()


def test_an_old_fs_json_still_loads(tmp_path: Path) -> None:
    table = FileTable(files={"/sdcard/a": [[65536, 4096]]}, sizes={"/sdcard/a": 10},
                      free=[[69632, 8 * MIB]])
    assert table.reserved == int(8 * MIB * 0.02) // BLOCK * BLOCK
    assert table.pending == [] and table.dirs == {} and table.meta == {}


# -- through the real adb server -----------------------------------------------------------
@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = load_plugins(PluginOptions({"adb_port": free_port(), "adb_home": tmp_path / "adb",
                                          "follow_timeout": 30, "adb_reboot_wait": 20,
                                          "adb_fill_file_max": FILL_FILE_MAX}))
    started: list[Any] = []

    def start(profile: str) -> Any:
        handsets = start_handsets([profile], tmp_path / "handsets" / str(len(started)), plugins)
        started.extend(handsets)
        return handsets[0]

    yield plugins, start, started
    for handset in started:
        handset.stop()
    plugins["adb"].server.stop()


def endpoint_of(adb: Any, address: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in adb.discover() if e.address == address]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"{address} never appeared")


def erase(adb: Any, handset: Any, tmp_path: Path, abort_at: float = 0.0) -> Any:
    """One adb-fill-reset job; with ``abort_at``, the operator aborts it at that share of
    the fill."""
    abort = threading.Event()

    def watch(_job: str, stage: str, done: int, total: int) -> None:
        if abort_at and stage == "erasing" and total and done >= abort_at * total:
            abort.set()
    guard = JobGuard(float("inf"), abort, watch)
    endpoint = endpoint_of(adb, handset.endpoints["adb"])
    with AuditLog(tmp_path / f"audit-{handset.serial}.sqlite") as audit:
        return run_job(GuardedPlugin(adb, guard), endpoint,
                       JobSettings(method="adb-fill-reset", verify_mode="quick"), audit,
                       guard.progress)


def fill_files(storage: HandsetStorage) -> list[str]:
    return storage.files_under(FILL_DIR)


@pytest.mark.interop
def test_the_fill_goes_to_enospc_in_bounded_files_and_deletes_hidden_entries(
        fleet, tmp_path: Path) -> None:
    """The erase step itself, over the real adb server: what is on the phone after it."""
    plugins, start, _ = fleet
    handset = start("unrooted")
    storage = handset.storage
    adb = plugins["adb"]
    with adb.open(endpoint_of(adb, handset.endpoints["adb"])) as session:
        session.identify()
        report = session.erase(FILL_RESET, EraseContext(pattern_key=new_key()),
                               lambda done, total: None)
        details = report.details
        files = fill_files(storage)
        assert [p for p in storage.table.files if not p.startswith(("/data/", FILL_DIR))] == []
        assert ".vault" in details["deleted_top_level_entries"]
        assert len(files) == details["fill_files"] > 1
        assert all(storage.table.sizes[p] == FILL_FILE_MAX for p in files[:-1])
        assert sum(storage.table.sizes[p] for p in files) == details["fill_bytes"]
        assert report.bytes_written == details["fill_bytes"]
        # full: the shell uid cannot get another block, though df did not say 0 before
        assert storage.table.allocatable_bytes() < 2 * BLOCK and not storage.table.pending
        assert details["reserved_bytes"] == storage.table.reserved > 0
        free = details["free_bytes_before"]
        assert free - 64 * 1024 <= details["fill_bytes"] < free
        assert "reserved blocks" in details["not_reached"]
        assert "key erasure" in details["not_reached"]
        session.finish(FILL_RESET, lambda done, total: None)
    assert not fill_files(storage)


@pytest.mark.interop
def test_the_job_ends_without_error_and_the_certificate_says_what_was_not_reached(
        fleet, tmp_path: Path) -> None:
    plugins, start, _ = fleet
    handset = start("unrooted")
    record = erase(plugins["adb"], handset, tmp_path)
    assert record.outcome is not Outcome.FAILED, record.reason
    details = record.sanitization.details
    for key in ("fill_bytes", "fill_files", "free_bytes_before", "reserved_bytes"):
        assert isinstance(details[key], int) and details[key] > 0, key
    assert ".vault" in details["deleted_top_level_entries"]
    rows = [value for section in visible_sections(record) for _, value in section.rows]
    assert any(details["not_reached"] in value for value in rows)
    assert handset.storage.state.resets == 1


@pytest.mark.interop
def test_an_aborted_fill_is_removed_and_the_record_says_the_phone_was_not_reset(
        fleet, tmp_path: Path) -> None:
    plugins, start, _ = fleet
    handset = start("unrooted")
    storage = handset.storage
    record = erase(plugins["adb"], handset, tmp_path, abort_at=0.4)
    assert record.outcome is Outcome.FAILED
    assert "the owner's files were deleted, the fill was removed; the phone was NOT reset" \
        in record.reason, record.reason
    assert not fill_files(storage) and not storage.table.pending
    assert not storage.files_under("/sdcard") and storage.state.resets == 0
    again = erase(plugins["adb"], handset, tmp_path)  # a re-run starts from that state
    assert again.outcome is not Outcome.FAILED, again.reason
    assert ".vault" not in again.sanitization.details["deleted_top_level_entries"]
    assert storage.state.resets == 1


@pytest.mark.interop
def test_a_cable_pulled_mid_fill_is_reported_and_a_rerun_removes_the_old_fill(
        fleet, tmp_path: Path) -> None:
    plugins, start, started = fleet
    adb = plugins["adb"]
    handset = start("unrooted-unplug-fill")
    record = erase(adb, handset, tmp_path)
    assert record.outcome is Outcome.FAILED
    assert "the owner's files were deleted, the fill could NOT be removed" in record.reason
    assert "the phone was NOT reset" in record.reason
    assert fill_files(handset.storage)  # stranded: the phone is gone
    handset.stop()
    profile = replace(handset.profile, faults=Faults())  # plugged in again
    storage = HandsetStorage(handset.storage.directory, profile)
    replugged = replace(handset, profile=profile, storage=storage,
                        emulators=[adb.start_emulator(storage, profile)])
    started.append(replugged)
    again = erase(adb, replugged, tmp_path)
    assert again.outcome is not Outcome.FAILED, again.reason
    assert again.sanitization.details["previous_fill_removed"] is True
    assert storage.state.resets == 1
