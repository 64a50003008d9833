"""What both real-kernel test files need: the prerequisite check (skip on a user's machine,
fail under CI) and the module-wide adb server and signing key."""
from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from conftest import require_binary

from phonewipe.demo import free_port
from phonewipe.protocols.adb.server import AdbServer

from .phoneroot import find_binaries

# binary -> the Debian package that provides it
BINARIES = {"losetup": "mount", "mount": "mount", "umount": "mount", "blockdev": "util-linux",
            "chroot": "coreutils", "fusermount3": "fuse3"}


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the real-kernel tier: {reason}")
    pytest.skip(reason)


def check_prerequisites(extra_binaries: dict[str, str], why_root: str) -> None:
    """Root, loop devices, FUSE with libfuse 3 and mfusepy, and every binary the tier runs."""
    require_binary("adb")
    for name, package in {**BINARIES, **extra_binaries}.items():
        if shutil.which(name) is None:
            missing(f"{name} is not installed (Debian: apt-get install {package})")
    for name, path in find_binaries().items():
        if path is None:
            require_binary(name)
    if os.geteuid() != 0:
        missing(f"needs root ({why_root})")
    if not Path("/dev/loop-control").exists():
        missing("no loop devices (/dev/loop-control)")
    if not Path("/dev/fuse").exists():
        missing("no FUSE (/dev/fuse)")
    if not ctypes.util.find_library("fuse3"):
        missing("libfuse 3 is not installed (Debian: apt-get install fuse3)")
    if importlib.util.find_spec("mfusepy") is None:
        missing("the Python package mfusepy is not installed (pip install mfusepy)")


@pytest.fixture(scope="module")
def adb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    server = AdbServer(port=free_port(), adb_path=require_binary("adb"),
                       home=tmp_path_factory.mktemp("adb-home"))
    server.ensure_started()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phonewipe.certificates.keys import init_keys
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, "Test Org", "real-kernel tier")
    return directory
