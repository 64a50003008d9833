"""The emulated shell's toybox dd: the operands and flags a phone's dd accepts (and the
ones it refuses), skip/seek, reblocking, conv=sync,noerror,fsync, O_DIRECT reads, ENOSPC,
and the records/bytes summary on stderr."""
from __future__ import annotations

import errno
import re
import time

from .shell_context import _discard
from .shell_interp import IO, applet
from .shell_vfs import Sink, _err, _oserror_text, _StreamSource, _WriterSink

_SUFFIXES = {"": 1, "c": 1, "w": 2, "b": 512, "k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20,
             "g": 1 << 30, "G": 1 << 30, "t": 1 << 40, "T": 1 << 40}
_DD_FLAGS = {"conv": {"notrunc", "noerror", "sync", "fsync"},
             "status": {"noxfer", "none"},
             "iflag": {"count_bytes", "skip_bytes", "direct"},
             "oflag": {"seek_bytes", "append", "direct"}}
_DD_KEYS = frozenset(("if", "of", "bs", "ibs", "obs", "count", "skip", "seek", *_DD_FLAGS))


_NUMBER_RE = re.compile(r"(\d+)([cwbkKmMgGtT]?)")


def _number(text: str) -> int:
    m = _NUMBER_RE.fullmatch(text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _SUFFIXES[m.group(2)]


def _human(n: float) -> str:
    units = " KMGTPE"
    if n < 1024:
        return f"{int(n)} B"
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.1f} {units[i]}" if n < 10 else f"{int(n)} {units[i]}"


@applet("dd")
def _dd(argv: list[str], io: IO) -> int:
    ibs = obs = 512
    count: int | None = None
    skip = seek = 0
    flags: dict[str, set[str]] = {k: set() for k in _DD_FLAGS}
    inp = outp = None
    for arg in argv[1:]:
        key, eq, value = arg.partition("=")
        if not eq or key not in _DD_KEYS:
            io.complain(f"dd: unknown argument {arg}\n")
            return 1
        if key in _DD_FLAGS:
            for flag in value.split(","):
                if flag not in _DD_FLAGS[key]:
                    io.complain(f"dd: unknown argument {arg}\n")
                    return 1
                flags[key].add(flag)
            continue
        if key == "if":
            inp = value
            continue
        if key == "of":
            outp = value
            continue
        try:
            number = _number(value)
        except ValueError:
            io.complain(f"dd: invalid number '{value}'\n")
            return 1
        if key == "bs":
            if number < 1:
                io.complain(f"dd: invalid number '{value}'\n")
                return 1
            ibs = obs = number
        elif key == "ibs":
            ibs = max(1, number)
        elif key == "obs":
            obs = max(1, number)
        elif key == "count":
            count = number
        elif key == "skip":
            skip = number
        else:
            seek = number
    vfs = io.vfs
    ctx = io.ctx
    quiet = "none" in flags["status"]
    in_name = inp or "stdin"
    try:
        direct = "direct" in flags["iflag"]
        if direct and inp is not None and not (io.ctx.storage.profile.access.direct_io
                                               and ibs % 4096 == 0 and vfs.kind(vfs.norm(inp))):
            raise _err(errno.EINVAL)  # toybox reads into an unaligned buffer: O_DIRECT refuses
        src = _StreamSource(io.stdin) if inp is None else vfs.open_read(vfs.norm(inp), direct)
    except OSError as exc:
        io.complain(f"dd: {inp}: {_oserror_text(exc)}\n")
        return 1
    try:
        if outp is None:
            sink: Sink = _WriterSink(io.out)
        else:
            path = vfs.norm(outp)
            if vfs.kind(path) == "blk" and not io.root:
                raise _err(errno.EACCES, path)
            sink = vfs.open_write(path, append="append" in flags["oflag"])
    except OSError as exc:
        io.complain(f"dd: {outp}: {_oserror_text(exc)}\n")
        return 1
    status = 0
    in_full = in_part = out_full = out_part = 0
    written = 0
    start = time.monotonic()
    try:
        skip_bytes = skip if "skip_bytes" in flags["iflag"] else skip * ibs
        if skip_bytes:
            if src.seekable:
                src.seek(skip_bytes)
            else:
                left = skip_bytes
                while left:
                    ctx.check()
                    piece = src.read(min(left, ibs))
                    if not piece:
                        break
                    left -= len(piece)
        seek_bytes = seek if "seek_bytes" in flags["oflag"] else seek * obs
        if outp is not None:
            sink.seek(seek_bytes)
            if "notrunc" not in flags["conv"] and "append" not in flags["oflag"]:
                sink.truncate()
        count_bytes = "count_bytes" in flags["iflag"]
        byte_budget = count if (count is not None and count_bytes) else None
        records_left = count if (count is not None and not count_bytes) else None
        pad = "sync" in flags["conv"]
        noerror = "noerror" in flags["conv"]
        reblock = ibs != obs
        pending = bytearray()
        in_pos = skip_bytes
        while True:
            ctx.check()
            if records_left is not None:
                if records_left <= 0:
                    break
                records_left -= 1
            want = ibs
            if byte_budget is not None:
                if byte_budget <= 0:
                    break
                want = min(ibs, byte_budget)
            try:
                data = src.read(want)
            except OSError as exc:
                io.complain(f"dd: {in_name}: {_oserror_text(exc)}\n")
                status = 1
                if not noerror:
                    break
                in_part += 1
                in_pos += want
                if src.seekable:
                    src.seek(in_pos)
                if not pad:
                    continue
                data = bytes(want)
            if not data:
                break
            got = len(data)
            in_pos += got
            if byte_budget is not None:
                byte_budget -= got
            if got == ibs:
                in_full += 1
            else:
                in_part += 1
                if pad:
                    data = bytes(data) + bytes(ibs - got)
            if not reblock:
                try:
                    sink.write(data)
                except OSError as exc:
                    io.complain(f"dd: write error: {_oserror_text(exc)}\n")
                    status = 1
                    break
                written += len(data)
                if len(data) == obs:
                    out_full += 1
                else:
                    out_part += 1
                continue
            pending += data
            failed = False
            while len(pending) >= obs:
                try:
                    sink.write(memoryview(pending)[:obs])
                except OSError as exc:
                    io.complain(f"dd: write error: {_oserror_text(exc)}\n")
                    status, failed = 1, True
                    break
                written += obs
                out_full += 1
                del pending[:obs]
            if failed:
                break
        if pending and status == 0:
            try:
                sink.write(pending)
                written += len(pending)
                out_part += 1
            except OSError as exc:
                io.complain(f"dd: write error: {_oserror_text(exc)}\n")
                status = 1
        if "fsync" in flags["conv"]:
            ctx.storage.sync()
    finally:
        sink.close()
    if not quiet and io.err is not _discard:
        elapsed = max(time.monotonic() - start, 1e-6)
        text = f"{in_full}+{in_part} records in\n{out_full}+{out_part} records out\n"
        if "noxfer" not in flags["status"]:
            text += (f"{written} bytes ({_human(written)}) copied, {elapsed:.6f} s, "
                     f"{_human(written / elapsed)}/s\n")
        io.complain(text)
    return status
