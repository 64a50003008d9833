"""Reading a phone's storage back over adb: `dd` batches over shell v2 (one command reads
many samples, the next batch already running while the caller checks this one), past the
phone's page cache (dropped with root, O_DIRECT, or phonewipe-pwread pushed for an unrooted
fill), or the reader refuses to vouch."""
from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from phonewipe.erase.errors import MediumUnreachable
from phonewipe.erase.plugin import Extent

from .client_channel import _LINK_ERRORS, ShellResult

BLOCK = 4096
READ_BATCH = 256  # samples per shell command (about 20 KB of command line)
READ_AHEAD = 1  # batches started beyond the one being checked
HELPER_BUILDS = Path(__file__).parent / "helper" / "bin"  # make helpers
HELPER_ON_PHONE = "/data/local/tmp/phonewipe-pwread"


class ReaderSession(Protocol):
    """What the reader needs of an `AdbSession`."""

    reader_helper: str  # how the phonewipe-pwread install went ("sha256 ..." when pushed)

    def run(self, command: str, root: bool = False) -> ShellResult: ...

    def start_command(self, command: str, root: bool = False) -> Any: ...

    def collect_command(self, command: str, conn: Any, sent: int = 0,
                        total: int = 0) -> ShellResult: ...


class _DdReader:
    """Read-back with `dd` batches over shell v2: one command reads many samples."""

    def __init__(self, session: ReaderSession, sources: list[tuple[str, int]], root: bool) -> None:
        self.session = session
        self.sources = sources
        self.root = root
        self.size = sum(size for _, size in sources)
        self.block_size = BLOCK
        self.direct = False  # dd iflag=direct (O_DIRECT) instead of dropped caches
        self.helper = False  # phonewipe-pwread on the phone reads the samples

    def bypass_cache(self) -> str:
        """Right after an overwrite the phone's page cache still holds what was written, and a
        buffered `dd` is answered from it whatever the flash stored. Drop the cache (root:
        BLKFLSBUF, then drop_caches) or read with O_DIRECT; refuse to vouch otherwise."""
        tried = []
        if self.root:
            devices = " ".join(sorted({path for path, _ in self.sources}))
            for what, command in (("blockdev --flushbufs (the BLKFLSBUF ioctl)",
                                   f"sync && blockdev --flushbufs {devices}"),
                                  ("echo 3 > /proc/sys/vm/drop_caches",
                                   "sync && echo 3 > /proc/sys/vm/drop_caches")):
                result = self.session.run(command, root=True)
                if result.status == 0:
                    self.direct = False
                    return f"the phone's page cache was dropped before reading ({what})"
                tried.append(f"{what}: {result.error_line()}")
        path = self.sources[0][0]
        probe = self.session.run(f"dd if={path} of=/dev/null iflag=direct bs={BLOCK} count=1",
                                 root=self.root)
        if probe.status == 0:
            self.direct = True
            return "read with O_DIRECT (dd iflag=direct), past the phone's page cache"
        tried.append(f"dd iflag=direct: {probe.error_line()}")
        if not self.root:
            how = self._install_helper(path, tried)
            if how:
                return how
        raise MediumUnreachable(
            "the phone allows neither dropping its page cache nor direct reads ("
            + "; ".join(tried) + "), so a read-back could come from RAM, not the flash",
            "erase it with a method whose read-back reaches the storage (root, or the bootloader)")

    def _install_helper(self, path: str, tried: list[str]) -> str | None:
        """Ask phonewipe-pwread, pushed before the fill, how it will read ``path``."""
        helper = self.session.reader_helper
        if not helper.startswith("sha256 "):
            tried.append(f"phonewipe-pwread: {helper}")
            return None
        probe = self.session.run(f"{HELPER_ON_PHONE} --probe {path}")
        mode = probe.text.strip()
        if probe.status != 0 or mode not in ("direct", "fadvise"):
            tried.append(f"phonewipe-pwread: {probe.error_line()}")
            return None
        self.helper = True
        how = "with O_DIRECT into an aligned buffer" if mode == "direct" else \
            "after dropping each file's cached pages (posix_fadvise DONTNEED)"
        return f"read by phonewipe-pwread ({helper}) on the phone {how}, past its page cache"

    def _pieces(self, offset: int, length: int) -> list[tuple[str, int, int]]:
        pieces, base = [], 0
        for path, size in self.sources:
            lo, hi = max(offset, base), min(offset + length, base + size)
            if lo < hi:
                pieces.append((path, lo - base, hi - lo))
            base += size
        return pieces

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        """Up to AHEAD batches run on the phone while the caller checks the oldest one: the
        host's checking and the round trips through the adb server overlap the phone's
        reading, with no extra thread."""
        batches = [list(extents[i:i + READ_BATCH]) for i in range(0, len(extents), READ_BATCH)]
        running: collections.deque[tuple[list[Extent], str, list[int], Any]] = collections.deque()
        try:
            for i in range(len(batches)):
                while len(running) <= READ_AHEAD and i + len(running) < len(batches):
                    running.append(self._start(batches[i + len(running)]))
                pending, command, lengths, conn = running.popleft()
                samples, rest = self._parse(self.session.collect_command(command, conn), pending, lengths)
                yield from samples
                if rest:
                    yield from self._read_batch(rest)
        finally:
            for started in running:  # the caller stopped early, or a read failed
                started[3].conn.close()

    def _read_batch(self, batch: Sequence[Extent]) -> list[bytes | None]:
        samples: list[bytes | None] = []
        pending = list(batch)
        while pending:
            pending, command, lengths, conn = self._start(pending)
            done, pending = self._parse(self.session.collect_command(command, conn), pending, lengths)
            samples += done
        return samples

    def _start(self, pending: list[Extent]) -> tuple[list[Extent], str, list[int], Any]:
        runs: list[list] = []  # [path, offset, length]: adjacent samples share one dd
        lengths = []
        for offset, length in pending:
            pieces = self._pieces(offset, length)
            lengths.append(sum(n for *_, n in pieces))
            for path, off, n in pieces:
                if runs and runs[-1][0] == path and runs[-1][1] + runs[-1][2] == off:
                    runs[-1][2] += n
                else:
                    runs.append([path, off, n])
        flag = " iflag=direct" if self.direct else ""
        command = f"{HELPER_ON_PHONE} " + " ".join(f"{path}:{off}:{n}" for path, off, n in runs) \
            if self.helper else " && ".join(f"dd if={path}{flag} bs={BLOCK} skip={off // BLOCK} "
                              f"count={n // BLOCK} 2>/dev/null" for path, off, n in runs)
        return pending, command, lengths, self.session.start_command(command, root=self.root)

    @staticmethod
    def _parse(result: ShellResult, pending: list[Extent],
               lengths: list[int]) -> tuple[list[bytes | None], list[Extent]]:
        """The samples a batch's answer holds, and the extents still to read."""
        data, pos = result.stdout, 0
        samples: list[bytes | None] = []
        if result.status == 0:
            for length in lengths:  # a short answer shows up as a short sample
                samples.append(data[pos:pos + length])
                pos += length
            return samples, []
        # `&&` stopped at the first dd that failed, and dd stops at an unreadable block after
        # writing the ones before it: every whole sample ahead of the bad one is there
        index = 0
        while index < len(lengths) and pos + lengths[index] <= len(data):
            samples.append(data[pos:pos + lengths[index]])
            pos += lengths[index]
            index += 1
        if index < len(pending):
            samples.append(None)
        return samples, pending[index + 1:]


def push_reader_helper(device: Any, abi: str) -> str:
    """Push phonewipe-pwread (protocols/adb/helper) for the phone's ABI to /data/local/tmp,
    where the shell uid may run it; what `AdbSession.reader_helper` records."""
    build = HELPER_BUILDS / f"phonewipe-pwread-{abi}"
    if not build.is_file():
        return f"no build for the phone's ABI {abi or '(unknown)'}"
    binary = build.read_bytes()
    try:
        device.sync.push(binary, HELPER_ON_PHONE, mode=0o755)
    except _LINK_ERRORS as exc:
        return f"push to {HELPER_ON_PHONE} failed: {exc}"
    return f"sha256 {hashlib.sha256(binary).hexdigest()[:16]}, {abi}"
