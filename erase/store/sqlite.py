"""The zero-setup store: one station directory's audit.sqlite, as it always was.

Stations and erase runs write it through a plain `AuditLog` (the events and checkpoints
tables, unchanged); this store adds its projections beside them and brings them up to date
with the events before each read, so a log written by any version of phonewipe reads the
same. Migrating down to version 0 leaves the plain audit log."""
from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ..audit import AuditLog, Event
from ..errors import OutputError
from . import schema
from .base import DEFAULT_STATION, StationLog, Store, StoredEvent
from .projection import project
from .reading import SqlReader

_PARAM = re.compile(r"%\((\w+)\)s")
_CATCH_UP_ROWS = 2000  # events projected per transaction


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
            tx.run(schema.VERSION_TABLE)
            rows = tx.run("SELECT MAX(version) FROM store_schema")
            current = int(rows[0][0]) if rows[0][0] is not None else 0
            for version, statements in schema.steps(current, target, self.dialect):
                for sql in statements:
                    tx.run(sql)
                tx.run("DELETE FROM store_schema")
                tx.run("INSERT INTO store_schema (version) VALUES (%(v)s)", {"v": version})
            if target == 0:
                tx.run("DROP TABLE store_schema")
            elif target != current:  # projections are derived: rebuilt from the events
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
        """Project the events written since the last read; returns how many."""
        done = 0
        while True:
            with self._transaction() as tx:
                since = int(tx.run("SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM store_meta"
                                   " WHERE key = 'projected'")[0][0])
                rows = tx.run("SELECT id, ts, job_id, serial, event, payload, hash FROM events"
                              f" WHERE id > %(i)s ORDER BY id LIMIT {_CATCH_UP_ROWS}", {"i": since})
                for r in rows:
                    project(tx, self.station, Event(*r[:6]), self.keep_pdf, head=r[6])
                if rows:
                    tx.run("INSERT INTO store_meta (key, value) VALUES ('projected', %(v)s)"
                           " ON CONFLICT (key) DO UPDATE SET value = %(v)s", {"v": str(rows[-1][0])})
            done += len(rows)
            if len(rows) < _CATCH_UP_ROWS:
                return done

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.catch_up()
        with self._lock:
            return self._db.execute(_sqlite(sql), params or {}).fetchall()

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
