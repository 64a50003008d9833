"""Jobs, batches, stations, search keys and certificate references as the audit events
tell them: `project` folds one event into those tables, inside the transaction that wrote
the event (PostgreSQL) or the one that caught up with it (SQLite). Idempotent per event.
A long SQLite catch-up folds many events at once in memory instead (fold.py), to the same
rows, with the payload readers below (batch_manifest, queued_fields, record_args...)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

from ..audit import Event
from ..model import Outcome
from ..station.ledger import BATCH_PREFIX
from ..station.manifest import normalise

NO_STAGE = frozenset({"certified", "second-look", "late-result", "certificate-failed"})
# the job events whose payload the projections read (a batch's events all are read)
PAYLOAD_EVENTS = ("queued", "identified", "record", "certified", "second-look")


class Tx(Protocol):
    """One open transaction; SQL uses %(name)s parameters."""

    def run(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


def _json(text: str) -> dict[str, Any]:
    if text == "{}":  # most events, as the readers select them
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def result_text(outcome: str) -> str:
    try:
        return Outcome(outcome).result_text
    except ValueError:
        return outcome


def file_sha256(path: str) -> tuple[str, bytes | None]:
    """(SHA-256, bytes) of the file at `path`; ("", None) when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except (OSError, ValueError):
        return "", None
    return hashlib.sha256(data).hexdigest(), data


def project(tx: Tx, station: str, e: Event, keep_pdf: bool = False, head: str = "",
            station_row: bool = True) -> None:
    """Fold event `e` of `station`'s chain (its hash `head`) into the projections;
    `station_row=False` when the writer has already moved the station's row."""
    payload = _json(e.payload)
    if station_row:
        tx.run("INSERT INTO store_stations (station, first_seen, last_seen, events, head,"
               " last_event) VALUES (%(s)s, %(ts)s, %(ts)s, %(id)s, %(h)s, %(ev)s)"
               " ON CONFLICT (station) DO UPDATE SET last_seen = %(ts)s, events = %(id)s,"
               " head = %(h)s, last_event = %(ev)s WHERE store_stations.events < %(id)s",
               {"s": station, "ts": e.ts, "id": e.id, "ev": e.event, "h": head})
    if e.job_id.startswith(BATCH_PREFIX):
        _batch_event(tx, station, e, payload)
        return
    _job_event(tx, station, e, payload, keep_pdf)


def _batch_event(tx: Tx, station: str, e: Event, payload: dict[str, Any]) -> None:
    batch_id = e.job_id[len(BATCH_PREFIX):]
    manifest = batch_manifest(e, payload)
    tx.run("INSERT INTO store_batches (batch_id, opened_at, manifest) VALUES (%(b)s, %(ts)s, %(m)s)"
           " ON CONFLICT (batch_id) DO NOTHING", {"b": batch_id, "ts": e.ts, "m": manifest})
    if manifest:
        tx.run("UPDATE store_batches SET manifest = %(m)s WHERE batch_id = %(b)s AND manifest IS NULL",
               {"b": batch_id, "m": manifest})
    _batch_station(tx, batch_id, station)
    args = {"b": batch_id, "s": station, "ts": e.ts}
    if e.event in ("batch-opened", "batch-resumed"):  # open again, on this station at least
        tx.run("UPDATE store_batch_stations SET closed_at = '' WHERE batch_id = %(b)s"
               " AND station = %(s)s", args)
        tx.run("UPDATE store_batches SET closed_at = '' WHERE batch_id = %(b)s", args)
    elif e.event == "batch-closed":  # a batch spanning stations closes with the last of them
        tx.run("UPDATE store_batch_stations SET closed_at = %(ts)s WHERE batch_id = %(b)s"
               " AND station = %(s)s", args)
        tx.run("UPDATE store_batches SET closed_at = %(ts)s WHERE batch_id = %(b)s AND NOT EXISTS"
               " (SELECT 1 FROM store_batch_stations WHERE batch_id = %(b)s AND closed_at = '')",
               args)


def _batch_station(tx: Tx, batch_id: str, station: str) -> None:
    if batch_id:
        tx.run("INSERT INTO store_batch_stations (batch_id, station) VALUES (%(b)s, %(s)s)"
               " ON CONFLICT (batch_id, station) DO NOTHING", {"b": batch_id, "s": station})


def _job_event(tx: Tx, station: str, e: Event, payload: dict[str, Any], keep_pdf: bool) -> None:
    staged = e.event not in NO_STAGE  # the job's stage is its latest event but these
    tx.run("INSERT INTO store_jobs (job_id, station, serial, stage, started_at, updated_at)"
           " VALUES (%(j)s, %(s)s, %(serial)s, %(stage)s, %(ts)s, %(ts)s)"
           " ON CONFLICT (job_id) DO UPDATE SET stage = %(stage)s, updated_at = %(ts)s"
           " WHERE %(staged)s",
           {"j": e.job_id, "s": station, "serial": e.serial, "ts": e.ts, "staged": staged,
            "stage": e.event if staged else "queued"})
    args: dict[str, Any] = {"j": e.job_id, "ts": e.ts}
    if e.event == "queued":
        args["b"], args["a"], args["addr"] = queued_fields(payload)
        tx.run("UPDATE store_jobs SET batch_id = %(b)s, asset_tag = %(a)s, address = %(addr)s"
               " WHERE job_id = %(j)s", args)
        _batch_station(tx, args["b"], station)
    elif e.event == "identified" and isinstance(payload.get("identity"), dict):
        _identity(tx, e.job_id, payload["identity"])
    elif e.event == "record" and isinstance(payload.get("record"), dict):
        _record(tx, station, e, payload)
    elif e.event == "certified" and payload.get("certificate"):
        _certified(tx, station, e, payload, keep_pdf)
    elif e.event == "second-look" and payload.get("selected", True):
        tx.run("UPDATE store_jobs SET second_look = %(l)s WHERE job_id = %(j)s",
               {"j": e.job_id, "l": json.dumps(payload)})


def batch_manifest(e: Event, payload: dict[str, Any]) -> str | None:
    """The asset list a `batch-opened` event carries, as stored (None for other events)."""
    manifest = payload.get("manifest") if e.event == "batch-opened" else None
    return json.dumps(manifest) if manifest else None


def queued_fields(payload: dict[str, Any]) -> tuple[str, str, str]:
    """(batch id, asset tag, address) of a `queued` event."""
    endpoint = payload.get("endpoint") or {}
    return (str(payload.get("batch_id") or ""), str(payload.get("asset_tag") or ""),
            str(endpoint.get("address", "")) if isinstance(endpoint, dict) else "")


def _identity_args(ident: dict[str, Any]) -> dict[str, Any]:
    model = " ".join(str(x) for x in (ident.get("manufacturer"), ident.get("model")) if x)
    return {"serial": str(ident.get("serial") or ""), "model": model,
            "imeis": json.dumps([str(i) for i in ident.get("imeis") or ()])}


def _identity(tx: Tx, job_id: str, ident: dict[str, Any]) -> None:
    tx.run("UPDATE store_jobs SET serial = %(serial)s, imeis = %(imeis)s, model = %(model)s"
           " WHERE job_id = %(j)s", {"j": job_id, **_identity_args(ident)})


def record_args(e: Event, payload: dict[str, Any]) -> dict[str, Any]:
    """A `record` event's job columns as %(name)s parameters (serial, imeis and model only
    when the record names its device)."""
    record = payload["record"]
    ident = record.get("device") or {}
    args = {"j": e.job_id, "o": str(record.get("outcome", "")), "r": str(record.get("reason", "")),
            "rid": str(record.get("record_id", "")), "sha": str(payload.get("record_sha256", "")),
            "row": e.id, "ts": e.ts, "b": str(record.get("batch_id") or ""),
            "tag": str(record.get("asset_tag") or "")}
    if isinstance(ident, dict):
        args.update(_identity_args(ident))
    return args


def record_keys(record: dict[str, Any]) -> list[tuple[str, str]]:
    """A final record's (kind, key) search keys, normalised as `find` compares them."""
    ident = record.get("device") or {}
    device = ident if isinstance(ident, dict) else {}
    keys = {("serial", normalise(device.get("serial"))), ("asset", normalise(record.get("asset_tag")))}
    keys |= {("imei", normalise(str(i))) for i in device.get("imeis") or ()}
    return [(kind, key) for kind, key in sorted(keys) if key]


def _record(tx: Tx, station: str, e: Event, payload: dict[str, Any]) -> None:
    args = record_args(e, payload)
    identity = " serial = %(serial)s, imeis = %(imeis)s, model = %(model)s," if "serial" in args else ""
    moved = tx.run(f"UPDATE store_jobs SET{identity} outcome = %(o)s, reason = %(r)s,"
                   " record_id = %(rid)s, record_sha256 = %(sha)s, record_row = %(row)s,"
                   " finished_at = %(ts)s, asset_tag = %(tag)s,"
                   " batch_id = CASE WHEN batch_id = '' THEN %(b)s ELSE batch_id END"
                   " WHERE job_id = %(j)s AND outcome = '' RETURNING 1", args)
    if not moved:
        return  # a job's first record is its record
    _batch_station(tx, args["b"], station)
    found = record_keys(payload["record"])
    if found:
        values = ", ".join(f"(%(k{n})s, %(kind{n})s, %(j)s)" for n in range(len(found)))
        params: dict[str, Any] = {"j": e.job_id}
        for n, (kind, key) in enumerate(found):
            params.update({f"k{n}": key, f"kind{n}": kind})
        tx.run(f"INSERT INTO store_keys (key, kind, job_id) VALUES {values}"
               " ON CONFLICT (key, kind, job_id) DO NOTHING", params)


def _certified(tx: Tx, station: str, e: Event, payload: dict[str, Any], keep_pdf: bool) -> None:
    path = str(payload["certificate"])
    rows = tx.run("UPDATE store_jobs SET certificate = %(p)s WHERE job_id = %(j)s"
                  " AND record_id <> '' AND certificate = '' RETURNING record_id",
                  {"p": path, "j": e.job_id})
    if not rows:
        return  # no record yet (cannot happen in a sound log), or already certified
    sha, data = file_sha256(path)
    tx.run("INSERT INTO store_certificates (record_id, job_id, station, path, sha256, record_sha256,"
           " pdf) VALUES (%(rid)s, %(j)s, %(s)s, %(p)s, %(sha)s, %(rsha)s, %(pdf)s)"
           " ON CONFLICT (record_id) DO NOTHING",
           {"rid": rows[0][0], "j": e.job_id, "s": station, "p": path, "sha": sha,
            "rsha": str(payload.get("record_sha256", "")), "pdf": data if keep_pdf else None})
