"""`phonewipe emulate`: start emulated handsets, connect them to the adb server, run until
interrupted, and leave nothing behind: on Ctrl-C, SIGTERM or SIGHUP the handsets stop, are
disconnected from the (user's) adb server, and their temporary images are removed."""
from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import click

from phonewipe.erase.plugin import Plugin


def disconnect(plugins: dict[str, Plugin], handsets: list[Any]) -> list[str]:
    """`adb disconnect` each handset's adb endpoint, so the adb server does not keep listing
    it offline. Returns the addresses disconnected."""
    done = []
    for plugin in plugins.values():
        server = getattr(plugin, "server", None)
        if server is None or "adb" not in plugin.modes or not server.running():
            continue
        client = server.client()
        for handset in handsets:
            address = handset.endpoints.get("adb")
            if address:
                try:
                    client.disconnect(address, raise_error=False)
                    done.append(address)
                except Exception:  # noqa: BLE001 - cleanup: the server may be gone already
                    continue
    return done


def run_emulate(plugins: dict[str, Plugin], profiles: list[str], as_json: bool,
                workdir: Path | None, userdata_mib: int | None) -> None:
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets

    temporary = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="phonewipe-emulate-"))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGHUP)}
    handsets: list[Any] = []
    try:
        handsets = start_handsets(profiles, workdir, plugins,
                                  userdata_bytes=userdata_mib * 1024 * 1024 if userdata_mib else None)
        for h in handsets:
            if as_json:
                click.echo(json.dumps({"serial": h.serial, "profile": h.profile.name,
                                       "endpoints": h.endpoints, "storage": str(h.storage.directory)}))
            else:
                eps = " ".join(f"{k}={v}" for k, v in h.endpoints.items())
                click.echo(f"{h.serial}  {h.profile.name:<14} {eps}  ({h.profile.description})")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        try:
            stop_handsets(handsets)
            disconnect(plugins, handsets)
            if temporary:
                shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
