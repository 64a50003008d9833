"""Destruct records: a phone physically destroyed (shredded, disintegrated, pulverized,
incinerated or drilled), witnessed, one record per device (outcome DESTROYED).

What the record may claim is decided here, in one place: NIST SP 800-88 Rev. 1 lists shred,
disintegrate, pulverize and incinerate as Destruct for flash memory, so those claim Destruct;
the NSA/CSS guidance for solid-state media asks for particles of 2 mm or less, and a larger
particle size is said so beside the claim. Drilling is not a Destruct technique for flash (the
undrilled part of a chip can still be read in a laboratory): the record says what was done and
claims no category. Nothing is ever read back: the record says the destruction is attested by
the operator and a witness, never "verified by read-back".
"""
from __future__ import annotations

import difflib
import math
import uuid
from dataclasses import dataclass
from typing import Any

from . import __version__
from .audit import now_iso
from .errors import UsageError
from .evidence import build_evidence
from .job import JobLog, _as_dict
from .model import (
    Category,
    Destination,
    Endpoint,
    Identity,
    Media,
    Operator,
    Outcome,
    Record,
    Sanitization,
    Technique,
)
from .photos import Photo
from .policy import STANDARD
from .strings import clean

NIST_FLASH = "NIST SP 800-88 Rev. 1 App. A (flash memory: shred, disintegrate, pulverize, incinerate)"
NSA_PARTICLE_MM = 2.0
NSA_GUIDANCE = "NSA/CSS evaluated-products guidance for solid-state media (particles of 2 mm or less)"


@dataclass(frozen=True)
class DestroyMethod:
    name: str
    verb: str  # "shredded"
    nist: bool  # a NIST SP 800-88 Destruct technique for flash memory
    particles: bool  # leaves particles whose size is recorded


METHODS = {m.name: m for m in (
    DestroyMethod("shred", "shredded", True, True),
    DestroyMethod("disintegrate", "disintegrated", True, True),
    DestroyMethod("pulverize", "pulverized", True, True),
    DestroyMethod("incinerate", "incinerated", True, False),
    DestroyMethod("drill", "drilled through", False, False),
)}


@dataclass(frozen=True)
class Destruction:
    """What was done to the devices of one `phonewipe destroy` run (the same for each)."""
    method: str
    facility: str
    witness: str
    equipment: str = ""
    particle_mm: float | None = None
    witness_title: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "facility": self.facility, "witness": self.witness,
                "witness_title": self.witness_title, "equipment": self.equipment,
                "particle_mm": self.particle_mm, "notes": self.notes}


def check_destruction(d: Destruction, operator: Operator) -> Destruction:
    """The destruction as given, checked before any record is written: the method, a particle
    size where the method leaves particles, a facility, and a witness who is not the operator."""
    if d.method not in METHODS:
        near = difflib.get_close_matches(d.method, list(METHODS), n=1)
        raise UsageError(f"no destruction method {d.method!r}" +
                         (f" (did you mean {near[0]!r}?)" if near else ""),
                         f"choose one of {', '.join(METHODS)}")
    m = METHODS[d.method]
    if m.particles and d.particle_mm is None:
        raise UsageError(f"--method {d.method} leaves particles, but no --particle-mm was given",
                         "give the largest particle size in millimetres (the equipment's "
                         "screen or sieve size), e.g. --particle-mm 2")
    if d.particle_mm is not None and (not math.isfinite(d.particle_mm)
                                      or not 0 < d.particle_mm <= 1000):
        raise UsageError(f"--particle-mm {d.particle_mm} is not a particle size",
                         "give millimetres, more than 0 and at most 1000")
    if not m.particles and d.particle_mm is not None:
        raise UsageError(f"--method {d.method} leaves no particles to measure",
                         "leave out --particle-mm")
    if not d.facility.strip():
        raise UsageError("no facility named for the destruction",
                         "pass --facility (where the destruction took place)")
    if not d.witness.strip():
        raise UsageError("no witness named for the destruction",
                         "pass --witness NAME (a second person who saw it done)")
    if _same_person(d.witness, operator.name):
        raise UsageError(f"the witness {d.witness!r} is the operator",
                         "a witness is a second person: name someone else with --witness")
    return d


def _same_person(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def assess_destruction(d: Destruction) -> tuple[str, str, str]:
    """(category, justification, standard) for what was done."""
    m = METHODS[d.method]
    attested = (f"Nothing was read back: the destruction is attested by the operator and "
                f"witnessed by {d.witness}.")
    if not m.nist:
        return (Category.NONE.value,
                f"No category is claimed: the device was {m.verb} at {d.facility}, but drilling "
                "is not a Destruct technique of NIST SP 800-88 for flash memory (the part of a "
                "memory chip the drill missed can still be read in a laboratory). Shred, "
                f"disintegrate, pulverize or incinerate it to claim Destruct. {attested}",
                STANDARD)
    size = ""
    if d.particle_mm is not None:
        meets = d.particle_mm <= NSA_PARTICLE_MM
        size = (f" to particles of at most {d.particle_mm:g} mm, which "
                f"{'meets' if meets else 'is larger than'} the NSA/CSS guidance of "
                f"{NSA_PARTICLE_MM:g} mm for solid-state media"
                + ("" if meets else " (fragments of a memory chip that size may still hold "
                                    "readable data)"))
    where = "in a licensed incinerator at " if d.method == "incinerate" else "at "
    return (Category.DESTRUCT.value,
            f"Destruct: the device was {m.verb}{size}, {where}{d.facility}; NIST SP 800-88 "
            f"lists {d.method} as a Destruct technique for flash memory. {attested}",
            f"{STANDARD}; {NIST_FLASH}" + (f"; {NSA_GUIDANCE}" if d.particle_mm is not None
                                           else ""))


def is_destruction(record: Record) -> bool:
    return record.outcome is Outcome.DESTROYED


@dataclass(frozen=True)
class DestroyedDevice:
    """One device as the operator names it (label, list, or the station's record)."""
    identity: Identity
    asset_tag: str = ""
    owner: str = ""
    earlier: tuple[dict[str, Any], ...] = ()  # the device's earlier records (FAILs), if known


def destruction_record(device: DestroyedDevice, d: Destruction, operator: Operator,
                       photos: list[Photo], *, destroyed_at: str, batch_id: str,
                       audit: JobLog, media: Media | None = None) -> Record:
    """The device's Destruct record, logged (`destroyed`, then `record`) before it is signed."""
    job_id = str(uuid.uuid4())
    serial = device.identity.serial or (device.identity.imeis[0] if device.identity.imeis else "")
    category, justification, standard = assess_destruction(d)
    m = METHODS[d.method]
    audit.append(job_id, serial, "destroyed", {
        "identity": _as_dict(device.identity), "asset_tag": device.asset_tag,
        "destruction": d.to_dict(), "destroyed_at": destroyed_at, "batch_id": batch_id,
        "operator": _as_dict(operator), "photos": [p.sha256 for p in photos]})
    details: dict[str, Any] = {"destruction_method": d.method, "equipment": d.equipment,
                               "facility": d.facility, "witness": d.witness,
                               "witness_title": d.witness_title}
    if d.particle_mm is not None:
        details["particle_size_mm"] = d.particle_mm
    tool = {"name": "phonewipe", "version": __version__, "plugin": "destroy"}
    evidence = build_evidence(tool=tool, plan=None, samples=None, transcript={}, timings={},
                              capacity=None)
    evidence.update({"destruction": {**d.to_dict(), "destroyed_at": destroyed_at,
                                     "identity_source": "operator-entered"},
                     "photos": [p.to_dict() for p in photos]})
    if device.earlier:
        evidence["earlier_records"] = list(device.earlier)
    head = getattr(audit, "head", None)
    if head is not None:
        row, digest = head()
        evidence["audit"] = {"row": row, "head": digest}
    record = Record(
        record_id=str(uuid.uuid4()), job_id=job_id, created_at=now_iso(),
        outcome=Outcome.DESTROYED, device=device.identity,
        endpoint=Endpoint(plugin="destroy", mode="physical", address=d.facility,
                          label="operator-attested, witnessed"),
        operator=operator,
        destination=Destination("recycling", f"physically destroyed ({m.verb}); the fragments "
                                             f"go to recycling from {d.facility}"),
        tool=tool,
        sanitization=Sanitization(
            method=f"destroy-{d.method}", title=f"Physical destruction: {d.method}",
            technique=Technique.DESTRUCTION.value, category=category, standard=standard,
            justification=justification, details=details, started_at=destroyed_at,
            finished_at=destroyed_at),
        verification=None, reason="", post_state={"device": f"{m.verb}, witnessed by {d.witness}"},
        asset_tag=device.asset_tag, batch_id=batch_id, evidence=evidence,
        media=media or Media(source=device.owner))
    audit.append(job_id, serial, "record", {"outcome": record.outcome.value,
                                            "record_sha256": record.sha256(),
                                            "reason": record.reason, "record": record.to_dict()})
    return record


def earlier_records(audit: Any, identity: Identity, limit: int = 5) -> tuple[dict[str, Any], ...]:
    """This device's earlier final records in the audit log (newest last): why it is destroyed."""
    from .destination import logged_records, same_device
    device = {"serial": identity.serial, "imeis": list(identity.imeis)}
    found = []
    try:
        logged = list(logged_records(audit))
    except Exception:  # noqa: BLE001 - a log that cannot be read never costs the record
        return ()
    for _, other in logged:
        if isinstance(other.get("device"), dict) and same_device(device, other["device"]):
            outcome = str(other.get("outcome", ""))
            found.append({"record_id": str(other.get("record_id", "")),
                          "created_at": str(other.get("created_at", "")),
                          "batch_id": str(other.get("batch_id", "")),
                          "result": Outcome(outcome).result_text
                          if outcome in Outcome._value2member_map_ else outcome,
                          "reason": clean(str(other.get("reason", "")), 300)})
    return tuple(found[-limit:])
