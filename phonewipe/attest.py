"""`phonewipe attest`: walk the operator through a platform's own wipe (BlackBerry, Windows
Phone, any model phonewipe cannot drive), record each confirmation, sign the record.

Answers come from the terminal (asked one step at a time), from `--answers FILE` (`-`: stdin;
one yes/no line per step, for scripts) or `--yes` (every step confirmed at once, and the
record says so). With none of them and stdin not a terminal it refuses: an attestation
nobody answered is not one. Exit 10 when every step is confirmed (ERASED, NOT VERIFIED: an
attested wipe is never verified), 12 when a step is answered no (FAILED), 130 on Ctrl-C."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import click
from rich.markup import escape

from phonewipe.entered import (
    CERT_DIR,
    destination_option,
    device_options,
    entered_identity,
    operator_entry_options,
    require_out,
    sign_and_log,
)
from phonewipe.erase.errors import UsageError
from phonewipe.erase.manual import ManualPlatform, Step, catalogue, find_platform, load_platform_file
from phonewipe.erase.model import Outcome
from phonewipe.erase.strings import clean

YES, NO = ("y", "yes"), ("n", "no")


class Answers:
    """Where the yes/no answers come from: the terminal, a file or stdin, or --yes."""

    def __init__(self, how: str, source: IO[str] | None = None) -> None:
        self.how, self.source = how, source

    def ask(self, step: Step, n: int, total: int) -> bool:
        if self.how == "--yes":
            return True
        if self.how == "interactive":
            while True:
                reply = click.prompt(f"{step.confirm} [y/n]", default="", show_default=False,
                                     prompt_suffix=" ", err=True).strip().lower()
                if reply in YES or reply in NO:
                    return reply in YES
                click.echo("answer y (done) or n (not done)", err=True)
        assert self.source is not None
        line = self.source.readline()
        if not line:
            raise EOFError(f"the answers ended before step {n} of {total} ({step.id})")
        reply = line.strip().lower()
        if reply not in YES + NO:
            raise UsageError(f"answer {reply[:40]!r} for step {n} ({step.id}) is not yes or no",
                             "give one line per step: y, yes, n or no")
        return reply in YES


def answers_from(yes: bool, answers: str | None) -> Answers:
    if yes and answers:
        raise UsageError("--yes and --answers both given", "use one of them")
    if yes:
        return Answers("--yes")
    if answers == "-":
        return Answers("answers on stdin", sys.stdin)
    if answers:
        try:
            return Answers("answers on stdin", open(answers, encoding="utf-8"))  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read the answers {answers}: {exc.strerror or exc}",
                             "give a file with one yes/no line per step, or - for stdin") from None
    if not sys.stdin.isatty():
        raise UsageError("stdin is not a terminal, so nobody can answer the steps",
                         "run it on a terminal, or pass --answers - (one yes/no line per step "
                         "on stdin) or --yes (every step done)")
    return Answers("interactive")


def _platform(platform: str | None, steps_file: Path | None) -> ManualPlatform:
    if steps_file is not None:
        return load_platform_file(steps_file)
    if not platform:
        raise UsageError("no platform named", "pass --platform (`phonewipe attest --list`) or "
                                              "--steps FILE")
    return find_platform(platform)


def _walk(attestation: Any, answers: Answers, say: Any) -> None:
    total = len(attestation.platform.steps)
    while (step := attestation.next_step()) is not None:
        n = len(attestation.confirmations) + 1
        say(f"step {n} of {total} ({step.id}): {step.do}")
        try:
            ok = answers.ask(step, n, total)
        except EOFError as exc:
            attestation.interrupted(str(exc))
            raise UsageError(str(exc), "give one yes/no line for every step "
                                       f"({total} in all), or run it on a terminal") from None
        except UsageError as exc:
            attestation.interrupted(exc.message)
            raise
        except (KeyboardInterrupt, click.Abort):
            attestation.interrupted("interrupted by the operator (Ctrl-C)")
            raise KeyboardInterrupt from None
        attestation.confirm(step, ok, answers.how)
        say(f"  {step.confirm} {'yes' if ok else 'NO'} ({answers.how})")


def register(cli: click.Group) -> None:
    from phonewipe.common import (
        config_of,
        console,
        err_console,
        expected_errors,
        job_settings,
        load_signer,
        require_operator,
    )

    @cli.command()
    @click.option("--platform", help="the catalogue entry: blackberry-10, blackberry-os, "
                                     "windows-phone, generic (`--list`)")
    @click.option("--steps", "steps_file", type=click.Path(path_type=Path),
                  help="your own catalogue entry (TOML, the format of fixtures/manual/)")
    @click.option("--list", "list_only", is_flag=True, help="list the platforms and their steps")
    @click.option("--yes", is_flag=True, help="confirm every step at once (the record says so)")
    @click.option("--answers", metavar="FILE|-", help="one yes/no line per step (- : stdin)")
    @device_options
    @operator_entry_options
    @destination_option
    @click.pass_context
    @expected_errors
    def attest(ctx: click.Context, platform: str | None, steps_file: Path | None,
               list_only: bool, yes: bool, answers: str | None, keys_dir: Path | None,
               photos: tuple[Path, ...], out_dir: Path | None, as_json: bool, **kw: Any) -> None:
        """Attest a wipe the operator did with the phone's own function, step by step
        (platforms phonewipe cannot drive): ERASED, NOT VERIFIED, exit 10; a step not done:
        FAILED, exit 12."""
        if list_only:
            for entry in catalogue().values():
                click.echo(f"{entry.platform:<15} {entry.name}: {len(entry.steps)} steps")
            return
        from phonewipe.erase.attest import Attestation
        from phonewipe.erase.audit import AuditLog
        from phonewipe.erase.photos import check_photos
        from phonewipe.erase.runner import check_output_dir
        out_dir = require_out(out_dir)
        entry = _platform(platform, steps_file)
        identity = entered_identity(entry.platform, kw)
        if not identity.manufacturer and entry.manufacturer:  # the catalogue's, when not typed
            identity = replace(identity, manufacturer=entry.manufacturer)
        if not entry.manufacturer and not (identity.manufacturer and identity.model):
            raise UsageError(f"{entry.name}: the phone's make and model are not named",
                             "pass --manufacturer and --model: the certificate says whose "
                             "reset ran on which model")
        config = config_of(ctx)
        settings = job_settings(config, kw)
        require_operator(settings.operator)
        settings = replace(settings, asset_tag=identity_tag(kw))
        checked = check_photos(list(photos))
        how = answers_from(yes, answers)
        check_output_dir(out_dir)
        signer = load_signer(keys_dir or config.keys_dir)

        def say(text: str) -> None:  # with --json, stdout is the JSON alone
            (err_console if as_json else console).print(escape(text), highlight=False,
                                                        soft_wrap=True)

        with AuditLog(out_dir / "audit.sqlite", signer=signer) as audit:
            attestation = Attestation(entry, identity, settings, audit)
            attestation.start(checked)
            say(f"{entry.name} for {identity.model or 'the phone'} "
                f"{identity.serial or ', '.join(identity.imeis)}: do each step, then answer")
            try:
                _walk(attestation, how, say)
            except KeyboardInterrupt:
                console.print("interrupted: no certificate; the audit log says how far it got",
                              highlight=False)
                sys.exit(130)
            record = attestation.record()
            path = sign_and_log(record, signer, audit, out_dir / CERT_DIR)
        if as_json:
            click.echo(json.dumps({"result": record.result_text, "outcome": record.outcome.value,
                                   "certificate": str(path), "record_sha256": record.sha256(),
                                   "reason": record.reason}, sort_keys=True))
        else:
            say(f"{record.result_text}: {record.reason}")
            console.print("certificate:", highlight=False)
            click.echo(str(path))
        sys.exit(10 if record.outcome is Outcome.ERASED_UNVERIFIED else 12)


def identity_tag(kw: dict[str, Any]) -> str:
    return clean(kw.get("asset_tag") or "", 64)
