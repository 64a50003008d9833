"""The whole tool as a user runs it: the `phonewipe` command, the real adb server, emulated
handsets on loopback, signed PDFs checked by poppler, the audit log as a SQLite file."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import clirun
import pytest
from conftest import require_binary
from forgery import swap_embedded_record

from phonewipe.erase.emulation.personal import planted_markers

PHONEWIPE = clirun.PHONEWIPE  # what the subprocess helpers start
MARKERS = planted_markers()


def phonewipe(*args: str, env: dict[str, str] | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess:
    return clirun.run(*args, env={"COLUMNS": "200", **(env or {})}, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Expected failures print exactly one line on stderr, and never a traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    return lines[0]


def surviving_markers(image: Path) -> list[bytes]:
    data = image.read_bytes()
    return [m for m in MARKERS if m in data]


# -- make demo ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("adb")
    out = tmp_path_factory.mktemp("demo")
    result = phonewipe("demo", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and "FAIL" in result.stdout and "NOT ERASED" in result.stdout
    return out


def certificates(out: Path) -> dict[str, Path]:
    return {p.name.split("-")[0]: p for p in (out / "certificates").glob("*.pdf")}


def shown(path: Path) -> dict:
    result = phonewipe("cert", "show", "--json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_demo_certifies_each_handset_with_the_honest_outcome(demo: Path) -> None:
    certs = certificates(demo)
    android = {"PWROOT0000", "PWUNRT0000", "PWFRPL0000", "PWLIE10000", "PWFBUN0000"}
    assert android <= set(certs)  # the other platforms' handsets: their own tests
    outcomes = {serial: shown(path)["outcome"] for serial, path in certs.items() if serial in android}
    assert outcomes == {"PWROOT0000": "ERASED_VERIFIED", "PWUNRT0000": "ERASED_VERIFIED",
                        "PWFRPL0000": "BLOCKED", "PWLIE10000": "FAILED",
                        "PWFBUN0000": "ERASED_VERIFIED"}
    rooted, unrooted = shown(certs["PWROOT0000"]), shown(certs["PWUNRT0000"])
    assert rooted["sanitization"]["method"] == "adb-raw-pattern"
    assert unrooted["sanitization"]["method"] == "adb-fill-reset"
    assert "remove the account" in shown(certs["PWFRPL0000"])["reason"]
    assert shown(certs["PWLIE10000"])["verification"]["failures_total"] > 0
    bootloader = shown(certs["PWFBUN0000"])  # erased in fastboot, sampled after following to adb
    assert bootloader["sanitization"]["method"] == "fastboot-raw-pattern"
    assert bootloader["verification"]["status"] == "passed"


def test_no_planted_marker_survives_in_an_erased_image(demo: Path) -> None:
    for serial in ("PWROOT0000", "PWUNRT0000", "PWFBUN0000"):
        image = demo / "handsets" / serial / "userdata.img"
        assert image.stat().st_size >= 16 * 1024 * 1024
        assert surviving_markers(image) == [], serial
    # the scan can fail: the blocked handset was never touched and still holds them all
    assert len(surviving_markers(demo / "handsets" / "PWFRPL0000" / "userdata.img")) == len(MARKERS)


def test_pdfsig_says_every_signature_is_valid(demo: Path) -> None:
    pdfsig = require_binary("pdfsig")
    for path in certificates(demo).values():
        out = subprocess.run([pdfsig, str(path)], capture_output=True, text=True).stdout
        assert "Signature Validation: Signature is Valid." in out, out


def test_pdftotext_shows_the_certificate_fields(demo: Path) -> None:
    pdftotext = require_binary("pdftotext")
    text = subprocess.run([pdftotext, "-layout", str(certificates(demo)["PWROOT0000"]), "-"],
                          capture_output=True, text=True).stdout
    imei = json.loads((demo / "handsets" / "PWROOT0000" / "state.json").read_text())["imeis"][0]
    for needle in ("Certificate of Sanitization", "PWROOT0000", "Pixel 6a", imei,
                   "PASS", "Clear", "Demo Operator", "NIST SP 800-88"):
        assert needle in text, needle


APPENDIX_G_LABELS = ("Name", "Organization", "Location", "Manufacturer", "Model",
                     "Serial number", "Media type", "Media source", "Classification",
                     "Data backup", "Category", "Technique", "Method", "Post-sanitization",
                     "Notes", "Verification", "Destination", "Validation")


def test_every_demo_certificate_carries_every_appendix_g_field(demo: Path) -> None:
    """#22 done-means: the demo's certificates, as an auditor reads them, fill each App. G
    field; the [media] values the demo sets are on every one, none left "not given"."""
    from phonewipe.demo import DEMO_MEDIA
    pdftotext = require_binary("pdftotext")
    for serial, path in certificates(demo).items():
        text = " ".join(subprocess.run([pdftotext, "-layout", str(path), "-"],
                                       capture_output=True, text=True).stdout.split())
        missing = [label for label in APPENDIX_G_LABELS if label not in text]
        if "Sanitization not performed" in text:  # a blocked phone: nothing to categorise
            missing = [m for m in missing if m not in ("Category", "Technique", "Method")]
        assert not missing, (serial, missing)
        for value in (DEMO_MEDIA.source, DEMO_MEDIA.classification, DEMO_MEDIA.backup):
            assert value in text, (serial, value)
        assert "Media source not given" not in text and "Data backup not given" not in text


def test_cert_verify_accepts_the_demo_certificates(demo: Path) -> None:
    trust = str(demo / "keys" / "signing-cert.pem")  # the demo's key, as its owner publishes it
    result = phonewipe("cert", "verify", "--trust", trust, *map(str, certificates(demo).values()))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(certificates(demo))
    assert result.stdout.count("valid") == count >= 5
    assert result.stdout.count("TRUSTED") == count and "NOT TRUSTED" not in result.stdout
    # nobody trusted: intact, but NOT TRUSTED (exit 9), each line naming the fingerprint
    result = phonewipe("cert", "verify", *map(str, certificates(demo).values()))
    assert result.returncode == 9, result.stdout + result.stderr
    assert result.stdout.count("signature intact, signer NOT TRUSTED (fingerprint ") == count


def test_cert_verify_rejects_one_changed_byte(demo: Path, tmp_path: Path) -> None:
    genuine = certificates(demo)["PWROOT0000"]
    data = bytearray(genuine.read_bytes())
    data[len(data) // 3] ^= 0x01
    forged = tmp_path / "one-byte.pdf"
    forged.write_bytes(bytes(data))
    result = phonewipe("cert", "verify", str(genuine), str(forged))
    assert result.returncode == 6
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "INVALID" in lines[1] and "one-byte.pdf" in lines[1]


def test_cert_verify_rejects_a_replaced_embedded_record(demo: Path, tmp_path: Path) -> None:
    genuine = certificates(demo)["PWLIE10000"]
    record = shown(genuine)
    record.update(outcome="ERASED_VERIFIED", reason="")
    forged = tmp_path / "replaced-json.pdf"
    forged.write_bytes(swap_embedded_record(genuine.read_bytes(),
                                            json.dumps(record, sort_keys=True).encode()))
    result = phonewipe("cert", "verify", str(forged))
    assert result.returncode == 6
    assert result.stdout.count("\n") == 1 and "INVALID" in result.stdout


def test_audit_verify_passes_then_names_an_edited_row(demo: Path, tmp_path: Path) -> None:
    result = phonewipe("audit", "verify", str(demo / "audit.sqlite"))
    assert result.returncode == 0 and "hash chain intact" in result.stdout
    copy = tmp_path / "audit.sqlite"
    with sqlite3.connect(demo / "audit.sqlite") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as db:
        row = db.execute("SELECT id FROM events WHERE event = 'record' "
                         "AND serial = 'PWLIE10000'").fetchone()[0]
        db.execute("UPDATE events SET payload = replace(payload, 'FAILED', 'ERASED_VERIFIED') "
                   "WHERE id = ?", (row,))
    result = phonewipe("audit", "verify", str(copy))
    assert result.returncode == 7
    assert f"row {row}" in one_error_line(result)


# -- phonewipe erase against `phonewipe emulate` through a private adb server ---------------
class Bench:
    """`phonewipe emulate` running in the background, and the environment to reach it."""

    def __init__(self, tmp: Path, profiles: list[str]) -> None:
        self.adb = require_binary("adb")
        self.port = _free_port()
        self.env = {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
                    "XDG_CACHE_HOME": str(tmp / "home" / ".cache")}
        (tmp / "home" / ".config" / "phonewipe").mkdir(parents=True)
        # a real erasure names who did it and for whom (the README's config)
        (tmp / "home" / ".config" / "phonewipe" / "config.toml").write_text(
            '[operator]\nname = "Test Operator"\norganization = "Test Org"\n')
        self.keys = tmp / "keys"
        assert phonewipe("keys", "init", "--dir", str(self.keys), "--organization", "Test Org",
                         env=self.env).returncode == 0
        self.proc = subprocess.Popen(
            [*PHONEWIPE, "--adb-port", str(self.port), "emulate", *profiles, "--json",
             "--workdir", str(tmp / "handsets")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **self.env})
        self.handsets = {}
        for _ in profiles:
            line = self.proc.stdout.readline()
            assert line, self.proc.stderr.read()
            info = json.loads(line)
            self.handsets[info["profile"]] = info

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return phonewipe("--adb-port", str(self.port), *args, env=self.env)

    def erase(self, profile: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
        return self.run("erase", self.handsets[profile]["endpoints"]["adb"], "--out", str(out),
                        "--keys", str(self.keys), "--operator", "Test Operator", *extra)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run([self.adb, "-P", str(self.port), "kill-server"], capture_output=True,
                       env={**os.environ, **self.env}, timeout=15)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    b = Bench(tmp_path_factory.mktemp("bench"), ["rooted", "unplug-40", "partial-50", "android-6", "slow"])
    try:
        yield b
    finally:
        b.close()


def test_devices_lists_the_emulated_handsets(bench: Bench) -> None:
    result = bench.run("devices", "--json")
    assert result.returncode == 0, result.stderr
    addresses = {d["address"] for d in json.loads(result.stdout)}
    assert {h["endpoints"]["adb"] for h in bench.handsets.values()} <= addresses


def test_unknown_serial_is_one_line_and_exit_3(bench: Bench, tmp_path: Path) -> None:
    result = bench.run("erase", "NO-SUCH-PHONE", "--out", str(tmp_path), "--keys", str(bench.keys))
    assert result.returncode == 3
    assert "NO-SUCH-PHONE" in one_error_line(result)


def test_missing_key_stops_before_touching_the_phone(bench: Bench, tmp_path: Path) -> None:
    result = bench.erase("rooted", tmp_path / "out", "--keys", str(tmp_path / "no-keys"))
    assert result.returncode == 5
    assert "keys init" in one_error_line(result)
    image = Path(bench.handsets["rooted"]["storage"]) / "userdata.img"
    assert len(surviving_markers(image)) == len(MARKERS)  # nothing was erased


def test_unwritable_output_directory_is_exit_8(bench: Bench, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = bench.erase("rooted", blocker / "out")
    assert result.returncode == 8
    assert "--out" in one_error_line(result)


def test_corrupt_config_is_exit_2(bench: Bench, tmp_path: Path) -> None:
    config = tmp_path / "phonewipe.toml"
    config.write_text("[operator\nname = 'x'\n")
    result = phonewipe("--config", str(config), "devices")
    assert result.returncode == 2
    assert str(config) in one_error_line(result)


@pytest.mark.parametrize("profile, words", [("unplug-40", "disconnected"), ("partial-50", "samples")])
def test_cable_pulled_or_partial_erase_ends_failed_with_a_certificate(
        bench: Bench, tmp_path: Path, profile: str, words: str) -> None:
    out = tmp_path / "out"
    result = bench.erase(profile, out, "--json")
    assert result.returncode == 12, result.stdout + result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["outcome"] == "FAILED" and words in entry["reason"], entry["reason"]
    assert "destruction" in entry["reason"]
    assert Path(entry["certificate"]).is_file()
    assert phonewipe("cert", "verify", "--trust", str(bench.keys / "signing-cert.pem"),
                     entry["certificate"]).returncode == 0
    audit = phonewipe("audit", "verify", str(out / "audit.sqlite"))
    assert audit.returncode == 0, audit.stderr
    with sqlite3.connect(out / "audit.sqlite") as db:
        events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
    assert events[:4] == ["detected", "identified", "preflight", "erasing"]
    assert events[-2:] == ["record", "certified"]


def test_a_phone_without_shell_v2_is_blocked_by_name_with_what_to_do(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench.erase("android-6", out, "--json")
    assert result.returncode == 11, result.stdout + result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["outcome"] == "BLOCKED"
    assert "Android 6.0.1" in entry["reason"] and "bootloader" in entry["reason"], entry["reason"]
    record = shown(Path(entry["certificate"]))
    assert record["device"]["model"] == "Nexus 5X"  # identified through the old shell
    image = Path(bench.handsets["android-6"]["storage"]) / "userdata.img"
    assert len(surviving_markers(image)) == len(MARKERS)  # blocked means untouched


def test_rooted_handset_erased_through_the_cli_passes(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench.erase("rooted", out, "--method", "adb-raw-zeros", "--verify", "nist")
    assert result.returncode == 0, result.stdout + result.stderr
    [pdf] = (out / "certificates").glob("*.pdf")
    record = shown(pdf)
    assert record["outcome"] == "ERASED_VERIFIED"
    assert record["sanitization"]["method"] == "adb-raw-zeros"
    assert record["verification"]["mode"] == "nist"
    assert record["operator"]["name"] == "Test Operator"
    image = Path(bench.handsets["rooted"]["storage"]) / "userdata.img"
    assert surviving_markers(image) == []


def _image_digest(bench: Bench, profile: str) -> str:
    import hashlib
    image = Path(bench.handsets[profile]["storage"]) / "userdata.img"
    return hashlib.sha256(image.read_bytes()).hexdigest()


@pytest.mark.parametrize("option", [("--confidence", "1.5"), ("--residual", "0")])
def test_impossible_verification_settings_stop_before_the_phone_is_touched(
        bench: Bench, tmp_path: Path, option: tuple[str, str]) -> None:
    before = _image_digest(bench, "partial-50")
    result = bench.erase("partial-50", tmp_path / "out", *option)
    assert result.returncode == 2, result.stdout + result.stderr
    assert one_error_line(result)
    assert _image_digest(bench, "partial-50") == before
    assert not (tmp_path / "out" / "certificates").exists() or \
        not list((tmp_path / "out" / "certificates").iterdir())


def test_one_phone_named_twice_gets_one_job(bench: Bench, tmp_path: Path) -> None:
    handset = bench.handsets["android-6"]  # still online: earlier tests reboot the others
    result = bench.run("erase", handset["endpoints"]["adb"], handset["serial"], "--out",
                       str(tmp_path / "out"), "--keys", str(bench.keys), "--json")
    assert result.returncode == 11, result.stdout + result.stderr
    assert len(json.loads(result.stdout)) == 1


def test_two_phones_reporting_one_serial_are_not_guessed_between(bench: Bench, tmp_path: Path) -> None:
    serial = bench.handsets["android-6"]["serial"]
    twin = subprocess.Popen([*PHONEWIPE, "--adb-port", str(bench.port), "emulate", "android-6", "--json",
                             "--workdir", str(tmp_path / "twin")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **bench.env})
    try:
        info = json.loads(twin.stdout.readline())
        assert info["serial"] == serial  # serials are counted per emulator process
        for _ in range(50):  # until the adb server has it online
            listed = json.loads(bench.run("devices", "--json").stdout)
            if any(d["address"] == info["endpoints"]["adb"] and d["state"] == "device" for d in listed):
                break
            time.sleep(0.2)
        result = bench.run("erase", serial, "--out", str(tmp_path / "out"), "--keys", str(bench.keys))
        assert result.returncode == 2, result.stdout + result.stderr
        line = one_error_line(result)
        assert f"2 devices report serial '{serial}'" in line and info["endpoints"]["adb"] in line
        assert not (tmp_path / "out" / "audit.sqlite").exists()  # no job was started
    finally:
        twin.terminate()
        twin.wait(timeout=15)
        subprocess.run([bench.adb, "-P", str(bench.port), "disconnect", info["endpoints"]["adb"]],
                       capture_output=True, env={**os.environ, **bench.env}, timeout=15)


def wait_for_event(audit: Path, event: str, timeout: float = 20.0) -> None:
    """Until the job's audit log (being created by another process) holds ``event``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as db:
                if db.execute("SELECT 1 FROM events WHERE event = ?", (event,)).fetchone():
                    return
        except sqlite3.OperationalError:
            pass  # not created yet, or its table not yet made
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} event in {audit} within {timeout:.0f} s")


def test_ctrl_c_finishes_then_a_second_aborts_with_a_failed_certificate(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([*PHONEWIPE, "--adb-port", str(bench.port), "erase",
                             bench.handsets["slow"]["endpoints"]["adb"], "--out", str(out),
                             "--keys", str(bench.keys), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **bench.env})
    try:
        wait_for_event(out / "audit.sqlite", "erasing")  # 4 MiB/s: 8 s for 32 MiB
        proc.send_signal(signal.SIGINT)  # first: finish the running jobs
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the answer to the first Ctrl-C: still running
        assert "finishing the running jobs" in first and proc.poll() is None, first
        proc.send_signal(signal.SIGINT)  # second: abort them
        stdout, stderr = proc.communicate(timeout=60)
        stderr = first + stderr
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "finishing the running jobs" in stderr and "aborting the running jobs" in stderr
    [entry] = json.loads(stdout)
    assert entry["outcome"] == "FAILED" and "interrupted by the operator" in entry["reason"], entry
    assert "MiB sent" in entry["reason"]  # how far it got
    assert phonewipe("cert", "verify", "--trust", str(bench.keys / "signing-cert.pem"),
                     entry["certificate"]).returncode == 0
    assert phonewipe("audit", "verify", str(out / "audit.sqlite")).returncode == 0
