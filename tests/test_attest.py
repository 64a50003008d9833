"""`phonewipe attest` (#19 part B): the operator walks through a platform's own wipe from the
catalogue (fixtures/manual/), each confirmation logged with time, operator and how it was
given; photos checked as hostile input and embedded; the record is ERASED, NOT VERIFIED
("vendor function, operator-attested") or FAILED, never PASS; the certificate verifies
offline (cert verify, pdfsig) and says so in words (pdftotext)."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import clirun
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonewipe.certificates.keys import init_keys
from phonewipe.erase.errors import UsageError
from phonewipe.erase.manual import catalogue, parse_platform
from phonewipe.erase.model import Outcome

REPO = Path(__file__).resolve().parent.parent
OPERATOR = ["--operator", "Jane Doe", "--organization", "ACME Refurb Ltd"]
DEVICE = ["--serial", "BB10Z10A1", "--imei", "490154203237518", "--manufacturer", "BlackBerry",
          "--model", "Z10", "--os-version", "10.3.3"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, organization="ACME Refurb Ltd", common_name="ACME signing")
    return directory


SCRATCH_HOME = Path(tempfile.mkdtemp(prefix="phonewipe-home-"))  # no user config, no registry


def phonewipe(*args: str, stdin: str | None = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line in a subprocess: stdin is a pipe, never a terminal."""
    return clirun.run(*args, env={"COLUMNS": "100", "HOME": str(SCRATCH_HOME)}, cwd=cwd,
                      stdin=stdin, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def events(db: Path) -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        return [(e, json.loads(p)) for e, p in conn.execute(
            "SELECT event, payload FROM events ORDER BY id")]


def pdf_text(path: Path) -> str:
    from conftest import require_binary
    tool = require_binary("pdftotext")
    return subprocess.run([tool, "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def verify_json(cert: Path, keys: Path) -> dict[str, Any]:
    result = phonewipe("cert", "verify", "--json", "--trust", str(keys / "signing-cert.pem"),
                       str(cert))
    return json.loads(result.stdout.splitlines()[-1])


def jpeg_with_gps(path: Path, size: tuple[int, int] = (1600, 1200),
                  colour: tuple[int, int, int] = (40, 90, 160)) -> Path:
    from PIL import Image
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 50):
        for y in range(0, size[1], 50):
            image.putpixel((x, y), (250, 250, 0))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8825] = {1: "N", 2: (53.0, 48.0, 0.0)}  # GPS: where the operator stood
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def attest(out: Path, keys: Path, *extra: str, answers: str = "y\n" * 5,
           platform: str = "blackberry-10") -> subprocess.CompletedProcess:
    return phonewipe("attest", "--platform", platform, *DEVICE, *OPERATOR, "--keys", str(keys),
                     "--out", str(out), "--answers", "-", *extra, stdin=answers)


# -- the catalogue -----------------------------------------------------------------------------

def test_every_catalogue_entry_loads_and_ends_with_the_done_screen() -> None:
    entries = catalogue()
    assert {"blackberry-10", "blackberry-os", "windows-phone", "generic"} <= set(entries)
    for entry in entries.values():
        assert entry.steps[-1].id == "done" and entry.steps[-1].do.startswith("Check the screen")
        assert all(s.confirm.endswith("?") for s in entry.steps), entry.platform
        assert entry.vendor_function and entry.not_covered


@pytest.mark.parametrize("text,key", [
    ('schema = "phonewipe.manual/1"\nplatform = "x"\nname = "X"\nvendor_function = "v"\n'
     '[[steps]]\nid = "a"\ndo = "d"\n[done]\nscreen = "s"\nconfirm = "c?"\n', "steps[1].confirm"),
    ('schema = "phonewipe.manual/2"\n', "schema"),
    ('schema = "phonewipe.manual/1"\nplatfrom = "x"\n', "platfrom"),
    ("not = toml = at all", "not valid TOML"),
    ('schema = "phonewipe.manual/1"\nplatform = "x"\nname = "X"\nvendor_function = "v"\n'
     '[[steps]]\nid = "done"\ndo = "d"\nconfirm = "c?"\n[done]\nscreen = "s"\nconfirm = "c?"\n',
     "repeat an id"),
])
def test_a_bad_catalogue_entry_is_one_error_naming_the_file_and_key(text: str, key: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_platform(Path("mine.toml"), text)
    assert "mine.toml" in info.value.message and key in info.value.message


@given(st.text(max_size=400))
def test_the_catalogue_parser_never_fails_otherwise(text: str) -> None:
    try:
        parse_platform(Path("fuzz.toml"), text)
    except UsageError:
        pass


def test_your_own_steps_file_is_checked_like_the_catalogue(tmp_path: Path, keys: Path) -> None:
    steps = tmp_path / "mine.toml"
    steps.write_text('schema = "phonewipe.manual/1"\nplatform = "nokia-s40"\nname = "Nokia S40 '
                     'reset"\nvendor_function = "*#7370#"\n[[steps]]\nid = "code"\ndo = "Dial '
                     '*#7370#"\nconfirm = "Did it ask for the security code?"\n[done]\nscreen = '
                     '"Restarted"\nconfirm = "Did it restart?"\n')
    result = phonewipe("attest", "--steps", str(steps), *DEVICE, *OPERATOR, "--keys", str(keys),
                       "--out", str(tmp_path / "out"), "--answers", "-", stdin="y\nyes\n")
    assert result.returncode == 10, result.stderr
    cert = next((tmp_path / "out" / "certificates").glob("*.pdf"))
    record = json.loads(phonewipe("cert", "show", "--json", str(cert)).stdout)
    import hashlib
    assert record["sanitization"]["details"]["catalogue"] == \
        f"mine.toml (own steps file, SHA-256 {hashlib.sha256(steps.read_bytes()).hexdigest()})"
    steps.write_text("schema = 1\n")
    result = phonewipe("attest", "--steps", str(steps), *DEVICE, *OPERATOR, "--keys", str(keys),
                       "--out", str(tmp_path / "out"), "--answers", "-", stdin="y\n")
    one_line_error(result, 2, "mine.toml", "schema")


# -- the walk, the record, the certificate -----------------------------------------------------

def test_an_attested_blackberry_wipe_is_erased_not_verified_and_its_certificate_verifies(
        tmp_path: Path, keys: Path) -> None:
    photo = jpeg_with_gps(tmp_path / "setup-screen.jpg")
    result = attest(tmp_path / "out", keys, "--photo", str(photo), "--json")
    assert result.returncode == 10, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["result"] == "ERASED, NOT VERIFIED" and out["outcome"] == "ERASED_UNVERIFIED"
    cert = Path(out["certificate"])
    report = verify_json(cert, keys)
    assert report["verdict"] == "trusted", report
    record = json.loads(phonewipe("cert", "show", "--json", str(cert)).stdout)
    s = record["sanitization"]
    assert s["method"] == "manual-attested" and "vendor function, operator-attested" in s["title"]
    assert s["category"] == "None" and record["verification"]["mode"] == "none"
    steps = record["evidence"]["attestation"]["steps"]
    assert [c["step"] for c in steps] == ["backup", "cards", "accounts", "wipe", "done"]
    assert all(c["answer"] == "yes" and c["by"] == "Jane Doe" and c["how"] == "answers on stdin"
               and c["at"] for c in steps)
    # the photo: the original's hash, a reduced copy without its EXIF (no GPS position)
    from PIL import Image

    from phonewipe.erase.photos import photo_bytes
    entry = record["evidence"]["photos"][0]
    import hashlib
    assert entry["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    embedded = photo_bytes(entry)
    assert embedded is not None
    with Image.open(io.BytesIO(embedded)) as im:
        assert max(im.size) <= 1024 and not im.getexif()
    # the audit log: every step before the record, then the certificate
    log = events(tmp_path / "out" / "audit.sqlite")
    kinds = [e for e, _ in log]
    assert kinds[:2] == ["attest-started", "photo-added"]
    assert kinds.count("step-confirmed") == 5 and kinds[-2:] == ["record", "certified"]
    assert phonewipe("audit", "verify", str(tmp_path / "out" / "audit.sqlite")).returncode == 0
    text = pdf_text(cert)
    assert "ERASED, NOT VERIFIED" in text and "Operator attestation" in text
    assert "Security Wipe" in text and "Photos (evidence added by the operator)" in text
    # (the quarantine destination names where a PASS would have gone: "after a PASS: resale")
    assert "PASS" not in text.replace("after a PASS", "")
    assert "Certificate of Sanitization" not in text
    flat = " ".join(text.split())  # no sampling claimed anywhere: only "not verified"
    assert "Samples read" not in flat and "verified by quick" not in flat
    assert "none: this platform offers no way to read storage back" in flat


def test_pdfsig_says_the_attested_certificate_is_valid(tmp_path: Path, keys: Path) -> None:
    from conftest import require_binary
    tool = require_binary("pdfsig")
    result = attest(tmp_path / "out", keys, "--json")
    cert = json.loads(result.stdout.splitlines()[-1])["certificate"]
    out = subprocess.run([tool, cert], capture_output=True, text=True)
    assert "Signature is Valid" in out.stdout and "Total document signed" in out.stdout


def test_a_step_answered_no_ends_failed_and_the_steps_after_it_are_not_asked(
        tmp_path: Path, keys: Path) -> None:
    result = attest(tmp_path / "out", keys, "--json", answers="y\ny\ny\nn\n")
    assert result.returncode == 12, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["outcome"] == "FAILED" and "'wipe'" in out["reason"]
    assert "phonewipe destroy" in out["reason"]
    record = json.loads(phonewipe("cert", "show", "--json", out["certificate"]).stdout)
    assert [c["answer"] for c in record["evidence"]["attestation"]["steps"]] == ["yes"] * 3 + ["no"]
    assert verify_json(Path(out["certificate"]), keys)["verdict"] == "trusted"
    assert "1 of 5 steps were not asked" in pdf_text(Path(out["certificate"]))
    assert [e for e, _ in events(tmp_path / "out" / "audit.sqlite")].count("step-declined") == 1


def test_yes_confirms_every_step_and_the_record_says_how(tmp_path: Path, keys: Path) -> None:
    result = phonewipe("attest", "--platform", "windows-phone", *DEVICE, *OPERATOR, "--keys",
                       str(keys), "--out", str(tmp_path / "out"), "--yes", "--json")
    assert result.returncode == 10, result.stderr
    cert = json.loads(result.stdout.splitlines()[-1])["certificate"]
    record = json.loads(phonewipe("cert", "show", "--json", cert).stdout)
    assert {c["how"] for c in record["evidence"]["attestation"]["steps"]} == {"--yes"}


def test_without_a_terminal_or_answers_it_refuses_and_writes_nothing(tmp_path: Path,
                                                                     keys: Path) -> None:
    result = phonewipe("attest", "--platform", "blackberry-os", *DEVICE, *OPERATOR, "--keys",
                       str(keys), "--out", str(tmp_path / "out"), stdin="y\n" * 5)
    one_line_error(result, 2, "not a terminal", "--answers -")
    assert not (tmp_path / "out" / "certificates").exists()


def test_answers_that_run_out_are_logged_and_give_no_certificate(tmp_path: Path,
                                                                 keys: Path) -> None:
    result = attest(tmp_path / "out", keys, answers="y\ny\n")
    one_line_error(result, 2, "step 3 of 5")
    assert not (tmp_path / "out" / "certificates").exists()
    log = events(tmp_path / "out" / "audit.sqlite")
    assert log[-1][0] == "attest-interrupted" and log[-1][1]["answered"] == 2
    garbage = attest(tmp_path / "out2", keys, answers="y\nmaybe\n")
    one_line_error(garbage, 2, "'maybe'", "yes or no")


@pytest.mark.parametrize("args,words", [
    (["--platform", "blackbery-10"], ("did you mean 'blackberry-10'",)),
    (["--platform", "blackberry-10", "--imei", "490154203237519"], ("check digit",)),
    (["--platform", "generic"], ()),  # no serial, no IMEI: refused below
    (["--platform", "generic", "--manufacturer", "Nokia"], ("make and model",)),
])
def test_bad_input_is_one_line(tmp_path: Path, keys: Path, args: list[str],
                               words: tuple[str, ...]) -> None:
    device = [] if args == ["--platform", "generic"] else ["--serial", "X1"]
    result = phonewipe("attest", *args, *device, *OPERATOR, "--keys", str(keys), "--out",
                       str(tmp_path / "out"), "--yes")
    one_line_error(result, 2, *words)


def test_a_missing_key_is_exit_5_before_anything_is_logged(tmp_path: Path) -> None:
    result = phonewipe("attest", "--platform", "generic", *DEVICE, *OPERATOR, "--keys",
                       str(tmp_path / "nokeys"), "--out", str(tmp_path / "out"), "--yes")
    assert result.returncode == 5 and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "audit.sqlite").exists()


# -- photos are hostile input ------------------------------------------------------------------

def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def _hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.jpg"
    if kind == "not-an-image":
        path.write_bytes(b"<html><script>alert(1)</script></html>")
    elif kind == "truncated":
        good = jpeg_with_gps(tmp_path / "good.jpg")
        path.write_bytes(good.read_bytes()[:2000])
    elif kind == "bomb":
        path.write_bytes(_png_header_only(100_000, 100_000))
    elif kind == "gif":
        from PIL import Image
        Image.new("RGB", (10, 10)).save(path, "GIF")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(21 * 1024 * 1024)
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize("kind", ["not-an-image", "truncated", "bomb", "gif", "empty", "huge",
                                  "directory", "missing"])
def test_a_hostile_photo_is_one_line_and_nothing_is_recorded(tmp_path: Path, keys: Path,
                                                             kind: str) -> None:
    photo = _hostile(tmp_path, kind)
    result = attest(tmp_path / "out", keys, "--photo", str(photo))
    one_line_error(result, 2, "photo", photo.name)
    assert not (tmp_path / "out" / "audit.sqlite").exists()


@given(st.binary(max_size=4096))
def test_the_photo_checker_never_fails_otherwise(data: bytes) -> None:
    from phonewipe.erase.photos import PhotoRejected, embed_copy
    try:
        embed_copy(data, Path("fuzz.jpg"))
    except PhotoRejected:
        pass


def test_a_photo_page_that_does_not_match_the_record_is_invalid(
        tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The photos are part of what `cert verify` re-renders: pages that show another photo
    than the signed record holds (everything else identical) are refused."""
    from phonewipe.certificates import photo_pages
    from phonewipe.certificates.render import render_pdf
    from phonewipe.certificates.sign import CertificateSigner
    from phonewipe.certificates.verify import show_certificate, verify_bytes
    from phonewipe.erase.photos import check_photo
    result = attest(tmp_path / "out", keys, "--photo",
                    str(jpeg_with_gps(tmp_path / "a.jpg")), "--json")
    record = show_certificate(Path(json.loads(result.stdout.splitlines()[-1])["certificate"]))
    signer = CertificateSigner(keys)
    honest = signer.sign_pdf(render_pdf(record, signing=signer.signing_info),
                             record.canonical_json())
    assert verify_bytes(honest, tmp_path / "honest.pdf", None).ok
    other = check_photo(jpeg_with_gps(tmp_path / "b.jpg", colour=(160, 40, 40))).jpeg
    monkeypatch.setattr(photo_pages, "photo_bytes", lambda entry: other)
    forged = signer.sign_pdf(render_pdf(record, signing=signer.signing_info),
                             record.canonical_json())
    monkeypatch.undo()
    report = verify_bytes(forged, tmp_path / "forged.pdf", None)
    assert report.problems == ["embedded record does not match the visible certificate"]


# -- never PASS --------------------------------------------------------------------------------

@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_no_answers_ever_make_an_attested_wipe_pass(answers: list[bool]) -> None:
    from phonewipe.erase.attest import Attestation
    from phonewipe.erase.job import JobSettings
    from phonewipe.erase.model import Identity, Operator

    class Log:
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def append(self, *args: Any) -> int:
            self.rows.append(args)
            return len(self.rows)

        def events(self, job_id: Any = None, kinds: Any = ()) -> list[Any]:
            return []

    entry = catalogue()["generic"]
    a = Attestation(entry, Identity(platform="generic", serial="S1"),
                    JobSettings(operator=Operator(name="J", organization="O")), Log())
    a.start([])
    for answer in answers:
        step = a.next_step()
        if step is None:
            break
        a.confirm(step, answer, "answers on stdin")
    if a.next_step() is not None:
        return  # not every step answered: no record can be made
    record = a.record()
    assert record.outcome in (Outcome.ERASED_UNVERIFIED, Outcome.FAILED)
    assert record.result_text != "PASS" and record.sanitization is not None
    assert record.sanitization.category == "None"
    assert (record.outcome is Outcome.FAILED) == (not all(answers[:len(entry.steps)]))


def test_streams_pyhanko_cannot_decode_compare_by_their_encoded_bytes() -> None:
    """A photo is placed as a JPEG (DCTDecode), which pyHanko does not decode: `cert verify`
    compares such a stream by its encoded bytes and filter, so a swapped image under the same
    name is not taken for the one the record holds."""
    from pyhanko.pdf_utils import generic

    from phonewipe.certificates.verify import _canon

    def image(data: bytes, kind: str = "/DCTDecode") -> generic.StreamObject:
        return generic.StreamObject({generic.NameObject("/Filter"): generic.NameObject(kind)},
                                    encoded_data=data)

    assert _canon(image(b"\xff\xd8one")) == _canon(image(b"\xff\xd8one"))
    assert _canon(image(b"\xff\xd8one")) != _canon(image(b"\xff\xd8two"))
    assert _canon(image(b"\xff\xd8one")) != _canon(image(b"\xff\xd8one", "/JPXDecode"))


def test_on_a_terminal_it_asks_each_step_and_asks_again_until_yes_or_no(
        tmp_path: Path, keys: Path) -> None:
    """Interactive: stdin is a terminal (a pty); an answer that is not yes or no is asked
    again, and the record says the answers were given interactively."""
    import pty
    import select
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "HOME": str(SCRATCH_HOME)}
    proc = subprocess.Popen([sys.executable, "-m", "phonewipe", "attest", "--platform",
                             "blackberry-os", *DEVICE, *OPERATOR, "--keys", str(keys), "--out",
                             str(tmp_path / "out"), "--json"],
                            stdin=secondary, stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    os.write(primary, b"y\nmaybe\ny\nyes\nY\ny\n")
    shown = b""
    while proc.poll() is None:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                shown += os.read(primary, 65536)
            except OSError:
                break
    proc.wait(timeout=60)
    out = proc.stdout.read().decode() if proc.stdout else ""
    os.close(primary)
    assert proc.returncode == 10, shown.decode(errors="replace") + out
    prompts = shown.decode(errors="replace")  # the questions go to the terminal (stderr)
    assert "answer y (done) or n (not done)" in prompts and prompts.count("[y/n]") == 6
    assert "step 1 of 5 (backup)" in prompts
    cert = json.loads(out.splitlines()[-1])["certificate"]
    record = json.loads(phonewipe("cert", "show", "--json", cert).stdout)
    steps = record["evidence"]["attestation"]["steps"]
    assert len(steps) == 5 and {c["how"] for c in steps} == {"interactive"}
