"""An operator-attested manual wipe: a platform phonewipe cannot drive (erase/manual.py), the
vendor's own wipe performed by the operator step by step, each confirmation logged with its
time, the operator and how it was given, before the next step is shown.

Nothing is read back, so the best this record can say is ERASED, NOT VERIFIED ("vendor
function, operator-attested"), and no category is claimed (erase/policy.py); a step the
operator answers "no" ends the record FAILED. Never PASS.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .audit import now_iso
from .destination import route
from .evidence import build_evidence
from .job import JobLog, JobSettings, _as_dict
from .manual import ManualPlatform, Step
from .model import (
    Category,
    Endpoint,
    EraseMethod,
    Identity,
    Outcome,
    Record,
    Sanitization,
    Technique,
    VerificationResult,
)
from .photos import Photo
from .policy import assess

METHOD_NAME = "manual-attested"
METHOD_TITLE = "vendor function, operator-attested"
HOW = ("interactive", "answers on stdin", "--yes")  # how a confirmation was given
NO_READBACK = ("not verified: nothing can be read back on this platform; the operator attests "
               "that the vendor's wipe ran and that its done screen showed")


@dataclass(frozen=True)
class Confirmation:
    step: str
    confirm: str  # the question asked
    answer: bool
    at: str
    by: str
    how: str  # one of HOW

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "confirm": self.confirm, "answer": "yes" if self.answer
                else "no", "at": self.at, "by": self.by, "how": self.how}


def attest_method(platform: ManualPlatform) -> EraseMethod:
    return EraseMethod(name=METHOD_NAME, title=f"{platform.name} ({METHOD_TITLE})",
                       category=Category.CLEAR, technique=Technique.FACTORY_RESET,
                       verifiable=False, description=platform.vendor_function)


def is_attested(record: Record) -> bool:
    return record.sanitization is not None and record.sanitization.method == METHOD_NAME


@dataclass
class Attestation:
    """One attested wipe, logged as it happens. `confirm` each step in order, then `record`."""
    platform: ManualPlatform
    identity: Identity
    settings: JobSettings
    audit: JobLog
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    confirmations: list[Confirmation] = field(default_factory=list)
    photos: list[Photo] = field(default_factory=list)
    started_at: str = ""
    _clock: float = 0.0

    @property
    def serial(self) -> str:
        return self.identity.serial or (self.identity.imeis[0] if self.identity.imeis else "")

    def log(self, event: str, payload: dict[str, Any]) -> None:
        self.audit.append(self.job_id, self.serial, event, payload)

    def start(self, photos: list[Photo]) -> None:
        self.started_at, self._clock, self.photos = now_iso(), time.monotonic(), list(photos)
        self.log("attest-started", {"platform": self.platform.platform,
                                    "catalogue": self.platform.source,
                                    "identity": _as_dict(self.identity),
                                    "identity_source": "operator-entered",
                                    "operator": _as_dict(self.settings.operator),
                                    "asset_tag": self.settings.asset_tag})
        for p in self.photos:  # the hash of each original, not its bytes
            self.log("photo-added", {"file": p.file, "sha256": p.sha256, "bytes": p.size})

    def next_step(self) -> Step | None:
        """The step to ask next; None when every step is answered or one was declined."""
        if any(not c.answer for c in self.confirmations):
            return None
        done = len(self.confirmations)
        return self.platform.steps[done] if done < len(self.platform.steps) else None

    def confirm(self, step: Step, answer: bool, how: str) -> Confirmation:
        if step is not self.next_step():
            raise ValueError(f"step {step.id!r} is not the next step")
        c = Confirmation(step.id, step.confirm, answer, now_iso(), self.settings.operator.name, how)
        self.confirmations.append(c)
        self.log("step-confirmed" if answer else "step-declined", c.to_dict())
        return c

    def interrupted(self, why: str) -> None:
        self.log("attest-interrupted", {"reason": why, "answered": len(self.confirmations),
                                        "steps": len(self.platform.steps)})

    def record(self) -> Record:
        """The final record (logged): ERASED_UNVERIFIED when every step was confirmed,
        FAILED at the first "no"."""
        declined = next((c for c in self.confirmations if not c.answer), None)
        if declined is None and self.next_step() is not None:
            raise ValueError("not every step is answered")
        outcome = Outcome.FAILED if declined else Outcome.ERASED_UNVERIFIED
        reason = "" if declined is None else (
            f"the operator answered no to step {declined.step!r} ({declined.confirm}): the "
            "vendor's wipe is not attested and the phone may still hold data; do the step and "
            "attest again, or send the phone to physical destruction (`phonewipe destroy`)")
        if declined is None:
            reason = NO_READBACK.removeprefix("not verified: ")
            reason = f"{reason[0].upper()}{reason[1:]}, so the erase is reported as performed " \
                     "but not verified"
        record = route(self._record(outcome, reason), self.audit)
        self.log("record", {"outcome": outcome.value, "record_sha256": record.sha256(),
                            "reason": record.reason, "record": record.to_dict()})
        return record

    def _record(self, outcome: Outcome, reason: str) -> Record:
        method = attest_method(self.platform)
        verification = VerificationResult(mode="none", status="unavailable", reason=NO_READBACK,
                                          scope="the whole phone, as the vendor's function "
                                                "covers it")
        a = assess(method, self.identity, outcome, verification)
        p = self.platform
        details = {"platform": p.platform, "vendor_function": p.vendor_function,
                   "vendor_says": p.vendor_says, "not_covered": p.not_covered,
                   "catalogue": p.source}
        sanitization = Sanitization(
            method=METHOD_NAME, title=method.title, technique=method.technique.value,
            category=a.category, standard=a.standard, justification=a.justification,
            details=details, started_at=self.started_at, finished_at=now_iso())
        tool = {"name": "phonewipe", "version": __version__, "plugin": "attest"}
        evidence = build_evidence(tool=tool, plan=None, samples=None, transcript={},
                                  timings={"attest_s": time.monotonic() - self._clock},
                                  capacity=None)
        evidence.update({
            "attestation": {"platform": p.to_dict(),
                            "steps": [c.to_dict() for c in self.confirmations],
                            "identity_source": "operator-entered"},
            "photos": [ph.to_dict() for ph in self.photos]})
        head = getattr(self.audit, "head", None)
        if head is not None:
            row, digest = head()
            evidence["audit"] = {"row": row, "head": digest}
        done = self.confirmations[-1] if self.confirmations and outcome is not Outcome.FAILED \
            else None
        post = {"screen": p.steps[-1].do.removeprefix("Check the screen: "),
                "done_screen_confirmed": f"by {done.by} at {done.at}" if done else "no"}
        return Record(
            record_id=str(uuid.uuid4()), job_id=self.job_id, created_at=now_iso(),
            outcome=outcome, device=self.identity,
            endpoint=Endpoint(plugin="attest", mode="manual", address=p.platform,
                              label="operator-attested"),
            operator=self.settings.operator, destination=self.settings.destination, tool=tool,
            sanitization=sanitization, verification=verification, reason=reason,
            post_state=post, asset_tag=self.settings.asset_tag,
            batch_id=self.settings.batch_id, evidence=evidence, media=self.settings.media)
