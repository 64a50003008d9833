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


# -- appends from many threads (a station's jobs) ---------------------------------------------
def test_concurrent_appends_chain_in_order_and_each_gets_its_own_row(tmp_path):
    import threading

    log = AuditLog(tmp_path / "audit.sqlite")
    got: dict[str, list[int]] = {}

    def job(name: str) -> None:
        got[name] = [log.append(name, "S", f"step-{i}", {"i": i}) for i in range(40)]
    threads = [threading.Thread(target=job, args=(f"job-{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert verify_log(tmp_path / "audit.sqlite") == 320
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        rows = {i: (j, e) for i, j, e in db.execute("SELECT id, job_id, event FROM events")}
    assert sorted(rows) == list(range(1, 321))
    for name, ids in got.items():  # each append returned its own row, in its own order
        assert [rows[i] for i in ids] == [(name, f"step-{k}") for k in range(40)]


def queued_behind_a_commit(log: AuditLog, appends: list) -> None:
    """Run the append threads while a commit is in progress (the writer's lock held), so
    that they all queue behind it; then let them go and wait for them."""
    import time
    with log._lock:
        for t in appends:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._queued) < len(appends):
            assert time.monotonic() < deadline, "the appends never queued"
            time.sleep(0.01)
    for t in appends:
        t.join()


def test_rows_that_wait_for_a_commit_go_to_disk_together(tmp_path):
    import threading

    log = AuditLog(tmp_path / "audit.sqlite")
    commits: list[int] = []
    real_commit = log._commit
    log._commit = lambda batch: (commits.append(len(batch)), real_commit(batch))[1]
    queued_behind_a_commit(log, [threading.Thread(target=log.append, args=(f"job-{n}", "S", "step"))
                                 for n in range(3)])
    log.close()
    assert commits == [3] and verify_log(tmp_path / "audit.sqlite") == 3


def test_a_batch_that_cannot_be_written_fails_every_append_in_it(tmp_path):
    import threading

    from phonewipe.erase.errors import OutputError
    log = AuditLog(tmp_path / "audit.sqlite")
    log.append("job-0", "S", "before")
    log._db.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON events WHEN NEW.event = 'bad' "
                    "BEGIN SELECT RAISE(ABORT, 'disk refused the row'); END")
    errors: dict[str, BaseException] = {}

    def append(name: str, event: str) -> None:
        try:
            log.append(name, "S", event)
        except OutputError as exc:
            errors[name] = exc
    queued_behind_a_commit(log, [threading.Thread(target=append, args=(f"job-{n}", event))
                                 for n, event in ((1, "good"), (2, "bad"), (3, "good"))])
    assert sorted(errors) == ["job-1", "job-2", "job-3"]  # none of them is on disk
    assert "disk refused the row" in str(errors["job-1"])
    assert log.append("job-4", "S", "after") == 2  # the log goes on from the last good row
    log.close()
    assert verify_log(tmp_path / "audit.sqlite") == 2


def test_an_append_after_close_is_an_output_error(tmp_path):
    """A job still running after a third Ctrl-C closed the run's log gets one clear error."""
    from phonewipe.erase.errors import OutputError
    log = AuditLog(tmp_path / "audit.sqlite")
    log.append("job-1", "S", "started")
    log.close()
    with pytest.raises(OutputError, match="cannot write audit log"):
        log.append("job-1", "S", "late")
    assert verify_log(tmp_path / "audit.sqlite") == 1
