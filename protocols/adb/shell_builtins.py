"""The emulated shell's builtins and small toybox applets: true, false, exit, cd, echo,
sleep, sync, sh, test/[, which, toybox, uname."""
from __future__ import annotations

import errno
import re

from .shell_context import SH, Cancelled, _Exit
from .shell_interp import (
    APPLETS,
    IO,
    _dispatch,
    _read_all,
    _resolve,
    _run_script,
    applet,
)
from .shell_vfs import _err, _oserror_text


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
