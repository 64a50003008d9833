"""What `attest` and `destroy` share: the device as the operator enters it (from the label,
the box or the phone's screen), the operator options, photos, and the one place a finished
record is signed and logged. Typed text is input like any device string: cleaned
(erase/strings.py) before it is shown, logged or certified; IMEIs are checked (check digit)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.config import DEFAULT_KEYS_DIR, DESTINATIONS
from phonewipe.erase.errors import PhonewipeError, UsageError
from phonewipe.erase.model import Identity, Record
from phonewipe.erase.station.manifest import imei_problem, normalise
from phonewipe.erase.strings import clean

CERT_DIR = "certificates"


def device_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--serial", help="the device's serial number, from its label or screen"),
        click.option("--imei", "imeis", multiple=True, help="an IMEI (or MEID) from the label "
                                                             "or *#06#; repeatable"),
        click.option("--manufacturer", help="the device's manufacturer"),
        click.option("--model", help="the device's model"),
        click.option("--os-version", "os_version", help="the operating system version shown"),
        click.option("--asset-tag", "asset_tag", default="", help="the asset tag"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def operator_entry_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--operator", help="name of the person doing it (default: [operator])"),
        click.option("--title", help="operator's title"),
        click.option("--organization", help="organization (default: [operator])"),
        click.option("--location", help="where it takes place"),
        click.option("--keys", "keys_dir", type=click.Path(path_type=Path),
                     help=f"signing key directory (default {DEFAULT_KEYS_DIR})"),
        click.option("--photo", "photos", multiple=True, type=click.Path(path_type=Path),
                     help="a JPEG or PNG photo to embed as evidence; repeatable (at most 6)"),
        click.option("--out", "out_dir", type=click.Path(path_type=Path),
                     help="directory for certificates/ and audit.sqlite (a station's --out "
                          "directory: its reports count these records)"),
        click.option("--json", "as_json", is_flag=True, help="machine-readable result"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def destination_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--destination", type=click.Choice(DESTINATIONS),
                        help="media destination after a PASS")(func)


def require_out(out_dir: Path | None) -> Path:
    if out_dir is None:
        raise UsageError("no --out directory", "pass --out DIR: the certificates go to "
                                               "DIR/certificates, the audit log to DIR/audit.sqlite")
    return out_dir


def checked_imeis(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    out = []
    for value in values:
        problem = imei_problem(value)
        if problem:
            raise UsageError(problem, "copy the IMEI again from the label or from *#06#")
        out.append(normalise(value))
    return tuple(dict.fromkeys(out))


def entered_identity(platform: str, kw: dict[str, Any]) -> Identity:
    """The identity the operator typed; a serial or an IMEI is required (the certificate must
    name the device)."""
    serial = clean(kw.get("serial") or None, 64)
    imeis = checked_imeis(kw.get("imeis") or ())
    if not (serial and serial.strip()) and not imeis:
        raise UsageError("the device is not named", "pass --serial and/or --imei from its "
                                                    "label (a certificate must name the device)")
    return Identity(platform=platform, manufacturer=clean(kw.get("manufacturer") or None, 80),
                    model=clean(kw.get("model") or None, 80), serial=serial, imeis=imeis,
                    os_version=clean(kw.get("os_version") or None, 80))


def sign_and_log(record: Record, signer: Any, audit: AuditLog, out_dir: Path) -> Path:
    """Sign the record and log where its certificate is: the same events as an erase."""
    serial = record.device.serial or (record.device.imeis[0] if record.device.imeis else "")
    try:
        path: Path = signer.write_certificate(record, out_dir)
    except PhonewipeError as exc:
        audit.append(record.job_id, serial, "certificate-failed", {"error": exc.line()})
        raise
    audit.append(record.job_id, serial, "certified",
                 {"certificate": str(path), "record_sha256": record.sha256()})
    return path
