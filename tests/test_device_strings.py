"""Device strings are data: what a phone says about itself (serial, model, manufacturer) is
cleaned once in the core (erase/strings.py) before it is shown or stored, and every display
escapes markup. Before this, a serial like ``CRASH[/]`` crashed `erase`, `station` and
`cert verify` with a traceback, cursor codes could paint "PASS" over a FAIL line, markup
rendered fake bold text or links, and non-UTF-8 was replaced lossily."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_binary
from rich.console import Console

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Endpoint, Finding, Identity, Outcome, Severity
from phonewipe.erase.plugin import Plugin, Session
from phonewipe.erase.strings import clean, clean_identity, for_terminal

PHONEWIPE = [sys.executable, "-m", "phonewipe"]
ROOT = Path(__file__).resolve().parents[1]
HOSTILE_PROFILE = ROOT / "fixtures" / "profiles" / "hostile-strings.toml"
RAW_SERIAL = "CRASH[/]\x1b[1A\x1b[2KPASS\u202e\x00\udcff"  # ESC, bidi, NUL, a non-UTF-8 byte
SHOWN_SERIAL = "CRASH[/]\\x1b[1A\\x1b[2KPASS\\u202e\\x00\\xff"
HOSTILE_MODEL = "[bold]PASS[/bold] [link=https://evil.example]Pixel[/link]\u202eSSAP"
HOSTILE_MAKER = "=HYPERLINK(\"https://evil.example\",\"Evil\")\x07\u0085Corp"
DANGEROUS = ("\x1b", "\u202e", "\x00", "\x07", "\x85", "\x9b")


def phonewipe(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PHONEWIPE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250", **(env or {})}, cwd=cwd,
                          errors="surrogateescape")


def assert_no_raw_controls(text: str) -> None:
    assert "Traceback" not in text, text
    for ch in DANGEROUS:
        assert ch not in text, (ch, text)


# -- the one place that cleans --------------------------------------------------------------
@pytest.mark.parametrize("raw, shown", [
    ("PW\x1b[2K\x1b[1APASS", "PW\\x1b[2K\\x1b[1APASS"),  # cursor movement
    ("ab\u202egnp.exe", "ab\\u202egnp.exe"),  # bidi override
    ("a\x00b", "a\\x00b"), ("a\nb\r", "a\\x0ab\\x0d"), ("\x9bc", "\\x9bc"),  # NUL, newline, C1
    (b"\xff\xfeSER", "\\xff\\xfeSER"), ("SER\udcff", "SER\\xff"),  # not UTF-8: kept as escapes
    ("CRASH[/]", "CRASH[/]"), ("Łódź Pixel", "Łódź Pixel"), (None, None),
])
def test_clean_escapes_controls_bidi_and_bytes_visibly(raw: Any, shown: Any) -> None:
    assert clean(raw) == shown
    assert clean(shown) == shown  # idempotent


def test_overlong_values_are_cut_with_a_note() -> None:
    cleaned = clean("A" * 5000)
    assert cleaned.startswith("A" * 256) and cleaned.endswith("... (cut: 5000 characters)")
    assert clean(cleaned) == cleaned


def test_for_terminal_escapes_markup_and_controls() -> None:
    text = f"[green]valid[/] {for_terminal('CRASH[/]' + HOSTILE_MODEL + chr(27))}"
    plain = Console(file=io.StringIO(), width=200, color_system=None, highlight=False)
    plain.print(text)
    assert plain.file.getvalue() == "valid CRASH[/]" + clean(HOSTILE_MODEL) + "\\x1b\n"
    styled = Console(file=io.StringIO(), width=200, force_terminal=True, highlight=False)
    styled.print(text)
    assert "\x1b]8;" not in styled.file.getvalue()  # no hyperlink was emitted
    assert "\x1b[1m" not in styled.file.getvalue()  # nor bold


def test_clean_identity_keeps_the_original_bytes_as_evidence() -> None:
    identity = Identity(platform="android", manufacturer=HOSTILE_MAKER, model=HOSTILE_MODEL,
                        serial=RAW_SERIAL, imeis=("35693803564380\x1b9",))
    cleaned, evidence = clean_identity(identity)
    assert cleaned.serial == SHOWN_SERIAL and "\\x07\\x85Corp" in cleaned.manufacturer
    assert cleaned.imeis == ("35693803564380\\x1b9",)
    original = {k: base64.b64decode(v) for k, v in evidence["original"].items()}
    assert original["serial"] == RAW_SERIAL.encode("utf-8", "surrogateescape")[:-1] + b"\xff" \
        or original["serial"].endswith(b"\xff")
    assert original["model"] == HOSTILE_MODEL.encode()
    assert clean_identity(cleaned) == (cleaned, {})  # clean text stays as it is


# -- through the core job, the certificate and `cert verify` ---------------------------------
class HostileSession(Session):
    """A phone whose identity is hostile, and which is locked (BLOCKED, certified)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._identity: Identity | None = None

    def identify(self) -> Identity:
        self._identity = Identity(platform="android", manufacturer=HOSTILE_MAKER,
                                  model=HOSTILE_MODEL, serial=RAW_SERIAL)
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def preflight(self) -> list[Finding]:
        return [Finding(Severity.BLOCKER, "frp", "a Google account is signed in: remove it")]

    def methods(self) -> list:
        return []

    def erase(self, method, context, progress):  # pragma: no cover - blocked first
        raise AssertionError("never erased")

    def reader(self):
        return None

    def transcript(self) -> dict[str, Any]:
        return {"protocol": "fake", "commands": 1}

    def close(self) -> None:
        pass

    def __enter__(self) -> "HostileSession":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class HostilePlugin(Plugin):
    name = "fake"

    def discover(self) -> list[Endpoint]:
        return [Endpoint("fake", "adb", "fake:1", label=RAW_SERIAL)]

    def open(self, endpoint: Endpoint) -> Session:
        return HostileSession(endpoint)


@pytest.fixture(scope="module")
def hostile_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    keys = tmp / "keys"
    init_keys(keys, "ACME Refurb", "ACME Refurb erasure signing")
    signer = CertificateSigner(keys)
    plugin = HostilePlugin()
    with AuditLog(tmp / "audit.sqlite", signer=signer) as audit:
        record = run_job(plugin, plugin.discover()[0], JobSettings(seed=1), audit)
    return record, signer.write_certificate(record, tmp / "certificates"), keys, tmp / "audit.sqlite"


def test_the_job_records_clean_strings_and_the_original_bytes(hostile_certificate) -> None:
    import sqlite3
    record, _, _, audit = hostile_certificate
    assert record.outcome is Outcome.BLOCKED
    assert record.device.serial == SHOWN_SERIAL and record.device.model == clean(HOSTILE_MODEL)
    raw = base64.b64decode(record.evidence["device_strings"]["original"]["serial"])
    assert raw == b"CRASH[/]\x1b[1A\x1b[2KPASS\xe2\x80\xae\x00\xff"  # lossless, byte for byte
    assert record.evidence["audit"]["row"] >= 3 and len(record.evidence["audit"]["head"]) == 64
    with sqlite3.connect(audit) as db:
        serials = {s for (s,) in db.execute("SELECT serial FROM events")}
        payloads = "".join(p for (p,) in db.execute("SELECT payload FROM events WHERE event = 'identified'"))
    assert serials == {SHOWN_SERIAL}
    assert RAW_SERIAL not in payloads and json.dumps(SHOWN_SERIAL)[1:-1] in payloads


def test_cert_verify_and_show_print_hostile_strings_escaped(hostile_certificate) -> None:
    _, pdf, keys, _ = hostile_certificate
    result = phonewipe("cert", "verify", "--trust", str(keys / "signing-cert.pem"), str(pdf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    assert "CRASH[/]" in result.stdout and "\\x1b[1A" in result.stdout
    shown = phonewipe("cert", "show", str(pdf))
    assert shown.returncode == 0, shown.stderr
    assert_no_raw_controls(shown.stdout + shown.stderr)
    assert "[bold]PASS[/bold]" in shown.stdout and "\\u202e" in shown.stdout


def test_one_hostile_certificate_never_hides_the_others(hostile_certificate, tmp_path: Path) -> None:
    _, pdf, keys, _ = hostile_certificate
    broken = tmp_path / "CRASH[-]\x1b[2K.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"[/]" * 100)
    result = phonewipe("cert", "verify", "--trust", str(keys / "signing-cert.pem"), str(broken),
                       str(pdf))
    assert result.returncode == 6
    assert_no_raw_controls(result.stdout + result.stderr)
    assert str(pdf) in result.stdout  # the valid one after it is still reported


def test_the_pdf_prints_the_escaped_strings(hostile_certificate) -> None:
    pdftotext = require_binary("pdftotext")
    _, pdf, _, _ = hostile_certificate
    text = subprocess.run([pdftotext, "-layout", str(pdf), "-"], capture_output=True,
                          text=True, errors="surrogateescape").stdout
    assert "\\x1b[1A" in text.replace("\n", "") or "\\x1b" in text
    assert "[bold]PASS[/bold]" in text
    assert "\x1b" not in text and "\u202e" not in text and "\x00" not in text


# -- station displays: the live table and JSON lines -----------------------------------------
def test_the_live_table_shows_hostile_rows_as_text() -> None:
    import threading
    import time
    from types import SimpleNamespace

    from phonewipe.erase.station.station import DeviceRow
    from phonewipe.erase.station.view import LiveTable
    row = DeviceRow(key="k", port="usb:1-1\x1b[2K", plugin="adb", mode="adb", model=HOSTILE_MODEL,
                    serial=RAW_SERIAL, imei="35693803564380\x1b9", asset_tag="[red]IT-1",
                    state="erasing", busy=True, done=1, total=2)
    station = SimpleNamespace(options=SimpleNamespace(batch_id="B1"), lock=threading.Lock(),
                              rows={"k": row}, started=time.monotonic(), abort=threading.Event(),
                              draining=False, discovery_errors=["adb: \x1b[31mboom[/]"])
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(LiveTable(station))  # type: ignore[arg-type]
    out = console.file.getvalue()
    assert_no_raw_controls(out)
    assert "CRASH[/]" in out and "[bold]PASS[/bold]" in out and "[red]IT-1" in out


def test_json_lines_escape_what_the_station_learnt_raw() -> None:
    from phonewipe.erase.station.view import JsonLines
    stream = io.StringIO()
    JsonLines(stream)({"event": "queued", "serial": RAW_SERIAL, "nested": [{"model": HOSTILE_MODEL}]})
    line = stream.getvalue()
    assert_no_raw_controls(line)
    event = json.loads(line)
    assert event["serial"] == clean(RAW_SERIAL) and event["nested"][0]["model"] == clean(HOSTILE_MODEL)


# -- CSV: formula prefixes neutralised ------------------------------------------------------
def test_records_csv_neutralises_formula_prefixes(hostile_certificate) -> None:
    from dataclasses import replace

    from phonewipe.reports import records_csv
    record, _, _, _ = hostile_certificate
    cells = ["=HYPERLINK(\"https://evil.example\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    records = [replace(record, device=replace(record.device, model=c), asset_tag=c) for c in cells]
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    for row, c in zip(rows, cells, strict=True):
        assert row["device.model"] == "'" + c and row["asset_tag"] == "'" + c
    for row in rows:
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values()), row


# -- end to end: the adb emulator, `erase`, `station --json-lines`, records.csv, summary PDF -----
def test_erase_and_cert_verify_of_a_hostile_phone_through_adb(tmp_path: Path) -> None:
    from test_end_to_end import Bench
    bench = Bench(tmp_path, [str(HOSTILE_PROFILE)])
    try:
        out = tmp_path / "out"
        result = bench.run("erase", bench.handsets["hostile-strings"]["endpoints"]["adb"],
                           "--out", str(out), "--keys", str(bench.keys), "--operator", "T")
    finally:
        bench.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    assert "CRASH[/]" in result.stdout and "PASS" in result.stdout
    [pdf] = (out / "certificates").glob("*.pdf")
    verified = phonewipe("cert", "verify", "--trust", str(bench.keys / "signing-cert.pem"), str(pdf))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert_no_raw_controls(verified.stdout)
    assert "\\x1b[1A\\x1b[2KPASS0000" in verified.stdout
    audit = phonewipe("audit", "verify", str(out / "audit.sqlite"))
    assert audit.returncode == 0, audit.stderr  # checkpointed at the end of the run


def test_station_json_lines_csv_and_summary_of_a_hostile_phone(tmp_path: Path) -> None:
    require_binary("adb")
    out = tmp_path / "st"
    result = phonewipe("station", "--out", str(out), "--emulate", str(HOSTILE_PROFILE),
                       "--emulate", "lying-1pct", "--userdata-mib", "4", "--exit-when-idle",
                       "--idle-seconds", "1", "--json-lines", env={"HOME": str(tmp_path)},
                       cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert_no_raw_controls(result.stdout + result.stderr)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    serials = {e.get("serial") for e in events if e.get("serial", "").startswith("CRASH")}
    assert serials == {"CRASH[/]\\x1b[1A\\x1b[2KPASS0000"}  # the probe's and the job's agree
    [batch] = (out / "batches").iterdir()
    rows = list(csv.DictReader(io.StringIO((batch / "records.csv").read_text())))
    hostile = next(r for r in rows if r["device.serial"].startswith("CRASH"))
    assert hostile["device.manufacturer"].startswith("'=HYPERLINK(")
    assert hostile["outcome"] == "ERASED_VERIFIED"
    text = subprocess.run([require_binary("pdftotext"), "-layout", str(batch / "summary.pdf"), "-"],
                          capture_output=True, text=True).stdout
    assert "CRASH[/]" in text and "\x1b" not in text
    summary = json.loads((batch / "summary.json").read_text())
    head = summary["audit"]["head"]
    audit = phonewipe("audit", "verify", str(out / "audit.sqlite"), "--expect-head",
                      f"{head}:{summary['audit']['rows']}")
    assert audit.returncode == 0, audit.stderr
