"""Writes and reads that go to the medium, not to the host's page cache: the device is
opened O_DIRECT (buffers aligned to the page, lengths to the logical block) and O_EXCL (the
kernel refuses while anything has it mounted or claimed); `flush` is fsync plus BLKFLSBUF,
which also drops whatever buffered readers left in the cache."""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
from typing import Iterator

from phonewipe.erase.plugin import ProgressFn

BLKFLSBUF = 0x1261  # <linux/fs.h> _IO(0x12, 97)
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)
CHUNK = 4 << 20  # one write: large enough for the device's full speed


class Busy(OSError):
    """The kernel would not give the device exclusively (mounted or claimed meanwhile)."""


def open_direct(node: str, write: bool) -> int:
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_DIRECT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(node, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise Busy(exc.errno, f"{node} is in use (mounted or claimed)") from exc
        raise


def device_size(fd: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, BLKGETSIZE64, buf)
    return int.from_bytes(buf, "little")


def flush(fd: int) -> None:
    os.fsync(fd)
    fcntl.ioctl(fd, BLKFLSBUF, 0)


class AlignedBuffer:
    """Page-aligned memory (an anonymous mapping) for O_DIRECT transfers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size)
        self.view = memoryview(self.map)

    def close(self) -> None:
        self.view.release()
        self.map.close()


def write_stream(fd: int, size: int, chunks: Iterator[bytes], block: int,
                 progress: ProgressFn) -> int:
    """Write ``size`` bytes from ``chunks`` (each at most CHUNK) from offset 0; returns the
    bytes the kernel acknowledged. A tail shorter than a logical block cannot be written
    directly and is refused earlier (sizes are whole blocks)."""
    buf = AlignedBuffer(CHUNK)
    done = 0
    try:
        for data in chunks:
            n = len(data)
            buf.view[:n] = data
            written = 0
            while written < n:
                written += os.pwrite(fd, buf.view[written:n], done + written)
            done += n
            progress(done, size)
        return done
    finally:
        buf.close()


def read_extent(fd: int, offset: int, length: int, buf: AlignedBuffer) -> bytes | None:
    """``length`` bytes at ``offset`` read directly; None on an I/O error."""
    out = bytearray()
    while len(out) < length:
        n = min(buf.size, length - len(out))
        try:
            got = os.preadv(fd, [buf.view[:n]], offset + len(out))
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENODATA, errno.EILSEQ):
                return None
            raise
        if got <= 0:
            break
        out += buf.view[:got]
    return bytes(out)


