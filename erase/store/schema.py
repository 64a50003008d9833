"""The store's schema as numbered migrations, each with its way up and its way down, for
both dialects. `store_schema` holds the version a database is at.

SQLite keeps the audit log's own tables (events, checkpoints) exactly as `AuditLog` makes
them: version 0 is a plain audit.sqlite, and migrating down to 0 leaves one. PostgreSQL's
events and checkpoints carry the station whose chain they belong to, and an idempotency key
per event so a spooled event replays exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    up: dict[str, tuple[str, ...]]  # dialect -> statements
    down: dict[str, tuple[str, ...]]


_PROJECTIONS_UP = (
    """CREATE TABLE IF NOT EXISTS store_stations (
        station TEXT PRIMARY KEY, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        events BIGINT NOT NULL, head TEXT NOT NULL, last_event TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS store_jobs (
        job_id TEXT PRIMARY KEY, station TEXT NOT NULL, batch_id TEXT NOT NULL DEFAULT '',
        serial TEXT NOT NULL DEFAULT '', imeis TEXT NOT NULL DEFAULT '[]',
        model TEXT NOT NULL DEFAULT '', asset_tag TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '', stage TEXT NOT NULL, started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '', record_id TEXT NOT NULL DEFAULT '',
        record_sha256 TEXT NOT NULL DEFAULT '', record TEXT, record_row BIGINT NOT NULL DEFAULT 0,
        finished_at TEXT NOT NULL DEFAULT '', certificate TEXT NOT NULL DEFAULT '',
        second_look TEXT)""",
    "CREATE INDEX IF NOT EXISTS store_jobs_batch ON store_jobs(batch_id)",
    "CREATE INDEX IF NOT EXISTS store_jobs_outcome ON store_jobs(outcome, finished_at)",
    "CREATE INDEX IF NOT EXISTS store_jobs_record ON store_jobs(record_id)",
    """CREATE TABLE IF NOT EXISTS store_batches (
        batch_id TEXT PRIMARY KEY, opened_at TEXT NOT NULL, closed_at TEXT NOT NULL DEFAULT '',
        manifest TEXT)""",
    """CREATE TABLE IF NOT EXISTS store_batch_stations (
        batch_id TEXT NOT NULL, station TEXT NOT NULL, PRIMARY KEY (batch_id, station))""",
)
_PROJECTIONS_DOWN = ("DROP TABLE IF EXISTS store_batch_stations", "DROP TABLE IF EXISTS store_batches",
                     "DROP TABLE IF EXISTS store_jobs", "DROP TABLE IF EXISTS store_stations")

_SQLITE_V1 = (
    # the audit log's own tables, as AuditLog creates them (a no-op on an existing log)
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY, ts TEXT NOT NULL, job_id TEXT NOT NULL, serial TEXT NOT NULL,
        event TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        id INTEGER PRIMARY KEY, ts TEXT NOT NULL, row INTEGER NOT NULL, head TEXT NOT NULL,
        reason TEXT NOT NULL, certificate TEXT NOT NULL, signature TEXT NOT NULL)""",
    # how far the projections have read the events table (its writers are plain AuditLogs)
    "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    *_PROJECTIONS_UP,
)
_SQLITE_V1_DOWN = (*_PROJECTIONS_DOWN, "DROP TABLE IF EXISTS store_meta")

_POSTGRES_V1 = (
    """CREATE TABLE IF NOT EXISTS events (
        cursor BIGSERIAL PRIMARY KEY, station TEXT NOT NULL, id BIGINT NOT NULL,
        ts TEXT NOT NULL, job_id TEXT NOT NULL, serial TEXT NOT NULL, event TEXT NOT NULL,
        payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        idem TEXT NOT NULL UNIQUE, UNIQUE (station, id))""",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        id BIGSERIAL PRIMARY KEY, station TEXT NOT NULL, ts TEXT NOT NULL, row BIGINT NOT NULL,
        head TEXT NOT NULL, reason TEXT NOT NULL, certificate TEXT NOT NULL,
        signature TEXT NOT NULL, idem TEXT NOT NULL UNIQUE)""",
    "CREATE INDEX IF NOT EXISTS checkpoints_station ON checkpoints(station, row)",
    *_PROJECTIONS_UP,
)
_POSTGRES_V1_DOWN = (*_PROJECTIONS_DOWN, "DROP TABLE IF EXISTS checkpoints",
                     "DROP TABLE IF EXISTS events")

_KEYS_UP = (
    # a final record's identifiers, normalised as `find` compares them
    """CREATE TABLE IF NOT EXISTS store_keys (
        key TEXT NOT NULL, kind TEXT NOT NULL, job_id TEXT NOT NULL,
        PRIMARY KEY (key, kind, job_id))""",
    "CREATE INDEX IF NOT EXISTS store_keys_job ON store_keys(job_id)",
)
_CERTS = """CREATE TABLE IF NOT EXISTS store_certificates (
        record_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, station TEXT NOT NULL,
        path TEXT NOT NULL, sha256 TEXT NOT NULL, record_sha256 TEXT NOT NULL, pdf {blob})"""
_V2_DOWN = ("DROP TABLE IF EXISTS store_certificates", "DROP TABLE IF EXISTS store_keys")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events with their stations; jobs, batches and stations as projections",
              {"sqlite": _SQLITE_V1, "postgresql": _POSTGRES_V1},
              {"sqlite": _SQLITE_V1_DOWN, "postgresql": _POSTGRES_V1_DOWN}),
    Migration(2, "search keys of final records; certificate references (path, SHA-256, PDF)",
              {"sqlite": (*_KEYS_UP, _CERTS.format(blob="BLOB")),
               "postgresql": (*_KEYS_UP, _CERTS.format(blob="BYTEA"))},
              {"sqlite": _V2_DOWN, "postgresql": _V2_DOWN}),
)
_V3_UP = ("ALTER TABLE store_batch_stations ADD COLUMN closed_at TEXT NOT NULL DEFAULT ''",)
_V3_DOWN = ("ALTER TABLE store_batch_stations DROP COLUMN closed_at",)
MIGRATIONS += (
    Migration(3, "a batch spanning stations closes with the last of them",
              {"sqlite": _V3_UP, "postgresql": _V3_UP}, {"sqlite": _V3_DOWN, "postgresql": _V3_DOWN}),
)
# the newest jobs first without sorting them all; a final record's JSON is read from its
# `record` event (record_row) instead of a copy in every job row the pages scan
_V4_UP = ("CREATE INDEX IF NOT EXISTS store_jobs_started ON store_jobs(started_at DESC, job_id)",)
_V4_DOWN = ("DROP INDEX IF EXISTS store_jobs_started",)
_V4_PG_UP = (*_V4_UP, "UPDATE store_jobs SET record = NULL WHERE record IS NOT NULL")
_V4_PG_DOWN = (*_V4_DOWN, "UPDATE store_jobs j SET record = (e.payload::jsonb -> 'record')::text"
               " FROM events e WHERE e.station = j.station AND e.id = j.record_row"
               " AND j.outcome <> ''")
MIGRATIONS += (
    Migration(4, "newest jobs by index; record JSON read from its event, not copied per job",
              {"sqlite": _V4_UP, "postgresql": _V4_PG_UP},
              {"sqlite": _V4_DOWN, "postgresql": _V4_PG_DOWN}),
)
LATEST = MIGRATIONS[-1].version

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS store_schema (version INTEGER NOT NULL)"


def steps(current: int, target: int, dialect: str) -> list[tuple[int, tuple[str, ...]]]:
    """The statements that take a database from `current` to `target`, as (version after
    the step, statements), in order."""
    if not 0 <= target <= LATEST:
        raise ValueError(f"schema version {target} does not exist (0 to {LATEST})")
    if target >= current:
        return [(m.version, m.up[dialect]) for m in MIGRATIONS if current < m.version <= target]
    return [(m.version - 1, m.down[dialect]) for m in reversed(MIGRATIONS)
            if target < m.version <= current]


def migrate_in(tx: Any, target: int, dialect: str) -> int:
    """Take a store to schema `target` (up or down) inside the open transaction `tx` (its
    ``run(sql, params)`` takes %(name)s parameters); returns the version it was at."""
    tx.run(VERSION_TABLE)
    rows = tx.run("SELECT MAX(version) FROM store_schema")
    current = int(rows[0][0]) if rows[0][0] is not None else 0
    for version, statements in steps(current, target, dialect):
        for sql in statements:
            tx.run(sql)
        tx.run("DELETE FROM store_schema")
        tx.run("INSERT INTO store_schema (version) VALUES (%(v)s)", {"v": version})
    if target == 0:
        tx.run("DROP TABLE store_schema")
    return current
