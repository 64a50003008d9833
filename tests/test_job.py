"""The job flow's promises, whatever a plugin does: one record per device, never a PASS
without a passed read-back, and a plugin's own bug ends as a FAILED record, not a crash.

The handsets are the virtual plugin's (protocols/virtual: in-process, on real emulated
storage, through the profile's fault injection and page cache); two small subclasses
misbehave on purpose, the way no plugin should."""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from phonewipe.erase.audit import AuditLog, verify_log
from phonewipe.erase.emulation.fleet import EmulatedHandset, start_handsets, stop_handsets
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, Registry
from phonewipe.protocols.virtual import VirtualPlugin
from phonewipe.protocols.virtual.session import VirtualSession


class NoReadbackSession(VirtualSession):
    def reader(self) -> BlockReader | None:
        return None


class BuggySession(VirtualSession):
    def erase(self, method: Any, context: EraseContext, progress: Any) -> EraseReport:
        raise RuntimeError("plugin bug: index out of range")


SESSIONS: dict[str, type[VirtualSession]] = {
    "honest": VirtualSession, "no-readback": NoReadbackSession, "bug": BuggySession}


class NoSizeEvidenceSession(VirtualSession):
    """A session that offers no size evidence independent of the erase (the certificate
    must print the size as an assumption)."""

    def erase(self, method: Any, context: EraseContext, progress: Any) -> EraseReport:
        return replace(super().erase(method, context, progress), capacity_evidence={})


class StoragePlugin(VirtualPlugin):
    """The virtual plugin with one storage attached and no independent size evidence, as
    tests/test_evidence.py uses it: ``StoragePlugin(storage, behaviour)``."""

    session_class = NoSizeEvidenceSession

    def __init__(self, storage: HandsetStorage, behaviour: str = "honest") -> None:
        super().__init__()
        self.bus.attach(storage)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Any]:
    """run(behaviour or profile) -> (record, audit path) of one job on one virtual handset."""
    started: list[EmulatedHandset] = []

    def run(behaviour: str = "honest", profile: str = "virtual",
            **settings: Any) -> tuple[Any, Path]:
        plugin = VirtualPlugin()
        plugin.session_class = SESSIONS[behaviour]
        handsets = start_handsets([profile], tmp_path / f"{behaviour}-{len(started)}",
                                  {"virtual": plugin})
        started.extend(handsets)
        [endpoint] = plugin.discover()
        audit_path = tmp_path / f"{behaviour}-{len(started)}.sqlite"
        with AuditLog(audit_path) as audit:
            record = run_job(plugin, endpoint, JobSettings(seed=7, **settings), audit)
        return record, audit_path
    yield run
    stop_handsets(started)


def events(audit_path: Path) -> list[str]:
    with sqlite3.connect(audit_path) as db:
        return [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]


def test_honest_overwrite_with_read_back_passes(bench) -> None:
    record, audit_path = bench("honest")
    assert record.outcome is Outcome.ERASED_VERIFIED and record.result_text == "PASS"
    assert record.verification.status == "passed"
    assert events(audit_path)[-1] == "record"
    verify_log(audit_path)


def test_no_read_back_is_never_a_pass(bench) -> None:
    record, _ = bench("no-readback")
    assert record.outcome is Outcome.ERASED_UNVERIFIED
    assert record.result_text != "PASS"
    assert record.verification.status == "unavailable"


def test_a_plugin_bug_ends_as_a_failed_record_with_the_audit_intact(bench) -> None:
    record, audit_path = bench("bug")
    assert record.outcome is Outcome.FAILED
    assert "internal error during erasing" in record.reason and "plugin bug" in record.reason
    assert events(audit_path)[-2:] == ["internal-error", "record"]
    assert verify_log(audit_path) == len(events(audit_path))


# -- the virtual plugin itself: profiles end the way an honest tool must end them ---------
@pytest.mark.parametrize("profile", ["virtual", "virtual-lying", "virtual-frp",
                                     "virtual-cache-locked"])
def test_virtual_profiles_end_as_their_profiles_expect(bench, profile: str) -> None:
    from phonewipe.erase.emulation.profiles import load_profile
    record, _ = bench(profile=profile, verify_mode="nist")
    assert record.outcome.value == load_profile(profile).expect, record.reason
    if profile == "virtual":
        assert "dropped the emulated page cache" in record.evidence["readback"]["medium"]
        assert record.device.frp is False and record.device.mdm is False
    if profile == "virtual-lying":  # caught only because the reads got past the page cache
        assert record.verification.failures_total > 0
    if profile == "virtual-frp":
        assert "Factory Reset Protection" in record.reason and record.sanitization is None
    if profile == "virtual-cache-locked":
        assert "neither dropping its page cache nor direct reads" in record.reason


def test_the_zero_overwrite_is_verified_as_zeros(bench) -> None:
    record, _ = bench(method="virtual-zeros")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert record.sanitization.method == "virtual-zeros"


def test_the_virtual_plugin_serves_only_handsets_that_ask_for_it(tmp_path: Path) -> None:
    """start_handsets hands every handset to every plugin: the virtual one takes only those
    whose profile starts in virtual mode (the demo must not see each phone twice)."""
    plugin = VirtualPlugin()
    handsets = start_handsets(["rooted", "virtual", "bootloader-unlocked"], tmp_path,
                              {"virtual": plugin})
    try:
        assert [e.label for e in plugin.discover()] == [handsets[1].serial]
        assert handsets[1].endpoints == {"virtual": plugin.discover()[0].address}
        assert handsets[0].endpoints == {} and handsets[2].endpoints == {}
    finally:
        stop_handsets(handsets)
    assert plugin.discover() == []  # stopping takes it off the bus


def test_the_virtual_plugin_declares_itself_without_changing_via_choices() -> None:
    registry = Registry.load()
    virtual = registry.classes["virtual"]
    assert virtual.reads_back and virtual.modes == ("virtual",) and virtual.reboots_into == ()
    assert "virtual" not in registry.via_modes()
