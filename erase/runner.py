"""Run jobs for several devices at once and turn each record into a signed certificate.

The tool checks itself before it touches a phone (signing key loads, output directory is
writable, audit log opens), so a mistake in the setup never leaves an erased phone without
its certificate.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .audit import AuditLog
from .errors import OutputError, PhonewipeError
from .guard import GuardedPlugin, JobGuard
from .job import JobSettings, SecondLook, StageFn, run_job
from .model import Endpoint, Outcome, Record
from .plugin import Plugin, Session
from .second_look import LookPicker, take_second_look


@dataclass(frozen=True)
class JobResult:
    record: Record
    certificate: Path | None
    error: str = ""  # why no certificate was written
    second_look: dict[str, Any] | None = None  # its `second-look` event, when it had one


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


def uncertified(record: Record, exc: BaseException, cert_dir: Path) -> str:
    """Why a job has no certificate, and what to do: nothing proves what happened to the
    phone, so it must be erased again (a new run erases and certifies it)."""
    why = exc.line() if isinstance(exc, PhonewipeError) else \
        f"{cert_dir}: {getattr(exc, 'strerror', None) or exc}" if isinstance(exc, OSError) else \
        f"signing failed: {type(exc).__name__}: {exc}"
    done = {Outcome.ERASED_VERIFIED: "was erased and verified",
            Outcome.ERASED_UNVERIFIED: "was erased",
            Outcome.FAILED: "may be partly erased",
            Outcome.BLOCKED: "was not erased"}[record.outcome]
    return (f"no certificate could be written ({why}): the phone {done}, but nothing proves "
            "it — erase it again once the output is writable (free space, or another --out); "
            "the new run erases and certifies it")


INTERRUPTED = ("interrupted by the operator (Ctrl-C) before the job finished",
               "erase the phone again: it may be partly erased")


class _CtrlC:
    """Counts Ctrl-C presses with a SIGINT handler that only counts: a KeyboardInterrupt
    raised inside a lock's wait can leave the lock broken ("release unlocked lock"), so
    the presses are acted on by the waiting loop, between waits. Off the main thread (where
    no handler can be set) it counts nothing and Ctrl-C keeps its default behaviour."""

    def __init__(self) -> None:
        self.pressed = 0
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._count)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _count(self, *_: object) -> None:
        self.pressed += 1


def _answer_interrupt(count: int, abort: threading.Event,
                      on_interrupt: Callable[[int], None] | None) -> None:
    """The n-th Ctrl-C: the first is told, the second sets ``abort``, the third gives up."""
    if count >= 3:
        raise KeyboardInterrupt
    if count == 2:
        abort.set()
    if on_interrupt:
        on_interrupt(count)


def erase_devices(targets: list[tuple[Plugin, Endpoint]], settings: JobSettings, audit: AuditLog,
                  signer, cert_dir: Path, progress: StageFn | None = None,
                  workers: int = 8, abort: threading.Event | None = None,
                  on_interrupt: Callable[[int], None] | None = None,
                  looks: LookPicker | None = None, second_look_by: str = "") -> list[JobResult]:
    """Erase every target concurrently; one slow phone never holds up the others — except
    that, with `looks`, a PASSed phone waits before its reset for the run's second-look draw
    (erase.second_look: the run is the batch).

    A first Ctrl-C lets the running jobs finish (`on_interrupt(1)`); a second sets `abort`,
    and each job stops at its next step with a FAILED record and certificate
    (`on_interrupt(2)`); a third gives up waiting."""
    abort = abort or threading.Event()
    looked: dict[str, dict[str, Any]] = {}  # job id -> its second-look event

    def look_hook(guard: JobGuard) -> SecondLook | None:
        if looks is None:
            return None

        def hook(session: Session, record: Record) -> str | None:
            payload, failed = take_second_look(
                looks, audit.append, session, record,
                by=second_look_by or settings.operator.name, operator=settings.operator,
                go_on=abort.is_set, progress=lambda done, total: guard.progress(
                    record.job_id, "rechecking", done, total))
            if payload is not None:
                looked[record.job_id] = payload
            return failed
        return hook

    def one(target: tuple[Plugin, Endpoint]) -> JobResult:
        plugin, endpoint = target
        guard = JobGuard(float("inf"), abort, progress, stopped=INTERRUPTED)
        job_id = str(uuid.uuid4())
        if looks is not None:
            looks.started(job_id)
        try:
            record = run_job(GuardedPlugin(plugin, guard), endpoint, settings, audit,
                             guard.progress, job_id, second_look=look_hook(guard))
        finally:
            if looks is not None:
                looks.ended(job_id)
        result = _certified(record, endpoint, audit, signer, cert_dir)
        return replace(result, second_look=looked.get(record.job_id))

    if not targets:
        return []
    answered = 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))))
    try:
        with _CtrlC() as ctrl_c:  # before the first job starts: no press goes uncounted
            futures = [pool.submit(one, t) for t in targets]
            while wait(futures, timeout=0.1).not_done:
                while answered < ctrl_c.pressed:
                    answered += 1
                    _answer_interrupt(answered, abort, on_interrupt)
    except BaseException:  # the third press: stop waiting (the jobs stop at their next step)
        abort.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [f.result() for f in futures]


def _certified(record: Record, endpoint: Endpoint, audit: AuditLog, signer: Any,
               cert_dir: Path) -> JobResult:
    """The record signed into its certificate, or why it could not be (erase it again)."""
    serial = record.device.serial or endpoint.address
    try:
        path = signer.write_certificate(record, cert_dir)
        audit.append(record.job_id, serial, "certified",
                     {"certificate": str(path), "record_sha256": record.sha256()})
    except Exception as exc:  # any signing failure (a library's TypeError too) is recorded, not lost
        error = uncertified(record, exc, cert_dir)
        try:
            audit.append(record.job_id, serial, "certificate-failed", {"error": error})
        except (PhonewipeError, OSError, sqlite3.Error):
            pass  # the disk that refused the certificate may refuse the log too
        return JobResult(record, None, error)
    return JobResult(record, path)


EXIT_BY_OUTCOME = {Outcome.ERASED_VERIFIED: 0, Outcome.ERASED_UNVERIFIED: 10,
                   Outcome.BLOCKED: 11, Outcome.FAILED: 12}


def exit_code(results: list[JobResult]) -> int:
    """0 when every device is erased and verified; 8 when a device has no certificate (it
    must be erased again, whatever its outcome); otherwise the most serious outcome's code."""
    if any(r.certificate is None for r in results):
        return 8
    return max((EXIT_BY_OUTCOME[r.record.outcome] for r in results), default=0)
