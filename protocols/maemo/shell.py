"""The emulated N900's shell: the few BusyBox 1.10 commands (ash, dd, cat, echo, id, sync)
and Maemo tools (`sudo gainroot`, `sysinfoclient`, `dbus-send` to the phone's SIM service)
that the maemo plugin runs, over the core's emulated storage as ``/dev/mmcblk0``.

Commands are read one line at a time from the channel, so a command that reads standard
input (`dd of=...`) gets the bytes that follow its line, as on the phone. Each line is
words, ``;`` and ``&&``, and the redirections ``>&2``, ``2>&1``, ``2>/dev/null`` and
``> FILE``."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from .shell_dd import run_dd

USER_UID = 29999  # Maemo's "user"
BLOCK = 4096


class Channel(Protocol):
    async def readline(self) -> bytes: ...
    async def read(self, n: int) -> bytes: ...
    def out(self, data: bytes) -> None: ...
    def err(self, data: bytes) -> None: ...


@dataclass
class Phone:
    """What the shell serves: the storage and the strings of the phone's software."""

    storage: Any  # erase.emulation.storage.HandsetStorage
    software_version: str
    product: str
    imei: str
    gainroot: bool = True  # the rootsh package is installed
    # /home (ext3 on mmcblk0p2) is mounted read-write until SysRq "u" remounts every file
    # system read-only; while it is, its journal commits land on the eMMC after a dd
    home_writable: bool = True

    def home_offset(self) -> int:
        """Where /home's journal sits on the emulated eMMC (inside mmcblk0p2)."""
        size = self.storage.size
        return (size * 27 // 32 + size // 64) // 4096 * 4096


@dataclass
class Shell:
    phone: Phone
    channel: Channel
    root: bool = False
    _out: Callable[[bytes], None] = field(init=False)
    _err: Callable[[bytes], None] = field(init=False)

    async def run_script(self) -> int:
        """Read and run lines until EOF, `exit` or `exec`; the last command's status."""
        status = 0
        while True:
            line = await self.channel.readline()
            if not line:
                return status
            status, done = await self.run_line(line.decode(errors="replace"))
            if done:
                return status

    async def run_line(self, line: str) -> tuple[int, bool]:
        """(status, whether the shell ends: exit or exec)."""
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            self.channel.err(b"sh: syntax error: unterminated quoted string\n")
            return 2, False
        status, ends = 0, False
        for words, joiner in _commands(tokens):
            if joiner == "&&" and status != 0:
                continue
            if words and words[0] == "exec":
                words, ends = words[1:], True
            if words and words[0] == "exit":
                return int(words[1]) if len(words) > 1 and words[1].isdigit() else status, True
            status = await self.run_command(words)
            if ends:
                break
        return status, ends

    async def run_command(self, words: list[str]) -> int:
        words, out, err, target = _redirected(words, self.channel.out, self.channel.err)
        if target is not None:
            return self._write_file(target, words, err)
        if not words:
            return 0
        handler: Callable[[list[str], Callable[[bytes], None], Callable[[bytes], None]],
                          Awaitable[int]] | None = getattr(self, f"_cmd_{words[0].replace('-', '_')}",
                                                            None)
        if handler is None:
            err(f"sh: {words[0]}: not found\n".encode())
            return 127
        return await handler(words[1:], out, err)

    # -- files --------------------------------------------------------------------------
    def _file(self, path: str) -> bytes | None:
        storage = self.phone.storage
        if path == "/etc/osso_software_version":
            return f"{self.phone.software_version}\n".encode()
        if path == "/proc/partitions":
            total = storage.table_size("userdata") // 1024
            parts = [("mmcblk0p1", total * 27 // 32), ("mmcblk0p2", total * 4 // 32),
                     ("mmcblk0p3", total - total * 27 // 32 - total * 4 // 32 - 1)]
            rows = [("31", "0", "262144", "mtdblock0"), ("179", "0", str(total), "mmcblk0")]
            rows += [("179", str(i + 1), str(size), name) for i, (name, size) in enumerate(parts)]
            text = "major minor  #blocks  name\n\n" + "".join(
                f"{a:>4} {b:>7} {c:>10} {d}\n" for a, b, c, d in rows)
            return text.encode()
        return None

    def _write_file(self, path: str, words: list[str], err: Callable[[bytes], None]) -> int:
        if words[:1] != ["echo"]:
            err(b"sh: only echo redirects to a file here\n")
            return 1
        if path == "/proc/sys/vm/drop_caches":
            if not self.root or not self.phone.storage.profile.access.drop_caches:
                err(b"sh: can't create /proc/sys/vm/drop_caches: Permission denied\n")
                return 1
            self.phone.storage.drop_caches()
            return 0
        if path == "/proc/sysrq-trigger":
            if not self.root:
                err(b"sh: can't create /proc/sysrq-trigger: Permission denied\n")
                return 1
            if words[1:] == ["u"]:  # emergency remount of every file system read-only
                self.phone.home_writable = False
            return 0
        if path == "/dev/null":
            return 0
        err(f"sh: can't create {path}: Read-only file system\n".encode())
        return 1

    # -- commands ------------------------------------------------------------------------
    async def _cmd_echo(self, args: list[str], out: Callable, err: Callable) -> int:
        out((" ".join(args) + "\n").encode())
        return 0

    async def _cmd_cat(self, args: list[str], out: Callable, err: Callable) -> int:
        status = 0
        for path in args:
            data = self._file(path)
            if data is None:
                err(f"cat: can't open '{path}': No such file or directory\n".encode())
                status = 1
            else:
                out(data)
        return status

    async def _cmd_id(self, args: list[str], out: Callable, err: Callable) -> int:
        uid = 0 if self.root else USER_UID
        out(f"{uid}\n".encode() if args == ["-u"] else
            f"uid={uid}({'root' if self.root else 'user'})\n".encode())
        return 0

    async def _cmd_sync(self, args: list[str], out: Callable, err: Callable) -> int:
        return 0

    async def _cmd_umount(self, args: list[str], out: Callable, err: Callable) -> int:
        if not self.root:
            err(b"umount: can't umount: Operation not permitted\n")
            return 1
        return 0

    async def _cmd_sysinfoclient(self, args: list[str], out: Callable, err: Callable) -> int:
        if args == ["-p", "/component/product"]:
            out(f"{self.phone.product}\n".encode())
            return 0
        err(b"sysinfoclient: unknown key\n")
        return 1

    async def _cmd_dbus_send(self, args: list[str], out: Callable, err: Callable) -> int:
        if any(a.endswith("get_imei") for a in args):
            out(f'method return sender=:1.12 -> dest=:1.99 reply_serial=2\n'
                f'   string "{self.phone.imei}"\n'.encode())
            return 0
        err(b"Error org.freedesktop.DBus.Error.UnknownMethod\n")
        return 1

    async def _cmd_sudo(self, args: list[str], out: Callable, err: Callable) -> int:
        if args != ["gainroot"] or not self.phone.gainroot:
            err(b"Sorry, user user is not allowed to execute this command as root.\n")
            return 1
        out(b"Root shell enabled\n")
        return await Shell(self.phone, self.channel, root=True).run_script()

    async def _cmd_dd(self, args: list[str], out: Callable, err: Callable) -> int:
        return await run_dd(self, args, out, err)


def _discard(data: bytes) -> None:
    pass


def _commands(tokens: list[str]) -> list[tuple[list[str], str]]:
    """Words of each command and the operator before it (";" or "&&")."""
    commands: list[tuple[list[str], str]] = []
    words: list[str] = []
    joiner = ";"
    for token in tokens:
        if token in (";", "&&"):
            commands.append((words, joiner))
            words, joiner = [], token
        else:
            words.append(token)
    commands.append((words, joiner))
    return [(w, j) for w, j in commands if w]


def _redirected(words: list[str], out: Callable[[bytes], None], err: Callable[[bytes], None]
                ) -> tuple[list[str], Callable[[bytes], None], Callable[[bytes], None], str | None]:
    """The words without their redirections; where stdout and stderr go; a target file."""
    plain: list[str] = []
    target = None
    i = 0
    while i < len(words):
        word = words[i]
        fd2 = plain and plain[-1] == "2" and word in (">", ">&")
        if word in (">", ">&") and i + 1 < len(words):
            dest = words[i + 1]
            if fd2:
                plain.pop()
                err = out if dest == "1" else _discard if dest == "/dev/null" else err
            elif word == ">&" and dest == "2":
                out = err
            elif dest == "/dev/null":
                out = _discard
            else:
                target = dest
            i += 2
            continue
        plain.append(word)
        i += 1
    return plain, out, err, target
