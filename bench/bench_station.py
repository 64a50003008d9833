"""Station throughput: wall time and devices per hour for 1, 8 and 32 emulated handsets
erased at once, every handset the same size and the same speed, measured side by side.

Each emulated handset writes at a capped rate (BENCH_STATION_RATE MiB/s, like a phone's own
flash), so the emulated storage is not the bottleneck: if the station ran phones truly side
by side, 32 would take about as long as 1. Goal: 32 take <= 1.5x the time of 1.
Wall time is from the first arrival to the last certificate (batch setup excluded).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phonewipe.certificates.keys import init_keys  # noqa: E402
from phonewipe.certificates.sign import CertificateSigner  # noqa: E402
from phonewipe.demo import free_port  # noqa: E402
from phonewipe.erase.audit import AuditLog  # noqa: E402
from phonewipe.erase.job import JobSettings  # noqa: E402
from phonewipe.erase.model import Operator  # noqa: E402
from phonewipe.erase.plugin import PluginOptions, load_plugins  # noqa: E402
from phonewipe.erase.station.station import Station, StationOptions  # noqa: E402

MIB = int(os.environ.get("BENCH_STATION_MIB", "32"))
RATE = float(os.environ.get("BENCH_STATION_RATE", "2"))
COUNTS = [int(n) for n in os.environ.get("BENCH_STATION_COUNTS", "1,8,32").split(",")]
PER_PROCESS = int(os.environ.get("BENCH_STATION_PER_PROCESS", "8"))
GOAL = 1.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_batch(n: int, tmp: Path, signer: CertificateSigner) -> tuple[float, int, float, float]:
    """(wall seconds, PASSed devices, station CPU s, handsets' CPU s) for n handsets at once.
    The handsets run in their own process (`phonewipe emulate`), as phones do: their CPU work
    is not the station's."""
    tmp.mkdir(parents=True)

    def profile(group: int) -> Path:  # serial numbers are counted per process: one prefix each
        path = tmp / f"bench-handset-{group}.toml"
        path.write_text(f'extends = "rooted"\ndescription = "bench"\n[device]\n'
                        f'serial_prefix = "PWBN{group:02d}"\n[faults]\nslow_mib_s = {RATE}\n')
        return path
    port = free_port()
    env = {**os.environ, "HOME": str(tmp)}
    os.environ["HOME"] = str(tmp)  # the adb server's keys live there, as for `emulate`
    plugins = load_plugins(PluginOptions({"adb_port": port}))
    # one server before the emulator processes: several starting it at once race for the port
    plugins["adb"].server.ensure_started()  # type: ignore[attr-defined]
    # phones bring their own CPUs: one emulator process per PER_PROCESS handsets, so one
    # Python interpreter's lock does not serialize 32 phones' protocol work
    groups = [min(PER_PROCESS, n - i) for i in range(0, n, PER_PROCESS)]
    emulators = [subprocess.Popen([sys.executable, "-m", "phonewipe", "--adb-port", str(port), "emulate",
                                   *[str(profile(g))] * k, "--json", "--userdata-mib", str(MIB),
                                   "--workdir", str(tmp / f"handsets{g}")], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=(tmp / f"emulate{g}.err").open("w"),
                                  text=True)
                 for g, k in enumerate(groups)]
    marks: dict[str, float] = {}

    def listen(event: dict) -> None:
        if event["event"] == "arrived":
            marks.setdefault("first", time.monotonic())
        elif event["event"] == "certified":
            marks["last"] = time.monotonic()

    try:
        for g, (emulate, k) in enumerate(zip(emulators, groups, strict=True)):
            for _ in range(k):
                if not emulate.stdout.readline():
                    raise SystemExit("the emulated handsets did not start: "
                                     + (tmp / f"emulate{g}.err").read_text()[-500:])
        with AuditLog(tmp / "audit.sqlite") as audit:
            options = StationOptions(batch_id=f"bench-{n}", settings=JobSettings(
                                         operator=Operator(name="Bench")),
                                     cert_dir=tmp / "certificates", poll=0.1, exit_when_idle=True,
                                     idle_seconds=0.5, second_look_share=0)
            station = Station(plugins, audit, signer, options, listener=listen)
            cpu0, phones0 = time.process_time(), sum(cpu_seconds(e.pid) for e in emulators)
            station.run()
            cpu = time.process_time() - cpu0
            phones = sum(cpu_seconds(e.pid) for e in emulators) - phones0
            passed = sum(1 for r in station.rows.values() if r.outcome == "ERASED_VERIFIED")
    finally:
        for emulate in emulators:
            emulate.send_signal(signal.SIGTERM)
        for emulate in emulators:
            emulate.wait(30)
        plugins["adb"].server.stop()  # type: ignore[attr-defined]
    return marks["last"] - marks["first"], passed, cpu, phones


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-station-") as d:
        root = Path(d)
        init_keys(root / "keys", "phonewipe bench", "bench signing key")
        signer = CertificateSigner(root / "keys")
        print(f"{MIB} MiB userdata per handset, each writing at {RATE:g} MiB/s "
              f"(erase alone: {MIB / RATE:.1f} s), quick verification, signed certificate")
        print(f"{'handsets':>8} {'wall s':>8} {'devices/h':>10} {'vs 1':>6} {'PASS':>5} "
              f"{'station CPU s':>14} {'handsets CPU s':>15}")
        base = None
        worst = 0.0
        for n in COUNTS:
            wall, passed, cpu, phones = run_batch(n, root / f"n{n}", signer)
            base = base or wall
            ratio = wall / base
            worst = max(worst, ratio)
            print(f"{n:>8} {wall:>8.2f} {n * 3600 / wall:>10.0f} {ratio:>6.2f} {passed:>5} "
                  f"{cpu:>14.1f} {phones:>15.1f}", flush=True)
            if passed != n:
                print(f"only {passed} of {n} handsets passed")
                return 1
        print(f"{max(COUNTS)} at once take {worst:.2f}x the time of 1 (goal <= {GOAL}); the "
              f"emulated handsets' own CPU (real phones bring theirs) shares this machine's "
              f"{os.cpu_count()} cores; the station itself used {cpu / n:.2f} CPU s per device")
        return 0


if __name__ == "__main__":
    sys.exit(main())
