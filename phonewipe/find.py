"""`phonewipe find IMEI|SERIAL|TAG --out DIR`: every record of a device across batches.

Reads the audit log of each station (or erase) directory given, read-only: the device's
final records newest first, each with its certificate, its verification and second look,
its destination, and "superseded by" the newer record when the device was done again.
Identifiers shared by several phones (an asset tag on two phones, an IMEI two serials
report) are flagged as duplicates. No key material is printed or exported."""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from phonewipe.common import expected_errors
from phonewipe.erase.audit import LoggedRecord, logged_records
from phonewipe.erase.destination import same_device
from phonewipe.erase.errors import DeviceNotFound, UsageError
from phonewipe.erase.model import Outcome
from phonewipe.erase.station.manifest import normalise
from phonewipe.erase.store.base import RecordHit, StoreReader
from phonewipe.erase.strings import for_terminal

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")  # as phonewipe/reports.py names a batch's folder


@dataclass
class Found:
    logged: LoggedRecord
    station: Path
    matched_by: list[str]
    device: int = 0  # which phone, among those found
    superseded_by: str | None = None
    supersedes: str | None = None
    certificate: Path | None = None

    @property
    def record(self) -> dict[str, Any]:
        return self.logged.record

    def to_dict(self) -> dict[str, Any]:
        r, d = self.record, self.record.get("device") or {}
        v = r.get("verification") or {}
        s = r.get("sanitization") or {}
        look = self.logged.second_look
        return {
            "record_id": r.get("record_id", ""), "record_sha256": self.logged.record_sha256,
            "created_at": r.get("created_at", ""), "batch_id": r.get("batch_id", ""),
            "station": str(self.station), "job_id": self.logged.job_id,
            "serial": d.get("serial") or "", "imeis": list(d.get("imeis") or ()),
            "model": " ".join(x for x in (d.get("manufacturer"), d.get("model")) if x),
            "asset_tag": r.get("asset_tag", ""), "outcome": r.get("outcome", ""),
            "result": _result(r.get("outcome", "")), "reason": r.get("reason", ""),
            "method": s.get("method", ""), "category": s.get("category", ""),
            "destination": r.get("destination") or {},
            "verification": {"mode": v.get("mode", ""), "status": v.get("status", ""),
                             "samples_read": v.get("samples_read", 0),
                             "reason": v.get("reason", "")},
            "second_look": {k: look.get(k) for k in ("status", "by", "verdict", "samples", "reason")
                            if k in look} if look else None,
            "earlier_failures": [f.get("record_id", "") for f in r.get("earlier_failures") or ()],
            "certificate": str(self.certificate) if self.certificate else self.logged.certificate,
            "certificate_found": bool(self.certificate),
            "matched_by": self.matched_by, "device": self.device,
            "superseded_by": self.superseded_by, "supersedes": self.supersedes,
        }


@dataclass
class FindResult:
    query: str
    logs: list[str]
    found: list[Found] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def devices(self) -> int:
        return len({f.device for f in self.found})

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "phonewipe.find/1", "query": self.query, "logs": self.logs,
                "devices": self.devices, "records": [f.to_dict() for f in self.found],
                "duplicates": self.duplicates}


def _result(outcome: str) -> str:
    try:
        return Outcome(outcome).result_text
    except ValueError:
        return outcome


def _audit_path(out: Path) -> Path:
    path = out if out.is_file() else out / "audit.sqlite"
    if not path.is_file():
        raise UsageError(f"no audit log at {path}", "give the --out directory a station or an "
                                                    "erase run used (it holds audit.sqlite)")
    return path


def _matches(query: str, record: dict[str, Any]) -> list[str]:
    key = normalise(query)
    device = record.get("device") or {}
    how = []
    if key and normalise(device.get("serial")) == key:
        how.append("serial")
    if key and any(normalise(i) == key for i in device.get("imeis") or ()):
        how.append("IMEI")
    tag = str(record.get("asset_tag") or "").strip()
    if tag and tag.upper() == query.strip().upper():
        how.append("asset tag")
    return how


def _certificate(station: Path, logged: LoggedRecord) -> Path | None:
    named = logged.certificate
    if not named:
        return None
    name = Path(named).name
    batch = str(logged.record.get("batch_id") or "")
    folder = _SAFE.sub("_", batch).strip("._") or "batch"
    for candidate in (Path(named), station / "batches" / folder / "certificates" / name,
                      station / "certificates" / name):
        if candidate.is_file():
            return candidate
    return None


def _groups(items: list[dict[str, Any]]) -> list[int]:
    """A phone number per record: records of one phone (erase/destination.same_device) share it."""
    group = list(range(len(items)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i
    for i in range(len(items)):
        for j in range(i):
            if same_device(items[i].get("device") or {}, items[j].get("device") or {}):
                group[root(i)] = root(j)
    return [root(i) for i in range(len(items))]


def _label(record: dict[str, Any]) -> str:
    device = record.get("device") or {}
    return str(device.get("serial") or ", ".join(device.get("imeis") or ()) or "unidentified")


def find_device(query: str, outs: list[Path]) -> FindResult:
    """Every record of the device `query` names (serial, IMEI or asset tag) in the logs of
    `outs`, newest first, linked by "superseded by", and the duplicates among them."""
    if not query.strip():
        raise UsageError("nothing to find", "give an IMEI, a serial number or an asset tag")
    everything: list[tuple[Path, LoggedRecord]] = []
    logs = []
    for out in outs:
        path = _audit_path(out)
        logs.append(str(path))
        station = path.parent
        everything += [(station, r) for r in logged_records(path)]
    return _found(query, logs, everything)


def find_in_store(query: str, store: StoreReader, where: str) -> FindResult:
    """`find_device` across a facility's store (`where` names it): the records the query
    matches, and every record that shares an identifier with them (for the duplicates)."""
    if not query.strip():
        raise UsageError("nothing to find", "give an IMEI, a serial number or an asset tag")
    related: dict[str, RecordHit] = {h.job_id: h for h in store.search(query)}
    for hit in list(related.values()):
        device = hit.record.get("device") or {}
        for key in [device.get("serial"), *(device.get("imeis") or ()), hit.record.get("asset_tag")]:
            if key:
                related.update({h.job_id: h for h in store.search(str(key))})
    everything = [(Path(h.station), LoggedRecord(
        Path(h.station), h.row, h.job_id, h.record, h.record_sha256,
        h.certificate.path if h.certificate else None, h.second_look)) for h in related.values()]
    return _found(query, [where], everything)


def _found(query: str, logs: list[str], everything: list[tuple[Path, LoggedRecord]]) -> FindResult:
    result = FindResult(query, logs)
    hits = [(station, r, how) for station, r in everything if (how := _matches(query, r.record))]
    if not hits:
        raise DeviceNotFound(f"no record of {query!r} in {', '.join(logs)}",
                             "check the IMEI, serial or asset tag, and the --out directories")
    records = [r.record for _, r, _ in hits]
    phones = _groups(records)
    numbering = {g: n for n, g in enumerate(dict.fromkeys(phones), start=1)}
    found = [Found(r, station, how, numbering[g], certificate=_certificate(station, r))
             for (station, r, how), g in zip(hits, phones, strict=True)]
    found.sort(key=lambda f: (f.record.get("created_at", ""), f.logged.row))
    newer: dict[int, Found] = {}
    for f in reversed(found):  # newest first: each older record is superseded by the next
        if f.device in newer:
            f.superseded_by = newer[f.device].record.get("record_id", "")
            newer[f.device].supersedes = f.record.get("record_id", "")
        newer[f.device] = f
    found.reverse()
    result.found = found
    result.duplicates = _duplicates(query, found, [r.record for _, r in everything])
    return result


def _duplicates(query: str, found: list[Found], everything: list[dict[str, Any]]) -> list[str]:
    """Identifiers of the phones found that other phones share: an asset tag on several
    phones, an IMEI reported by several serials, a serial with IMEIs that tell phones apart."""
    out: list[str] = []
    tags = {str(f.record.get("asset_tag")).strip() for f in found if f.record.get("asset_tag")}
    imeis = {normalise(i) for f in found for i in (f.record.get("device") or {}).get("imeis") or ()}
    serials = {normalise((f.record.get("device") or {}).get("serial")) for f in found} - {""}
    for tag in sorted(tags):
        tagged = [r for r in everything if str(r.get("asset_tag") or "").strip().upper() == tag.upper()]
        phones = _phones(tagged)
        if len(phones) > 1:
            out.append(f"asset tag {tag} is on {len(phones)} phones: {', '.join(phones)}")
    for imei in sorted(imeis - {""}):
        with_imei = [r for r in everything
                     if imei in {normalise(i) for i in (r.get("device") or {}).get("imeis") or ()}]
        owners = sorted({normalise((r.get("device") or {}).get("serial")) for r in with_imei} - {""})
        if len(owners) > 1:
            out.append(f"IMEI {imei} is reported by {len(owners)} phones: serials {', '.join(owners)}")
    for serial in sorted(serials):
        same = [r for r in everything if normalise((r.get("device") or {}).get("serial")) == serial]
        phones = _phones(same)
        if len(phones) > 1:
            out.append(f"serial {serial} is reported by {len(phones)} phones with different IMEIs "
                       f"({'; '.join(phones)})")
    return out


def _phones(records: list[dict[str, Any]]) -> list[str]:
    """One label per phone among `records`."""
    labels: dict[int, str] = {}
    for record, group in zip(records, _groups(records), strict=True):
        device = record.get("device") or {}
        imeis = [str(i) for i in device.get("imeis") or ()]
        label = _label(record) + (f" (IMEI {', '.join(imeis)})"
                                  if device.get("serial") and imeis else "")
        labels.setdefault(group, label)
    return list(labels.values())


def print_result(result: FindResult) -> None:
    """The records as lines a person reads: identifiers, paths and hashes each on their own
    line, never cut; what a device said is shown escaped."""
    echo = click.echo
    t = for_terminal
    echo(f"{t(result.query)}: {len(result.found)} record(s) of {result.devices} phone(s), "
         "newest first")
    for f in result.found:
        d = f.to_dict()
        echo("")
        ids = ", ".join(x for x in (f"serial {d['serial']}" if d["serial"] else "",
                                    f"IMEI {', '.join(d['imeis'])}" if d["imeis"] else "",
                                    f"tag {d['asset_tag']}" if d["asset_tag"] else "") if x)
        echo(f"{d['result']}  {t(d['created_at'])}  batch {t(d['batch_id']) or '-'}  {t(ids)}"
             + (f"  [{t(d['model'])}]" if d["model"] else ""))
        echo(f"  record: {t(d['record_id'])}")
        echo(f"  record SHA-256: {d['record_sha256']}")
        if f.superseded_by:
            echo(f"  superseded by: {t(f.superseded_by)}")
        cert = d["certificate"]
        echo(f"  certificate: {t(cert) if cert else 'none (not certified)'}"
             + ("" if d["certificate_found"] or not cert else "  (file not found)"))
        v = d["verification"]
        verification = f"{v['mode']} {v['status']}" + (f", {v['samples_read']} samples"
                                                       if v["samples_read"] else "")
        echo(f"  verification: {t(verification.strip()) or 'none'}")
        look = d["second_look"]
        if look:
            echo(f"  second look: {t(str(look.get('status')))} by {t(str(look.get('by')))}"
                 + (f" ({t(str(look.get('verdict')))})" if look.get("verdict") else ""))
        dest = d["destination"]
        if dest:
            echo(f"  destination: {t(str(dest.get('kind', '')))}"
                 + (f": {t(str(dest.get('details')))}" if dest.get("details") else ""))
        if d["reason"]:
            echo(f"  reason: {t(d['reason'])}")
        echo(f"  station: {t(d['station'])}")
    for dup in result.duplicates:
        echo("")
        echo(f"DUPLICATE: {t(dup)}")


def register(group: click.Group) -> None:
    """Add `find` to `group`."""

    @group.command("find")
    @click.argument("query", metavar="IMEI|SERIAL|TAG")
    @click.option("--out", "outs", type=click.Path(path_type=Path), multiple=True,
                  help="station (or erase) directory holding audit.sqlite; repeat for several "
                       "(default: the facility's store, [store] url in the config)")
    @click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
    @click.pass_context
    @expected_errors
    def find(ctx: click.Context, query: str, outs: tuple[Path, ...], as_json: bool) -> None:
        """Every record of one phone across batches, newest first, by IMEI, serial or asset
        tag: certificate, verification, "superseded by" when it was done again, and
        identifiers that several phones share (exit 3 when nothing is found)."""
        config = ctx.obj.get("config") if isinstance(ctx.obj, dict) else None
        if outs:
            result = find_device(query, list(outs))
        elif config is not None and config.store_url:
            from phonewipe.erase.store.postgres import PostgresStore
            store = PostgresStore(config.store_url)
            try:
                result = find_in_store(query, store, f"the facility store ({store.where})")
            finally:
                store.close()
        else:
            raise UsageError("no station directory and no facility store to search",
                             "give --out DIR (a station directory), or set [store] url in the "
                             "config to search the whole facility")
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, ensure_ascii=False))
        else:
            print_result(result)
        sys.exit(0)
