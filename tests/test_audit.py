from __future__ import annotations

import sqlite3

import pytest

from phonewipe.erase.audit import AuditLog, verify_log
from phonewipe.erase.errors import AuditBroken


def test_chain_verifies_and_names_the_edited_row(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        for i in range(6):
            log.append("job-1", "SERIAL1", f"step-{i}", {"i": i})
    assert verify_log(path) == 6
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 4")
    db.commit()
    db.close()
    with pytest.raises(AuditBroken, match="row 4"):
        verify_log(path)


def test_deleted_row_is_detected(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        for i in range(4):
            log.append("job-1", "S", "e", {"i": i})
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE id = 2")
    db.commit()
    db.close()
    with pytest.raises(AuditBroken, match="row 2"):
        verify_log(path)


def test_log_survives_reopen_and_keeps_chaining(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        log.append("a", "S", "e")
    with AuditLog(path) as log:
        log.append("b", "S", "e")
        assert [e.job_id for e in log.events()] == ["a", "b"]
    assert verify_log(path) == 2


def test_not_a_log(tmp_path):
    bogus = tmp_path / "x.sqlite"
    bogus.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(AuditBroken):
        verify_log(bogus)
    with pytest.raises(AuditBroken):
        verify_log(tmp_path / "missing.sqlite")
