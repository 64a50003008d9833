"""The shell service of the emulated adbd as real processes: each command runs as
``chroot ROOT /system/bin/sh -c CMD`` with the adb stream as its stdin, its stdout and
stderr sent back as they come, and its own exit status.

The calling thread (the adbd stream's worker) is the only one writing output; stdin is fed
from a helper thread, so a command that reads its stdin to the end (``dd of=...``) and one
that never reads it both work.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable

from phonewipe.protocols.adb import shell

Writer = Callable[[bytes | bytearray | memoryview], None]
READ_CHUNK = 256 * 1024
PATH = "/system/bin:/system/xbin"


class ChrootShell:
    """A `shell_runner` for `EmulatedAdbd`: commands run in ``root`` as ``uid`` (with
    ``groups`` as its supplementary groups, as adbd gives the shell uid)."""

    def __init__(self, root: Path, uid: int = 0, gid: int | None = None,
                 groups: tuple[int, ...] = ()) -> None:
        self.root = root.resolve()
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.groups = tuple(groups)
        self.chroot = shutil.which("chroot") or "/usr/sbin/chroot"

    def __call__(self, command: str, stdin: shell.Reader, stdout: Writer, stderr: Writer,
                 cancelled: threading.Event) -> int:
        proc = subprocess.Popen(
            [self.chroot, f"--userspec={self.uid}:{self.gid}",
             *([f"--groups={','.join(map(str, self.groups))}"] if self.groups else []),
             str(self.root), "/system/bin/sh", "-c", command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": PATH, "HOME": "/", "ANDROID_DATA": "/data"}, cwd="/",
            start_new_session=True)
        feeder = threading.Thread(target=_feed, args=(stdin, proc), daemon=True,
                                  name=f"chroot-stdin-{proc.pid}")
        feeder.start()
        try:
            _pump(proc, {proc.stdout: stdout, proc.stderr: stderr}, cancelled)
            status = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        finally:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
        return status if status >= 0 else 128 - status


def _feed(stdin: shell.Reader, proc: subprocess.Popen) -> None:
    """The adb stream's stdin into the process, then EOF; stops when the process does."""
    pipe = proc.stdin
    try:
        while True:
            data = stdin.read(READ_CHUNK)
            if not data:
                break
            pipe.write(data)
    except (BrokenPipeError, ValueError, EOFError, shell.Cancelled):
        pass  # the process exited without reading it all, or the stream went away
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _pump(proc: subprocess.Popen, writers: dict, cancelled: threading.Event) -> None:
    """Output to the stream until both pipes are at EOF."""
    with selectors.DefaultSelector() as sel:
        for pipe in writers:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            if cancelled.is_set():
                raise shell.Cancelled()
            for key, _ in sel.select(timeout=0.5):
                data = os.read(key.fd, READ_CHUNK)
                if data:
                    writers[key.fileobj](data)
                else:
                    sel.unregister(key.fileobj)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
