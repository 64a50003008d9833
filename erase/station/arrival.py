"""Devices arriving at and leaving a station: each poll's changes, a phone seen again in
another mode or port followed (by address, label or serial) instead of erased twice, a
new phone probed and given its row and its job (or queued past max_jobs)."""
from __future__ import annotations

import threading
import time

from ..guard import GuardedPlugin, JobGuard
from ..model import Endpoint, Identity
from ..plugin import Plugin
from .base import StationBase
from .gate import JobAudit
from .rows import DeviceRow


class DeviceArrival(StationBase):
    def step(self) -> None:
        change = self.watcher.poll()
        self.discovery_errors = change.errors
        for error in change.errors:
            if error not in self.errors:
                self.errors.append(error)
                self.emit("discovery-error", error=error)
        for endpoint in change.left:
            self._left(endpoint)
        for plugin, endpoint in change.arrived:
            self._arrived(plugin, endpoint)
        with self.lock:
            while self.waiting and len(self.running()) < self.options.max_jobs:
                self._start(*self.waiting.pop(0))

    def _left(self, endpoint: Endpoint) -> None:
        with self.lock:
            key = self.by_address.get(endpoint.address)
            row = self.rows.get(key) if key else None
            if row is None:
                return
            row.present = False
        self.last_activity = time.monotonic()
        self.emit("left", device=row.key, port=endpoint.address, mode=endpoint.mode,
                  serial=row.serial, busy=row.busy)

    def _arrived(self, plugin: Plugin, endpoint: Endpoint) -> None:
        self.last_activity = time.monotonic()
        with self.lock:
            # a USB address or label that is a known serial: the same phone in another mode,
            # followed without a probe that could disturb the job driving it there
            # A finished row found only by address is not followed: fastboot addresses are
            # physical ports, and a new phone in a reused port must get its own job (the probe
            # still follows the same phone plugged back in, by its serial).
            key = self.by_serial.get(endpoint.address) or self.by_serial.get(endpoint.label)
            row = self.rows.get(key) if key else None
            if row is None or not (row.busy or row.final):
                key = self.by_address.get(endpoint.address)
                row = self.rows.get(key) if key else None
                if row is not None and not row.busy:
                    row = None
            if row is not None:
                self.by_address[endpoint.address] = row.key
                row.present = True
                if endpoint.mode not in row.modes:
                    row.modes.append(endpoint.mode)
                self.emit("returned" if row.final else "re-enumerated", device=row.key,
                          port=endpoint.address, mode=endpoint.mode, serial=row.serial)
                return
            self.emit("arrived", port=endpoint.address, plugin=endpoint.plugin, mode=endpoint.mode)
            if len(self.running()) >= self.options.max_jobs:
                self.waiting.append((plugin, endpoint))
                return
            self._start(plugin, endpoint)

    def _start(self, plugin: Plugin, endpoint: Endpoint) -> None:
        key = self.by_address.get(endpoint.address)
        row = self.rows.get(key) if key else None
        # Only an interrupted device known by nothing but this address is redone on its row;
        # any other device gets a new row, and the probe's serial links it to an earlier one.
        if row is None or row.busy or row.final or row.serial:
            row = DeviceRow(self._new_key(endpoint.address), endpoint.address, plugin.name,
                            endpoint.mode)
            self.rows[row.key] = row
            self.by_address[endpoint.address] = row.key
        row.present, row.busy, row.state = True, True, "identifying"
        row.modes = [endpoint.mode]
        row.started = time.monotonic()
        guard = JobGuard(self.options.timeout, self.abort,
                         lambda _job, stage, done, total: self._progress(row, stage, done, total))
        # the gate exists from the start, so a phone that hangs while being identified is
        # recorded at its deadline like any other
        gate = JobAudit(self, row, guard)
        thread = threading.Thread(target=self._work, args=(row, plugin, endpoint, gate),
                                  name=f"job-{endpoint.address}", daemon=True)
        self.workers[row.key] = (thread, guard, gate)
        thread.start()

    def _new_key(self, address: str) -> str:
        key, n = address, 1
        while key in self.rows:
            n += 1
            key = f"{address}#{n}"
        return key

    def _probe(self, plugin: Plugin, endpoint: Endpoint, guard: JobGuard) -> Identity | None:
        """Who is this? Asked before a job so a phone seen again in another mode is followed,
        not erased twice. A phone that cannot answer yet gets a job that records why."""
        try:
            with GuardedPlugin(plugin, guard).open(endpoint) as session:
                return session.identify()
        except Exception:  # noqa: BLE001 - the job will meet the same problem and record it
            return None

    def _claim(self, row: DeviceRow, endpoint: Endpoint,
               identity: Identity | None) -> tuple[DeviceRow, str] | None:
        """Decide under the lock: run a job on `row` (returning it and the job it redoes),
        or None when this is a phone the batch already has."""
        serial = identity.serial if identity else None
        with self.lock:
            redo = self.pending.pop(row.key, None)
            if serial:
                other_key = self.by_serial.get(serial)
                other = self.rows.get(other_key) if other_key else None
                if other is not None and other is not row:
                    if other.busy or other.final:  # the same phone, in another mode or again
                        if endpoint.mode not in other.modes:
                            other.modes.append(endpoint.mode)
                        other.present = True
                        self.by_address[endpoint.address] = other.key
                        self.rows.pop(row.key, None)
                        self.workers.pop(row.key, None)
                        self.emit("followed", device=other.key, port=endpoint.address,
                                  mode=endpoint.mode, serial=serial)
                        return None
                    redo = self.pending.pop(other.key, None) or redo
                    self.rows.pop(other.key, None)
                self.by_serial[serial] = row.key
                row.serial = serial
            return row, redo.job_id if redo else ""
