"""The input/output `phonewipe wipe` talks through: rich prompts, panels and a progress bar
on a terminal (`TerminalIO`), one plain line per step when not on one (`PlainIO`: pipes,
logs, screen readers). The flow only ever calls this interface, so tests can script it.

Everything passed in is plain text, never markup: device strings (a model called
``[red]x``) print as themselves."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Protocol, TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text


class Stopped(Exception):
    """The person ended the flow (Ctrl-C, or the input closed)."""


class Progress(Protocol):
    def update(self, stage: str, done: int, total: int) -> None: ...


class WipeIO(Protocol):
    def step(self, number: int, total: int, title: str) -> None: ...
    def say(self, text: str, style: str = "", whole: bool = False) -> None:
        """A paragraph; ``whole``: never broken by the program (paths), only by the terminal."""
    def panel(self, title: str, lines: list[str], numbered: bool = True,
              style: str = "cyan") -> None: ...
    def command(self, text: str, style: str = "bold green") -> None:
        """Text to copy (a command, a listing): one line the terminal wraps, no box."""
    def ask(self, question: str) -> str: ...
    def confirm(self, question: str) -> bool: ...
    def pause(self, prompt: str) -> None: ...
    def waiting(self, text: str) -> AbstractContextManager[None]: ...
    def progress(self) -> AbstractContextManager[Progress]: ...


STAGES = {"erasing": "Erasing", "verifying": "Checking", "finishing": "Finishing"}
VERBS = {"erasing": " sent", "verifying": " read"}  # sent: not yet confirmed written


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _left(seconds: float) -> str:
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    return f"about {round(seconds / 60)} min left"


class _Rate:
    """Time left measured from the speed so far (the only honest estimate)."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[float, int]] = {}

    def left(self, stage: str, done: int, total: int) -> float | None:
        now = time.monotonic()
        first = self.started.setdefault(stage, (now, done))
        elapsed, moved = now - first[0], done - first[1]
        if elapsed < 1.0 or moved <= 0 or total <= 0:
            return None
        return (total - done) / (moved / elapsed)


def _read_line(stream: TextIO) -> str:
    line = stream.readline()
    if not line:  # the input closed: nobody is there to answer
        raise Stopped("the input closed")
    return line.rstrip("\r\n")


class TerminalIO:
    def __init__(self, console: Console | None = None, stdin: TextIO | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.stdin = stdin or sys.stdin

    def step(self, number: int, total: int, title: str) -> None:
        self.console.print()
        self.console.rule(Text(f"Step {number} of {total}: {title}", style="bold"), align="left")

    def say(self, text: str, style: str = "", whole: bool = False) -> None:
        self.console.print(Text(text, style=style), soft_wrap=whole)

    def panel(self, title: str, lines: list[str], numbered: bool = True,
              style: str = "cyan") -> None:
        from rich.table import Table
        body = Table.grid(padding=(0, 1))  # numbers in their own column: wrapped lines align
        if numbered:
            body.add_column(justify="right")
        body.add_column()
        for i, line in enumerate(lines, 1):
            body.add_row(*([f"{i}."] if numbered else []), Text(line))
        self.console.print(Panel(body, title=Text(title, style="bold"),
                                 title_align="left", border_style=style))

    def command(self, text: str, style: str = "bold green") -> None:
        # one line to copy: never broken by rich (the terminal wraps it for display only)
        self.console.print(Text(text, style=style), soft_wrap=True)

    def _prompt(self, question: str) -> str:
        self.console.print(Text(question, style="bold yellow"), end=" ")
        return _read_line(self.stdin)

    def ask(self, question: str) -> str:
        while True:
            answer = self._prompt(question).strip()
            if answer:
                return answer

    def confirm(self, question: str) -> bool:
        while True:
            answer = self._prompt(f"{question} [y/N]").strip().lower()
            if answer in ("y", "yes"):
                return True
            if answer in ("", "n", "no"):
                return False

    def pause(self, prompt: str) -> None:
        self._prompt(prompt)

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        with self.console.status(Text(text), spinner="dots"):
            yield

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn
        from rich.progress import Progress as Bar
        rate = _Rate()
        lock = threading.Lock()
        tasks: dict[str, Any] = {}  # rich TaskIDs
        bar = Bar(TextColumn("{task.description:<10}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[detail]}"), console=self.console, transient=False)

        class _View:
            def update(self, stage: str, done: int, total: int) -> None:
                left = rate.left(stage, done, total)
                detail = f"{_mib(done)} of {_mib(total)}{VERBS.get(stage, '')}" \
                    if total > 4096 else ""
                if left is not None and done < total:
                    detail += f", {_left(left)}"
                with lock:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(STAGES.get(stage, stage.capitalize()),
                                                    total=total or 1, detail="")
                    bar.update(tasks[stage], completed=done, total=total or 1, detail=detail)
        with bar:
            yield _View()


class PlainIO:
    """One line per step and per tenth of progress; answers read as lines from stdin."""

    def __init__(self, out: TextIO | None = None, stdin: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, number: int, total: int, title: str) -> None:
        self._line(f"== Step {number} of {total}: {title}")

    def say(self, text: str, style: str = "", whole: bool = False) -> None:
        self._line(text)

    def panel(self, title: str, lines: list[str], numbered: bool = True,
              style: str = "") -> None:
        self._line(f"{title}:")
        for i, line in enumerate(lines, 1):
            self._line(f"  {i}. {line}" if numbered else f"  {line}")

    def command(self, text: str, style: str = "") -> None:
        self._line(f"  {text}")

    def ask(self, question: str) -> str:
        while True:
            self._line(question)
            answer = _read_line(self.stdin).strip()
            if answer:
                return answer

    def confirm(self, question: str) -> bool:
        self._line(f"{question} [y/N]")
        return _read_line(self.stdin).strip().lower() in ("y", "yes")

    def pause(self, prompt: str) -> None:
        self._line(prompt)
        _read_line(self.stdin)

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        self._line(text)
        yield

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        rate = _Rate()
        shown: dict[str, int] = {}
        io = self

        class _View:
            def update(self, stage: str, done: int, total: int) -> None:
                tenth = 10 * done // total if total else 10
                if shown.get(stage, -1) >= tenth:
                    return
                shown[stage] = tenth
                left = rate.left(stage, done, total)
                detail = f" ({_mib(done)} of {_mib(total)}{VERBS.get(stage, '')})" \
                    if total > 4096 else ""
                more = f", {_left(left)}" if left is not None and done < total else ""
                io._line(f"{STAGES.get(stage, stage)}: {tenth * 10}%{detail}{more}")
        yield _View()


def choose_io(plain: bool = False) -> WipeIO:
    if not plain and sys.stdin.isatty() and sys.stdout.isatty():
        return TerminalIO()
    return PlainIO()
