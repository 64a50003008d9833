"""iPhones at once: identify (pair, lockdown values, Find My, MCInstall), Erase All Content
and Settings, and the post-state check after the reboot, for 1 and for 16 emulated iPhones
erased side by side, measured in one run. Goal: 16 take <= 1.5x the time of 1.

The emulated iPhones run in their own processes (`phonewipe emulate`, BENCH_IOS_PER_PROCESS
phones each), as phones do: their CPU (TLS, a new RSA identity at each erase) is not the
host's, and they do not share the host's GIL. The host side runs as it runs against real
phones: the ios plugin in this process, one job thread per phone, each reaching its phone
through a usbmuxd socket (here the emulate processes', for real phones the system daemon).
Both counts start from an empty pair-record folder and a new plugin, so each pays for
pairing and for making the host's pairing identity. Each phone's erase keeps it off the bus
for BENCH_IOS_REBOOT seconds (a real one takes minutes), so what is measured is whether the
host serves phones side by side.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phonewipe.erase.audit import AuditLog  # noqa: E402
from phonewipe.erase.emulation.registry import DIR_KEY  # noqa: E402
from phonewipe.erase.job import JobSettings, run_job  # noqa: E402
from phonewipe.erase.model import Outcome  # noqa: E402
from phonewipe.erase.plugin import PluginOptions, load_plugins  # noqa: E402
from phonewipe.protocols.apple_ios import session as _warm  # noqa: E402,F401 - imported before timing

COUNTS = [int(n) for n in os.environ.get("BENCH_IOS_COUNTS", "1,16").split(",")]
PER_PROCESS = int(os.environ.get("BENCH_IOS_PER_PROCESS", "4"))
REBOOT = float(os.environ.get("BENCH_IOS_REBOOT", "3"))
GOAL = 1.5


def start_phones(n: int, tmp: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache")}
    procs = []
    for group in range(0, n, PER_PROCESS):
        count = min(PER_PROCESS, n - group)
        profile = tmp / f"bench-iphone-{group}.toml"
        profile.write_text(f'extends = "iphone"\ndescription = "bench"\n[device]\n'
                           f'serial_prefix = "PWIB{group:02d}"\n[storage]\nuserdata_mib = 4\n'
                           f'[ios]\nreboot_s = {REBOOT}\n')
        proc = subprocess.Popen([sys.executable, "-m", "phonewipe", "emulate", "--workdir",
                                 str(tmp / f"phones-{group}"), *[str(profile)] * count],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=tmp)
        procs.append(proc)
        for _ in range(count):  # one line per phone once it is plugged in
            assert proc.stdout is not None and proc.stdout.readline(), "phonewipe emulate failed"
    return procs


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_batch(n: int, tmp: Path) -> tuple[float, int, float, float]:
    """(wall seconds, phones ERASED_UNVERIFIED, host CPU seconds, phones' CPU seconds) for
    n iPhones at once."""
    tmp.mkdir(parents=True)
    procs = start_phones(n, tmp)
    try:
        plugins = load_plugins(PluginOptions({
            DIR_KEY: tmp / "cache" / "phonewipe" / "emulators", "ios_usbmux": "127.0.0.1:1",
            "ios_pair_records": str(tmp / "pair-records"), "ios_pair_timeout": 0.0,
            "ios_reboot_timeout": 120.0}), only=["ios"])
        plugin = plugins["ios"]
        endpoints = plugin.discover()
        assert len(endpoints) == n, f"{len(endpoints)} of {n} iPhones listed"
        with AuditLog(tmp / "audit.sqlite") as audit:
            phones_cpu = sum(cpu_seconds(p.pid) for p in procs)
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            start = time.monotonic()
            with ThreadPoolExecutor(max_workers=n) as pool:
                records = list(pool.map(lambda e: run_job(plugin, e, JobSettings(), audit), endpoints))
            wall = time.monotonic() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            phones_cpu = sum(cpu_seconds(p.pid) for p in procs) - phones_cpu
        host_cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        erased = sum(r.outcome is Outcome.ERASED_UNVERIFIED for r in records)
        for r in records:
            if r.outcome is not Outcome.ERASED_UNVERIFIED:
                print(f"  unexpected {r.outcome.value}: {r.reason}", file=sys.stderr)
        return wall, erased, host_cpu, phones_cpu
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(15)


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ios-") as tmp:
        for n in COUNTS:
            wall, erased, cpu, phones = run_batch(n, Path(tmp) / f"n{n}")
            results[n] = wall
            print(f"{n:3d} iPhones at once: {wall:6.2f} s wall, {erased}/{n} erased (not verified), "
                  f"CPU {cpu / n:.2f} s per phone on the host and {phones / n:.2f} s in the emulated "
                  f"phone, emulated reboot {REBOOT:g} s; load average {os.getloadavg()[0]:.1f}")
    ok = True
    if 1 in results and max(COUNTS) > 1:
        n = max(COUNTS)
        ratio = results[n] / results[1]
        ok = ratio <= GOAL
        print(f"{n} at once take {ratio:.2f}x the time of 1 (goal <= {GOAL}x): "
              f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
