"""Erase and read back a phone whose kernel and storage are real: a loop device (the Linux
block-device page cache) over a FUSE medium that can silently drop writes, a chroot with
mksh and busybox as the phone's shell, served by the emulated adbd to Debian's adb server,
erased by the `phonewipe` command. A read-back that the page cache answers passes a medium
that kept the old data: these tests fail on such a client (see tests/realphone/)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from realphone import tier
from realphone.phone import BLOCK, USERDATA_BYTES, RealPhone, cache_self_test, contiguous_drop, real_phone
from realphone.tier import check_prerequisites

from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.protocols.adb.server import AdbServer

pytestmark = pytest.mark.interop
adb, keys = tier.adb, tier.keys  # the module-wide adb server and signing key (fixtures)

USERDATA = "/dev/block/by-name/userdata"
MARKERS = planted_markers()
LYING_SHARE = 0.01


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    check_prerequisites({}, "loop devices, mounts, chroot")


@pytest.fixture
def phone(adb: AdbServer, tmp_path: Path) -> Iterator[Callable[[float], RealPhone]]:
    """Factory: a connected phone whose medium drops ``share`` of userdata (0: honest).
    Afterwards nothing of it is left: no adb transport, mount, loop device or FUSE process."""
    with ExitStack() as stack:
        def make(share: float = 0.0) -> RealPhone:
            drops = [contiguous_drop(USERDATA_BYTES, share)] if share else []
            started = stack.enter_context(real_phone(tmp_path / "phone", drops))
            stack.callback(adb.run, "disconnect", started.address)
            adb.connect(started.address)
            return started
        yield make
    _assert_nothing_left(tmp_path)


def _assert_nothing_left(tmp_path: Path) -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "a mount was left behind"
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in loops, f"a loop device was left behind: {loops}"
    fuse = [p for p in Path("/proc").glob("[0-9]*/cmdline")
            if str(tmp_path).encode() in _read(p) and b"medium.py" in _read(p)]
    assert not fuse, "the FUSE process was left behind"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def erase(adb: AdbServer, keys: Path, phone: RealPhone, out: Path, method: str,
          verify: str) -> tuple[int, dict]:
    """`phonewipe erase` as a user runs it, against the private adb server."""
    home = out.parent / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "phonewipe", "--adb-port", str(adb.port), "erase", phone.address,
         "--out", str(out), "--keys", str(keys), "--operator", "Test Operator", "--organization", "Test Org",
         "--method", method, "--verify", verify, "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})
    assert "Traceback" not in result.stderr, result.stderr
    [entry] = json.loads(result.stdout)
    return result.returncode, entry


def surviving(phone: RealPhone) -> list[bytes]:
    """Planted markers that the medium really still stores."""
    data = phone.backing.read_bytes()
    return [m for m in MARKERS if m in data]


# -- (a) the page cache and the lying medium are real -----------------------------------------
def test_page_cache_answers_for_a_medium_that_dropped_the_write(phone) -> None:
    lying = phone(LYING_SHARE)
    start, _ = lying.drops[0]
    seen = cache_self_test(lying.device, lying.backing, start + BLOCK)
    assert seen.after_sync == seen.written  # the page cache answers, even after fsync
    assert seen.after_flushbufs == seen.on_medium != seen.written  # the medium kept old data


def test_the_phone_shell_can_get_past_the_page_cache(adb: AdbServer, phone) -> None:
    """What a fixed client runs: busybox dd, then BLKFLSBUF or drop_caches as root."""
    lying = phone(LYING_SHARE)
    skip = (lying.drops[0][0] + 2 * BLOCK) // BLOCK
    device = adb.client().device(serial=lying.address)
    read = f"dd if={USERDATA} bs={BLOCK} skip={skip} count=1 2>/dev/null"
    old = device.shell(read, encoding=None)
    device.shell(f"dd if=/dev/zero of={USERDATA} bs={BLOCK} seek={skip} count=1 conv=notrunc"
                 f" 2>/dev/null && sync")
    assert device.shell(read, encoding=None) == bytes(BLOCK)  # answered by the page cache
    device.shell(f"blockdev --flushbufs {USERDATA}")
    assert device.shell(read, encoding=None) == old
    device.shell(f"dd if=/dev/zero of={USERDATA} bs={BLOCK} seek={skip} count=1 conv=notrunc"
                 f" 2>/dev/null && sync")
    device.shell("echo 3 > /proc/sys/vm/drop_caches")
    assert device.shell(read, encoding=None) == old


# -- (b) an honest medium: PASS ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["adb-raw-pattern", "adb-raw-zeros"])
def test_honest_medium_is_erased_and_verified(adb: AdbServer, keys: Path, phone, tmp_path: Path,
                                              method: str) -> None:
    honest = phone()
    assert len(surviving(honest)) == len(MARKERS)
    code, entry = erase(adb, keys, honest, tmp_path / "out", method, "quick")
    assert (code, entry["outcome"]) == (0, "ERASED_VERIFIED"), entry
    assert surviving(honest) == []


# -- (c) a medium that drops 1 % of the writes: FAILED, never PASS ----------------------------
@pytest.mark.parametrize("verify", ["quick", "nist"])
@pytest.mark.parametrize("method", ["adb-raw-pattern", "adb-raw-zeros"])
def test_lying_medium_is_never_passed(adb: AdbServer, keys: Path, phone, tmp_path: Path,
                                      method: str, verify: str) -> None:
    lying = phone(LYING_SHARE)
    code, entry = erase(adb, keys, lying, tmp_path / "out", method, verify)
    assert surviving(lying), "the medium should still hold planted data in its dropped range"
    assert entry["outcome"] == "FAILED", (
        f"false {entry['result']}: the read-back was answered by the page cache while the "
        f"medium kept old data in {LYING_SHARE:.0%} of userdata")
    assert code == 12
