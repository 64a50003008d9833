"""A station's local journal and spool: every row of its chain (and every checkpoint), in
order, each with the idempotency key the database's unique index knows it by, and whether
the database has it yet. The journal is the station's own view of its chain (its ledger and
a device's history read it, with or without the database); the rows not yet sent are the
spool, replayed in order when the database answers. An entry is marked sent only after the
database committed it, and one the database already holds (committed, then the answer was
lost) is skipped by its key, so every entry lands exactly once."""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import OutputError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,                  -- 'event' or 'checkpoint'
    idem TEXT NOT NULL UNIQUE,
    id INTEGER NOT NULL,                 -- the event's row, or the checkpoint's row
    ts TEXT NOT NULL,
    job_id TEXT NOT NULL, serial TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL,     -- a checkpoint: '' and its head
    reason TEXT NOT NULL, certificate TEXT NOT NULL, signature TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS spool_unsent ON spool(station, sent, n);
CREATE INDEX IF NOT EXISTS spool_job ON spool(station, job_id);
"""


@dataclass(frozen=True)
class Spooled:
    n: int
    station: str
    kind: str
    idem: str
    id: int
    ts: str
    job_id: str
    serial: str
    event: str
    payload: str
    prev_hash: str
    hash: str
    reason: str = ""
    certificate: str = ""
    signature: str = ""
    sent: int = 0


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open the station's spool {self.path}: {exc}",
                              "free disk space or choose another --out directory") from exc

    def add(self, entries: list[Spooled], sent: bool = False) -> list[Spooled]:
        """Journal `entries` in one transaction; returns them with their journal numbers."""
        out = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for e in entries:
                    cur = self._db.execute(
                        "INSERT INTO spool (station, kind, idem, id, ts, job_id, serial, event,"
                        " payload, prev_hash, hash, reason, certificate, signature, sent)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (e.station, e.kind, e.idem, e.id, e.ts, e.job_id, e.serial, e.event,
                         e.payload, e.prev_hash, e.hash, e.reason, e.certificate, e.signature,
                         int(sent)))
                    out.append(replace(e, n=int(cur.lastrowid or 0), sent=int(sent)))
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutputError(f"cannot write the station's spool {self.path}: {exc}",
                                  "free disk space; the database is out of reach") from exc

    def pending(self, station: str, limit: int = 500) -> list[Spooled]:
        """The entries the database does not have yet, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM spool WHERE station = ? AND sent = 0"
                                    " ORDER BY n LIMIT ?", (station, limit)).fetchall()
        return [Spooled(*r) for r in rows]

    def count(self, station: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool WHERE station = ? AND sent = 0",
                                        (station,)).fetchone()[0])

    def entries(self, station: str, kind: str = "event", job_id: str | None = None,
                after: int = 0) -> list[Spooled]:
        """Journaled entries of one kind (rows after `after`), in chain order."""
        query = "SELECT * FROM spool WHERE station = ? AND kind = ? AND id > ?"
        args: list[object] = [station, kind, after]
        if job_id:
            query += " AND job_id = ?"
            args.append(job_id)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY n", args).fetchall()
        return [Spooled(*r) for r in rows]

    def last(self, station: str) -> Spooled | None:
        """The newest journaled event: the head of the station's chain."""
        with self._lock:
            row = self._db.execute("SELECT * FROM spool WHERE station = ? AND kind = 'event'"
                                   " ORDER BY n DESC LIMIT 1", (station,)).fetchone()
        return Spooled(*row) if row else None

    def mark_sent(self, upto: int, station: str) -> None:
        """The database committed the entries up to `upto`."""
        with self._lock:
            self._db.execute("UPDATE spool SET sent = 1 WHERE station = ? AND sent = 0 AND n <= ?",
                             (station, upto))

    def close(self) -> None:
        with self._lock:
            self._db.close()
