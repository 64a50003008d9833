"""What the commands share: consoles, the one-line error exit, the plugin registry and its
flags, operator options and job settings, the signer."""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from phonewipe.erase.config import DEFAULT_KEYS_DIR, DESTINATIONS, Config
from phonewipe.erase.errors import PhonewipeError, UsageError
from phonewipe.erase.job import JobSettings
from phonewipe.erase.model import Destination, Endpoint, Operator, Outcome
from phonewipe.erase.plugin import Plugin, Registry
from phonewipe.erase.strings import escape_controls
from phonewipe.erase.verify import MODES, check_plan_settings

console = Console()
err_console = Console(stderr=True)

OUTCOME_STYLE = {Outcome.ERASED_VERIFIED: "green", Outcome.ERASED_UNVERIFIED: "yellow",
                 Outcome.BLOCKED: "magenta", Outcome.FAILED: "red"}


def fail(exc: PhonewipeError, as_json: bool = False) -> None:
    """One error line, then exit. The message may quote what a device said: brackets rich
    would take for markup and control codes that move the cursor are shown escaped. With
    ``--json`` the error is also JSON on stdout: ``{"error", "advice", "exit_code"}``."""
    if as_json:
        click.echo(json.dumps({"error": escape_controls(exc.message),
                               "advice": escape_controls(exc.advice),
                               "exit_code": exc.exit_code}))
    err_console.print(f"[bold red]error:[/] {escape(escape_controls(exc.line()))}",
                      highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


def wants_json(kwargs: dict[str, Any] | None = None) -> bool:
    """Did the user ask for JSON (``--json``; ``--json-lines`` for the station)?"""
    if kwargs and (kwargs.get("as_json") or kwargs.get("json_lines")):
        return True
    return any(arg in ("--json", "--json-lines") for arg in sys.argv[1:])


def as_phonewipe_error(exc: BaseException) -> PhonewipeError | None:
    """A full disk, a read-only or forbidden directory: one line and exit 8, not a traceback."""
    import errno
    import sqlite3

    from phonewipe.erase.errors import OutputError
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                   errno.EACCES, errno.EPERM, errno.EFBIG):
        where = f" ({exc.filename})" if exc.filename else ""
        return OutputError(f"cannot write{where}: {exc.strerror or exc}",
                           "free space or choose a writable --out directory, then run again")
    if isinstance(exc, sqlite3.OperationalError) and any(
            word in str(exc) for word in ("full", "readonly", "disk I/O")):
        return OutputError(f"cannot write the audit log: {exc}",
                           "free space or choose a writable --out directory, then run again")
    return None


def expected_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures print one line and exit with their code; no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PhonewipeError as exc:
            fail(exc, wants_json(kwargs))
        except KeyboardInterrupt:
            err_console.print("interrupted: the audit log holds every step taken so far")
            sys.exit(130)
        except Exception as exc:
            known = as_phonewipe_error(exc)
            if known is None:
                raise
            fail(known, wants_json(kwargs))
    return wrapper


def config_of(ctx: click.Context) -> Config:
    return ctx.obj["config"]


REGISTRY = Registry.load()  # the installed protocol plugins: their options become flags


def plugin_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Each plugin's declared options as global flags (``--<plugin>-<key>``)."""
    for plugin, spec in reversed(REGISTRY.option_specs()):
        kind: Any = spec.type
        if spec.range and spec.type in (int, float):
            low, high = spec.range
            kind = click.IntRange(int(low), int(high)) if spec.type is int else \
                click.FloatRange(low, high)
        default = "" if spec.default in (None, ()) else f" (default {spec.default})"
        func = click.option(spec.flag(plugin), *spec.aliases, spec.value_key(plugin), type=kind,
                            multiple=spec.multiple, default=None, metavar=spec.metavar or None,
                            help=f"{spec.help}{default}; [{plugin}] {spec.key} in the config")(func)
    return func


def plugins_of(ctx: click.Context) -> dict[str, Plugin]:
    return REGISTRY.plugins(ctx.obj["plugin_options"])


def discover(plugins: dict[str, Plugin]) -> list[tuple[Plugin, Endpoint]]:
    """Every plugin's devices. A plugin that cannot look (its server does not start, say)
    does not hide the phones the others found: it is one warning line then; when nothing
    was found at all, its error is the command's."""
    found: list[tuple[Plugin, Endpoint]] = []
    failed: list[tuple[str, PhonewipeError]] = []
    for plugin in plugins.values():
        try:
            found += [(plugin, endpoint) for endpoint in plugin.discover()]
        except PhonewipeError as exc:
            failed.append((plugin.name, exc))
    if failed and not found:
        raise failed[0][1]
    for name, error in failed:
        err_console.print(f"warning: the {escape(name)} plugin cannot look for devices: "
                          f"{escape(error.line())}", highlight=False, soft_wrap=True)
    return found


def method_help() -> str:
    """The `--method` help: each device family's methods, as the plugins declare them."""
    listed = REGISTRY.methods_text()
    return "erase method name (default: the strongest the device allows)" + \
        (f"; methods by device family: {listed}" if listed else "")


def require_operator(operator: Operator) -> None:
    """A real erasure names who did it and for which organization (the certificate says so)."""
    missing = [what for what, value in (("operator name", operator.name),
                                        ("organization", operator.organization))
               if not value.strip() or value == "unknown"]
    if missing:
        raise UsageError(f"no {' and no '.join(missing)} for the certificates",
                         "pass --operator NAME --organization ORG, or set name and organization "
                         "in the [operator] table of the config (phonewipe.toml)")


def operator_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--operator", help="name of the person performing the sanitization"),
        click.option("--title", help="operator's title"),
        click.option("--organization", help="organization performing the sanitization"),
        click.option("--location", help="where the sanitization takes place"),
        click.option("--destination", type=click.Choice(DESTINATIONS), help="media destination"),
        click.option("--keys", "keys_dir", type=click.Path(path_type=Path),
                     help=f"signing key directory (default {DEFAULT_KEYS_DIR})"),
        click.option("--verify", "verify_mode", type=click.Choice(MODES), help="verification mode"),
        click.option("--confidence", type=float, help="quick mode: confidence C (default 0.99)"),
        click.option("--residual", type=float, help="quick mode: largest escaped share p (default 0.001)"),
        # what the certificate's scope sentence states ([media] in the config; unknown when
        # neither says)
        click.option("--sim-removed/--sim-not-removed", "sim_removed", default=None,
                     help="the operator removed the SIM card(s) before the erase (or not)"),
        click.option("--microsd-removed/--microsd-not-removed", "microsd_removed", default=None,
                     help="the operator removed the microSD card before the erase (or not)"),
        click.option("--esim", type=click.Choice(["erased", "not-present", "unknown"]),
                     help="the phone's eSIM profiles: erased, not present, or unknown"),
        click.option("--media-source", help="NIST App. G media source (default: the asset "
                                            "list's owner, else [media] source)"),
        click.option("--classification", help="NIST App. G classification of the data"),
        click.option("--notes", help="NIST App. G notes for the certificates"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def job_settings(config: Config, kw: dict[str, Any], method: str | None = None) -> JobSettings:
    """The settings of the jobs to run, checked (method, plan) before any phone is touched."""
    REGISTRY.check_method(method)
    operator = config.operator
    for field_name, key in (("name", "operator"), ("title", "title"),
                            ("organization", "organization"), ("location", "location")):
        if kw.get(key):
            operator = replace(operator, **{field_name: kw[key]})
    destination = Destination(kind=kw["destination"]) if kw.get("destination") else config.destination

    def given(key: str) -> Any:
        return kw[key] if kw.get(key) is not None else getattr(config, key)

    media = config.media
    for field_name, key in (("sim_removed", "sim_removed"), ("microsd_removed", "microsd_removed"),
                            ("source", "media_source"), ("classification", "classification"),
                            ("notes", "notes")):
        if kw.get(key) is not None:
            media = replace(media, **{field_name: kw[key]})
    if kw.get("esim"):
        media = replace(media, esim="" if kw["esim"] == "unknown" else kw["esim"].replace("-", " "))
    settings = JobSettings(operator=operator, destination=destination, method=method,
                           verify_mode=given("verify_mode"), confidence=given("confidence"),
                           residual=given("residual"), media=media, fleet_mdm=config.fleet_mdm)
    check_plan_settings(settings.verify_mode, settings.confidence, settings.residual)
    return settings


def load_signer(keys_dir: Path) -> Any:
    """The signer for this command: the key in `keys_dir`, and the config's [signing]
    time-stamping authority (RFC 3161) when one is set."""
    from phonewipe.certificates.sign import CertificateSigner
    ctx = click.get_current_context(silent=True)
    config = ctx.obj.get("config") if ctx is not None and isinstance(ctx.obj, dict) else None
    if config is None or not getattr(config, "tsa_url", ""):
        return CertificateSigner(keys_dir)
    return CertificateSigner(keys_dir, tsa_url=config.tsa_url, tsa_timeout=config.tsa_timeout)


