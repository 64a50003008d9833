"""The emulated shell's interpreter: command lists, pipelines (one thread per stage over
bounded pipes), word expansion and globbing, redirections, and dispatch to the applets
(registered with `applet`) or to a pushed program the emulator knows (phonewipe-pwread)."""
from __future__ import annotations

import collections
import errno
import logging
import posixpath
import re
import threading
from typing import Callable

from phonewipe.erase.emulation.faults import DeviceUnplugged

from .shell_context import (
    CHUNK,
    EXIT_KILLED,
    EXIT_NOT_FOUND,
    EXIT_PIPE,
    SH,
    BytesReader,
    Cancelled,
    Reader,
    ShellContext,
    Writer,
    _discard,
    _Exit,
    properties,
)
from .shell_pwread import PWREAD_MARK, _pwread
from .shell_syntax import Pipeline, ShellSyntaxError, Simple, Word, parse
from .shell_vfs import Sink, Vfs

log = logging.getLogger("phonewipe.protocols.adb.shell")


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
            for _thread, pipe, _ in stages:
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
    if len(word) == 1 and word[0].kind == "lit":
        text = word[0].text  # the common case: one literal, nothing to expand
        if word[0].quoted or ("*" not in text and "?" not in text and "[" not in text):
            return [text]
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
        # fds maps 0 to a reader and 1, 2 to writers: the redirections above keep that
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
