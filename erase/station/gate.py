"""A job's audit log as the station hands it over (`JobAudit`): every event goes to the real
log and updates the live row, and the station decides, atomically with the job, what the
job's end means: its record, an abort, or a late answer after the station recorded it."""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..audit import Event
from ..guard import JobGuard
from ..model import Record
from .rows import DeviceRow, record_payload

if TYPE_CHECKING:
    from .base import StationBase


class JobAudit:
    """What a job sees as its audit log: events go to the real log, update the live row,
    and the station decides what the job's end means (record, abort, or too late)."""

    def __init__(self, station: StationBase, row: DeviceRow, guard: JobGuard) -> None:
        self.station = station
        self.row = row
        self.guard = guard
        self.identity: dict[str, Any] | None = None
        self.record: Record | None = None  # the job's one final record, once written
        self.forced = False  # the station wrote that record for a job stuck past its deadline
        self.aborted = False  # the job was stopped by the operator and logged as such

    def append(self, job_id: str, serial: str, event: str, payload: dict[str, Any] | None = None) -> int:
        payload = payload or {}
        st = self.station
        with st.final_lock:
            if st.sealed:
                return -1  # the station has stopped: left unfinished, the next run redoes it
            if event == "record":
                if self.record is not None:
                    event, payload = "late-result", {"outcome": payload.get("outcome"),
                                                     "reason": payload.get("reason")}
                elif self.guard.stopped_by == "abort":
                    self.aborted = True
                    event, payload = "aborted", {"stage": self.row.state,
                                                 "reason": payload.get("reason", "")}
                else:
                    self.record = Record.from_dict(payload["record"])
            row_id = st.audit.append(job_id, serial, event, payload)
        st.on_job_event(self, event, payload)
        return row_id

    def events(self, job_id: str | None = None, kinds: Sequence[str] = ()) -> list[Event]:
        """The real log's rows (read side: a device's earlier records)."""
        return self.station.audit.events(job_id, kinds)

    def queue(self, job_id: str, serial: str, payload: dict[str, Any]) -> bool:
        """Log the job's `queued`, unless the station already recorded this device as stuck
        (while it was being identified) or has stopped: then the job must not run."""
        st = self.station
        with st.final_lock:
            if st.sealed or self.forced:
                return False
            self.row.job_id = job_id
            st.audit.append(job_id, serial, "queued", payload)
        st.on_job_event(self, "queued", payload)
        return True

    def force(self, make_record: Callable[[str], Record], queued: dict[str, Any]) -> Record | None:
        """The station records a job stuck past its deadline, atomically with the job's own
        end: returns the record written, or None when the job's own record came first. A
        device stuck while being identified has no job yet: it is queued here first."""
        st = self.station
        row = self.row
        with st.final_lock:
            if st.sealed or self.record is not None or self.aborted:
                return None
            if not row.job_id:
                row.job_id = str(uuid.uuid4())
                st.audit.append(row.job_id, row.serial or row.port, "queued", queued)
            record = make_record(row.job_id)
            self.record, self.forced = record, True
            payload = record_payload(record, "station-timeout")
            st.audit.append(row.job_id, row.serial or row.port, "record", payload)
        st.on_job_event(self, "record", payload)
        return record
