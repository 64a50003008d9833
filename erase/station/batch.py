"""A station's batch lifecycle: open or resume the batch from the audit log (rows restored,
interrupted jobs queued for a redo, uncertified records certified), stop (drained, idle, or
aborted with every running job recorded) and close it with one final record per device."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from .. import __version__
from ..destination import route
from ..errors import UsageError
from ..model import Outcome, Record
from .base import StationBase
from .ledger import BatchLedger, JobTrace, batch_job_id, read_ledger
from .manifest import Manifest
from .rows import DeviceRow, fallback_record, record_payload


class BatchLifecycle(StationBase):
    def _batch_log(self, event: str, payload: dict[str, Any]) -> None:
        self.audit.append(batch_job_id(self.options.batch_id), "", event, payload)

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
        self._certify_uncertified(ledger)
        for job in unfinished:
            row = self._restore_row(job)
            row.state = f"interrupted in {job.stage}: waiting for the device"
            self.pending[row.key] = job
        self.emit("batch-resumed", interrupted=[j.job_id for j in unfinished])
        return ledger

    def _certify_uncertified(self, ledger: BatchLedger) -> None:
        """Sign the batch's records that have a record event and no certified one (their
        signing failed, or the station died in between), before the batch goes on or closes:
        a closed batch with an unsigned record could never be reported."""
        for job in ledger.uncertified():
            if job.record is not None:  # always: an uncertified job is a final one
                self._certify(None, Record.from_dict(job.record), job.device_key)

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
            look = job.second_look or {}
            passed = rec.outcome is Outcome.ERASED_VERIFIED or bool(look.get("selected"))
            self.looks.restore(self.looks.passes + passed,
                               self.looks.taken + bool(look.get("selected")))
        self.rows[key] = row
        self.by_address[job.address] = key
        if row.serial:
            self.by_serial[row.serial] = key
        return row

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
            record = route(fallback_record(job.job_id, identity, job.endpoint, settings, reason),
                           self.audit)
            self.audit.append(job.job_id, job.device_key, "record", record_payload(record, "batch-close"))
            row = self.rows.get(key)
            if row:
                row.outcome, row.result, row.reason, row.state = \
                    record.outcome.value, record.result_text, reason, "done"
            self._certify(None, record, key)
        # a certificate that failed during the run (a full disk, a signing error) gets its
        # second try here; one that fails again keeps the batch open, so the next run of the
        # station certifies it (a closed batch with an unsigned record could never be reported)
        self._certify_uncertified(read_ledger(self.audit, self.options.batch_id))
        unsigned = [j.job_id for j in read_ledger(self.audit, self.options.batch_id).uncertified()]
        if unsigned:
            with self.final_lock:
                self.sealed = True
                self._batch_log("station-stopped", {"how": f"{self.stopped_how}; the batch stays "
                                                    "open: record(s) not certified",
                                                    "uncertified": unsigned})
            self.emit("station-stopped", uncertified=unsigned)
            return
        with self.lock:
            totals: dict[str, int] = {}
            for row in self.rows.values():
                if row.final:
                    totals[row.outcome] = totals.get(row.outcome, 0) + 1
        with self.final_lock:  # a job the station recorded as stuck may still be running
            self.sealed = True
            looks = self.looks
            self._batch_log("batch-closed", {"totals": totals, "how": self.stopped_how,
                                             "passes": looks.passes,
                                             "second_look_due": looks.due(looks.passes),
                                             "second_look_done": looks.taken})
        self.emit("batch-closed", totals=totals)
