"""The facility store: one PostgreSQL for every station (psycopg 3, pooled).

Each station keeps its own hash chain (rows 1, 2, 3... of `events` under its name) with its
own signed checkpoints, written in one transaction with the projections the readers use.
The station's row in `store_stations` is locked while a row is added, so a chain grows one
row at a time whatever else writes to the database.

Every row is journaled in the station directory first (`spool.py`): the journal is the
station's own view of its chain, so it reads its ledger and a device's history without the
database. When the database is out of reach the station goes on: rows are chained, signed
and journaled as usual, and the ones the database lacks are replayed in order, exactly
once, as soon as it answers again (tried at most every `retry` seconds)."""
from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..audit import (
    CHECKPOINT_AFTER,
    CHECKPOINT_EVERY,
    GENESIS,
    AuditBroken,
    AuditReport,
    Event,
    checkpoint_message,
    note_appended,
    now_iso,
    row_hash,
    verify_chain,
    walk_chain,
)
from ..errors import OutputError
from ..model import canonical_json
from ..strings import clean
from . import schema
from .base import StationLog, Store, StoredEvent
from .projection import project
from .reading import SqlReader
from .spool import Spool, Spooled

_MIGRATION_LOCK = 0x70686F6E  # pg_advisory_xact_lock key: one migrating process at a time


def _db_errors() -> tuple[type[BaseException], ...]:
    """What "the database is out of reach" looks like from psycopg and its pool."""
    import psycopg
    import psycopg_pool
    return (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.partition(':')[0]}@{tail}"


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def run(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


class PostgresStore(SqlReader, Store):
    dialect = "postgresql"

    def __init__(self, url: str, keep_pdf: bool = False, min_size: int = 1, max_size: int = 4,
                 timeout: float = 5.0, migrate: bool = True, spool_dir: Path | None = None,
                 retry: float = 1.0) -> None:
        from psycopg_pool import ConnectionPool
        # the pool logs each failed reconnection as a warning on stderr; the journal handles it
        pool_log = logging.getLogger("psycopg.pool")
        if not pool_log.handlers:
            pool_log.addHandler(logging.NullHandler())
        self.url = url
        self.keep_pdf = keep_pdf
        self.spool_dir = spool_dir
        self.retry = retry
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, timeout=timeout,
                                   open=False,
                                   kwargs={"connect_timeout": max(1, int(timeout))},
                                   name="phonewipe-store")
        self.pool.open(wait=False)
        if migrate:
            try:
                self.migrate(schema.LATEST)
            except _db_errors() as exc:
                self.pool.close()
                raise OutputError(f"cannot reach the facility database {_redact(url)}: {exc}",
                                  "start PostgreSQL or fix [store] url in the config") from exc

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return _redact(self.url)

    # -- connections ----------------------------------------------------------------------------
    def _transaction(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def tx() -> Iterator[_PgTx]:
            with self.pool.connection() as conn:
                with conn.transaction():
                    yield _PgTx(conn)
        return tx()

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._transaction() as tx:
            return tx.run(sql, params)

    # -- schema ---------------------------------------------------------------------------------
    def version(self) -> int:
        with self._transaction() as tx:
            tx.run(schema.VERSION_TABLE)
            rows = tx.run("SELECT MAX(version) FROM store_schema")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def migrate(self, target: int) -> int:
        """Take the database to schema `target` (up or down); returns the version it was at."""
        with self._transaction() as tx:
            tx.run("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _MIGRATION_LOCK})
            return schema.migrate_in(tx, target, self.dialect)

    # -- reading --------------------------------------------------------------------------------
    def events_after(self, cursor: int = 0, limit: int = 500) -> list[StoredEvent]:
        rows = self._read("SELECT cursor, station, id, ts, job_id, serial, event, payload FROM events"
                          " WHERE cursor > %(c)s ORDER BY cursor LIMIT %(n)s",
                          {"c": cursor, "n": limit})
        return [self._event(r[0], r[1], r[2:]) for r in rows]

    def feed_end(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(cursor), 0) FROM events")[0][0])

    def chain(self, station: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """A station's rows (id, ts, job_id, serial, event, payload, prev_hash, hash) and its
        checkpoints (id, ts, row, head, reason, certificate, signature, idem), in order."""
        with self._transaction() as tx:
            rows = tx.run("SELECT id, ts, job_id, serial, event, payload, prev_hash, hash FROM events"
                          " WHERE station = %(s)s ORDER BY id", {"s": station})
            checkpoints = tx.run("SELECT id, ts, row, head, reason, certificate, signature, idem"
                                 " FROM checkpoints WHERE station = %(s)s ORDER BY row, id",
                                 {"s": station})
        return rows, checkpoints

    def chain_keys(self, station: str) -> list[tuple[Any, ...]]:
        """A station's rows with their idempotency keys, in order."""
        return self._read("SELECT id, ts, job_id, serial, event, payload, prev_hash, hash, idem"
                          " FROM events WHERE station = %(s)s ORDER BY id", {"s": station})

    def verify_station(self, station: str, trusted: Sequence[str] = (),
                       expect: Sequence[tuple[str, int | None]] = (),
                       require_checkpoint: bool = True, allow_empty: bool = False) -> AuditReport:
        """`verify_audit` for one station's chain in this database."""
        label = Path(f"{_redact(self.url)} station {station}")
        rows, checkpoints = self.chain(station)
        hashes = walk_chain(label, [tuple(r) for r in rows])
        return verify_chain(label, hashes, [c[:7] for c in checkpoints], trusted, expect,
                            require_checkpoint,
                            allow_empty)

    # -- writing --------------------------------------------------------------------------------
    def station_log(self, station: str, signer: Any = None) -> StationLog:
        if self.spool_dir is None:
            raise OutputError("a station writing to the facility database needs a spool directory",
                              "open the store with the station's --out directory")
        return PgStationLog(self, station, Spool(self.spool_dir / "spool.sqlite"), signer)

    def close(self) -> None:
        self.pool.close()


class PgStationLog:
    """One station's chain in the facility database, journaled locally first (see the
    module and `spool.py`): the journal is complete whether or not the database answers."""

    def __init__(self, store: PostgresStore, station: str, journal: Spool, signer: Any = None,
                 every: int = CHECKPOINT_EVERY) -> None:
        self.store = store
        self.station = station
        self.spool = journal
        self.signer = signer
        self.every = every
        self.path = Path(f"{_redact(store.url)} station {station}")
        self._lock = threading.Lock()
        self._next_try = 0.0
        self.replayed = 0  # entries written to the database after waiting in the spool
        self.spooled = 0  # entries that had to wait in the spool
        self.left = 0  # entries the database still lacked when the log was closed
        last = journal.last_n(station)
        self._suspect = last  # entries up to this one may be in the database already
        self._head, self._checkpointed = self._start()

    def _start(self) -> tuple[tuple[int, str], int]:
        """The chain's head and last checkpointed row. The journal knows them; rows the
        database has beyond it (a new station directory, same station) are journaled first."""
        last = self.spool.last(self.station)
        try:
            if self.signer is not None and last is None:
                self.store.verify_station(self.station, require_checkpoint=False, allow_empty=True)
            self._backfill(last)
        except _db_errors() as exc:
            if last is None:
                raise OutputError(f"cannot reach the facility database {_redact(self.store.url)}: "
                                  f"{exc}", "start PostgreSQL or fix [store] url; a station "
                                  "starts once with the database to learn its chain") from exc
        self._replay(force=True)  # what an earlier run left unsent, if the database answers
        last = self.spool.last(self.station)
        checkpoints = self.spool.entries(self.station, "checkpoint")
        return ((last.id, last.hash) if last else (0, GENESIS),
                checkpoints[-1].id if checkpoints else 0)

    def _backfill(self, last: Spooled | None) -> None:
        since = last.id if last else 0
        rows, checkpoints = self.store.chain(self.station)
        if last is not None and len(rows) >= since and rows[since - 1][7] != last.hash:
            raise AuditBroken(f"station {self.station}: row {since} of its chain in the database "
                              "is not the one this station journaled",
                              "two stations write under one name: give each its own [station] name")
        known = {c.idem for c in self.spool.entries(self.station, "checkpoint")}
        entries = [Spooled(0, self.station, "event", str(idem), int(i), ts, j, ser, ev, p, prev, h)
                   for i, ts, j, ser, ev, p, prev, h, idem in self.store.chain_keys(self.station)
                   if int(i) > since]
        entries += [Spooled(0, self.station, "checkpoint", str(idem), int(row), ts, "", "", "", "",
                            "", head, why, cert, sig)
                    for _, ts, row, head, why, cert, sig, idem in checkpoints if idem not in known]
        if entries:
            self.spool.add(entries, sent=True)

    # -- the AuditLog interface ---------------------------------------------------------------
    def append(self, job_id: str, serial: str, event: str,
               payload: dict[str, Any] | None = None) -> int:
        with self._lock:
            row_id, prev = self._head[0] + 1, self._head[1]
            ts, text, who = now_iso(), canonical_json(payload or {}).decode(), clean(serial) or ""
            digest = row_hash(prev, {"id": row_id, "ts": ts, "job_id": job_id, "serial": who,
                                     "event": event, "payload": text})
            entries = [Spooled(0, self.station, "event", str(uuid.uuid4()), row_id, ts, job_id,
                               who, event, text, prev, digest)]
            if self.signer is not None and (event in CHECKPOINT_AFTER
                                            or row_id - self._checkpointed >= self.every):
                entries.append(self._signed(row_id, digest, event if event in CHECKPOINT_AFTER
                                            else "periodic"))
            self._write(entries)
            self._head = (row_id, digest)
            note_appended(row_id, digest)
            return row_id

    def head(self) -> tuple[int, str]:
        return self._head

    def checkpoint(self, reason: str = "requested") -> tuple[int, str]:
        with self._lock:
            if self.signer is not None and self._head[0] > self._checkpointed:
                self._write([self._signed(*self._head, reason)])
            return self._head

    def events(self, job_id: str | None = None, kinds: Sequence[str] = ()) -> list[Event]:
        """This station's rows in order, from its journal (the database need not answer)."""
        return [Event(e.id, e.ts, e.job_id, e.serial, e.event, e.payload)
                for e in self.spool.entries(self.station, "event", job_id)
                if not kinds or e.event in kinds]

    def close(self) -> None:
        if self.signer is not None:
            self.checkpoint("closed")
        with self._lock:
            self._replay(force=True)
            self.left = self.spool.count(self.station)  # rows the database still lacks
        self.spool.close()

    def __enter__(self) -> "PgStationLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(self, trusted: Sequence[str] = ()) -> AuditReport:
        """This station's chain and checkpoints as its journal holds them (what `verify_audit`
        checks in a file), after one more try to bring the database up to date."""
        with self._lock:
            self._replay(force=True)
        rows = [(e.id, e.ts, e.job_id, e.serial, e.event, e.payload, e.prev_hash, e.hash)
                for e in self.spool.entries(self.station, "event")]
        checkpoints = [(e.n, e.ts, e.id, e.hash, e.reason, e.certificate, e.signature)
                       for e in self.spool.entries(self.station, "checkpoint")]
        return verify_chain(self.path, walk_chain(self.path, rows), checkpoints, trusted)

    def pending(self) -> int:
        """Entries in the spool, waiting for the database."""
        return self.spool.count(self.station)

    # -- the database, and the spool when it is away --------------------------------------------
    def _signed(self, row: int, head: str, reason: str) -> Spooled:
        ts = now_iso()
        cert, signature = self.signer.sign_checkpoint(checkpoint_message(row, head, ts, reason))
        self._checkpointed = row
        return Spooled(0, self.station, "checkpoint", str(uuid.uuid4()), row, ts, "", "", "",
                       "", "", head, reason, base64.b64encode(cert).decode("ascii"),
                       base64.b64encode(signature).decode("ascii"))

    def _write(self, entries: list[Spooled]) -> None:
        """Journal first (the station's record, whatever the database does), then send."""
        waiting = self.spool.has_pending(self.station)
        self.spool.add(entries)
        if not self._replay() or waiting:
            self.spooled += len(entries)

    def _replay(self, force: bool = False) -> bool:
        """Send the unsent entries to the database, in order; True once none is left.
        After a failure the database is tried again `retry` seconds later at the earliest."""
        if not force and time.monotonic() < self._next_try:
            return False
        tried = 0
        try:
            while batch := self.spool.pending(self.station):
                tried = batch[-1].n
                with self.store._transaction() as tx:
                    for entry in batch:
                        self._apply(tx, entry)
                self.spool.mark_sent(batch[-1].n, self.station)
                self.replayed += len(batch)
        except _db_errors():
            # the commit may have landed and its answer been lost: the keys settle that
            self._suspect = max(self._suspect, tried)
            self._next_try = time.monotonic() + self.store.retry
            self.spool.durable(True)  # the journal is now the only copy: fsync each entry
            return False
        self.spool.durable(False)  # the database holds a durable copy of what was sent
        return True

    def _apply(self, tx: Any, e: Spooled) -> None:
        """One journaled entry, unless the database already holds it (by its key: asked only
        of entries an earlier attempt may have committed)."""
        table = "events" if e.kind == "event" else "checkpoints"
        if e.n <= self._suspect:
            held = tx.run(f"SELECT {'hash' if e.kind == 'event' else 'head'} FROM {table}"
                          " WHERE idem = %(i)s", {"i": e.idem})
            if held:
                if held[0][0] != e.hash:
                    raise AuditBroken(f"station {self.station}: entry {e.idem} is in the database"
                                      " with another hash", "two stations write under one name")
                return
        args = {"s": self.station, "id": e.id, "ts": e.ts, "j": e.job_id, "serial": e.serial,
                "ev": e.event, "p": e.payload, "prev": e.prev_hash, "h": e.hash, "i": e.idem,
                "before": e.id - 1, "why": e.reason, "c": e.certificate, "sig": e.signature}
        if e.kind == "checkpoint":
            tx.run("INSERT INTO checkpoints (station, ts, row, head, reason, certificate, signature,"
                   " idem) VALUES (%(s)s, %(ts)s, %(id)s, %(h)s, %(why)s, %(c)s, %(sig)s, %(i)s)",
                   args)
            return
        # the chain moves one row, from exactly the row this station continues (locks it)
        moved = tx.run("UPDATE store_stations SET events = %(id)s, head = %(h)s, last_seen = %(ts)s,"
                       " last_event = %(ev)s WHERE station = %(s)s AND events = %(before)s"
                       " AND head = %(prev)s RETURNING 1", args)
        if not moved and e.id == 1 and e.prev_hash == GENESIS:
            moved = tx.run("INSERT INTO store_stations (station, first_seen, last_seen, events, head,"
                           " last_event) VALUES (%(s)s, %(ts)s, %(ts)s, 1, %(h)s, %(ev)s)"
                           " ON CONFLICT (station) DO NOTHING RETURNING 1", args)
        if not moved:
            at = tx.run("SELECT events FROM store_stations WHERE station = %(s)s", args)
            raise AuditBroken(f"station {self.station}: its chain in the database is at row "
                              f"{at[0][0] if at else 0}, but this station continues row {e.id - 1}",
                              "two stations write under one name: give each its own [station] name")
        tx.run("INSERT INTO events (station, id, ts, job_id, serial, event, payload, prev_hash, hash,"
               " idem) VALUES (%(s)s, %(id)s, %(ts)s, %(j)s, %(serial)s, %(ev)s, %(p)s, %(prev)s,"
               " %(h)s, %(i)s)", args)
        project(tx, self.station, Event(e.id, e.ts, e.job_id, e.serial, e.event, e.payload),
                self.store.keep_pdf, station_row=False)
