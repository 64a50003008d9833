"""Writes and reads that go to the medium, not to the host's page cache: the device is
opened O_DIRECT (buffers aligned to the page, lengths to the logical block) and O_EXCL (the
kernel refuses while anything has it mounted or claimed); `flush` is fsync plus BLKFLSBUF,
which also drops whatever buffered readers left in the cache."""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from phonewipe.erase.plugin import ProgressFn

BLKFLSBUF = 0x1261  # <linux/fs.h> _IO(0x12, 97)
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)
BLKGETDISKSEQ = 0x80081280  # _IOR(0x12, 128, __u64), Linux 5.15 and later
CHUNK = 4 << 20  # one write: large enough for the device's full speed
MADE_CHUNK = 1 << 20  # one write of made data: its making and its copy stay in the caches
WRITERS = 4  # threads that make and write: four writes in flight keep a queueing device busy
PROGRESS_S = 0.2  # the caller hears of the progress (and may abort) this often


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


def disk_sequence(fd: int) -> int:
    """The kernel's sequence number of the medium behind ``fd``; 0 where the kernel has none."""
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, BLKGETDISKSEQ, buf)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return 0
        raise
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
        try:
            self.map.close()
        except BufferError:  # a view still held by an exception's traceback: GC closes it
            pass


def _write_all(fd: int, buf: AlignedBuffer, n: int, offset: int) -> int:
    written = 0
    while written < n:
        with buf.view[written:n] as view:  # released even when the write fails
            done = os.pwrite(fd, view, offset + written)
        if done <= 0:  # a device that takes nothing more would loop here forever
            raise OSError(errno.ENOSPC, f"the device took no more bytes at offset {offset + written:,}")
        written += done
    return written


Fill = Callable[[memoryview, int, int], None]
"""fill(buffer, offset, n): put the n bytes to write at ``offset`` into the buffer's first n
bytes (called from several threads at once, for different offsets)."""


@dataclass
class Tally:
    """What the kernel has acknowledged so far (kept when a write fails midway)."""

    bytes: int = 0
    writes: int = 0  # pwrite calls completed, one per chunk (CHUNK, or MADE_CHUNK made)

    def add(self, n: int) -> None:
        self.bytes += n
        self.writes += 1


class Progress:
    """The caller's progress callback (which is also where a job's abort is checked), called
    at most every PROGRESS_S and at the end rather than after each write."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self.progress, self.total, self.last = progress, total, time.monotonic()
        self.finished = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if (done >= self.total and not self.finished) or now - self.last >= PROGRESS_S:
            self.last, self.finished = now, done >= self.total
            self.progress(done, self.total)


def write_stream(fd: int, size: int, fill: Fill | None, progress: ProgressFn,
                 tally: Tally) -> None:
    """Write ``size`` bytes from offset 0, CHUNK at a time (whole logical blocks): made by
    ``fill``, or zeros when ``fill`` is None; ``tally`` counts what the kernel took."""
    report = Progress(progress, size)
    if fill is None:
        _write_zeros(fd, size, report, tally)
    else:
        _write_made(fd, size, fill, report, tally)


def _write_zeros(fd: int, size: int, report: Progress, tally: Tally) -> None:
    """One zeroed buffer written over and over: nothing to make per chunk (a copy of 4 MiB of
    zeros per write cost a fifth of the loop device's speed)."""
    buf = AlignedBuffer(CHUNK)
    try:
        buf.view[:] = bytes(CHUNK)  # an anonymous mapping starts zeroed; said, not assumed
        for offset in range(0, size, CHUNK):
            tally.add(_write_all(fd, buf, min(CHUNK, size - offset), offset))
            report(tally.bytes)
    finally:
        buf.close()


def _write_made(fd: int, size: int, fill: Fill, report: Progress, tally: Tally) -> None:
    """WRITERS threads, each making its own chunks (the keyed pattern at their offsets,
    straight into its buffer) and writing them: while some make their next chunk, the
    others' writes are with the kernel (pwrite and the AES release the GIL), so on a medium
    slower than the host's AES the pattern costs nothing of its speed, and a device that
    queues (a loop device, a UAS reader) has several writes to work on: four writers beat two
    by 10-20 % on a loop device here. No buffer is handed over between threads, which cost a
    two-buffer producer/consumer 10-15 %. Only this thread reports progress (where
    the job's abort is raised); the first failure stops every writer."""
    stop = threading.Event()
    lock = threading.Lock()

    def writer(first: int, on_write: Callable[[int], None]) -> None:
        buf = AlignedBuffer(MADE_CHUNK + mmap.PAGESIZE)
        try:
            for offset in range(first * MADE_CHUNK, size, WRITERS * MADE_CHUNK):
                if stop.is_set():
                    return
                n = min(MADE_CHUNK, size - offset)
                fill(buf.view, offset, n)
                written = _write_all(fd, buf, n, offset)
                with lock:
                    tally.add(written)
                    done = tally.bytes
                on_write(done)
        except BaseException:
            stop.set()
            raise
        finally:
            buf.close()

    with ThreadPoolExecutor(WRITERS - 1, thread_name_prefix="block-write") as pool:
        others = [pool.submit(writer, k, lambda done: None) for k in range(1, WRITERS)]
        writer(0, report)  # when it fails, leaving the pool waits for the others to stop
        for other in others:
            other.result()  # another writer's failure
    report(tally.bytes)


def read_extent(fd: int, offset: int, length: int, buf: AlignedBuffer) -> bytes | None:
    """``length`` bytes at ``offset`` read directly; None on an I/O error."""
    out = bytearray()
    while len(out) < length:
        n = min(buf.size, length - len(out))
        with buf.view[:n] as view:
            try:
                got = os.preadv(fd, [view], offset + len(out))
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.ENODATA, errno.EILSEQ):
                    return None
                raise
            if got <= 0:
                break
            out += view[:got]
    return bytes(out)


