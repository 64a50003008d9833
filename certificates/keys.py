"""The organization's signing key: make one, import one, load it, describe it.

A key directory holds two files: `signing-key.pem` (PKCS#8, unencrypted, mode 0600) and
`signing-cert.pem` (the X.509 certificate that goes into every signature).
"""
from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from phonewipe.erase.errors import KeyMissing, PhonewipeError

KEY_FILE = "signing-key.pem"
CERT_FILE = "signing-cert.pem"
VALIDITY_DAYS = 3652  # ten years

# private keys pyHanko can sign with and cryptography can serialize as PKCS#8
PrivateKey = Any


@dataclass(frozen=True)
class KeyPaths:
    key: Path
    cert: Path
    tightened_from: int | None = None  # the directory's mode before `keys init` made it 0700


@dataclass(frozen=True)
class SigningMaterial:
    key: PrivateKey  # a cryptography private key object
    cert: x509.Certificate
    paths: KeyPaths
    chain: tuple[x509.Certificate, ...] = ()  # issuers after the leaf in signing-cert.pem


def key_paths(directory: Path) -> KeyPaths:
    directory = Path(directory)
    return KeyPaths(key=directory / KEY_FILE, cert=directory / CERT_FILE)


def _missing(directory: Path, why: str = "") -> KeyMissing:
    suffix = f" ({why})" if why else ""
    return KeyMissing(f"no signing key in {directory}{suffix}",
                      f"run `phonewipe keys init --dir {directory}` or `phonewipe keys import`")


def _refuse_overwrite(paths: KeyPaths, force: bool) -> None:
    if force:
        return
    existing = [p for p in (paths.key, paths.cert) if p.exists()]
    if existing:
        raise PhonewipeError(f"a signing key already exists in {paths.key.parent}",
                             "keep it, or pass --force to replace it (certificates signed with the "
                             "old key then need the old signing-cert.pem to be verified with --trust)")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file created with `mode` (never more permissive), then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _private_dir(directory: Path) -> int | None:
    """Make the key directory 0700, or tighten an existing one to 0700 (it is ours: a key
    directory others can read or write lets them read or replace the key). Refuses a
    directory it cannot tighten, and one owned by someone else."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = directory.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PhonewipeError(f"key directory {directory} belongs to another user",
                             "choose a directory of your own with --dir")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        os.chmod(directory, 0o700)
        return mode
    return None


def _write_material(directory: Path, key: PrivateKey, cert: x509.Certificate,
                    chain: tuple[x509.Certificate, ...] = ()) -> KeyPaths:
    paths = key_paths(directory)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain))
    try:
        tightened = _private_dir(directory)
        _write_atomic(paths.key, key_pem, 0o600)
        _write_atomic(paths.cert, cert_pem, 0o644)
    except OSError as e:
        raise PhonewipeError(f"cannot write signing key to {directory}: {e.strerror or e}",
                             "choose a writable --dir") from e
    return KeyPaths(paths.key, paths.cert, tightened)


def make_self_signed(organization: str, common_name: str,
                     now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An EC P-256 key and a self-signed certificate for it, valid ten years."""
    if not organization.strip() or not common_name.strip():
        raise PhonewipeError("the signing certificate needs an organization and a common name",
                             "pass --organization and --common-name")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    start = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def init_keys(directory: Path, organization: str, common_name: str, force: bool = False) -> KeyPaths:
    """Make an EC P-256 key and self-signed certificate in `directory`."""
    directory = Path(directory)
    _refuse_overwrite(key_paths(directory), force)
    key, cert = make_self_signed(organization, common_name)
    return _write_material(directory, key, cert)


def import_pkcs12(p12_path: Path, password: str | bytes | None, directory: Path,
                  force: bool = False) -> KeyPaths:
    """Convert a PKCS#12 (.p12/.pfx) bundle into the key directory's two PEM files."""
    p12_path, directory = Path(p12_path), Path(directory)
    _refuse_overwrite(key_paths(directory), force)
    try:
        data = p12_path.read_bytes()
    except OSError as e:
        raise KeyMissing(f"cannot read {p12_path}: {e.strerror or e}",
                             "check the path of the PKCS#12 file") from e
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret or None)
    except (ValueError, TypeError) as e:
        raise KeyMissing(f"cannot open PKCS#12 file {p12_path}: wrong password or not a "
                             "PKCS#12 file", "check the file and the --password") from e
    if key is None or cert is None:
        raise KeyMissing(f"PKCS#12 file {p12_path} does not hold both a private key and "
                             "its certificate", "export the key together with its certificate")
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        raise KeyMissing(f"the key in {p12_path} does not belong to its certificate",
                             "export the matching key and certificate")
    chain = tuple(c for c in extra if c != cert)
    return _write_material(directory, key, cert, chain)


class KeyExposed(KeyMissing):
    """The key file or its directory can be read or changed by other users."""


def check_key_permissions(directory: Path) -> None:
    """Refuse a key that other users can read, or that they could replace: the key file
    must have no group/other access, the directory neither, and the certificate must not be
    writable by group/other. The message names the `chmod` that fixes it."""
    directory = Path(directory)
    paths = key_paths(directory)
    checks = ((directory, 0o077, "700"), (paths.key, 0o077, "600"), (paths.cert, 0o022, "644"))
    for path, forbidden, fix in checks:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # a missing file is reported by the loader
        except OSError as e:
            raise _missing(directory, f"unreadable: {e.strerror or e}") from e
        mode = stat.S_IMODE(st.st_mode)
        if mode & forbidden:
            what = "key directory" if path == directory else \
                "signing key" if path == paths.key else "signing certificate"
            raise KeyExposed(f"refusing to sign: the {what} {path} is mode {mode:04o}, open to "
                             "other users",
                             f"run `chmod {fix} {path}` (and check nobody copied or replaced "
                             "the key meanwhile)")


def load_signing_material(directory: Path) -> SigningMaterial:
    """Key + certificate from `directory`; KeyMissing when absent, unreadable or corrupt,
    KeyExposed when other users can read the key or replace it."""
    directory = Path(directory)
    paths = key_paths(directory)
    check_key_permissions(directory)
    try:
        key_pem = paths.key.read_bytes()
        cert_pem = paths.cert.read_bytes()
    except FileNotFoundError as e:
        raise _missing(directory) from e
    except OSError as e:
        raise _missing(directory, f"unreadable: {e.strerror or e}") from e
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise _missing(directory, f"{KEY_FILE} is corrupt or encrypted") from e
    try:
        cert, *chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise _missing(directory, f"{CERT_FILE} is corrupt") from e
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise _missing(directory, f"{KEY_FILE} does not match {CERT_FILE}")
    return SigningMaterial(key=key, cert=cert, paths=paths, chain=tuple(chain))


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, as lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def load_certificate_file(path: Path) -> x509.Certificate:
    """A PEM or DER certificate (used for `--trust`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PhonewipeError(f"cannot read trusted certificate {path}: {e.strerror or e}",
                             "pass the signer's signing-cert.pem with --trust") from e
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise PhonewipeError(f"{path} is not an X.509 certificate",
                             "pass the signer's signing-cert.pem with --trust") from e


def format_fingerprint(fp: str) -> str:
    """A SHA-256 fingerprint as published: upper-case hex in pairs, colon separated."""
    return ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()


def normalise_fingerprint(text: str) -> str | None:
    """Lower-case hex of a SHA-256 fingerprint written with or without colons/spaces;
    None when `text` is not one."""
    hexed = "".join(ch for ch in text.strip() if ch not in ": ").lower()
    if len(hexed) == 64 and all(ch in "0123456789abcdef" for ch in hexed):
        return hexed
    return None


def describe(directory: Path) -> dict[str, str]:
    """What `phonewipe keys show` prints."""
    material = load_signing_material(directory)
    cert = material.cert
    chain = material.chain
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": "self-signed" if cert.issuer == cert.subject else cert.issuer.rfc4514_string(),
        "fingerprint_sha256": fingerprint(cert),
        "fingerprint_published": format_fingerprint(fingerprint(cert)),
        "chain": "; ".join(f"{c.subject.rfc4514_string()} ({fingerprint(c)})" for c in chain)
                 or "none",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_type": _key_type(material.key),
        "key": str(material.paths.key),
        "cert": str(material.paths.cert),
    }


def _key_type(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    size = getattr(key, "key_size", None)
    return f"{type(key).__name__.replace('PrivateKey', '').lstrip('_')} {size}" if size else \
        type(key).__name__
