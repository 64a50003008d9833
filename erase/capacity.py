"""Is the address space the erase covered the whole medium? The size a plugin reads from
the device (e.g. BLKGETSIZE64) is compared with independent evidence the protocol offers
(e.g. the partition table in /proc/partitions and sysfs). A device that reports less than
it has keeps a hidden area the erase never reached."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONSISTENT, MISMATCH, UNVERIFIED = "consistent", "mismatch", "unverified"


@dataclass(frozen=True)
class CapacityCheck:
    reported: int  # bytes the erase and the sampling plan covered
    evidence: dict[str, int] = field(default_factory=dict)  # source -> bytes it shows

    @property
    def status(self) -> str:
        if not self.evidence:
            return UNVERIFIED
        return CONSISTENT if all(v == self.reported for v in self.evidence.values()) else MISMATCH

    def note(self) -> str:
        """One sentence for the certificate."""
        if self.status == UNVERIFIED:
            return (f"the device reported {self.reported:,} bytes and the protocol offers no "
                    "independent evidence of the size: assumed, not verified")
        sources = ", ".join(f"{k} {v:,}" for k, v in sorted(self.evidence.items()))
        if self.status == CONSISTENT:
            return f"{self.reported:,} bytes, confirmed by {sources}"
        return (f"the device reported {self.reported:,} bytes but {sources}: an area the erase "
                "did not reach may hold data")

    def to_dict(self) -> dict[str, Any]:
        return {"reported": self.reported, "evidence": dict(self.evidence),
                "status": self.status, "note": self.note()}


def check_capacity(reported: int, evidence: dict[str, int] | None) -> CapacityCheck:
    return CapacityCheck(reported, {k: int(v) for k, v in (evidence or {}).items()})
