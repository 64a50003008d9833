"""ADB throughput, measured side by side in one run against one emulated handset:

- on-device overwrite (`dd if=/dev/zero` on the phone, through the real adb server) vs
  host `dd` to the same backing file (goal >= 0.9);
- host-streamed keyed pattern (shell v2 stdin) vs a plain `adb push` of the same size
  through the same server (goal >= 0.9).

The emulator runs in its own process (`phonewipe emulate`), as a phone would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phonewipe.demo import free_port
from phonewipe.erase.model import Endpoint
from phonewipe.erase.pattern import PatternStream, new_key
from phonewipe.erase.plugin import PluginOptions, load_plugins
from phonewipe.protocols.adb.client import STREAM_CHUNK, USERDATA

IMAGE_MIB = int(os.environ.get("BENCH_IMAGE_MIB", "512"))
STREAM_MIB = IMAGE_MIB // 2
ROUNDS = 3


def best(fn, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="phonewipe-bench-"))
    port = free_port()
    plugin = load_plugins(PluginOptions({"adb_port": port, "adb_home": tmp / "home"}))["adb"]
    plugin.server.ensure_started()
    emu = subprocess.Popen(
        [sys.executable, "-m", "phonewipe", "--adb-port", str(port), "emulate", "rooted",
         "--userdata-mib", str(IMAGE_MIB), "--json", "--workdir", str(tmp / "w")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "HOME": str(tmp / "home")})
    try:
        info = json.loads(emu.stdout.readline())
        address = info["endpoints"]["adb"]
        image = Path(info["storage"]) / "userdata.img"
        session = plugin.open(Endpoint("adb", "adb", address))
        session.identify()
        size = IMAGE_MIB << 20

        def ours_zero() -> None:
            session._zero_fill(size, lambda done, total: None)
            session.check("sync", root=True)

        def host_dd() -> None:
            subprocess.run(["dd", "if=/dev/zero", f"of={image}", "bs=1M", f"count={IMAGE_MIB}",
                            "conv=notrunc,fsync", "status=none"], check=True)

        t_dd, t_zero = best(host_dd), best(ours_zero)

        stream_bytes = STREAM_MIB << 20
        payload = tmp / "push.bin"
        stream = PatternStream(new_key())
        with open(payload, "wb") as f:
            for _ in range(STREAM_MIB):
                f.write(stream.next(1 << 20))

        def ours_stream() -> None:
            s = PatternStream(new_key())
            chunks = (s.next(STREAM_CHUNK) for _ in range(stream_bytes // STREAM_CHUNK))
            session.check(f"dd of={USERDATA} bs={STREAM_CHUNK} conv=notrunc", root=True, stdin=chunks)

        def adb_push() -> None:
            result = plugin.server.run("-s", address, "push", str(payload), "/data/local/tmp/bench.bin",
                                       timeout=600)
            if result.returncode != 0:
                raise SystemExit(f"adb push failed: {result.stderr.strip()}")
            session.check("rm -f /data/local/tmp/bench.bin")

        t_push, t_stream = best(adb_push), best(ours_stream)
        mib_s = lambda mib, t: f"{mib / t:8.1f} MiB/s"  # noqa: E731
        print(f"image {IMAGE_MIB} MiB, stream {STREAM_MIB} MiB, best of {ROUNDS}")
        print(f"on-device zero overwrite : {mib_s(IMAGE_MIB, t_zero)}   host dd same file: "
              f"{mib_s(IMAGE_MIB, t_dd)}   ratio {t_dd / t_zero:5.2f} (goal >= 0.9)")
        print(f"host-streamed pattern    : {mib_s(STREAM_MIB, t_stream)}   adb push same size: "
              f"{mib_s(STREAM_MIB, t_push)}   ratio {t_push / t_stream:5.2f} (goal >= 0.9)")
        return 0
    finally:
        emu.terminate()
        emu.wait(timeout=30)
        plugin.server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
