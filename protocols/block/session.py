"""One disk: who it is (the host's view, joined by what the operator entered from the
label), whether it may be written (safety.py), the overwrite with direct I/O, and the
read-back past the host's page cache."""
from __future__ import annotations

import collections
import errno
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from phonewipe.erase.errors import DeviceGone, PhonewipeError
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Expectation,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, Extent, ProgressFn, Session
from phonewipe.erase.strings import clean

from . import directio
from .disks import Disk, find_disk
from .safety import refusal
from .sanitize import Support, detect

BLOCK = 4096
READERS = 4  # reads in flight during the read-back
WINDOW = 64  # extents submitted ahead of the one being checked
WINDOW_BYTES = 32 << 20  # and at most this much read ahead
GONE_ADVICE = "check the reader and its cable, then run again"
FAILING_ADVICE = "the medium is failing: erase it again, or destroy it"

PATTERN = EraseMethod(
    name="block-pattern",
    title="Overwrite of the whole block device with a keyed pattern (direct I/O)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="Writes the host's keyed pseudo-random stream over every addressable block, "
                "past the host's page cache (O_DIRECT), and reads it back directly.")
ZEROS = EraseMethod(
    name="block-zeros",
    title="Overwrite of the whole block device with zeros (direct I/O)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.ZEROS,
    description="Writes zeros over every addressable block, past the host's page cache "
                "(O_DIRECT), and reads them back directly.")
METHODS = (PATTERN, ZEROS)


@dataclass(frozen=True)
class OperatorEntered:
    """What the operator read off the label (the host cannot see it): marked as such."""

    imeis: tuple[str, ...] = ()
    asset_tag: str = ""
    manufacturer: str = ""
    model: str = ""
    storage_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("imeis", list(self.imeis)), ("asset_tag", self.asset_tag),
                                  ("manufacturer", self.manufacturer), ("model", self.model),
                                  ("storage_type", self.storage_type)) if v}

    def describe(self) -> str:
        """"IMEI 3582…, manufacturer Nokia, model Lumia 920" — for a finding, in words."""
        names = {"imeis": "IMEI", "asset_tag": "asset tag", "storage_type": "storage type"}
        return ", ".join(f"{names.get(k, k)} {', '.join(v) if isinstance(v, list) else v}"
                         for k, v in self.to_dict().items())


def sanitize_finding(support: Support) -> Finding:
    """What the device said of sanitize (sanitize.py). This version sends none: the
    methods are the overwrites, which reach Clear."""
    if not support.kinds:
        return Finding(Severity.INFO, "block-sanitize-not-offered",
                       f"Sanitize (Purge) not offered: {support.why_not}; the overwrite "
                       "reaches Clear.")
    return Finding(Severity.INFO, "block-sanitize-not-offered",
                   f"Sanitize (Purge) not offered: the device reports {support.describe()}, "
                   "which this version does not send; the overwrite reaches Clear.")


class BlockReaderDirect:
    """Read-back of the whole device with O_DIRECT after a flush (BLKFLSBUF)."""

    block_size = BLOCK

    def __init__(self, session: "BlockSession") -> None:
        self.session = session
        self.size = session.disk.size // BLOCK * BLOCK
        self.fd: int | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.fd = self.session.open_device(write=False)
        return self.fd

    def bypass_cache(self) -> str:
        directio.flush(self._open())
        self.session.counts["cache_bypasses"] += 1
        return ("fsync and BLKFLSBUF on the block device, then direct reads (O_DIRECT) "
                "past the host's page cache")

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        """In order, with READERS reads in flight (a device answers a queue of reads faster
        than one at a time; preadv releases the GIL)."""
        fd = self._open()
        local = threading.local()
        buffers: list[directio.AlignedBuffer] = []

        def read(extent: Extent) -> bytes | None:
            buf = getattr(local, "buf", None)
            if buf is None:
                buf = local.buf = directio.AlignedBuffer(directio.CHUNK)
                buffers.append(buf)
            return directio.read_extent(fd, extent[0], extent[1], buf)

        pool = ThreadPoolExecutor(READERS, thread_name_prefix="block-read")
        try:
            window: collections.deque[tuple[Future[bytes | None], int]] = collections.deque()
            pending = iter(extents)
            queued = 0

            def fill() -> None:
                nonlocal queued
                while len(window) < WINDOW and queued < WINDOW_BYTES:
                    extent = next(pending, None)
                    if extent is None:
                        return
                    window.append((pool.submit(read, extent), extent[1]))
                    queued += extent[1]

            fill()
            while window:
                future, length = window.popleft()
                queued -= length
                try:
                    data = future.result()
                except OSError as exc:
                    raise self.session.gone_or_failing(exc, "read") from exc
                fill()
                self.session.counts["reads"] += 1
                if data is None:
                    self.session.counts["read_errors"] += 1
                yield data
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for buf in buffers:
                buf.close()
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class BlockSession(Session):
    def __init__(self, endpoint: Endpoint, disk: Disk, allowed_internal: set[str],
                 entered: OperatorEntered, reported_serial: str = "") -> None:
        self.endpoint = endpoint
        self.reported_serial = reported_serial  # an emulated handset's, as its USB disk says
        self.disk = disk
        self.allowed_internal = allowed_internal
        self.entered = entered
        self._identity: Identity | None = None
        self.counts = {"writes": 0, "bytes_written": 0, "reads": 0, "read_errors": 0,
                       "cache_bypasses": 0}

    # -- who it is ------------------------------------------------------------------------
    def _current(self) -> Disk:
        disk = find_disk(self.disk.node)
        if disk is None or disk.size == 0:
            raise DeviceGone(f"{self.disk.node} is no longer there (or holds no medium)",
                             GONE_ADVICE)
        return disk

    def identify(self) -> Identity:
        self.disk = self._current()
        d, e = self.disk, self.entered
        self._identity = Identity(
            platform="block device", manufacturer=e.manufacturer or d.vendor or None,
            model=e.model or d.model or None, serial=self.reported_serial or d.serial or None, imeis=e.imeis,
            storage_type=e.storage_type or None, capacity_bytes=d.size)
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def preflight(self) -> list[Finding]:
        if self._identity is None:
            self.identify()
        d = self.disk
        findings = []
        refused = refusal(d, self.allowed_internal)
        if refused is not None:
            findings.append(Finding(Severity.BLOCKER, refused.code, refused.message))
        if d.size % BLOCK:
            findings.append(Finding(Severity.BLOCKER, "block-odd-size",
                                    f"{d.node} is {d.size:,} bytes, not whole 4 KiB blocks: "
                                    "this version cannot verify its tail"))
        findings.append(Finding(Severity.INFO, "block-seen-by-host",
                                f"{d.node}: {d.transport} disk, {clean(d.vendor)} {clean(d.model)}, "
                                f"serial {clean(d.serial) or 'none reported'}, {d.size:,} bytes"))
        if self.entered.to_dict():
            findings.append(Finding(Severity.INFO, "operator-entered",
                                    "Entered by the operator, not read from the device: " +
                                    self.entered.describe()))
        findings.append(sanitize_finding(detect(d)))
        return findings

    def methods(self) -> list[EraseMethod]:
        return list(METHODS)

    # -- the erase ------------------------------------------------------------------------
    def open_device(self, write: bool) -> int:
        try:
            return directio.open_direct(self.disk.node, write)
        except directio.Busy as exc:
            if write:
                raise PhonewipeError(f"{self.disk.node} was mounted or claimed meanwhile; "
                                     "nothing was written", "release it, then run again") from exc
            raise PhonewipeError(f"{self.disk.node} was mounted or claimed after the overwrite, "
                                 "so it cannot be read back", "unmount it without writing to "
                                 "it, then erase it again") from exc
        except OSError as exc:
            raise self.gone_or_failing(exc, "open") from exc

    def gone_or_failing(self, exc: OSError, doing: str) -> PhonewipeError:
        if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.ENOMEDIUM):
            return DeviceGone(f"{self.disk.node} went away during the {doing} ({exc.strerror})",
                              GONE_ADVICE)
        if exc.errno == errno.EROFS:
            return PhonewipeError(f"{self.disk.node} turned read-only during the {doing}",
                                  "check the card's lock switch and run again; flash that turns "
                                  "read-only by itself is worn out: destroy it")
        return PhonewipeError(f"{self.disk.node}: {doing} failed ({exc.strerror})", FAILING_ADVICE)

    def _reidentify(self) -> None:
        """The device at this node must still be the one checked: same serial, same size,
        and nothing has mounted or claimed it since."""
        now = self._current()
        if (now.serial, now.size) != (self.disk.serial, self.disk.size):
            raise PhonewipeError(f"{self.disk.node} is now serial {clean(now.serial) or 'none'}, "
                                 f"{now.size:,} bytes, not the {clean(self.disk.serial) or 'none'}, "
                                 f"{self.disk.size:,} bytes checked: nothing was written",
                                 "run again to check the device that is there now")
        if now.diskseq != self.disk.diskseq:
            raise self._attached_anew()
        refused = refusal(now, self.allowed_internal)
        if refused is not None:
            raise PhonewipeError(f"{refused.message} (found just before writing); nothing "
                                 "was written")

    def _attached_anew(self) -> PhonewipeError:
        """A reader's serial stays when its card is swapped: the kernel's disk sequence
        number does not."""
        return PhonewipeError(f"{self.disk.node} holds a medium changed or attached anew since "
                              "it was checked (a card swapped in its reader, or a reconnect): "
                              "nothing was written", "run again to check the medium there now")

    def _check_opened(self, fd: int) -> int:
        """The opened device is the one checked (its sequence number, where the kernel tells
        one) and of the size checked: what the erase writes to. Returns the size."""
        seq = directio.disk_sequence(fd)
        if seq and self.disk.diskseq and seq != self.disk.diskseq:
            raise self._attached_anew()
        size = directio.device_size(fd)
        if size != self.disk.size:
            raise PhonewipeError(f"{self.disk.node} reports {size:,} bytes when opened, not "
                                 f"{self.disk.size:,}: nothing was written", GONE_ADVICE)
        return size

    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method not in METHODS:
            raise PhonewipeError(f"method {method.name} is not a block-device method",
                                 "choose block-pattern or block-zeros")
        self._reidentify()
        fd = self.open_device(write=True)
        tally = directio.Tally()
        try:
            size = self._check_opened(fd)
            directio.write_stream(fd, size, self._filler(method, context), progress, tally)
            directio.flush(fd)
        except OSError as exc:
            raise self.gone_or_failing(exc, "write") from exc
        finally:
            os.close(fd)
            self.counts["writes"] += tally.writes
            self.counts["bytes_written"] = tally.bytes
        return EraseReport(tally.bytes, method.expectation,
                           f"whole block device {self.disk.node}, {size / 2**20:,.0f} MiB",
                           {"protocol": "block", "transport": self.disk.transport,
                            "io": "O_DIRECT|O_EXCL, fsync, BLKFLSBUF",
                            "operator_entered": self.entered.to_dict()},
                           {"sysfs size": self.disk.size})

    @staticmethod
    def _filler(method: EraseMethod, context: EraseContext) -> directio.Fill | None:
        """What makes each chunk: the keyed pattern, or None for zeros (one zeroed buffer)."""
        if method is PATTERN:
            key = context.pattern_key
            return lambda buf, offset, n: PatternStream(key, offset).next_into(buf, n)
        return None

    def reader(self) -> BlockReader | None:
        return BlockReaderDirect(self)

    def readback(self) -> BlockReader | None:
        return BlockReaderDirect(self)

    def entered_asset_tag(self) -> str:
        return self.entered.asset_tag

    def transcript(self) -> dict[str, Any]:
        return {"protocol": "block", **self.counts}

    def post_state(self) -> dict[str, Any]:
        return {"node": self.disk.node, "transport": self.disk.transport}
