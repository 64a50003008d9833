"""BusyBox 1.10's `dd` on the emulated N900: ``if=``/``of=`` the eMMC or standard
input/output, ``bs``, ``skip``, ``seek``, ``count``, ``conv=noerror,sync``; writes go
through the kernel (its page cache keeps them), reads are buffered; the record counts on
standard error as BusyBox prints them."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

DEVICE = "/dev/mmcblk0"
CHUNK = 1 << 20
# what a still-mounted ext3 /home writes back after the overwrite: a 256 KiB journal commit
JOURNAL_COMMIT = (b"\xc0\x3b\x39\x98" + b"ext3 journal commit of /home " * 140).ljust(4096, b"\0") * 64


class _Input(Protocol):
    def read(self, n: int) -> Awaitable[bytes]: ...


class _Phone(Protocol):
    @property
    def storage(self) -> Any: ...

    @property
    def home_writable(self) -> bool: ...

    def home_offset(self) -> int: ...


class Shell(Protocol):
    """What dd needs of the shell that runs it."""

    @property
    def phone(self) -> _Phone: ...

    @property
    def channel(self) -> _Input: ...

    @property
    def root(self) -> bool: ...


def _number(text: str) -> int:
    units = {"k": 1024, "K": 1024, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)


async def run_dd(shell: Shell, args: list[str], out: Callable[[bytes], None],
                 err: Callable[[bytes], None]) -> int:
    try:
        opts = dict(a.split("=", 1) for a in args)
        bs = _number(opts.get("bs", "512"))
        skip, seek = int(opts.get("skip", 0)), int(opts.get("seek", 0))
        count = int(opts["count"]) if "count" in opts else None
    except (ValueError, KeyError):
        err(b"dd: invalid argument\n")
        return 1
    for path in (opts.get("if"), opts.get("of")):
        if path not in (None, DEVICE):
            err(f"dd: can't open '{path}': No such file or directory\n".encode())
            return 1
        if path == DEVICE and not shell.root:
            err(f"dd: can't open '{DEVICE}': Permission denied\n".encode())
            return 1
    if opts.get("of") == DEVICE:
        return await _write(shell, bs, seek, err)
    if opts.get("if") == DEVICE:
        return _read(shell, bs, skip, count, "noerror" in opts.get("conv", ""), out, err)
    err(b"dd: only the eMMC is emulated\n")
    return 1


async def _write(shell: Shell, bs: int, seek: int, err: Callable[[bytes], None]) -> int:
    """Standard input to EOF, each read written where the last one ended (as dd without
    ``count`` does over a pipe)."""
    storage = shell.phone.storage
    offset, records, partial = seek * bs, 0, 0
    while True:
        data = await shell.channel.read(CHUNK)
        if not data:
            break
        try:
            storage.write(offset, data, cached=True)
        except OSError as exc:
            err(f"dd: writing '{DEVICE}': {exc.strerror}\n".encode())
            err(f"{records}+{partial} records in\n{records}+{partial} records out\n".encode())
            return 1
        offset += len(data)
        full, rest = divmod(len(data), bs)
        records, partial = records + full, partial + (1 if rest else 0)
    err(f"{records}+{partial} records in\n{records}+{partial} records out\n".encode())
    if shell.phone.home_writable:  # the mounted /home commits its journal over the pattern
        storage.write(shell.phone.home_offset(), JOURNAL_COMMIT, cached=True)
    return 0


def _read(shell: Shell, bs: int, skip: int, count: int | None, noerror: bool,
          out: Callable[[bytes], None], err: Callable[[bytes], None]) -> int:
    storage = shell.phone.storage
    size = storage.size
    offset = skip * bs
    end = size if count is None else min(size, offset + count * bs)
    records, status = 0, 0
    while offset < end:
        n = min(bs, end - offset)
        try:
            out(storage.read(offset, n, cached=True))
        except OSError:
            err(f"dd: {DEVICE}: Input/output error\n".encode())
            status = 1
            if not noerror:
                break
            out(bytes(n))  # conv=sync pads the block it could not read
        offset += n
        records += 1
    err(f"{records}+0 records in\n{records}+0 records out\n".encode())
    return status
