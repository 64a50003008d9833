"""Where a device goes after its record (R2v3): the destination follows the outcome.

PASS (erased and verified) goes to the configured destination; anything else is held in
quarantine, not for resale until erased. A device that FAILED before (the same serial or
IMEI in the audit log) and FAILS again is routed to destruction: its reason says to destroy
it physically and record the destruction, and the record lists the earlier failures. So is
a medium its first verification found counterfeit (it holds less than it reports): erasing
it again cannot help.

One rule, in one place: the job (erase/job.py) and the station's own records
(erase/station) apply `route` to every final record."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Iterable

from .model import Destination, Outcome, Record, Technique
from .wrap import named_counterfeit

DESTRUCTION_ADVICE = ("run the erase again; if it fails a second time, send the device to "
                      "physical destruction (R2v3)")
DESTROY = "physically destroy it and record the destruction (`phonewipe destroy`)"
COUNTERFEIT_ADVICE = ("the medium holds less than it reports, so no overwrite of it can be "
                      f"trusted: do not erase it again, {DESTROY} (R2v3)")
COUNTERFEIT_DETAILS = "counterfeit capacity"
QUARANTINE = "quarantine"
QUARANTINE_DETAILS = "not for resale until erased"
VENDOR_ATTESTED_DETAILS = ("the vendor's erase ran but nothing was read back: released only by "
                           "the organization's acceptance of a vendor-attested erase, by an "
                           "erase verified by read-back where the device offers one, or by "
                           "destruction, to its configured destination")
# failures that say nothing about the device: the operator or the station stopped the erase
_NOT_THE_DEVICE = ("interrupted by the operator", "was interrupted", "station stopped")


def destination_for(outcome: Outcome, configured: Destination, failures: int = 0,
                    vendor_attested: bool = False, counterfeit: bool = False) -> Destination:
    """PASS: the configured destination; otherwise quarantine (with `failures` FAILs of
    this device in all, two or more, or a counterfeit medium: destruction). A vendor's own
    erase that nothing read back (an iPhone's, an attested one) may never reach a PASS: its
    quarantine says what releases it instead of waiting for one."""
    if outcome is Outcome.ERASED_VERIFIED:
        return configured
    if outcome is Outcome.FAILED and counterfeit:
        return Destination(QUARANTINE, f"{QUARANTINE_DETAILS}; {COUNTERFEIT_DETAILS}: {DESTROY}")
    if outcome is Outcome.FAILED and failures >= 2:
        return Destination(QUARANTINE, f"{QUARANTINE_DETAILS}; failed {failures} times: {DESTROY}")
    if outcome is Outcome.ERASED_UNVERIFIED and vendor_attested:
        return Destination(QUARANTINE, f"{VENDOR_ATTESTED_DETAILS} ({configured.kind})")
    return Destination(QUARANTINE, f"{QUARANTINE_DETAILS} (after a PASS: {configured.kind})")


def counts_as_failure(record: dict[str, Any]) -> bool:
    """A FAILED record that says something about the device (not an erase the operator or
    the station stopped)."""
    if record.get("outcome") != Outcome.FAILED.value:
        return False
    reason = str(record.get("reason", ""))
    return not any(words in reason for words in _NOT_THE_DEVICE)


def _norm(value: Any) -> str:
    return "".join(str(value or "").split()).upper()


def same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two records' devices (their `device` dicts) are one phone. Serials decide where both
    have one (the same serial, and no IMEIs that tell them apart: cheap phones share
    serials); otherwise an IMEI in common."""
    imeis_a = {_norm(i) for i in a.get("imeis") or ()} - {""}
    imeis_b = {_norm(i) for i in b.get("imeis") or ()} - {""}
    serial_a, serial_b = _norm(a.get("serial")), _norm(b.get("serial"))
    if serial_a and serial_b:
        return serial_a == serial_b and not (imeis_a and imeis_b and not imeis_a & imeis_b)
    return bool(imeis_a & imeis_b)


def logged_records(audit: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    """(job id, record dict) of every final record in an audit log (anything with
    `events()`, e.g. the AuditLog or a station's JobAudit), oldest first."""
    for e in audit.events(kinds=("record",)):
        try:
            payload = json.loads(e.payload)
        except ValueError:
            continue
        record = payload.get("record") if isinstance(payload, dict) else None
        if isinstance(record, dict) and isinstance(record.get("device"), dict):
            yield e.job_id, record


def earlier_failures(audit: Any, record: Record) -> list[dict[str, Any]]:
    """The device's earlier FAILs in the audit log (not this record's own job), oldest first."""
    device = {"serial": record.device.serial, "imeis": list(record.device.imeis)}
    found = []
    try:
        logged = list(logged_records(audit))
    except Exception:  # noqa: BLE001 - a log that cannot be read never costs the record
        return []
    for job_id, other in logged:
        if job_id != record.job_id and counts_as_failure(other) \
                and same_device(device, other["device"]):
            found.append({"record_id": other.get("record_id", ""),
                          "created_at": other.get("created_at", ""),
                          "batch_id": other.get("batch_id", ""),
                          "reason": str(other.get("reason", ""))[:300]})
    return found


def counterfeit(record: Record) -> bool:
    """A FAIL whose verification found the medium holds less than it reports."""
    return record.outcome is Outcome.FAILED and record.verification is not None \
        and named_counterfeit(record.verification.reason)


def route(record: Record, audit: Any = None) -> Record:
    """`record` with its destination following its outcome; a FAIL of a device that failed
    before (found in `audit`) also gets the destruction advice and its `earlier_failures`."""
    earlier = earlier_failures(audit, record) if (
        audit is not None and record.outcome is Outcome.FAILED
        and (record.device.serial or record.device.imeis)) else []
    attested = record.sanitization is not None and record.sanitization.technique in (
        Technique.CRYPTO_ERASE.value, Technique.FACTORY_RESET.value)
    destination = destination_for(record.outcome, record.destination,
                                  len(earlier) + 1 if record.outcome is Outcome.FAILED else 0,
                                  vendor_attested=attested, counterfeit=counterfeit(record))
    if not earlier:
        return replace(record, destination=destination)
    last = earlier[-1]
    when = str(last["created_at"])[:10]
    batch = f" in batch {last['batch_id']}" if last["batch_id"] else ""
    note = (f"it failed before ({len(earlier)} earlier FAIL{'s' if len(earlier) > 1 else ''}, the "
            f"last on {when}{batch}, record {str(last['record_id'])[:8]}): {DESTROY} (R2v3)")
    reason = record.reason.replace(DESTRUCTION_ADVICE, note) if DESTRUCTION_ADVICE in record.reason \
        else f"{record.reason.rstrip('. ')}; {note}" if record.reason else note
    return replace(record, destination=destination, reason=reason,
                   earlier_failures=tuple(earlier))
