"""The job flow's promises, whatever a plugin does: one record per device, never a PASS
without a passed read-back, and a plugin's own bug ends as a FAILED record, not a crash.

The plugin here is a minimal third-party plugin over real emulated storage, the way a
plugin author would test against the contract."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog, verify_log
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import (Category, Endpoint, EraseMethod, Expectation, Finding, Identity, Outcome,
                         Technique)
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import EraseContext, EraseReport, Plugin, Session

OVERWRITE = EraseMethod("test-overwrite", "Overwrite with the keyed pattern", Category.CLEAR,
                        Technique.OVERWRITE, verifiable=True, expectation=Expectation.PATTERN)


class StorageSession(Session):
    def __init__(self, storage: HandsetStorage, behaviour: str) -> None:
        self.storage, self.behaviour = storage, behaviour
        self.endpoint = Endpoint("test", "test", "test:0")

    def identify(self) -> Identity:
        return Identity(platform="test", serial="TEST0001", capacity_bytes=self.storage.size)

    def preflight(self) -> list[Finding]:
        return []

    def methods(self) -> list[EraseMethod]:
        return [OVERWRITE]

    def erase(self, method: EraseMethod, context: EraseContext, progress: Any) -> EraseReport:
        if self.behaviour == "bug":
            raise RuntimeError("plugin bug: index out of range")
        stream = PatternStream(context.pattern_key)
        for off in range(0, self.storage.size, 1 << 20):
            self.storage.write(off, stream.next(min(1 << 20, self.storage.size - off)))
        return EraseReport(self.storage.size, Expectation.PATTERN, "whole test image")

    def reader(self) -> Any:
        return None if self.behaviour == "no-readback" else self

    @property
    def size(self) -> int:
        return self.storage.size

    block_size = 4096

    def bypass_cache(self) -> str:
        return "reads the emulated medium directly"

    def read_many(self, extents: Any) -> Any:
        return (self.storage.read(off, length) for off, length in extents)


class StoragePlugin(Plugin):
    name = "test"

    def __init__(self, storage: HandsetStorage, behaviour: str) -> None:
        super().__init__()
        self.storage, self.behaviour = storage, behaviour

    def discover(self) -> list[Endpoint]:
        return [Endpoint("test", "test", "test:0")]

    def open(self, endpoint: Endpoint) -> Session:
        return StorageSession(self.storage, self.behaviour)


@pytest.fixture
def job(tmp_path: Path):
    def run(behaviour: str) -> tuple[Any, Path]:
        storage = HandsetStorage.create(tmp_path / behaviour, load_profile("rooted"), "TEST0001")
        audit_path = tmp_path / f"{behaviour}.sqlite"
        with AuditLog(audit_path) as audit:
            record = run_job(StoragePlugin(storage, behaviour), Endpoint("test", "test", "test:0"),
                             JobSettings(seed=7), audit)
        storage.close()
        return record, audit_path
    return run


def events(audit_path: Path) -> list[str]:
    import sqlite3
    with sqlite3.connect(audit_path) as db:
        return [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]


def test_honest_overwrite_with_read_back_passes(job) -> None:
    record, audit_path = job("honest")
    assert record.outcome is Outcome.ERASED_VERIFIED and record.result_text == "PASS"
    assert record.verification.status == "passed"
    assert events(audit_path)[-1] == "record"
    verify_log(audit_path)


def test_no_read_back_is_never_a_pass(job) -> None:
    record, _ = job("no-readback")
    assert record.outcome is Outcome.ERASED_UNVERIFIED
    assert record.result_text != "PASS"
    assert record.verification.status == "unavailable"


def test_a_plugin_bug_ends_as_a_failed_record_with_the_audit_intact(job) -> None:
    record, audit_path = job("bug")
    assert record.outcome is Outcome.FAILED
    assert "internal error during erasing" in record.reason and "plugin bug" in record.reason
    assert events(audit_path)[-2:] == ["internal-error", "record"]
    assert verify_log(audit_path) == len(events(audit_path))
