"""Reconcile a batch's final records with its expected-asset list."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..destination import COUNTERFEIT_DETAILS, counterfeit
from ..model import Outcome, Record
from .manifest import Asset, Manifest, identity_keys


@dataclass
class Reconciliation:
    erased: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    expected_never_seen: list[dict[str, Any]] = field(default_factory=list)
    seen_not_expected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    has_manifest: bool = False
    # Destruct records (erase/destroy.py) of this batch's devices or listed assets, and the
    # devices that FAILED twice, or once on counterfeit flash, and have no Destruct record
    # yet: offered for destruction (R2v3)
    destroyed: list[dict[str, Any]] = field(default_factory=list)
    offered_for_destruction: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.to_dict().items() if isinstance(v, list)}


def device_keys(record: Record) -> list[str]:
    return identity_keys(record.device.serial, record.device.imeis)


def _entry(record: Record, assets: list[Asset]) -> dict[str, Any]:
    return {"serial": record.device.serial or "", "imeis": list(record.device.imeis),
            "outcome": record.outcome.value, "result": record.result_text,
            "asset_tags": [a.asset_tag for a in assets], "owners": [a.owner for a in assets],
            "record_id": record.record_id, "reason": record.reason}


def reconcile(records: list[Record], manifest: Manifest | None,
              destroyed: list[Record] | tuple[Record, ...] = ()) -> Reconciliation:
    """`destroyed`: Destruct records from anywhere in the audit log; those of this batch's
    devices and of its listed assets are counted (a dead phone on the list that never came to
    the bench but was destroyed is not "never seen")."""
    out = Reconciliation(has_manifest=manifest is not None)
    assets = list(manifest.assets) if manifest else []
    by_key: dict[str, list[Asset]] = defaultdict(list)
    by_tag: dict[str, list[Asset]] = defaultdict(list)
    for asset in assets:
        for key in asset.keys:
            by_key[key].append(asset)
        if asset.asset_tag:
            by_tag[asset.asset_tag].append(asset)
    for key, rows in by_key.items():
        if len(rows) > 1:
            out.duplicates.append(f"{key} is listed {len(rows)} times in the asset "
                                  f"list (" + ", ".join(f"{a.asset_tag or '?'} line {a.line}"
                                                        for a in rows) + ")")
    for tag, rows in by_tag.items():
        if len({tuple(a.keys) for a in rows}) > 1:
            out.duplicates.append(f"asset tag {tag} is given to {len(rows)} different devices ("
                                  + ", ".join(f"{a.identifier} line {a.line}" for a in rows) + ")")
    seen_devices: dict[str, list[Record]] = defaultdict(list)
    matched: set[int] = set()
    for record in records:
        keys = device_keys(record)
        seen_devices[keys[0] if keys else record.endpoint.address].append(record)
        mine = [a for a in assets if set(a.keys) & set(keys)]
        matched.update(id(a) for a in mine)
        entry = _entry(record, mine)
        if manifest is not None and not mine:
            out.seen_not_expected.append(entry)
        if record.outcome in (Outcome.ERASED_VERIFIED, Outcome.ERASED_UNVERIFIED):
            out.erased.append(entry)
        elif record.outcome is Outcome.DESTROYED:
            out.destroyed.append(entry)
        elif record.outcome is Outcome.BLOCKED:
            out.blocked.append(entry)
        else:
            out.failed.append(entry)
        if len({id(a) for a in mine}) > 1:
            out.duplicates.append(f"device {record.device.serial} matches {len(mine)} different "
                                  "asset-list lines by serial and IMEI: "
                                  + ", ".join(a.asset_tag for a in mine))
    for key, recs in seen_devices.items():
        if len(recs) > 1:
            out.duplicates.append(f"device {recs[0].device.serial or key} has {len(recs)} final "
                                  "records in this batch")
    _destructions(out, records, assets, matched, destroyed)
    out.expected_never_seen = [asdict(a) for a in assets if id(a) not in matched]
    return out


def _destructions(out: Reconciliation, records: list[Record], assets: list[Asset],
                  matched: set[int], destroyed: list[Record] | tuple[Record, ...]) -> None:
    batch_keys = {k for r in records for k in device_keys(r)}
    destroyed_keys: set[str] = set()
    for record in destroyed:
        keys = set(device_keys(record))
        mine = [a for a in assets if set(a.keys) & keys]
        if not (keys & batch_keys or mine) or any(
                e["record_id"] == record.record_id for e in out.destroyed):
            continue
        matched.update(id(a) for a in mine)
        destroyed_keys |= keys
        out.destroyed.append(_entry(record, mine))
    for record in records:
        own = set(device_keys(record))
        fake = counterfeit(record)  # no second erase can help: offered after one FAIL
        if record.outcome is Outcome.FAILED and (record.earlier_failures or fake) \
                and not own & destroyed_keys:
            entry = _entry(record, [a for a in assets if set(a.keys) & own])
            entry["failures"] = len(record.earlier_failures) + 1
            if fake:
                entry["why"] = f"holds less than it reports ({COUNTERFEIT_DETAILS})"
            entry["command"] = destroy_command(record)
            out.offered_for_destruction.append(entry)


def destroy_command(record: Record) -> str:
    """The command that records the destruction of a device that failed twice."""
    import shlex
    d = record.device
    named = f"--serial {shlex.quote(d.serial)}" if d.serial else \
        " ".join(f"--imei {shlex.quote(i)}" for i in d.imeis)
    tag = f" --asset-tag {shlex.quote(record.asset_tag)}" if record.asset_tag else ""
    return (f"phonewipe destroy {named}{tag} --method shred --particle-mm 2 --facility FACILITY "
            "--witness NAME --out STATION_DIR")
