"""The facility store's interface: what a station writes (its audit log, per-station hash
chain, certificate references) and what a reader asks (stations, live jobs, batches with
their reconciliation, throughput, failures, a device's records).

Two implementations: `SqliteStore` (one station directory's audit.sqlite, the zero-setup
default, files as they always were) and `PostgresStore` (one database for a facility).
The audit events are the truth; jobs, batches, records and certificates are projections of
them kept in the same transaction as each event, so a reader never sees one without the
other.

Times are ISO 8601 UTC strings as the audit log writes them (``2026-12-02T11:35:30.123Z``).
This interface only grows: fields are added with defaults, methods are added, none change.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from ..audit import Event
from ..station.reconcile import Reconciliation

DEFAULT_STATION = "local"  # a station directory used without a `[station] name`


@dataclass(frozen=True)
class StationInfo:
    """One station as the store knows it: its chain's head and what it is doing."""

    station: str
    first_seen: str
    last_seen: str  # time of its newest event
    events: int  # rows in its chain
    head: str  # hash of its newest row (audit.GENESIS when none)
    running: int = 0  # jobs started and not yet final
    open_batches: tuple[str, ...] = ()
    last_event: str = ""  # name of its newest event (e.g. "station-stopped")


@dataclass(frozen=True)
class JobInfo:
    """One erase job: live while `outcome` is empty, final once its record is logged."""

    job_id: str
    station: str
    batch_id: str
    serial: str
    imeis: tuple[str, ...]
    model: str
    asset_tag: str
    stage: str  # the job's latest event ("queued", "identified", "erasing"...)
    started_at: str
    updated_at: str
    outcome: str = ""  # Outcome value once final ("ERASED_VERIFIED", "FAILED"...)
    result: str = ""  # "PASS", "FAIL", "NOT ERASED", "ERASED, NOT VERIFIED"
    reason: str = ""
    record_id: str = ""
    finished_at: str = ""
    certificate: str = ""  # path its `certified` event names
    address: str = ""  # how it was reached (adb serial, fastboot address...)

    @property
    def final(self) -> bool:
        return bool(self.outcome)


@dataclass(frozen=True)
class BatchInfo:
    """A batch, which may span stations: its counts by outcome from the final records."""

    batch_id: str
    opened_at: str
    closed_at: str  # "" while open
    stations: tuple[str, ...]
    jobs: int
    running: int
    totals: dict[str, int] = field(default_factory=dict)  # outcome -> final records
    has_manifest: bool = False

    @property
    def closed(self) -> bool:
        return bool(self.closed_at)


@dataclass(frozen=True)
class ThroughputBucket:
    """Final records of one station in one hour (``2026-12-02T11:00Z``)."""

    hour: str
    station: str
    finished: int
    passed: int  # ERASED_VERIFIED
    failed: int  # FAILED
    other: int  # BLOCKED, ERASED_UNVERIFIED


@dataclass(frozen=True)
class FailureCount:
    """Final records that were not a PASS, grouped by outcome and reason."""

    outcome: str
    reason: str
    count: int
    last_at: str
    stations: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertificateRef:
    """Where a record's signed PDF is, and its SHA-256 as the writing station hashed it."""

    record_id: str
    job_id: str
    station: str
    path: str
    sha256: str  # "" when the station could not read the file it named
    stored: bool = False  # the PDF's bytes are in the store too (`certificate_pdf`)
    record_sha256: str = ""


@dataclass(frozen=True)
class RecordHit:
    """A final record found by IMEI, serial or asset tag."""

    record: dict[str, Any]  # as logged (Record.to_dict)
    record_id: str
    record_sha256: str
    station: str
    batch_id: str
    job_id: str
    created_at: str
    outcome: str
    matched_by: tuple[str, ...]  # "serial", "IMEI", "asset tag"
    certificate: CertificateRef | None = None
    second_look: dict[str, Any] | None = None
    row: int = 0  # the `record` event's row in its station's chain


@dataclass(frozen=True)
class StoredEvent:
    """An audit event with the station whose chain holds it; `cursor` orders the store's
    change feed (`events_after`), `event.id` is the row in the station's chain."""

    cursor: int
    station: str
    event: Event


class StoreReader(ABC):
    """What the dashboard, `report` and `find` ask of a store. Every method reads only."""

    @abstractmethod
    def stations(self) -> list[StationInfo]:
        """Every station that wrote to the store, by name."""

    @abstractmethod
    def live_jobs(self, station: str | None = None) -> list[JobInfo]:
        """Jobs started and not final, oldest first."""

    @abstractmethod
    def jobs(self, batch_id: str | None = None, station: str | None = None,
             limit: int = 1000) -> list[JobInfo]:
        """Jobs (live and final), newest first."""

    @abstractmethod
    def batches(self) -> list[BatchInfo]:
        """Every batch, newest first."""

    @abstractmethod
    def batch(self, batch_id: str) -> BatchInfo | None: ...

    @abstractmethod
    def reconciliation(self, batch_id: str) -> Reconciliation:
        """The batch's final records against the asset list it was opened with (across
        every station that worked on it)."""

    @abstractmethod
    def throughput(self, since: str = "", station: str | None = None) -> list[ThroughputBucket]:
        """Final records per hour and station, oldest hour first."""

    @abstractmethod
    def failures(self, since: str = "", station: str | None = None) -> list[FailureCount]:
        """Non-PASS final records grouped by outcome and reason, most frequent first."""

    @abstractmethod
    def search(self, query: str) -> list[RecordHit]:
        """Final records whose serial, an IMEI or the asset tag is `query`, newest first."""

    @abstractmethod
    def certificate(self, record_id: str) -> CertificateRef | None: ...

    @abstractmethod
    def certificate_pdf(self, record_id: str) -> bytes | None:
        """The PDF's bytes when the store holds them, else None (read the path)."""

    @abstractmethod
    def events_after(self, cursor: int = 0, limit: int = 500) -> list[StoredEvent]:
        """The change feed: events with a cursor above `cursor`, in cursor order."""

    def job(self, job_id: str) -> JobInfo | None:
        """One job (live or final) by its id; None when the store has no such job."""
        return next((j for j in self.jobs(limit=1_000_000) if j.job_id == job_id), None)

    def feed_end(self) -> int:
        """The change feed's newest cursor (0 when empty): where a new live view starts."""
        cursor = 0
        while page := self.events_after(cursor, 5000):
            cursor = page[-1].cursor
        return cursor

    @abstractmethod
    def close(self) -> None: ...


class StationLog(Protocol):
    """What a station's jobs write to: an `AuditLog`'s methods, on one station's chain."""

    def append(self, job_id: str, serial: str, event: str,
               payload: dict[str, Any] | None = None) -> int: ...

    def events(self, job_id: str | None = None, kinds: Sequence[str] = ()) -> list[Event]: ...

    def head(self) -> tuple[int, str]: ...

    def checkpoint(self, reason: str = "requested") -> tuple[int, str]: ...

    def close(self) -> None: ...


class Store(StoreReader):
    """A reader that stations also write to."""

    @abstractmethod
    def station_log(self, station: str, signer: Any = None) -> StationLog:
        """The audit log of `station` (its own hash chain); `signer` signs its checkpoints."""
