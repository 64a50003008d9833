"""Counterfeit capacity on the block path: a "16 MiB" card that holds 4 MiB (a FUSE medium
whose addresses wrap, tests/realphone/medium.py --real) under a real loop device, erased
through `phonewipe erase`. The kernel sees a 16 MiB disk that accepts every write; only the
keyed pattern, addressed by offset, tells what the flash kept."""
from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
from realphone import tier
from realphone.medium import LyingMedium
from realphone.phone import make_medium_image
from realphone.tier import missing

pytestmark = pytest.mark.interop
keys = tier.keys  # the module-wide signing key (a fixture)
SIZE = 16 * 2**20
REAL = SIZE // 4


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    for name, package in {"losetup": "mount", "fusermount3": "fuse3"}.items():
        if shutil.which(name) is None:
            missing(f"{name} is not installed (Debian: apt-get install {package})")
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        missing("needs root and loop devices")
    if not Path("/dev/fuse").exists() or not ctypes.util.find_library("fuse3") \
            or importlib.util.find_spec("mfusepy") is None:
        missing("needs FUSE with libfuse 3 and mfusepy")


@pytest.fixture
def card(tmp_path: Path) -> Iterator[str]:
    """The loop device over the counterfeit medium."""
    backing = tmp_path / "backing.img"
    make_medium_image(backing, SIZE, [])
    with ExitStack() as stack:
        medium = stack.enter_context(LyingMedium(backing, tmp_path / "fuse", real=REAL))
        node = subprocess.run(["losetup", "--find", "--show", str(medium.path)], check=True,
                              capture_output=True, text=True).stdout.strip()
        stack.callback(subprocess.run, ["losetup", "--detach", node], capture_output=True)
        yield node


def erase(node: str, keys: Path, out: Path, method: str, verify: str) -> tuple[int, dict]:
    home = out.parent / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "phonewipe", "--allow-internal", node, "erase", node,
         "--out", str(out), "--keys", str(keys), "--operator", "Test Operator",
         "--organization", "Test Org", "--method", method, "--verify", verify, "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(home)})
    assert "Traceback" not in result.stderr, result.stderr
    [entry] = json.loads(result.stdout)
    return result.returncode, entry


def test_the_medium_wraps(card: str) -> None:
    """The premise: what is written past the real size lands at the start."""
    fd = os.open(card, os.O_RDWR | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, 4096)
        buf.write(b"\x5a" * 4096)
        os.pwrite(fd, buf, REAL)
        back = mmap.mmap(-1, 4096)
        os.preadv(fd, [back], 0)
        assert bytes(back) == b"\x5a" * 4096
    finally:
        os.close(fd)


@pytest.mark.parametrize("verify", ["quick", "full"])
def test_the_keyed_pattern_fails_a_counterfeit_card(card: str, keys: Path, tmp_path: Path,
                                                    verify: str) -> None:
    code, entry = erase(card, keys, tmp_path / "out", "block-pattern", verify)
    assert entry["outcome"] == "FAILED", f"false {entry}"
    assert code == 12 and "verification failed" in entry["reason"]
    assert "holds about 4 MiB of the 16 MiB it reports" in entry["reason"], entry["reason"]
    assert "do not erase it again, physically destroy it" in entry["reason"], entry["reason"]
