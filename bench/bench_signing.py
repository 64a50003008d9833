"""Signed certificates per second with one CertificateSigner (key loaded once), measured
side by side with rendering alone, so the share the signature costs is visible.

A station signs one PDF per phone; the goal is that signing never becomes the bottleneck
(hundreds of phones a shift need well under one certificate per second).
"""
from __future__ import annotations

import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from phonewipe.certificates.keys import init_keys
from phonewipe.certificates.render import render_pdf
from phonewipe.certificates.sign import CertificateSigner
from phonewipe.erase.model import (Destination, Endpoint, Identity, Operator, Outcome, Record, Sanitization,
                         VerificationResult)

COUNT = 100


def sample_record(i: int) -> Record:
    return Record(
        record_id=str(uuid.uuid4()), job_id=str(uuid.uuid4()), created_at="2026-11-22T10:00:00Z",
        outcome=Outcome.ERASED_VERIFIED,
        device=Identity(platform="android", serial=f"BENCH{i:05d}", manufacturer="Google",
                        model="Pixel 6a", imeis=("356938035643809",), capacity_bytes=128 << 30),
        endpoint=Endpoint("adb", "adb", f"127.0.0.1:{5555 + i}"),
        operator=Operator(name="Bench Operator", organization="phonewipe bench"),
        destination=Destination("resale"), tool={"name": "phonewipe", "version": "bench"},
        sanitization=Sanitization(method="adb-raw-pattern", title="Overwrite with keyed pattern",
                                  technique="overwrite", category="Clear", standard="NIST SP 800-88",
                                  justification="logical overwrite, verified by sampling"),
        verification=VerificationResult(mode="quick", status="passed", samples_read=4603))


def rate(fn, records: list[Record]) -> float:
    t0 = time.perf_counter()
    for record in records:
        fn(record)
    return len(records) / (time.perf_counter() - t0)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="phonewipe-bench-sign-") as tmp:
        keys = Path(tmp) / "keys"
        init_keys(keys, "phonewipe bench", "bench signing key")
        signer = CertificateSigner(keys)
        out = Path(tmp) / "certs"
        records = [sample_record(i) for i in range(COUNT)]
        signer.write_certificate(records[0], out)  # warm-up: imports, font metrics
        render_rate = rate(render_pdf, records)
        sign_rate = rate(lambda r: signer.write_certificate(replace(r, record_id=str(uuid.uuid4())), out),
                         records)
    print(f"rendered PDFs per second:               {render_rate:8.1f}")
    print(f"signed certificates per second (to disk): {sign_rate:8.1f}")
    print(f"ratio signed/rendered:                  {sign_rate / render_rate:8.2f}")
    print(f"one certificate costs {1000 / sign_rate:.1f} ms; goal: well under 1 s per phone")
    return 0 if sign_rate >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
