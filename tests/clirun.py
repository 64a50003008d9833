"""The command line as the tests run it: `python -m phonewipe` in a subprocess, or, for the
commands that only read and write files (certificates, audit logs, keys, reports, finds,
attestations, destruction records), the same click entry point inside the test process
through click's CliRunner. A subprocess spends about a second starting the interpreter and
importing pyHanko and reportlab; those commands made a third of the suite's CPU time.

Whatever starts servers, handles signals, follows a phone or must be killed (erase, station,
demo, emulate, serve, wipe, devices, store, verify) stays a subprocess. An exception that
escapes in process is appended to stderr as its traceback, as the interpreter would print
it, so "no traceback" assertions still hold."""
from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Mapping

PHONEWIPE = [sys.executable, "-m", "phonewipe"]
IN_PROCESS = {"attest", "audit", "destroy", "find", "keys", "report"}
IN_PROCESS_CERT = {"show", "verify", "validate"}


def command_words(args: list[str]) -> list[str]:
    """The subcommand and its first word, past any global options before them."""
    from phonewipe.cli import cli
    for i, arg in enumerate(args):
        if arg in cli.commands:
            return args[i:i + 2]
    return []


def in_process(args: list[str]) -> bool:
    words = command_words(args)
    if not words:
        return False
    return words[0] in IN_PROCESS or (words[0] == "cert" and words[1:] and words[1] in IN_PROCESS_CERT)


def run(*args: str, env: Mapping[str, str | None] | None = None, cwd: Path | str | None = None,
        stdin: str | None = "", timeout: float = 180) -> subprocess.CompletedProcess:
    """`phonewipe ARGS` with `env` added to this process's environment; `stdin` is what a pipe
    would carry (never a terminal)."""
    argv = list(args)
    if in_process(argv):
        return _invoke(argv, dict(env or {}), cwd, stdin or "")
    return subprocess.run([*PHONEWIPE, *argv], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def _invoke(argv: list[str], env: dict[str, str | None], cwd: Path | str | None,
            stdin: str) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from phonewipe.cli import cli
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(cli, argv, input=stdin, env=env, obj={},
                                    prog_name="phonewipe", catch_exceptions=True)
    finally:
        os.chdir(before)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["phonewipe", *argv], result.exit_code, result.stdout,
                                       stderr)
