"""Erasing a list of devices from the command line: self-checks, a live progress view, the
results table, and matching a serial to a connected device."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, cast

import click
from rich.table import Table
from rich.text import Text

from phonewipe.common import OUTCOME_STYLE, console, err_console, load_signer
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.errors import DeviceNotFound, PhonewipeError, UsageError
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import Plugin
from phonewipe.erase.runner import JobResult, check_output_dir, erase_devices
from phonewipe.erase.second_look import LookPicker
from phonewipe.erase.strings import clean, escape_controls, for_terminal
from phonewipe.reports import _verify_command


class _ProgressView:
    """Live progress bars on stderr, one per phone, labelled by its serial and model (the
    job learns them before anything is written)."""

    def __init__(self, names: dict[str, str], enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        self.enabled = enabled
        self.names = names  # job id -> "SERIAL model"
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=None),
                                 TaskProgressColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), console=err_console,
                                 disable=not enabled, expand=True)
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def label(self, job_id: str, stage: str) -> str:
        return f"{for_terminal(self.names.get(job_id) or job_id[:8])} {stage}"

    def update(self, job_id: str, stage: str, done: int, total: int) -> None:
        with self._lock:
            task = self.tasks.get(job_id)
            if task is None:
                task = self.tasks[job_id] = self.progress.add_task(self.label(job_id, stage),
                                                                   total=total or 1)
            elif self.progress.tasks[task].fields.get("stage") != stage:
                self.progress.reset(task, total=total or 1)  # a new stage: its own speed
            self.progress.update(task, description=self.label(job_id, stage), completed=done,
                                 total=total or 1, stage=stage)


class _NamingAudit:
    """The run's audit log as the jobs see it: each `identified` event also names the job's
    progress bar (serial and model)."""

    def __init__(self, audit: AuditLog, names: dict[str, str]) -> None:
        self._audit = audit
        self._names = names

    def append(self, job_id: str, serial: str, event: str, payload: dict[str, Any] | None = None) -> int:
        if event == "identified" and payload:
            ident = payload.get("identity") or {}
            model = " ".join(str(x) for x in (ident.get("manufacturer"), ident.get("model")) if x)
            self._names[job_id] = " ".join(x for x in (ident.get("serial") or serial, model) if x)
        return self._audit.append(job_id, serial, event, payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._audit, name)


def _result_lines(r: JobResult) -> list[tuple[str, str, bool]]:
    """(label, value, is_prose) lines of one device: values that are copied (paths, hashes,
    method names) are never wrapped or cut; prose (the reason) wraps at words."""
    rec = r.record
    lines: list[tuple[str, str, bool]] = []
    if rec.sanitization:
        lines.append(("method", rec.sanitization.method, False))
    if rec.verification:
        lines.append(("verification", f"{rec.verification.mode} {rec.verification.status}", False))
    if rec.reason:
        lines.append(("reason", rec.reason, True))
    if r.second_look:
        lines.append(("second look", look_line(r.second_look), True))
        if pending_command(r):  # copied as is: never wrapped or cut
            lines.append(("run", pending_command(r), False))
    if r.certificate:
        lines.append(("certificate", str(r.certificate), False))
    else:
        lines.append(("NOT CERTIFIED", r.error or "not written", True))
    lines.append(("record sha256", rec.sha256(), False))
    return lines


def look_line(look: dict[str, Any]) -> str:
    """A second look in words: its verdict, by whom, how it was picked."""
    if look.get("status") == "passed-on":
        return f"passed on: {look.get('reason', '')}"
    said = {"passed": "passed", "failed": "FAILED", "pending": "PENDING"}.get(
        str(look.get("status")), str(look.get("status")))
    samples = f", {look['samples']} samples" if look.get("samples") is not None else ""
    why = f": {look['reason']}" if look.get("reason") and look.get("status") != "passed" else ""
    how = (look.get("pick") or {}).get("how", "")
    return (f"{said} (by {look.get('by')}, fresh seed{samples}, before the reset){why}"
            + (f"; picked {how}" if how else ""))


def pending_command(r: JobResult) -> str:
    """The command that finishes a second look the phone could not ("" when none is owed)."""
    look = r.second_look or {}
    if look.get("status") != "pending":
        return ""
    return _verify_command(str(r.certificate) if r.certificate else None, str(look.get("by", "")))


def looks_owed(looks: LookPicker | None) -> str:
    """Why a run that owes a second look has none ("" when it owes nothing)."""
    if looks is None or looks.taken >= looks.due(looks.passes):
        return ""
    return (f"second look: {looks.due(looks.passes) - looks.taken} owed — no phone that passed "
            "could be re-read before its reset (fill-and-reset methods, or no second reader); "
            "include a phone erased by a block-device method in the run")


def print_results(results: list[JobResult], out: Any = None) -> None:
    """One block per device: the result, serial and model on the first line, then each field
    on its own line. Nothing is cut at any width, in a terminal or a pipe."""
    out = out or console
    for r in results:
        rec = r.record
        device = " ".join(x for x in (rec.device.manufacturer, rec.device.model) if x)
        # device strings (and anything quoting them) are data: never markup or control codes
        head = Text.assemble((rec.result_text, f"bold {OUTCOME_STYLE[rec.outcome]}"), "  ",
                             escape_controls(rec.device.serial or rec.endpoint.address), "  ",
                             escape_controls(device or rec.endpoint.address))
        out.print(head, soft_wrap=True, highlight=False)
        for label, value, prose in _result_lines(r):
            if prose:  # wraps at words under its label, whole
                grid = Table.grid(padding=(0, 1))
                grid.add_column(width=15, no_wrap=True)
                grid.add_column(overflow="fold")
                style = "bold red" if label == "NOT CERTIFIED" else ""
                grid.add_row(Text(f"  {label}", style=style), Text(escape_controls(value)))
                out.print(grid, highlight=False)
            elif 2 + 14 + len(value) <= out.width:  # one line, copied as is
                out.print(Text(f"  {label:<14}") + Text(escape_controls(value)), soft_wrap=True,
                          highlight=False)
            else:  # too long for the line: the value on a line of its own, never cut
                out.print(Text(f"  {label}:"), highlight=False)
                out.print(Text(f"    {escape_controls(value)}"), soft_wrap=True, highlight=False)


def run_erase(targets: list[tuple[Plugin, Endpoint]], settings: JobSettings, out_dir: Path,
              keys_dir: Path, as_json: bool, audit_path: Path | None = None,
              abort: threading.Event | None = None, second_look_share: float = 0.0,
              second_look_by: str = "") -> list[JobResult]:
    """Self-checks first (output writable, key loads, audit opens), then erase everything;
    with a share above 0 the run gets its R2v3 second look(s) (erase.second_look)."""
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
        looks = LookPicker(second_look_share) if second_look_share > 0 else None
        with view.progress:
            try:
                results = erase_devices(targets, settings, cast(AuditLog, _NamingAudit(audit, view.names)),
                                        signer, cert_dir, view.update,
                                        abort=abort, on_interrupt=interrupted,
                                        looks=looks, second_look_by=second_look_by)
            finally:
                audit.checkpoint("erase-run")  # the run's every row, signed
    if as_json:
        click.echo(json.dumps([result_dict(r) for r in results], indent=2))
    else:
        print_results(results)
        if looks_owed(looks):
            console.print(for_terminal(looks_owed(looks)), highlight=False, soft_wrap=True)
        console.print(f"audit log: {for_terminal(audit_path or out_dir / 'audit.sqlite')}",
                      highlight=False, soft_wrap=True)
    return results


def result_dict(r: JobResult) -> dict[str, Any]:
    rec = r.record
    return {"serial": rec.device.serial, "manufacturer": rec.device.manufacturer,
            "model": rec.device.model, "address": rec.endpoint.address,
            "outcome": rec.outcome.value, "result": rec.result_text, "reason": rec.reason,
            "method": rec.sanitization.method if rec.sanitization else None,
            "verification": rec.verification.status if rec.verification else None,
            "certificate": str(r.certificate) if r.certificate else None,
            "certificate_error": r.error or None, "record_sha256": rec.sha256(),
            "second_look": r.second_look, "second_look_command": pending_command(r) or None}


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


