"""An emulated Android shell: the mksh subset and toybox applets a refurbishing tool uses.

`run(command, ctx)` executes one command line the way ``/system/bin/sh -c`` on an Android
14 phone would, against an emulated handset (`HandsetStorage`): its userdata image, its
file table and its state. Output goes to ``ctx.stdout`` / ``ctx.stderr``; input comes from
``ctx.stdin``; the return value is the exit status. Nothing here touches sockets, so the
emulated adbd (and tests) can drive it directly.

It rejects what the real shell rejects — unknown applets (127), unknown dd operands,
`status=progress`, `iflag=direct` — so a command that fails on a phone fails here too.
Storage faults surface honestly: an unreadable sector is an I/O error, a full file system
is ENOSPC, and `DeviceUnplugged` propagates to the caller (the cable is out).
"""
from __future__ import annotations

import collections
import errno
import fnmatch
import hashlib
import logging
import os
import posixpath
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from phonewipe.erase.emulation.faults import DeviceUnplugged
from phonewipe.erase.emulation.storage import HandsetStorage

log = logging.getLogger(__name__)

SH = "/system/bin/sh"
CHUNK = 1024 * 1024
EXIT_NOT_FOUND = 127
EXIT_KILLED = 137
EXIT_PIPE = 141

Writer = Callable[[bytes | bytearray | memoryview], None]


class Reader(Protocol):
    def read(self, n: int) -> bytes | bytearray | memoryview:
        """Up to ``n`` bytes; empty at end of input."""


class BytesReader:
    """A `Reader` over a bytes object."""

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._view = memoryview(bytes(data))
        self._pos = 0

    def read(self, n: int) -> memoryview:
        piece = self._view[self._pos:self._pos + max(0, n)]
        self._pos += len(piece)
        return piece


def _discard(_data: bytes | bytearray | memoryview) -> None:
    return None


class Cancelled(Exception):
    """The session ended (emulator stopped, cable pulled, reboot): stop at once."""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class ShellContext:
    """Everything a command can reach."""

    storage: HandsetStorage
    is_root: bool = False
    stdin: Reader = field(default_factory=BytesReader)
    stdout: Writer = _discard
    stderr: Writer = _discard
    adbd_root: bool = False  # adbd itself runs as root (engineering build after `adb root`)
    events: Callable[[str], None] | None = None  # "reboot:", "reboot:recovery", "testharness"...
    cancelled: threading.Event = field(default_factory=threading.Event)
    flush: Callable[[], None] | None = None  # push buffered output before blocking
    dirs: set[str] = field(default_factory=set)  # directories made with mkdir
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    status: int = 0  # $?

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()


# ---------------------------------------------------------------------------------------------
# Lexer and parser (a small POSIX/mksh subset)
# ---------------------------------------------------------------------------------------------


class ShellSyntaxError(Exception):
    pass


@dataclass(frozen=True)
class Seg:
    kind: str  # lit | var | cmd
    text: str
    quoted: bool


Word = tuple[Seg, ...]


@dataclass
class Redir:
    fd: int
    op: str  # > >> < >& <&
    target: Word


@dataclass
class Simple:
    words: list[Word]
    redirs: list[Redir]


@dataclass
class Pipeline:
    commands: list[Simple]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]  # ("&&"|"||", pipeline)


_OPERATORS = ("&&", "||", ";;", ";", "|", "&", "\n", "(", ")")
_WORD_END = set(" \t\n;&|<>()")
_REDIR_RE = re.compile(r"(\d*)(>>|>&|<&|>\||>|<)")
_PLAIN_WORD_RE = re.compile(r"[^ \t\n;&|<>()'\"\\$`]+")  # needs no quoting or expansion


_NOTHING_TO_QUOTE_RE = re.compile(r"[^'\"\\$`#]*")
# blanks before each token; findall() gives (fd, redirection, operator, word) per token
_PLAIN_TOKEN_RE = re.compile(r"[ \t]*(?:(\d*)(>>|>&|<&|>\||>|<)|(&&|\|\||;;|[;|&\n()])|([^ \t\n;&|<>()]+))")


def _lex(src: str) -> list:
    """Tokens: ('op', str) | ('redir', fd, op) | ('word', Word)."""
    return _lex_plain(src) if _NOTHING_TO_QUOTE_RE.fullmatch(src) else _lex_any(src)


def _lex_any(src: str) -> list:
    tokens: list = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t":
            i += 1
            continue
        if c == "\\" and src.startswith("\\\n", i):
            i += 2
            continue
        if c == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        m = _REDIR_RE.match(src, i)
        if m:
            tokens.append(_redir_token(m.group(1), m.group(2)))
            i = m.end()
            continue
        matched = next((op for op in _OPERATORS if src.startswith(op, i)), None)
        if matched:
            tokens.append(("op", ";" if matched == "\n" else matched))
            i += len(matched)
            continue
        word, i = _lex_word(src, i)
        tokens.append(("word", word))
    return tokens


def _lex_plain(src: str) -> list:
    """`_lex` for a line without quotes, expansions, escapes or comments (a read-back batch
    is thousands of such words): one regular expression does it all."""
    tokens: list = []
    for fd_text, redir_op, op, word in _PLAIN_TOKEN_RE.findall(src):
        if word:
            tokens.append(("word", (Seg("lit", word, False),)))
        elif op:
            tokens.append(("op", ";" if op == "\n" else op))
        else:
            tokens.append(_redir_token(fd_text, redir_op))
    return tokens


def _redir_token(fd_text: str, op: str) -> tuple[str, int, str]:
    op = ">" if op == ">|" else op
    return ("redir", int(fd_text) if fd_text else (0 if op in ("<", "<&") else 1), op)


def _find_close(src: str, i: int) -> int:
    """Index of the ')' closing a '$(' whose body starts at i."""
    depth = 1
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = src.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated quoted string")
            i = j + 1
            continue
        if c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("missing ')'")


def _lex_dollar(src: str, i: int, quoted: bool) -> tuple[Seg, int]:
    """src[i] == '$'."""
    n = len(src)
    if i + 1 >= n:
        return Seg("lit", "$", quoted), i + 1
    c = src[i + 1]
    if c == "(":
        end = _find_close(src, i + 2)
        return Seg("cmd", src[i + 2:end], quoted), end + 1
    if c == "{":
        end = src.find("}", i + 2)
        if end < 0:
            raise ShellSyntaxError("missing '}'")
        return Seg("var", src[i + 2:end], quoted), end + 1
    if c in "?$#!0123456789*@-":
        return Seg("var", c, quoted), i + 2
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", src[i + 1:])
    if m:
        return Seg("var", m.group(0), quoted), i + 1 + m.end()
    return Seg("lit", "$", quoted), i + 1


def _lex_substitution(src: str, i: int, quoted: bool) -> tuple[Seg, int]:
    """A `$...` expansion or a backquoted command starting at src[i]."""
    if src[i] == "$":
        return _lex_dollar(src, i, quoted)
    end = src.find("`", i + 1)
    if end < 0:
        raise ShellSyntaxError("unterminated quoted string")
    return Seg("cmd", src[i + 1:end], quoted), end + 1


def _lex_word(src: str, i: int) -> tuple[Word, int]:
    plain = _PLAIN_WORD_RE.match(src, i)
    if plain and (plain.end() == len(src) or src[plain.end()] in _WORD_END):
        return (Seg("lit", plain.group(0), False),), plain.end()  # the common case, fast
    segs: list[Seg] = []
    lit: list[str] = []

    def push_lit(quoted: bool) -> None:
        if lit:
            segs.append(Seg("lit", "".join(lit), quoted))
            lit.clear()

    n = len(src)
    while i < n and src[i] not in _WORD_END:
        c = src[i]
        if c == "\\":
            if i + 1 < n:
                if src[i + 1] != "\n":
                    push_lit(False)
                    segs.append(Seg("lit", src[i + 1], True))
                i += 2
            else:
                i += 1
            continue
        if c == "'":
            end = src.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            push_lit(False)
            segs.append(Seg("lit", src[i + 1:end], True))
            i = end + 1
            continue
        if c == '"':
            push_lit(False)
            i += 1
            opened = True
            if i >= n:
                raise ShellSyntaxError("unterminated quoted string")
            segs.append(Seg("lit", "", True))  # "" is an (empty) word
            while i < n:
                c = src[i]
                if c == '"':
                    opened = False
                    i += 1
                    break
                if c == "\\" and i + 1 < n and src[i + 1] in '"\\$`\n':
                    if src[i + 1] != "\n":
                        lit.append(src[i + 1])
                    i += 2
                    continue
                if c in "$`":
                    push_lit(True)
                    seg, i = _lex_substitution(src, i, True)
                    segs.append(seg)
                    continue
                lit.append(c)
                i += 1
            if opened:
                raise ShellSyntaxError("unterminated quoted string")
            push_lit(True)
            continue
        if c in "$`":
            push_lit(False)
            seg, i = _lex_substitution(src, i, False)
            segs.append(seg)
            continue
        lit.append(c)
        i += 1
    push_lit(False)
    return tuple(segs), i


def parse(src: str) -> list[AndOr]:
    """Parse a command line into and-or lists (sequenced by ';', '&' or newlines)."""
    tokens = _lex(src)
    lists: list[AndOr] = []
    pos = 0

    def parse_simple() -> Simple:
        nonlocal pos
        words: list[Word] = []
        redirs: list[Redir] = []
        while pos < len(tokens):
            tok = tokens[pos]
            if tok[0] == "word":
                words.append(tok[1])
                pos += 1
            elif tok[0] == "redir":
                if pos + 1 >= len(tokens) or tokens[pos + 1][0] != "word":
                    raise ShellSyntaxError("unexpected end of redirection")
                redirs.append(Redir(tok[1], tok[2], tokens[pos + 1][1]))
                pos += 2
            else:
                break
        if not words and not redirs:
            where = tokens[pos][1] if pos < len(tokens) else "newline"
            raise ShellSyntaxError(f"'{where}' unexpected")
        return Simple(words, redirs)

    def parse_pipeline() -> Pipeline:
        nonlocal pos
        negate = False
        if pos < len(tokens) and tokens[pos] == ("word", (Seg("lit", "!", False),)):
            negate = True
            pos += 1
        commands = [parse_simple()]
        while pos < len(tokens) and tokens[pos] == ("op", "|"):
            pos += 1
            commands.append(parse_simple())
        return Pipeline(commands, negate)

    while pos < len(tokens):
        if tokens[pos] == ("op", ";"):  # empty lines and stray separators
            pos += 1
            continue
        if tokens[pos][0] == "op":
            raise ShellSyntaxError(f"'{tokens[pos][1]}' unexpected")
        first = parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while pos < len(tokens) and tokens[pos] in (("op", "&&"), ("op", "||")):
            op = tokens[pos][1]
            pos += 1
            while pos < len(tokens) and tokens[pos] == ("op", ";"):  # newline after && is fine
                pos += 1
            rest.append((op, parse_pipeline()))
        lists.append(AndOr(first, rest))
        if pos < len(tokens):
            tok = tokens[pos]
            if tok in (("op", ";"), ("op", "&")):
                pos += 1  # '&' runs in the foreground here: we have no job control
            elif tok[0] == "op":
                raise ShellSyntaxError(f"'{tok[1]}' unexpected")
    return lists


# ---------------------------------------------------------------------------------------------
# The emulated file system
# ---------------------------------------------------------------------------------------------

PARTITION_NUMBERS = {"misc": 1, "frp": 2, "metadata": 3, "userdata": 4}
BLOCK_NAMES = tuple(PARTITION_NUMBERS)
CHAR_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
RECOVERY_COMMAND = "/cache/recovery/command"
DROP_CACHES = "/proc/sys/vm/drop_caches"
READ_ONLY_ROOTS = ("/system", "/vendor", "/product", "/apex", "/odm", "/system_ext")
SHELL_WRITABLE = ("/sdcard", "/data/local/tmp")
BUILTIN_DIRS = frozenset({
    "/", "/acct", "/apex", "/cache", "/cache/recovery", "/config", "/data", "/data/local",
    "/data/local/tmp", "/data/data", "/data/media", "/data/misc", "/data/system", "/dev",
    "/dev/block", "/dev/block/by-name", "/mnt", "/odm", "/proc", "/product", "/sdcard",
    "/sdcard/Alarms", "/sdcard/Android", "/sdcard/DCIM", "/sdcard/Documents",
    "/sdcard/Download", "/sdcard/Movies", "/sdcard/Music", "/sdcard/Notifications",
    "/sdcard/Pictures", "/sdcard/Podcasts", "/sdcard/Ringtones", "/storage",
    "/storage/emulated", "/storage/self", "/sys", "/system", "/system/bin", "/system/etc",
    "/system/xbin", "/vendor", "/metadata",
})
_ALIASES = (("/storage/emulated/0", "/sdcard"), ("/storage/self/primary", "/sdcard"),
            ("/mnt/sdcard", "/sdcard"), ("/data/media/0", "/sdcard"),
            ("/dev/block/bootdevice/by-name", "/dev/block/by-name"))


def _err(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path)


class Source:
    """Something dd/cat can read: ``read(n)`` and, when seekable, ``seek(pos)``."""

    seekable = True
    size: int | None = None

    def read(self, n: int) -> bytes | bytearray | memoryview:
        raise NotImplementedError

    def seek(self, pos: int) -> None:
        raise _err(errno.ESPIPE)


class Sink:
    seekable = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def seek(self, pos: int) -> None:
        pass

    def truncate(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ZeroSource(Source):
    def __init__(self) -> None:
        self._zeros = b""

    def read(self, n: int) -> bytes:
        if len(self._zeros) != n:
            self._zeros = bytes(n)
        return self._zeros

    def seek(self, pos: int) -> None:
        pass


class _RandomSource(Source):
    def read(self, n: int) -> bytes:
        return os.urandom(n)

    def seek(self, pos: int) -> None:
        pass


class _BytesSource(Source):
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.size = len(data)
        self._pos = 0

    def read(self, n: int) -> memoryview:
        piece = self._data[self._pos:self._pos + n]
        self._pos += len(piece)
        return piece

    def seek(self, pos: int) -> None:
        self._pos = pos


class _StreamSource(Source):
    seekable = False

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def read(self, n: int) -> bytes | bytearray | memoryview:
        return self._reader.read(n)


class _PartitionSource(Source):
    """A block device read buffered (through the page cache) or with O_DIRECT."""

    def __init__(self, storage: HandsetStorage, partition: str, direct: bool = False) -> None:
        self._storage = storage
        self._partition = partition
        self._cached = not direct
        self.size = storage.partition_size(partition)
        self._pos = 0

    def read(self, n: int) -> bytes:
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        data = self._storage.read_partition(self._partition, self._pos, n, self._cached)
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> None:
        self._pos = pos


class _FileSource(Source):
    def __init__(self, storage: HandsetStorage, path: str, direct: bool = False) -> None:
        self._storage = storage
        self._path = path
        self._cached = not direct
        self.size = storage.table.sizes.get(path, 0)
        self._pos = 0

    def read(self, n: int) -> bytes:
        try:
            data = self._storage.read_file(self._path, self._pos, n, self._cached)
        except KeyError:  # deleted under us
            return b""
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> None:
        self._pos = pos


class _WriterSink(Sink):
    seekable = False

    def __init__(self, write: Writer) -> None:
        self.write = write  # type: ignore[assignment]


class _NullSink(Sink):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None


class _PartitionSink(Sink):
    def __init__(self, storage: HandsetStorage, partition: str) -> None:
        self._storage = storage
        self._partition = partition
        self._size = storage.partition_size(partition)
        self._pos = 0

    def seek(self, pos: int) -> None:
        self._pos = pos

    def write(self, data: bytes | bytearray | memoryview) -> None:
        room = self._size - self._pos
        if room <= 0:
            raise _err(errno.ENOSPC)
        if len(data) > room:  # the kernel writes what fits, then says ENOSPC
            self._put(memoryview(data)[:room])
            raise _err(errno.ENOSPC)
        self._put(data)

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        if self._partition == "userdata":
            self._storage.write(self._pos, data, cached=True)
        else:
            self._storage.write_partition(self._partition, self._pos, bytes(data))
        self._pos += len(data)


class _FileSink(Sink):
    """A file of the emulated file table: appends, in-place overwrites, ENOSPC when full."""

    def __init__(self, storage: HandsetStorage, path: str, append: bool) -> None:
        self._storage = storage
        self._path = path
        self._append = append
        if path not in storage.table.files:
            storage.create_file(path)
        self._pos = storage.table.sizes[path] if append else 0
        self.dirty = True

    def seek(self, pos: int) -> None:
        if not self._append:
            self._pos = pos

    def truncate(self) -> None:
        table = self._storage.table
        if self._pos >= table.sizes.get(self._path, 0):
            return
        keep = self._storage.read_file(self._path, 0, self._pos) if self._pos else b""
        self._storage.create_file(self._path, keep)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        storage, path = self._storage, self._path
        view = memoryview(data)
        size = storage.table.sizes.get(path)
        if size is None:  # removed while open (rm -rf under a running dd): the writes vanish
            return
        if self._append:
            self._pos = size
        if self._pos > size:  # a hole: zeros, as on a file system without sparse support
            gap = self._pos - size
            self._pos = size
            while gap:
                step = min(gap, CHUNK)
                self.write(bytes(step))
                gap -= step
        if self._pos < size:
            overlap = min(size - self._pos, len(view))
            with storage._lock:
                pieces = storage.table.locate(path, self._pos, overlap)
            done = 0
            for image_off, length in pieces:
                storage.write(image_off, view[done:done + length], cached=True)
                done += length
            self._pos += overlap
            view = view[overlap:]
        if not view:
            return
        appended = storage.append_what_fits(path, view, cached=True)
        self._pos += appended
        if appended < len(view):  # the kernel writes what fits, then says ENOSPC
            raise _err(errno.ENOSPC)

    def close(self) -> None:
        self._storage.save()


class _DropCachesSink(Sink):
    """``echo 1|2|3 > /proc/sys/vm/drop_caches``: clean cached pages leave RAM."""

    def __init__(self, storage: HandsetStorage) -> None:
        self._storage = storage

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).strip() not in (b"1", b"2", b"3"):
            raise _err(errno.EINVAL)
        self._storage.drop_caches()


class _RecoveryCommandSink(Sink):
    def __init__(self, storage: HandsetStorage, append: bool) -> None:
        self._storage = storage
        if not append:
            storage.state.recovery_command = ""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._storage.state.recovery_command += bytes(data).decode("utf-8", "replace")

    def close(self) -> None:
        self._storage.save()


class Vfs:
    """Paths as a phone's shell sees them, backed by the handset's storage and state."""

    def __init__(self, ctx: ShellContext, is_root: bool) -> None:
        self.ctx = ctx
        self.storage = ctx.storage
        self.root = is_root

    # -- names --------------------------------------------------------------------------
    def norm(self, path: str) -> str:
        if not path.startswith("/"):
            path = posixpath.join(self.ctx.cwd, path)
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        for alias, real in _ALIASES:
            if path == alias or path.startswith(alias + "/"):
                path = real + path[len(alias):]
        return path

    def block_partition(self, path: str) -> str | None:
        if path.startswith("/dev/block/by-name/"):
            name = path[len("/dev/block/by-name/"):]
            return name if name in PARTITION_NUMBERS else None
        disk = "mmcblk0p" if self.storage.profile.device.storage_type.lower() == "emmc" else "sda"
        m = re.fullmatch(r"/dev/block/" + disk + r"(\d+)", path)
        if m:
            for name, number in PARTITION_NUMBERS.items():
                if number == int(m.group(1)):
                    return name
        return None

    def disk_name(self) -> str:
        return "mmcblk0p" if self.storage.profile.device.storage_type.lower() == "emmc" else "sda"

    def proc_file(self, path: str) -> bytes | None:
        if path == DROP_CACHES:
            return b"0\n"
        if path == "/proc/partitions":
            lines = ["major minor  #blocks  name", ""]
            major = 179 if self.disk_name() == "mmcblk0p" else 8
            for name, number in PARTITION_NUMBERS.items():
                kib = self.storage.table_size(name) // 1024
                lines.append(f"{major:4d} {number:8d} {kib:10d} {self.disk_name()}{number}")
            return ("\n".join(lines) + "\n").encode()
        m = re.fullmatch(r"/sys/class/block/" + self.disk_name() + r"(\d+)/(size|uevent)", path)
        names = {n: name for name, n in PARTITION_NUMBERS.items()}
        if m and int(m.group(1)) in names:  # sysfs: 512-byte sectors, and the GPT name
            name, dev = names[int(m.group(1))], f"{self.disk_name()}{m.group(1)}"
            if m.group(2) == "size":
                return f"{self.storage.table_size(name) // 512}\n".encode()
            return f"MAJOR=8\nMINOR={m.group(1)}\nDEVNAME={dev}\nDEVTYPE=partition\n" \
                   f"PARTN={m.group(1)}\nPARTNAME={name}\n".encode()
        if path == "/proc/version":
            return b"Linux version 5.10.198-android13-4 (build-user@build-host) #1 SMP PREEMPT\n"
        return None

    # -- permissions ----------------------------------------------------------------------
    def _private(self, path: str) -> bool:
        """Paths the shell uid may not even look at."""
        if self.root:
            return False
        if path in ("/data", "/cache", "/metadata") or path.startswith("/dev/block"):
            return True
        if path.startswith("/data/"):
            return not (path == "/data/local" or path == "/data/local/tmp"
                        or path.startswith("/data/local/tmp/"))
        return path.startswith(("/cache/", "/metadata/"))

    def check_read(self, path: str) -> None:
        if self._private(path):
            raise _err(errno.EACCES, path)

    def check_write(self, path: str) -> None:
        if path in CHAR_DEVICES:
            return
        if any(path == r or path.startswith(r + "/") for r in READ_ONLY_ROOTS) or path in (
                "/", "/proc", "/sys", "/dev") or path.startswith(("/proc/", "/sys/")):
            raise _err(errno.EROFS, path)
        if self.root:
            return
        if self._private(path):
            raise _err(errno.EACCES, path)
        if not any(path.startswith(r + "/") for r in SHELL_WRITABLE):
            raise _err(errno.EACCES, path)

    # -- lookups --------------------------------------------------------------------------
    def kind(self, path: str) -> str | None:
        """'dir', 'file', 'chr', 'blk' or None; no permission check."""
        if path in CHAR_DEVICES:
            return "chr"
        if self.block_partition(path):
            return "blk"
        if path == RECOVERY_COMMAND:
            return "file" if self.storage.state.recovery_command else None
        if self.proc_file(path) is not None:
            return "file"
        if path in self.storage.table.files:
            return "file"
        if self.is_dir(path):
            return "dir"
        return None

    def is_dir(self, path: str) -> bool:
        if path in BUILTIN_DIRS or path in self.ctx.dirs:
            return True
        prefix = path.rstrip("/") + "/"
        if any(d.startswith(prefix) for d in self.ctx.dirs):
            return True
        return any(p.startswith(prefix) for p in self.storage.table.files)

    def lookup(self, path: str) -> str:
        """kind of an existing path the caller may see, else OSError."""
        self.check_read(path)
        kind = self.kind(path)
        if kind is None:
            raise _err(errno.ENOENT, path)
        return kind

    def size(self, path: str) -> int:
        kind = self.lookup(path)
        if kind == "file":
            if path == RECOVERY_COMMAND:
                return len(self.storage.state.recovery_command.encode())
            proc = self.proc_file(path)
            if proc is not None:
                return 0  # procfs reports 0
            return self.storage.table.sizes[path]
        return 4096 if kind == "dir" else 0

    def listdir(self, path: str) -> list[str]:
        kind = self.lookup(path)
        if kind != "dir":
            raise _err(errno.ENOTDIR, path)
        prefix = "/" if path == "/" else path + "/"
        names: set[str] = set()
        candidates: Iterable[str] = (list(BUILTIN_DIRS) + list(self.ctx.dirs)
                                     + list(self.storage.table.files) + list(CHAR_DEVICES))
        for p in candidates:
            if p.startswith(prefix) and p != prefix:
                names.add(p[len(prefix):].split("/", 1)[0])
        if path == "/dev/block/by-name":
            names.update(BLOCK_NAMES)
        elif path == "/dev/block":
            names.update(f"{self.disk_name()}{n}" for n in PARTITION_NUMBERS.values())
        elif path == "/proc":
            names.update(("partitions", "version"))
        elif path == "/cache/recovery" and self.storage.state.recovery_command:
            names.add("command")
        if path == "/":
            names.update(("etc", "bin", "d"))
        return sorted(names)

    # -- opening --------------------------------------------------------------------------
    def open_read(self, path: str, direct: bool = False) -> Source:
        kind = self.lookup(path)
        if kind == "dir":
            raise _err(errno.EISDIR, path)
        if kind == "chr":
            if path == "/dev/zero":
                return _ZeroSource()
            if path == "/dev/null":
                return _BytesSource(b"")
            return _RandomSource()
        if kind == "blk":
            return _PartitionSource(self.storage, self.block_partition(path) or "", direct)
        if path == RECOVERY_COMMAND:
            return _BytesSource(self.storage.state.recovery_command.encode())
        proc = self.proc_file(path)
        if proc is not None:
            return _BytesSource(proc)
        return _FileSource(self.storage, path, direct)

    def open_write(self, path: str, append: bool = False) -> Sink:
        """A sink positioned at 0 (or the end with ``append``); the caller truncates."""
        kind = self.kind(path)
        if kind in ("chr",):
            return _NullSink()
        if kind == "blk":
            if not self.root:
                raise _err(errno.EACCES, path)
            return _PartitionSink(self.storage, self.block_partition(path) or "")
        if kind == "dir":
            raise _err(errno.EISDIR, path)
        if path == DROP_CACHES:
            if not (self.root and self.storage.profile.access.drop_caches):
                raise _err(errno.EACCES, path)  # the shell uid, or an SELinux denial
            return _DropCachesSink(self.storage)
        self.check_write(path)
        if path == RECOVERY_COMMAND:
            return _RecoveryCommandSink(self.storage, append)
        parent = posixpath.dirname(path)
        if self.kind(parent) != "dir":
            raise _err(errno.ENOENT, path)
        return _FileSink(self.storage, path, append)

    def remove(self, path: str) -> None:
        if path == RECOVERY_COMMAND:
            self.storage.state.recovery_command = ""
        else:
            self.storage.delete_file(path)

    def glob(self, pattern: str) -> list[str]:
        """Expand wildcards in the last path component (the common case in scripts)."""
        head, tail = posixpath.split(pattern)
        if any(ch in head for ch in "*?["):
            return []
        directory = self.norm(head or ".")
        try:
            names = self.listdir(directory)
        except OSError:
            return []
        matches = [n for n in names if fnmatch.fnmatchcase(n, tail)
                   and (tail.startswith(".") or not n.startswith("."))]
        return [posixpath.join(head, n) if head else n for n in matches]


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


class IO:
    """The three standard streams of one command."""

    def __init__(self, ctx: ShellContext, stdin: Reader, out: Writer, err: Writer,
                 is_root: bool, vfs: Vfs | None = None) -> None:
        self.ctx = ctx
        self.stdin = stdin
        self.out = out
        self.err = err
        self.root = is_root
        self.vfs = vfs or Vfs(ctx, is_root)

    def say(self, text: str) -> None:
        self.out(text.encode())

    def complain(self, text: str) -> None:
        self.err(text.encode())

    def flush(self) -> None:
        if self.ctx.flush:
            self.ctx.flush()


def _env(ctx: ShellContext, is_root: bool) -> dict[str, str]:
    base = {"PATH": "/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:"
                    "/system_ext/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin",
            "HOME": "/", "SHELL": SH, "USER": "root" if is_root else "shell",
            "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system",
            "EXTERNAL_STORAGE": "/sdcard", "HOSTNAME": "localhost", "TMPDIR": "/data/local/tmp"}
    base.update(ctx.env)
    return base


def run(command: str, ctx: ShellContext) -> int:
    """Run ``command`` as ``sh -c`` would; returns the exit status.

    Raises `DeviceUnplugged` when the storage reports the cable pulled.
    """
    try:
        status = _run_script(command, ctx, ctx.stdin, ctx.stdout, ctx.stderr, ctx.is_root)
    except _Exit as done:
        status = done.status
    except Cancelled:
        status = EXIT_KILLED
    ctx.status = status
    return status


def _run_script(src: str, ctx: ShellContext, stdin: Reader, out: Writer, err: Writer,
                is_root: bool) -> int:
    try:
        lists = parse(src)
    except ShellSyntaxError as exc:
        err(f"{SH}: syntax error: {exc}\n".encode())
        return 1
    status = ctx.status
    for andor in lists:
        status = _run_pipeline(andor.first, ctx, stdin, out, err, is_root)
        ctx.status = status
        for op, pipeline in andor.rest:
            if (op == "&&") == (status == 0):
                status = _run_pipeline(pipeline, ctx, stdin, out, err, is_root)
                ctx.status = status
    return status


class _Pipe:
    """A bounded pipe between two stages of a pipeline (each stage runs in a thread)."""

    LIMIT = 4 * CHUNK

    def __init__(self, ctx: ShellContext) -> None:
        self._ctx = ctx
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._bytes = 0
        self._writer_done = False
        self._reader_done = False
        self._cond = threading.Condition()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not len(data):
            return
        piece = memoryview(bytes(data))
        with self._cond:
            while self._bytes >= self.LIMIT and not self._reader_done:
                self._cond.wait(0.25)
                self._ctx.check()
            if self._reader_done:
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")
            self._chunks.append(piece)
            self._bytes += len(piece)
            self._cond.notify_all()

    def read(self, n: int) -> memoryview:
        with self._cond:
            while not self._chunks and not self._writer_done:
                self._cond.wait(0.25)
                self._ctx.check()
            if not self._chunks:
                return memoryview(b"")
            chunk = self._chunks[0]
            if len(chunk) <= n:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
                chunk = chunk[:n]
            self._bytes -= len(chunk)
            self._cond.notify_all()
            return chunk

    def close_write(self) -> None:
        with self._cond:
            self._writer_done = True
            self._cond.notify_all()

    def close_read(self) -> None:
        with self._cond:
            self._reader_done = True
            self._chunks.clear()
            self._cond.notify_all()


def _run_pipeline(pipeline: Pipeline, ctx: ShellContext, stdin: Reader, out: Writer,
                  err: Writer, is_root: bool) -> int:
    commands = pipeline.commands
    if len(commands) == 1:
        status = _run_simple(commands[0], ctx, stdin, out, err, is_root)
    else:
        feed: Reader = stdin
        stages: list[tuple[threading.Thread, _Pipe, list[BaseException]]] = []
        for command in commands[:-1]:
            pipe = _Pipe(ctx)
            failure: list[BaseException] = []

            def stage(command: Simple = command, feed: Reader = feed, pipe: _Pipe = pipe,
                      failure: list[BaseException] = failure) -> None:
                try:
                    _run_simple(command, ctx, feed, pipe.write, err, is_root)
                except _Exit:
                    pass
                except BaseException as exc:  # re-raised by the last stage's thread
                    failure.append(exc)
                finally:
                    pipe.close_write()

            thread = threading.Thread(target=stage, name="sh-pipeline", daemon=True)
            thread.start()
            stages.append((thread, pipe, failure))
            feed = pipe
        try:
            status = _run_simple(commands[-1], ctx, feed, out, err, is_root)
        finally:
            for thread, pipe, _ in stages:
                pipe.close_read()
            for thread, _, _ in stages:
                thread.join()
        for _, _, failure in stages:
            for exc in failure:
                if isinstance(exc, (DeviceUnplugged, Cancelled)):
                    raise exc
    if pipeline.negate:
        status = 0 if status else 1
    return status


def _expand_var(name: str, ctx: ShellContext, is_root: bool) -> str:
    if name == "?":
        return str(ctx.status)
    if name == "$":
        return "4242"
    if name in ("#", "0"):
        return "0" if name == "#" else SH
    if name.isdigit() or name in "*@!-":
        return ""
    return _env(ctx, is_root).get(name, "")


def _expand(word: Word, ctx: ShellContext, is_root: bool, vfs: Vfs) -> list[str]:
    if len(word) == 1 and word[0].kind == "lit" and (word[0].quoted or not _WILD.intersection(word[0].text)):
        return [word[0].text]  # the common case: one literal, nothing to expand
    fields: list[str] = []
    cur: list[str] = []
    started = False
    wild = False
    for seg in word:
        if seg.kind == "lit":
            cur.append(seg.text)
            started = True
            if not seg.quoted and any(ch in seg.text for ch in "*?["):
                wild = True
            continue
        if seg.kind == "var":
            value = _expand_var(seg.text, ctx, is_root)
        else:
            captured = bytearray()
            try:
                _run_script(seg.text, ctx, BytesReader(), captured.extend, _discard, is_root)
            except _Exit as done:
                ctx.status = done.status
            value = captured.decode("utf-8", "replace").rstrip("\n")
        if seg.quoted:
            cur.append(value)
            started = True
            continue
        pieces = re.split(r"[ \t\n]+", value)
        if value and value[0] in " \t\n" and started:
            fields.append("".join(cur))
            cur, started = [], False
        pieces = [p for p in pieces if p] if value.strip() else []
        for j, piece in enumerate(pieces):
            if j:
                fields.append("".join(cur))
                cur = []
            cur.append(piece)
            started = True
        if value and value[-1] in " \t\n" and started:
            fields.append("".join(cur))
            cur, started = [], False
    if started:
        fields.append("".join(cur))
    if wild:
        expanded: list[str] = []
        for f in fields:
            matches = vfs.glob(f) if any(ch in f for ch in "*?[") else []
            expanded.extend(matches or [f])
        fields = expanded
    return fields


_WILD = frozenset("*?[")
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)


def _run_simple(command: Simple, ctx: ShellContext, stdin: Reader, out: Writer, err: Writer,
                is_root: bool) -> int:
    ctx.check()
    vfs = Vfs(ctx, is_root)
    argv: list[str] = []
    for word in command.words:
        argv.extend(_expand(word, ctx, is_root, vfs))
    fds: dict[int, object] = {0: stdin, 1: out, 2: err}
    opened: list[Sink] = []
    try:
        for redir in command.redirs:
            target = " ".join(_expand(redir.target, ctx, is_root, vfs))
            if redir.op in (">&", "<&"):
                if target == "-":
                    fds[redir.fd] = _discard if redir.op == ">&" else BytesReader()
                elif target.isdigit() and int(target) in fds:
                    fds[redir.fd] = fds[int(target)]
                else:
                    err(f"{SH}: {target}: bad file descriptor\n".encode())
                    return 1
                continue
            path = vfs.norm(target)
            if redir.op == "<":
                try:
                    source = vfs.open_read(path)
                except OSError as exc:
                    err(f"{SH}: can't open {target}: {exc.strerror}\n".encode())
                    return 1
                fds[redir.fd] = source
                continue
            if path == "/dev/null":
                fds[redir.fd] = _discard
                continue
            try:
                sink = vfs.open_write(path, append=redir.op == ">>")
                if redir.op == ">":
                    sink.truncate()
            except OSError as exc:
                err(f"{SH}: can't create {target}: {exc.strerror}\n".encode())
                return 1
            opened.append(sink)
            fds[redir.fd] = _sink_writer(sink)
        while argv and "=" in argv[0] and _ASSIGNMENT_RE.fullmatch(argv[0]):
            name, _, value = argv.pop(0).partition("=")
            if not argv:
                ctx.env[name] = value
        if not argv:
            return 0
        io = IO(ctx, fds[0], fds[1], fds[2], is_root, vfs)  # type: ignore[arg-type]
        return _dispatch(argv, io)
    finally:
        for sink in opened:
            sink.close()


def _sink_writer(sink: Sink) -> Writer:
    def write(data: bytes | bytearray | memoryview) -> None:
        try:
            sink.write(data)
        except OSError:
            pass  # a full disk while redirecting: mksh drops the output
    return write


APPLETS: dict[str, Callable[[list[str], IO], int]] = {}
def applet(*names: str) -> Callable:
    def register(fn: Callable[[list[str], IO], int]) -> Callable[[list[str], IO], int]:
        for name in names:
            APPLETS[name] = fn
        return fn
    return register


_BIN_DIRS = ("/system/bin", "/system/xbin", "/vendor/bin", "/product/bin", "/sbin")


def _resolve(name: str, io: IO) -> Callable[[list[str], IO], int] | None:
    if "/" in name:
        directory, base = posixpath.split(name)
        if directory not in _BIN_DIRS:
            return _program(name, io)
        if base == "su" and io.ctx.storage.profile.access.root != "su":
            return None
        name = base
    if name == "su" and io.ctx.storage.profile.access.root != "su":
        return None
    return APPLETS.get(name)


EXEC_DIR = "/data/local/tmp/"  # the one place the shell uid may run what it pushed
ELF_MACHINES = {"arm64-v8a": 183, "armeabi-v7a": 40, "x86_64": 62, "x86": 3}
PWREAD_MARK = b"phonewipe-pwread/1"  # protocols/adb/helper/pwread.c


def _program(path: str, io: IO) -> Callable[[list[str], IO], int] | None:
    """A pushed executable. The emulator cannot run machine code: it runs the programs it
    knows (phonewipe-pwread) as applets, after the checks a phone's kernel makes."""
    full = io.vfs.norm(path)
    if not full.startswith(EXEC_DIR) or io.vfs.kind(full) != "file":
        return None
    size = io.ctx.storage.table.sizes.get(full, 0)
    image = io.ctx.storage.read_file(full, 0, size, cached=True)
    abi = properties(io.ctx).get("ro.product.cpu.abi", "arm64-v8a")
    if image[:4] != b"\x7fELF" or int.from_bytes(image[18:20], "little") != ELF_MACHINES.get(abi):
        return _not_executable
    return _pwread if PWREAD_MARK in image else _not_executable


def _not_executable(argv: list[str], io: IO) -> int:
    io.complain(f"{SH}: {argv[0]}: can't execute: Exec format error\n")
    return 126


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


def _dispatch(argv: list[str], io: IO) -> int:
    name = argv[0]
    fn = _resolve(name, io)
    if fn is None:
        io.complain(f"{SH}: {name}: inaccessible or not found\n")
        return EXIT_NOT_FOUND
    try:
        return fn(argv, io)
    except (DeviceUnplugged, Cancelled, _Exit):
        raise
    except BrokenPipeError:
        return EXIT_PIPE
    except Exception as exc:  # an emulator bug must not look like a device answer
        log.exception("emulated applet %s failed", name)
        io.complain(f"{posixpath.basename(name)}: emulator error: {exc}\n")
        return 1


# ---------------------------------------------------------------------------------------------
# Applets
# ---------------------------------------------------------------------------------------------


def _oserror_text(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or errno.EIO)


@applet("true", ":")
def _true(argv: list[str], io: IO) -> int:
    return 0


@applet("false")
def _false(argv: list[str], io: IO) -> int:
    return 1


@applet("exit")
def _exit(argv: list[str], io: IO) -> int:
    try:
        status = int(argv[1]) if len(argv) > 1 else io.ctx.status
    except ValueError:
        io.complain(f"{SH}: exit: {argv[1]}: bad number\n")
        status = 1
    raise _Exit(status & 0xFF)


@applet("cd")
def _cd(argv: list[str], io: IO) -> int:
    target = io.vfs.norm(argv[1] if len(argv) > 1 else "/")
    try:
        if io.vfs.lookup(target) != "dir":
            raise _err(errno.ENOTDIR)
    except OSError as exc:
        io.complain(f"{SH}: cd: {argv[1] if len(argv) > 1 else '/'}: {_oserror_text(exc)}\n")
        return 2
    io.ctx.cwd = target
    return 0


_ECHO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                 "\\": "\\", "e": "\x1b"}


@applet("echo")
def _echo(argv: list[str], io: IO) -> int:
    args = argv[1:]
    newline, escapes = True, True
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for flag in args[0][1:]:
            if flag == "n":
                newline = False
            elif flag == "E":
                escapes = False
            else:
                escapes = True
        args.pop(0)
    text = " ".join(args)
    if escapes and "\\" in text:
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt == "c":
                    newline = False
                    break
                if nxt == "0":
                    m = re.match(r"0[0-7]{0,3}", text[i + 1:])
                    digits = m.group(0) if m else "0"
                    out.append(chr(int(digits, 8)))
                    i += 1 + len(digits)
                    continue
                if nxt in _ECHO_ESCAPES:
                    out.append(_ECHO_ESCAPES[nxt])
                    i += 2
                    continue
            out.append(c)
            i += 1
        text = "".join(out)
    io.say(text + ("\n" if newline else ""))
    return 0


@applet("sleep")
def _sleep(argv: list[str], io: IO) -> int:
    if len(argv) < 2:
        io.complain("sleep: Needs 1 argument\n")
        return 1
    total = 0.0
    for arg in argv[1:]:
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", arg)
        if not m:
            io.complain(f"sleep: invalid number '{arg}'\n")
            return 1
        total += float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    io.flush()
    if io.ctx.cancelled.wait(total):
        raise Cancelled()
    return 0


@applet("sync")
def _sync(argv: list[str], io: IO) -> int:
    io.ctx.storage.sync()
    return 0


@applet("sh", "mksh")
def _sh(argv: list[str], io: IO) -> int:
    args = argv[1:]
    if args and args[0] == "-c":
        if len(args) < 2:
            io.complain(f"{SH}: -c: option requires an argument\n")
            return 1
        script = args[1]
    elif args:
        io.complain(f"{SH}: {args[0]}: No such file or directory\n")
        return 127
    else:
        script = _read_all(io.stdin, io.ctx).decode("utf-8", "replace")
    try:
        return _run_script(script, io.ctx, io.stdin, io.out, io.err, io.root)
    except _Exit as done:
        return done.status


def _read_all(reader: Reader, ctx: ShellContext, limit: int = 16 * 1024 * 1024) -> bytes:
    parts: list[bytes] = []
    total = 0
    while total < limit:
        ctx.check()
        piece = reader.read(CHUNK)
        if not piece:
            break
        parts.append(bytes(piece))
        total += len(piece)
    return b"".join(parts)


# -- identity ------------------------------------------------------------------------------

_SHELL_GROUPS = ("1004(input),1007(log),1011(adb),1015(sdcard_rw),1028(sdcard_r),"
                 "1078(ext_data_rw),1079(ext_obb_rw),3001(net_bt_admin),3002(net_bt),"
                 "3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid),3012(readtracefs)")


@applet("id")
def _id(argv: list[str], io: IO) -> int:
    if len(argv) > 1 and argv[1] in ("-u", "-g"):
        io.say("0\n" if io.root else "2000\n")
        return 0
    if len(argv) > 1 and argv[1] in ("-un", "-nu", "-gn", "-ng"):
        io.say("root\n" if io.root else "shell\n")
        return 0
    if not io.root:
        io.say(f"uid=2000(shell) gid=2000(shell) groups=2000(shell),{_SHELL_GROUPS} "
               "context=u:r:shell:s0\n")
    elif io.ctx.storage.profile.access.root == "su":
        io.say("uid=0(root) gid=0(root) groups=0(root) context=u:r:magisk:s0\n")
    else:
        io.say(f"uid=0(root) gid=0(root) groups=0(root),{_SHELL_GROUPS} context=u:r:su:s0\n")
    return 0


@applet("whoami")
def _whoami(argv: list[str], io: IO) -> int:
    io.say("root\n" if io.root else "shell\n")
    return 0


@applet("su")
def _su(argv: list[str], io: IO) -> int:
    args = argv[1:]
    command: str | None = None
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--command"):
            if not args:
                io.complain("su: option requires an argument -- c\n")
                return 2
            command = " ".join(args)
            break
        if arg in ("-", "-l", "--login", "-p", "-mm", "--mount-master", "0", "root"):
            continue
        io.complain(f"su: invalid uid/gid '{arg}'\n")
        return 2
    if command is None:
        command = _read_all(io.stdin, io.ctx).decode("utf-8", "replace")
    saved = io.ctx.status
    try:
        status = _run_script(command, io.ctx, io.stdin, io.out, io.err, True)
    except _Exit as done:
        status = done.status
    io.ctx.status = saved
    return status


def properties(ctx: ShellContext) -> dict[str, str]:
    storage = ctx.storage
    d = storage.profile.device
    state = storage.state
    locked = state.bootloader_locked
    brand = d.manufacturer.lower()
    props = {
        "ro.product.manufacturer": d.manufacturer,
        "ro.product.brand": brand,
        "ro.product.model": d.model,
        "ro.product.name": d.product,
        "ro.product.device": d.device,
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.serialno": state.serial,
        "ro.boot.serialno": state.serial,
        "ro.build.version.release": d.android,
        "ro.build.version.sdk": str(d.sdk),
        "ro.build.type": d.build_type,
        "ro.build.tags": "release-keys" if d.build_type == "user" else "test-keys",
        "ro.build.fingerprint": (f"{brand}/{d.product}/{d.device}:{d.android}/PW1A.240101.001/"
                                 f"1:{d.build_type}/release-keys"),
        "ro.debuggable": "0" if d.build_type == "user" else "1",
        "ro.secure": "1",
        "ro.adb.secure": "0" if storage.profile.access.auth == "none" else "1",
        "ro.crypto.type": d.crypto_type,
        "ro.crypto.state": "encrypted",
        "ro.boot.flash.locked": "1" if locked else "0",
        "ro.boot.verifiedbootstate": "green" if locked else "orange",
        "ro.boot.vbmeta.device_state": "locked" if locked else "unlocked",
        "ro.frp.pst": "/dev/block/by-name/frp",
        "ro.hardware": "emulated",
        "ro.bootmode": "normal",
        "persist.sys.test_harness": "1" if state.test_harness else "0",
        "service.adb.root": "1" if ctx.adbd_root else "0",
        "sys.boot_completed": "1",
        "init.svc.adbd": "running",
        "sys.usb.state": "adb",
    }
    return dict(sorted(props.items()))


@applet("getprop")
def _getprop(argv: list[str], io: IO) -> int:
    props = properties(io.ctx)
    if len(argv) == 1:
        io.say("".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
        return 0
    default = argv[2] if len(argv) > 2 else ""
    io.say(props.get(argv[1], default) + "\n")
    return 0


@applet("setprop")
def _setprop(argv: list[str], io: IO) -> int:
    if len(argv) != 3:
        io.complain("usage: setprop NAME VALUE\n")
        return 1
    io.complain(f"Failed to set property '{argv[1]}' to '{argv[2]}'.\n"
                "See dmesg for error reason.\n")
    return 1


# -- dd --------------------------------------------------------------------------------------

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


# -- files -----------------------------------------------------------------------------------


def _stream_out(source: Source, io: IO) -> None:
    while True:
        io.ctx.check()
        data = source.read(CHUNK)
        if not data:
            return
        io.out(data)


@applet("cat")
def _cat(argv: list[str], io: IO) -> int:
    status = 0
    paths = [a for a in argv[1:] if a != "-u"] or ["-"]
    for arg in paths:
        if arg == "-":
            _stream_out(_StreamSource(io.stdin), io)
            continue
        try:
            _stream_out(io.vfs.open_read(io.vfs.norm(arg)), io)
        except OSError as exc:
            io.complain(f"cat: {arg}: {_oserror_text(exc)}\n")
            status = 1
    return status


@applet("sha256sum", "sha1sum", "md5sum")
def _digest(argv: list[str], io: IO) -> int:
    name = posixpath.basename(argv[0])
    algo = {"sha256sum": "sha256", "sha1sum": "sha1", "md5sum": "md5"}[name]
    status = 0
    args = [a for a in argv[1:] if a not in ("-b",)]
    if any(a.startswith("-") and a != "-" for a in args):
        bad = next(a for a in args if a.startswith("-") and a != "-")
        io.complain(f"{name}: Unknown option '{bad.lstrip('-')[:1]}' (see \"{name} --help\")\n")
        return 1
    for arg in args or ["-"]:
        h = hashlib.new(algo)
        try:
            source = _StreamSource(io.stdin) if arg == "-" else io.vfs.open_read(io.vfs.norm(arg))
            while True:
                io.ctx.check()
                data = source.read(CHUNK)
                if not data:
                    break
                h.update(data)
        except OSError as exc:
            io.complain(f"{name}: {arg}: {_oserror_text(exc)}\n")
            status = 1
            continue
        io.say(f"{h.hexdigest()}  {arg}\n")
    return status


@applet("touch")
def _touch(argv: list[str], io: IO) -> int:
    status = 0
    for arg in argv[1:]:
        if arg.startswith("-"):
            continue
        path = io.vfs.norm(arg)
        try:
            if io.vfs.kind(path) is None:
                io.vfs.open_write(path).close()
        except OSError as exc:
            io.complain(f"touch: {arg}: {_oserror_text(exc)}\n")
            status = 1
    return status


def _on_userdata(path: str) -> bool:
    return path.startswith(("/sdcard/", "/data/"))


@applet("mkdir")
def _mkdir(argv: list[str], io: IO) -> int:
    parents = False
    paths: list[str] = []
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "-m" and args:
            args.pop(0)
        elif arg.startswith("-") and len(arg) > 1:
            if set(arg[1:]) - {"p", "v"}:
                io.complain(f"mkdir: Unknown option '{arg[1]}' (see \"mkdir --help\")\n")
                return 1
            parents = parents or "p" in arg
        else:
            paths.append(arg)
    if not paths:
        io.complain("mkdir: Needs 1 argument\n")
        return 1
    status = 0
    vfs = io.vfs
    for arg in paths:
        path = vfs.norm(arg)
        chain = [path]
        while chain[-1] != "/":
            chain.append(posixpath.dirname(chain[-1]))
        try:
            if not parents:
                if vfs.kind(path) is not None:
                    raise _err(errno.EEXIST)
                if vfs.kind(posixpath.dirname(path)) != "dir":
                    raise _err(errno.ENOENT)
            for p in reversed(chain):
                kind = vfs.kind(p)
                if kind == "dir":
                    continue
                if kind is not None:
                    raise _err(errno.EEXIST if p == path else errno.ENOTDIR)
                vfs.check_write(p)
                if _on_userdata(p):
                    io.ctx.storage.make_dir(p)
                io.ctx.dirs.add(p)
        except OSError as exc:
            io.complain(f"mkdir: {arg}: {_oserror_text(exc)}\n")
            status = 1
    return status


@applet("rm")
def _rm(argv: list[str], io: IO) -> int:
    force = recursive = False
    paths: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and len(arg) > 1 and not paths:
            if set(arg[1:]) - {"f", "r", "R", "v", "i"}:
                io.complain(f"rm: Unknown option '{arg[1]}' (see \"rm --help\")\n")
                return 1
            force = force or "f" in arg
            recursive = recursive or bool({"r", "R"} & set(arg))
        else:
            paths.append(arg)
    if not paths:
        if force:
            return 0
        io.complain("rm: Needs 1 argument\n")
        return 1
    status = 0
    vfs = io.vfs
    storage = io.ctx.storage
    changed = False
    for arg in paths:
        path = vfs.norm(arg)
        try:
            vfs.check_read(path)
            kind = vfs.kind(path) or ("dir" if storage.has_dir(path) else None)
            if kind is None:
                if force:
                    continue
                raise _err(errno.ENOENT)
            if kind == "dir":
                if not recursive:
                    raise _err(errno.EISDIR)
                vfs.check_write(path + "/x")
                prefix = path.rstrip("/") + "/"
                changed = storage.delete_tree(path) or changed
                for d in [d for d in io.ctx.dirs if d == path or d.startswith(prefix)]:
                    io.ctx.dirs.discard(d)
                # Standard directories stay (the system recreates them); removing a mount
                # point or a directory the shell uid does not own fails after its contents.
                if path in BUILTIN_DIRS and not io.root and not path.startswith("/sdcard/"):
                    raise _err(errno.EACCES)
                continue
            if kind in ("chr", "blk"):
                raise _err(errno.EACCES)
            vfs.check_write(path)
            vfs.remove(path)
            changed = True
        except OSError as exc:
            io.complain(f"rm: {arg}: {_oserror_text(exc)}\n")
            status = 1
    if changed:
        storage.save()
    return status


def _mode_string(kind: str) -> str:
    return {"dir": "drwxrwx--x", "file": "-rw-rw----", "blk": "brw-------",
            "chr": "crw-rw-rw-"}[kind]


@applet("ls")
def _ls(argv: list[str], io: IO) -> int:
    long = directory_itself = show_all = almost_all = False
    paths: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and len(arg) > 1:
            bad = set(arg[1:]) - set("1aAldhZRst")
            if bad:
                io.complain(f"ls: Unknown option '{sorted(bad)[0]}' (see \"ls --help\")\n")
                return 1
            long = long or "l" in arg
            directory_itself = directory_itself or "d" in arg
            show_all = show_all or "a" in arg
            almost_all = almost_all or "A" in arg
        else:
            paths.append(arg)
    paths = paths or ["."]
    vfs = io.vfs
    status = 0
    listings: list[tuple[str, list[str]]] = []
    files: list[str] = []
    for arg in paths:
        path = vfs.norm(arg)
        try:
            kind = vfs.lookup(path)
            if kind == "dir" and not directory_itself:
                names = vfs.listdir(path)
                if not (show_all or almost_all):  # dot entries are hidden without -a/-A
                    names = [n for n in names if not n.startswith(".")]
                if show_all:
                    names = [".", ".."] + names
                listings.append((arg, names))
            else:
                files.append(arg)
        except OSError as exc:
            io.complain(f"ls: {arg}: {_oserror_text(exc)}\n")
            status = 1

    def line(display: str, full: str) -> str:
        if not long:
            return display
        kind = vfs.kind(full) or "dir"
        size = vfs.size(full) if kind == "file" else (4096 if kind == "dir" else 0)
        owner = "root     root    " if not full.startswith("/sdcard") else "u0_a0    media_rw"
        return f"{_mode_string(kind)} 1 {owner} {size:>8} 2026-01-01 00:00 {display}"

    out: list[str] = [line(f, vfs.norm(f)) for f in files]
    for i, (arg, names) in enumerate(listings):
        if len(listings) + len(files) > 1:
            if out or i:
                out.append("")
            out.append(f"{arg}:")
        base = vfs.norm(arg)
        out.extend(line(n, posixpath.join(base, n)) for n in names)
    if out:
        io.say("\n".join(out) + "\n")
    return status


@applet("stat")
def _stat(argv: list[str], io: IO) -> int:
    fmt = None
    file_system = False
    paths: list[str] = []
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--format") and args:
            fmt = args.pop(0)
        elif arg.startswith("-c") and len(arg) > 2:
            fmt = arg[2:]
        elif arg == "-L":
            continue
        elif arg == "-f":
            file_system = True
        else:
            paths.append(arg)
    if not paths:
        io.complain("stat: Needs 1 argument\n")
        return 1
    if file_system:
        return _statfs(paths, fmt, io)
    vfs = io.vfs
    status = 0
    for arg in paths:
        path = vfs.norm(arg)
        try:
            kind = vfs.lookup(path)
            size = vfs.size(path)
        except OSError as exc:
            io.complain(f"stat: {arg}: {_oserror_text(exc)}\n")
            status = 1
            continue
        type_name = {"dir": "directory", "file": "regular file" if size else "regular empty file",
                     "blk": "block special file", "chr": "character special file"}[kind]
        if fmt is None:
            io.say(f"  File: {arg}\n  Size: {size}\t Blocks: {-(-size // 512)}\t IO Blocks: "
                   f"4096\t{type_name}\n")
            continue

        def field_of(m: re.Match) -> str:
            c = m.group(1)
            return {"s": str(size), "n": arg, "F": type_name, "%": "%",
                    "a": {"dir": "771", "file": "660", "blk": "600", "chr": "666"}[kind],
                    "u": "0" if not path.startswith("/sdcard") else "10000"}.get(c, "?")
        io.say(re.sub(r"%(.)", field_of, fmt) + "\n")
    return status


STATFS_FORMAT = ("  File: \"%n\"\n    ID: %i Namelen: %l    Type: %T\nBlock Size: %s    "
                 "Fundamental block size: %S\nBlocks: Total: %b\tFree: %f\tAvailable: %a\n"
                 "Inodes: Total: %c\tFree: %d")


def _fs_figures(path: str, io: IO) -> dict[str, str]:
    """statfs(2) of the file system holding ``path``, as `stat -f` format fields."""
    if path.startswith(("/data", "/sdcard", "/storage")):
        table = io.ctx.storage.table
        total, free, avail = io.ctx.storage.size, table.free_bytes(), table.available_bytes()
        kind, magic = ("ext2/ext3", "ef53") if path.startswith("/data") else ("fuse", "65735546")
    else:  # the read-only system image
        total, free, avail = 3029204 * 1024, 9176 * 1024, 9176 * 1024
        kind, magic = "ext2/ext3", "ef53"
    blocks = total // 4096
    return {"b": str(blocks), "f": str(free // 4096), "a": str(avail // 4096), "s": "4096",
            "S": "4096", "c": str(blocks // 4), "d": str(blocks // 8), "i": "0", "l": "255",
            "t": magic, "T": kind, "%": "%"}


def _statfs(paths: list[str], fmt: str | None, io: IO) -> int:
    """`stat -f`: the file system's figures; the shell uid may statfs /data without
    being allowed to list it."""
    status = 0
    for arg in paths:
        path = io.vfs.norm(arg)
        if io.vfs.kind(path) is None and not io.vfs._private(path):
            io.complain(f"stat: {arg}: No such file or directory\n")
            status = 1
            continue
        figures = {**_fs_figures(path, io), "n": arg}
        io.say(re.sub(r"%(.)", lambda m, f=figures: f.get(m.group(1), "?"),
                      fmt or STATFS_FORMAT) + "\n")
    return status


@applet("blockdev")
def _blockdev(argv: list[str], io: IO) -> int:
    ops = [a for a in argv[1:] if a.startswith("--")]
    devs = [a for a in argv[1:] if not a.startswith("--")]
    known = {"--getsize64", "--getsize", "--getss", "--getbsz", "--getro", "--flushbufs",
             "--getpbsz", "--getiomin", "--getioopt", "--getalignoff", "--getmaxsect",
             "--getsz"}
    if not ops or not devs or set(ops) - known:
        io.complain("blockdev: Need --option and device\n" if not (set(ops) - known) else
                    f"blockdev: Unknown option '{sorted(set(ops) - known)[0]}'\n")
        return 1
    status = 0
    for arg in devs:
        path = io.vfs.norm(arg)
        part = io.vfs.block_partition(path)
        if not io.root and (part or path.startswith("/dev/block")):
            io.complain(f"blockdev: {arg}: Permission denied\n")
            status = 1
            continue
        if not part:
            reason = "Inappropriate ioctl for device" if io.vfs.kind(path) else \
                "No such file or directory"
            io.complain(f"blockdev: {arg}: {reason}\n")
            status = 1
            continue
        if "--flushbufs" in ops:
            if not io.ctx.storage.profile.access.flushbufs:  # an SELinux denial of BLKFLSBUF
                io.complain(f"blockdev: {arg}: Permission denied\n")
                status = 1
                continue
            io.ctx.storage.drop_caches()
        size = io.ctx.storage.partition_size(part)
        for op in ops:
            value = {"--getsize64": size, "--getsize": size // 512, "--getsz": size // 512,
                     "--getss": 4096, "--getpbsz": 4096, "--getbsz": 4096, "--getro": 0,
                     "--getiomin": 4096, "--getioopt": 0, "--getalignoff": 0,
                     "--getmaxsect": 1024}.get(op)
            if value is not None:
                io.say(f"{value}\n")
    return status


def _df_line(fs: str, total_kib: int, avail_kib: int, mount: str,
             used_kib: int | None = None) -> str:
    used = max(0, total_kib - avail_kib) if used_kib is None else used_kib
    pct = -(-used * 100 // (used + avail_kib)) if (used + avail_kib) else 0
    return f"{fs:<16} {total_kib:>9} {used:>8} {avail_kib:>9} {pct:>3}% {mount}"


@applet("df")
def _df(argv: list[str], io: IO) -> int:
    storage = io.ctx.storage
    total = storage.size // 1024
    avail = storage.table.available_bytes() // 1024  # the reserved share is not available
    used = total - storage.table.free_bytes() // 1024
    rows = {
        "/": _df_line("/dev/block/dm-0", 3029204, 9176, "/"),
        "/dev": _df_line("tmpfs", 2868524, 2866944, "/dev"),
        "/data": _df_line("/dev/block/dm-48", total, avail, "/data", used),
        "/storage/emulated": _df_line("/data/media", total, avail, "/storage/emulated", used),
    }
    args = [a for a in argv[1:] if not a.startswith("-")]
    header = "Filesystem       1K-blocks     Used Available Use% Mounted on"
    if not args:
        io.say("\n".join([header, *rows.values()]) + "\n")
        return 0
    out = [header]
    status = 0
    for arg in args:
        path = io.vfs.norm(arg)
        if io.vfs.kind(path) is None and not io.vfs._private(path):
            io.complain(f"df: {arg}: No such file or directory\n")
            status = 1
            continue
        if path == "/sdcard" or path.startswith("/sdcard/"):
            out.append(rows["/storage/emulated"])
        elif path == "/data" or path.startswith("/data/") or path.startswith("/cache"):
            out.append(rows["/data"])
        elif path.startswith("/dev"):
            out.append(rows["/dev"])
        else:
            out.append(rows["/"])
    if len(out) > 1:
        io.say("\n".join(out) + "\n")
    return status


@applet("test", "[")
def _test(argv: list[str], io: IO) -> int:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            io.complain("[: missing ]\n")
            return 2
        args = args[:-1]
    negate = False
    if args and args[0] == "!":
        negate, args = True, args[1:]
    vfs = io.vfs

    def kind_of(p: str) -> str | None:
        try:
            return vfs.lookup(vfs.norm(p))
        except OSError:
            return None

    try:
        if not args:
            result = False
        elif len(args) == 1:
            result = bool(args[0])
        elif len(args) == 2:
            op, operand = args
            if op == "-z":
                result = operand == ""
            elif op == "-n":
                result = operand != ""
            elif op == "-e":
                result = kind_of(operand) is not None
            elif op == "-f":
                result = kind_of(operand) == "file"
            elif op == "-d":
                result = kind_of(operand) == "dir"
            elif op == "-b":
                result = kind_of(operand) == "blk"
            elif op == "-c":
                result = kind_of(operand) == "chr"
            elif op == "-s":
                result = kind_of(operand) == "file" and vfs.size(vfs.norm(operand)) > 0
            elif op in ("-r", "-w"):
                path = vfs.norm(operand)
                result = kind_of(operand) is not None
                if result and op == "-w":
                    try:
                        vfs.check_write(path)
                    except OSError:
                        result = kind_of(operand) == "blk" and io.root
            elif op == "-x":
                result = kind_of(operand) == "dir"
            else:
                io.complain(f"test: {op}: unknown operator\n")
                return 2
        elif len(args) == 3:
            a, op, b = args
            if op in ("=", "=="):
                result = a == b
            elif op == "!=":
                result = a != b
            elif op in ("-eq", "-ne", "-gt", "-lt", "-ge", "-le"):
                x, y = int(a), int(b)
                result = {"-eq": x == y, "-ne": x != y, "-gt": x > y, "-lt": x < y,
                          "-ge": x >= y, "-le": x <= y}[op]
            else:
                io.complain(f"test: {op}: unknown operator\n")
                return 2
        else:
            io.complain("test: too many arguments\n")
            return 2
    except ValueError:
        io.complain("test: bad number\n")
        return 2
    return 0 if result != negate else 1


@applet("which")
def _which(argv: list[str], io: IO) -> int:
    status = 0
    for name in argv[1:]:
        if name.startswith("-"):
            continue
        if _resolve(name, io) is None or name in ("cd", "exit", ":"):
            status = 1
            continue
        io.say(f"/system/bin/{name}\n")
    return status


_NOT_TOYBOX = {"su", "cmd", "dumpsys", "service", "locksettings", "sh", "mksh", "toybox", "cd",
               "exit", ":", "[", "reboot", "setprop"}


@applet("toybox")
def _toybox(argv: list[str], io: IO) -> int:
    if len(argv) == 1:
        io.say(" ".join(sorted(set(APPLETS) - _NOT_TOYBOX)) + "\n")
        return 0
    if argv[1] not in APPLETS or argv[1] in _NOT_TOYBOX:
        io.complain(f"toybox: Unknown command {argv[1]}\n")
        return 1
    return _dispatch(argv[1:], io)


@applet("uname")
def _uname(argv: list[str], io: IO) -> int:
    if "-a" in argv:
        io.say("Linux localhost 5.10.198-android13-4 #1 SMP PREEMPT Mon Jan 1 00:00:00 UTC 2024 "
               "aarch64 Toybox\n")
    elif "-m" in argv:
        io.say("aarch64\n")
    else:
        io.say("Linux\n")
    return 0


# -- Android services ---------------------------------------------------------------------------


@applet("dumpsys")
def _dumpsys(argv: list[str], io: IO) -> int:
    state = io.ctx.storage.state
    if len(argv) < 2:
        io.say("Currently running services:\n  account\n  battery\n  device_policy\n"
               "  iphonesubinfo\n  lock_settings\n")
        return 0
    service = argv[1]
    if service == "account":
        lines = ["User UserInfo{0:Owner:c13}:", f"  Accounts: {len(state.google_accounts)}"]
        lines += [f"    Account {{name={a}, type=com.google}}" for a in state.google_accounts]
        lines += ["", "  AccountId, Action_Type, timestamp, UID, TableName, Key", "",
                  "  Active Sessions: 0", ""]
        io.say("\n".join(lines) + "\n")
        return 0
    if service == "device_policy":
        lines = ["Current Device Policy Manager state:", "  Immutable state:",
                 "    mHasFeature=true", "    mIsWatch=false", "    mIsAutomotive=false",
                 "    mHasTelephonyFeature=true", "    mSafetyChecker=null"]
        if state.device_owner:
            package = state.device_owner.split("/", 1)[0]
            lines += ["Device Owner: ", f"  admin=ComponentInfo{{{state.device_owner}}}",
                      "  name=", f"  package={package}", "  isOrganizationOwnedDevice=true",
                      "  User ID: 0"]
        lines += ["", "  Enabled Device Admins (User 0, provisioningState: "
                  f"{3 if state.device_owner else 0}):"]
        if state.device_owner:
            lines.append(f"    {state.device_owner}:")
        io.say("\n".join(lines) + "\n")
        return 0
    if service == "battery":
        io.say("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
               "  Wireless powered: false\n  Max charging current: 500000\n"
               "  Charge counter: 3811000\n  status: 2\n  health: 2\n  present: true\n"
               "  level: 85\n  scale: 100\n  voltage: 4180\n  temperature: 260\n"
               "  technology: Li-ion\n")
        return 0
    io.complain(f"Can't find service: {service}\n")
    return 0


@applet("locksettings")
def _locksettings(argv: list[str], io: IO) -> int:
    state = io.ctx.storage.state
    sub = argv[1] if len(argv) > 1 else ""
    if sub == "verify":
        if not state.screen_lock:
            io.say("Lock credential verified successfully\n")
            return 0
        io.complain("Old password provided does not match\n")
        return 1
    if sub == "get-disabled":
        io.say("false\n" if state.screen_lock else "true\n")
        return 0
    if sub == "clear":
        if state.screen_lock:
            io.complain("Old password provided does not match\n")
            return 1
        io.say("Lock credential cleared\n")
        return 0
    io.complain(f"Unknown command: {sub}\n" if sub else
                "usage: locksettings [--old <CREDENTIAL>] COMMAND\n")
    return 1


@applet("cmd")
def _cmd(argv: list[str], io: IO) -> int:
    storage = io.ctx.storage
    if len(argv) < 2:
        io.complain("cmd: No service specified; use -l to list all running services. "
                    "Use -w to start and wait for a service.\n")
        return 20
    service = argv[1]
    if service == "testharness" and storage.profile.device.sdk >= 29:
        sub = argv[2] if len(argv) > 2 else ""
        if sub != "enable":
            io.complain("Test Harness Mode commands:\n  help\n    Print this help text.\n\n"
                        "  enable|restore\n    Erase all data from this device and enable "
                        "Test Harness Mode,\n    preserving the stored ADB key currently on "
                        "the device and then\n    rebooting the device.\n")
            return 0 if sub == "help" else 255
        if storage.state.screen_lock:
            io.complain("Test Harness Mode cannot be enabled if there is a lock screen\n")
            return 1
        if io.ctx.events:
            io.ctx.events("testharness")
        return 0
    io.complain(f"cmd: Can't find service: {service}\n")
    return 1 if service == "testharness" else 20


def _parcel_dump(data: bytes) -> str:
    """Format a Parcel the way `service call` prints it."""
    data = data + bytes(-len(data) % 4)
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    if len(data) <= 16:
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
        return f"Result: Parcel({' '.join(f'{w:08x}' for w in words)}   '{text}')"
    lines = ["Result: Parcel("]
    for off in range(0, len(data), 16):
        row = words[off // 4:off // 4 + 4]
        chunk = data[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        hexes = " ".join(f"{w:08x}" for w in row)
        lines.append(f"  0x{off:08x}: {hexes:<35} '{text:<16}'")
    lines[-1] += ")"
    return "\n".join(lines)


def _parcel_string16(text: str | None) -> bytes:
    if text is None:
        return struct.pack("<i", -1)
    encoded = text.encode("utf-16-le") + b"\0\0"
    encoded += bytes(-len(encoded) % 4)
    return struct.pack("<i", len(text)) + encoded


@applet("service")
def _service(argv: list[str], io: IO) -> int:
    if len(argv) >= 2 and argv[1] == "list":
        io.say("Found 4 services:\n0\taccount: [android.accounts.IAccountManager]\n"
               "1\tdevice_policy: [android.app.admin.IDevicePolicyManager]\n"
               "2\tiphonesubinfo: [com.android.internal.telephony.IPhoneSubInfo]\n"
               "3\tlock_settings: [com.android.internal.widget.ILockSettings]\n")
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        found = argv[2] in ("account", "device_policy", "iphonesubinfo", "lock_settings")
        io.say(f"Service {argv[2]}: {'found' if found else 'not found'}\n")
        return 0
    if len(argv) < 4 or argv[1] != "call":
        io.complain("Usage: service [-h|-?]\n       service list\n       service check SERVICE\n"
                    "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR "
                    "| null | fd f | nfd n | afd f ] ...\n")
        return 1
    name, code = argv[2], argv[3]
    if name != "iphonesubinfo":
        io.complain(f"service: Service {name} does not exist\n")
        return 255
    imei = io.ctx.storage.profile.device.imei
    if code in ("1", "4") and imei:
        io.say(_parcel_dump(struct.pack("<i", 0) + _parcel_string16(imei)) + "\n")
        return 0
    message = ("getDeviceId: The user 2000 does not meet the requirements to access device "
               "identifiers." if code in ("1", "4") else "Unknown transaction code")
    io.say(_parcel_dump(struct.pack("<i", -1) + _parcel_string16(message)
                        + struct.pack("<i", 0)) + "\n")
    return 0


@applet("reboot")
def _reboot(argv: list[str], io: IO) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    target = args[0] if args else ""
    if target not in ("", "bootloader", "recovery", "fastboot"):
        target = ""
    if io.ctx.events:
        io.ctx.events("reboot:" + ("bootloader" if target == "fastboot" else target))
    return 0
