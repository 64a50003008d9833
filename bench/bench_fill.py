"""The unrooted erase, measured side by side in one run against one emulated unrooted phone
(its /data an ext4-like file system: reserved blocks, extent blocks, commits), through the
real adb server:

- the fill (`adb-fill-reset` up to "No space left on device", in bounded files, keyed
  pattern streamed from the host, synced) vs a plain `adb shell 'dd of=FILE && sync'` of
  the same number of bytes into one file on the same file system (goal >= 0.9): both put
  the bytes on the medium, not just into the phone's page cache;
- the read-back of the fill past the page cache (phonewipe-pwread, `quick` plan) as a share
  of the fill.

The emulator runs in its own process (`phonewipe emulate`), as a phone would.
BENCH_FILL_MIB changes the size of /data.
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
from phonewipe.erase.plugin import EraseContext, PluginOptions, load_plugins
from phonewipe.erase.verify import make_plan, sample_and_check
from phonewipe.protocols.adb.client import FILL_DIR, FILL_RESET, STREAM_CHUNK

DATA_MIB = int(os.environ.get("BENCH_FILL_MIB", "512"))
ROUNDS = 3
PLAIN = "/sdcard/plain-dd.bin"


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="phonewipe-bench-fill-"))
    port = free_port()
    plugin = load_plugins(PluginOptions({"adb_port": port, "adb_home": tmp / "home"}),
                          only=["adb"])["adb"]
    plugin.server.ensure_started()
    emu = subprocess.Popen(
        [sys.executable, "-m", "phonewipe", "--adb-port", str(port), "emulate", "unrooted",
         "--userdata-mib", str(DATA_MIB), "--json", "--workdir", str(tmp / "w")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "HOME": str(tmp / "home")})
    try:
        address = json.loads(emu.stdout.readline())["endpoints"]["adb"]
        session = plugin.open(Endpoint("adb", "adb", address))
        session.identify()
        ignore = lambda done, total: None  # noqa: E731
        fill_s, plain_s, verify_s = float("inf"), float("inf"), float("inf")
        written = samples = 0
        for seed in range(ROUNDS):  # interleaved: a change in this machine's speed hits both
            key = new_key()
            t0 = time.perf_counter()
            report = session.erase(FILL_RESET, EraseContext(key), ignore)
            fill_s, written = min(fill_s, time.perf_counter() - t0), report.bytes_written
            reader = session.reader()
            reader.bypass_cache()
            plan = make_plan("quick", reader.size, reader.block_size, seed=seed)
            t0 = time.perf_counter()
            sampling = sample_and_check(reader, plan, report.expectation, key)
            verify_s = min(verify_s, time.perf_counter() - t0)
            assert sampling.result.status == "passed", sampling.result.reason
            samples = sampling.result.samples_read
            session.check(f"rm -rf {FILL_DIR} && sync")

            stream = PatternStream(new_key())
            chunks = (stream.next(min(STREAM_CHUNK, written - off))
                      for off in range(0, written, STREAM_CHUNK))
            t0 = time.perf_counter()
            session.check(f"dd of={PLAIN} bs={STREAM_CHUNK} && sync", stdin=chunks)
            plain_s = min(plain_s, time.perf_counter() - t0)
            session.check(f"rm -f {PLAIN} && sync")
        mib = written / 2**20
        print(f"/data {DATA_MIB} MiB (emulated ext4), fill {mib:.1f} MiB, best of {ROUNDS}, "
              "interleaved")
        print(f"fill to ENOSPC (bounded files) : {mib / fill_s:8.1f} MiB/s   plain adb shell dd + sync, "
              f"same bytes: {mib / plain_s:8.1f} MiB/s   ratio {plain_s / fill_s:5.2f} (goal >= 0.9)")
        print(f"read-back past the cache (phonewipe-pwread, quick, {samples:,} samples): "
              f"{verify_s:.2f} s = {verify_s / fill_s:.1%} of the fill")
        return 0
    finally:
        emu.terminate()
        emu.wait(timeout=30)
        plugin.server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
