"""The top-level click group: global options (``--config`` and every plugin's flags, e.g.
``--adb-port``) are accepted after the subcommand too, and with ``--json`` a command-line
mistake is JSON on stdout like every other error."""
from __future__ import annotations

import json
import sys
from typing import Any

import click


class GlobalOptionsGroup(click.Group):
    """``phonewipe erase --adb-port 5038 SERIAL`` works as ``phonewipe --adb-port 5038 erase
    SERIAL``: before parsing, each global option found after the subcommand (and not one
    of that subcommand's own options) is moved in front of it, with its value."""

    def _global_options(self, ctx: click.Context) -> dict[str, bool]:
        """Option name -> whether it takes a value."""
        names: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden:
                for name in (*param.opts, *param.secondary_opts):
                    names[name] = not (param.is_flag or param.count)
        return names

    def _command_options(self, ctx: click.Context, path: list[str]) -> set[str]:
        """The option names of the (sub)command `path` names, all the way down."""
        names: set[str] = set()
        command: click.Command | None = self
        for word in path:
            if not isinstance(command, click.Group):
                break
            command = command.get_command(ctx, word)
            if command is None:
                break
            for param in command.get_params(ctx):
                if isinstance(param, click.Option):
                    names.update((*param.opts, *param.secondary_opts))
        return names

    def move_global_options(self, ctx: click.Context, args: list[str]) -> list[str]:
        known = self._global_options(ctx)
        # find the subcommand: the first word that is neither an option nor a global value
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                return args
            if arg.startswith("-"):
                name = arg.split("=", 1)[0]
                i += 2 if known.get(name) and "=" not in arg else 1
                continue
            break
        if i >= len(args):
            return args
        head, rest = args[:i], args[i:]
        path = [w for w in rest if not w.startswith("-")][:2]  # e.g. "cert verify"
        own = self._command_options(ctx, path)
        moved: list[str] = []
        kept: list[str] = []
        j = 0
        while j < len(rest):
            arg = rest[j]
            if arg == "--":
                kept += rest[j:]
                break
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg
            if name in known and name not in own:
                takes_value = known[name] and "=" not in arg
                moved += rest[j:j + (2 if takes_value else 1)]
                j += 2 if takes_value else 1
                continue
            kept.append(arg)
            j += 1
        return head + moved + kept

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.move_global_options(ctx, list(args)))

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode or ("--json" not in argv and "--json-lines" not in argv):
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(130)
        except click.ClickException as exc:  # a mistake on the command line, as JSON too
            click.echo(json.dumps({"error": exc.format_message(),
                                   "advice": "see `phonewipe --help` and the command's --help",
                                   "exit_code": exc.exit_code}))
            exc.show()
            sys.exit(exc.exit_code)
