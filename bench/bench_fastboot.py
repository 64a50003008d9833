"""fastboot transfer: our client vs the AOSP `fastboot` binary sending the same image
(256 MiB by default) to the same emulated bootloader over loopback TCP, in one run.

Both do one `download:` of the whole file (`fastboot stage FILE` for AOSP). The emulator
runs in its own process, as a phone would, so it never shares our client's interpreter.
Goal: ours <= 1.1x the time of AOSP fastboot.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_MIB = int(os.environ.get("BENCH_FASTBOOT_MIB", "256"))
ROUNDS = 3
CHUNK = 4 * 1024 * 1024


def serve(workdir: Path) -> None:
    """The emulated bootloader (child process): print its address, serve until stdin ends."""
    from dataclasses import replace

    from phonewipe.erase.emulation.profiles import load_profile
    from phonewipe.erase.emulation.storage import HandsetStorage
    from phonewipe.protocols.fastboot.emulator import EmulatedBootloader

    profile = load_profile("bootloader-unlocked")
    profile = replace(profile, userdata_bytes=4 * 1024 * 1024)
    storage = HandsetStorage.create(workdir / "handset", profile, "PWBENCH0")
    emu = EmulatedBootloader(storage, None, max_download=(IMAGE_MIB + 1) << 20)
    print(emu.address, flush=True)
    sys.stdin.read()
    emu.stop()


def main() -> int:
    binary = shutil.which("fastboot")
    if not binary:
        print("fastboot is not installed (apt-get install fastboot): skipped")
        return 0
    from phonewipe.protocols.fastboot.client import FastbootClient
    from phonewipe.protocols.fastboot.transport_tcp import TcpTransport

    tmp = Path(tempfile.mkdtemp(prefix="phonewipe-bench-fastboot-"))
    image = tmp / "image.bin"
    with open(image, "wb") as f:
        for _ in range(IMAGE_MIB // 4):
            f.write(os.urandom(CHUNK))
    size = image.stat().st_size
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = server.stdout.readline().strip()

        def ours() -> None:
            client = FastbootClient(TcpTransport(address, 10), 60)
            with open(image, "rb") as f:
                client.download(size, iter(lambda: f.read(CHUNK), b""))
            client.close()

        def aosp() -> None:
            subprocess.run([binary, "-s", address, "stage", str(image)], check=True,
                           capture_output=True, timeout=300)

        times: dict[str, list[float]] = {"ours": [], "aosp": []}
        for _ in range(ROUNDS):  # interleaved, so load from elsewhere hits both alike
            for name, fn in (("aosp", aosp), ("ours", ours)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        mib = size / 2**20
        print(f"image {mib:.0f} MiB over loopback TCP, best of {ROUNDS}")
        print(f"  AOSP fastboot stage : {best['aosp']:.3f} s ({mib / best['aosp']:.0f} MiB/s)")
        print(f"  our client download : {best['ours']:.3f} s ({mib / best['ours']:.0f} MiB/s)")
        ratio = best["ours"] / best["aosp"]
        print(f"  ratio ours/AOSP time: {ratio:.2f} (goal <= 1.1)")
        return 0
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]))
    else:
        sys.exit(main())
