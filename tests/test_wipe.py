"""`phonewipe wipe`: the guided flow for a person wiping their own phone, walked through tmux
(send-keys, capture-pane) on emulated phones as a person would, and through a pipe (plain
lines). Each test has its own HOME (its own personal key) and its own tmux server."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
PHONEWIPE = str(Path(sys.executable).with_name("phonewipe"))
NAME = "Jane Seller"


class Pane:
    """One tmux pane on a private server: a shell, keys sent to it, its text read back."""

    def __init__(self, home: Path, width: int = 100, height: int = 40) -> None:
        self.tmux = require_binary("tmux")
        self.socket = f"pw-wipe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.home = home
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "wipe",
                   "env", "-i", f"HOME={home}", f"PATH={os.environ['PATH']}", "TERM=xterm-256color",
                   "PS1=$ ", "bash", "--norc", "--noprofile")
        self._tmux("set-option", "-t", "wipe", "history-limit", "5000")

    def _tmux(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                              text=True, check=True).stdout

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "wipe", *keys)

    def type_line(self, text: str) -> None:
        self._tmux("send-keys", "-t", "wipe", "-l", text)
        self.send("Enter")

    def run(self, args: str) -> None:
        self.type_line(f"cd {ROOT} && {PHONEWIPE} {args}; echo EXIT=$?")

    def text(self, joined: bool = True) -> str:
        return self._tmux("capture-pane", "-p", *(["-J"] if joined else []), "-S", "-5000",
                          "-t", "wipe")

    def flat(self) -> str:
        """The pane's text with rich's line breaks and panel borders taken out: what a
        person reads, as one line (rich wraps long sentences at word boundaries)."""
        return re.sub(r"[\s│╭╮╰╯]+", " ", self.text())

    def screen(self) -> str:
        """What is on the screen now, as the terminal shows it."""
        return self._tmux("capture-pane", "-p", "-t", "wipe")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Poll the pane until ``pattern`` (a regex) shows, or fail showing the pane."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.flat())
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared; the pane shows:\n{self.text()}")
            time.sleep(0.1)  # a poll with a deadline

    def exit_code(self, timeout: float = 90.0) -> int:
        return int(self.wait_for(r"EXIT=(\d+)", timeout).group(1))

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    require_binary("adb")
    p = Pane(tmp_path)
    try:
        yield p
    finally:
        p.close()


def start(pane: Pane, profile: str) -> None:
    """Start the flow, make the personal key, and reach the confirmation."""
    pane.run(f"wipe --emulate {profile}")
    pane.wait_for(r"does not prove who you are")
    pane.wait_for(r"Your name, as certificates should show it:")
    pane.type_line(NAME)
    pane.wait_for(r"Step 2 of 5: Is this the phone to erase\?")


def certificate(pane: Pane) -> Path:
    return Path(pane.wait_for(r"Certificate: (\S+\.pdf)").group(1))


def record_of(path: Path, home: Path) -> dict:
    out = subprocess.run([PHONEWIPE, "cert", "show", "--json", str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "HOME": str(home)})
    return json.loads(out.stdout)


def cert_verifies(path: Path, home: Path, fingerprint: str = "") -> bool:
    """The certificate checks against the person's key (its fingerprint, as the listing
    gives it; by default read from their key)."""
    trust = fingerprint or str(home / ".config" / "phonewipe" / "keys" / "signing-cert.pem")
    return subprocess.run([PHONEWIPE, "cert", "verify", "--trust", trust, str(path)],
                          capture_output=True, env={**os.environ, "HOME": str(home)}).returncode == 0


def test_rooted_phone_walks_to_a_verified_erase(pane: Pane, tmp_path: Path) -> None:
    start(pane, "rooted")
    pane.wait_for(r"Phone:\s+Google Pixel 6a")
    for shown in (r"Serial:\s+PWROOT0000", r"Storage:\s+34 MB", r"System:\s+Android 14",
                  r"Rooted:\s+yes"):
        pane.wait_for(shown)
    pane.wait_for(r"Erase EVERYTHING on the Google Pixel 6a \(serial PWROOT0000\)\?")
    pane.type_line("y")
    pane.wait_for(r"Step 3 of 5")
    pane.wait_for(r"No Google account is signed in")
    pane.wait_for(r"Step 4 of 5: Erase")
    pane.wait_for(r"overwrites every block")
    pane.wait_for(r"Estimate for 34 MB")
    pane.wait_for(r"Step 5 of 5: Done", timeout=90)
    assert pane.exit_code() == 0
    text = pane.flat()
    assert "Erasing" in text and "100%" in text  # the bar ran to the end
    assert "PASS: your Google Pixel 6a is erased and verified." in text
    assert "VERIFIED means" in text and "99% certainty" in text
    assert "For your listing (copy and paste this paragraph" in text
    cert = certificate(pane)
    listing_file = cert.with_name(cert.stem + "-listing.txt")  # the paragraph, unbroken
    listing = re.fullmatch(r"Data wiped: this phone \(Google Pixel 6a, serial PWROOT0000\) was "
                           r"erased on \d+ \w+ \d{4} with phonewipe \S+; every block of its "
                           r"storage was overwritten and [\d,]+ random samples were read back "
                           r"and checked\. Result: PASS\. Signed erasure certificate "
                           rf"{cert.name}, signing key fingerprint "
                           r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\. Ask me for the PDF: "
                           r"`phonewipe cert verify --trust` with that fingerprint checks it\.\n",
                           listing_file.read_text())
    assert listing, listing_file.read_text()
    assert listing.group(0).split("Data wiped")[1][:40] in text  # shown on the screen too
    assert "power the phone off" in text and "SIM card and any memory card" in text
    assert cert.is_file() and cert.is_relative_to(tmp_path / "phonewipe" / "emulated")
    record = record_of(cert, tmp_path)
    assert record["outcome"] == "ERASED_VERIFIED"
    assert record["operator"]["name"] == NAME
    assert cert_verifies(cert, tmp_path, listing.group(1))  # as a buyer checks it
    key = tmp_path / ".config" / "phonewipe" / "keys" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_unrooted_phone_is_filled_and_reset(pane: Pane, tmp_path: Path) -> None:
    start(pane, "unrooted")
    pane.wait_for(r"Phone:\s+Samsung SM-A536B")
    pane.wait_for(r"Rooted:\s+no")
    pane.type_line("y")
    pane.wait_for(r"not rooted, so phonewipe deletes your files, fills all the free space")
    pane.wait_for(r"plus a few minutes for the factory reset")
    pane.wait_for(r"Step 5 of 5: Done", timeout=120)
    assert pane.exit_code() == 0
    text = pane.flat()
    assert "PASS: your Samsung SM-A536B is erased and verified." in text
    assert "its free space filled" in text and "factory reset" in text
    assert "samples spread over all the free space it filled" in text  # what verified means here
    record = record_of(certificate(pane), tmp_path)
    assert record["outcome"] == "ERASED_VERIFIED"
    assert record["sanitization"]["method"] == "adb-fill-reset"


def test_frp_locked_phone_waits_while_the_person_removes_the_account(pane: Pane,
                                                                     tmp_path: Path) -> None:
    start(pane, "frp-locked")
    pane.type_line("y")
    pane.wait_for(r"Your Google account is still on the phone")
    pane.wait_for(r"would ask the next owner for YOUR Google password")
    pane.wait_for(r"Settings > Passwords & accounts")
    pane.wait_for(r"Remove account")
    state_file = Path(pane.wait_for(r"set \"google_accounts\": \[\] in (\S+state\.json)").group(1))
    pane.wait_for(r"press Enter to check again")
    pane.send("Enter")  # not yet removed: the check says so and shows the steps again
    pane.wait_for(r"Checked again: still locked")
    assert pane.flat().count("Your Google account is still on the phone") == 2
    assert "Step 4 of 5" not in pane.flat()
    state = json.loads(state_file.read_text())  # the owner removes the account on the phone
    assert state["google_accounts"] == ["owner.example@gmail.com"]
    state["google_accounts"] = []
    state_file.write_text(json.dumps(state))
    pane.send("Enter")
    pane.wait_for(r"Checked again: the lock is gone")
    pane.wait_for(r"Step 5 of 5: Done", timeout=120)
    assert pane.exit_code() == 0
    assert "PASS: your Google Pixel 6a is erased and verified." in pane.flat()
    assert record_of(certificate(pane), tmp_path)["outcome"] == "ERASED_VERIFIED"


def test_unplug_during_the_erase_ends_not_erased_with_a_failed_record(pane: Pane,
                                                                      tmp_path: Path) -> None:
    start(pane, "unplug-40")
    pane.type_line("y")
    pane.wait_for(r"Step 5 of 5: Done", timeout=90)
    assert pane.exit_code() == 12
    text = pane.flat()
    assert ("NOT ERASED — the phone was disconnected during the erase. Plug it back in and run "
            "`phonewipe wipe` again.") in text
    assert "PASS" not in text and "Data wiped" not in text  # nothing to paste into a listing
    cert = certificate(pane)
    assert record_of(cert, tmp_path)["outcome"] == "FAILED"
    assert cert_verifies(cert, tmp_path)


def test_no_phone_shows_the_help_and_ctrl_c_says_nothing_was_written(pane: Pane) -> None:
    pane.run("wipe --emulate none")
    pane.wait_for(r"Your name, as certificates should show it:")
    pane.type_line(NAME)
    pane.wait_for(r"Step 1 of 5: Connect your phone")
    pane.wait_for(r"No phone found yet")
    pane.wait_for(r"Tap 'Build number' seven times")
    pane.wait_for(r"Samsung: Settings > About phone > Software information")
    pane.wait_for(r"Xiaomi: Settings > About phone > MIUI version")
    pane.wait_for(r"OnePlus: Settings > About device")
    pane.wait_for(r"'Allow USB debugging\?'")
    pane.wait_for(r"Always allow from this computer")
    if sys.platform.startswith("linux"):
        pane.wait_for(r"echo 'SUBSYSTEM==\"usb\", ENV\{ID_USB_INTERFACES\}==\"\*:ff4201:\*\".*"
                      r"sudo tee /etc/udev/rules\.d/51-android\.rules.*sudo udevadm trigger")
    pane.wait_for(r"Waiting for your phone")
    pane.send("C-c")
    pane.wait_for(r"Stopped\. Nothing was written to any phone\.")
    assert pane.exit_code() == 130


def test_ctrl_c_at_the_confirmation_leaves_the_phone_as_it_was(pane: Pane,
                                                               tmp_path: Path) -> None:
    start(pane, "rooted")
    pane.wait_for(r"Erase EVERYTHING on the Google Pixel 6a")
    pane.send("C-c")
    pane.wait_for(r"Stopped\. Nothing was written to the phone: it is exactly as it was\.")
    assert pane.exit_code() == 130
    assert not list((tmp_path / "phonewipe" / "emulated" / "certificates").glob("*.pdf"))


def test_ctrl_c_during_the_erase_says_the_phone_is_partly_erased(pane: Pane,
                                                                   tmp_path: Path) -> None:
    start(pane, "slow")  # rooted, writes at 4 MiB/s: the erase takes seconds
    pane.type_line("y")
    pane.wait_for(r"Erasing .*[1-9]\.\d MiB of 32\.0 MiB sent")
    pane.send("C-c")
    pane.wait_for(r"Ctrl-C: stopping the erase at its next step")
    pane.wait_for(r"NOT ERASED: you stopped the erase\.", timeout=60)
    assert pane.exit_code() == 12
    text = pane.flat()
    assert "part of it may already be overwritten, and the rest still holds your data" in text
    assert "Run `phonewipe wipe` again" in text
    record = record_of(certificate(pane), tmp_path)
    assert record["outcome"] == "FAILED" and "interrupted" in record["reason"]


def test_plain_lines_through_a_pipe(tmp_path: Path) -> None:
    require_binary("adb")
    run = subprocess.run([PHONEWIPE, "wipe", "--emulate", "rooted"], input=f"{NAME}\ny\n",
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "HOME": str(tmp_path), "TERM": "xterm-256color"})
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "\x1b" not in out  # no colours, cursor moves or spinners
    for line in ("== Step 1 of 5: Connect your phone", "== Step 2 of 5: Is this the phone to erase?",
                 "== Step 3 of 5: Locks that would stop the next owner", "== Step 4 of 5: Erase",
                 "== Step 5 of 5: Done", "  Phone:    Google Pixel 6a",
                 "Erasing: 100% (32.0 MiB of 32.0 MiB sent)",
                 "PASS: your Google Pixel 6a is erased and verified."):
        assert line in out.splitlines(), line
    assert sum(line.startswith("Erasing: ") for line in out.splitlines()) <= 11  # per tenth


def test_plain_mode_declining_writes_nothing(tmp_path: Path) -> None:
    require_binary("adb")
    run = subprocess.run([PHONEWIPE, "wipe", "--emulate", "rooted"], input=f"{NAME}\nn\n",
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Nothing was written: the phone is exactly as it was." in run.stdout
    assert "Step 4 of 5" not in run.stdout


# -- the state machine alone: a scripted person, in-process virtual handsets (no wire) -------
class ScriptedIO:
    """A person following the screen: answers from a script; `on_pause` acts on the phone."""

    def __init__(self, answers: list[str], on_pause=None) -> None:  # type: ignore[no-untyped-def]
        self.answers = list(answers)
        self.on_pause = on_pause
        self.lines: list[str] = []

    def step(self, number: int, total: int, title: str) -> None:
        self.lines.append(f"STEP {number}: {title}")

    def say(self, text: str, style: str = "", whole: bool = False) -> None:
        self.lines.append(text)

    def panel(self, title: str, lines: list[str], numbered: bool = True, style: str = "") -> None:
        self.lines += [title, *lines]

    def command(self, text: str, style: str = "") -> None:
        self.lines.append(text)

    def ask(self, question: str) -> str:
        self.lines.append(question)
        return self.answers.pop(0)

    def confirm(self, question: str) -> bool:
        self.lines.append(question)
        return self.answers.pop(0) == "y"

    def pause(self, prompt: str) -> None:
        self.lines.append(prompt)
        if self.on_pause:
            self.on_pause()

    def waiting(self, text: str):  # type: ignore[no-untyped-def]
        from contextlib import nullcontext
        return nullcontext()

    def progress(self):  # type: ignore[no-untyped-def]
        from contextlib import nullcontext

        class View:
            def update(self, stage: str, done: int, total: int) -> None:
                pass
        return nullcontext(View())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def virtual_phone(tmp_path: Path) -> Iterator:
    """phone(profile) -> (handset, run(io) -> exit code): one in-process virtual handset
    and the flow over it."""
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    from phonewipe.protocols.virtual import VirtualPlugin
    from phonewipe.wipe import WipeFlow, WipeOptions
    from phonewipe.wipe_bench import Bench
    started = []

    def phone(profile: str):  # type: ignore[no-untyped-def]
        plugin = VirtualPlugin()
        [handset] = start_handsets([profile], tmp_path / "handsets", {"virtual": plugin})
        started.append(handset)
        options = WipeOptions(keys_dir=tmp_path / "keys", out_dir=tmp_path / "out", poll=0.05)
        return handset, lambda io: WipeFlow(io, Bench({"virtual": plugin}), options).run()
    yield phone
    stop_handsets(started)


def test_flow_waits_on_locks_and_rechecks_after_the_owner_acts(virtual_phone,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    handset, run = virtual_phone("virtual-frp")
    presses = []

    def owner_acts() -> None:  # the first Enter before removing the account, the second after
        presses.append(1)
        if len(presses) == 2:
            handset.storage.state.google_accounts = []
    io = ScriptedIO([NAME, "y"], on_pause=owner_acts)
    assert run(io) == 0, io.text
    steps = [line for line in io.lines if line.startswith("STEP")]
    assert steps == ["STEP 1: Connect your phone", "STEP 2: Is this the phone to erase?",
                     "STEP 3: Locks that would stop the next owner", "STEP 4: Erase",
                     "STEP 5: Done"]
    assert io.lines.count("Your Google account is still on the phone") == 2
    assert "Checked again: still locked." in io.lines
    assert "Checked again: the lock is gone." in io.lines
    assert "is erased and verified" in io.text
    key = tmp_path / "keys" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(list((tmp_path / "out" / "certificates").glob("*.pdf"))) == 1


def test_flow_ctrl_c_at_the_locks_writes_nothing(virtual_phone, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    handset, run = virtual_phone("virtual-frp")

    def ctrl_c() -> None:
        raise KeyboardInterrupt
    io = ScriptedIO([NAME, "y"], on_pause=ctrl_c)
    assert run(io) == 130
    assert io.lines[-1].startswith("Stopped. phonewipe wrote nothing to the phone")
    assert "STEP 4: Erase" not in io.lines
    assert handset.storage.state.resets == 0
    assert not (tmp_path / "out" / "certificates").exists()
