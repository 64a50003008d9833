"""Per-job timeouts and aborts without killing threads: every call the job makes into its
session, and every progress report, first asks the guard whether to go on. A job told to
stop raises at its next step and ends through the job's normal error path."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Sequence

from .errors import PhonewipeError
from .model import Endpoint
from .plugin import Extent, Plugin, Session


class JobTimedOut(PhonewipeError):
    pass


class JobAborted(PhonewipeError):
    pass


class JobGuard:
    def __init__(self, timeout: float, abort: threading.Event,
                 on_progress: Callable[[str, str, int, int], None] | None = None,
                 stopped: tuple[str, str] = ("the station was stopped by the operator",
                                             "start the station again to redo this device")) -> None:
        self.timeout = timeout
        self.stopped = stopped  # what an abort means for this device, and what to do
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.abort = abort
        self.on_progress = on_progress
        self.stopped_by: str = ""  # "", "timeout" or "abort"

    def check(self) -> None:
        if self.abort.is_set():
            self.stopped_by = "abort"
            raise JobAborted(*self.stopped)
        if time.monotonic() > self.deadline:
            self.stopped_by = "timeout"
            raise JobTimedOut(f"the device did not finish within the {self.timeout:.0f} s "
                              "per-device timeout",
                              "check the cable and the phone, then erase it again")

    def progress(self, job_id: str, stage: str, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(job_id, stage, done, total)
        self.check()


class GuardedReader:
    def __init__(self, reader: Any, guard: JobGuard) -> None:
        self._reader = reader
        self._guard = guard
        self.size = reader.size
        self.block_size = reader.block_size

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        for data in self._reader.read_many(extents):
            self._guard.check()
            yield data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


UNGUARDED = ("close", "transcript")  # no device I/O: an aborted job still logs what it did


class GuardedSession:
    """A proxy for any session: every method call first asks the guard; the readers it
    hands out are guarded too. Generic, so new Session methods pass through unchanged."""

    READERS = ("reader", "readback")

    def __init__(self, session: Session, guard: JobGuard) -> None:
        self._session = session
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._session, name)
        if not callable(value) or name in UNGUARDED:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._guard.check()
            result = value(*args, **kwargs)
            if name in self.READERS and result is not None:
                return GuardedReader(result, self._guard)
            return result
        return guarded

    def __enter__(self) -> "GuardedSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()


class GuardedPlugin(Plugin):
    """The job's view of a plugin: same name and devices, sessions checked by the guard."""

    def __init__(self, plugin: Plugin, guard: JobGuard) -> None:
        super().__init__(plugin.options)
        self._plugin = plugin
        self._guard = guard
        self.name = plugin.name
        self.modes, self.reads_back = plugin.modes, plugin.reads_back  # the declarations
        self.reboots_into, self.option_specs = plugin.reboots_into, plugin.option_specs
        self.has_emulator = plugin.has_emulator

    def discover(self) -> list[Endpoint]:
        return self._plugin.discover()

    def open(self, endpoint: Endpoint) -> Session:
        self._guard.check()
        # a proxy, not a subclass: __getattr__ forwards every Session method, guarded
        return GuardedSession(self._plugin.open(endpoint), self._guard)  # type: ignore[return-value]

    def guarded(self, other: Plugin) -> "GuardedPlugin":
        """Another plugin under the same guard: a phone followed into another mode
        (erase.follow) stays within the job's timeout and abort."""
        return GuardedPlugin(other, self._guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugin, name)
