"""The station: watch every plugin, start a job per new phone, run them side by side, and
keep the batch's story in the audit log so a restarted station carries on where the last
one stopped.

Threads: the caller's thread polls discovery and enforces deadlines; one worker thread per
device runs its job; nothing a phone does can block the poll loop.
"""
from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..audit import AuditLog, now_iso
from ..errors import PhonewipeError, UsageError
from ..job import JobSettings, run_job
from ..model import Endpoint, Identity, Outcome, Record, _plain
from ..plugin import Plugin
from ..guard import GuardedPlugin, JobGuard
from .ledger import BatchLedger, JobTrace, batch_job_id, read_ledger
from .manifest import Manifest
from .watcher import Watcher

Listener = Callable[[dict[str, Any]], None]


@dataclass
class StationOptions:
    batch_id: str
    settings: JobSettings
    cert_dir: Path
    manifest: Manifest | None = None
    timeout: float = 7200.0  # per device, from arrival to record
    grace: float | None = None  # past the deadline, a job stuck in one call is recorded by the
    # station after this long (default: 10% of the timeout, between 2 and 30 s)
    poll: float = 0.5
    max_jobs: int = 64
    exit_when_idle: bool = False
    idle_seconds: float = 3.0
    second_look_share: float = 0.05
    second_look_by: str = ""


@dataclass
class DeviceRow:
    key: str
    port: str
    plugin: str
    mode: str
    model: str = ""
    serial: str = ""
    imei: str = ""
    asset_tag: str = ""
    state: str = "arrived"
    done: int = 0
    total: int = 0
    stage_started: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    outcome: str = ""
    result: str = ""
    reason: str = ""
    job_id: str = ""
    certificate: str = ""
    present: bool = True
    busy: bool = False
    redo_of: str = ""
    modes: list[str] = field(default_factory=list)
    second_look: str = ""

    @property
    def final(self) -> bool:
        return bool(self.outcome)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.stage_started
        return self.done / elapsed if elapsed > 0 and self.done else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
        if not rate or not self.total or self.done >= self.total:
            return None
        return (self.total - self.done) / rate


def fallback_record(job_id: str, identity: dict[str, Any] | None, endpoint: dict[str, Any],
                    settings: JobSettings, reason: str) -> Record:
    """A FAILED record the station writes itself, for a job that cannot write its own."""
    ident = dict(identity or {"platform": "unknown"})
    ident["imeis"] = tuple(ident.get("imeis", ()))
    return Record(record_id=str(uuid.uuid4()), job_id=job_id, created_at=now_iso(),
                  outcome=Outcome.FAILED, device=Identity(**ident), endpoint=Endpoint(**endpoint),
                  operator=settings.operator, destination=settings.destination,
                  tool={"name": "phonewipe", "version": __version__,
                        "plugin": str(endpoint.get("plugin", ""))},
                  reason=reason, asset_tag=settings.asset_tag, batch_id=settings.batch_id)


def record_payload(record: Record, by: str) -> dict[str, Any]:
    """The audit payload of a final record the station wrote itself (as the job's own)."""
    return {"outcome": record.outcome.value, "record_sha256": record.sha256(),
            "reason": record.reason, "record": record.to_dict(), "by": by}


class JobAudit:
    """What a job sees as its audit log: events go to the real log, update the live row,
    and the station decides what the job's end means (record, abort, or too late)."""

    def __init__(self, station: "Station", row: DeviceRow, guard: JobGuard) -> None:
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


class Station:
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
        self.passes = 0
        share = options.second_look_share
        self._look_offset = secrets.randbelow(max(1, int(1 / share))) if share > 0 else 0
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

    def _batch_log(self, event: str, payload: dict[str, Any]) -> None:
        self.audit.append(batch_job_id(self.options.batch_id), "", event, payload)

    def on_job_event(self, gate: JobAudit, event: str, payload: dict[str, Any]) -> None:
        row = gate.row
        with self.lock:
            if event == "identified":
                ident = payload.get("identity") or {}
                gate.identity = ident
                row.model = " ".join(x for x in (ident.get("manufacturer"), ident.get("model")) if x)
                row.serial = ident.get("serial") or row.serial
                row.imei = ", ".join(ident.get("imeis") or ()) or row.imei
            if event == "record" and gate.record is not None:
                rec = gate.record
                row.outcome, row.result, row.reason = rec.outcome.value, rec.result_text, rec.reason
                row.state = "done"
            elif event == "aborted":
                row.state, row.reason = "aborted", payload.get("reason", "")
            elif event not in ("certified", "late-result", "queued", "second-look"):
                row.state = event
                row.done = row.total = 0
                row.stage_started = time.monotonic()
        self.last_activity = time.monotonic()
        fields = {"device": row.key, "port": row.port, "serial": row.serial, "job": gate.row.job_id}
        if event == "record" and gate.record is not None:
            fields.update(outcome=gate.record.outcome.value, result=gate.record.result_text,
                          reason=gate.record.reason, asset_tag=gate.record.asset_tag)
        elif event == "certified":
            fields["certificate"] = payload.get("certificate")
        elif event == "identified":
            fields.update(model=row.model, imei=row.imei)
        self.emit(event, **fields)

    def _progress(self, row: DeviceRow, stage: str, done: int, total: int) -> None:
        row.done, row.total = done, total
        now = time.monotonic()
        if now - self._last_progress.get(row.key, 0.0) >= 1.0 or done >= total:
            self._last_progress[row.key] = now
            self.emit("progress", device=row.key, serial=row.serial, job=row.job_id, stage=stage,
                      done=done, total=total, bytes_per_s=round(row.rate()))

    # -- batch lifecycle ------------------------------------------------------------------------
    def open(self) -> BatchLedger:
        ledger = read_ledger(self.audit, self.options.batch_id)
        o = self.options
        if ledger.closed is not None:
            raise UsageError(f"batch {o.batch_id} is already closed",
                             f"start a new batch (another --batch id, or none), or run `phonewipe "
                             f"report {o.batch_id}` to regenerate its outputs")
        if ledger.opened is None:
            self._batch_log("batch-opened", {
                "batch_id": o.batch_id, "operator": asdict(o.settings.operator),
                "destination": asdict(o.settings.destination),
                "manifest": o.manifest.to_dict() if o.manifest else None,
                "second_look_share": o.second_look_share, "timeout_s": o.timeout,
                "verify_mode": o.settings.verify_mode, "tool_version": __version__})
            self.emit("batch-opened")
            return ledger
        opened_with = ledger.opened.get("manifest")
        if o.manifest is not None and (opened_with or {}).get("sha256") != o.manifest.sha256:
            was = f"asset list {opened_with.get('path')}" if opened_with else "no asset list"
            raise UsageError(f"batch {o.batch_id} was opened with {was}; {o.manifest.path} differs "
                             "and its reports would not match",
                             "start a new batch for the new list, or resume with the original one"
                             + (" (or without --assets)" if opened_with else " (without --assets)"))
        if o.manifest is None and opened_with:
            self.options = replace(o, manifest=Manifest.from_dict(opened_with))
        unfinished = ledger.unfinished()
        for job in unfinished:
            if not (job.interrupted or job.aborted):
                self.audit.append(job.job_id, job.device_key, "interrupted",
                                  {"stage": job.stage, "redo": "the erase is done again when the "
                                   "device is seen; nothing it did is assumed"})
        self._batch_log("batch-resumed", {"interrupted": [j.job_id for j in unfinished],
                                          "uncertified": [j.job_id for j in ledger.uncertified()]})
        for job in ledger.jobs.values():
            if job.final:
                self._restore_row(job)
        for job in ledger.uncertified():
            self._certify(None, Record.from_dict(job.record), job.device_key)
        for job in unfinished:
            row = self._restore_row(job)
            row.state = f"interrupted in {job.stage}: waiting for the device"
            self.pending[row.key] = job
        self.emit("batch-resumed", interrupted=[j.job_id for j in unfinished])
        return ledger

    def _restore_row(self, job: JobTrace) -> DeviceRow:
        key = job.device_key
        ident = job.identity or {}
        row = self.rows.get(key) or DeviceRow(key, job.address, str(job.endpoint.get("plugin", "")),
                                              str(job.endpoint.get("mode", "")))
        row.present = False
        row.serial = job.serial or ""
        row.model = " ".join(x for x in (ident.get("manufacturer"), ident.get("model")) if x)
        row.imei = ", ".join(ident.get("imeis") or ())
        row.asset_tag, row.job_id = job.asset_tag, job.job_id
        if job.record:
            rec = Record.from_dict(job.record)
            row.outcome, row.result, row.reason = rec.outcome.value, rec.result_text, rec.reason
            row.state = "done (earlier run)"
            row.certificate = job.certificate or ""
            if rec.outcome is Outcome.ERASED_VERIFIED:
                self.passes += 1
        self.rows[key] = row
        self.by_address[job.address] = key
        if row.serial:
            self.by_serial[row.serial] = key
        return row

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

    # -- one device -----------------------------------------------------------------------------
    def _probe(self, plugin: Plugin, endpoint: Endpoint, guard: JobGuard) -> Identity | None:
        """Who is this? Asked before a job so a phone seen again in another mode is followed,
        not erased twice. A phone that cannot answer yet gets a job that records why."""
        try:
            with GuardedPlugin(plugin, guard).open(endpoint) as session:
                return session.identify()
        except Exception:  # noqa: BLE001 - the job will meet the same problem and record it
            return None

    def _claim(self, row: DeviceRow, endpoint: Endpoint, identity: Identity | None) -> tuple[DeviceRow, str] | None:
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

    def _work(self, row: DeviceRow, plugin: Plugin, endpoint: Endpoint, gate: JobAudit) -> None:
        try:
            identity = self._probe(plugin, endpoint, gate.guard)
            if gate.forced:  # recorded by the station while it hung in the probe
                return
            claimed = self._claim(row, endpoint, identity)
            if claimed is None:
                return
            row, redo_of = claimed
            self._run_job(row, plugin, endpoint, gate, identity, redo_of)
        except Exception as exc:  # noqa: BLE001 - a station bug must not take the other phones
            self.emit("station-error", device=row.key, error=repr(exc))
        finally:
            with self.lock:
                row.busy = False
            self.last_activity = time.monotonic()

    def _run_job(self, row: DeviceRow, plugin: Plugin, endpoint: Endpoint, gate: JobAudit,
                 identity: Identity | None, redo_of: str) -> None:
        o = self.options
        guard = gate.guard
        asset = o.manifest.lookup(identity.serial, identity.imeis) if (o.manifest and identity) else None
        row.asset_tag = asset.asset_tag if asset else ""
        row.redo_of = redo_of
        job_id = str(uuid.uuid4())
        settings = replace(o.settings, batch_id=o.batch_id, asset_tag=row.asset_tag)
        gate.row = row
        with self.lock:
            self.workers[row.key] = (threading.current_thread(), guard, gate)
        serial = identity.serial if identity else None
        # the serial the probe knew is kept, so a restart after a kill -9 before the job's own
        # `identified` still knows which phone this was
        if not gate.queue(job_id, serial or endpoint.address,
                          {"batch_id": o.batch_id, "endpoint": asdict(endpoint),
                           "asset_tag": row.asset_tag, "redo_of": redo_of, "serial": serial}):
            return
        run_job(GuardedPlugin(plugin, guard), endpoint, settings, gate, guard.progress, job_id)
        if gate.record is not None and not gate.forced:  # the station certified what it forced
            self._certify(gate, gate.record, row.key)

    def _certify(self, gate: JobAudit | None, record: Record, key: str) -> None:
        serial = record.device.serial or record.endpoint.address
        append = gate.append if gate else self.audit.append
        try:
            path = self.signer.write_certificate(record, self.options.cert_dir)
        except PhonewipeError as exc:
            append(record.job_id, serial, "certificate-failed", {"error": exc.line()})
            return
        append(record.job_id, serial, "certified",
               {"certificate": str(path), "record_sha256": record.sha256()})
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                row.certificate = str(path)
        if record.outcome is Outcome.ERASED_VERIFIED and gate is not None:
            self._second_look(gate, record, path)

    def _second_look(self, gate: JobAudit, record: Record, certificate: Path) -> None:
        """R2v3 second look: a share of PASSed devices is re-verified with a fresh seed by a
        named person (erase/reverify.py). A device that cannot be read again right now (it
        rebooted into its reset) is recorded as picked and pending, with the command to run."""
        share = self.options.second_look_share
        with self.lock:
            self.passes += 1
            n = self.passes + self._look_offset
            picked = share > 0 and math.floor(n * share) > math.floor((n - 1) * share)
        if not picked:
            return
        by = self.options.second_look_by or self.options.settings.operator.name
        seed = secrets.randbits(63)
        payload: dict[str, Any] = {
            "selected": True, "by": by, "fresh_seed": seed, "share": share,
            "record_sha256": record.sha256(),
            "how": f"phonewipe verify --plan-from {certificate} --fresh-seed --operator {by!r}"}
        plugin = self.plugins.get(record.endpoint.plugin)
        try:
            from ..reverify import reverify_session
            if plugin is None:
                raise PhonewipeError(f"no plugin {record.endpoint.plugin!r}")
            with GuardedPlugin(plugin, gate.guard).open(record.endpoint) as session:
                result = reverify_session(session, record, seed=seed, fresh_seed=True,  # type: ignore[arg-type]
                                          operator=replace(self.options.settings.operator, name=by))
            payload.update(status="passed" if result.ok else "failed", verdict=result.verdict,
                           samples=result.samples, reason=result.reason)
        except PhonewipeError as exc:
            payload.update(status="pending", reason=f"not possible right now: {exc.line()}")
        gate.append(record.job_id, record.device.serial or "", "second-look", payload)
        gate.row.second_look = f"{payload['status']} ({by})"

    # -- deadlines and the end --------------------------------------------------------------------
    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        grace = self.options.grace
        if grace is None:
            grace = min(30.0, max(2.0, 0.1 * self.options.timeout))
        with self.lock:
            stuck = [(k, a) for k, (t, g, a) in self.workers.items()
                     if t.is_alive() and now > g.deadline + grace
                     and a is not None and a.record is None]
        for key, gate in stuck:
            row = gate.row
            if row.final:
                continue
            reason = (f"the device stopped answering during {row.state} and did not finish within "
                      f"the {self.options.timeout:.0f} s per-device timeout; check it and erase it again")
            settings = replace(self.options.settings, batch_id=self.options.batch_id,
                               asset_tag=row.asset_tag)
            with self.lock:  # stuck before its job was queued: an interrupted job it redoes
                redo = self.pending.pop(row.key, None) if not row.job_id else None
            identity = gate.identity or ({"platform": "unknown", "serial": row.serial}
                                         if row.serial else None)
            queued = {"batch_id": self.options.batch_id, "endpoint": _endpoint_dict(row),
                      "asset_tag": row.asset_tag, "redo_of": redo.job_id if redo else "",
                      "serial": row.serial or None}
            record = gate.force(lambda job_id: fallback_record(
                job_id, identity, _endpoint_dict(row), settings, reason), queued)
            if record is not None:
                self._certify(None, record, row.key)
            elif redo is not None:
                with self.lock:
                    self.pending.setdefault(row.key, redo)

    def finish(self) -> None:
        if self.stopped_how == "aborted":
            deadline = time.monotonic() + 5
            for thread, _, _ in list(self.workers.values()):
                thread.join(max(0.0, deadline - time.monotonic()))
            with self.final_lock:
                self.sealed = True  # from here no job writes to the log
                gates = [gate for _, _, gate in list(self.workers.values()) if gate is not None]
                # jobs still inside one device call: recorded as aborted all the same
                for gate in gates:
                    if gate.record is None and not gate.aborted and gate.row.job_id:
                        gate.aborted = True
                        self.audit.append(gate.row.job_id, gate.row.serial or gate.row.port,
                                          "aborted", {"stage": gate.row.state, "reason":
                                                      "still waiting on the device when the "
                                                      "station stopped"})
                        gate.row.state = "aborted"
            # decided from what the log holds, so the stop line and the audit always agree
            self.aborted_rows = [gate.row for gate in gates if gate.aborted]
            aborted = [row.job_id for row in self.aborted_rows]
            with self.lock:
                finished = sorted({r.job_id for r in self.rows.values() if r.final}
                                  | {gate.row.job_id for gate in gates if gate.record is not None})
            self._batch_log("station-stopped", {"how": "aborted by the operator",
                                                "finished": finished, "aborted": aborted})
            self.emit("station-stopped", finished=len(finished), aborted=aborted)
            return
        self.close_batch()

    def close_batch(self) -> None:
        """Devices whose interrupted erase was never redone end FAILED here: every device
        in a closed batch has exactly one final record."""
        with self.lock:
            leftovers = list(self.pending.items())
            self.pending.clear()
        for key, job in leftovers:
            reason = (f"the erase was interrupted during {job.stage} when the station stopped, and "
                      "the device was not seen again before the batch closed; erase it again")
            settings = replace(self.options.settings, batch_id=self.options.batch_id,
                               asset_tag=job.asset_tag)
            identity = job.identity or ({"platform": "unknown", "serial": job.serial}
                                        if job.serial else None)
            record = fallback_record(job.job_id, identity, job.endpoint, settings, reason)
            self.audit.append(job.job_id, job.device_key, "record", record_payload(record, "batch-close"))
            row = self.rows.get(key)
            if row:
                row.outcome, row.result, row.reason, row.state = \
                    record.outcome.value, record.result_text, reason, "done"
            self._certify(None, record, key)
        with self.lock:
            totals: dict[str, int] = {}
            for row in self.rows.values():
                if row.final:
                    totals[row.outcome] = totals.get(row.outcome, 0) + 1
        with self.final_lock:  # a job the station recorded as stuck may still be running
            self.sealed = True
            self._batch_log("batch-closed", {"totals": totals, "how": self.stopped_how})
        self.emit("batch-closed", totals=totals)


def _endpoint_dict(row: DeviceRow) -> dict[str, Any]:
    return {"plugin": row.plugin, "mode": row.mode, "address": row.port, "label": ""}
