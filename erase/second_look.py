"""The R2v3 second look: which PASSed phones get one, and the look itself, for a station's
batch and for one `phonewipe erase` run alike.

A look happens while the phone can still be read: after its verification passed, before its
finish step (the factory reset that turns USB debugging and root off). The picks are drawn
with `secrets.SystemRandom`, so neither the operator nor a phone can tell which one will be
looked at, and a batch with anything re-readable that passed gets at least one:

* the batch's first look is drawn among the re-readable PASSes waiting for it. A phone that
  passes before the first look is placed waits, unreset, until every phone that was being
  erased when it passed has passed or ended (in `phonewipe erase`: every phone of the run),
  or until it must go on (abort, its deadline near); then the draw takes as many of the
  waiting phones as the share asks for so far, at least one;
* after that, one PASS at a random position in each run of 1/share PASSes.

A PASS that cannot be re-read (its samples came from fill files the reset removes, or the
mode offers no second reader) never waits; the pick it would have had goes on to a later
phone. The look reads through the session's `readback()` (not the erase's reader) under a
fresh seed, and records who did it.
"""
from __future__ import annotations

import math
import secrets
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .errors import PhonewipeError
from .model import Operator, Record
from .plugin import Session

Append = Callable[[str, str, str, dict[str, Any]], Any]
"""append(job_id, serial, event, payload): the job's audit log."""


@dataclass(frozen=True)
class Pick:
    picked: bool
    how: str = ""  # how the pick was made, as recorded
    candidates: tuple[str, ...] = ()  # the phones a draw chose among


@dataclass
class _Waiter:
    label: str
    waits_for: set[str]
    result: Pick | None = None


@dataclass
class LookPicker:
    """Which PASSes get a second look (see the module docstring). Thread-safe: every job of
    a batch reports to the one picker."""

    share: float
    passes: int = 0
    taken: int = 0  # looks placed: done, pending, or being done
    positions: list[int] = field(default_factory=list)  # PASS numbers drawn, one per run
    rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom)
    _running: set[str] = field(default_factory=set)
    _waiting: dict[str, _Waiter] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def due(self, passes: int) -> int:
        """Looks a batch owes after ``passes`` PASSes: one at a random position in each run
        of 1/share PASSes, and at least one once anything passed."""
        if self.share <= 0 or passes <= 0:
            return 0
        width = 1 / self.share
        with self._cond:
            while len(self.positions) * width < passes:
                j = len(self.positions)
                low, high = math.floor(j * width), math.floor((j + 1) * width)
                self.positions.append(low + 1 + self.rng.randrange(max(1, high - low)))
            return max(1, sum(1 for p in self.positions if p <= passes))

    def restore(self, passes: int, taken: int) -> None:
        """A resumed batch: what its earlier run counted."""
        with self._cond:
            self.passes, self.taken = passes, taken

    def started(self, job_id: str) -> None:
        with self._cond:
            self._running.add(job_id)

    def ended(self, job_id: str) -> None:
        """The job will not pass (any more): it ended, or was recorded by its station."""
        with self._cond:
            self._running.discard(job_id)
            self._draw_if_ready()

    def give_back(self) -> None:
        """A picked phone could not take its look after all: a later PASS takes it."""
        with self._cond:
            self.taken -= 1

    def passed(self, job_id: str, label: str, recheckable: bool,
               go_on: Callable[[], bool] = lambda: False,
               waiting: Callable[[], None] | None = None) -> Pick:
        """A PASS: whether it gets the look (blocks while the batch's first look is being
        drawn). For a phone that cannot be re-read, `picked` says it would have been a
        candidate: its pick goes on."""
        with self._cond:
            self.passes += 1
            n = self.passes
            self._running.discard(job_id)
            if self.share <= 0:
                self._draw_if_ready()
                return Pick(False)
            if self.taken > 0 or not recheckable:
                due = self.due(n)
                picked = self.taken < due
                if picked and recheckable:
                    self.taken += 1
                self._draw_if_ready()
                return Pick(picked, f"PASS {n} of the batch: {due} look(s) due at positions drawn "
                                    f"at random, {self.taken} placed before it")
            me = self._waiting[job_id] = _Waiter(label, set(self._running))
            self._draw_if_ready()
            if me.result is None and waiting is not None:
                waiting()
            while me.result is None:
                if go_on():
                    me.waits_for.clear()
                    self._draw_if_ready()
                    break
                self._cond.wait(0.1)
            assert me.result is not None  # drawn: it was ready
            return me.result

    def _draw_if_ready(self) -> None:
        """(lock held) The first look drawn among the waiting phones once any of them has
        nothing left to wait for."""
        for waiter in self._waiting.values():
            waiter.waits_for &= self._running
        ready = [job for job, w in self._waiting.items() if not w.waits_for]
        if not ready:
            return
        labels = tuple(self._waiting[job].label for job in ready)
        k = min(len(ready), self.due(self.passes))
        chosen = set(self.rng.sample(ready, k))
        how = (f"drawn at random (secrets.SystemRandom): {k} of {len(ready)} PASSed phone(s) "
               f"waiting before their reset, after {self.passes} PASS(es)")
        self.taken += k
        for job, waiter in self._waiting.items():
            waiter.result = Pick(job in chosen, how, labels)
        self._waiting.clear()
        self._cond.notify_all()


def take_second_look(picker: LookPicker, append: Append, session: Session, record: Record, *,
                     by: str, operator: Operator, go_on: Callable[[], bool] = lambda: False,
                     waiting: Callable[[], None] | None = None,
                     progress: Callable[[int, int], None] | None = None
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """The second look for one PASSed phone, if it is picked: (the `second-look` event's
    payload, or None when it was not picked; why the look failed — the job then FAILs and
    no reset follows — or None)."""
    serial = record.device.serial or record.endpoint.address
    if picker.share <= 0:  # counted, nothing asked of the phone
        picker.passed(record.job_id, serial, False)
        return None, None
    why_not = session.not_recheckable(record)
    reader = None if why_not else session.readback()
    if reader is None:
        if not picker.passed(record.job_id, serial, False).picked:
            return None, None
        why_not = why_not or ("the device offers no second reader of its storage in this "
                              "mode (readback(): e.g. no root)")
        payload: dict[str, Any] = {
            "selected": False, "status": "passed-on", "by": by, "share": picker.share,
            "reason": f"cannot be re-read: {why_not}; the pick goes to the next phone that "
                      "passes"}
        append(record.job_id, serial, "second-look", payload)
        return payload, None
    pick = picker.passed(record.job_id, serial, True, go_on, waiting)
    if not pick.picked:
        return None, None
    seed = secrets.randbits(63)
    payload = {"selected": True, "by": by, "fresh_seed": seed, "share": picker.share,
               "pick": {"how": pick.how, "among": list(pick.candidates)},
               "when": "before the finish step (factory reset)",
               "reader": "readback(), a second reader path", "record_id": record.record_id}
    append(record.job_id, serial, "rechecking", {"by": by, "fresh_seed": seed})
    from .reverify import reverify
    try:
        result = reverify(record, reader, seed=seed, fresh_seed=True,
                          operator=replace(operator, name=by), progress=progress)
    except PhonewipeError as exc:
        payload.update(status="pending", reason=f"not finished: {exc.line()}")
        append(record.job_id, serial, "second-look", payload)
        return payload, None
    payload.update(status="passed" if result.ok else "failed", verdict=result.verdict,
                   samples=result.samples, reason=result.reason, medium=result.medium,
                   problems_total=result.problems_total)
    append(record.job_id, serial, "second-look", payload)
    if result.ok:
        return payload, None
    return payload, (f"the second look (fresh seed, {result.samples} samples, by {by}) found "
                     f"what the first did not: {result.reason}")
