"""A lying storage medium: a FUSE file system exposing one file, ``medium.img``, backed by a
real file, whose writes to configured byte ranges are acknowledged but not stored (reads
keep returning the old content), as counterfeit or failing flash does; optionally reads of
other ranges fail with EIO (a failing medium), every transfer is throttled (a slow one), or
the medium is counterfeit: it reports the backing file's size but holds only its first
``--real`` bytes, addresses past them wrapping around onto the start.

Run as a script in its own process (``python medium.py BACKING MOUNTPOINT [--drop START:LEN]``);
the `LyingMedium` context manager does that and unmounts it again.

Binding: mfusepy (PyPI), the maintained fork of fusepy: pure ctypes over the distribution's
libfuse 3 (Debian ``fuse3``/``libfuse3-3``), so nothing is compiled (pyfuse3 needs Cython,
libfuse3-dev and trio). Every file is opened with ``direct_io``: the kernel keeps no FUSE page
cache for it, so the only cache between a reader and the medium is the block-device page
cache of the loop device stacked on top.
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from phonewipe.erase.emulation.faults import on_flash

NAME = "medium.img"
Range = tuple[int, int]  # (start, length) in bytes


class _Operations:
    """The FUSE callbacks (mfusepy.Operations is mixed in at run time, see `serve`)."""

    use_ns = True

    def __init__(self, backing: Path, drops: list[Range], fails: list[Range] = (),
                 slow_mib_s: float = 0.0, write_fails: list[Range] = (), real: int = 0) -> None:
        self.fd = os.open(backing, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.real = real if 0 < real < self.size else self.size  # what the flash holds
        self.drops = sorted(drops)
        self.fails = list(fails)
        self.write_fails = list(write_fails)
        self.slow = slow_mib_s * 2**20

    def _throttle(self, length: int) -> None:
        if self.slow:
            time.sleep(length / self.slow)

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        now = time.time_ns()
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ctime": now,
                    "st_mtime": now, "st_atime": now}
        if path == f"/{NAME}":
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size,
                    "st_ctime": now, "st_mtime": now, "st_atime": now}
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", NAME]

    def open(self, path: str, fi: Any) -> int:
        if path != f"/{NAME}":
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        fi.direct_io = 1  # FOPEN_DIRECT_IO: no FUSE page cache for this file
        fi.keep_cache = 0
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        self._throttle(size)
        if any(offset < start + length and start < offset + size for start, length in self.fails):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        size = max(0, min(size, self.size - offset))
        return b"".join(os.pread(self.fd, n, at) for at, _, n in self._on_flash(offset, size))

    def _on_flash(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(flash offset, offset in the request, length) pieces: wrapped at ``real``."""
        return on_flash(offset, length, self.real)

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        if offset + len(data) > self.size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._throttle(len(data))
        if any(offset < start + length and start < offset + len(data)
               for start, length in self.write_fails):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        for start, piece in self._kept(offset, data):
            for at, rel, n in self._on_flash(start, len(piece)):
                os.pwrite(self.fd, piece[rel:rel + n], at)
        return len(data)  # acknowledged in full, dropped ranges included

    def _kept(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        """The parts of a write outside every dropped range."""
        pieces, pos, end = [], offset, offset + len(data)
        for start, length in self.drops:
            lo, hi = max(pos, start), min(end, start + length)
            if lo >= hi:
                continue
            if pos < lo:
                pieces.append((pos, data[pos - offset:lo - offset]))
            pos = hi
        if pos < end:
            pieces.append((pos, data[pos - offset:]))
        return pieces

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        return 0 if length == self.size else -errno.EPERM

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        os.fsync(self.fd)
        return 0

    def flush(self, path: str, fh: Any) -> int:
        return 0

    def release(self, path: str, fh: Any) -> int:
        return 0


def serve(backing: Path, mountpoint: Path, drops: list[Range], fails: list[Range] = (),
          slow_mib_s: float = 0.0, write_fails: list[Range] = (), real: int = 0) -> None:
    import mfusepy
    operations = type("Operations", (_Operations, mfusepy.Operations), {})(
        backing, drops, fails, slow_mib_s, write_fails, real)
    mfusepy.FUSE(operations, str(mountpoint), raw_fi=True, foreground=True, nothreads=True,
                 fsname="lying-medium", allow_other=True)


def _range(text: str) -> Range:
    start, _, length = text.partition(":")
    return int(start), int(length)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--drop", type=_range, action="append", default=[],
                        metavar="START:LENGTH", help="acknowledge but do not store these bytes")
    parser.add_argument("--fail", type=_range, action="append", default=[],
                        metavar="START:LENGTH", help="reads of these bytes fail with EIO")
    parser.add_argument("--fail-write", type=_range, action="append", default=[],
                        metavar="START:LENGTH", help="writes to these bytes fail with EIO")
    parser.add_argument("--slow", type=float, default=0.0, metavar="MIB_S",
                        help="throttle every read and write to this many MiB/s")
    parser.add_argument("--real", type=int, default=0, metavar="BYTES",
                        help="counterfeit: hold only this many bytes, addresses wrapping")
    args = parser.parse_args(argv)
    serve(args.backing, args.mountpoint, args.drop, args.fail, args.slow, args.fail_write,
          args.real)


class LyingMedium:
    """The FUSE process serving ``mountpoint/medium.img`` over ``backing``; a context manager
    that always unmounts and reaps it."""

    def __init__(self, backing: Path, mountpoint: Path, drops: list[Range] = (),
                 fails: list[Range] = (), slow_mib_s: float = 0.0,
                 write_fails: list[Range] = (), real: int = 0) -> None:
        self.backing = backing
        self.real = real
        self.mountpoint = mountpoint
        self.drops = list(drops)
        self.fails = list(fails)
        self.slow_mib_s = slow_mib_s
        self.write_fails = list(write_fails)
        self.proc: subprocess.Popen | None = None

    @property
    def path(self) -> Path:
        return self.mountpoint / NAME

    def __enter__(self) -> "LyingMedium":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        args = [f"--drop={start}:{length}" for start, length in self.drops]
        args += [f"--fail={start}:{length}" for start, length in self.fails]
        args += [f"--fail-write={start}:{length}" for start, length in self.write_fails]
        args += [f"--slow={self.slow_mib_s}"] if self.slow_mib_s else []
        args += [f"--real={self.real}"] if self.real else []
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.backing),
                                      str(self.mountpoint), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_mounted()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_mounted(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the FUSE medium exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the FUSE medium did not mount in time")
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        if os.path.ismount(self.mountpoint) and subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stderr.close()


if __name__ == "__main__":
    main(sys.argv[1:])
