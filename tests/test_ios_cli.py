"""iPhones as an operator meets them: `phonewipe emulate` serves them (another process, its
usbmuxd published for this user), `phonewipe devices` lists them, `phonewipe erase` ends
each as its profile says with a signed certificate `cert verify` accepts, and a station
batch of iPhones and Android phones reconciles both."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from conftest import require_binary

pytest.importorskip("pymobiledevice3")

PHONEWIPE = [sys.executable, "-m", "phonewipe"]
ROOT = Path(__file__).resolve().parents[1]
ERASE_CODES = {"iphone": 10, "iphone-findmy": 11, "iphone-lies": 12}


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PHONEWIPE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """(environment, profile -> UDID) with `phonewipe emulate` serving the iPhones. `devices`
    and `erase` ask every plugin, adb too: on a private port (its server stopped afterwards),
    not the user's 5037, where adb would start a server left running after the test."""
    from phonewipe.demo import free_port
    from phonewipe.protocols.adb.server import AdbServer
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "COLUMNS": "200"}
    adb = AdbServer(port=free_port(), home=tmp_path / "adb-home")
    (tmp_path / ".config" / "phonewipe").mkdir(parents=True)
    (tmp_path / ".config" / "phonewipe" / "config.toml").write_text(f"[adb]\nport = {adb.port}\n")
    proc = subprocess.Popen([*PHONEWIPE, "emulate", "--json", "--workdir", str(tmp_path / "phones"),
                             *ERASE_CODES], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in ERASE_CODES]
        yield env, {line["profile"]: line["endpoints"]["ios"] for line in lines}
    finally:
        proc.terminate()
        proc.wait(15)
        adb.stop()


def test_devices_then_erase_each_iphone_with_a_certificate(served: tuple[dict[str, str], dict[str, str]],
                                                          tmp_path: Path) -> None:
    env, udids = served
    assert run(env, "keys", "init", "--organization", "Test Refurb").returncode == 0
    listed = run(env, "--ios-pair-timeout", "0", "devices", "--json")
    assert listed.returncode == 0, listed.stderr
    devices = {d["address"]: d for d in json.loads(listed.stdout) if d["plugin"] == "ios"}
    assert set(devices) == set(udids.values())
    assert devices[udids["iphone"]]["serial"] == "PWIPH0000"
    assert devices[udids["iphone"]]["model"] == "iPhone 13 Pro (iPhone14,2)"
    out = tmp_path / "out"
    for profile, code in ERASE_CODES.items():
        result = run(env, "--ios-pair-timeout", "0", "--ios-reboot-timeout", "20", "erase",
                     udids[profile], "--out", str(out), "--operator", "Ann Operator",
                     "--organization", "Test Refurb")
        assert result.returncode == code, (profile, result.stdout, result.stderr)
    pdfs = sorted((out / "certificates").glob("*.pdf"))
    assert len(pdfs) == 3
    cert = tmp_path / ".config" / "phonewipe" / "keys" / "signing-cert.pem"
    verified = run(env, "cert", "verify", "--trust", str(cert), *map(str, pdfs))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = run(env, "cert", "show", "--json", str(next(p for p in pdfs if "PWIPH" in p.name)))
    record = json.loads(shown.stdout)
    record = record.get("record", record)
    assert record["outcome"] == "ERASED_UNVERIFIED"
    assert record["sanitization"]["title"].startswith("cryptographic erase (Apple effaceable storage)")


def test_a_station_batch_of_iphones_and_android_phones(tmp_path: Path) -> None:
    require_binary("adb")
    out = tmp_path / "st"
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200"}
    profiles = ["iphone", "rooted", "iphone-lies", "iphone-untrusted", "frp-locked"]
    result = run(env, "station", "--out", str(out), *[a for p in profiles for a in ("--emulate", p)],
                 "--userdata-mib", "4", "--exit-when-idle", "--idle-seconds", "1", "--json-lines",
                 timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr  # each ended as expected
    [batch] = (out / "batches").iterdir()
    summary = json.loads((batch / "summary.json").read_text())
    outcomes = sorted((d["model"].split()[0], d["outcome"]) for d in summary["devices"])
    assert outcomes == sorted([("Apple", "ERASED_UNVERIFIED"), ("Apple", "FAILED"), ("Apple", "BLOCKED"),
                               ("Google", "ERASED_VERIFIED"), ("Google", "BLOCKED")]), outcomes
    assert len(list((batch / "certificates").glob("*.pdf"))) == len(profiles)
    assert (batch / "records.csv").read_text().count("iPhone 13 Pro") == 3
    assert run(env, "audit", "verify", str(out / "audit.sqlite")).returncode == 0


def test_the_demo_includes_an_iphone_that_ends_erased_not_verified(tmp_path: Path) -> None:
    from phonewipe.demo import DEFAULT_PROFILES
    assert "iphone" in DEFAULT_PROFILES  # the ios extra is installed here
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200"}
    result = run(env, "demo", "--out", str(tmp_path / "demo"), "--profile", "iphone", "--profile",
                 "iphone-lies")
    assert result.returncode == 0, result.stdout + result.stderr  # each ended as expected
    assert {"PWIPH0000", "PWIPL0000"} <= \
        {p.name.split("-")[0] for p in (tmp_path / "demo" / "certificates").glob("*.pdf")}


def test_only_a_usbmuxd_that_exists_is_asked(tmp_path: Path) -> None:
    """No usbmuxd socket, no listing (and pymobiledevice3 stays unloaded on an Android-only
    bench); a TCP address or a socket that exists is always asked."""
    import socket

    from phonewipe.protocols.apple_ios import _socket_missing
    assert _socket_missing(f"UNIX:{tmp_path / 'usbmuxd'}") and _socket_missing(str(tmp_path / "x"))
    assert not _socket_missing("127.0.0.1:27015")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "usbmuxd"))
        assert not _socket_missing(f"UNIX:{tmp_path / 'usbmuxd'}")
    assert _socket_missing(None) == (not Path("/var/run/usbmuxd").exists())
