"""The station: watch every plugin, start a job per new phone, run them side by side, and
keep the batch's story in the audit log so a restarted station carries on where the last
one stopped.

Threads: the caller's thread polls discovery and enforces deadlines; one worker thread per
device runs its job; nothing a phone does can block the poll loop.

The parts: `rows` (options, live rows, the station's own records), `gate` (a job's audit
log), `batch` (open, resume, stop, close), `arrival` (devices arriving, leaving, followed),
`jobs` (running, certifying, deadlines); this module is the loop.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from ..audit import AuditLog, now_iso
from ..guard import JobGuard
from ..model import Endpoint, _plain
from ..plugin import Plugin
from ..second_look import LookPicker
from .arrival import DeviceArrival
from .batch import BatchLifecycle
from .gate import JobAudit
from .jobs import JobRunner
from .ledger import JobTrace
from .rows import DeviceRow, Listener, StationOptions, fallback_record, record_payload
from .watcher import Watcher

__all__ = ["DeviceRow", "JobAudit", "Listener", "Station", "StationOptions", "fallback_record",
           "record_payload"]


class Station(BatchLifecycle, DeviceArrival, JobRunner):
    def __init__(self, plugins: dict[str, Plugin], audit: AuditLog, signer: Any,
                 options: StationOptions, listener: Listener | None = None) -> None:
        self.plugins = plugins
        self.audit = audit
        self.signer = signer
        self.options = options
        self.listener = listener
        self.watcher = Watcher(plugins)
        self.rows: dict[str, DeviceRow] = {}
        self.by_address: dict[str, str] = {}
        self.by_serial: dict[str, str] = {}
        self.pending: dict[str, JobTrace] = {}  # row key -> interrupted job to redo
        self.workers: dict[str, tuple[threading.Thread, JobGuard, JobAudit | None]] = {}
        self.waiting: list[tuple[Plugin, Endpoint]] = []
        self.lock = threading.RLock()
        self.final_lock = threading.Lock()
        self.abort = threading.Event()
        self.draining = False
        self.sealed = False
        self.stopped_how = ""
        self.started = time.monotonic()
        self.last_activity = time.monotonic()
        self.looks = LookPicker(options.second_look_share)  # the batch's second looks
        self._last_progress: dict[str, float] = {}
        self.errors: list[str] = []
        self.aborted_rows: list[DeviceRow] = []  # set when the operator aborts
        self.discovery_errors: list[str] = []  # from the latest poll, for the live view
        self._interrupts = 0

    # -- events -----------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        if self.listener:
            self.listener({"ts": now_iso(), "batch": self.options.batch_id, "event": event,
                           **_plain(fields)})

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> str:
        """Run until idle (with exit_when_idle) or interrupted; returns how it stopped:
        "idle", "drained" or "aborted"."""
        self.open()
        self.watcher.start_udev()
        try:
            while True:
                try:
                    self._take_interrupts()
                    if self.abort.is_set():
                        self.stopped_how = "aborted"
                        break
                    if self.draining and not self.active():
                        self.stopped_how = "drained"
                        break
                    if not self.draining:
                        self.step()
                    self.enforce_deadlines()
                    if self.options.exit_when_idle and self.idle():
                        self.stopped_how = "idle"
                        break
                    self.watcher.wait(self.options.poll)
                except KeyboardInterrupt:
                    self.interrupt()
            self.finish()
        finally:
            self.watcher.stop()
        return self.stopped_how

    def interrupt(self) -> None:
        """First Ctrl-C: start no new jobs, let running ones finish. Second: abort them.
        Safe from a signal handler: it only counts and wakes the loop, which acts on it."""
        self._interrupts += 1
        self.watcher.wake.set()

    def _take_interrupts(self) -> None:
        if self._interrupts >= 1 and not self.draining:
            self.draining = True
            self.emit("draining", running=[r.key for r in self.running()])
        if self._interrupts >= 2 and not self.abort.is_set():
            self.abort.set()
            self.emit("aborting", running=[r.key for r in self.running()])

    def running(self) -> list[DeviceRow]:
        with self.lock:
            return [self.rows[k] for k, (t, _, _) in self.workers.items() if t.is_alive()
                    and k in self.rows]

    def active(self) -> bool:
        """Is a job still working? One the station already recorded as stuck no longer
        holds the batch (its late answer is logged, nothing more)."""
        with self.lock:
            return any(t.is_alive() and not (a and a.forced) for t, _, a in self.workers.values())

    def idle(self) -> bool:
        with self.lock:
            busy = self.active() or bool(self.waiting)
        return not busy and time.monotonic() - self.last_activity >= self.options.idle_seconds
