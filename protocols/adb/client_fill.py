"""The unrooted fill over adb (adb-fill-reset without its reset): delete the owner's files,
fill all free user storage with the host-keyed pattern until the file system is full, and
say what a fill cannot reach; its read-back goes through `client_readback`."""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from phonewipe.erase.errors import DeviceCommandFailed, PhonewipeError
from phonewipe.erase.model import Expectation
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import EraseContext, EraseReport, ProgressFn

from .client_channel import (
    _LINK_ERRORS,
    STREAM_CHUNK,
    ShellChannel,
    ShellResult,
    _explain,
    parse_df_kib,
)
from .client_readback import BLOCK, _DdReader

FILL_DIR = "/sdcard/phonewipe-fill"
_FULL = ("No space left on device", "Disk quota exceeded")  # how a full file system says it


@dataclass(frozen=True)
class _FillSpace:
    free: int  # bytes an app may fill (statfs f_bavail)
    reserved: int | None  # f_bfree - f_bavail: the file system keeps these from apps
    total: int


class UnrootedFill(ShellChannel):
    """The unrooted fill of an `AdbSession` (a mixin): delete every /sdcard entry, fill the free
    user storage with the keyed pattern to ENOSPC in bounded files, sample it through a
    reader past the page cache, remove it before the reset; a fill that fails after deleting
    removes itself and says what state the phone is in."""

    props: dict[str, str]
    reader_helper: str
    _reader: _DdReader | None
    _owner_files: str

    def install_reader_helper(self) -> None:
        raise NotImplementedError  # AdbSession's: phonewipe-pwread, pushed before the fill

    def _erase_fill(self, context: EraseContext, progress: ProgressFn) -> EraseReport:
        self.install_reader_helper()  # before the fill: a full /data takes no push
        self._owner_files = "untouched"
        try:
            removed, leftover = self._delete_user_entries()
            space = self._fill_space()
            files = self._fill(context, progress, space.free)
        except Exception as exc:
            if self._owner_files == "untouched":
                raise
            raise self._fill_failed(exc) from exc
        except BaseException:
            if self._owner_files != "untouched":
                self._remove_fill()
            raise
        written = sum(size for _, size in files)
        self._reader = _DdReader(self, [(path, size // BLOCK * BLOCK) for path, size in files],
                                 root=False)
        return EraseReport(written, Expectation.PATTERN,
                           f"free user storage fill, {written} bytes in {len(files)} files",
                           {"deleted_top_level_entries": removed, "previous_fill_removed": leftover,
                            "fill_bytes": written, "fill_files": len(files),
                            "fill_file_max": self._fill_file_max(),
                            "free_bytes_before": space.free,
                            "reserved_bytes": space.reserved,
                            "data_partition_kib": space.total // 1024,
                            "not_reached": self._not_reached(written, space)})

    def _fill_file_max(self) -> int:
        return int(self.plugin.option("fill_file_max"))

    def _delete_user_entries(self) -> tuple[list[str], bool]:
        """Delete every top-level entry of /sdcard, hidden ones included, then commit (a file
        system reuses freed blocks only after its journal commits). Returns the owner's
        entries, and whether a previous run's fill was there too."""
        listing = self.run("ls -A /sdcard")
        if listing.status != 0:
            raise DeviceCommandFailed(f"cannot list /sdcard: {_explain(listing)}",
                                      "unlock the phone and run the erase again")
        names = [n for n in listing.text.splitlines() if n.strip() and n not in (".", "..")]
        fill_name = FILL_DIR.rsplit("/", 1)[1]
        if names:
            self._owner_files = "partly deleted"
            result = self.run("rm -rf " + " ".join(shlex.quote(f"/sdcard/{n}") for n in names))
            if result.status != 0:
                raise DeviceCommandFailed(f"the owner's files could not all be deleted: "
                                          f"{_explain(result)}", "")
        self._owner_files = "deleted"
        self._fill_command("sync")
        return [n for n in names if n != fill_name], fill_name in names

    def _fill_space(self) -> _FillSpace:
        """What the fill may take (statfs f_bavail, df's Available) and the file system's
        reserved share (f_bfree - f_bavail), out of an app's reach; df when the phone's
        `stat` has no -f."""
        fields = self.run("stat -f -c '%b %f %a %S' /data").text.split()
        if len(fields) == 4 and all(f.isdigit() for f in fields):
            blocks, bfree, bavail, bsize = map(int, fields)
            return _FillSpace(bavail * bsize, (bfree - bavail) * bsize, blocks * bsize)
        df = parse_df_kib(self.run("df /data").text)
        if df is None:
            raise DeviceCommandFailed("cannot read free space from `stat -f /data` or `df /data`",
                                      "use --method adb-factory-reset")
        return _FillSpace(df[1] * 1024, None, df[0] * 1024)

    def _fill(self, context: EraseContext, progress: ProgressFn, free: int) -> list[tuple[str, int]]:
        """Fill files until the file system says it is full: the last dd ends with ENOSPC,
        and the phone says how much of it was stored."""
        self._fill_command(f"mkdir -p {FILL_DIR}")
        stream = PatternStream(context.pattern_key)
        files: list[tuple[str, int]] = []
        written = 0
        while True:
            path = f"{FILL_DIR}/fill-{len(files):04d}.bin"
            # no more than the space left plus a chunk: a file system rarely takes more
            size = min(self._fill_file_max(), max(free - written, 0) + STREAM_CHUNK)
            result = self._fill_file(path, stream, size, written, free, progress)
            if result.status == 0:
                files.append((path, size))
                written += size
                continue
            if not any(full in _explain(result) for full in _FULL):
                raise DeviceCommandFailed(f"`dd` failed on the phone while writing {path}: "
                                          f"{_explain(result)}", "")
            stored = int(self._fill_command(f"stat -c %s {path}").text.strip() or 0)
            if stored:
                files.append((path, stored))
            else:
                self._fill_command(f"rm -f {path}")
            if not files:
                raise DeviceCommandFailed("the file system took no fill at all "
                                          f"({_explain(result)})", "")
            self._fill_command("sync")
            progress(free, free)
            return files

    def _fill_file(self, path: str, stream: PatternStream, size: int, base: int, free: int,
                   progress: ProgressFn) -> ShellResult:
        chunks = (stream.next(min(STREAM_CHUNK, size - off)) for off in range(0, size, STREAM_CHUNK))

        def report(done: int, _total: int) -> None:
            progress(min(base + done, free), free)
        return self.run(f"dd of={path} bs={STREAM_CHUNK}", stdin=chunks, progress=report, total=size)

    def _fill_command(self, command: str) -> ShellResult:
        result = self.run(command)
        if result.status != 0:
            raise DeviceCommandFailed(f"`{command.split()[0]}` failed on the phone: "
                                      f"{_explain(result)}", "")
        return result

    def _not_reached(self, written: int, space: _FillSpace) -> str:
        """What the certificate must say the fill did not overwrite, and what covers it."""
        reserved = space.reserved
        held = (f"reserved blocks ({reserved:,} bytes, kept for the reserved_disk group)"
                if reserved is not None else "reserved blocks (their size was not reported)")
        gap = max(0, space.free - written)
        covered = ("the factory reset that follows covers them by destroying the "
                   "file-encryption keys (key erasure)"
                   if self.props.get("ro.crypto.type") in ("file", "block") else
                   "only the factory reset that follows covers them, and the phone reports no "
                   "encryption, so no key erasure is claimed")
        return (f"The fill overwrote {written:,} bytes of free user storage; it could not reach "
                f"the file system's {held}, its metadata (inodes, directories, extent trees, "
                f"journal) or the {gap:,} bytes of free space it was refused; {covered}.")

    def _remove_fill(self) -> str:
        """Remove the fill and commit; "" when done, else why not."""
        try:
            result = self.run(f"rm -rf {FILL_DIR} && sync")
        except PhonewipeError as exc:
            return exc.message
        except _LINK_ERRORS as exc:
            return str(exc) or type(exc).__name__
        return "" if result.status == 0 else _explain(result)

    def _finish_fill(self) -> None:
        """The verified fill goes before the reset; a phone whose fill stays is not reset."""
        problem = self._remove_fill()
        if problem:
            raise DeviceCommandFailed(f"the fill could not be removed after verification "
                                      f"({problem}); the owner's files were deleted, {FILL_DIR} "
                                      "may still fill the storage; the phone was NOT reset",
                                      "reset it from Settings, or run the erase again")

    def _fill_failed(self, exc: Exception) -> DeviceCommandFailed:
        """The failure of a fill that began deleting: remove the fill, then say exactly what
        state the phone is in."""
        cause = exc.message if isinstance(exc, PhonewipeError) else (str(exc) or repr(exc))
        owner = ("some of the owner's files were deleted" if self._owner_files == "partly deleted"
                 else "the owner's files were deleted")
        problem = self._remove_fill()
        if problem:
            return DeviceCommandFailed(
                f"the fill failed: {cause}; {owner}, the fill could NOT be removed ({problem}), "
                f"so {FILL_DIR} may still fill the storage; the phone was NOT reset",
                "reconnect the phone and run the erase again (it removes the old fill first), "
                "or reset it from Settings")
        return DeviceCommandFailed(f"the fill failed: {cause}; {owner}, the fill was removed; "
                                   "the phone was NOT reset",
                                   "reset it from Settings, or run the erase again")
