"""`phonewipe station` and `phonewipe report`, registered on the main click group."""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, cast

import click
from rich.markup import escape

from phonewipe.common import (
    config_of,
    console,
    err_console,
    expected_errors,
    job_settings,
    load_signer,
    method_help,
    operator_options,
    plugins_of,
    require_operator,
)
from phonewipe.erase.errors import ConfigError, UsageError
from phonewipe.erase.plugin import Plugin, close_plugins, sandbox_plugins
from phonewipe.erase.strings import clean, for_terminal


def parse_emulate(specs: tuple[str, ...]) -> list[str]:
    """`rooted:8 frp-locked` -> eight rooted handsets and one FRP-locked one."""
    names: list[str] = []
    for spec in specs:
        name, _, count = spec.partition(":")
        try:
            n = int(count) if count else 1
        except ValueError:
            n = 0
        if n < 1 or not name:  # never fall through to a real station with real phones
            raise UsageError(f"bad --emulate value {spec!r}", "write PROFILE or PROFILE:COUNT "
                             "with a count of at least 1")
        names += [name] * n
    return names


def new_batch_id(taken: list[str] | None = None) -> str:
    """A time-stamped id, never one the log already has (two batches in one second)."""
    base = dt.datetime.now(dt.timezone.utc).strftime("B%Y%m%d-%H%M%S")
    bid, n = base, 1
    while bid in (taken or ()):
        n += 1
        bid = f"{base}-{n}"
    return bid


# a batch id is its folder name as is, so two ids never share batches/<ID>/
BATCH_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


def check_batch_id(batch_id: str) -> str:
    if not BATCH_ID.fullmatch(batch_id):
        raise UsageError(f"bad --batch id {batch_id!r}", "use letters, digits, '.', '_' and '-' "
                         "(starting and ending with a letter or digit, at most 100 characters)")
    return batch_id


def register(group: click.Group) -> None:
    """Add the station commands (station, report) to `group`."""

    @group.command()
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
                  help="station directory: audit.sqlite and batches/<BATCH>/")
    @click.option("--batch", "batch_id", help="batch id (default: resume the batch a stopped "
                  "station left open, else a new one)")
    @click.option("--assets-map", "assets_map", metavar="FIELD=COLUMN,...",
                  help="which asset-list columns hold tag, serial, imei, imei2, owner (default: "
                       "recognised names, MDM exports included; [assets] in the config)")
    @click.option("--assets", type=click.Path(path_type=Path),
                  help="expected-asset list CSV: asset_tag, serial_or_imei, owner")
    @click.option("--method", help=method_help())
    @click.option("--timeout", type=click.FloatRange(1),
                  help="seconds a device may take from arrival to its record (default 7200, "
                       "or [station] timeout)")
    @click.option("--poll", type=click.FloatRange(0.05), default=0.5, show_default=True,
                  help="seconds between device discoveries")
    @click.option("--max-jobs", type=click.IntRange(1), default=64, show_default=True)
    @click.option("--second-look", "second_look_share", type=click.FloatRange(0, 1),
                  help="share of PASSed devices picked for an R2v3 second look (default 0.05, "
                       "or [station] second_look)")
    @click.option("--second-look-by", help="who does the second look (default: [station] "
                  "second_look_by, else the operator)")
    @click.option("--json-lines", is_flag=True, help="no table: one JSON event per line on stdout")
    @click.option("--exit-when-idle", is_flag=True,
                  help="close the batch and exit once no job runs and nothing new arrived")
    @click.option("--idle-seconds", type=click.FloatRange(0), default=3.0, show_default=True)
    @click.option("--emulate", "emulate_specs", multiple=True, metavar="PROFILE[:N]",
                  help="serve emulated handsets on loopback with private servers (testing, demos)")
    @click.option("--userdata-mib", type=click.IntRange(1), help="emulated handsets' userdata size")
    @operator_options
    @click.pass_context
    @expected_errors
    def station(ctx: click.Context, out_dir: Path, batch_id: str | None, assets: Path | None,
                assets_map: str | None,
                method: str | None, timeout: float | None, poll: float, max_jobs: int,
                second_look_share: float | None, second_look_by: str | None, json_lines: bool,
                exit_when_idle: bool, idle_seconds: float, emulate_specs: tuple[str, ...],
                userdata_mib: int | None, keys_dir: Path | None, **kw: Any) -> None:
        """Watch for phones, erase each one as it arrives, many at once, as one batch."""
        from phonewipe.erase.audit import AuditLog
        from phonewipe.erase.runner import check_output_dir
        from phonewipe.erase.station.ledger import batch_ids, open_batch
        from phonewipe.erase.station.manifest import load_manifest, parse_column_map
        from phonewipe.erase.station.station import Station, StationOptions
        from phonewipe.erase.station.view import JsonLines, LiveTable
        from phonewipe.erase.store.open import station_log, station_name
        from phonewipe.reports import batch_dir, write_reports

        config = config_of(ctx)
        if not 0 <= config.second_look_share <= 1:
            raise ConfigError(f"[station] second_look must be a share between 0 and 1, not "
                              f"{config.second_look_share}", "fix the config file (e.g. 0.05)")
        if batch_id is not None:
            check_batch_id(batch_id)
        settings = job_settings(config, kw, method)  # method and plan: before any phone
        profiles = parse_emulate(emulate_specs)
        columns = {**config.assets_map, **parse_column_map(assets_map or "")}
        manifest = load_manifest(assets, columns) if assets else None
        for warning in manifest.warnings if manifest else ():
            err_console.print(f"asset list: {escape(warning)}", highlight=False, soft_wrap=True)
        if manifest and manifest.warnings:
            err_console.print(f"asset list: {len(manifest.warnings)} line(s) skipped, "
                              f"{len(manifest.assets)} device(s) listed", highlight=False)
        if not profiles:  # a real station: its certificates name who erased
            require_operator(settings.operator)
        check_output_dir(out_dir)
        station_name(config)  # a facility's station has a name, asked before any phone
        if profiles and keys_dir is None:
            from phonewipe.demo import ensure_demo_keys
            keys_dir = ensure_demo_keys(out_dir / "keys")
        signer = load_signer(keys_dir or config.keys_dir)
        handsets: list[Any] = []
        plugins: dict[str, Plugin]
        if profiles:
            ignored = ctx.obj.get("plugin_flags") or []
            if ignored:  # passed on, --block-allow-internal would put a real disk on the bench
                err_console.print(f"warning: --emulate serves its phones on a private bench, which "
                                  f"does not use {', '.join(ignored)} (plugin options are for real "
                                  "phones)", highlight=False, soft_wrap=True)
            plugins, handsets = _emulated_bench(profiles, out_dir, userdata_mib)
        else:
            plugins = plugins_of(ctx)
        out = console
        try:
            # signs checkpoints; the facility's database with [store] url, else audit.sqlite
            with station_log(config, out_dir, signer, notify=lambda text: err_console.print(
                    for_terminal(text), highlight=False, soft_wrap=True)) as log:
                audit = cast(AuditLog, log)
                batch_id = batch_id or open_batch(audit) or new_batch_id(batch_ids(audit))
                cert_dir = check_output_dir(batch_dir(out_dir, batch_id) / "certificates")
                options = StationOptions(
                    batch_id=batch_id, settings=settings,
                    cert_dir=cert_dir, manifest=manifest,
                    timeout=timeout if timeout is not None else config.station_timeout,
                    poll=poll, max_jobs=max_jobs, exit_when_idle=exit_when_idle,
                    idle_seconds=idle_seconds,
                    second_look_share=second_look_share if second_look_share is not None
                    else config.second_look_share,
                    second_look_by=second_look_by or config.second_look_by)
                st = Station(plugins, audit, signer, options,
                             listener=JsonLines() if json_lines else None)

                def terminate(*_: Any) -> None:  # SIGTERM: stop cleanly, like Ctrl-C twice
                    st.interrupt()
                    st.interrupt()
                signal.signal(signal.SIGTERM, terminate)
                signal.signal(signal.SIGINT, lambda *_: st.interrupt())
                if json_lines:
                    how = st.run()
                elif not out.is_terminal:  # a pipe or a file: the whole table once, at the end
                    how = st.run()
                    out.print(LiveTable(st, fit=False))
                else:
                    from rich.live import Live
                    view = LiveTable(st)
                    with Live(view, console=out, refresh_per_second=4) as live:
                        try:
                            how = st.run()
                        finally:  # the last frame shows every row, uncut (it may scroll)
                            view.fit = False
                            live.vertical_overflow = "visible"
                if how == "aborted":
                    aborted = st.aborted_rows
                    msg = (f"stopped: {len(aborted)} running job(s) aborted and recorded as such "
                           f"({', '.join(r.serial or r.port for r in aborted) or 'none'}); run the "
                           f"same command again to redo them and finish batch {batch_id}")
                    (err_console if not json_lines else err_console).print(
                        for_terminal(msg), highlight=False)
                    sys.exit(130)
                outputs = write_reports(audit, batch_id, out_dir, signer)
        finally:
            if handsets:
                from phonewipe.erase.emulation.fleet import stop_handsets
                stop_handsets(handsets)
                close_plugins(plugins)
        if json_lines:
            st.emit("reports", summary=str(outputs.summary_pdf), csv=str(outputs.records_csv),
                    json=str(outputs.records_json), assets=str(outputs.assets_csv),
                    second_look_pending=outputs.summary.get("second_look_pending", []),
                    offered_for_destruction=outputs.summary["reconciliation"].get(
                        "offered_for_destruction", []))
        else:
            _print_outputs(out, outputs)
        sys.exit(_unexpected(st, handsets) if handsets else batch_exit_code(outputs.summary))

    @group.command()
    @click.argument("batch_id")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
                  help="the station directory holding audit.sqlite")
    @click.option("--keys", "keys_dir", type=click.Path(path_type=Path), help="signing key directory")
    @click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
    @click.pass_context
    @expected_errors
    def report(ctx: click.Context, batch_id: str, out_dir: Path, keys_dir: Path | None,
               as_json: bool) -> None:
        """Rebuild a batch's signed summary PDF, CSV and JSON from the audit log alone."""
        from phonewipe.erase.audit import AuditLog
        from phonewipe.erase.store.open import station_log
        from phonewipe.reports import write_reports
        config = config_of(ctx)
        # a facility's station: its journal (the chain it wrote to the database) is here
        audit_path = out_dir / ("spool.sqlite" if config.store_url else "audit.sqlite")
        if not audit_path.is_file():
            raise ConfigError(f"no audit log at {audit_path}", "give the --out directory the station used")
        if keys_dir is None and (out_dir / "keys" / "signing-key.pem").is_file():
            keys_dir = out_dir / "keys"  # the key an emulated station made for itself
        signer = load_signer(keys_dir or config.keys_dir)
        with station_log(config, out_dir, signer) as log:
            outputs = write_reports(cast(AuditLog, log), batch_id, out_dir, signer)
        facility = _facility_batch(config, batch_id) if config.store_url else None
        if as_json:
            click.echo(json.dumps({**outputs.summary, **({"facility": facility} if facility else {})},
                                  indent=2, sort_keys=True))
        else:
            _print_outputs(console, outputs)
            if facility:
                counts = ", ".join(f"{k.replace('_', ' ')}: {v}"
                                   for k, v in facility["reconciliation_counts"].items() if v)
                console.print(f"facility: batch {escape(for_terminal(batch_id))} on "
                              f"{len(facility['stations'])} station(s) "
                              f"({escape(for_terminal(', '.join(facility['stations'])))}), "
                              f"{'closed' if facility['closed'] else 'open'}; {counts or 'no records'}",
                              highlight=False, soft_wrap=True)

    from phonewipe.find import register as register_find  # `phonewipe find`: across batches
    register_find(group)
    from phonewipe.store_commands import register as register_store  # a facility's store
    register_store(group)


def _facility_batch(config: Any, batch_id: str) -> dict[str, Any] | None:
    """The batch across every station of the facility's store: its stations, whether the
    last of them closed it, and its reconciliation (every station's records)."""
    from phonewipe.erase.store.postgres import PostgresStore
    store = PostgresStore(config.store_url)
    try:
        batch = store.batch(batch_id)
        if batch is None:
            return None
        rec = store.reconciliation(batch_id)
        return {"stations": list(batch.stations), "closed": batch.closed, "totals": batch.totals,
                "reconciliation": rec.to_dict(), "reconciliation_counts": rec.counts()}
    finally:
        store.close()


def _print_outputs(console: Any, outputs: Any) -> None:
    s = outputs.summary
    rec = s["reconciliation"]
    console.print(f"batch {s['batch_id']}: {s['device_count']} devices, "
                  + ", ".join(f"{k}: {v}" for k, v in s["totals"].items()), highlight=False)
    if rec["has_manifest"]:
        console.print("reconciliation: " + ", ".join(
            f"{k.replace('_', ' ')}: {len(v)}" for k, v in rec.items() if isinstance(v, list)),
            highlight=False)
    for note in s.get("second_look_notes", []):  # pending looks with their commands, picks passed on
        console.print(f"second look: {escape(for_terminal(note))}", highlight=False, soft_wrap=True)
    if rec.get("destroyed") and not rec["has_manifest"]:
        console.print(f"destroyed (Destruct records): {len(rec['destroyed'])}", highlight=False)
    station = shlex.quote(str(Path(outputs.directory).parent.parent))
    for e in rec.get("offered_for_destruction", []):  # FAILED twice, or counterfeit (R2v3)
        who = e.get("serial") or ", ".join(e.get("imeis", [])) or "?"
        command = str(e.get("command", "")).replace("STATION_DIR", station)
        why = e.get("why") or f"failed {e.get('failures', 2)} times"
        console.print(f"offered for destruction: {escape(for_terminal(who))} {why}; record it with: "
                      f"{escape(for_terminal(command))}", highlight=False, soft_wrap=True)
    for p in (outputs.summary_pdf, outputs.records_csv, outputs.records_json, outputs.assets_csv):
        if p is not None:
            console.print(f"  {p}", highlight=False, soft_wrap=True)


def batch_exit_code(summary: dict[str, Any]) -> int:
    """A station's exit code, as `erase`'s: 0 when every device of the batch passed; 8 when a
    device has no certificate; else the most serious outcome's (10 not verified, 11 blocked,
    12 failed)."""
    from phonewipe.erase.model import Outcome
    from phonewipe.erase.runner import EXIT_BY_OUTCOME
    devices = summary.get("devices", ())
    if any(not d.get("certificate") for d in devices):
        return 8
    return max((EXIT_BY_OUTCOME[Outcome(d["outcome"])] for d in devices), default=0)


def _emulated_bench(profiles: list[str], out_dir: Path, userdata_mib: int | None):
    from phonewipe.erase.emulation.fleet import start_handsets
    shutil.rmtree(out_dir / "handsets", ignore_errors=True)
    plugins = sandbox_plugins(out_dir)
    try:
        handsets = start_handsets(profiles, out_dir / "handsets", plugins,
                                  userdata_bytes=userdata_mib * 1024 * 1024 if userdata_mib else None)
    except BaseException:  # e.g. a full disk: stop the private servers already started
        close_plugins(plugins)
        raise
    return plugins, handsets


def _unexpected(st: Any, handsets: list[Any]) -> int:
    """With emulated handsets: 1 when one did not end as its profile says it must."""
    if not handsets:
        return 0
    expected = {clean(h.serial): h.profile.expect for h in handsets}  # as the record has it
    serial_at = {address: clean(h.serial) for h in handsets for address in h.endpoints.values()}
    bad = 0
    seen = set()
    for row in st.rows.values():
        serial = row.serial or serial_at.get(row.port, "")  # a locked phone may not say who it is
        seen.add(serial)
        want = expected.get(serial)
        if want is not None and row.outcome != want:
            bad += 1
            err_console.print(f"[red]unexpected:[/] {for_terminal(serial)} ended "
                              f"{for_terminal(row.outcome or row.state)}, expected {want}: "
                              f"{for_terminal(row.reason)}", highlight=False)
    missing = set(expected) - seen
    for serial in sorted(missing):
        bad += 1
        err_console.print(f"[red]unexpected:[/] {for_terminal(serial)} never got a record",
                          highlight=False)
    return 1 if bad else 0
