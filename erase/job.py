"""The flow of one handset: detected -> identified -> preflight -> erasing -> verifying ->
certified, ending in exactly one of the four outcomes. Every step is appended to the audit
log before the next one starts."""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence

from . import __version__
from .audit import Event, last_appended, now_iso
from .capacity import check_capacity
from .destination import COUNTERFEIT_ADVICE, DESTRUCTION_ADVICE, route
from .errors import DeviceGone, MediumUnreachable, PhonewipeError
from .evidence import EVIDENCE_SCHEMA, build_evidence
from .follow import Followed, Found, NotFollowed, follow_for_readback, follow_to
from .identity import merge_identity, model_names
from .mdm import management_evidence, management_finding
from .model import (
    Destination,
    Endpoint,
    EraseMethod,
    Finding,
    Identity,
    Media,
    Operator,
    Outcome,
    Record,
    Sanitization,
    Severity,
    Technique,
    VerificationResult,
    _plain,
)
from .pattern import new_key
from .plugin import EraseContext, Plugin, Session
from .policy import STANDARD, assess
from .strings import clean, clean_identity
from .verify import make_plan, read_digests, sample_and_check
from .wrap import named_counterfeit

SecondLook = Callable[[Session, Record], "str | None"]
"""second_look(session, provisional record) -> why the second look failed, or None: run after
a PASSed verification and before the finish step (the factory reset), while the phone can
still be read (the station's R2v3 second look)."""

MAX_REASON = 1200  # a reason may quote a device's words: escaped and cut like them


@dataclass(frozen=True)
class JobSettings:
    operator: Operator = field(default_factory=Operator)
    destination: Destination = field(default_factory=Destination)
    method: str | None = None  # None: the strongest method the device allows
    verify_mode: str = "quick"
    confidence: float = 0.99
    residual: float = 0.001
    block_size: int = 4096
    seed: int | None = None
    asset_tag: str = ""
    batch_id: str = ""
    via: str | None = None  # erase in this mode (e.g. "fastboot"), rebooting the phone into it
    media: Media = field(default_factory=Media)  # App. G fields and attestations ([media])
    fleet_mdm: str = ""  # [fleet] mdm: the organisation's own MDM, recorded as evidence


StageFn = Callable[[str, str, int, int], None]
"""progress(job_id, stage, done, total)."""


class JobLog(Protocol):
    """What a job needs of its audit log: an `AuditLog`, or the station's wrapper of one."""

    def append(self, job_id: str, serial: str, event: str,
               payload: dict[str, Any] | None = None) -> int: ...

    def events(self, job_id: str | None = None, kinds: Sequence[str] = ()) -> list[Event]: ...


class _Stop(Exception):
    """Ends the flow early with an outcome."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


_AFTER_STEP = {"detected": "while identifying", "identified": "during the lock checks",
               "preflight": "after the lock checks", "erased": "after the erase, before verifying",
               "verified": "after verifying", "verification-unavailable": "after the erase",
               "finished": "after finishing", "post-state": "after finishing",
               "switched": "after switching modes", "returned": "after returning to the first mode"}


@dataclass
class _Job:
    plugin: Plugin
    endpoint: Endpoint
    settings: JobSettings
    audit: JobLog
    stage_cb: StageFn | None
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    identity: Identity | None = None
    findings: list[Finding] = field(default_factory=list)
    method: EraseMethod | None = None
    sanitization: Sanitization | None = None
    verification: VerificationResult | None = None
    post: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    stage: str = "detected"
    evidence: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    followed: Followed | None = None  # the phone found again in a mode that reads back
    switched: Found | None = None  # the phone in the mode it was erased in (JobSettings.via)
    reached: tuple[str, int, int] | None = None  # latest progress: stage, done, total bytes
    device_strings: dict[str, Any] = field(default_factory=dict)  # what the device sent, raw
    second_look: SecondLook | None = None
    management: list[dict[str, Any]] = field(default_factory=list)  # MDM the preflight found
    model_names: dict[str, str] = field(default_factory=dict)  # mode -> model it reported
    entered_tag: str = ""  # the asset tag the operator gave the plugin for this device

    def _identified(self, identity: Identity) -> Identity:
        """The device's own strings cleaned (erase/strings.py) before they are logged, shown
        or certified; the original bytes are kept for the record's evidence."""
        cleaned, raw = clean_identity(identity)
        if raw:
            self.device_strings = raw
        return cleaned

    @property
    def serial(self) -> str:
        return (self.identity.serial if self.identity and self.identity.serial
                else clean(self.endpoint.label or self.endpoint.address) or "")

    def log(self, event: str, payload: dict[str, Any] | None = None) -> None:
        self.stage = event
        self.audit.append(self.job_id, self.serial, event, payload)

    def progress(self, stage: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self.reached = (stage, done, total)
            if self.stage_cb:
                self.stage_cb(self.job_id, stage, done, total)
        return report

    def run(self) -> Record:
        self.log("detected", {"endpoint": str(self._shown_endpoint())})
        try:
            with self.plugin.open(self.endpoint) as session:
                try:
                    outcome, reason = self._flow(session)
                finally:
                    self.evidence = self._evidence(self.switched.session if self.switched
                                                   else session)
                    if self.followed is not None:
                        self.followed.close()
                    if self.switched is not None:
                        self.switched.session.close()
        except _Stop as stop:
            outcome, reason = stop.outcome, stop.reason
        except DeviceGone as exc:
            advice = DESTRUCTION_ADVICE if self.stage in ("erasing", "verifying") else exc.advice
            outcome, reason = Outcome.FAILED, f"{exc.message} ({self._how_far()}); {advice}"
        except PhonewipeError as exc:
            outcome, reason = (Outcome.FAILED, f"{exc.line()} ({self._how_far()})")
        except Exception as exc:  # a bug must not cost the other phones, the log or a record
            outcome, reason = (Outcome.FAILED, f"internal error during {self.stage}: {exc!r}; "
                                               "please report it with the audit log")
            self.log("internal-error", {"error": repr(exc), "traceback": traceback.format_exc()})
        self.evidence = dict(self.evidence or {"schema": EVIDENCE_SCHEMA})
        head = self._audit_head()
        if head is not None:  # the log as this record saw it: `audit verify --expect-head`
            self.evidence["audit"] = {"row": head[0], "head": head[1]}
        if self.device_strings:
            self.evidence["device_strings"] = self.device_strings
        if self.management:  # which MDM, and whether it is the organisation's own
            self.evidence["management"] = self.management
        if len(self.model_names) > 1:  # the bootloader's codename beside Android's name
            self.evidence["model_names"] = self.model_names
        record = route(self._record(outcome, reason), self.audit)  # destination follows outcome
        self.log("record", {"outcome": outcome.value, "record_sha256": record.sha256(),
                            "reason": record.reason, "record": record.to_dict()})
        return record

    def _shown_endpoint(self) -> Endpoint:
        """The endpoint as logged and recorded: its label is what the device calls itself."""
        return replace(self.endpoint, address=clean(self.endpoint.address) or "",
                       label=clean(self.endpoint.label) or "")

    def _audit_head(self) -> tuple[int, str] | None:
        try:
            head = getattr(self.audit, "head", None)
            return head() if head is not None else last_appended()
        except Exception:  # noqa: BLE001 - never cost the record
            return None

    def _how_far(self) -> str:
        """Where a failed job stopped, for its reason: the stage, and the bytes it moved (sent
        to the phone while erasing: what the phone confirmed writing is unknown)."""
        where = f"during {self.stage}" if self.stage.endswith("ing") else \
            _AFTER_STEP.get(self.stage, f"after the {self.stage!r} step")
        if self.reached and self.reached[0] == self.stage and self.reached[2] > 0:
            _, done, total = self.reached
            verb = {"erasing": "sent", "verifying": "read"}.get(self.stage, "done")
            return f"{where}, {done / 2**20:.1f} of {total / 2**20:.1f} MiB {verb}"
        return where

    def _flow(self, session: Session) -> tuple[Outcome, str]:
        self.identity = self._identified(session.identify())
        self.entered_tag = clean(session.entered_asset_tag(), 64) or ""
        self.model_names = model_names({}, self.endpoint.mode, self.identity)
        self.log("identified", {"identity": _as_dict(self.identity)})
        via = self.settings.via if self.settings.via != self.endpoint.mode else None
        self.findings = session.preflight_for(via) if via else session.preflight()
        self.identity = self._identified(session.identity) if session.identity else self.identity
        # (with the lock states checked)
        self.findings = self._managed(session, self.findings)
        self.log("preflight", {"findings": [_as_dict(f) for f in self.findings]})
        self._stop_on_blockers(self.findings)
        plugin = self.plugin
        if via:
            self.switched = self._switch(session, via)  # chooses the method there
            plugin, session = self.switched.plugin, self.switched.session
        else:
            self.method = self._choose(session.methods())
        method = self.method
        assert method is not None  # _switch or _choose set it, or raised
        key = new_key()
        s = self.settings
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(8), "big") >> 1
        before = self._before_erase(session, seed)
        started = now_iso()
        self.log("erasing", {"method": method.name})
        clock = time.monotonic()
        report = session.erase(method, EraseContext(pattern_key=key), self.progress("erasing"))
        self.timings["erase_s"] = time.monotonic() - clock
        self.scope = report.scope
        self.sanitization = Sanitization(
            method=method.name, title=method.title, technique=method.technique.value,
            category="", standard=STANDARD, justification="", details=report.details,
            started_at=started, finished_at=now_iso(), bytes_written=report.bytes_written,
            scope=report.scope)
        self.log("erased", {"bytes_written": report.bytes_written, "scope": report.scope})

        sampling = None
        reader = session.reader() if method.verifiable else None
        if reader is None and report.expectation is not None:  # e.g. erased in the bootloader
            self.followed = follow_for_readback(plugin, session, self.serial, self.log)
            reader = self.followed.reader if self.followed else None
            if self.followed is not None:  # what Android says of itself joins the record
                self._learn(self.followed.session.identity or self.followed.session.identify(),
                            self.followed.endpoint.mode)
        if reader is None or report.expectation is None:
            self.verification = VerificationResult(
                mode="none", status="unavailable", scope=report.scope,
                reason="this device and method offer no read-back of storage")
            self.log("verification-unavailable", {})
        else:
            plan = make_plan(s.verify_mode, reader.size, reader.block_size, seed,
                             s.confidence, s.residual)
            self.log("verifying", {"plan": plan.to_dict()})
            clock = time.monotonic()
            if before is not None and before[0] != plan:
                before = None  # the address space changed size: no like-for-like comparison
            try:
                sampling = sample_and_check(reader, plan, report.expectation, key, report.scope,
                                            self.progress("verifying"),
                                            before[1] if before else None,
                                            check_capacity(reader.size, report.capacity_evidence))
            except MediumUnreachable as exc:
                sampling = None
                self.verification = VerificationResult(
                    mode="none", status="unavailable", scope=report.scope,
                    reason=f"not verified: {exc.message}")
                self.log("verification-unavailable", {"reason": exc.message})
            self.timings["verify_s"] = time.monotonic() - clock
        if sampling is not None:
            self.evidence = {"samples": sampling.evidence(before[1] if before else None),
                             "readback": {"medium": sampling.medium}}
            self.verification = replace(sampling.result,
                                        plan={**sampling.result.plan, "pattern_key": key.hex()})
            self.log("verified", {"status": self.verification.status,
                                  "failures_total": self.verification.failures_total,
                                  "digest": self.verification.digest, "medium": sampling.medium})
            if self.verification.status != "passed":
                advice = COUNTERFEIT_ADVICE if named_counterfeit(self.verification.reason) \
                    else DESTRUCTION_ADVICE
                raise _Stop(Outcome.FAILED, f"verification failed: {self.verification.reason}; "
                                            f"{advice}")
        if self.second_look is not None and self.verification is not None \
                and self.verification.status == "passed":
            failed = self.second_look(self.followed.session if self.followed else session,
                                      self._record(Outcome.ERASED_VERIFIED, ""))
            if failed:  # the reset does not follow: the phone stays as the look found it
                raise _Stop(Outcome.FAILED, f"{failed}; {DESTRUCTION_ADVICE}")
        self.log("finishing", {})
        clock = time.monotonic()
        finish = session.finish(method, self.progress("finishing"))
        self.timings["finish_s"] = time.monotonic() - clock
        self.sanitization = replace(self.sanitization,
                                    details={**self.sanitization.details, **finish},
                                    finished_at=now_iso())
        self.log("finished", {"details": finish})
        self.post = session.post_state()
        self.log("post-state", {"post_state": self.post})
        verification = self.verification
        assert verification is not None  # each way through the read-back above set it
        if verification.status == "passed":
            return Outcome.ERASED_VERIFIED, ""
        why = verification.reason if verification.reason.startswith("not verified") \
            else "the device offers no read-back of its storage"
        return Outcome.ERASED_UNVERIFIED, f"{why}, so the erase is reported as performed but " \
                                          "not verified"

    def _managed(self, session: Session, findings: list[Finding]) -> list[Finding]:
        """The management the session found (erase.mdm), with the organisation's own MDM
        (`[fleet] mdm`) marked: its advice then says to release it from your console."""
        found = [m for m in getattr(session, "management", None) or [] if isinstance(m, dict)]
        if not found:
            return findings
        own = self.settings.fleet_mdm
        self.management = [management_evidence(m["package"], m["component"], m["kind"], own)
                           for m in found]
        if not own:
            return findings
        again = {("mdm-work-profile" if m["kind"] == "work-profile" else "mdm-device-owner"):
                 management_finding(m["package"], m["component"], m["kind"], own) for m in found}
        return [again.get(f.code, f) for f in findings]

    def _stop_on_blockers(self, findings: list[Finding]) -> None:
        blockers = [f for f in findings if f.severity is Severity.BLOCKER]
        if blockers:
            raise _Stop(Outcome.BLOCKED, " ".join(f.message for f in blockers))

    def _learn(self, identity: Identity, mode: str) -> None:
        """What the phone said of itself in another mode joins the record's identity (later
        values fill unknown fields; another serial is an error: erase.identity)."""
        cleaned, raw = clean_identity(identity)
        self.log("identified", {"mode": mode, "identity": _as_dict(cleaned)})
        self.model_names = model_names(self.model_names, mode, cleaned)
        self.identity = merge_identity(self.identity or Identity(platform="unknown"), cleaned)
        if raw:  # the first mode's original bytes stay where both modes sent a field
            self.device_strings = {**raw, "original": {**raw["original"],
                                                       **self.device_strings.get("original", {})}}

    def _switch(self, session: Session, mode: str) -> Found:
        """Reboot the phone into ``mode`` and go on there, with that mode's checks too. A
        phone that cannot be erased there is rebooted back to where it came from."""
        try:
            found = follow_to(self.plugin, session, self.serial, mode, self.log)
        except NotFollowed as exc:
            raise _Stop(Outcome.FAILED, f"nothing was erased: {exc.line()}") from exc
        try:
            self._learn(found.session.identify(), mode)
            more = found.session.preflight()
            if found.session.identity is not None:  # with the lock states it checked
                self.identity = merge_identity(self.identity or Identity(platform="unknown"),
                                               clean_identity(found.session.identity)[0])
            self.log("preflight", {"mode": mode, "findings": [_as_dict(f) for f in more]})
            self.findings += more
            self._stop_on_blockers(more)
            self.method = self._choose(found.session.methods())
        except (_Stop, PhonewipeError):
            if found.session.reboot_to(self.endpoint.mode):
                self.log("returned", {"to": self.endpoint.mode})
            found.session.close()
            raise
        self.log("switched", {"from": self.endpoint.mode, "to": mode, "endpoint": str(found.endpoint)})
        return found

    def _before_erase(self, session: Session, seed: int) -> tuple[Any, list[bytes | None]] | None:
        """NIST Rev. 1: a cryptographic erase is verified by reading the same pseudo-random
        locations before and after it; this is the "before" (None when not readable)."""
        if self.method is None or self.method.technique is not Technique.CRYPTO_ERASE \
                or not self.method.verifiable:
            return None
        reader = session.readback()
        if reader is None:
            return None
        s = self.settings
        plan = make_plan(s.verify_mode, reader.size, reader.block_size, seed, s.confidence,
                         s.residual)
        self.log("sampling-before-erase", {"plan": plan.to_dict()})
        try:
            return plan, read_digests(reader, plan)
        except MediumUnreachable as exc:  # the verification after the erase says so again
            self.log("sampling-before-erase-unavailable", {"reason": exc.message})
            return None

    def _tool(self) -> dict[str, str]:
        plugin = self.switched.plugin if self.switched else self.plugin
        return {"name": "phonewipe", "version": __version__, "plugin": plugin.name}

    def _evidence(self, session: Session) -> dict[str, Any]:
        """The evidence bundle (phonewipe.erase.evidence) for whatever part of the flow ran."""
        v = self.verification
        return build_evidence(
            tool=self._tool(),
            plan={k: val for k, val in v.plan.items() if k != "pattern_key"} if v else None,
            samples=self.evidence.get("samples"), readback=self.evidence.get("readback"),
            transcript=session.transcript(),
            timings=self.timings, capacity=v.capacity if v else None)

    def _choose(self, methods: list[EraseMethod]) -> EraseMethod:
        if not methods:
            raise _Stop(Outcome.BLOCKED, "no erase method is available for this device in this "
                                         "mode; see the findings for what to change")
        if self.settings.method is None:
            return methods[0]
        for m in methods:
            if m.name == self.settings.method:
                return m
        names = ", ".join(m.name for m in methods)
        raise _Stop(Outcome.BLOCKED, f"method {self.settings.method!r} is not available on this "
                                     f"device; available: {names}")

    def _record(self, outcome: Outcome, reason: str) -> Record:
        identity = self.identity or Identity(platform="unknown", serial=None)
        sanitization = self.sanitization
        if self.method is not None and sanitization is not None:
            a = assess(self.method, identity, outcome, self.verification, self.scope)
            sanitization = replace(sanitization, category=a.category, justification=a.justification,
                                   standard=a.standard)
        return Record(
            record_id=str(uuid.uuid4()), job_id=self.job_id, created_at=now_iso(),
            outcome=outcome, device=identity, endpoint=self._shown_endpoint(),
            operator=self.settings.operator, destination=self.settings.destination,
            tool=self._tool(), findings=tuple(self.findings), sanitization=sanitization,
            verification=self.verification, reason=clean(reason, MAX_REASON), post_state=self.post,
            asset_tag=self.settings.asset_tag or self.entered_tag, batch_id=self.settings.batch_id,
            evidence=self.evidence, media=self.settings.media)


def _as_dict(obj: Any) -> dict[str, Any]:
    return _plain(dataclasses.asdict(obj))


def run_job(plugin: Plugin, endpoint: Endpoint, settings: JobSettings, audit: JobLog,
            progress: StageFn | None = None, job_id: str | None = None,
            second_look: SecondLook | None = None) -> Record:
    """Erase, verify and record one device. Never raises for device-side failures: they
    end as a FAILED or BLOCKED record. `job_id` lets a caller log about the job first."""
    job = _Job(plugin, endpoint, settings, audit, progress, second_look=second_look)
    if job_id:
        job.job_id = job_id
    return job.run()
