"""Edges (#18 item 6): every exit code in the README's table is the one the tool returns (a
walk of the table, through the real command line and emulated phones), `--json` prints JSON
also on error, global options work after the subcommand, a job that cannot write its
certificate says the phone must be erased again (and the next run does), a full disk is one
line with nothing left running, and `emulate` leaves nothing behind."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import require_binary
from test_end_to_end import PHONEWIPE, Bench, phonewipe

from phonewipe.erase.ports import free_port

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]


def readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes: dict[int, str] = {}
    for line in section.splitlines():
        m = re.match(r"\| ([\d, ]+) \| (.*) \|$", line)
        if m:
            for code in m.group(1).split(","):
                codes[int(code)] = m.group(2)
    return codes


# codes the suite proves elsewhere, through the same command line (file: what it asserts)
ELSEWHERE = {
    14: "tests/test_audit_trust.py", 15: "tests/test_audit_trust.py",
    16: "tests/test_audit_trust.py", 17: "tests/test_audit_trust.py",
    18: "tests/test_report_cross_check.py", 130: "tests/test_end_to_end.py, tests/test_station.py",
}


# codes this module walks: each test below runs the commands that must return them
WALKED = {0: "erase (PASS), cert verify --trust, audit verify, keys import",
          1: "station --emulate, a handset not ending as its profile expects",
          2: "usage: no phone named, an unknown option, a missing file, a missing --config",
          3: "erase of a serial not connected",
          4: "verify --plan-from on the certified phone back on USB debugging without root",
          5: "no signing key; keys import with the wrong password",
          6: "cert verify of a missing or tampered file",
          7: "audit verify of an edited row",
          8: "erase --out that cannot be written; a certificate that cannot be written; a full disk",
          9: "cert verify without --trust",
          10: "erase of a phone without read-back; attest, every step confirmed",
          11: "erase of an FRP-locked phone",
          12: "erase of a lying phone; a station with a FAIL phone; attest, a step answered no"}


class Walk:
    """Runs a command and checks it returns the README's code for what it is."""

    def expect(self, code: int, result: subprocess.CompletedProcess,
               what: str) -> subprocess.CompletedProcess:
        assert code in WALKED
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert result.returncode == code, f"{what}: exit {result.returncode}, the README says " \
                                          f"{code}\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def walk() -> Walk:
    return Walk()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    b = Bench(tmp_path_factory.mktemp("codes"), ["rooted", "frp-locked", "lying-1pct", "cache-locked"])
    try:
        yield b
    finally:
        b.close()


def json_error(result: subprocess.CompletedProcess) -> dict[str, Any]:
    """`--json` on error: one JSON object on stdout, and the one line on stderr too."""
    error = json.loads(result.stdout)
    assert set(error) == {"error", "advice", "exit_code"} and error["exit_code"] == result.returncode
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and error["error"] in " ".join(lines)
    return error


# -- erase: 0, 10, 11, 12, 3, 8, 5, 2 -------------------------------------------------------
def test_erase_codes(bench: Bench, walk: Walk, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rooted = bench.handsets["rooted"]["endpoints"]["adb"]
    # the self-checks stop before the phone is touched: no key (5), an --out that cannot be
    # written (8); the same phone is then erased for real
    walk.expect(5, bench.run("erase", rooted, "--out", str(out), "--keys",
                             str(tmp_path / "no-keys")), "erase with no signing key")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    walk.expect(8, bench.run("erase", rooted, "--out", str(blocker / "out"), "--keys",
                             str(bench.keys)), "erase --out under a regular file")
    ends = {"rooted": 0, "cache-locked": 10, "frp-locked": 11, "lying-1pct": 12}
    for profile, code in ends.items():
        address = bench.handsets[profile]["endpoints"]["adb"]
        # the global option after the subcommand, as a user types it
        result = phonewipe("erase", address, "--out", str(out), "--keys", str(bench.keys),
                           "--json", "--adb-port", str(bench.port), env=bench.env)
        walk.expect(code, result, f"erase {profile}")
        [entry] = json.loads(result.stdout)
        assert entry["certificate"] and Path(entry["certificate"]).is_file()
    walk.expect(3, bench.run("erase", "NOSUCHPHONE", "--out", str(out), "--keys",
                             str(bench.keys)), "erase of a serial not connected")
    as_json = walk.expect(3, phonewipe("erase", "NOSUCHPHONE", "--out", str(out), "--keys",
                                       str(bench.keys), "--adb-port", str(bench.port), "--json",
                                       env=bench.env), "erase --json of a serial not connected")
    assert "NOSUCHPHONE" in json_error(as_json)["error"]
    walk.expect(2, bench.run("erase", "--out", str(out)), "erase naming no phone")
    bad = walk.expect(2, phonewipe("erase", "--json", "--no-such-option", env=bench.env),
                      "erase --json with an unknown option")
    assert "no-such-option" in json_error(bad)["error"]
    # the certificates, the log
    certs = sorted((out / "certificates").glob("*.pdf"))
    walk.expect(0, phonewipe("cert", "verify", "--trust", str(bench.keys / "signing-cert.pem"),
                             *map(str, certs)), "cert verify of trusted certificates")
    walk.expect(9, phonewipe("cert", "verify", *map(str, certs)), "cert verify, no --trust")
    walk.expect(0, phonewipe("audit", "verify", str(out / "audit.sqlite")), "audit verify")


# -- certificates, keys, the audit log: 2, 5, 6, 7 -----------------------------------------
def test_file_codes(bench: Bench, walk: Walk, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pdf"
    walk.expect(6, phonewipe("cert", "verify", str(missing)), "cert verify of a missing file")
    one = json.loads(walk.expect(6, phonewipe("cert", "verify", "--json", str(missing)),
                                 "cert verify --json of a missing file").stdout)
    assert one["verdict"] == "invalid"
    walk.expect(2, phonewipe("audit", "verify", str(tmp_path / "missing.sqlite")),
                "audit verify of a missing file")
    walk.expect(2, phonewipe("audit", "export", str(tmp_path / "missing.sqlite")),
                "audit export of a missing file")
    shown = walk.expect(2, phonewipe("cert", "show", "--json", str(missing)),
                        "cert show --json of a missing file")
    assert json_error(shown)["exit_code"] == 2
    walk.expect(2, phonewipe("verify", "--plan-from", str(missing)), "verify --plan-from a missing file")
    # a PKCS#12 file that cannot be opened with the password given
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    key = serialization.load_pem_private_key((bench.keys / "signing-key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((bench.keys / "signing-cert.pem").read_bytes())
    p12 = tmp_path / "org.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"org", key, cert, None, serialization.BestAvailableEncryption(b"right")))  # type: ignore[arg-type]
    walk.expect(5, phonewipe("keys", "import", str(p12), "--dir", str(tmp_path / "k"),
                             "--password", "wrong"), "keys import with the wrong password")
    walk.expect(0, phonewipe("keys", "import", str(p12), "--dir", str(tmp_path / "k"),
                             "--password", "right"), "keys import")
    # a tampered certificate, an edited audit row
    fake = tmp_path / "tampered.pdf"
    fake.write_bytes(b"%PDF-1.7\n" + b"0" * 4096)
    walk.expect(6, phonewipe("cert", "verify", str(fake)), "cert verify of a tampered file")
    log = tmp_path / "audit.sqlite"
    from phonewipe.erase.audit import AuditLog
    with AuditLog(log) as audit:
        for i in range(3):
            audit.append("job", "SERIAL", "step", {"i": i})
    with sqlite3.connect(log) as db:
        db.execute("UPDATE events SET payload = '{\"i\": 9}' WHERE id = 2")
    walk.expect(7, phonewipe("audit", "verify", str(log)), "audit verify of an edited row")


# -- station: its codes like erase's, and 1 for --emulate ----------------------------------
def test_station_codes(walk: Walk, tmp_path: Path) -> None:
    b = Bench(tmp_path / "bench", ["rooted", "lying-1pct", "frp-locked"])
    try:
        result = walk.expect(12, b.run("station", "--out", str(tmp_path / "st"), "--keys",
                                       str(b.keys), "--exit-when-idle", "--idle-seconds", "2",
                                       "--json-lines"), "station with a FAIL phone")
        closed = [json.loads(line) for line in result.stdout.splitlines()
                  if '"batch-closed"' in line]
        assert closed and closed[0]["totals"].get("FAILED") == 1
    finally:
        b.close()
    profile = tmp_path / "wrong-expectation.toml"  # an honest phone a profile says must fail
    profile.write_text('extends = "rooted"\ndescription = "honest, expected to fail"\n'
                       'expect = "FAILED"\n[device]\nserial_prefix = "PWWRNG"\n')
    walk.expect(1, phonewipe("station", "--out", str(tmp_path / "em"), "--emulate", str(profile),
                             "--userdata-mib", "4", "--exit-when-idle", "--idle-seconds", "1"),
                "station --emulate, a handset not ending as its profile expects")


# -- a device that refuses outside a job: 4 ------------------------------------------------
def test_a_device_that_refuses_the_re_read_is_4(walk: Walk, tmp_path: Path) -> None:
    """The phone certified after a raw overwrite comes back from its setup wizard with USB
    debugging on but root not granted again (README: *When `verify --plan-from` can run*):
    it answers, says who it is, and refuses the read-back, outside any job."""
    b = Bench(tmp_path / "rooted", ["rooted"])
    try:
        erased = b.erase("rooted", tmp_path / "out", "--method", "adb-raw-pattern", "--json")
        [entry] = json.loads(walk.expect(0, erased, "erase rooted").stdout)
    finally:
        b.close()
    profile = tmp_path / "rooted-again-without-root.toml"  # the same phone, the same serial
    profile.write_text('extends = "rooted"\ndescription = "the rooted Pixel, root not granted '
                       'again"\n[access]\nroot = "none"\n')
    b = Bench(tmp_path / "unrooted", [str(profile)])
    try:
        result = walk.expect(4, b.run("verify", "--plan-from", entry["certificate"], "--json"),
                             "verify --plan-from on the phone without root")
    finally:
        b.close()
    error = json_error(result)
    assert entry["serial"] in error["error"] and "no read-back" in error["error"]
    assert "root" in error["advice"]


def test_the_walk_covers_the_readme_table() -> None:
    """Every code of the README table is walked here or proven by the tests ELSEWHERE names,
    and every code walked is in the table."""
    table = readme_exit_codes()
    assert table, "the README has no exit code table"
    missing = set(table) - set(WALKED) - set(ELSEWHERE)
    assert not missing, f"README codes nobody checked: {sorted(missing)}"
    assert set(WALKED) <= set(table), f"walked but not in the README: {set(WALKED) - set(table)}"
    from phonewipe.erase.errors import DeviceCommandFailed, DeviceGone, ProtocolError
    assert DeviceGone.exit_code == ProtocolError.exit_code == DeviceCommandFailed.exit_code == 4
    for code, where in ELSEWHERE.items():
        for name in re.findall(r"tests/\w+\.py", where):
            assert f"returncode == {code}" in (ROOT / name).read_text(), (code, name)


# -- a job that cannot write its certificate -------------------------------------------------
def test_a_job_without_its_certificate_says_erase_again_and_the_next_run_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from phonewipe.certificates.keys import init_keys
    from phonewipe.certificates.sign import CertificateSigner
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    from phonewipe.erase.errors import OutputError
    from phonewipe.erase.job import JobSettings
    from phonewipe.erase.model import Operator, Outcome
    from phonewipe.erase.runner import exit_code
    from phonewipe.erasing import run_erase
    from phonewipe.protocols.virtual import VirtualPlugin
    keys = tmp_path / "keys"
    init_keys(keys, "Test Org", "Test Org signing")
    plugin = VirtualPlugin()
    handsets = start_handsets(["virtual"], tmp_path / "handsets", {"virtual": plugin})
    real_write = CertificateSigner.write_certificate

    def disk_full(self: Any, record: Any, out_dir: Path) -> Path:
        raise OutputError(f"cannot write {out_dir}: No space left on device", "free space")
    settings = JobSettings(operator=Operator(name="T", organization="Test Org"), seed=3)
    try:
        with click.Context(click.Command("erase"), obj={}):
            monkeypatch.setattr(CertificateSigner, "write_certificate", disk_full)
            [first] = run_erase([(plugin, e) for e in plugin.discover()], settings,
                                tmp_path / "out", keys, as_json=False)
            assert first.certificate is None and first.record.outcome is Outcome.ERASED_VERIFIED
            assert "erase it again" in first.error and "No space left" in first.error
            assert exit_code([first]) == 8
            monkeypatch.setattr(CertificateSigner, "write_certificate", real_write)
            [second] = run_erase([(plugin, e) for e in plugin.discover()], settings,
                                 tmp_path / "out", keys, as_json=False)
    finally:
        stop_handsets(handsets)
    assert second.record.job_id != first.record.job_id  # erased again, not merely certified
    assert second.record.outcome is Outcome.ERASED_VERIFIED and second.certificate.is_file()
    with sqlite3.connect(tmp_path / "out" / "audit.sqlite") as db:
        events = [e for (e,) in db.execute("SELECT event FROM events ORDER BY id")]
    assert events.count("erasing") == 2 and "certificate-failed" in events
    assert exit_code([second]) == 0


# -- station --emulate on a full disk -----------------------------------------------------------
def adb_servers_with_home(prefix: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"adb" in cmdline.split(b"\0")[0] and f"HOME={prefix}".encode() in environ:
            found.append(int(pid))
    return found


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a tiny tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_station_emulate_on_a_full_disk_is_one_line_and_leaves_no_adb_server(tiny_disk: Path) -> None:
    require_binary("adb")
    out = tiny_disk / "st"
    result = phonewipe("station", "--out", str(out), "--emulate", "rooted:2", "--userdata-mib", "8",
                       "--exit-when-idle")
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    assert result.returncode == 8
    assert adb_servers_with_home(out) == []
    as_json = phonewipe("station", "--out", str(out), "--emulate", "rooted:2", "--userdata-mib",
                        "8", "--exit-when-idle", "--json-lines")
    assert json_error(as_json)["exit_code"] == 8
    assert adb_servers_with_home(out) == []


# -- emulate leaves nothing behind -----------------------------------------------------------
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_emulate_disconnects_its_phones_and_removes_its_images(tmp_path: Path, how: int) -> None:
    adb = require_binary("adb")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_path)}
    port = free_port()
    subprocess.run([adb, "-P", str(port), "start-server"], env=env, capture_output=True, timeout=30)
    try:  # the user's own server: it is left running, with nothing of ours in its list
        proc = subprocess.Popen([*PHONEWIPE, "emulate", "rooted", "unrooted", "--json",
                                 "--adb-port", str(port)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        addresses = [json.loads(proc.stdout.readline())["endpoints"]["adb"] for _ in range(2)]
        listed = subprocess.run([adb, "-P", str(port), "devices"], env=env, capture_output=True,
                                text=True).stdout
        assert all(a in listed for a in addresses)
        images = list(tmp_path.glob("phonewipe-emulate-*"))
        assert len(images) == 1
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=30)
        assert "Traceback" not in stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            listed = subprocess.run([adb, "-P", str(port), "devices"], env=env,
                                    capture_output=True, text=True).stdout
            if not any(a in listed for a in addresses):
                break
            time.sleep(0.2)
        assert not any(a in listed for a in addresses), listed
        assert not images[0].exists()
    finally:
        subprocess.run([adb, "-P", str(port), "kill-server"], env=env, capture_output=True,
                       timeout=30)


def test_global_options_work_after_the_subcommand() -> None:
    from click.testing import CliRunner

    from phonewipe.cli import cli
    moved = cli.move_global_options(__import__("click").Context(cli),
                                    ["erase", "SERIAL", "--out", "d", "--adb-port", "5038",
                                     "--config=x.toml", "--fastboot-tcp", "tcp:h:1"])
    assert moved == ["--adb-port", "5038", "--config=x.toml", "--fastboot-tcp", "tcp:h:1",
                     "erase", "SERIAL", "--out", "d"]
    # a subcommand's own option of the same spelling stays with it; `--` ends the moving
    assert cli.move_global_options(__import__("click").Context(cli),
                                   ["cert", "verify", "--", "--config"])[-1] == "--config"
    result = CliRunner().invoke(cli, ["audit", "verify", "/nonexistent", "--config", "/nope.toml"])
    assert result.exit_code == 2 and "nope.toml" in result.output


# -- attest and destroy (#19): 10, 12, 2, 0 ---------------------------------------------------
def test_attest_and_destroy_codes(walk: Walk, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    walk.expect(0, phonewipe("keys", "init", "--dir", str(keys), "--organization", "ACME"),
                "keys init")
    common = ["--serial", "BB10A1", "--operator", "Jane", "--organization", "ACME", "--keys",
              str(keys), "--out", str(tmp_path / "out")]

    def attest(*extra: str, answers: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([*PHONEWIPE, "attest", "--platform", "blackberry-10", *common,
                               *extra], input=answers, capture_output=True, text=True,
                              timeout=120)

    walk.expect(10, attest("--answers", "-", answers="y\n" * 5), "attest, every step confirmed")
    walk.expect(12, attest("--answers", "-", answers="y\nn\n"), "attest, a step answered no")
    walk.expect(2, attest(), "attest with neither a terminal nor answers")
    shred = ["destroy", "--method", "shred", "--facility", "ACME Leeds", "--witness", "John"]
    walk.expect(0, phonewipe(*shred, "--particle-mm", "2", *common), "destroy")
    walk.expect(2, phonewipe(*shred, *common), "destroy without a particle size")
