"""`phonewipe wipe`: one phone, guided, for a person selling their own phone.

A small state machine over an input/output interface (`phonewipe.wipe_io`) and a bench of
phones (`phonewipe.wipe_bench`):

    KEY -> WAIT -> CONFIRM -> LOCKS -> ERASE -> DONE
              ^________|________|  (the phone went away: wait for it again)

Nothing is written to the phone before ERASE. Ctrl-C in any state ends the flow and says
what state the phone is in: as it was, for every state before ERASE; during ERASE the
running job stops at its next step and is recorded FAILED with its certificate.
"""
from __future__ import annotations

import datetime as dt
import enum
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from phonewipe import wipe_text as T
from phonewipe.erase import __version__
from phonewipe.erase.audit import AuditLog
from phonewipe.erase.errors import PhonewipeError
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Destination, Endpoint, Operator, Outcome, Record
from phonewipe.erase.plugin import Plugin
from phonewipe.erase.runner import EXIT_BY_OUTCOME, JobResult, check_output_dir, erase_devices
from phonewipe.erase.strings import clean
from phonewipe.wipe_bench import Bench, Inspection, inspect, ready
from phonewipe.wipe_io import Stopped, WipeIO, choose_io

STEPS = 5
KEY_FILE = "signing-key.pem"


class State(enum.Enum):
    KEY = "key"
    WAIT = "wait"
    CONFIRM = "confirm"
    LOCKS = "locks"
    ERASE = "erase"
    DONE = "done"


# what Ctrl-C in each state leaves behind, in the person's words
STOPPED = {
    State.KEY: "Stopped. No key was made and no phone was touched.",
    State.WAIT: "Stopped. Nothing was written to any phone.",
    State.CONFIRM: "Stopped. Nothing was written to the phone: it is exactly as it was.",
    State.LOCKS: "Stopped. phonewipe wrote nothing to the phone: it is as it was before this "
                 "step (apart from any change you made yourself in its settings).",
    State.ERASE: "Stopped before the erase began. Nothing was written to the phone: it is "
                 "exactly as it was.",
    State.DONE: "Stopped. The erase had already finished and its certificate is written.",
}


@dataclass
class WipeOptions:
    keys_dir: Path
    out_dir: Path
    poll: float = 1.0  # seconds between looks for a phone
    signer_factory: Callable[[Path], Any] | None = None


def phone_name(identity: Any) -> str:
    make = clean(identity.manufacturer) or ""
    make = make.capitalize() if make.islower() else make
    model = clean(identity.model) or ""
    if make and model.lower().startswith(make.lower()):
        make = ""  # "Google" + "Google Pixel 6a"
    return " ".join(x for x in (make, model) if x) or "phone"


def _gb(n: int | None) -> str:
    return T.size_text(n) if n else "unknown"


class WipeFlow:
    def __init__(self, io: WipeIO, bench: Bench, options: WipeOptions) -> None:
        self.io = io
        self.bench = bench
        self.options = options
        self.state = State.KEY
        self.exit_code = 0
        self.name = ""  # the person's, from their key
        self.signer: Any = None
        self.target: tuple[Plugin, Endpoint] | None = None
        self.found: Inspection | None = None
        self.confirmed_serial: str | None = None
        self.abort = threading.Event()
        self.erase_started = False
        self.result: JobResult | None = None
        self.handlers: dict[State, Callable[[], State | None]] = {
            State.KEY: self.key, State.WAIT: self.wait, State.CONFIRM: self.confirm,
            State.LOCKS: self.locks, State.ERASE: self.erase, State.DONE: self.done}

    # -- the machine ---------------------------------------------------------------------------
    def run(self) -> int:
        state: State | None = State.KEY
        while state is not None:
            self.state = state
            try:
                state = self.handlers[state]()
            except (KeyboardInterrupt, Stopped):
                self.io.say("")
                self.io.say(STOPPED[self.state], style="bold yellow")
                return 130
        return self.exit_code

    @property
    def phone(self) -> str:
        if self.found is None:
            return "phone"
        serial = clean(self.found.identity.serial)
        return f"{phone_name(self.found.identity)}" + (f" (serial {serial})" if serial else "")

    @property
    def make(self) -> str:
        return T.make_key(self.found.identity.manufacturer) if self.found else ""

    # -- KEY -----------------------------------------------------------------------------------
    def key(self) -> State:
        from phonewipe.certificates.keys import init_keys, load_signing_material
        check_output_dir(self.options.out_dir)  # before any phone: the certificate can be written
        keys = self.options.keys_dir
        if not (keys / KEY_FILE).exists():
            self.io.say("Before you start: your signing key", style="bold")
            self.io.say("phonewipe writes a signed certificate for every erase. This is your "
                        "first time, so it makes you a personal signing key, kept on this "
                        "computer in a file only you can read.")
            self.io.say("A personal key proves that a certificate was not changed after it "
                        "was signed. It does not prove who you are: anyone can make a key "
                        "with any name.", style="italic")
            name = self.io.ask("Your name, as certificates should show it:")
            init_keys(keys, "personal signing key", name)
            material = load_signing_material(keys)
            self.io.say(f"Key made: {material.paths.key} (readable only by you). "
                        f"Fingerprint {self._fingerprint(material.cert)}.", whole=True)
        material = load_signing_material(keys)
        from cryptography.x509.oid import NameOID
        names = material.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.name = str(names[0].value) if names else "unknown"
        self.signer = (self.options.signer_factory or _default_signer)(keys)
        return State.WAIT

    @staticmethod
    def _fingerprint(cert: Any) -> str:
        from phonewipe.certificates.keys import fingerprint, format_fingerprint
        return format_fingerprint(fingerprint(cert))

    # -- WAIT ----------------------------------------------------------------------------------
    def _situation(self) -> tuple[str, tuple[Any, ...]]:
        found = self.bench.endpoints()
        usable = [t for t in found if ready(t[1])]
        if len(usable) == 1:
            return "ready", (usable[0],)
        if len(usable) > 1:
            return "several", tuple(usable)
        labels = {e.label for _, e in found}
        modes = {e.mode for _, e in found}
        if "unauthorized" in labels:
            return "unauthorized", tuple(self.bench.makes())
        if modes & {"fastboot", "recovery"}:
            return "bootloader", ()
        if found:
            return "offline", ()
        return "none", tuple(self.bench.makes())

    def wait(self) -> State:
        self.io.step(1, STEPS, "Connect your phone")
        shown = None
        while True:
            situation = self._situation()
            if situation[0] == "ready":
                self.target = situation[1][0]
                self.io.say("A phone is connected.")
                return State.CONFIRM
            if situation != shown:
                self._advise(*situation)
                shown = situation
            with self.io.waiting("Waiting for your phone... (Ctrl-C to stop)"):
                while self._situation() == shown:
                    self.abort.wait(self.options.poll)  # a poll, woken by nothing else

    def _advise(self, kind: str, detail: tuple[Any, ...]) -> None:
        io = self.io
        if kind == "several":
            io.say(f"{len(detail)} phones are connected. phonewipe erases one phone at a time: "
                   "unplug every phone except the one you want to erase.", style="yellow")
            return
        if kind == "bootloader":
            io.say("A phone is connected in its bootloader or recovery screen. Start it "
                   "normally: hold the power button until it restarts into Android, then unlock "
                   "it.", style="yellow")
            return
        if kind == "offline":
            io.say("A phone is connected but not answering. Unplug it and plug it in again "
                   "(another USB port or cable helps).", style="yellow")
            return
        makes = [m for m in detail if m]
        if kind == "unauthorized":
            io.panel("Allow this computer on your phone", T.ALLOW_PROMPT[1:])
            return
        io.say("No phone found yet. Do this on the phone you want to erase:")
        make = makes[0] if makes else ""
        title, steps = T.usb_debugging_steps(make)
        io.panel(title, steps)
        if not make:
            io.say("Where 'Build number' is on some makes: Samsung: Settings > About phone > "
                   "Software information. Google Pixel: Settings > About phone. Xiaomi: "
                   "Settings > About phone > MIUI version. OnePlus: Settings > About device > "
                   "Version. iPhone: unlock it and tap 'Trust'.")
        io.panel("Then connect it", T.ALLOW_PROMPT)
        if T.on_linux():
            io.say("On Linux, if the phone never appears, allow this computer to talk to "
                   "phones (one command to copy; it asks for your password):")
            io.command(T.UDEV_COMMAND)
            io.say("then unplug the phone and plug it in again.")

    # -- CONFIRM -------------------------------------------------------------------------------
    def _inspect(self) -> bool:
        assert self.target is not None
        try:
            self.found = inspect(*self.target)
            return True
        except PhonewipeError as exc:
            self.io.say(f"The phone stopped answering ({exc.message}). Check the cable.",
                        style="yellow")
            return False

    def confirm(self) -> State | None:
        if not self._inspect():
            return State.WAIT
        found = self.found
        assert found is not None
        ident = found.identity
        self.io.step(2, STEPS, "Is this the phone to erase?")
        rooted = any(f.code == "root" and not f.message.startswith("No root") for f in found.findings)
        os_name = {"android": "Android", "ios": "iOS"}.get(ident.platform, ident.platform)
        lines = [f"Phone:    {phone_name(ident)}",
                 f"Serial:   {clean(ident.serial) or 'unknown'}"]
        if ident.imeis:
            lines.append(f"IMEI:     {', '.join(clean(i) or '' for i in ident.imeis)}")
        lines += [f"Storage:  {_gb(ident.capacity_bytes)}",
                  f"System:   {os_name} {clean(ident.os_version) or ''}".rstrip(),
                  f"Rooted:   {'yes' if rooted else 'no'}"]
        self.io.panel("Found", lines, numbered=False)
        serial = clean(ident.serial)
        if serial and serial == self.confirmed_serial:
            self.io.say("This is the phone you confirmed before.")
            return State.LOCKS
        if not self.io.confirm(f"Erase EVERYTHING on the {self.phone}? This cannot be undone."):
            self.io.say("Nothing was written: the phone is exactly as it was.", style="bold")
            self.exit_code = 1
            return None
        self.confirmed_serial = serial
        return State.LOCKS

    # -- LOCKS ---------------------------------------------------------------------------------
    def locks(self) -> State:
        self.io.step(3, STEPS, "Locks that would stop the next owner")
        while True:
            found = self.found
            assert found is not None
            if not found.blockers:
                self._no_locks(found)
                return State.ERASE
            for finding in found.blockers:
                title, meaning, steps = T.lock_help(finding.code, finding.message, self.make)
                if meaning:
                    self.io.say(meaning)
                self.io.panel(title, steps, style="magenta")
            if self.bench.state_file is not None:
                self.io.say(T.emulated_hint(str(self.bench.state_file),
                                            [f.code for f in found.blockers]), style="dim",
                            whole=True)
            self.io.pause("When you have done that, press Enter to check again "
                          "(Ctrl-C to stop: nothing has been written to the phone).")
            self.bench.before_check()
            still_there = self._same_phone()
            if still_there is None:
                self.io.say("The phone is not connected any more. Plug it back in.",
                            style="yellow")
                return State.WAIT
            self.target = still_there
            if not self._inspect():
                return State.WAIT
            found = self.found
            assert found is not None  # _inspect set it
            if found.blockers:
                self.io.say("Checked again: still locked.", style="bold magenta")
            else:
                self.io.say("Checked again: the lock is gone.", style="bold green")

    def _same_phone(self) -> tuple[Plugin, Endpoint] | None:
        assert self.target is not None
        for plugin, endpoint in self.bench.endpoints():
            if endpoint.address == self.target[1].address and ready(endpoint):
                return plugin, endpoint
        return None

    def _no_locks(self, found: Inspection) -> None:
        said = {"frp-clear": "No Google account is signed in.",
                "mdm-clear": "No organisation manages the phone."}
        lines = [said[f.code] for f in found.findings if f.code in said]
        lines += [f.message for f in found.findings if f.severity.value == "warning"]
        self.io.panel("No locks", lines or ["Nothing stops the erase."], numbered=False,
                      style="green")

    # -- ERASE ---------------------------------------------------------------------------------
    def erase(self) -> State:
        found, target = self.found, self.target
        assert found is not None and target is not None
        self.io.step(4, STEPS, "Erase")
        method = found.methods[0].name if found.methods else ""
        self.io.say(T.plan_text(method, rooted=method.startswith("adb-raw")))
        self.io.say(T.time_estimate(method, found.identity.capacity_bytes))
        self.io.say("Keep the cable in. Ctrl-C stops the erase, but a stopped erase leaves the "
                    "phone partly erased.", style="dim")
        settings = JobSettings(operator=Operator(name=self.name, title="owner"),
                               destination=Destination("resale", "sold by its owner"))
        out = self.options.out_dir
        cert_dir = check_output_dir(out / "certificates")

        def interrupted(count: int) -> None:
            self.abort.set()  # one Ctrl-C is enough here: the job stops at its next step
            self.io.say("Ctrl-C: stopping the erase at its next step...", style="bold yellow")

        with AuditLog(out / "audit.sqlite", signer=self.signer) as audit:
            with self.io.progress() as view:
                self.erase_started = True
                try:
                    results = erase_devices(
                        [target], settings, audit, self.signer, cert_dir,
                        progress=lambda _job, stage, done, total: view.update(stage, done, total),
                        abort=self.abort, on_interrupt=interrupted)
                finally:
                    audit.checkpoint("wipe")
        self.result = results[0]
        return State.DONE

    # -- DONE ----------------------------------------------------------------------------------
    def done(self) -> None:
        assert self.result is not None
        record, certificate = self.result.record, self.result.certificate
        self.exit_code = EXIT_BY_OUTCOME[record.outcome] if certificate else 8
        self.io.step(5, STEPS, "Done")
        outcome = record.outcome
        cert_line = (f"Certificate: {certificate}" if certificate
                     else f"No certificate could be written: {self.result.error}")
        if outcome in (Outcome.ERASED_VERIFIED, Outcome.ERASED_UNVERIFIED):
            self._erased(record, certificate, cert_line)
        elif outcome is Outcome.BLOCKED:
            self.io.say(f"NOT ERASED: {record.reason}", style="bold magenta")
            self.io.say("Nothing was written. Fix that, then run `phonewipe wipe` again.")
            self.io.say(f"{cert_line} (it records that the phone was not erased)", whole=True)
        elif self.abort.is_set():
            self.io.say("NOT ERASED: you stopped the erase.", style="bold red")
            self.io.say("The phone is not as it was before this step: part of it may already be "
                        "overwritten, and the rest still holds your data. Run `phonewipe wipe` "
                        "again to erase it completely.")
            self.io.say(f"{cert_line} (its record says FAILED)", whole=True)
        elif self._unplugged(record):
            self.io.say("NOT ERASED — the phone was disconnected during the erase. Plug it back "
                        "in and run `phonewipe wipe` again.", style="bold red")
            self.io.say("Part of it may already be overwritten; the rest still holds your data, "
                        "so do not sell it yet.")
            self.io.say(f"Details: {record.reason}", style="dim")
            self.io.say(f"{cert_line} (its record says FAILED)", whole=True)
        else:
            self.io.say(f"FAILED: {record.reason}", style="bold red")
            self.io.say("Run `phonewipe wipe` again. If it fails a second time, the phone's "
                        "storage may be faulty and cannot be trusted to forget: do not sell "
                        "it; have it recycled or destroyed.")
            self.io.say(f"{cert_line} (its record says FAILED)", whole=True)
        return None

    def _unplugged(self, record: Record) -> bool:
        if "disconnect" in record.reason or "unplug" in record.reason:
            return True
        try:
            return self._same_phone() is None
        except PhonewipeError:
            return True

    def _erased(self, record: Record, certificate: Path | None, cert_line: str) -> None:
        io = self.io
        verified = record.outcome is Outcome.ERASED_VERIFIED
        io.say(f"{record.result_text}: your {phone_name(record.device)} is erased"
               + (" and verified." if verified else ", not verified."),
               style="bold green" if verified else "bold yellow")
        v = record.verification
        plan = v.plan if v else {}
        method = record.sanitization.method if record.sanitization else ""
        io.say(T.outcome_meaning(record.outcome.value, method, v.samples_read if v else 0,
                                 float(plan.get("confidence", 0.99)),
                                 float(plan.get("residual", 0.001))))
        io.say(cert_line, style="bold", whole=True)
        fp = getattr(getattr(self.signer, "signing_info", None), "fingerprint", "")
        from phonewipe.certificates.keys import format_fingerprint
        samples = v.samples_read if v else 0
        if verified and "raw" in method:
            how = (f"every block of its storage was overwritten and {samples:,} random samples "
                   "were read back and checked.")
        elif verified:
            how = (f"its files were deleted, its free space filled and {samples:,} samples of "
                   "it read back and checked, then it was factory reset.")
        else:
            how = ("it was factory reset; the phone allows no read-back, so this is not "
                   "verified.")
        when = dt.datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
        listing = T.listing_text(
            phone_name(record.device), clean(record.device.serial) or "unknown",
            when.strftime("%-d %B %Y"), record.result_text, how,
            certificate.name if certificate else "(none)",
            format_fingerprint(fp) if fp else "unknown", __version__)
        saved = self._save_listing(certificate, listing)
        io.say("For your listing (copy and paste this paragraph"
               + (f"; it is also in {saved}):" if saved else "):"), style="bold", whole=True)
        io.say(listing)
        io.panel("What to do next", T.NEXT_STEPS, style="green")


    @staticmethod
    def _save_listing(certificate: Path | None, listing: str) -> Path | None:
        """The paragraph next to the certificate, to copy without a terminal's line breaks."""
        if certificate is None:
            return None
        path = certificate.with_name(certificate.stem + "-listing.txt")
        try:
            path.write_text(listing + "\n", encoding="utf-8")
        except OSError:
            return None
        return path


def _default_signer(keys_dir: Path) -> Any:
    from phonewipe.common import load_signer
    return load_signer(keys_dir)


def run_wipe(io: WipeIO, bench: Bench, options: WipeOptions) -> int:
    try:
        return WipeFlow(io, bench, options).run()
    finally:
        bench.close()


def register(cli: click.Group) -> None:
    from phonewipe.common import config_of, expected_errors, plugins_of

    @cli.command()
    @click.option("--emulate", "profile", metavar="PROFILE",
                  help="try it on an emulated phone (`phonewipe emulate --list`; `none`: no "
                       "phone, to see the help)")
    @click.option("--out", "out_dir", type=click.Path(path_type=Path),
                  help="where certificates go (default ~/phonewipe; emulated: ~/phonewipe/emulated)")
    @click.option("--keys", "keys_dir", type=click.Path(path_type=Path),
                  help="your signing key's directory (default: the config's, "
                       "~/.config/phonewipe/keys)")
    @click.option("--plain", is_flag=True, help="plain lines, even on a terminal")
    @click.pass_context
    @expected_errors
    def wipe(ctx: click.Context, profile: str | None, out_dir: Path | None,
             keys_dir: Path | None, plain: bool) -> None:
        """Erase your own phone before selling it, step by step (no options needed)."""
        from phonewipe.wipe_bench import EmulatedBench
        out = out_dir or Path.home() / "phonewipe" / ("emulated" if profile else "")
        options = WipeOptions(keys_dir=keys_dir or config_of(ctx).keys_dir, out_dir=out)
        io = choose_io(plain)
        if profile:
            io.say("Trying it with no phone connected (emulation)..." if profile == "none"
                   else f"Starting an emulated phone ({profile})...")
        bench = EmulatedBench(profile) if profile else Bench(plugins_of(ctx))
        sys.exit(run_wipe(io, bench, options))
