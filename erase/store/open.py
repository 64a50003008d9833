"""The store a command uses, from the config: a facility's PostgreSQL (`[store] url`, the
station named by `[station] name`, its spool in the station directory), else the station
directory's own audit.sqlite, as it always was."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import Config
from ..errors import ConfigError
from .base import DEFAULT_STATION, StationLog, Store


def open_store(config: Config, out_dir: Path) -> Store:
    if config.store_url:
        from .postgres import PostgresStore
        # a station must not stall long on a database that went away: 2 s, then its journal
        return PostgresStore(config.store_url, keep_pdf=config.store_keep_pdf, spool_dir=out_dir,
                             timeout=2.0, retry=1.0)
    from .sqlite import SqliteStore
    return SqliteStore(out_dir / "audit.sqlite", station=config.station_name or DEFAULT_STATION,
                       keep_pdf=config.store_keep_pdf)


def station_name(config: Config) -> str:
    if config.store_url and not config.station_name:
        raise ConfigError("a station writing to the facility database needs a name",
                          'set [station] name = "..." in the config, one per station')
    return config.station_name or DEFAULT_STATION


@contextmanager
def station_log(config: Config, out_dir: Path, signer: Any,
                notify: Callable[[str], None] | None = None) -> Iterator[StationLog]:
    """The audit log this station writes (closed, with its last checkpoint, on the way out).
    Without `[store] url`, exactly today's `AuditLog(out_dir / "audit.sqlite")`. `notify`
    is told when rows are left in the journal for want of the database."""
    name = station_name(config)
    if not config.store_url:
        from ..audit import AuditLog
        with AuditLog(out_dir / "audit.sqlite", signer=signer) as audit:
            yield audit
        return
    store = open_store(config, out_dir)
    try:
        log = store.station_log(name, signer)
        try:
            yield log
        finally:
            log.close()
            left = int(getattr(log, "left", 0))
            if left and notify:
                notify(f"{left} audit row(s) wait in {out_dir / 'spool.sqlite'}: the facility "
                       "database was out of reach. They are sent when this station next starts, "
                       f"or now with `phonewipe store sync --out {out_dir}`")
    finally:
        store.close()
