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
    reason TEXT NOT NULL, certificate TEXT NOT NULL, signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_job ON spool(station, job_id);
-- entries up to `upto` are in the database. Written every SENT_EVERY entries, not each
-- time: an entry sent again after a crash is skipped by its key.
CREATE TABLE IF NOT EXISTS sent (station TEXT PRIMARY KEY, upto INTEGER NOT NULL);
"""
SENT_EVERY = 100


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
        self._upto: dict[str, int] = {}  # station -> last entry the database has
        self._saved: dict[str, int] = {}  # station -> `upto` as last written to the file
        self._last: dict[str, int] = {}  # station -> last entry journaled
        self._durable = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open the station's spool {self.path}: {exc}",
                              "free disk space or choose another --out directory") from exc

    def _load(self, station: str) -> None:
        if station not in self._last:
            row = self._db.execute("SELECT upto FROM sent WHERE station = ?", (station,)).fetchone()
            self._upto[station] = self._saved[station] = int(row[0]) if row else 0
            last = self._db.execute("SELECT MAX(n) FROM spool WHERE station = ?",
                                    (station,)).fetchone()[0]
            self._last[station] = int(last or 0)

    def _save(self, station: str) -> None:
        self._db.execute("INSERT INTO sent (station, upto) VALUES (?, ?) ON CONFLICT (station)"
                         " DO UPDATE SET upto = excluded.upto", (station, self._upto[station]))
        self._saved[station] = self._upto[station]

    def add(self, entries: list[Spooled], sent: bool = False) -> list[Spooled]:
        """Journal `entries` in one transaction (`sent`: the database has them already);
        returns them with their journal numbers."""
        out = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for e in entries:
                    self._load(e.station)
                    cur = self._db.execute(
                        "INSERT INTO spool (station, kind, idem, id, ts, job_id, serial, event,"
                        " payload, prev_hash, hash, reason, certificate, signature)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (e.station, e.kind, e.idem, e.id, e.ts, e.job_id, e.serial, e.event,
                         e.payload, e.prev_hash, e.hash, e.reason, e.certificate, e.signature))
                    out.append(replace(e, n=int(cur.lastrowid or 0)))
                    self._last[e.station] = out[-1].n
                    if sent:
                        self._upto[e.station] = out[-1].n
                        self._save(e.station)
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._last.clear()  # read again from the file
                raise OutputError(f"cannot write the station's spool {self.path}: {exc}",
                                  "free disk space; the database is out of reach") from exc

    def last_n(self, station: str) -> int:
        with self._lock:
            self._load(station)
            return self._last[station]

    def durable(self, on: bool) -> None:
        """Sync every entry to disk (`on`: the database is away, the journal is the only
        copy), or leave it to the WAL's checkpoints (the database commits each entry). Turning
        it on syncs what was journaled before."""
        if on == self._durable:
            return
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={'FULL' if on else 'NORMAL'}")
            if on:
                self._db.execute("BEGIN IMMEDIATE")
                for station in self._upto:
                    self._save(station)
                self._db.execute("COMMIT")
            self._durable = on

    def has_pending(self, station: str) -> bool:
        with self._lock:
            self._load(station)
            return self._last[station] > self._upto[station]

    def pending(self, station: str, limit: int = 500) -> list[Spooled]:
        """The entries the database does not have yet, oldest first."""
        with self._lock:
            self._load(station)
            if self._last[station] <= self._upto[station]:
                return []
            rows = self._db.execute("SELECT * FROM spool WHERE station = ? AND n > ?"
                                    " ORDER BY n LIMIT ?",
                                    (station, self._upto[station], limit)).fetchall()
        return [Spooled(*r) for r in rows]

    def count(self, station: str) -> int:
        """How many entries wait for the database."""
        with self._lock:
            self._load(station)
            return int(self._db.execute("SELECT COUNT(*) FROM spool WHERE station = ? AND n > ?",
                                        (station, self._upto[station])).fetchone()[0])

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
            self._load(station)
            self._upto[station] = max(upto, self._upto[station])
            if self._upto[station] - self._saved[station] >= SENT_EVERY:
                self._save(station)

    def close(self) -> None:
        with self._lock:
            for station in self._upto:
                if self._upto[station] != self._saved[station]:
                    self._save(station)
            self._db.close()
