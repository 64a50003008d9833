"""A record's certificate: its bytes (from the store, else the file the station wrote), and
what the offline verification of `certificates/verify.py` says about them, checked against
what the store holds: the file's SHA-256 when it was certified and the record's SHA-256."""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any

from phonewipe.certificates.trust import TrustStore
from phonewipe.certificates.verify import verify_bytes
from phonewipe.erase.store.base import CertificateRef

from .source import Source

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def certificate_file(source: Source, ref: CertificateRef) -> Path | None:
    """The PDF the `certified` event names: where it was written, else where its station
    directory keeps it now (the directory was moved or copied)."""
    named = Path(ref.path)
    if not named.name.lower().endswith(".pdf"):
        return None
    if named.is_file():
        return named
    if source.directory is not None:
        for candidate in sorted(source.directory.glob(f"batches/*/certificates/{named.name}")):
            if candidate.is_file():
                return candidate
    return None


def certificate_bytes(source: Source, ref: CertificateRef) -> tuple[bytes, str] | None:
    """(the PDF's bytes, a file name to download it as), or None when there are none."""
    if ref.stored:
        data = source.reader.certificate_pdf(ref.record_id)
        if data is not None:
            return data, download_name(ref.path)
    path = certificate_file(source, ref)
    if path is None:
        return None
    try:
        return path.read_bytes(), download_name(str(path))
    except OSError:
        return None


def download_name(path: str) -> str:
    return _SAFE.sub("_", Path(path).name).strip("._") or "certificate.pdf"


class Verifier:
    """Verifies certificates with one trust store, remembering each result by the bytes'
    SHA-256 (a certificate verifies the same until it changes)."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def verify(self, data: bytes, name: str, ref: CertificateRef) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None:
            cached = self._verify(data, name)
            with self._lock:
                self._cache[digest] = cached
        result = dict(cached)
        problems = list(result["problems"])
        if ref.sha256 and digest != ref.sha256:
            problems.append("the file is not the one the station certified (its SHA-256 differs "
                            "from the one the store took when it was written)")
        embedded = result.pop("record_sha256")
        if ref.record_sha256 and embedded and embedded != ref.record_sha256:
            problems.append("the certificate holds another record than the store's (its SHA-256 "
                            "differs)")
        if problems != result["problems"]:
            result["verdict"], result["problems"] = "invalid", problems
        return {"sha256": digest, **result}

    def _verify(self, data: bytes, name: str) -> dict[str, Any]:
        report = verify_bytes(data, Path(name), self.trust)
        return {"verdict": report.verdict, "problems": list(report.problems),
                "notes": list(report.notes), "signer": report.signer_subject or "",
                "fingerprint": report.signer_fingerprint or "", "trusted": report.trusted,
                "trust_note": report.trust_note, "signed_at": report.signed_at or "",
                "timestamp": report.timestamp or "", "time_source": report.time_source,
                "record_sha256": report.record.sha256() if report.record else ""}
