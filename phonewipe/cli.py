"""phonewipe command line: thin commands over the public API."""
from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from phonewipe.attest import register as register_attest
from phonewipe.cli_group import GlobalOptionsGroup
from phonewipe.common import (
    REGISTRY,
    config_of,
    console,
    discover,
    err_console,
    expected_errors,
    fail,
    job_settings,
    method_help,
    operator_options,
    plugin_flags,
    plugins_of,
    require_operator,
    wants_json,
)
from phonewipe.destroy import register as register_destroy
from phonewipe.erase import __version__
from phonewipe.erase.audit import AuditLog, parse_expected_head, verify_audit
from phonewipe.erase.config import DEFAULT_KEYS_DIR, load_config
from phonewipe.erase.errors import ConfigError, DeviceNotFound, PhonewipeError, UsageError
from phonewipe.erase.plugin import PluginOptions
from phonewipe.erase.runner import exit_code
from phonewipe.erase.strings import for_terminal
from phonewipe.erasing import match_serial, run_erase
from phonewipe.serve.command import register as register_serve
from phonewipe.station_commands import register as register_station
from phonewipe.wipe import register as register_wipe


@click.group(cls=GlobalOptionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phonewipe")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML config (operator, destination, keys); default ./phonewipe.toml or "
                   "~/.config/phonewipe/config.toml")
@plugin_flags
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
        fail(exc, wants_json())
    ctx.obj["config"] = config
    given = {key: list(value) if isinstance(value, tuple) else value
             for key, value in flags.items() if value not in (None, ())}
    ctx.obj["plugin_options"] = PluginOptions({**config.plugin_values, **given})
    ctx.obj["plugin_flags"] = sorted("--" + key.replace("_", "-") for key in given)


# -- devices ----------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@expected_errors
def devices(ctx: click.Context, as_json: bool) -> None:
    """List connected phones in every mode the plugins know: serial, model, IMEI, mode and
    state (each one is asked who it is, briefly); the ones that cannot say, and what to do."""
    from phonewipe.devices import TABLE_WIDTH, device_line, devices_table, identify_all, notes
    rows = identify_all(discover(plugins_of(ctx)))
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if not rows:
        console.print("no devices found: check the cable, enable USB debugging and accept the prompt")
        return
    if console.width >= TABLE_WIDTH:
        console.print(devices_table(rows))
    else:  # nothing essential cut at 80 columns or in a pipe
        for row in rows:
            console.print(escape(device_line(row)), highlight=False, soft_wrap=True)
    for line in notes(rows):
        console.print(escape(line), highlight=False, soft_wrap=True)
    for name, why in REGISTRY.failures.items():
        console.print(f"plugin {escape(name)} not loaded: {escape(why)}", highlight=False)


# -- erase --------------------------------------------------------------------------------
@cli.command()
@click.argument("serials", nargs=-1)
@click.option("--all", "all_devices", is_flag=True, help="erase every connected device")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="directory for certificates/ and audit.sqlite")
@click.option("--method", help=method_help())
@click.option("--via", type=click.Choice(REGISTRY.via_modes()),
              help="reboot the phone into this mode and erase it there (the checks of the "
                   "mode it is found in still run there first)")
@click.option("--second-look", "second_look_share", type=click.FloatRange(0, 1),
              help="share of PASSed phones re-read by a second reader before their reset, at "
                   "least one per run when above 0 (default 0.05, or [station] second_look)")
@click.option("--second-look-by", help="who does the second look (default: [station] "
              "second_look_by, else the operator)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@operator_options
@click.pass_context
@expected_errors
def erase(ctx: click.Context, serials: tuple[str, ...], all_devices: bool, out_dir: Path,
          method: str | None, via: str | None, second_look_share: float | None,
          second_look_by: str | None, as_json: bool, keys_dir: Path | None, **kw: Any) -> None:
    """Erase, verify and certify phones: SERIAL... or --all."""
    if bool(serials) == all_devices:
        raise UsageError("name the devices to erase, or pass --all", "see `phonewipe devices`")
    config = config_of(ctx)
    share = config.second_look_share if second_look_share is None else second_look_share
    if not 0 <= share <= 1:
        raise ConfigError(f"[station] second_look must be a share between 0 and 1, not {share}",
                          "fix the config file (e.g. 0.05)")
    settings = replace(job_settings(config, kw, method), via=via)  # checked before any phone
    require_operator(settings.operator)
    found = discover(plugins_of(ctx))
    if all_devices:  # only phones that say who they are: no certificate for an unknown one
        from phonewipe.devices import identify_all, leave_unidentified
        targets = leave_unidentified(identify_all(found), lambda line: err_console.print(
            escape(line), highlight=False, soft_wrap=True))
        if not targets:
            raise DeviceNotFound("no identifiable devices connected" if found else
                                 "no devices connected", "check the cables and run `phonewipe devices`")
    else:
        targets = [t for s in serials for t in match_serial(found, s)]
        # the same phone named twice (address and serial) must not get two jobs at once
        targets = list({(t[1].plugin, t[1].address): t for t in targets}.values())
    aborted = threading.Event()  # set by a second Ctrl-C
    results = run_erase(targets, settings, out_dir, keys_dir or config.keys_dir, as_json,
                        abort=aborted, second_look_share=share,
                        second_look_by=second_look_by or config.second_look_by)
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
    from phonewipe.certificates.verify import verify_certificate
    from phonewipe.erase.errors import CertificateInvalid
    from phonewipe.erase.reverify import reverify_session
    _existing(cert_path, "certificate", "check the path given to --plan-from")
    report = verify_certificate(cert_path, trust=trust)
    if trust is not None and report.ok and not report.trusted:
        raise CertificateInvalid(f"{cert_path}: signature intact, signer NOT TRUSTED "
                                 f"(fingerprint {report.signer_fingerprint})",
                                 "re-verify only a certificate of the signer you trust")
    if not report.ok or report.record is None:
        raise CertificateInvalid(f"{cert_path}: {'; '.join(report.problems)}",
                                 "re-verify only with a valid certificate")
    record = report.record
    wanted = serial or record.device.serial
    if not wanted:
        raise UsageError("the certificate names no serial number", "name the device: SERIAL")
    plugin, endpoint = match_serial(discover(plugins_of(ctx)), wanted)[0]
    who = replace(config_of(ctx).operator, name=operator) if operator else config_of(ctx).operator
    with plugin.open(endpoint) as session:
        result = reverify_session(session, record, seed=seed, fresh_seed=fresh_seed, operator=who)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        style = "green" if result.ok else "red"
        console.print(f"[{style}]{result.verdict.upper()}[/] {for_terminal(record.device.serial)}: "
                      f"{for_terminal(result.reason)}"
                      f" ({result.samples} samples, {result.plan['mode']} plan, seed "
                      f"{result.plan['seed']}{', fresh' if result.fresh_seed else ''})",
                      highlight=False, soft_wrap=True)
        for p in result.problems[:10]:
            console.print(f"  offset {p.offset:,}: {for_terminal(p.found)}", highlight=False)
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
    from phonewipe.demo import run_demo
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
    """Start emulated handsets, connect them to the adb server, run until interrupted (Ctrl-C
    or SIGTERM: the handsets are disconnected and temporary images removed)."""
    from phonewipe.emulating import run_emulate
    from phonewipe.erase.emulation.profiles import available_profiles
    if list_profiles or not profiles:
        for name, description in available_profiles().items():
            click.echo(f"{name:<16} {description}")
        if not profiles:
            return
    from phonewipe.erase.emulation.registry import PUBLISH_KEY
    # served to other processes: the adb server lists them, a bootloader is published for
    # the plugins that cannot otherwise see it (`erase --via fastboot` needs no flag)
    ctx.obj["plugin_options"].values[PUBLISH_KEY] = True
    run_emulate(plugins_of(ctx), list(profiles), as_json, workdir, userdata_mib)


# -- certificates ---------------------------------------------------------------------------
@cli.group()
def cert() -> None:
    """Verify and show certificates."""


@cert.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--trust", "trust", multiple=True, metavar="CERT|FINGERPRINT",
              help="trust this signer: its certificate (PEM/DER) or SHA-256 fingerprint, as the "
                   "organization publishes it (`phonewipe keys show`); repeatable")
@click.option("--trust-ca", "trust_ca", multiple=True, type=click.Path(path_type=Path),
              metavar="CERT", help="trust signers (and time-stamping authorities) this CA "
                                   "issued; repeatable")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per file")
@click.pass_context
@expected_errors
def cert_verify(ctx: click.Context, paths: tuple[Path, ...], trust: tuple[str, ...],
                trust_ca: tuple[Path, ...], as_json: bool) -> None:
    """Check signature, integrity, that the visible fields match the embedded record, and
    whether the signer is trusted ([trust] in the config, --trust, --trust-ca).
    Exit 0 all valid and trusted, 9 a signer NOT TRUSTED, 6 a file invalid."""
    from phonewipe.certificates.trust import TrustStore
    from phonewipe.certificates.verify import VerifyReport, report_dict, terminal_safe, verify_certificate
    config = config_of(ctx)
    store = TrustStore.build(certificates=config.trust_certificates,
                             fingerprints=config.trust_fingerprints,
                             ca_certificates=config.trust_ca_certificates,
                             trust=trust, trust_ca=trust_ca)
    verdicts = []
    for path in paths:
        try:  # one hostile file never hides the others
            report = verify_certificate(path, trust=store)
        except Exception as exc:  # noqa: BLE001 - reported as this file's defect
            report = VerifyReport(path=Path(path), problems=[f"cannot be checked ({exc})"])
        verdicts.append(report.verdict)
        if as_json:
            click.echo(json.dumps(report_dict(report), sort_keys=True))
            continue
        console.print(_verify_line(report, terminal_safe), highlight=False, soft_wrap=True)
    sys.exit(6 if "invalid" in verdicts else 9 if "untrusted" in verdicts else 0)


def _verify_line(report: Any, safe: Any) -> str:
    """One line per file: verdict, what it certifies, signer and fingerprint, trust, time."""
    signer = (f"signer {safe(report.signer_subject)} (SHA-256 {report.signer_fingerprint})"
              if report.signer_fingerprint else "")
    if report.timestamp:
        when = (f"time: RFC 3161 timestamp {report.timestamp} by {safe(report.timestamp_by)}"
                + ("" if report.timestamp_trusted else " (authority not trusted)"))
    else:
        when = f"time: {report.signed_at or 'unknown'} by the signing station's own clock, no timestamp"
    notes = "".join(f"; note: {safe(n)}" for n in report.notes)
    if report.kind in ("summary", "destruction-list") and report.summary is not None:
        what = (f"{'batch summary' if report.kind == 'summary' else 'destruction list'} "
                f"{safe(report.summary.get('batch_id'))}, "
                f"{safe(report.summary.get('device_count'))} devices")
    elif report.kind == "addendum" and report.addendum is not None:
        cited = report.addendum.get("certificate") or {}
        rv = report.addendum.get("reverification") or {}
        what = (f"validation addendum by {safe((report.addendum.get('validated_by') or {}).get('name'))}"
                f" of {safe(cited.get('file'))} (record SHA-256 {safe(cited.get('record_sha256'))}"
                f"{', re-verified: ' + safe(str(rv.get('verdict', '')).upper()) if rv else ''})")
    elif report.record is not None:
        what = (f"{report.record.result_text} for "
                f"{safe(report.record.device.serial or 'unknown serial')}")
    else:
        what = ""
    path = safe(report.path)
    if report.verdict == "invalid":
        tail = f"; {signer}" if signer else ""
        return f"[red]INVALID[/] {path}: {safe('; '.join(report.problems))}{tail}"
    if report.verdict == "untrusted":
        return (f"[yellow]NOT TRUSTED[/] {path}: signature intact, signer NOT TRUSTED "
                f"(fingerprint {report.signer_fingerprint}): {safe(report.signer_subject)}; "
                f"{what}; {safe(report.trust_note)}; {when}{notes}")
    return (f"[green]valid[/]   {path}: {what}; {signer}, TRUSTED: {safe(report.trust_note)}; "
            f"{when}{notes}")


@cert.command("validate")
@click.argument("certificate", type=click.Path(path_type=Path))
@click.option("--by", "by", required=True, help="name of the second person validating it")
@click.option("--title", default="", help="their title")
@click.option("--organization", default="", help="their organization (default: [operator])")
@click.option("--reverify", "reverify", type=click.Path(path_type=Path),
              help="the JSON `phonewipe verify --plan-from CERTIFICATE --json` printed")
@click.option("--note", default="", help="a note for the addendum")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path),
              help=f"signing key directory (default {DEFAULT_KEYS_DIR})")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="where to write it (default: CERTIFICATE-validation.pdf beside it)")
@click.pass_context
@expected_errors
def cert_validate(ctx: click.Context, certificate: Path, by: str, title: str, organization: str,
                  reverify: Path | None, note: str, keys_dir: Path | None,
                  out: Path | None) -> None:
    """A second person's validation: a signed addendum citing the certificate's SHA-256 and
    the re-verification result, if any (checked by `cert verify`, with the certificate
    beside it)."""
    from phonewipe.certificates.addendum import addendum_name, build_addendum, sign_addendum
    from phonewipe.certificates.sign import write_atomic
    from phonewipe.certificates.trust import TrustStore
    from phonewipe.certificates.verify import verify_certificate
    from phonewipe.common import load_signer
    from phonewipe.erase.errors import CertificateInvalid
    config = config_of(ctx)
    store = TrustStore.build(certificates=config.trust_certificates,
                             fingerprints=config.trust_fingerprints,
                             ca_certificates=config.trust_ca_certificates, trust=(), trust_ca=())
    report = verify_certificate(certificate, trust=store)
    if not report.ok or report.record is None or report.kind != "certificate":
        raise CertificateInvalid(f"{certificate}: {'; '.join(report.problems) or 'not a certificate'}",
                                 "validate only a valid phonewipe certificate")
    result = None
    if reverify is not None:
        try:
            result = json.loads(reverify.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the re-verification result {reverify}: {exc}",
                             "pass the JSON that `phonewipe verify --plan-from ... --json` "
                             "printed") from exc
        if not isinstance(result, dict):
            raise UsageError(f"{reverify} is not a re-verification result",
                             "pass the JSON that `phonewipe verify --json` printed")
    addendum = build_addendum(certificate, certificate.read_bytes(), report.record, name=by,
                              title=title, organization=organization or
                              config.operator.organization, reverification=result, note=note)
    signer = load_signer(keys_dir or config.keys_dir)
    target = out or certificate.parent / addendum_name(certificate)
    path = write_atomic(target.parent, target.name, sign_addendum(signer, addendum))
    console.print(f"validation addendum written (cites record SHA-256 "
                  f"{report.record.sha256()}):", highlight=False, soft_wrap=True)
    click.echo(str(path))


@cert.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the embedded record as JSON")
@expected_errors
def cert_show(path: Path, as_json: bool) -> None:
    """Print the record embedded in a certificate."""
    from phonewipe.certificates.verify import show_certificate
    _existing(path, "certificate", "check the path of the certificate")
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
    audit_head = record.evidence.get("audit") if isinstance(record.evidence, dict) else None
    if isinstance(audit_head, dict):  # as `audit verify --expect-head` takes it
        rows += [("audit head", f"{audit_head.get('head')}:{audit_head.get('row')}")]
    table.columns[1].overflow = "fold"  # hashes whole, to copy
    for name, value in rows:
        table.add_row(name, for_terminal(value))
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
    """Make an EC P-256 key and self-signed certificate (key file mode 0600, directory 0700:
    an existing directory others can access is tightened to 0700)."""
    from phonewipe.certificates.keys import describe, init_keys
    config = config_of(ctx)
    org = organization or config.operator.organization or "phonewipe user"
    directory = keys_dir or config.keys_dir
    paths = init_keys(directory, org, common_name or f"{org} erasure signing", force=force)
    if paths.tightened_from is not None:
        console.print(f"{escape(str(directory))} was mode {paths.tightened_from:04o}, open to other "
                      "users: now 0700", highlight=False)
    _print_key(describe(directory), paths)


@keys.command("import")
@click.argument("p12", type=click.Path(path_type=Path))
@click.option("--dir", "keys_dir", type=click.Path(path_type=Path))
@click.option("--password", prompt=True, hide_input=True, default="", help="PKCS#12 password")
@click.option("--force", is_flag=True, help="replace an existing key")
@click.pass_context
@expected_errors
def keys_import(ctx: click.Context, p12: Path, keys_dir: Path | None, password: str,
                force: bool) -> None:
    """Import a PKCS#12 key, its certificate and the CA chain that came with it (the chain
    goes into every signature)."""
    from phonewipe.certificates.keys import describe, import_pkcs12
    directory = keys_dir or config_of(ctx).keys_dir
    paths = import_pkcs12(p12, password, directory, force=force)
    if paths.tightened_from is not None:
        console.print(f"{escape(str(directory))} was mode {paths.tightened_from:04o}, open to other "
                      "users: now 0700", highlight=False)
    _print_key(describe(directory), paths)


def _print_key(info: dict[str, str], paths: Any = None) -> None:
    if paths is not None:
        console.print(f"signing key: {escape(str(paths.key))}\ncertificate: "
                      f"{escape(str(paths.cert))}", highlight=False)
    for k, v in info.items():
        if k not in ("key", "cert") or paths is None:
            console.print(f"{k}: {escape(v)}", highlight=False, soft_wrap=True)
    console.print(f"publish this fingerprint (website, contracts, buyers' packs): "
                  f"{info['fingerprint_sha256']}\nbuyers check certificates with: phonewipe cert "
                  f"verify --trust {info['fingerprint_sha256']} CERTIFICATE.pdf",
                  highlight=False, soft_wrap=True)


@keys.command("show")
@click.option("--dir", "keys_dir", type=click.Path(path_type=Path))
@click.pass_context
@expected_errors
def keys_show(ctx: click.Context, keys_dir: Path | None) -> None:
    """Show the signing certificate and the SHA-256 fingerprint to publish."""
    from phonewipe.certificates.keys import describe
    _print_key(describe(keys_dir or config_of(ctx).keys_dir))


# -- audit ----------------------------------------------------------------------------------
@cli.group()
def audit() -> None:
    """Check and export the audit log."""


def _audit_trust(values: tuple[str, ...]) -> list[str]:
    """--trust values as fingerprints: a PEM/DER certificate file, a key directory (its
    signing certificate) or a SHA-256 fingerprint."""
    import hashlib

    from cryptography import x509
    out = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            path = path / "signing-cert.pem"
        if path.is_file():
            data = path.read_bytes()
            try:
                cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data \
                    else x509.load_der_x509_certificate(data)
            except ValueError:
                raise UsageError(f"--trust {value}: not a certificate", "give a PEM "
                                 "certificate, a key directory or a SHA-256 fingerprint") from None
            from cryptography.hazmat.primitives import serialization
            out.append(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest())
        else:
            fingerprint = value.replace(":", "").strip().lower()
            if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
                raise UsageError(f"--trust {value!r}: no such file, and not a SHA-256 "
                                 "fingerprint", "give a PEM certificate, a key directory or "
                                 "the 64 hex digits `phonewipe keys show` prints")
            out.append(fingerprint)
    return out


def _existing(path: Path, what: str, advice: str) -> None:
    """A file named on the command line that is not there is a usage error (exit 2)."""
    if not Path(path).is_file():
        raise UsageError(f"no {what} at {path}" + (" (a directory)" if Path(path).is_dir() else ""),
                         advice)


def _expected_heads(values: tuple[str, ...]) -> list[tuple[str, int | None]]:
    try:
        return [parse_expected_head(v) for v in values]
    except ValueError as exc:
        raise UsageError(str(exc), "copy HASH:ROWS from a certificate (`phonewipe cert show`) "
                         "or a batch summary") from None


@audit.command("verify")
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--expect-head", "expect_heads", multiple=True, metavar="HASH[:ROWS]",
              help="a head the log must contain (at row ROWS), e.g. from a certificate or "
                   "summary: proves the rows up to it were neither deleted nor rewritten")
@click.option("--trust", "trust", multiple=True, metavar="CERT|DIR|FINGERPRINT",
              help="the key the checkpoints must be signed by (default: any, reported)")
@expected_errors
def audit_verify(db: Path, expect_heads: tuple[str, ...], trust: tuple[str, ...]) -> None:
    """Check the hash chain and the signed checkpoints: one line naming what is wrong
    (exit 7 broken row, 14 empty, 15 truncated, 16 rewritten, 17 unproven)."""
    _existing(db, "audit log", "give the path of an audit.sqlite file")
    report = verify_audit(db, trusted=_audit_trust(trust), expect=_expected_heads(expect_heads))
    console.print(for_terminal(report.line()), highlight=False, soft_wrap=True)


@audit.command("export")
@click.argument("db", type=click.Path(path_type=Path))
@expected_errors
def audit_export(db: Path) -> None:
    """Print every event as JSON lines (after checking the chain and its checkpoints)."""
    _existing(db, "audit log", "give the path of an audit.sqlite file")
    verify_audit(db, require_checkpoint=False, allow_empty=True)
    with AuditLog(db) as log:
        for e in log.events():
            click.echo(json.dumps({"id": e.id, "ts": e.ts, "job_id": e.job_id, "serial": e.serial,
                                   "event": e.event, "payload": json.loads(e.payload)}))


register_station(cli)
register_wipe(cli)
register_attest(cli)
register_destroy(cli)
register_serve(cli)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
