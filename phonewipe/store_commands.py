"""`phonewipe store verify|migrate|sync`: a facility's store from the command line.

verify checks every station's hash chain and signed checkpoints in the facility database
(as `audit verify` checks one audit.sqlite); migrate takes the schema up or down; sync sends
what a station's journal holds that the database lacks, without starting the station."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from phonewipe.common import config_of, expected_errors
from phonewipe.erase.errors import AuditBroken, UsageError
from phonewipe.erase.strings import for_terminal


def _facility(ctx: click.Context, spool_dir: Path | None = None) -> Any:
    from phonewipe.erase.store.postgres import PostgresStore
    config = config_of(ctx)
    if not config.store_url:
        raise UsageError("no facility store is configured",
                         "set [store] url in the config (see README, 'Running a facility')")
    return PostgresStore(config.store_url, spool_dir=spool_dir, timeout=2.0)


def register(group: click.Group) -> None:
    """Add `store` and its commands to `group`."""

    @group.group("store")
    def store() -> None:
        """A facility's store: verify its chains, migrate its schema, send a station's journal."""

    @store.command("verify")
    @click.option("--station", "stations", multiple=True, help="only this station (repeatable)")
    @click.option("--trust", "trusted", multiple=True, metavar="FINGERPRINT",
                  help="SHA-256 fingerprint the checkpoint signers must have (repeatable)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    @expected_errors
    def verify(ctx: click.Context, stations: tuple[str, ...], trusted: tuple[str, ...],
               as_json: bool) -> None:
        """Check every station's hash chain and signed checkpoints in the facility database."""
        db = _facility(ctx)
        try:
            names = list(stations) or [s.station for s in db.stations()]
            if not names:
                raise AuditBroken(f"the facility store {db.where} holds no station's chain",
                                  "a station writes its chain there once [store] url is set")
            reports = [db.verify_station(name, trusted=trusted) for name in names]
        finally:
            db.close()
        if as_json:
            click.echo(json.dumps([{"station": n, "rows": r.rows, "head": r.head,
                                    "checkpoints": len(r.checkpoints), "uncovered": r.uncovered,
                                    "signers": r.signers, "pinned": r.pinned}
                                   for n, r in zip(names, reports, strict=True)], indent=2))
        else:
            for report in reports:
                click.echo(for_terminal(report.line()))
        sys.exit(0)

    @store.command("migrate")
    @click.option("--to", "target", type=click.IntRange(0), help="schema version (default: the "
                  "newest); lower ones take it down, 0 removes the store's tables")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path),
                  help="a station directory's audit.sqlite instead of [store] url")
    @click.pass_context
    @expected_errors
    def migrate(ctx: click.Context, target: int | None, out_dir: Path | None) -> None:
        """Take the store's schema to a version, up or down (a station migrates up by itself)."""
        from phonewipe.erase.store import schema
        from phonewipe.erase.store.sqlite import SqliteStore
        if target is not None and target > schema.LATEST:
            raise UsageError(f"schema version {target} does not exist",
                             f"give --to between 0 and {schema.LATEST}")
        want = schema.LATEST if target is None else target
        if out_dir is not None:
            path = out_dir / "audit.sqlite"
            if not path.is_file():
                raise UsageError(f"no audit log at {path}", "give the --out directory a station used")
            db: Any = SqliteStore(path, migrate=False)
            where = str(path)
        else:
            from phonewipe.erase.store.postgres import PostgresStore
            config = config_of(ctx)
            if not config.store_url:
                raise UsageError("no store given", "give --out DIR or set [store] url")
            db = PostgresStore(config.store_url, migrate=False)
            where = db.where
        try:
            was = db.migrate(want)
        finally:
            db.close()
        click.echo(f"store {for_terminal(where)}: schema version {was} -> {want}")
        sys.exit(0)

    @store.command("sync")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
                  help="the station directory (its journal, spool.sqlite)")
    @click.pass_context
    @expected_errors
    def sync(ctx: click.Context, out_dir: Path) -> None:
        """Send what the station's journal holds that the facility database lacks."""
        from phonewipe.erase.store.open import station_name
        from phonewipe.erase.store.postgres import PgStationLog
        if not (out_dir / "spool.sqlite").is_file():
            raise UsageError(f"no station journal at {out_dir / 'spool.sqlite'}",
                             "give the --out directory of a station that writes to the facility")
        name = station_name(config_of(ctx))
        db = _facility(ctx, out_dir)
        try:
            log = db.station_log(name)  # sends the unsent rows as it opens
            assert isinstance(log, PgStationLog)
            left = log.pending()
            log.close()
        finally:
            db.close()
        click.echo(f"station {for_terminal(name)}: {log.replayed} journaled row(s) sent, "
                   f"{left} waiting" + (" (the database is out of reach)" if left else ""))
        sys.exit(0 if not left else 8)
