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
from typing import Any, Collection

from ..audit import AuditLog, Event
from ..errors import OutputError
from ..station.ledger import BATCH_PREFIX
from . import schema
from .base import DEFAULT_STATION, StationLog, Store, StoredEvent
from .fold import BATCH_COLUMNS, JOB_COLUMNS, BatchRow, Changes, Fold, JobRow
from .projection import PAYLOAD_EVENTS, project
from .reading import SqlReader

_PARAM = re.compile(r"%\((\w+)\)s")
# events projected per write transaction: a station's appends wait for one at most
_CATCH_UP_ROWS = 250
# a longer backlog (a log no reader has projected yet) is read this many events at a time,
# folded in memory (fold.py) outside the write lock, and each chunk's changed rows are
# written in one short transaction
_FOLD_ROWS = 5000
_FOLD_KEEP = 50_000  # jobs a fold keeps between chunks before it reads them again
# the parts of a record no projection reads (projection.record_args, record_keys): its
# evidence is most of the log, and the rest is most of what is left to parse
_UNREAD = ("evidence", "verification", "sanitization", "findings", "media", "endpoint", "operator",
           "tool", "post_state", "destination", "earlier_failures")
# the events after a cursor, with the payloads the projections read ('{}' for the others,
# a record without _UNREAD)
_NEW_EVENTS = ("SELECT id, ts, job_id, serial, event, CASE WHEN event = 'record'"
               " AND json_valid(payload) THEN json_remove(payload, "
               f"{', '.join(repr('$.record.' + k) for k in _UNREAD)}) WHEN event IN"
               f" ({', '.join(repr(e) for e in PAYLOAD_EVENTS)}) OR substr(job_id, 1, ?) = ?"
               " THEN payload ELSE '{}' END FROM events WHERE id > ? ORDER BY id LIMIT ?")
# the same without json_valid, which parses each record a second time (a third of the read)
_NEW_EVENTS_UNCHECKED = _NEW_EVENTS.replace(" AND json_valid(payload)", "", 1)


def _new_events(db: sqlite3.Connection, since: int) -> list[tuple[Any, ...]]:
    args = (len(BATCH_PREFIX), BATCH_PREFIX, since, _FOLD_ROWS)
    try:
        return db.execute(_NEW_EVENTS_UNCHECKED, args).fetchall()
    except sqlite3.OperationalError:  # a record that is not JSON (a damaged log): its payload
        return db.execute(_NEW_EVENTS, args).fetchall()  # is read as {}, as `project` reads it


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
        most _CATCH_UP_ROWS of them, or the rows a chunk of _FOLD_ROWS changed, so a
        station appending to the log waits little."""
        done = 0
        while True:
            with self._lock:
                since = self._projected(self._db)
                rows = _new_events(self._db, since)
            if not rows:
                return done
            if len(rows) <= _CATCH_UP_ROWS:
                done += self._project(since, rows)
            else:
                done += self._fold_all(since, rows)

    def _fold_all(self, since: int, rows: list[tuple[Any, ...]]) -> int:
        """Fold chunks of events in until the log's end; stops early when another reader
        moved the projections (catch_up then reads from where it did)."""
        done, fold = 0, Fold(self.station, self.keep_pdf)  # its rows: the tables' at `since`
        while rows:
            moved = self._fold(fold, since, rows)
            if not moved:
                return done
            done, since = done + moved, rows[-1][0]
            if len(fold.jobs) > _FOLD_KEEP:
                fold = Fold(self.station, self.keep_pdf)
            with self._lock:
                rows = _new_events(self._db, since)
        return done

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
            self._mark(tx, rows)
        return len(rows)

    def _fold(self, fold: Fold, since: int, rows: list[tuple[Any, ...]]) -> int:
        """`_project` for a long backlog: `fold` (the tables at `since`) takes `rows` in
        memory, then their changed rows are written at once; 0 when another reader moved
        the projections meanwhile (`fold` then holds rows that are not the tables')."""
        with self._lock:
            fold.add([Event(*r[:6]) for r in rows], _Tables(self._db))
        changes = fold.changes()
        with self._transaction() as tx:
            if self._projected(self._db) != since:
                return 0
            _write(self._db, changes)
            self._mark(tx, rows)
        return len(rows)

    def _mark(self, tx: _SqliteTx, rows: list[tuple[Any, ...]]) -> None:
        """The station's row and the projections' cursor after `rows`, in their transaction."""
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


def _upsert(table: str, columns: tuple[str, ...], keys: int) -> str:
    """INSERT of whole rows that replaces the columns after the first `keys` of a row that
    is there (its rowid kept, as an UPDATE keeps it)."""
    marks = ", ".join("?" * len(columns))
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns[keys:])
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(columns[:keys])}) DO UPDATE SET {sets}")


_WRITES = (
    ("jobs", _upsert("store_jobs", JOB_COLUMNS, 1)),
    ("batches", _upsert("store_batches", BATCH_COLUMNS, 1)),
    ("batch_stations", _upsert("store_batch_stations", ("batch_id", "station", "closed_at"), 2)),
    ("keys", "INSERT INTO store_keys (key, kind, job_id) VALUES (?, ?, ?)"
             " ON CONFLICT (key, kind, job_id) DO NOTHING"),
    ("certificates", "INSERT INTO store_certificates (record_id, job_id, station, path, sha256,"
                     " record_sha256, pdf) VALUES (?, ?, ?, ?, ?, ?, ?)"
                     " ON CONFLICT (record_id) DO NOTHING"),
)


def _write(db: sqlite3.Connection, changes: Changes) -> None:
    for name, sql in _WRITES:
        rows = getattr(changes, name)
        if rows:
            db.executemany(sql, rows)


class _Tables:
    """fold.Tables on the store's connection (a few hundred keys per query)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _rows(self, sql: str, keys: Collection[str]) -> list[tuple[Any, ...]]:
        keys = list(keys)
        found = []
        for n in range(0, len(keys), 500):
            part = keys[n:n + 500]
            found += self.db.execute(sql.format(", ".join("?" * len(part))), part).fetchall()
        return found

    def jobs(self, job_ids: Collection[str]) -> list[JobRow]:
        return [JobRow(*r) for r in self._rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM store_jobs"
                                               " WHERE job_id IN ({})", job_ids)]

    def batches(self, batch_ids: Collection[str]) -> list[BatchRow]:
        return [BatchRow(*r) for r in self._rows(f"SELECT {', '.join(BATCH_COLUMNS)} FROM"
                                                 " store_batches WHERE batch_id IN ({})", batch_ids)]

    def batch_stations(self, batch_ids: Collection[str]) -> list[tuple[str, str, str]]:
        return [(str(b), str(s), str(c)) for b, s, c in self._rows(
            "SELECT batch_id, station, closed_at FROM store_batch_stations WHERE batch_id IN ({})"
            " ORDER BY rowid", batch_ids)]


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
