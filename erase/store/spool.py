"""A station's local spool: the events (and checkpoints) it wrote while the facility
database was out of reach, already chained and signed, in order, each with the idempotency
key the database's unique index knows it by. Replayed in order when the database returns;
an entry leaves the spool only after the database committed it, and one the database
already holds (committed, then the station died before it could forget it) is skipped by
its key, so every entry lands exactly once."""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
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
    reason TEXT NOT NULL, certificate TEXT NOT NULL, signature TEXT NOT NULL
);
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

    def add(self, entry: Spooled) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO spool (station, kind, idem, id, ts, job_id, serial, event, payload,"
                    " prev_hash, hash, reason, certificate, signature)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry.station, entry.kind, entry.idem, entry.id, entry.ts, entry.job_id,
                     entry.serial, entry.event, entry.payload, entry.prev_hash, entry.hash,
                     entry.reason, entry.certificate, entry.signature))
            except sqlite3.Error as exc:
                raise OutputError(f"cannot write the station's spool {self.path}: {exc}",
                                  "free disk space; the database is out of reach") from exc

    def pending(self, station: str, limit: int = 500) -> list[Spooled]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM spool WHERE station = ? ORDER BY n LIMIT ?",
                                    (station, limit)).fetchall()
        return [Spooled(*r) for r in rows]

    def count(self, station: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool WHERE station = ?",
                                        (station,)).fetchone()[0])

    def last(self, station: str) -> Spooled | None:
        """The newest spooled event: the head of the chain while the database is away."""
        with self._lock:
            row = self._db.execute("SELECT * FROM spool WHERE station = ? AND kind = 'event'"
                                   " ORDER BY n DESC LIMIT 1", (station,)).fetchone()
        return Spooled(*row) if row else None

    def forget(self, upto: int, station: str) -> None:
        """Drop the entries up to `upto` (the database committed them)."""
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE station = ? AND n <= ?", (station, upto))

    def close(self) -> None:
        with self._lock:
            self._db.close()
