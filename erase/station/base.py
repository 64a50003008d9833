"""The state the parts of a `Station` share (batch lifecycle, device arrival, job running),
declared once for the type checker; `Station.__init__` sets it."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..audit import AuditLog
from ..guard import JobGuard
from ..model import Endpoint, Identity, Record
from ..plugin import Plugin
from ..second_look import LookPicker
from .ledger import JobTrace
from .rows import DeviceRow, Listener, StationOptions
from .watcher import Watcher

if TYPE_CHECKING:
    from .gate import JobAudit


class StationBase:
    plugins: dict[str, Plugin]
    audit: AuditLog
    signer: Any
    options: StationOptions
    listener: Listener | None
    watcher: Watcher
    rows: dict[str, DeviceRow]
    by_address: dict[str, str]
    by_serial: dict[str, str]
    pending: dict[str, JobTrace]  # row key -> interrupted job to redo
    workers: dict[str, tuple[threading.Thread, JobGuard, JobAudit | None]]
    waiting: list[tuple[Plugin, Endpoint]]
    lock: threading.RLock
    final_lock: threading.Lock
    abort: threading.Event
    draining: bool
    sealed: bool
    stopped_how: str
    started: float
    last_activity: float
    looks: LookPicker  # the batch's second looks: passes counted, picks drawn
    _last_progress: dict[str, float]
    errors: list[str]
    aborted_rows: list[DeviceRow]
    discovery_errors: list[str]
    _interrupts: int

    if TYPE_CHECKING:  # defined by the parts and by Station
        def emit(self, event: str, **fields: Any) -> None: ...

        def running(self) -> list[DeviceRow]: ...

        def _progress(self, row: DeviceRow, stage: str, done: int, total: int) -> None: ...

        def _work(self, row: DeviceRow, plugin: Plugin, endpoint: Endpoint,
                  gate: JobAudit) -> None: ...

        def _certify(self, gate: JobAudit | None, record: Record, key: str) -> None: ...

        def _probe(self, plugin: Plugin, endpoint: Endpoint,
                   guard: JobGuard) -> Identity | None: ...

        def _claim(self, row: DeviceRow, endpoint: Endpoint,
                   identity: Identity | None) -> tuple[DeviceRow, str] | None: ...

        def on_job_event(self, gate: JobAudit, event: str, payload: dict[str, Any]) -> None: ...
