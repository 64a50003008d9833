"""Signed certificates per second, without and with an RFC 3161 timestamp from a TSA on
loopback, side by side; rendering alone for reference.

A station signs one PDF per phone; signing must never be its bottleneck. Goal: 1000
certificates (render + PAdES sign + fsync to disk) within 30 s on 2 cores without a TSA.
Each worker process loads the key once (one CertificateSigner), as the station does; one
worker per core (BENCH_SIGN_WORKERS). The TSA is certomancer's (tests/tsa.py), served in
this process on 127.0.0.1: its cost (a second signature per certificate, an HTTP round
trip) lands on the same cores, as it would not with a remote TSA.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tsa.py: the loopback TSA the tests use

from phonewipe.certificates.keys import init_keys  # noqa: E402
from phonewipe.certificates.render import render_pdf  # noqa: E402
from phonewipe.certificates.sign import CertificateSigner  # noqa: E402
from phonewipe.erase.model import (  # noqa: E402
    Destination,
    Endpoint,
    Identity,
    Operator,
    Outcome,
    Record,
    Sanitization,
    VerificationResult,
)

COUNT = int(os.environ.get("BENCH_SIGN_COUNT", "1000"))
WORKERS = int(os.environ.get("BENCH_SIGN_WORKERS", str(min(2, os.cpu_count() or 1))))
GOAL_SECONDS = 30.0  # for 1000 certificates without a TSA
RENDER_SAMPLE = 100

_signer: CertificateSigner | None = None
_out: Path | None = None


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


def _init(keys: str, out: str, tsa_url: str | None) -> None:
    global _signer, _out
    _signer = CertificateSigner(Path(keys), tsa_url=tsa_url)
    _out = Path(out)
    _signer.sign_record(sample_record(0))  # warm-up: imports, font metrics


def _sign(indices: range) -> tuple[int, float]:
    assert _signer is not None and _out is not None
    cpu = time.process_time()
    for i in indices:
        _signer.write_certificate(replace(sample_record(i), record_id=str(uuid.uuid4())), _out)
    return len(indices), time.process_time() - cpu


def signed_run(keys: Path, out: Path, count: int, tsa_url: str | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the signing workers) for `count` certificates over
    WORKERS processes (started and warmed first). The CPU seconds do not count the TSA's
    own work, nor time lost to other load on the machine."""
    ctx = multiprocessing.get_context("spawn")
    chunks = [range(i, min(i + 25, count)) for i in range(0, count, 25)]
    with ctx.Pool(WORKERS, initializer=_init, initargs=(str(keys), str(out), tsa_url)) as pool:
        pool.map(_noop, range(WORKERS * 4))  # every worker has run its initializer
        t0 = time.perf_counter()
        results = list(pool.imap_unordered(_sign, chunks))
        elapsed = time.perf_counter() - t0
    done = sum(n for n, _ in results)
    assert done == count and len(list(out.glob("*.pdf"))) == count
    return elapsed, sum(c for _, c in results)


def _noop(_: int) -> None:
    time.sleep(0.05)


def main() -> int:
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="phonewipe-bench-sign-") as tmp:
        keys = Path(tmp) / "keys"
        init_keys(keys, "phonewipe bench", "bench signing key")
        records = [sample_record(i) for i in range(RENDER_SAMPLE)]
        render_pdf(records[0])
        t0 = time.perf_counter()
        for r in records:
            render_pdf(r)
        render_rate = RENDER_SAMPLE / (time.perf_counter() - t0)
        plain = signed_run(keys, Path(tmp) / "plain", COUNT, None)
        tsa_seconds: tuple[float, float] | None = None
        try:
            from tsa import start_tsa
        except ImportError as e:  # certomancer is in the test extra
            print(f"(no loopback TSA: {e}; install '.[test]')")
        else:
            with start_tsa(Path(tmp) / "tsa") as tsa:
                tsa_seconds = signed_run(keys, Path(tmp) / "tsa-signed", COUNT, tsa.url)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"rendering alone, one process:                {render_rate:8.1f} PDFs/s")
    print(f"{COUNT} signed certificates, {WORKERS} worker(s), to disk "
          f"(load average {load:.1f} on {os.cpu_count()} cores):")
    print(f"{'':44}{'wall s':>8} {'cert/s':>8} {'CPU ms/cert':>12}")
    rows = [("without a TSA", plain)] + \
        ([("with an RFC 3161 timestamp (loopback TSA)", tsa_seconds)] if tsa_seconds else [])
    for label, (wall, cpu) in rows:
        print(f"  {label:42}{wall:8.2f} {COUNT / wall:8.1f} {1000 * cpu / COUNT:12.1f}")
    if tsa_seconds is not None:
        print(f"  ratio with/without TSA (wall time):       {tsa_seconds[0] / plain[0]:8.2f}")
    projected = plain[0] * 1000 / COUNT
    met = projected <= GOAL_SECONDS
    print(f"goal: 1000 certificates within {GOAL_SECONDS:.0f} s without a TSA: "
          f"{projected:.1f} s for 1000 ({'met' if met else 'NOT met'}); CPU alone: "
          f"{plain[1] * 1000 / COUNT / WORKERS:.1f} s per core for 1000")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
