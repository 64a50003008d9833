"""Who is connected: each endpoint the plugins found, opened and asked who it is (serial,
model, IMEIs), with a short deadline each, in parallel. An endpoint that cannot say who it
is (an unauthorized or offline adb entry, a phone that does not answer) is listed as such,
with what to do; `erase --all` leaves it alone instead of certifying an unknown device."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.model import Endpoint, Identity, Severity
from phonewipe.erase.plugin import Plugin
from phonewipe.erase.strings import clean, clean_identity

IDENTIFY_TIMEOUT_S = 10.0


@dataclass
class Seen:
    """One endpoint and what it said of itself."""

    plugin: Plugin
    endpoint: Endpoint
    identity: Identity | None = None
    note: str = ""  # why it could not be identified, and what to do
    late: bool = False  # did not answer in time (what it says later is not used)

    @property
    def identified(self) -> bool:
        return not self.late and self.identity is not None and bool(self.identity.serial)

    def to_dict(self) -> dict[str, Any]:
        i = self.identity if not self.late else None
        return {"plugin": self.endpoint.plugin, "mode": self.endpoint.mode,
                "address": clean(self.endpoint.address), "state": clean(self.endpoint.label),
                "identified": self.identified, "serial": i.serial if i else None,
                "manufacturer": i.manufacturer if i else None, "model": i.model if i else None,
                "imeis": list(i.imeis) if i else [], "os_version": i.os_version if i else None,
                "note": self.note}


def _identify(seen: Seen) -> None:
    identity, note = None, ""
    try:
        with seen.plugin.open(seen.endpoint) as session:
            identity = clean_identity(session.identify())[0]
            if not identity.serial:  # why not, in the plugin's words (a phone that cannot
                # say who it is cannot run commands either: its checks are only its state)
                blockers = [f.message for f in session.preflight() if f.severity is Severity.BLOCKER]
                note = " ".join(blockers) or "it did not report a serial number"
    except PhonewipeError as exc:
        note = exc.line()
    except Exception as exc:  # noqa: BLE001 - one odd device must not hide the others
        note = f"could not be asked who it is ({type(exc).__name__}: {exc})"
    if not seen.late:
        seen.identity, seen.note = identity, note


def identify_all(found: list[tuple[Plugin, Endpoint]],
                 timeout: float = IDENTIFY_TIMEOUT_S) -> list[Seen]:
    """Each endpoint opened and identified, in parallel; one that does not answer within
    ``timeout`` seconds is listed as unidentified (its thread is left to end on its own)."""
    rows = [Seen(plugin, endpoint) for plugin, endpoint in found]
    threads = [threading.Thread(target=_identify, args=(row,), daemon=True,
                                name=f"identify-{row.endpoint.address}") for row in rows]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for row, thread in zip(rows, threads, strict=True):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            row.late = True
            row.note = (f"did not say who it is within {timeout:.0f} s: unlock it, check the "
                        "cable, then run again")
    return rows


def devices_table(rows: list[Seen]) -> Any:
    """serial, model, IMEI, mode and state, address: identifiers are folded, never cut, at
    any width (a pipe is 80 columns)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("serial", "model", "IMEI", "mode", "address"):
        table.add_column(name, no_wrap=name != "model")
    for row in rows:
        d = row.to_dict()
        model = " ".join(x for x in (d["manufacturer"], d["model"]) if x)
        serial = Text(d["serial"] or "unidentified", style="" if row.identified else "yellow")
        state = d["state"] if d["state"] and d["state"] != d["serial"] else ""
        table.add_row(serial, Text(model or "-"), "\n".join(d["imeis"]) or "-",
                      Text(f"{d['mode']} {state}".strip()), Text(d["address"]))
    return table


TABLE_WIDTH = 100  # narrower (a pipe is 80): one line per device, nothing cut


def device_line(row: Seen) -> str:
    """serial, model, mode and state, address, IMEIs on one line (the terminal wraps it)."""
    d = row.to_dict()
    state = d["state"] if d["state"] and d["state"] != d["serial"] else ""
    parts = [d["serial"] or "unidentified",
             " ".join(x for x in (d["manufacturer"], d["model"]) if x) or "-",
             f"{d['mode']} {state}".strip(), d["address"]]
    if d["imeis"]:
        parts.append("IMEI " + ", ".join(d["imeis"]))
    return "  ".join(parts)


def notes(rows: list[Seen]) -> list[str]:
    """One line per device that could not say who it is: its address and what to do."""
    return [f"{row.endpoint.mode} {clean(row.endpoint.address)} "
            f"({clean(row.endpoint.label) or 'no state'}): {row.note}" for row in rows if row.note]


def leave_unidentified(rows: list[Seen], say: Any) -> list[tuple[Plugin, Endpoint]]:
    """`erase --all`: the identified endpoints; the others are named (one line each, with
    what to do), never erased or certified as an unknown device."""
    for row in rows:
        if not row.identified:
            say(f"not erased: {row.endpoint.plugin}:{clean(row.endpoint.address)} "
                f"({clean(row.endpoint.label) or row.endpoint.mode}) cannot say who it is: "
                f"{row.note}")
    return [(row.plugin, row.endpoint) for row in rows if row.identified]
