"""Who `cert verify` trusts: pinned signers and CAs.

A certificate whose signature is intact is *trusted* when its signer is
  * pinned: the SHA-256 fingerprint of the signer's certificate is one the user gave
    (`[trust] fingerprints`, `[trust] certificates`, `--trust CERT|FINGERPRINT`), or
  * issued by a CA the user names (`[trust] ca_certificates`, `--trust-ca CERT`): the signer
    certificate chains to it (path validated at the signing time; the chain may use the
    intermediates carried in the signature).
Anything else is intact but NOT TRUSTED: the same names can be put into any key
(`phonewipe keys init --organization ...`), so names are never evidence.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization

from phonewipe.erase.errors import UsageError

from .keys import load_certificate_file, normalise_fingerprint


def cert_fingerprint(cert: asn1_x509.Certificate) -> str:
    return hashlib.sha256(cert.dump()).hexdigest()


def _asn1(path: Path) -> asn1_x509.Certificate:
    cert = load_certificate_file(Path(path))
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


@dataclass
class TrustStore:
    """Pinned signer fingerprints (fingerprint -> where the pin came from) and CAs."""
    pinned: dict[str, str] = field(default_factory=dict)
    cas: list[asn1_x509.Certificate] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.pinned and not self.cas

    def pin_fingerprint(self, text: str, source: str) -> None:
        fp = normalise_fingerprint(text)
        if fp is None:
            raise UsageError(f"{source}: {text!r} is not a SHA-256 fingerprint",
                             "give 64 hex digits (colons allowed), as `phonewipe keys show` prints")
        self.pinned.setdefault(fp, source)

    def pin_certificate(self, path: Path, source: str) -> None:
        self.pinned.setdefault(cert_fingerprint(_asn1(path)), f"{source} {path}")

    def add_ca(self, path: Path) -> None:
        cert = _asn1(path)
        if not cert.ca:
            raise UsageError(f"{path} is not a CA certificate (no CA basic constraint)",
                             "pin a signer certificate with --trust instead")
        self.cas.append(cert)

    def add_trust_argument(self, value: str, source: str = "--trust") -> None:
        """`--trust` takes a certificate file or a fingerprint."""
        if normalise_fingerprint(value) is not None and not Path(value).is_file():
            self.pin_fingerprint(value, source)
        else:
            self.pin_certificate(Path(value), source)

    @classmethod
    def build(cls, *, certificates: Iterable[Path] = (), fingerprints: Iterable[str] = (),
              ca_certificates: Iterable[Path] = (), trust: Iterable[str] = (),
              trust_ca: Iterable[Path] = ()) -> "TrustStore":
        """From the config's [trust] table and the command line; a bad entry is a usage
        error naming it."""
        store = cls()
        for path in certificates:
            store.pin_certificate(Path(path), "[trust] certificates")
        for fp in fingerprints:
            store.pin_fingerprint(str(fp), "[trust] fingerprints")
        for path in ca_certificates:
            store.add_ca(Path(path))
        for value in trust:
            store.add_trust_argument(str(value))
        for path in trust_ca:
            store.add_ca(Path(path))
        return store


@dataclass(frozen=True)
class TrustDecision:
    trusted: bool
    how: str  # "pinned by --trust ..." / "issued by CA ..." / why not


def decide(store: TrustStore, signer: asn1_x509.Certificate,
           carried: Iterable[asn1_x509.Certificate], moment: dt.datetime) -> TrustDecision:
    """Is `signer` trusted by `store`, at `moment` (the signing time)?"""
    fp = cert_fingerprint(signer)
    if fp in store.pinned:
        return TrustDecision(True, f"pinned ({store.pinned[fp]})")
    if store.cas:
        path = _chain_to_ca(store, signer, list(carried), moment)
        if path is not None:
            return TrustDecision(True, f"issued by trusted CA {path}")
        return TrustDecision(False, "not pinned, and no valid chain to a trusted CA")
    if store.empty:
        return TrustDecision(False, "no signer is trusted yet: pass --trust with the "
                                    "organization's published fingerprint")
    return TrustDecision(False, "not one of the pinned signers")


def _chain_to_ca(store: TrustStore, signer: asn1_x509.Certificate,
                 carried: list[asn1_x509.Certificate], moment: dt.datetime) -> str | None:
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError
    context = ValidationContext(trust_roots=store.cas, allow_fetching=False,
                                revocation_mode="soft-fail", moment=moment,
                                best_signature_time=moment)
    validator = CertificateValidator(signer, intermediate_certs=carried,
                                     validation_context=context)
    try:
        path = asyncio.run(validator.async_validate_usage({"digital_signature"}))
    except (PathBuildingError, PathValidationError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - a hostile certificate must not crash the check
        return None
    anchor = path.trust_anchor
    cert = getattr(anchor, "certificate", None)
    name = cert.subject.human_friendly if cert is not None else str(anchor)
    return f"{name} ({cert_fingerprint(cert) if cert is not None else '?'})"
