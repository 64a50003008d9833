"""The zero-setup store: one station directory's audit.sqlite, as it always was.

Stations and erase runs write it through a plain `AuditLog` (the events and checkpoints
tables, unchanged); this store adds its projections beside them and brings them up to date
with the events before each read, so a log written by any version of phonewipe reads the
same. Migrating down to version 0 leaves the plain audit log."""
from __future__ import annotations

import functools
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ..audit import AuditLog, Event
from ..errors import OutputError
from ..station.ledger import BATCH_PREFIX
from . import schema
from .base import DEFAULT_STATION, StationLog, Store, StoredEvent
from .projection import PAYLOAD_EVENTS, project
from .reading import SqlReader

_PARAM = re.compile(r"%\((\w+)\)s")
# events projected per write transaction: a station's appends wait for one at most
_CATCH_UP_ROWS = 250
# the events after a cursor, with the payloads the projections read ('{}' for the others;
# a record's evidence, most of the log, is left in the event: no projection reads it)
_NEW_EVENTS = ("SELECT id, ts, job_id, serial, event, CASE WHEN event = 'record'"
               " AND json_valid(payload) THEN json_remove(payload, '$.record.evidence') WHEN event IN"
               f" ({', '.join(repr(e) for e in PAYLOAD_EVENTS)}) OR substr(job_id, 1, ?) = ?"
               " THEN payload ELSE '{}' END FROM events WHERE id > ? ORDER BY id LIMIT ?")


@functools.lru_cache(maxsize=256)
def _sqlite(sql: str) -> str:
    return _PARAM.sub(r":\1", sql)


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def run(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.execute(_sqlite(sql), params or {}).fetchall()


class SqliteStore(SqlReader, Store):
    dialect = "sqlite"

    def __init__(self, path: Path, station: str = DEFAULT_STATION, keep_pdf: bool = False,
                 migrate: bool = True) -> None:
        self.path = Path(path)
        self.keep_pdf = keep_pdf
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # this connection writes only projections, rebuilt from the events if a crash
            # loses their last commit (WAL keeps them consistent)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the projections stay in it
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open store {self.path}: {exc}",
                              "choose a writable --out directory") from exc
        if migrate:
            self.migrate(schema.LATEST)
        self.station = self._meta("station") or station
        if migrate and not self._meta("station"):
            self._set_meta("station", self.station)

    # -- schema -------------------------------------------------------------------------------
    def version(self) -> int:
        with self._lock:
            has = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                   " AND name = 'store_schema'").fetchone()
            row = self._db.execute("SELECT MAX(version) FROM store_schema").fetchone() if has else None
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self, target: int) -> int:
        """Take the file to schema `target` (up or down); returns the version it was at."""
        with self._transaction() as tx:
            current = schema.migrate_in(tx, target, self.dialect)
            if target not in (0, current):  # projections are derived: rebuilt from the events
                self._reset_projections(tx, target)
        return current

    @staticmethod
    def _reset_projections(tx: _SqliteTx, version: int) -> None:
        tables = ["store_stations", "store_jobs", "store_batches", "store_batch_stations"]
        if version >= 2:
            tables += ["store_keys", "store_certificates"]
        for table in tables:
            tx.run(f"DELETE FROM {table}")
        tx.run("DELETE FROM store_meta WHERE key = 'projected'")

    def _meta(self, key: str) -> str:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError:
                return ""
        return str(row[0]) if row else ""

    def _set_meta(self, key: str, value: str) -> None:
        with self._transaction() as tx:
            tx.run("INSERT INTO store_meta (key, value) VALUES (%(k)s, %(v)s) ON CONFLICT (key)"
                   " DO UPDATE SET value = %(v)s", {"k": key, "v": value})

    # -- transactions and reads ---------------------------------------------------------------
    def _transaction(self) -> "_Transaction":
        return _Transaction(self)

    def catch_up(self) -> int:
        """Project the events written since the last read; returns how many. The events
        are read before the write lock is taken, and each short transaction projects at
        most _CATCH_UP_ROWS of them, so a station appending to the log waits little."""
        done = 0
        while True:
            with self._lock:
                since = self._projected(self._db)
                rows = self._db.execute(_NEW_EVENTS, (len(BATCH_PREFIX), BATCH_PREFIX, since,
                                                      _CATCH_UP_ROWS)).fetchall()
            if not rows:
                return done
            done += self._project(since, rows)

    @staticmethod
    def _projected(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM store_meta"
                              " WHERE key = 'projected'").fetchone()[0])

    def _project(self, since: int, rows: list[tuple[Any, ...]]) -> int:
        """Fold `rows` (the events after `since`) in; 0 when another reader did meanwhile."""
        with self._transaction() as tx:
            if self._projected(self._db) != since:
                return 0
            for r in rows:
                project(tx, self.station, Event(*r[:6]), self.keep_pdf, station_row=False)
            last = rows[-1]
            head = tx.run("SELECT hash FROM events WHERE id = %(i)s", {"i": last[0]})[0][0]
            tx.run("INSERT INTO store_stations (station, first_seen, last_seen, events, head,"
                   " last_event) VALUES (%(s)s, %(first)s, %(ts)s, %(id)s, %(h)s, %(ev)s)"
                   " ON CONFLICT (station) DO UPDATE SET last_seen = %(ts)s, events = %(id)s,"
                   " head = %(h)s, last_event = %(ev)s WHERE store_stations.events < %(id)s",
                   {"s": self.station, "first": rows[0][1], "ts": last[1], "id": last[0],
                    "ev": last[4], "h": head})
            tx.run("INSERT INTO store_meta (key, value) VALUES ('projected', %(v)s)"
                   " ON CONFLICT (key) DO UPDATE SET value = %(v)s", {"v": str(last[0])})
        return len(rows)

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.catch_up()
        with self._lock:
            return self._db.execute(_sqlite(sql), params or {}).fetchall()

    def feed_end(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def events_after(self, cursor: int = 0, limit: int = 500) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute("SELECT id, ts, job_id, serial, event, payload FROM events"
                                    " WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)).fetchall()
        return [self._event(r[0], self.station, r) for r in rows]

    # -- writing --------------------------------------------------------------------------------
    def station_log(self, station: str, signer: Any = None) -> StationLog:
        """The directory's audit log (one station per file: `station` is the store's own)."""
        return AuditLog(self.path, signer=signer)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) under the store's lock."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def __enter__(self) -> _SqliteTx:
        self.store._lock.acquire()
        try:
            self.store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            self.store._lock.release()
            raise
        return _SqliteTx(self.store._db)

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            self.store._db.execute("ROLLBACK" if kind is not None else "COMMIT")
        finally:
            self.store._lock.release()
