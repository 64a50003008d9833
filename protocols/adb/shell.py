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

This module is the shell's public face; the parts live beside it, one job each:
`shell_context` (what a command reaches, `Cancelled`, the properties), `shell_syntax`
(lexer and parser), `shell_vfs` (the file system, sources and sinks), `shell_interp`
(lists, pipelines, expansion, redirections, dispatch), `shell_pwread` (the emulated
phonewipe-pwread), and the applets: `shell_builtins`, `shell_files`, `shell_dd`,
`shell_android` (importing them here registers them).
"""
from __future__ import annotations

from . import shell_android, shell_builtins, shell_dd, shell_files  # noqa: F401  (registers)
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
    properties,
)
from .shell_files import STATFS_FORMAT
from .shell_interp import APPLETS, ELF_MACHINES, EXEC_DIR, IO, applet, run
from .shell_pwread import PWREAD_MARK
from .shell_syntax import (
    AndOr,
    Pipeline,
    Redir,
    Seg,
    ShellSyntaxError,
    Simple,
    Word,
    parse,
)
from .shell_vfs import (
    BLOCK_NAMES,
    BUILTIN_DIRS,
    CHAR_DEVICES,
    DROP_CACHES,
    PARTITION_NUMBERS,
    READ_ONLY_ROOTS,
    RECOVERY_COMMAND,
    SHELL_WRITABLE,
    Sink,
    Source,
    Vfs,
)

__all__ = [
    "BLOCK_NAMES", "BUILTIN_DIRS", "CHAR_DEVICES", "DROP_CACHES", "ELF_MACHINES", "EXEC_DIR",
    "PARTITION_NUMBERS", "READ_ONLY_ROOTS", "RECOVERY_COMMAND", "SHELL_WRITABLE", "STATFS_FORMAT",
    "APPLETS", "CHUNK", "EXIT_KILLED", "EXIT_NOT_FOUND", "EXIT_PIPE", "IO", "PWREAD_MARK", "SH",
    "AndOr", "BytesReader", "Cancelled", "Pipeline", "Reader", "Redir", "Seg", "ShellContext",
    "ShellSyntaxError", "Simple", "Sink", "Source", "Vfs", "Word", "Writer", "applet", "parse",
    "properties", "run",
]
