"""What the station keeps per device and per batch: its options, one live row per device
(state, progress, outcome), and the FAILED record it writes itself for a job that cannot."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..audit import now_iso
from ..job import JobSettings
from ..model import Endpoint, Identity, Outcome, Record
from .manifest import Manifest

Listener = Callable[[dict[str, Any]], None]


@dataclass
class StationOptions:
    batch_id: str
    settings: JobSettings
    cert_dir: Path
    manifest: Manifest | None = None
    timeout: float = 7200.0  # per device, from arrival to record
    grace: float | None = None  # past the deadline, a job stuck in one call is recorded by the
    # station after this long (default: 10% of the timeout, between 2 and 30 s)
    poll: float = 0.5
    max_jobs: int = 64
    exit_when_idle: bool = False
    idle_seconds: float = 3.0
    second_look_share: float = 0.05
    second_look_by: str = ""


@dataclass
class DeviceRow:
    key: str
    port: str
    plugin: str
    mode: str
    model: str = ""
    serial: str = ""
    imei: str = ""
    asset_tag: str = ""
    state: str = "arrived"
    done: int = 0
    total: int = 0
    stage_started: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    outcome: str = ""
    result: str = ""
    reason: str = ""
    job_id: str = ""
    certificate: str = ""
    present: bool = True
    busy: bool = False
    redo_of: str = ""
    modes: list[str] = field(default_factory=list)
    second_look: str = ""

    @property
    def final(self) -> bool:
        return bool(self.outcome)

    reset: bool = False  # the job ended with a factory reset: the phone leaves and reboots
    _seen: list[tuple[float, float, int]] = field(default_factory=list, repr=False)

    RATE_WINDOW = 8.0  # seconds of progress a throughput is measured over
    RATE_MIN_SPAN = 1.0  # no figure before this much progress history
    RATE_WARMUP = 1.2  # a stage's first seconds fill the buffers between host and flash

    def rate(self, now: float | None = None) -> float:
        """Bytes per second over the last RATE_WINDOW seconds of this stage's progress, 0
        while there is too little history. Measured between observations, so what was
        buffered in the first moment (socket and pipe buffers fill at once) does not count
        as speed: the first RATE_WARMUP seconds of a stage are not measured."""
        now = time.monotonic() if now is None else now
        done, seen = self.done, list(self._seen)  # a copy: the view and the job thread ask
        if seen and (seen[-1][0] != self.stage_started or done < seen[-1][2]):
            seen = []  # a new stage, or its counter went back
        if not seen or seen[-1][2] != done:
            seen.append((self.stage_started, now, done))
        if now - self.stage_started < self.RATE_WARMUP:
            seen = seen[-1:]  # the baseline moves with the burst until it is over
        while len(seen) > 2 and now - seen[1][1] >= self.RATE_WINDOW:
            seen.pop(0)
        self._seen = seen
        _, t0, d0 = seen[0]
        span = now - t0
        if span < self.RATE_MIN_SPAN or done <= d0:
            return 0.0
        return (done - d0) / span

    def eta(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        if not rate or not self.total or self.done >= self.total:
            return None
        return (self.total - self.done) / rate


def fallback_record(job_id: str, identity: dict[str, Any] | None, endpoint: dict[str, Any],
                    settings: JobSettings, reason: str) -> Record:
    """A FAILED record the station writes itself, for a job that cannot write its own."""
    ident = dict(identity or {"platform": "unknown"})
    ident["imeis"] = tuple(ident.get("imeis", ()))
    return Record(record_id=str(uuid.uuid4()), job_id=job_id, created_at=now_iso(),
                  outcome=Outcome.FAILED, device=Identity(**ident), endpoint=Endpoint(**endpoint),
                  operator=settings.operator, destination=settings.destination,
                  tool={"name": "phonewipe", "version": __version__,
                        "plugin": str(endpoint.get("plugin", ""))},
                  reason=reason, asset_tag=settings.asset_tag, batch_id=settings.batch_id)


def record_payload(record: Record, by: str) -> dict[str, Any]:
    """The audit payload of a final record the station wrote itself (as the job's own)."""
    return {"outcome": record.outcome.value, "record_sha256": record.sha256(),
            "reason": record.reason, "record": record.to_dict(), "by": by}


def _endpoint_dict(row: DeviceRow) -> dict[str, Any]:
    return {"plugin": row.plugin, "mode": row.mode, "address": row.port, "label": ""}
