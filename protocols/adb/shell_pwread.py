"""phonewipe-pwread as the emulated shell runs it: the on-device reader of an unrooted fill
(protocols/adb/helper/pwread.c), file extents read with O_DIRECT, i.e. from the medium."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .shell_context import CHUNK
from .shell_vfs import _err, _oserror_text

if TYPE_CHECKING:
    from .shell_interp import IO

PWREAD_MARK = b"phonewipe-pwread/1"  # protocols/adb/helper/pwread.c


def _pwread(argv: list[str], io: IO) -> int:
    """phonewipe-pwread: file extents read with O_DIRECT, i.e. from the medium."""
    args = argv[1:]
    if args == ["--version"]:
        io.say(PWREAD_MARK.decode() + "\n")
        return 0
    if len(args) == 2 and args[0] == "--probe":
        try:
            if io.vfs.lookup(io.vfs.norm(args[1])) != "file":
                raise _err(errno.EINVAL)
        except OSError as exc:
            io.complain(f"pwread: {args[1]}: {_oserror_text(exc)}\n")
            return 1
        io.say("direct\n")
        return 0
    if not args:
        io.complain("usage: phonewipe-pwread FILE:OFFSET:LENGTH... | --probe FILE\n")
        return 2
    for arg in args:
        path, _, rest = arg.partition(":")
        offset_text, _, length_text = rest.partition(":")
        if not (offset_text.isdigit() and length_text.isdigit()) or \
                int(offset_text) % 4096 or int(length_text) % 4096:
            io.complain(f"pwread: bad extent {arg} (FILE:OFFSET:LENGTH, 4096-aligned)\n")
            return 2
        try:
            _pwread_extent(io, io.vfs.norm(path), int(offset_text), int(length_text))
        except OSError as exc:
            io.complain(f"pwread: {path}: {_oserror_text(exc)}\n")
            return 1
    return 0


def _pwread_extent(io: IO, path: str, offset: int, length: int) -> None:
    if io.vfs.lookup(path) != "file":
        raise _err(errno.EINVAL, path)
    if offset + length > io.ctx.storage.table.sizes.get(path, 0):
        raise _err(errno.EIO, path)  # a short file: the extent is not all there
    end = offset + length
    while offset < end:
        io.ctx.check()
        data = io.ctx.storage.read_file(path, offset, min(CHUNK, end - offset), cached=False)
        io.out(data)
        offset += len(data)
