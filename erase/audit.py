"""The audit log: an append-only, hash-chained SQLite events table.

Each row's hash is sha256(previous row's hash || canonical JSON of this row), so editing,
deleting or reordering any row breaks the chain at that row. It is the source of truth for
what happened to every device, written before each next step starts.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import AuditBroken, OutputError
from .model import canonical_json

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    job_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(row)).hexdigest()


@dataclass(frozen=True)
class Event:
    id: int
    ts: str
    job_id: str
    serial: str
    event: str
    payload: str  # canonical JSON


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open audit log {self.path}: {exc}",
                              "choose a writable --out directory") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, job_id: str, serial: str, event: str, payload: dict[str, Any] | None = None) -> int:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                last = self._db.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
                row_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                row = {"id": row_id, "ts": now_iso(), "job_id": job_id, "serial": serial or "",
                       "event": event, "payload": canonical_json(payload or {}).decode()}
                self._db.execute(
                    "INSERT INTO events (id, ts, job_id, serial, event, payload, prev_hash, hash)"
                    " VALUES (:id, :ts, :job_id, :serial, :event, :payload, :prev, :hash)",
                    {**row, "prev": prev, "hash": row_hash(prev, row)})
                self._db.execute("COMMIT")
                return row_id
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutputError(f"cannot write audit log {self.path}: {exc}",
                                  "free disk space or choose another --out directory") from exc

    def events(self, job_id: str | None = None) -> list[Event]:
        query = "SELECT id, ts, job_id, serial, event, payload FROM events"
        args: tuple = ()
        if job_id:
            query += " WHERE job_id = ?"
            args = (job_id,)
        return [Event(*r) for r in self._db.execute(query + " ORDER BY id", args)]


def verify_log(path: Path) -> int:
    """Walk the chain; returns the number of rows, raises AuditBroken naming the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise AuditBroken(f"no audit log at {path}", "give the path of an audit.sqlite file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute("SELECT id, ts, job_id, serial, event, payload, prev_hash, hash"
                          " FROM events ORDER BY id").fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise AuditBroken(f"{path} is not a readable phonewipe audit log: {exc}",
                          "check the file; restore it from backup if it is damaged") from exc
    prev = GENESIS
    expected_id = 1
    for r in rows:
        row = dict(zip(("id", "ts", "job_id", "serial", "event", "payload"), r[:6]))
        if row["id"] != expected_id:
            raise AuditBroken(f"audit log broken at row {expected_id}: row missing or reordered",
                              "the log was edited after it was written; treat its records as suspect")
        if r[6] != prev or row_hash(prev, row) != r[7]:
            raise AuditBroken(f"audit log broken at row {row['id']} ({row['event']} of job "
                              f"{row['job_id'][:8]}): its hash does not match its content",
                              "the log was edited after it was written; treat its records as suspect")
        prev = r[7]
        expected_id += 1
    return len(rows)
