"""`make bench`: every benchmark, each printing ratios measured side by side in one run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_adb_throughput.py", "bench_signing.py", "bench_station.py", "bench_verify.py",
           "bench_fill.py",
           "bench_fastboot.py", "bench_store.py", "bench_block.py", "bench_edl.py", "bench_serve.py",
           "bench_ios.py"]


def main() -> int:
    failed = 0
    for name in BENCHES:
        print(f"\n== {name} ==", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / name)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
