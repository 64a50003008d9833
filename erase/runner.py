"""Run jobs for several devices at once and turn each record into a signed certificate.

The tool checks itself before it touches a phone (signing key loads, output directory is
writable, audit log opens), so a mistake in the setup never leaves an erased phone without
its certificate.
"""
from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .audit import AuditLog
from .errors import OutputError, PhonewipeError
from .guard import GuardedPlugin, JobGuard
from .job import JobSettings, StageFn, run_job
from .model import Endpoint, Outcome, Record
from .plugin import Plugin


@dataclass(frozen=True)
class JobResult:
    record: Record
    certificate: Path | None
    error: str = ""  # why no certificate was written


def check_output_dir(out_dir: Path) -> Path:
    """Create the directory and prove a file can be written there."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".phonewipe-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {out_dir}: {exc.strerror or exc}",
                          "choose a writable --out directory") from exc
    return out_dir


INTERRUPTED = ("interrupted by the operator (Ctrl-C) before the job finished",
               "erase the phone again: it may be partly erased")


def _count_interrupt(interrupts: int, abort: threading.Event,
                     on_interrupt: Callable[[int], None] | None) -> int:
    """The n-th Ctrl-C: the second sets ``abort``, the third gives up. A Ctrl-C that lands
    while the operator is being told about the last one counts too (a quick double press)."""
    while True:
        if interrupts >= 3:
            raise KeyboardInterrupt
        if interrupts == 2:
            abort.set()
        try:
            if on_interrupt:
                on_interrupt(interrupts)
            return interrupts
        except KeyboardInterrupt:
            interrupts += 1


def erase_devices(targets: list[tuple[Plugin, Endpoint]], settings: JobSettings, audit: AuditLog,
                  signer, cert_dir: Path, progress: StageFn | None = None,
                  workers: int = 8, abort: threading.Event | None = None,
                  on_interrupt: Callable[[int], None] | None = None) -> list[JobResult]:
    """Erase every target concurrently; one slow phone never holds up the others.

    A first Ctrl-C lets the running jobs finish (`on_interrupt(1)`); a second sets `abort`,
    and each job stops at its next step with a FAILED record and certificate
    (`on_interrupt(2)`); a third gives up waiting."""
    abort = abort or threading.Event()

    def one(target: tuple[Plugin, Endpoint]) -> JobResult:
        plugin, endpoint = target
        guard = JobGuard(float("inf"), abort, progress, stopped=INTERRUPTED)
        record = run_job(GuardedPlugin(plugin, guard), endpoint, settings, audit, guard.progress)
        serial = record.device.serial or endpoint.address
        try:
            path = signer.write_certificate(record, cert_dir)
        except PhonewipeError as exc:
            audit.append(record.job_id, serial, "certificate-failed", {"error": exc.line()})
            return JobResult(record, None, exc.line())
        audit.append(record.job_id, serial, "certified",
                     {"certificate": str(path), "record_sha256": record.sha256()})
        return JobResult(record, path)

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        futures = [pool.submit(one, t) for t in targets]
        interrupts = 0
        while True:
            try:
                wait(futures)
                break
            except KeyboardInterrupt:
                interrupts = _count_interrupt(interrupts + 1, abort, on_interrupt)
        return [f.result() for f in futures]


EXIT_BY_OUTCOME = {Outcome.ERASED_VERIFIED: 0, Outcome.ERASED_UNVERIFIED: 10,
                   Outcome.BLOCKED: 11, Outcome.FAILED: 12}


def exit_code(results: list[JobResult]) -> int:
    """0 when every device is erased and verified; otherwise the most serious outcome's code."""
    codes = [EXIT_BY_OUTCOME[r.record.outcome] for r in results]
    if any(r.certificate is None for r in results):
        codes.append(8)
    return max(codes, default=0) if codes else 0
