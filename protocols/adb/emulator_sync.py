"""The emulated adbd's ``sync:`` service (push, pull, stat, list: STAT, STA2, LST2, LIST,
LIS2, RECV, SEND), served from a `SyncFiles`: by default the handset's emulated storage
(`EmulatedSyncFiles`), or what the daemon's ``sync_files`` hook makes (e.g. real files)."""
from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat as stat_mod
import struct
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Protocol

from . import shell, wire
from .emulator_streams import _Output, _RawStdin

if TYPE_CHECKING:
    from .emulator import EmulatedAdbd

log = logging.getLogger("phonewipe.protocols.adb.emulator")


@dataclass(frozen=True)
class SyncStat:
    """One file as the sync service reports it (STAT, STA2/LST2, DENT/DNT2); ``error`` is the
    errno of a failed stat (the other fields then as the wire sends them)."""

    mode: int = 0
    size: int = 0
    mtime: int = 0
    error: int = 0
    dev: int = 0x10302
    ino: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0


class SyncSource(Protocol):
    def read(self, n: int) -> bytes | bytearray | memoryview: ...


class SyncSink(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...


class SyncFiles(Protocol):
    """The files the sync service (push/pull/stat/list) reads and writes, one object per
    ``sync:`` stream; paths arrive as the host sent them. Failures raise OSError."""

    def stat(self, path: str, follow: bool = True) -> SyncStat:
        """``follow``: stat (STA2) rather than lstat (STAT, LST2), as adbd does."""
        ...

    def entries(self, path: str) -> list[tuple[str, SyncStat]]:
        """A directory's entries, "." and ".." first; empty when it cannot be listed."""
        ...

    def open_read(self, path: str) -> SyncSource: ...

    def create(self, path: str, mode: int) -> SyncSink:
        """Open for a push (SEND): parents made as needed, ``mode`` from the SEND spec."""
        ...

    def remove(self, path: str) -> None:
        """Unlink a push that could not be finished."""
        ...

    def close(self) -> None: ...


SyncFilesFactory = Callable[[], SyncFiles]
"""Makes the file access of one ``sync:`` stream (e.g. real files as the shell uid would see
them) instead of the handset's emulated storage."""


SYNC_BATCH = 1024 * 1024  # sync DATA is written to storage in batches of this size


def serve_sync(out: _Output, rd: _RawStdin, files: SyncFiles, ctx: shell.ShellContext,
               address: str) -> None:
    """One ``sync:`` stream's requests (STAT, STA2, LST2, LIST, LIS2, RECV, SEND) until QUIT
    or end of input, served from ``files``."""
    ids = wire.SYNC_IDS
    while True:
        try:
            request = rd.read_exact(8)
        except EOFError:
            break
        rid, length = struct.unpack("<II", request)
        if rid == ids[b"QUIT"]:
            break
        if rid not in (ids[b"STAT"], ids[b"STA2"], ids[b"LST2"], ids[b"LIST"],
                       ids[b"LIS2"], ids[b"SEND"], ids[b"RECV"]):
            _sync_fail(out, f"unknown sync request 0x{rid:08x}")
            break
        if length > wire.SYNC_PATH_MAX:
            _sync_fail(out, "path too long")
            break
        path = rd.read_exact(length).decode("utf-8", "replace")
        log.debug("adbd %s: sync %s %s", address, struct.pack("<I", rid).decode(), path)
        if rid == ids[b"STAT"]:
            st = files.stat(path, follow=False)
            out.raw(wire.STAT_V1.pack(b"STAT", st.mode, st.size & 0xFFFFFFFF, st.mtime))
        elif rid in (ids[b"STA2"], ids[b"LST2"]):
            st = files.stat(path, follow=rid == ids[b"STA2"])
            name = b"STA2" if rid == ids[b"STA2"] else b"LST2"
            out.raw(wire.STAT_V2.pack(name, st.error, st.dev, st.ino, st.mode, st.nlink,
                                      st.uid, st.gid, st.size, st.mtime, st.mtime, st.mtime))
        elif rid in (ids[b"LIST"], ids[b"LIS2"]):
            _sync_list(out, files, path, v2=rid == ids[b"LIS2"])
        elif rid == ids[b"RECV"]:
            if not _sync_recv(out, files, path, ctx):
                break
        elif rid == ids[b"SEND"]:
            if not _sync_send(out, rd, files, path):
                break
    out.flush()

def _ino(path: str) -> int:
    return (hash(path) & 0xFFFFFF) + 1000

def _sync_list(out: _Output, files: SyncFiles, path: str, v2: bool) -> None:
    for name, st in files.entries(path):
        encoded = name.encode()
        if v2:
            out.raw(wire.DENT_V2.pack(b"DNT2", st.error, st.dev, st.ino, st.mode, st.nlink,
                                      st.uid, st.gid, st.size, st.mtime, st.mtime, st.mtime,
                                      len(encoded)) + encoded)
        else:
            out.raw(wire.DENT_V1.pack(b"DENT", st.mode, st.size & 0xFFFFFFFF, st.mtime,
                                      len(encoded)) + encoded)
    if v2:
        out.raw(wire.DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    else:
        out.raw(wire.DENT_V1.pack(b"DONE", 0, 0, 0, 0))

def _sync_fail(out: _Output, message: str) -> None:
    data = message.encode()
    out.raw(struct.pack("<4sI", b"FAIL", len(data)) + data)
    out.flush()

def _sync_recv(out: _Output, files: SyncFiles, path: str,
               ctx: shell.ShellContext) -> bool:
    try:
        source = files.open_read(path)
    except OSError as exc:
        _sync_fail(out, f"open failed: {exc.strerror}")
        return True
    while True:
        ctx.check()
        try:
            data = source.read(SYNC_BATCH)
        except OSError as exc:
            _sync_fail(out, f"read failed: {exc.strerror}")
            return False
        if not data:
            break
        view = memoryview(data)
        parts: list = []
        for off in range(0, len(view), wire.SYNC_DATA_MAX):
            piece = view[off:off + wire.SYNC_DATA_MAX]
            parts += [struct.pack("<4sI", b"DATA", len(piece)), piece]
        out.raw_parts(parts)
    out.raw(struct.pack("<4sI", b"DONE", 0))
    out.flush()
    return True

def _sync_send(out: _Output, rd: _RawStdin, files: SyncFiles, spec: str) -> bool:
    path, comma, mode_text = spec.rpartition(",")
    if not comma:
        _sync_fail(out, "missing , in ID_SEND")
        return False
    sink: SyncSink | None = None
    error = ""
    try:
        sink = files.create(path, _strtoul(mode_text))
    except OSError as exc:
        error = f"couldn't create file: {exc.strerror}"
    batch: list = []
    batched = 0

    def commit() -> None:
        nonlocal batch, batched
        if sink is not None and batch:
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            batch, batched = [], 0
            sink.write(data)

    while True:
        rid, length = struct.unpack("<II", rd.read_exact(8))
        if rid == wire.SYNC_IDS[b"DONE"]:
            break
        if rid != wire.SYNC_IDS[b"DATA"] or length > wire.SYNC_DATA_MAX:
            _sync_fail(out, "invalid data message")
            return False
        left = length
        while left:
            piece = rd.read(left)
            if not piece:
                raise EOFError
            left -= len(piece)
            if error:
                continue
            batch.append(piece)
            batched += len(piece)
        if not error and batched >= SYNC_BATCH:
            try:
                commit()
            except OSError as exc:
                error = f"write failed: {exc.strerror}"
                batch, batched = [], 0
    if not error:
        try:
            commit()
        except OSError as exc:
            error = f"write failed: {exc.strerror}"
    if error:
        if sink is not None:  # adbd unlinks what it could not finish
            files.remove(path)
        _sync_fail(out, error)
        return False
    if sink is not None:
        sink.close()
    out.raw(struct.pack("<4sI", b"OKAY", 0))
    out.flush()
    return True


def _strtoul(text: str) -> int:
    """The SEND spec's mode as adbd reads it (strtoul, base 0); 0 where it is no number."""
    text = text.strip()
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        return int(text, 8) if text.startswith("0") and len(text) > 1 else int(text)
    except ValueError:
        return 0


class EmulatedSyncFiles:
    """The sync service's files in the handset's emulated storage (the default `SyncFiles`):
    what the emulated shell sees, as adbd's shell uid, without modes or owners of its own."""

    def __init__(self, adbd: EmulatedAdbd, vfs: shell.Vfs) -> None:
        self.adbd = adbd
        self.vfs = vfs

    def _stat(self, full: str, ino: int, missing: SyncStat) -> SyncStat:
        vfs = self.vfs
        try:
            kind = vfs.lookup(full)
            size = vfs.size(full)
        except OSError as exc:
            return replace(missing, error=exc.errno or errno.ENOENT)
        mode = {"dir": stat_mod.S_IFDIR | 0o771, "file": stat_mod.S_IFREG | 0o660,
                "blk": stat_mod.S_IFBLK | 0o600, "chr": stat_mod.S_IFCHR | 0o666}[kind]
        return SyncStat(mode, size, int(time.time()), 0, ino=ino, nlink=1, uid=2000, gid=2000)

    def stat(self, path: str, follow: bool = True) -> SyncStat:  # no symlinks here
        return self._stat(self.vfs.norm(path), _ino(path), SyncStat())

    def entries(self, path: str) -> list[tuple[str, SyncStat]]:
        vfs = self.vfs
        full = vfs.norm(path)
        try:
            names = [".", ".."] + vfs.listdir(full)
        except OSError:
            names = []
        listed = []
        for name in names:
            child = full if name == "." else (posixpath.dirname(full) if name == ".." else
                                               posixpath.join(full, name))
            ino = _ino(child)
            listed.append((name, self._stat(child, ino, SyncStat(ino=ino, nlink=1, uid=2000,
                                                                 gid=2000))))
        return listed

    def open_read(self, path: str) -> SyncSource:
        return self.vfs.open_read(self.vfs.norm(path))

    def create(self, path: str, mode: int) -> SyncSink:
        vfs = self.vfs
        full = vfs.norm(path)
        if vfs.kind(full) == "dir":
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        vfs.check_write(full)
        parent = posixpath.dirname(full)
        while parent != "/" and vfs.kind(parent) is None:  # fixed_push_mkdir
            vfs.ctx.dirs.add(parent)
            parent = posixpath.dirname(parent)
        sink = vfs.open_write(full)
        sink.truncate()
        return sink

    def remove(self, path: str) -> None:
        self.vfs.remove(self.vfs.norm(path))
        self.adbd.storage.save()

    def close(self) -> None:
        pass
