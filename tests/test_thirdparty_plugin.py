"""A third party's plugin, end to end, with no change to phonewipe: tests/thirdparty/acme_phone
is an ordinary package (its own pyproject.toml, entry point, options, modes and wire-level
emulator). It is made importable without installing it into the venv: its source directory
and a generated ``acme_phone-0.1.dist-info`` (what pip would write: METADATA and the
entry points from its pyproject.toml) go on ``sys.path`` / ``PYTHONPATH``. The real CLI then
erases, reads back and certifies an emulated ACME handset over loopback TCP."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from phonewipe.erase.emulation.fleet import EmulatedHandset, start_handsets, stop_handsets
from phonewipe.erase.plugin import Registry
from phonewipe.erase.ports import free_port

ACME = Path(__file__).parent / "thirdparty" / "acme_phone"
PROFILES = ACME / "src" / "acme_phone" / "profiles"
PHONEWIPE = [sys.executable, "-m", "phonewipe"]


def acme_dist(root: Path) -> Path:
    """What `pip install` would leave in site-packages for acme-phone, minus the code (which
    stays in its source tree): the distribution's metadata and its entry points, taken from
    the package's own pyproject.toml."""
    project = tomllib.loads((ACME / "pyproject.toml").read_text())["project"]
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("acme")
    paths = [str(ACME / "src"), str(acme_dist(tmp / "site"))]
    sys.path[:0] = paths  # this process: to start the plugin's emulator
    (tmp / "home").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HOME": str(tmp / "home")}
    # phonewipe asks every installed plugin for devices, adb included: give it a private
    # adb server, stopped below
    adb_port = free_port()
    handsets: list[EmulatedHandset] = []
    try:
        registry = Registry.load()
        assert "acme" in registry.classes, registry.failures
        plugins = registry.plugins(only=["acme"])
        handsets = start_handsets([str(PROFILES / "acme.toml"), str(PROFILES / "acme-lying.toml")],
                                  tmp / "handsets", plugins)
        keys = tmp / "keys"
        done = subprocess.run([*PHONEWIPE, "keys", "init", "--dir", str(keys),
                               "--organization", "ACME Refurb"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        yield {"tmp": tmp, "env": env, "keys": keys, "adb_port": adb_port,
               "handsets": {h.profile.name: h for h in handsets}}
    finally:
        stop_handsets(handsets)
        for path in paths:
            sys.path.remove(path)
        from phonewipe.protocols.adb.server import AdbServer
        AdbServer(port=adb_port, home=tmp / "home").stop()


def cli(bench: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PHONEWIPE, *args], capture_output=True, text=True, env=bench["env"],
                          timeout=180, cwd=bench["tmp"])


def erase(bench: dict[str, Any], profile: str) -> tuple[subprocess.CompletedProcess, Path]:
    handset = bench["handsets"][profile]
    port = handset.endpoints["acme"].rsplit(":", 1)[1]
    out = bench["tmp"] / f"out-{profile}"
    result = cli(bench, "--acme-port", port, "--adb-port", str(bench["adb_port"]),
                 "erase", handset.serial, "--out", str(out), "--keys", str(bench["keys"]),
                 "--operator", "Test Operator", "--organization", "ACME Refurb",
                 "--verify", "nist", "--json")
    return result, out


def audit_events(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as con:
        return list(con.execute("SELECT serial, event, payload FROM events ORDER BY id"))


def test_the_plugin_declares_itself_through_its_own_entry_point(bench: dict[str, Any]) -> None:
    registry = Registry.load()
    acme = registry.classes["acme"]
    assert acme.__module__ == "acme_phone" and acme.modes == ("acme",) and acme.reads_back
    flags = {spec.flag(name) for name, spec in registry.option_specs()}
    assert {"--acme-port", "--acme-host", "--acme-timeout"} <= flags
    help_text = cli(bench, "--help").stdout
    assert "--acme-port" in help_text and "[acme] port" in help_text


def test_an_acme_handset_is_erased_read_back_and_certified(bench: dict[str, Any]) -> None:
    result, out = erase(bench, "acme")
    assert result.returncode == 0, result.stdout + result.stderr
    [summary] = json.loads(result.stdout)
    assert summary["outcome"] == "ERASED_VERIFIED" and summary["result"] == "PASS"
    cert = Path(summary["certificate"])
    checked = cli(bench, "cert", "verify", "--trust", str(bench["keys"] / "signing-cert.pem"),
                  str(cert))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    record = json.loads(cli(bench, "cert", "show", str(cert), "--json").stdout)
    assert record["tool"]["plugin"] == "acme" and record["endpoint"]["plugin"] == "acme"
    assert record["device"]["manufacturer"] == "ACME"
    assert record["sanitization"]["method"] == "acme-pattern"
    medium = record["evidence"]["readback"]["medium"]
    assert medium.startswith("FLUSHCACHE")
    transcript = record["evidence"]["transcript"]
    assert transcript["protocol"] == "acme" and transcript["commands"]["WRITE"] == 16
    assert transcript["commands"]["FLUSHCACHE"] >= 1 and transcript["commands"]["READ"] > 0

    assert cli(bench, "audit", "verify", str(out / "audit.sqlite")).returncode == 0
    events = [e for serial, e, _ in audit_events(out / "audit.sqlite")
              if serial == summary["serial"]]
    for step in ("detected", "identified", "preflight", "erasing", "erased", "verifying",
                 "verified", "finishing", "finished", "post-state", "record"):
        assert step in events, (step, events)


def test_a_lying_acme_handset_fails_through_the_same_plugin(bench: dict[str, Any]) -> None:
    result, out = erase(bench, "acme-lying")
    [summary] = json.loads(result.stdout)
    assert summary["outcome"] == "FAILED" and result.returncode != 0, summary
    assert "verification failed" in summary["reason"]
    checked = cli(bench, "cert", "verify", "--trust", str(bench["keys"] / "signing-cert.pem"),
                  summary["certificate"])
    assert checked.returncode == 0, checked.stdout + checked.stderr  # a signed FAIL
    assert cli(bench, "audit", "verify", str(out / "audit.sqlite")).returncode == 0
