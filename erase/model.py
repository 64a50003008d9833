"""Records every layer agrees on: who a device is, how to reach it, what was done to it.

A `Record` is the single source of truth for a certificate: the PDF is rendered from it,
the audit log stores it, and its canonical JSON is what gets hashed and signed.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

RECORD_SCHEMA = "phonewipe.record/3"  # /2: verification coverage and capacity, evidence;
# /3: the media information of NIST SP 800-88 App. G and what the operator removed (`media`)
SCHEMAS_WITHOUT_MEDIA = ("phonewipe.record/1", "phonewipe.record/2")


class Outcome(str, enum.Enum):
    ERASED_VERIFIED = "ERASED_VERIFIED"
    ERASED_UNVERIFIED = "ERASED_UNVERIFIED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"
    # physically destroyed (a Destruct record, erase/destroy.py): nothing was erased or read
    DESTROYED = "DESTROYED"

    @property
    def result_text(self) -> str:
        return {
            Outcome.ERASED_VERIFIED: "PASS",
            Outcome.ERASED_UNVERIFIED: "ERASED, NOT VERIFIED",
            Outcome.FAILED: "FAIL",
            Outcome.BLOCKED: "NOT ERASED",
            Outcome.DESTROYED: "DESTROYED",
        }[self]


class Category(str, enum.Enum):
    """NIST SP 800-88 / IEEE 2883 sanitization categories."""

    CLEAR = "Clear"
    PURGE = "Purge"
    DESTRUCT = "Destruct"
    NONE = "None"


class Technique(str, enum.Enum):
    OVERWRITE = "overwrite"
    BLOCK_ERASE = "block-erase"
    CRYPTO_ERASE = "crypto-erase"
    FACTORY_RESET = "factory-reset"
    DESTRUCTION = "destruction"


class Severity(str, enum.Enum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


class Expectation(str, enum.Enum):
    """What a read-back sample must show after a method ran."""

    PATTERN = "keyed-pattern"  # exact match with the host's keyed pseudo-random stream
    ZEROS = "zeros"
    NO_PLAINTEXT = "no-plaintext"  # discard / crypto-erase: no known plaintext, high entropy


@dataclass(frozen=True)
class Identity:
    platform: str
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    imeis: tuple[str, ...] = ()
    os_version: str | None = None
    storage_type: str | None = None  # eMMC / UFS / NAND / None when unknown
    capacity_bytes: int | None = None
    bootloader_locked: bool | None = None
    frp: bool | None = None
    activation_lock: bool | None = None
    mdm: bool | None = None
    encryption: str | None = None  # "file", "block", "none" or None when unknown
    build_type: str | None = None  # user / userdebug / eng


@dataclass(frozen=True)
class Endpoint:
    plugin: str
    mode: str  # adb, recovery, fastboot, edl, odin, brom, ios
    address: str  # USB path + VID:PID, or tcp:host:port, or the adb serial
    label: str = ""  # human name, e.g. the adb serial or the USB port

    def __str__(self) -> str:
        return f"{self.plugin}:{self.mode}:{self.address}"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str  # one sentence the operator can act on


@dataclass(frozen=True)
class EraseMethod:
    name: str  # stable id, e.g. "adb-raw-pattern"
    title: str  # human title printed on the certificate
    category: Category  # the best category this method reaches when it succeeds
    technique: Technique
    verifiable: bool  # the device offers read-back of what the method wrote
    expectation: Expectation | None = None
    description: str = ""
    # an overwrite through files (an unrooted fill): it reaches only the free space a file
    # system gives an app, not every addressable block of the area
    through_files: bool = False


@dataclass(frozen=True)
class Operator:
    name: str = "unknown"
    title: str = ""
    organization: str = ""
    location: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Destination:
    kind: str = "resale"  # internal reuse, external reuse, resale, recycling, manufacturer, other
    details: str = ""


ESIM_STATES = ("erased", "not present", "")  # "" : unknown (not attested)


@dataclass(frozen=True)
class Media:
    """What NIST SP 800-88 Rev. 1 Appendix G asks of the media that the device cannot say,
    and the operator's attestations of what else the phone held (record schema /3). Empty
    strings and None are "not given": the certificate prints them as such, never guessed."""
    source: str = ""  # who the media came from: the asset list's owner, else [media] source
    classification: str = ""  # confidentiality of the data before sanitization
    backup: str = ""  # whether (and where) the data was backed up before sanitization
    post_classification: str = ""  # after sanitization; "" : derived from the outcome
    notes: str = ""
    sim_removed: bool | None = None  # SIM card(s) removed by the operator before the erase
    microsd_removed: bool | None = None  # microSD card removed (or no slot) before the erase
    esim: str = ""  # one of ESIM_STATES: eSIM profiles erased, no eSIM, or unknown


@dataclass(frozen=True)
class SampleFailure:
    offset: int
    found: str  # what was found instead of the expectation


@dataclass(frozen=True)
class VerificationResult:
    mode: str  # quick, nist, full, or "none"
    status: str  # passed, failed, not-performed, unavailable
    expectation: str | None = None
    scope: str = ""  # what the sampled address space covers
    plan: dict[str, Any] = field(default_factory=dict)
    samples_read: int = 0
    bytes_read: int = 0
    failures: tuple[SampleFailure, ...] = ()
    failures_total: int = 0
    digest: str | None = None  # sha256 of all sampled bytes in plan order
    reason: str = ""
    coverage: str = ""  # what the plan covered, in words (e.g. the NIST Rev. 1 rule)
    capacity: dict[str, Any] = field(default_factory=dict)  # phonewipe.erase.capacity.CapacityCheck


@dataclass(frozen=True)
class Sanitization:
    method: str
    title: str
    technique: str
    category: str
    standard: str
    justification: str
    details: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    bytes_written: int = 0
    scope: str = ""  # what the method covered, in the plugin's words (EraseReport.scope)


@dataclass(frozen=True)
class Record:
    record_id: str
    job_id: str
    created_at: str
    outcome: Outcome
    device: Identity
    endpoint: Endpoint
    operator: Operator
    destination: Destination
    tool: dict[str, str]
    findings: tuple[Finding, ...] = ()
    sanitization: Sanitization | None = None
    verification: VerificationResult | None = None
    reason: str = ""  # why FAILED / BLOCKED, and what to do
    post_state: dict[str, Any] = field(default_factory=dict)
    asset_tag: str = ""
    batch_id: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)  # phonewipe.erase.evidence, phonewipe.evidence/1
    schema: str = RECORD_SCHEMA
    # this device's earlier FAILs in the audit log (erase/destination.py); absent when none
    earlier_failures: tuple[dict[str, Any], ...] = ()
    media: Media = field(default_factory=Media)  # schema /3: App. G fields, attestations

    @property
    def result_text(self) -> str:
        return self.outcome.result_text

    def to_dict(self) -> dict[str, Any]:
        data = _plain(dataclasses.asdict(self))
        if not self.earlier_failures:  # records without any hash as they always did
            data.pop("earlier_failures", None)
        if data.get("sanitization") and not data["sanitization"].get("scope"):
            data["sanitization"].pop("scope", None)  # as issued before the scope was kept
        if self.schema in SCHEMAS_WITHOUT_MEDIA:  # as issued: without the fields /3 added
            data.pop("media", None)
        if self.schema == "phonewipe.record/1":  # as issued: without the fields /2 added
            data.pop("evidence", None)
            if data.get("verification"):
                for key in ("coverage", "capacity"):
                    data["verification"].pop(key, None)
        return data

    def canonical_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        def build(kind: type, value: Any) -> Any:
            return kind(**value) if value is not None else None

        verification = data.get("verification")
        if verification is not None:
            verification = dict(verification)
            verification["failures"] = tuple(
                SampleFailure(**f) for f in verification.get("failures", ())
            )
            verification = VerificationResult(**verification)
        device = dict(data["device"])
        device["imeis"] = tuple(device.get("imeis", ()))
        return cls(
            record_id=data["record_id"],
            job_id=data["job_id"],
            created_at=data["created_at"],
            outcome=Outcome(data["outcome"]),
            device=Identity(**device),
            endpoint=Endpoint(**data["endpoint"]),
            operator=Operator(**data["operator"]),
            destination=Destination(**data["destination"]),
            tool=dict(data["tool"]),
            findings=tuple(
                Finding(Severity(f["severity"]), f["code"], f["message"])
                for f in data.get("findings", ())
            ),
            sanitization=build(Sanitization, data.get("sanitization")),
            verification=verification,
            reason=data.get("reason", ""),
            post_state=dict(data.get("post_state", {})),
            asset_tag=data.get("asset_tag", ""),
            batch_id=data.get("batch_id", ""),
            evidence=dict(data.get("evidence", {})),
            schema=data.get("schema", RECORD_SCHEMA),
            earlier_failures=tuple(dict(f) for f in data.get("earlier_failures", ())),
            media=Media(**data["media"]) if data.get("media") is not None else Media(),
        )


def _plain(value: Any) -> Any:
    """Turn enums and tuples into JSON-native values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes that get hashed."""
    return json.dumps(
        _plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
