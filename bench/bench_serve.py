"""The dashboard's page time with 10,000 records, side by side with 100 records in one run.

A real station batch (emulated virtual handsets) gives the records' shape; a station log is
then written with N jobs like them (each: queued, identified, erasing, verifying, record,
certified, through `AuditLog`, hash chain and all), and `phonewipe serve` serves it. A page's
time is its HTML and every API call the page makes, over HTTP on loopback, best of ROUNDS.
`cold` is the first page after the first start, when the store builds its projections of a
log it never read; `restart` the first page after the next start (the projections are kept
in the file). BENCH_SERVE_RECORDS changes the 10,000.

BENCH_SERVE_BEFORE=DIR also serves a copy of the large log with another phonewipe (DIR holds
its `phonewipe` package, e.g. the tree of an older commit laid out as the install does), in
the same run, for a before/after comparison: `append` is then the longest a station's append
waited while that server built its projections.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from phonewipe.erase import audit
from phonewipe.erase.audit import AuditLog

RECORDS = int(os.environ.get("BENCH_SERVE_RECORDS", "10000"))
BEFORE = os.environ.get("BENCH_SERVE_BEFORE", "")
SMALL = 100
ROUNDS = 5
PAGES = {  # each view's requests, as app.js makes them
    "live": ["", "static/app.js", "static/plot.js", "static/style.css", "api/overview", "api/jobs"],
    "batches": ["api/batches", "api/batches/{station}/B-bench-0"],
    "throughput": ["api/throughput"],
    "failures": ["api/failures"],
    "search": ["api/search?q={serial}", "api/verify/{station}/{record_id}"],
}


def templates(tmp: Path) -> tuple[list[dict[str, Any]], str]:
    """Final records of a real station run (PASS, NOT ERASED, FAIL) and a real certificate."""
    out = tmp / "template"
    subprocess.run([sys.executable, "-m", "phonewipe", "station", "--out", str(out), "--emulate",
                    "virtual", "--emulate", "virtual-frp", "--emulate", "virtual-lying",
                    "--exit-when-idle", "--idle-seconds", "0.5", "--json-lines"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    db = sqlite3.connect(out / "audit.sqlite")
    records = [json.loads(p)["record"] for (p,) in db.execute(
        "SELECT payload FROM events WHERE event = 'record' ORDER BY id")]
    [cert] = db.execute("SELECT payload FROM events WHERE event = 'certified' LIMIT 1").fetchone()
    db.close()
    return records, json.loads(cert)["certificate"]


def write_log(out: Path, n: int, records: list[dict[str, Any]], certificate: str) -> None:
    rng = random.Random(n)
    real_clock = audit.now_iso
    out.mkdir(parents=True)
    start = time.time() - 20 * 3600
    clock = [""]
    audit.now_iso = lambda: clock[0]  # the records' own times, spread over the last 20 hours
    try:
        with AuditLog(out / "audit.sqlite") as log:
            log._db.execute("PRAGMA synchronous=OFF")  # a fixture, not a station: no fsync per row
            batch = ""
            passed = [r for r in records if r["outcome"] == "ERASED_VERIFIED"] or records
            offsets = sorted(rng.uniform(0, 72000) for _ in range(n))  # uneven, as a shift is
            for i in range(n):
                if i % 500 == 0:
                    clock[0] = clock[0] or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start))
                    if batch:
                        log.append(f"batch:{batch}", "", "batch-closed", {"how": "idle"})
                    batch = f"B-bench-{i // 500}"
                    log.append(f"batch:{batch}", "", "batch-opened", {"batch_id": batch, "manifest": None})
                template = rng.choice(passed) if rng.random() < 0.85 else rng.choice(records)
                record = copy.deepcopy(template)
                serial = f"PWBENCH{i:06d}"
                job = str(uuid.uuid4())
                when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + offsets[i]))
                clock[0] = when
                record.update(job_id=job, record_id=str(uuid.uuid4()), created_at=when, batch_id=batch)
                record["device"] = {**record["device"], "serial": serial,
                                    "imeis": [f"35693803{i:07d}"]}
                log.append(job, serial, "queued", {"batch_id": batch, "asset_tag": f"A-{i}",
                                                   "endpoint": {"address": f"usb:1-{i % 16}"}})
                log.append(job, serial, "identified", {"identity": record["device"]})
                log.append(job, serial, "erasing", {"method": "virtual-pattern"})
                log.append(job, serial, "verifying", {})
                log.append(job, serial, "record", {"outcome": record["outcome"], "record": record,
                                                   "record_sha256": "0" * 64})
                log.append(job, serial, "certified", {"certificate": certificate})
            log.append(f"batch:{batch}", "", "batch-closed", {"how": "idle"})
    finally:
        audit.now_iso = real_clock


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def appending(log_path: Path, stop: threading.Event, waits: list[float]) -> None:
    """A station's appends, one every 50 ms, while a server reads the log: how long each waited."""
    with AuditLog(log_path) as log:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                log.append("bench-live-job", "PWLIVE", "progress", {"done": len(waits)})
            except sqlite3.OperationalError:  # waited its 5 s for the write lock, in vain
                pass
            waits.append(time.perf_counter() - t0)
            stop.wait(0.05)


def measure(out: Path, n: int, rounds: int = ROUNDS, code: str = "") -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": code} if code else None
    proc = subprocess.Popen([sys.executable, "-m", "phonewipe", "serve", "--out", str(out),
                             "--port", "0"], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=code or None)
    stop, waits = threading.Event(), [0.0]
    writer = threading.Thread(target=appending, args=(out / "audit.sqlite", stop, waits))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        station = out.name
        writer.start()
        t0 = time.perf_counter()
        overview = json.loads(get(url + "api/overview"))
        cold = time.perf_counter() - t0
        stop.set()
        writer.join()
        assert overview["stations"][0]["finished"] == n, overview
        job = next(j for j in json.loads(get(url + "api/jobs"))["jobs"] if j["record_id"])
        values = {"station": station, "serial": job["serial"], "record_id": job["record_id"]}
        times = {"cold": cold, "append": max(waits)}
        for page, paths in PAGES.items():
            best = float("inf")
            for _ in range(rounds):
                t0 = time.perf_counter()
                for path in paths:
                    get(url + path.format(**values))
                best = min(best, time.perf_counter() - t0)
            times[page] = best
        return times
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        proc.terminate()
        proc.wait(10)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="phonewipe-bench-serve-"))
    try:
        return run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~1.2 GB: the large log, its copy, the template


def run(tmp: Path) -> int:
    records, certificate = templates(tmp)
    results = {}
    for n in (SMALL, RECORDS):
        out = tmp / f"station-{n}"
        t0 = time.perf_counter()
        write_log(out, n, records, certificate)
        print(f"{n} records: log written in {time.perf_counter() - t0:.1f} s", flush=True)
        if n == RECORDS and BEFORE:  # a copy the other phonewipe never read either
            shutil.copytree(out, tmp / "before")
            before = measure(tmp / "before", n, code=BEFORE)
            before["restart"] = measure(tmp / "before", n, rounds=1, code=BEFORE)["cold"]
        results[n] = measure(out, n)
        results[n]["restart"] = measure(out, n, rounds=1)["cold"]  # projections kept in the file
    small, large = results[SMALL], results[RECORDS]
    if BEFORE:
        print(f"{RECORDS} records, before ({BEFORE}) and now, side by side; load average "
              f"{os.getloadavg()[0]:.1f}")
        for page in large:
            print(f"{page:<12}{before[page] * 1000:>10.1f} ms{large[page] * 1000:>10.1f} ms"
                  f"{before[page] / max(large[page], 1e-9):>8.1f}x")
    print(f"{'page':<12}{SMALL:>10} rec{RECORDS:>10} rec{'ratio':>9}")
    for page in small:
        print(f"{page:<12}{small[page] * 1000:>10.1f} ms{large[page] * 1000:>10.1f} ms"
              f"{large[page] / small[page]:>8.1f}x")
    print(f"the live page with {RECORDS} records: {large['live'] * 1000:.0f} ms; the first page "
          f"after start: {large['cold']:.2f} s while the store builds its projections of a log "
          f"it never read, {large['restart']:.2f} s on the next start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
