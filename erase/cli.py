"""phonewipe command line: thin commands over the public API."""
from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .audit import AuditLog, verify_log
from .config import DEFAULT_KEYS_DIR, DESTINATIONS, Config, load_config
from .errors import DeviceNotFound, PhonewipeError, UsageError
from .job import JobSettings
from .model import Destination, Endpoint, Outcome
from .plugin import Plugin, PluginOptions, Registry
from .runner import JobResult, check_output_dir, erase_devices, exit_code
from .verify import MODES, check_plan_settings

console = Console()
err_console = Console(stderr=True)

OUTCOME_STYLE = {Outcome.ERASED_VERIFIED: "green", Outcome.ERASED_UNVERIFIED: "yellow",
                 Outcome.BLOCKED: "magenta", Outcome.FAILED: "red"}


def _fail(exc: PhonewipeError) -> None:
    """One error line (the message may hold brackets rich would take for markup), then exit."""
    err_console.print(f"[bold red]error:[/] {escape(exc.line())}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


def expected_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures print one line and exit with their code; no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PhonewipeError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            err_console.print("interrupted: the audit log holds every step taken so far")
            sys.exit(130)
    return wrapper


def _config(ctx: click.Context) -> Config:
    return ctx.obj["config"]


REGISTRY = Registry.load()  # the installed protocol plugins: their options become flags


def _plugin_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Each plugin's declared options as global flags (``--<plugin>-<key>``)."""
    for plugin, spec in reversed(REGISTRY.option_specs()):
        kind: Any = spec.type
        if spec.range and spec.type in (int, float):
            low, high = spec.range
            kind = click.IntRange(int(low), int(high)) if spec.type is int else \
                click.FloatRange(low, high)
        default = "" if spec.default in (None, ()) else f" (default {spec.default})"
        func = click.option(spec.flag(plugin), spec.value_key(plugin), type=kind,
                            multiple=spec.multiple, default=None, metavar=spec.metavar or None,
                            help=f"{spec.help}{default}; [{plugin}] {spec.key} in the config")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phonewipe")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML config (operator, destination, keys); default ./phonewipe.toml or "
                   "~/.config/phonewipe/config.toml")
@_plugin_flags
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, **flags: Any) -> None:
    """Erase phones, verify by sampling, issue signed certificates."""
    ctx.ensure_object(dict)
    logging.getLogger("pyhanko").setLevel(logging.ERROR)  # its warnings are not ours to print
    for name, why in REGISTRY.failures.items():
        err_console.print(f"warning: protocol plugin {escape(name)} skipped: {escape(why)}",
                          highlight=False, soft_wrap=True)
    try:
        config = load_config(config_path, REGISTRY)
    except PhonewipeError as exc:
        _fail(exc)
    ctx.obj["config"] = config
    given = {key: list(value) if isinstance(value, tuple) else value
             for key, value in flags.items() if value not in (None, ())}
    ctx.obj["plugin_options"] = PluginOptions({**config.plugin_values, **given})


def _plugins(ctx: click.Context) -> dict[str, Plugin]:
    return REGISTRY.plugins(ctx.obj["plugin_options"])


def _discover(plugins: dict[str, Plugin]) -> list[tuple[Plugin, Endpoint]]:
    found = []
    for plugin in plugins.values():
        found += [(plugin, endpoint) for endpoint in plugin.discover()]
    return found


# -- devices ----------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@expected_errors
def devices(ctx: click.Context, as_json: bool) -> None:
    """List connected phones in every mode the plugins know."""
    found = _discover(_plugins(ctx))
    if as_json:
        click.echo(json.dumps([{"plugin": e.plugin, "mode": e.mode, "address": e.address,
                                "state": e.label} for _, e in found], indent=2))
        return
    if not found:
        console.print("no devices found: check the cable, enable USB debugging and accept the prompt")
        return
    table = Table("plugin", "mode", "address", "state")
    for _, e in found:
        table.add_row(e.plugin, e.mode, e.address, e.label)
    console.print(table)
    for name, why in REGISTRY.failures.items():
        console.print(f"plugin {escape(name)} not loaded: {escape(why)}", highlight=False)


# -- erase --------------------------------------------------------------------------------
def _operator_options(func: Callable[..., Any]) -> Callable[..., Any]:
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
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(config: Config, kw: dict[str, Any], method: str | None = None) -> JobSettings:
    operator = config.operator
    for field_name, key in (("name", "operator"), ("title", "title"),
                            ("organization", "organization"), ("location", "location")):
        if kw.get(key):
            operator = replace(operator, **{field_name: kw[key]})
    destination = Destination(kind=kw["destination"]) if kw.get("destination") else config.destination
    given = lambda key: kw[key] if kw.get(key) is not None else getattr(config, key)  # noqa: E731
    settings = JobSettings(operator=operator, destination=destination, method=method,
                           verify_mode=given("verify_mode"), confidence=given("confidence"),
                           residual=given("residual"))
    check_plan_settings(settings.verify_mode, settings.confidence, settings.residual)
    return settings


def _load_signer(keys_dir: Path) -> Any:
    from certificates.sign import CertificateSigner
    return CertificateSigner(keys_dir)


class _ProgressView:
    """A live rich table: one row per device, updated from the job threads."""

    def __init__(self, names: dict[str, str], enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeRemainingColumn(), console=err_console, disable=not enabled)
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, job_id: str, stage: str, done: int, total: int) -> None:
        with self._lock:
            task = self.tasks.get(job_id)
            if task is None:
                task = self.tasks[job_id] = self.progress.add_task(job_id[:8], total=total or 1)
            self.progress.update(task, description=f"{job_id[:8]} {stage:<10}", completed=done,
                                 total=total or 1)


def _results_table(results: list[JobResult]) -> Table:
    table = Table("device", "serial", "method", "verification", "result", "certificate / reason")
    for r in results:
        rec = r.record
        device = " ".join(x for x in (rec.device.manufacturer, rec.device.model) if x) or rec.endpoint.address
        method = rec.sanitization.method if rec.sanitization else "-"
        ver = rec.verification
        verification = f"{ver.mode} {ver.status}" if ver else "-"
        style = OUTCOME_STYLE[rec.outcome]
        detail = str(r.certificate) if r.certificate else r.error
        if rec.reason:
            detail += f"\n[dim]{rec.reason}[/]"
        table.add_row(device, rec.device.serial or rec.endpoint.address, method, verification,
                      f"[{style}]{rec.result_text}[/]", detail)
    return table


def run_erase(targets: list[tuple[Plugin, Endpoint]], settings: JobSettings, out_dir: Path,
              keys_dir: Path, as_json: bool, audit_path: Path | None = None,
              abort: threading.Event | None = None) -> list[JobResult]:
    """Self-checks first (output writable, key loads, audit opens), then erase everything."""
    check_output_dir(out_dir)
    cert_dir = check_output_dir(out_dir / "certificates")
    signer = _load_signer(keys_dir)

    def interrupted(count: int) -> None:
        err_console.print("Ctrl-C: finishing the running jobs; press Ctrl-C again to abort them "
                          "(each is then recorded FAILED, with its certificate)" if count == 1 else
                          "Ctrl-C: aborting the running jobs at their next step; Ctrl-C again "
                          "quits without waiting (the audit log keeps every step)")
    with AuditLog(audit_path or out_dir / "audit.sqlite") as audit:
        view = _ProgressView({}, enabled=not as_json)
        with view.progress:
            results = erase_devices(targets, settings, audit, signer, cert_dir, view.update,
                                    abort=abort, on_interrupt=interrupted)
    if as_json:
        click.echo(json.dumps([{"serial": r.record.device.serial, "outcome": r.record.outcome.value,
                                "result": r.record.result_text, "reason": r.record.reason,
                                "certificate": str(r.certificate) if r.certificate else None,
                                "record_sha256": r.record.sha256()} for r in results], indent=2))
    else:
        console.print(_results_table(results))
        console.print(f"audit log: {audit_path or out_dir / 'audit.sqlite'}")
    return results


def _match(targets: list[tuple[Plugin, Endpoint]], serial: str) -> list[tuple[Plugin, Endpoint]]:
    direct = [t for t in targets if t[1].address == serial]
    if direct:
        return direct
    matches, unidentified = [], []
    for plugin, endpoint in targets:  # match the phone's own serial number
        try:
            with plugin.open(endpoint) as session:
                identity = session.identify()
        except PhonewipeError:
            unidentified.append(endpoint)
            continue
        if identity.serial == serial:
            matches.append((plugin, endpoint))
        elif identity.serial is None:
            unidentified.append(endpoint)
    if len(matches) > 1:  # cheap phones share serials like 0123456789ABCDEF
        raise UsageError(f"{len(matches)} devices report serial {serial!r} "
                         f"({', '.join(e.address for _, e in matches)})",
                         "name the one to erase by its address from `phonewipe devices`")
    if matches:
        return matches
    known = ", ".join(e.address for _, e in targets) or "none"
    waiting = [f"{e.address} ({e.label})" for e in unidentified if e.label not in ("device", "", None)]
    advice = (f"{', '.join(waiting)} could not say its serial: unlock it and accept the USB "
              "debugging prompt, or name it by that address" if waiting
              else "check the serial with `phonewipe devices`")
    raise DeviceNotFound(f"no device with serial {serial!r} (connected: {known})", advice)


@cli.command()
@click.argument("serials", nargs=-1)
@click.option("--all", "all_devices", is_flag=True, help="erase every connected device")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="directory for certificates/ and audit.sqlite")
@click.option("--method", help="erase method name (default: the strongest the device allows)")
@click.option("--via", type=click.Choice(REGISTRY.via_modes()),
              help="reboot the phone into this mode and erase it there (the checks of the "
                   "mode it is found in still run there first)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@_operator_options
@click.pass_context
@expected_errors
def erase(ctx: click.Context, serials: tuple[str, ...], all_devices: bool, out_dir: Path,
          method: str | None, via: str | None, as_json: bool, keys_dir: Path | None,
          **kw: Any) -> None:
    """Erase, verify and certify phones: SERIAL... or --all."""
    if bool(serials) == all_devices:
        raise UsageError("name the devices to erase, or pass --all", "see `phonewipe devices`")
    config = _config(ctx)
    found = _discover(_plugins(ctx))
    if all_devices:
        targets = found
        if not targets:
            raise DeviceNotFound("no devices connected", "check the cables and run `phonewipe devices`")
    else:
        targets = [t for s in serials for t in _match(found, s)]
        # the same phone named twice (address and serial) must not get two jobs at once
        targets = list({(t[1].plugin, t[1].address): t for t in targets}.values())
    aborted = threading.Event()  # set by a second Ctrl-C
    results = run_erase(targets, replace(_settings(config, kw, method), via=via), out_dir,
                        keys_dir or config.keys_dir, as_json, abort=aborted)
    sys.exit(130 if aborted.is_set() else exit_code(results))


# -- re-verification ------------------------------------------------------------------------
@cli.command("verify")
@click.option("--plan-from", "cert_path", type=click.Path(path_type=Path), required=True,
              help="certificate whose sampling plan to re-run")
@click.argument("serial", required=False)
@click.option("--fresh-seed", is_flag=True, help="sample new locations under the same plan "
                                                 "parameters (R2v3 second look)")
@click.option("--seed", type=int, help="sample with this seed instead of the certificate's")
@click.option("--trust", type=click.Path(path_type=Path), help="pin the signer (PEM)")
@click.option("--operator", help="name of the person re-verifying")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@click.pass_context
@expected_errors
def verify(ctx: click.Context, cert_path: Path, serial: str | None, fresh_seed: bool,
           seed: int | None, trust: Path | None, operator: str | None, as_json: bool) -> None:
    """Re-read a certified device with its certificate's plan: exit 0 when it still shows
    what the certificate promised."""
    from certificates.verify import verify_certificate
    from .errors import CertificateInvalid
    from .reverify import reverify_session
    report = verify_certificate(cert_path, trust=trust)
    if not report.ok or report.record is None:
        raise CertificateInvalid(f"{cert_path}: {'; '.join(report.problems)}",
                                 "re-verify only with a valid certificate")
    record = report.record
    wanted = serial or record.device.serial
    if not wanted:
        raise UsageError("the certificate names no serial number", "name the device: SERIAL")
    plugin, endpoint = _match(_discover(_plugins(ctx)), wanted)[0]
    who = replace(_config(ctx).operator, name=operator) if operator else _config(ctx).operator
    with plugin.open(endpoint) as session:
        result = reverify_session(session, record, seed=seed, fresh_seed=fresh_seed, operator=who)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        style = "green" if result.ok else "red"
        console.print(f"[{style}]{result.verdict.upper()}[/] {record.device.serial}: {result.reason}"
                      f" ({result.samples} samples, {result.plan['mode']} plan, seed "
                      f"{result.plan['seed']}{', fresh' if result.fresh_seed else ''})",
                      highlight=False, soft_wrap=True)
        for p in result.problems[:10]:
            console.print(f"  offset {p.offset:,}: {p.found}", highlight=False)
    sys.exit(0 if result.ok else 12)


# -- demo and emulate ---------------------------------------------------------------------
@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-output"),
              show_default=True)
@click.option("--profile", "profiles", multiple=True,
              help="emulated handset profiles (default: rooted, unrooted, frp-locked, lying-1pct)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@expected_errors
def demo(ctx: click.Context, out_dir: Path, profiles: tuple[str, ...], as_json: bool) -> None:
    """Erase emulated handsets end to end through the real adb server; needs no phone."""
    from .demo import run_demo
    sys.exit(run_demo(out_dir, list(profiles) or None, as_json, console, err_console))


@cli.command()
@click.argument("profiles", nargs=-1)
@click.option("--list", "list_profiles", is_flag=True, help="list the available profiles")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per handset")
@click.option("--workdir", type=click.Path(path_type=Path), help="where the storage images go")
@click.option("--userdata-mib", type=click.IntRange(1), help="override the profiles' userdata size")
@click.pass_context
@expected_errors
def emulate(ctx: click.Context, profiles: tuple[str, ...], list_profiles: bool, as_json: bool,
            workdir: Path | None, userdata_mib: int | None) -> None:
    """Start emulated handsets, connect them to the adb server, run until interrupted."""
    import tempfile
    from .emulation.fleet import start_handsets, stop_handsets
    from .emulation.profiles import available_profiles
    if list_profiles or not profiles:
        for name, description in available_profiles().items():
            click.echo(f"{name:<16} {description}")
        if not profiles:
            return
    workdir = workdir or Path(tempfile.mkdtemp(prefix="phonewipe-emulate-"))
    handsets = start_handsets(list(profiles), workdir, _plugins(ctx),
                              userdata_bytes=userdata_mib * 1024 * 1024 if userdata_mib else None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for h in handsets:
            if as_json:
                click.echo(json.dumps({"serial": h.serial, "profile": h.profile.name,
                                       "endpoints": h.endpoints, "storage": str(h.storage.directory)}))
            else:
                eps = " ".join(f"{k}={v}" for k, v in h.endpoints.items())
                click.echo(f"{h.serial}  {h.profile.name:<14} {eps}  ({h.profile.description})")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop_handsets(handsets)


# -- certificates ---------------------------------------------------------------------------
@cli.group()
def cert() -> None:
    """Verify and show certificates."""


@cert.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--trust", type=click.Path(path_type=Path), help="pin the signer to this certificate (PEM)")
@expected_errors
def cert_verify(paths: tuple[Path, ...], trust: Path | None) -> None:
    """Check signature, integrity and that the visible fields match the embedded record."""
    from certificates.verify import verify_certificate
    bad = 0
    for path in paths:
        report = verify_certificate(path, trust=trust)
        if report.ok:
            rec = report.record
            console.print(f"[green]valid[/]   {path}: {rec.result_text} for {rec.device.serial or 'unknown serial'}"
                          f", signed by {report.signer_subject}", highlight=False, soft_wrap=True)
        else:
            bad += 1
            console.print(f"[red]INVALID[/] {path}: {'; '.join(report.problems)}", highlight=False,
                          soft_wrap=True)
    sys.exit(6 if bad else 0)


@cert.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the embedded record as JSON")
@expected_errors
def cert_show(path: Path, as_json: bool) -> None:
    """Print the record embedded in a certificate."""
    from certificates.verify import show_certificate
    record = show_certificate(path)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    table = Table("field", "value", show_header=False)
    d = record.device
    rows = [("result", record.result_text), ("outcome", record.outcome.value),
            ("device", f"{d.manufacturer} {d.model}"), ("serial", d.serial or "unknown"),
            ("IMEI", ", ".join(d.imeis) or "unknown"), ("reason", record.reason or "-")]
    if record.sanitization:
        s = record.sanitization
        rows += [("method", s.title), ("category", s.category), ("justification", s.justification)]
    if record.verification:
        v = record.verification
        rows += [("verification", f"{v.mode}: {v.status} ({v.samples_read} samples)")]
        rows += [("coverage", v.coverage)] if v.coverage else []
        rows += [("capacity", v.capacity.get("note", ""))] if v.capacity else []
    rows += [("record sha256", record.sha256())]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)


# -- keys -----------------------------------------------------------------------------------
@cli.group()
def keys() -> None:
    """Manage the organization's signing key."""


@keys.command("init")
@click.option("--dir", "keys_dir", type=click.Path(path_type=Path), help=f"default {DEFAULT_KEYS_DIR}")
@click.option("--organization", default=None, help="organization named in the signing certificate")
@click.option("--name", "common_name", default=None, help="common name of the signing certificate")
@click.option("--force", is_flag=True, help="replace an existing key")
@click.pass_context
@expected_errors
def keys_init(ctx: click.Context, keys_dir: Path | None, organization: str | None,
              common_name: str | None, force: bool) -> None:
    """Make an EC P-256 key and self-signed certificate (key file mode 0600)."""
    from certificates.keys import init_keys
    config = _config(ctx)
    org = organization or config.operator.organization or "phonewipe user"
    paths = init_keys(keys_dir or config.keys_dir, org, common_name or f"{org} erasure signing", force=force)
    console.print(f"signing key: {paths.key}\ncertificate: {paths.cert}", highlight=False)


@keys.command("import")
@click.argument("p12", type=click.Path(path_type=Path))
@click.option("--dir", "keys_dir", type=click.Path(path_type=Path))
@click.option("--password", prompt=True, hide_input=True, default="", help="PKCS#12 password")
@click.pass_context
@expected_errors
def keys_import(ctx: click.Context, p12: Path, keys_dir: Path | None, password: str) -> None:
    """Import a PKCS#12 key and certificate."""
    from certificates.keys import import_pkcs12
    paths = import_pkcs12(p12, password, keys_dir or _config(ctx).keys_dir)
    console.print(f"signing key: {paths.key}\ncertificate: {paths.cert}", highlight=False)


@keys.command("show")
@click.option("--dir", "keys_dir", type=click.Path(path_type=Path))
@click.pass_context
@expected_errors
def keys_show(ctx: click.Context, keys_dir: Path | None) -> None:
    """Show the signing certificate."""
    from certificates.keys import describe
    for k, v in describe(keys_dir or _config(ctx).keys_dir).items():
        console.print(f"{k}: {v}", highlight=False)


# -- audit ----------------------------------------------------------------------------------
@cli.group()
def audit() -> None:
    """Check and export the audit log."""


@audit.command("verify")
@click.argument("db", type=click.Path(path_type=Path))
@expected_errors
def audit_verify(db: Path) -> None:
    """Walk the hash chain; name the first broken row."""
    rows = verify_log(db)
    console.print(f"audit log {db}: {rows} rows, hash chain intact", highlight=False)


@audit.command("export")
@click.argument("db", type=click.Path(path_type=Path))
@expected_errors
def audit_export(db: Path) -> None:
    """Print every event as JSON lines (after checking the chain)."""
    verify_log(db)
    with AuditLog(db) as log:
        for e in log.events():
            click.echo(json.dumps({"id": e.id, "ts": e.ts, "job_id": e.job_id, "serial": e.serial,
                                   "event": e.event, "payload": json.loads(e.payload)}))


from .station.commands import register as _register_station  # noqa: E402

_register_station(cli, sys.modules[__name__])  # station, report


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
