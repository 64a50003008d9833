"""Ctrl-C while `erase_devices` waits for its jobs: the presses are counted by a SIGINT
handler and answered between waits, so a press landing inside a lock's wait can never break
the lock (the CPython hazard behind a "release unlocked lock" traceback and exit 1)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Outcome
from phonewipe.erase.plugin import EraseContext, EraseReport
from phonewipe.erase.runner import erase_devices
from phonewipe.protocols.virtual import VirtualPlugin
from phonewipe.protocols.virtual.session import VirtualSession

STARTED = threading.Event()
HANDLER_WHILE_RUNNING: list[Any] = []


class HeldSession(VirtualSession):
    """Erases only once the operator has aborted: the job is running when Ctrl-C comes."""

    def erase(self, method: Any, context: EraseContext, progress: Any) -> EraseReport:
        HANDLER_WHILE_RUNNING.append(signal.getsignal(signal.SIGINT))
        STARTED.set()
        for _ in range(600):
            progress(0, 1)  # the guard raises here once the job is aborted
            threading.Event().wait(0.05)
        raise AssertionError("the job was never aborted")


class StuckSession(HeldSession):
    """A job that does not reach its next step for a while (a phone that stopped answering):
    what a third Ctrl-C is for."""

    released = threading.Event()

    def erase(self, method: Any, context: EraseContext, progress: Any) -> EraseReport:
        STARTED.set()
        self.released.wait(30)
        progress(0, 1)  # aborted by now: the guard raises
        raise AssertionError("the job was never aborted")


def _pester(presses: int, pause: float, told: list[int]) -> threading.Thread:
    """Send SIGINT to this process `presses` times once the job runs: each press after the
    runner answered the one before (``told``: what on_interrupt was called with), plus
    `pause` s. Two signals sent before the main thread takes the first are one signal to
    Python (as two key presses within a few microseconds would be), so the test waits."""
    def run() -> None:
        STARTED.wait(30)
        for n in range(presses):
            os.kill(os.getpid(), signal.SIGINT)
            if n + 1 < presses:
                deadline = time.monotonic() + 10
                while len(told) <= n and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(pause)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def held(tmp_path: Path, signer: Any) -> Any:
    STARTED.clear()
    plugin = VirtualPlugin()
    plugin.session_class = HeldSession
    handsets = start_handsets(["virtual"], tmp_path / "phones", {"virtual": plugin})
    [endpoint] = plugin.discover()
    audit = AuditLog(tmp_path / "audit.sqlite")
    yield plugin, endpoint, audit
    audit.close()
    stop_handsets(handsets)


@pytest.mark.parametrize("pause", [0.0, 0.03, 0.2])
def test_two_presses_abort_the_job_with_a_failed_certificate(held: Any, signer: Any,
                                                           tmp_path: Path, pause: float) -> None:
    plugin, endpoint, audit = held
    told: list[int] = []
    abort = threading.Event()
    pester = _pester(2, pause, told)
    [result] = erase_devices([(plugin, endpoint)], JobSettings(seed=7), audit, signer,
                             tmp_path / "certs", abort=abort, on_interrupt=told.append)
    pester.join(5)
    assert abort.is_set() and told == [1, 2]
    assert result.record.outcome is Outcome.FAILED and "interrupted" in result.record.reason
    assert result.certificate is not None and result.certificate.exists()


def test_a_third_press_gives_up_waiting(held: Any, signer: Any, tmp_path: Path) -> None:
    plugin, endpoint, audit = held
    plugin.session_class = StuckSession
    StuckSession.released.clear()
    told: list[int] = []
    _pester(3, 0.0, told)
    try:
        with pytest.raises(KeyboardInterrupt):
            erase_devices([(plugin, endpoint)], JobSettings(seed=7), audit, signer,
                          tmp_path / "certs", on_interrupt=told.append)
    finally:
        StuckSession.released.set()  # the job goes on to its next step and stops there
    assert told == [1, 2]
    deadline = time.monotonic() + 30  # the job ends on its own: its record and certificate
    while not audit.events(kinds=("certified", "certificate-failed")):
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.05)


def test_the_handler_is_given_back(held: Any, signer: Any, tmp_path: Path) -> None:
    plugin, endpoint, audit = held
    before = signal.getsignal(signal.SIGINT)
    told: list[int] = []
    _pester(2, 0.0, told)
    erase_devices([(plugin, endpoint)], JobSettings(seed=7), audit, signer, tmp_path / "certs",
                  on_interrupt=told.append)
    assert signal.getsignal(signal.SIGINT) is before


def test_no_press_raises_in_the_waiting_thread(held: Any, signer: Any, tmp_path: Path) -> None:
    """While jobs run, SIGINT is counted, not raised: Python's default handler would raise
    KeyboardInterrupt wherever the main thread is, a lock's release included."""
    plugin, endpoint, audit = held
    HANDLER_WHILE_RUNNING.clear()
    told: list[int] = []
    _pester(2, 0.0, told)
    erase_devices([(plugin, endpoint)], JobSettings(seed=7), audit, signer, tmp_path / "certs",
                  on_interrupt=told.append)
    [handler] = HANDLER_WHILE_RUNNING
    assert handler not in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN)
