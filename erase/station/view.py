"""What the operator sees: a live rich table of every device, or a quiet JSON-lines event
stream for other tools."""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..strings import escape_controls, for_terminal
from .station import DeviceRow, Station

RESULT_STYLE = {"PASS": "green", "ERASED, NOT VERIFIED": "yellow", "FAIL": "red",
                "NOT ERASED": "magenta"}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class LiveTable:
    """Renders the station's rows; rich's Live calls this from its refresh thread."""

    def __init__(self, station: Station) -> None:
        self.station = station

    def _row(self, row: DeviceRow) -> list[Any]:
        bar: Any = ""
        if row.busy and row.total:
            bar = ProgressBar(total=row.total, completed=min(row.done, row.total), width=18)
        rate = row.rate() if row.busy else 0.0
        result = Text(row.result, style=RESULT_STYLE.get(row.result, "")) if row.result else Text("")
        ident = " / ".join(x for x in (row.serial, row.imei.split(",")[0]) if x) or "?"
        state = row.state + ("" if row.present else " (unplugged)")
        if row.second_look:
            state += f"; 2nd look {row.second_look}"
        # what a device says is data: shown escaped, never as markup or control codes
        return [for_terminal(row.port), for_terminal(row.model), for_terminal(ident),
                for_terminal(row.asset_tag), for_terminal(state), bar,
                f"{_size(rate)}/s" if rate else "", _eta(row.eta()) if row.busy else "", result]

    def __rich__(self) -> Group:
        st = self.station
        table = Table("port", "model", "serial / IMEI", "asset", "state", "progress",
                      "throughput", "ETA", "result", expand=True,
                      title=f"phonewipe station - batch {st.options.batch_id}")
        with st.lock:
            rows = list(st.rows.values())
        for row in rows:
            table.add_row(*self._row(row))
        counts: dict[str, int] = {}
        for row in rows:
            if row.result:
                counts[row.result] = counts.get(row.result, 0) + 1
        running = sum(1 for r in rows if r.busy)
        status = (f"{len(rows)} devices, {running} running, "
                  + ", ".join(f"{k}: {v}" for k, v in counts.items())
                  + f" - up {int(time.monotonic() - st.started)} s - {time.strftime('%H:%M:%S')}")
        if st.abort.is_set():
            status += " - ABORTING running jobs"
        elif st.draining:
            status += " - finishing running jobs, no new ones (Ctrl-C again to abort them)"
        else:
            status += " - Ctrl-C: finish running jobs and stop"
        for error in st.discovery_errors:
            status += f"\ndiscovery problem: {escape_controls(str(error))}"
        return Group(Text(status), table)  # status first: a tall table is cropped at the bottom


class JsonLines:
    """One JSON object per line on `stream`, flushed, safe from many threads."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(_cleaned(event), sort_keys=True, ensure_ascii=False, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _cleaned(value: Any) -> Any:
    """Every string of an event with its control and bidi characters escaped (device strings
    the station learnt before the job cleaned them, e.g. its probe's serial)."""
    if isinstance(value, str):
        return escape_controls(value)
    if isinstance(value, dict):
        return {k: _cleaned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cleaned(v) for v in value]
    return value
