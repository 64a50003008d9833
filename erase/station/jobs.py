"""Running a station's jobs: one worker thread per device runs its job through the guard,
its events update the live row, PASSed records are certified and a share of them get a
second look, and a job stuck past its deadline is recorded by the station."""
from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from ..destination import route
from ..errors import PhonewipeError
from ..guard import GuardedPlugin
from ..job import run_job
from ..model import Endpoint, Identity, Record
from ..plugin import Plugin, Session
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
        run_job(GuardedPlugin(plugin, guard), endpoint, settings, gate, guard.progress, job_id,
                second_look=lambda session, record: self._second_look(gate, session, record))
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

    def _looks_due(self, passes: int) -> int:
        """How many second looks a batch owes after `passes` PASSes: one at a random position
        in each run of 1/share PASSes (stratified, so neither the operator nor the device can
        tell which phone will be looked at), and at least one once anything passed."""
        share = self.options.second_look_share
        if share <= 0 or passes <= 0:
            return 0
        width = 1 / share
        while len(self._look_positions) * width < passes:
            j = len(self._look_positions)
            low, high = math.floor(j * width), math.floor((j + 1) * width)
            self._look_positions.append(low + 1 + secrets.randbelow(max(1, high - low)))
        return max(1, sum(1 for p in self._look_positions if p <= passes))

    def _second_look(self, gate: JobAudit, session: Session, record: Record) -> str | None:
        """R2v3 second look, in the job between a PASSed verification and the finish step (the
        factory reset after which USB debugging and root are gone): a picked phone is read
        again through a second reader (`readback()`, not the erase's) under a fresh seed, by
        the person named (`second_look_by`). A phone whose method cannot be re-read passes
        the pick on to the next phone; a look the phone could not finish stays pending with
        the command to run. Returns why the look failed (the job then FAILs), or None."""
        with self.lock:
            self.passes += 1
            picked = self.looks_taken < self._looks_due(self.passes)
            if picked:
                self.looks_taken += 1
        if not picked:
            return None
        o = self.options
        by = o.second_look_by or o.settings.operator.name
        serial = record.device.serial or record.endpoint.address
        why_not = session.not_recheckable(record)
        reader = None if why_not else session.readback()
        if reader is None:
            with self.lock:
                self.looks_taken -= 1  # the pick goes to the next phone that passes
            why_not = why_not or ("the device offers no second reader of its storage in this "
                                  "mode (readback(): e.g. no root)")
            gate.append(record.job_id, serial, "second-look", {
                "selected": False, "status": "passed-on", "by": by, "share": o.second_look_share,
                "reason": f"cannot be re-read: {why_not}; the pick goes to the next phone that "
                          "passes"})
            gate.row.second_look = "passed on (cannot be re-read)"
            return None
        seed = secrets.randbits(63)
        payload: dict[str, Any] = {
            "selected": True, "by": by, "fresh_seed": seed, "share": o.second_look_share,
            "when": "before the finish step (factory reset)",
            "reader": "readback(), a second reader path", "record_id": record.record_id}
        gate.append(record.job_id, serial, "rechecking", {"by": by, "fresh_seed": seed})
        from ..reverify import reverify
        try:
            result = reverify(record, reader, seed=seed, fresh_seed=True,
                              operator=replace(o.settings.operator, name=by),
                              progress=lambda done, total: gate.guard.progress(
                                  record.job_id, "rechecking", done, total))
        except PhonewipeError as exc:
            payload.update(status="pending", reason=f"not finished: {exc.line()}")
        else:
            payload.update(status="passed" if result.ok else "failed", verdict=result.verdict,
                           samples=result.samples, reason=result.reason,
                           medium=result.medium, problems_total=result.problems_total)
        gate.append(record.job_id, serial, "second-look", payload)
        gate.row.second_look = f"{payload['status']} ({by})"
        if payload["status"] == "failed":
            return (f"the second look (fresh seed, {result.samples} samples, by {by}) found "
                    f"what the first did not: {result.reason}")
        return None

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
            if record is not None:
                self._certify(None, record, row.key)
            elif redo is not None:
                with self.lock:
                    self.pending.setdefault(row.key, redo)
