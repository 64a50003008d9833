"""`phonewipe destroy`: record the physical destruction of one device (`--serial`/`--imei`
from its label) or a batch (`--list devices.csv`, the asset-list format), witnessed: one
signed Destruct certificate per device and a signed destruction list, in
`OUT/destroyed/<batch>/`; every step in `OUT/audit.sqlite` (a station's --out directory:
its reports then count the destroyed devices)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from phonewipe.entered import (
    CERT_DIR,
    device_options,
    entered_identity,
    operator_entry_options,
    require_out,
    sign_and_log,
)
from phonewipe.erase.destroy import METHODS, DestroyedDevice, Destruction
from phonewipe.erase.errors import UsageError
from phonewipe.erase.model import Identity

LIST_FILE = "destruction-list.pdf"


def parse_when(text: str | None) -> str:
    """--destroyed-at as ISO 8601 UTC (default now); a time in the future is a typo."""
    now = dt.datetime.now(dt.timezone.utc)
    if not text:
        return now.isoformat(timespec="seconds")
    try:
        when = dt.datetime.fromisoformat(text)
        when = when.astimezone(dt.timezone.utc) if when.tzinfo else when.astimezone()
    except (ValueError, OverflowError):  # also a time that leaves the calendar in UTC
        raise UsageError(f"--destroyed-at {text!r} is not a date and time",
                         "give ISO 8601, e.g. 2026-12-02T14:30 (local time) or "
                         "2026-12-02T14:30+00:00") from None
    if when > now + dt.timedelta(minutes=5):
        raise UsageError(f"--destroyed-at {text} is in the future",
                         "give the time the destruction took place")
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def listed_devices(path: Path) -> list[DestroyedDevice]:
    """The devices of an asset-list CSV (asset_tag, serial and/or imei, owner columns)."""
    from phonewipe.erase.station.manifest import load_manifest
    if not path.is_file():
        raise UsageError(f"no device list at {path}", "give the CSV of the devices destroyed")
    manifest = load_manifest(path)
    out = []
    for a in manifest.assets:
        serial = a.serial or (a.identifier if a.identifier not in a.imeis else "")
        out.append(DestroyedDevice(Identity(platform="unknown", serial=serial or None,
                                            imeis=tuple(a.imeis)), a.asset_tag, a.owner))
    return out


def devices_from(list_path: Path | None, kw: dict[str, Any]) -> list[DestroyedDevice]:
    named = any(kw.get(k) for k in ("serial", "imeis", "model", "manufacturer", "asset_tag"))
    if list_path is not None and named:
        raise UsageError("--list and a single device (--serial, --imei...) both given",
                         "name one device, or give the list")
    if list_path is not None:
        return listed_devices(list_path)
    identity = entered_identity(kw.get("platform") or "unknown", kw)
    return [DestroyedDevice(identity, kw.get("asset_tag") or "")]


def register(cli: click.Group) -> None:
    from phonewipe.common import (
        config_of,
        console,
        expected_errors,
        job_settings,
        load_signer,
        require_operator,
    )

    @cli.command()
    @click.option("--method", "method", required=True, metavar="METHOD",
                  help=f"how it was destroyed: {', '.join(METHODS)}")
    @click.option("--particle-mm", "particle_mm", type=float,
                  help="largest particle size in mm (shred, disintegrate, pulverize)")
    @click.option("--equipment", default="", help="the shredder, disintegrator... (make, model)")
    @click.option("--facility", default="", help="where it was destroyed")
    @click.option("--witness", default="", help="the second person who saw it done")
    @click.option("--witness-title", default="", help="the witness's title")
    @click.option("--destroyed-at", "destroyed_at", help="when (ISO 8601; default now)")
    @click.option("--list", "list_path", type=click.Path(path_type=Path),
                  help="CSV of the devices (asset_tag, serial and/or imei, owner columns)")
    @click.option("--batch", "batch_id", help="id of this destruction run (default: the time)")
    @click.option("--platform", default="unknown", help="the device's platform, if known")
    @click.option("--notes", default="", help="notes for the certificates")
    @device_options
    @operator_entry_options
    @click.pass_context
    @expected_errors
    def destroy(ctx: click.Context, method: str, particle_mm: float | None, equipment: str,
                facility: str, witness: str, witness_title: str, destroyed_at: str | None,
                list_path: Path | None, batch_id: str | None, notes: str,
                keys_dir: Path | None, photos: tuple[Path, ...], out_dir: Path | None, as_json: bool,
                **kw: Any) -> None:
        """Record the physical destruction of a device or a batch, witnessed: a signed Destruct
        certificate per device and a signed destruction list."""
        from dataclasses import replace

        from phonewipe.certificates.destruction_list import build_list, sign_list
        from phonewipe.certificates.sign import write_atomic
        from phonewipe.erase.audit import AuditLog
        from phonewipe.erase.destroy import check_destruction, destruction_record, earlier_records
        from phonewipe.erase.photos import check_photos
        from phonewipe.erase.runner import check_output_dir
        from phonewipe.erase.strings import clean
        out_dir = require_out(out_dir)
        config = config_of(ctx)
        settings = job_settings(config, {**kw, "notes": notes or None})
        require_operator(settings.operator)
        d = check_destruction(Destruction(
            method=method.strip().lower(), facility=clean(facility, 200),
            witness=clean(witness, 120), equipment=clean(equipment, 200),
            particle_mm=particle_mm, witness_title=clean(witness_title, 120),
            notes=clean(notes, 400)), settings.operator)
        when = parse_when(destroyed_at)
        devices = devices_from(list_path, kw)
        checked = check_photos(list(photos))
        batch = clean(batch_id, 64) if batch_id else "destroy-" + when[:19].replace(":", "")
        directory = check_output_dir(out_dir / "destroyed" / batch)
        signer = load_signer(keys_dir or config.keys_dir)
        entries = []
        with AuditLog(out_dir / "audit.sqlite", signer=signer) as audit:
            audit.append("destroy:" + batch, "", "destroy-started",
                         {"batch_id": batch, "destruction": d.to_dict(), "destroyed_at": when,
                          "devices": len(devices)})
            for device in devices:
                device = replace(device, earlier=earlier_records(audit, device.identity))
                record = destruction_record(device, d, settings.operator, checked,
                                            destroyed_at=when, batch_id=batch, audit=audit,
                                            media=replace(settings.media, source=device.owner
                                                          or settings.media.source))
                path = sign_and_log(record, signer, audit, directory / CERT_DIR)
                entries.append((record, path))
            row, head = audit.checkpoint("destruction-list")
            data = build_list(batch, d.to_dict(), when, [(r, p.name) for r, p in entries],
                              {"rows": row, "head": head})
            listed = write_atomic(directory, LIST_FILE, sign_list(signer, data))
            audit.append("destroy:" + batch, "", "destruction-list",
                         {"path": str(listed), "devices": len(entries)})
        if as_json:
            click.echo(json.dumps({"batch_id": batch, "list": str(listed), "certificates": [
                {"serial": r.device.serial, "result": r.result_text, "category":
                 r.sanitization.category if r.sanitization else "", "certificate": str(p),
                 "record_sha256": r.sha256()} for r, p in entries]}, sort_keys=True))
            return
        for r, p in entries:
            who = r.device.serial or ", ".join(r.device.imeis)
            category = r.sanitization.category if r.sanitization else "None"
            console.print(escape(f"{r.result_text} ({category}) {who}"), highlight=False,
                          soft_wrap=True)
            click.echo(f"  {p}")
        console.print(escape(f"destruction list ({len(entries)} devices):"), highlight=False)
        click.echo(f"  {listed}")
