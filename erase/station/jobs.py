"""Running a station's jobs: one worker thread per device runs its job through the guard,
its events update the live row, PASSed records are certified and a share of them get a
second look, and a job stuck past its deadline is recorded by the station."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from ..destination import route
from ..errors import PhonewipeError
from ..guard import GuardedPlugin
from ..job import run_job
from ..model import Endpoint, Identity, Operator, Record
from ..plugin import Plugin, Session
from ..second_look import take_second_look
from .base import StationBase
from .gate import JobAudit
from .rows import DeviceRow, _endpoint_dict, fallback_record


class JobRunner(StationBase):
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
                row.reset = bool(rec.sanitization and (rec.sanitization.details.get("factory_reset")
                                                       or "reset" in rec.sanitization.method))
                row.state = "done"
            elif event == "aborted":
                row.state, row.reason = "aborted", payload.get("reason", "")
            elif event not in ("certified", "late-result", "queued", "second-look"):
                row.state = event
                row.done = row.total = 0
                row.stage_started = time.monotonic()
        self.last_activity = time.monotonic()
        fields: dict[str, Any] = {"device": row.key, "port": row.port, "serial": row.serial,
                                  "job": gate.row.job_id}
        if event == "record" and gate.record is not None:
            fields.update(outcome=gate.record.outcome.value, result=gate.record.result_text,
                          reason=gate.record.reason, asset_tag=gate.record.asset_tag)
        elif event == "certified":
            fields["certificate"] = payload.get("certificate")
        elif event == "identified":
            fields.update(model=row.model, imei=row.imei)
        elif event == "second-look":  # its verdict, and why (the summary gives commands)
            fields.update({k: payload[k] for k in ("status", "by", "verdict", "reason")
                           if k in payload})
        self.emit(event, **fields)

    def _progress(self, row: DeviceRow, stage: str, done: int, total: int) -> None:
        row.done, row.total = done, total
        now = time.monotonic()
        if now - self._last_progress.get(row.key, 0.0) >= 1.0 or done >= total:
            self._last_progress[row.key] = now
            self.emit("progress", device=row.key, serial=row.serial, job=row.job_id, stage=stage,
                      done=done, total=total, bytes_per_s=round(row.rate()))

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
        if asset is not None and asset.owner:  # App. G media source: the asset list's owner
            settings = replace(settings, media=replace(settings.media, source=asset.owner))
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
        self.looks.started(job_id)
        try:
            run_job(GuardedPlugin(plugin, guard), endpoint, settings, gate, guard.progress, job_id,
                    second_look=lambda session, record: self._second_look(gate, session, record))
        finally:
            self.looks.ended(job_id)
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
        except Exception as exc:  # noqa: BLE001 - a signing bug is logged, and retried at close
            append(record.job_id, serial, "certificate-failed",
                   {"error": f"internal error while signing: {exc!r}"})
            return
        append(record.job_id, serial, "certified",
               {"certificate": str(path), "record_sha256": record.sha256()})
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                row.certificate = str(path)

    def _second_look(self, gate: JobAudit, session: Session, record: Record) -> str | None:
        """R2v3 second look (erase.second_look), in the job between a PASSed verification
        and the finish step, by the person named (`second_look_by`). A phone waiting for the
        batch's first draw goes on when the station aborts or a quarter of its timeout is
        left. Returns why the look failed (the job then FAILs), or None."""
        o = self.options
        guard = gate.guard
        margin = max(2.0, 0.25 * o.timeout)
        by = o.second_look_by or o.settings.operator.name

        def waiting() -> None:
            with self.lock:
                gate.row.state = "passed: waiting for the second-look draw"
        payload, failed = take_second_look(
            self.looks, gate.append, session, record, by=by, operator=o.settings.operator,
            go_on=lambda: guard.abort.is_set() or time.monotonic() > guard.deadline - margin,
            waiting=waiting, progress=lambda done, total: guard.progress(
                record.job_id, "rechecking", done, total))
        if payload is not None:
            who = f" (by {by})" if by and by != Operator().name else ""  # an unnamed station
            gate.row.second_look = ("passed on (cannot be re-read)"
                                    if payload["status"] == "passed-on"
                                    else f"{payload['status']}{who}")
        return failed

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        grace = self.options.grace
        if grace is None:
            grace = min(30.0, max(2.0, 0.1 * self.options.timeout))
        with self.lock:
            stuck = [(k, a) for k, (t, g, a) in self.workers.items()
                     if t.is_alive() and now > g.deadline + grace
                     and a is not None and a.record is None]
        for _key, gate in stuck:
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
            def make(job_id: str, identity: dict[str, Any] | None = identity, row: DeviceRow = row,
                     settings: Any = settings, reason: str = reason) -> Record:
                return route(fallback_record(job_id, identity, _endpoint_dict(row), settings,
                                             reason), self.audit)  # destination follows outcome
            record = gate.force(make, queued)
            if row.job_id:  # a phone waiting for the second-look draw need not wait for it
                self.looks.ended(row.job_id)
            if record is not None:
                self._certify(None, record, row.key)
            elif redo is not None:
                with self.lock:
                    self.pending.setdefault(row.key, redo)
