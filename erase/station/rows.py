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

    def rate(self) -> float:
        elapsed = time.monotonic() - self.stage_started
        return self.done / elapsed if elapsed > 0 and self.done else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
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
