"""The block plugin's overwrite vs `dd oflag=direct`, side by side in one run, to the same
real loop device (goal >= 0.9), each against dd writing the same bytes:
`block-zeros` against `dd if=/dev/zero of=DEV bs=4M oflag=direct conv=fsync`, and
`block-pattern` (the keyed pattern made on the host while it writes, O_DIRECT, then fsync +
BLKFLSBUF) against the same dd of the same keyed bytes made beforehand into tmpfs. Content
costs dd too: zeros come from /dev/zero for nothing, the pattern is copied out of memory
(seen here: dd 1,690 MiB/s of the pattern against 2,260 of zeros, to the same device), so the
pattern is set against dd of the pattern, and its figure against dd of zeros is printed
beside it. Rounds are interleaved, best of each kept. Also the quick
read-back past the page cache as a share of the overwrite, and the keyed pattern made alone
(the host's AES-256-CTR). Needs root and loop devices (else says so and exits 0).
BENCH_BLOCK_MIB changes the device's size, BENCH_BLOCK_ROUNDS the rounds (a shared host is
noisy: more rounds, steadier best).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostload import cpu_times, stolen_since

from phonewipe.erase.pattern import PatternStream, new_key
from phonewipe.erase.plugin import EraseContext, PluginOptions
from phonewipe.erase.verify import make_plan, sample_and_check
from phonewipe.protocols.block import BlockPlugin, directio
from phonewipe.protocols.block.session import PATTERN, ZEROS, BlockSession

SIZE_MIB = int(os.environ.get("BENCH_BLOCK_MIB", "512"))
ROUNDS = int(os.environ.get("BENCH_BLOCK_ROUNDS", "3"))


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    if shutil.which("losetup") is None or shutil.which("dd") is None:
        return "losetup and dd are needed (Debian: mount, coreutils)"
    return None


def timed_dd(source: str, node: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={source}", f"of={node}", "bs=4M", f"count={SIZE_MIB // 4}",
                    "oflag=direct", "conv=fsync", "status=none"], check=True)
    return time.perf_counter() - t0


def made_beforehand(key: bytes, directory: Path) -> Path:
    """The keyed pattern the erase writes with ``key``, made into a file in memory (tmpfs)
    for dd to copy: the same bytes, with nothing to make."""
    path = directory / "pattern.bin"
    with open(path, "wb") as f:
        stream = PatternStream(key, 0)
        for _ in range(SIZE_MIB):
            f.write(stream.next(1 << 20))
    return path


def made_alone() -> float:
    """Seconds to make SIZE_MIB of the keyed pattern into an aligned buffer, best of ROUNDS."""
    fill = BlockSession._filler(PATTERN, EraseContext(new_key()))
    assert fill is not None
    buf = directio.AlignedBuffer(directio.MADE_CHUNK + 4096)
    best = float("inf")
    try:
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for offset in range(0, SIZE_MIB << 20, directio.MADE_CHUNK):
                fill(buf.view, offset, directio.MADE_CHUNK)
            best = min(best, time.perf_counter() - t0)
    finally:
        buf.close()
    return best


def main() -> int:
    why = unavailable()
    if why:
        print(f"bench_block skipped: {why}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="phonewipe-bench-block-", dir="/var/tmp"))
    image = tmp / "medium.img"
    with open(image, "wb") as f:
        f.truncate(SIZE_MIB << 20)
    node = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    shm = Path(tempfile.mkdtemp(prefix="phonewipe-bench-block-",
                                dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        key = new_key()
        pattern_file = str(made_beforehand(key, shm))
        plugin = BlockPlugin(PluginOptions({"block_scan": False, "block_allow_internal": [node]}))
        [endpoint] = plugin.discover()
        session = plugin.open(endpoint)
        session.identify()
        best = {name: float("inf") for name in ("dd", "dd-pattern", "pattern", "zeros")}
        verify_s = float("inf")
        host = cpu_times()
        for _ in range(ROUNDS):
            best["dd"] = min(best["dd"], timed_dd("/dev/zero", node))
            best["dd-pattern"] = min(best["dd-pattern"], timed_dd(pattern_file, node))
            for name, method in (("pattern", PATTERN), ("zeros", ZEROS)):
                t0 = time.perf_counter()
                report = session.erase(method, EraseContext(key), lambda done, total: None)
                best[name] = min(best[name], time.perf_counter() - t0)
            reader = session.reader()
            assert reader is not None
            t0 = time.perf_counter()
            sampling = sample_and_check(reader, make_plan("quick", reader.size), report.expectation,
                                        key)
            verify_s = min(verify_s, time.perf_counter() - t0)
            assert sampling.result.status == "passed", sampling.result.reason
        stolen = stolen_since(host)
        best["made"] = made_alone()
        mib_s = {k: SIZE_MIB / v for k, v in best.items()}
        print(f"device: {node} over {image} ({SIZE_MIB} MiB), best of {ROUNDS} interleaved rounds")
        print(f"dd oflag=direct, zeros      {mib_s['dd']:8.1f} MiB/s")
        print(f"dd oflag=direct, the pattern{mib_s['dd-pattern']:8.1f} MiB/s   (made beforehand)")
        print(f"block-zeros                 {mib_s['zeros']:8.1f} MiB/s   "
              f"ratio {mib_s['zeros'] / mib_s['dd']:.2f} of dd's zeros (goal >= 0.9)")
        print(f"block-pattern (keyed)       {mib_s['pattern']:8.1f} MiB/s   "
              f"ratio {mib_s['pattern'] / mib_s['dd-pattern']:.2f} of dd's pattern (goal >= 0.9); "
              f"{mib_s['pattern'] / mib_s['dd']:.2f} of dd's zeros")
        print(f"keyed pattern made alone    {mib_s['made']:8.1f} MiB/s   (no device)")
        print(f"quick read-back (O_DIRECT)  {verify_s:8.2f} s = "
              f"{verify_s / best['zeros']:.1%} of the zero overwrite")
        print(stolen)
        return 0
    finally:
        subprocess.run(["losetup", "--detach", node], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
