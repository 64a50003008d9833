"""The adb sync service (push, pull, stat, list) of a phone whose shell runs in a chroot: the
files it reads and writes are the real ones in that chroot, reached as the shell uid.

`ChrootFiles` is an `EmulatedAdbd.sync_files` factory: each ``sync:`` stream gets a worker
process (this file run as a script) that imports what it needs, chroots into the phone's
root, drops to the shell's uid, gid and groups, and then serves file operations over its
stdin/stdout. The kernel checks every permission, symlinks (``/sdcard``) resolve inside the
chroot, and a push follows adbd's file_sync_service: unlink a regular file in the way, create
it with O_EXCL and the SEND spec's mode, make missing parents (0775) and retry, fchmod.

Messages are pickles with a 4-byte length in front, between two processes of the test run.
"""
from __future__ import annotations

import errno
import os
import pickle
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct("<I")


def _send(pipe: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(HEADER.pack(len(data)) + data)
    pipe.flush()


def _receive(pipe: BinaryIO) -> Any:
    head = pipe.read(HEADER.size)
    if len(head) < HEADER.size:
        raise EOFError
    (length,) = HEADER.unpack(head)
    data = pipe.read(length)
    if len(data) < length:
        raise EOFError
    return pickle.loads(data)


# -- the host side (in the adbd's process) ---------------------------------------------------
class ChrootFiles:
    """Factory of the sync service's files inside ``root`` as ``uid``/``gid``/``groups``."""

    def __init__(self, root: Path, uid: int, gid: int | None = None,
                 groups: tuple[int, ...] = ()) -> None:
        self.root = root.resolve()
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.groups = tuple(groups)

    def __call__(self) -> WorkerFiles:
        return WorkerFiles(self)


class WorkerFiles:
    """One sync stream's files: calls into a worker process (see the module docstring)."""

    def __init__(self, spec: ChrootFiles) -> None:
        groups = ",".join(map(str, spec.groups)) or "-"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(spec.root), str(spec.uid), str(spec.gid), groups],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _call(self, *request: Any) -> Any:
        _send(self.proc.stdin, request)
        answer = _receive(self.proc.stdout)
        if answer[0] == "err":
            raise OSError(answer[1], answer[2])
        return answer[1]

    def stat(self, path: str, follow: bool = True) -> Any:
        from phonewipe.protocols.adb.emulator import (
            SyncStat,  # not in the worker: it runs as a script
        )
        return SyncStat(**self._call("stat", path, follow))

    def entries(self, path: str) -> list[tuple[str, Any]]:
        from phonewipe.protocols.adb.emulator import SyncStat
        return [(name, SyncStat(**fields)) for name, fields in self._call("entries", path)]

    def open_read(self, path: str) -> _Handle:
        return _Handle(self, self._call("open_read", path))

    def create(self, path: str, mode: int) -> _Handle:
        return _Handle(self, self._call("create", path, mode))

    def remove(self, path: str) -> None:
        self._call("remove", path)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class _Handle:
    def __init__(self, files: WorkerFiles, fd: int) -> None:
        self.files = files
        self.fd = fd

    def read(self, n: int) -> bytes:
        return self.files._call("read", self.fd, n)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.files._call("write", self.fd, bytes(data))

    def close(self) -> None:
        self.files._call("close", self.fd)


# -- the worker (in the chroot, as the shell uid) ----------------------------------------------
def _fields(st: os.stat_result) -> dict[str, int]:
    return {"mode": st.st_mode, "size": st.st_size, "mtime": int(st.st_mtime), "error": 0,
            "dev": st.st_dev, "ino": st.st_ino, "nlink": st.st_nlink, "uid": st.st_uid,
            "gid": st.st_gid}


def _stat(path: str, follow: bool) -> dict[str, int]:
    try:
        return _fields(os.stat(path) if follow else os.lstat(path))
    except OSError as exc:  # adbd answers a failed stat with its errno and zeros
        return {"error": exc.errno or errno.ENOENT, "dev": 0}


def _entries(path: str) -> list[tuple[str, dict[str, int]]]:
    try:
        names = os.listdir(path)
    except OSError:
        return []  # adbd: opendir failed, DONE only
    return [(name, _stat(os.path.join(path, name), follow=False))
            for name in [".", ".."] + sorted(names)]


def _mkdirs(directory: str) -> None:
    """adbd's secure_mkdirs: each missing component with mode 0775."""
    parts, path = [p for p in directory.split("/") if p], ""
    for part in parts:
        path += "/" + part
        try:
            os.mkdir(path, 0o775)
        except FileExistsError:
            pass


def _create(path: str, mode: int) -> int:
    if stat.S_ISLNK(mode):
        raise OSError(errno.EOPNOTSUPP, "symlink pushes are not supported here")
    mode &= 0o777
    try:
        if stat.S_ISREG(os.lstat(path).st_mode) or stat.S_ISLNK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileNotFoundError:
        _mkdirs(os.path.dirname(path))
        fd = os.open(path, flags, mode)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)  # the umask does not apply: adbd sets the mode it was sent
    except OSError:
        pass
    return fd


def _read(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        data = os.read(fd, left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


OPERATIONS = {"stat": _stat, "entries": _entries, "open_read": lambda p: os.open(p, os.O_RDONLY),
              "create": _create, "read": _read, "write": _write, "close": os.close,
              "remove": _remove}


def serve(root: str, uid: int, gid: int, groups: list[int]) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    os.chroot(root)
    os.chdir("/")
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    while True:
        try:
            name, *args = _receive(stdin)
        except EOFError:
            return
        try:
            answer: tuple = ("ok", OPERATIONS[name](*args))
        except OSError as exc:
            answer = ("err", exc.errno or errno.EIO, exc.strerror or str(exc))
        _send(stdout, answer)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
          [] if sys.argv[4] == "-" else [int(g) for g in sys.argv[4].split(",")])
