"""Erasing a list of devices from the command line: self-checks, a live progress view, the
results table, and matching a serial to a connected device."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import click
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.errors import DeviceNotFound, PhonewipeError, UsageError
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin
from phonewipe.erase.runner import JobResult, check_output_dir, erase_devices
from phonewipe.erase.strings import clean, for_terminal
from rich.table import Table

from phonewipe.common import OUTCOME_STYLE, console, err_console, load_signer


class _ProgressView:
    """A live rich table: one row per device, updated from the job threads."""

    def __init__(self, names: dict[str, str], enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeRemainingColumn(), console=err_console, disable=not enabled)
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, job_id: str, stage: str, done: int, total: int) -> None:
        with self._lock:
            task = self.tasks.get(job_id)
            if task is None:
                task = self.tasks[job_id] = self.progress.add_task(job_id[:8], total=total or 1)
            self.progress.update(task, description=f"{job_id[:8]} {stage:<10}", completed=done,
                                 total=total or 1)


def _results_table(results: list[JobResult]) -> Table:
    table = Table("device", "serial", "method", "verification", "result", "certificate / reason")
    for r in results:
        rec = r.record
        # device strings (and anything quoting them) are data: never markup or control codes
        device = " ".join(x for x in (rec.device.manufacturer, rec.device.model) if x) or rec.endpoint.address
        method = rec.sanitization.method if rec.sanitization else "-"
        ver = rec.verification
        verification = f"{ver.mode} {ver.status}" if ver else "-"
        style = OUTCOME_STYLE[rec.outcome]
        detail = for_terminal(str(r.certificate) if r.certificate else r.error)
        if rec.reason:
            detail += f"\n[dim]{for_terminal(rec.reason)}[/]"
        table.add_row(for_terminal(device), for_terminal(rec.device.serial or rec.endpoint.address),
                      for_terminal(method), for_terminal(verification),
                      f"[{style}]{rec.result_text}[/]", detail)
    return table


def run_erase(targets: list[tuple[Plugin, Endpoint]], settings: JobSettings, out_dir: Path,
              keys_dir: Path, as_json: bool, audit_path: Path | None = None,
              abort: threading.Event | None = None) -> list[JobResult]:
    """Self-checks first (output writable, key loads, audit opens), then erase everything."""
    check_output_dir(out_dir)
    cert_dir = check_output_dir(out_dir / "certificates")
    signer = load_signer(keys_dir)

    def interrupted(count: int) -> None:
        err_console.print("Ctrl-C: finishing the running jobs; press Ctrl-C again to abort them "
                          "(each is then recorded FAILED, with its certificate)" if count == 1 else
                          "Ctrl-C: aborting the running jobs at their next step; Ctrl-C again "
                          "quits without waiting (the audit log keeps every step)")
    with AuditLog(audit_path or out_dir / "audit.sqlite", signer=signer) as audit:
        view = _ProgressView({}, enabled=not as_json)
        with view.progress:
            try:
                results = erase_devices(targets, settings, audit, signer, cert_dir, view.update,
                                        abort=abort, on_interrupt=interrupted)
            finally:
                audit.checkpoint("erase-run")  # the run's every row, signed
    if as_json:
        click.echo(json.dumps([{"serial": r.record.device.serial, "outcome": r.record.outcome.value,
                                "result": r.record.result_text, "reason": r.record.reason,
                                "certificate": str(r.certificate) if r.certificate else None,
                                "record_sha256": r.record.sha256()} for r in results], indent=2))
    else:
        console.print(_results_table(results))
        console.print(f"audit log: {for_terminal(audit_path or out_dir / 'audit.sqlite')}",
                      highlight=False)
    return results


def match_serial(targets: list[tuple[Plugin, Endpoint]], serial: str) -> list[tuple[Plugin, Endpoint]]:
    direct = [t for t in targets if t[1].address == serial]
    if direct:
        return direct
    matches, unidentified = [], []
    for plugin, endpoint in targets:  # match the phone's own serial number
        try:
            with plugin.open(endpoint) as session:
                identity = session.identify()
        except PhonewipeError:
            unidentified.append(endpoint)
            continue
        if serial in (identity.serial, clean(identity.serial)):  # as the device said it, or as shown
            matches.append((plugin, endpoint))
        elif identity.serial is None:
            unidentified.append(endpoint)
    if len(matches) > 1:  # cheap phones share serials like 0123456789ABCDEF
        raise UsageError(f"{len(matches)} devices report serial {serial!r} "
                         f"({', '.join(e.address for _, e in matches)})",
                         "name the one to erase by its address from `phonewipe devices`")
    if matches:
        return matches
    known = ", ".join(e.address for _, e in targets) or "none"
    waiting = [f"{e.address} ({e.label})" for e in unidentified if e.label not in ("device", "", None)]
    advice = (f"{', '.join(waiting)} could not say its serial: unlock it and accept the USB "
              "debugging prompt, or name it by that address" if waiting
              else "check the serial with `phonewipe devices`")
    raise DeviceNotFound(f"no device with serial {serial!r} (connected: {known})", advice)


