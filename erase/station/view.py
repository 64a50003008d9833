"""What the operator sees: a live rich table of every device, or a quiet JSON-lines event
stream for other tools."""
from __future__ import annotations

import io
import json
import math
import sys
import threading
import time
from typing import IO, Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
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
    seconds = int(math.ceil(seconds))  # 0.4 s left is 0:01, not 0:00
    return f"{seconds // 60}:{seconds % 60:02d}"


def _text(value: Any) -> str:
    """A device string for a rich Text (no markup there): control characters escaped."""
    return escape_controls("" if value is None else str(value))


WIDE = 150  # columns from which every field gets a column of its own


def row_state(row: DeviceRow) -> str:
    """What the phone is doing, as the operator should read it."""
    state = row.state
    if row.final:  # a phone gone after its record: what that means depends on how it ended
        if row.reset:
            state = "done; reset" if row.present else "reset; rebooting"
        else:
            state = "done" + ("" if row.present else "; unplugged")
    elif not row.present:
        state += " (unplugged)"
    if row.second_look:
        state += f"; 2nd look {row.second_look}"
    return state


class LiveTable:
    """Renders the station's rows; rich's Live calls this from its refresh thread.

    Wide terminals get one column per field; narrow ones stack serial and model, state and
    progress, result and reason. Nothing is cut: long values fold. When the rows do not fit
    the terminal's height, finished rows are summarised on one line (PASSes first, oldest
    first) so the running and new ones stay in view; ``fit=False`` shows every row (the
    final frame, and output that is not a terminal)."""

    def __init__(self, station: Station, fit: bool = True) -> None:
        self.station = station
        self.fit = fit

    # -- one row ----------------------------------------------------------------------------
    @staticmethod
    def _speed(row: DeviceRow, now: float) -> tuple[str, str]:
        if not row.busy:
            return "", ""
        rate = row.rate(now)
        eta = row.eta(now)
        return (f"{_size(rate)}/s" if rate else ""), _eta(eta)  # blank until measured

    @staticmethod
    def _result(row: DeviceRow) -> Text:
        if not row.result:
            return Text("")
        return Text(row.result, style=f"bold {RESULT_STYLE.get(row.result, '')}")

    def _wide_row(self, row: DeviceRow, now: float) -> list[Any]:
        bar: Any = ""
        if row.busy and row.total:
            bar = ProgressBar(total=row.total, completed=min(row.done, row.total), width=12)
        speed, eta = self._speed(row, now)
        ident = Text(_text(row.serial or "?"))
        imei = row.imei.split(",")[0].strip()
        if imei:
            ident.append("\n" + _text(imei), style="dim")
        # what a device says is data: shown escaped, never as markup or control codes
        return [for_terminal(row.port), for_terminal(row.model), ident,
                for_terminal(row.asset_tag), for_terminal(row_state(row)), bar,
                "\n".join(x for x in (speed, f"ETA {eta}" if eta else "") if x),
                self._result(row), Text(_text(row.reason), style="dim")]

    def _narrow_row(self, row: DeviceRow, now: float) -> list[Any]:
        phone = Text(_text(row.serial or row.port), style="bold")
        for extra in (row.model, row.asset_tag):
            if extra:
                phone.append("\n" + _text(extra))
        state = Text(_text(row_state(row)))
        speed, eta = self._speed(row, now)
        if row.busy and row.total:
            share = min(1.0, row.done / row.total)
            filled = int(round(14 * share))
            state.append("\n" + "━" * filled, style="green")
            state.append("━" * (14 - filled), style="grey30")
            line = " ".join(x for x in (f"{int(100 * share)}%", speed, f"ETA {eta}" if eta else "")
                            if x)
            state.append("\n" + line)
        result = self._result(row)
        if row.reason:
            result.append("\n" + _text(row.reason), style="dim")
        return [phone, state, result]

    def _table(self, rows: list[DeviceRow], width: int, title: str) -> Table:
        now = time.monotonic()
        if width >= WIDE:
            table = Table(title=title, expand=True)
            assets = any(r.asset_tag for r in rows)
            for name, most, wrap in (("port", 16, True), ("model", 16, True),
                                     ("serial / IMEI", 17, False), ("asset", 12, True),
                                     ("state", 18, True), ("progress", 12, False),
                                     ("speed / ETA", 11, False), ("result", 10, True),
                                     ("reason", 0, True)):
                if name == "asset" and not assets:
                    continue
                # bounded below 200 columns, so the reason keeps room; long values fold
                table.add_column(name, ratio=None if most else 1, overflow="fold",
                                 no_wrap=not wrap and name != "serial / IMEI",
                                 max_width=most if most and width < 200 else None,
                                 min_width=None if most else 24)
            for row in rows:
                cells = self._wide_row(row, now)
                if not assets:
                    del cells[3]
                table.add_row(*cells)
        else:
            table = Table(title=title, expand=True)
            table.add_column("phone", overflow="fold", max_width=20)
            table.add_column("state", overflow="fold", max_width=22)
            table.add_column("result / reason", overflow="fold", ratio=1, min_width=16)
            for row in rows:
                table.add_row(*self._narrow_row(row, now))
        return table

    # -- the frame --------------------------------------------------------------------------
    def _status(self, rows: list[DeviceRow]) -> Text:
        st = self.station
        counts: dict[str, int] = {}
        for row in rows:
            if row.result:
                counts[row.result] = counts.get(row.result, 0) + 1
        running = sum(1 for r in rows if r.busy)
        status = (f"{len(rows)} devices, {running} running, "
                  + ", ".join(f"{k}: {v}" for k, v in counts.items())
                  + f" - up {int(time.monotonic() - st.started)} s - {time.strftime('%H:%M:%S')}")
        if not self.fit and not running:  # the last frame: nothing to interrupt any more
            status += " - stopped"
        elif st.abort.is_set():
            status += " - ABORTING running jobs"
        elif st.draining:
            status += " - finishing running jobs, no new ones (Ctrl-C again to abort them)"
        else:
            status += " - Ctrl-C: finish running jobs and stop"
        for error in st.discovery_errors:
            status += f"\ndiscovery problem: {escape_controls(str(error))}"
        return Text(status)

    def frame(self, width: int, height: int | None) -> Group:
        st = self.station
        title = f"phonewipe station - batch {st.options.batch_id}"
        with st.lock:
            rows = list(st.rows.values())
        status = self._status(rows)
        if not self.fit or height is None:
            return Group(status, self._table(rows, width, title))
        # what may be summarised, first to last: finished PASSes, other finished rows (oldest
        # first); running and waiting rows always stay
        # (PASSes, then the others), then running rows from the newest: a wall of phones
        # still shows its oldest running ones and says how many more there are
        order = [r for r in rows if r.final and r.result == "PASS" and not r.busy] + \
                [r for r in rows if r.final and r.result != "PASS" and not r.busy] + \
                [r for r in reversed(rows) if not (r.final and not r.busy)]
        console = Console(width=width, height=height, color_system=None, file=_NULL)

        def with_hidden(n: int) -> tuple[Group, int]:
            hidden = order[:n]
            shown = [r for r in rows if not any(r is h for h in hidden)]
            parts: list[Any] = [status, self._table(shown, width, title)]
            if hidden:
                counts: dict[str, int] = {}
                for r in hidden:
                    what = "running" if r.busy else r.result or "waiting"
                    counts[what] = counts.get(what, 0) + 1
                parts.append(Text(f"+ {len(hidden)} more not shown ("
                                  + ", ".join(f"{k}: {v}" for k, v in counts.items())
                                  + "); the final table lists every one", style="dim"))
            group = Group(*parts)
            lines = console.render_lines(group, console.options.update(width=width), pad=False)
            return group, len(lines)

        # every row takes a line at least: no need to lay out more rows than the screen has
        least = max(0, len(rows) - max(1, height - 8))
        group, lines = with_hidden(least)
        if lines <= height or least >= len(order):
            return group
        low, high = least + 1, len(order)  # the fewest hidden rows that fit (or all of them)
        best = None
        while low <= high:
            mid = (low + high) // 2
            candidate, lines = with_hidden(mid)
            if lines <= height:
                best, high = candidate, mid - 1
            else:
                low = mid + 1
        return best if best is not None else with_hidden(len(order))[0]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = (options.height or options.max_height) if console.is_terminal else None
        yield self.frame(options.max_width, height)


_NULL = io.StringIO()  # measuring renders nothing out: render_lines never writes to it


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
