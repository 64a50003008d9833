"""The emulated shell's file applets: cat, the digests, touch, mkdir, rm, ls, stat
(and stat -f), blockdev, df."""
from __future__ import annotations

import errno
import hashlib
import posixpath
import re

from .shell_context import CHUNK
from .shell_interp import IO, applet
from .shell_vfs import BUILTIN_DIRS, Source, _err, _oserror_text, _StreamSource


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
        fields = {"s": str(size), "n": arg, "F": type_name, "%": "%",
                  "a": {"dir": "771", "file": "660", "blk": "600", "chr": "666"}[kind],
                  "u": "0" if not path.startswith("/sdcard") else "10000"}
        io.say(_format_fields(fmt, fields) + "\n")
    return status


def _format_fields(fmt: str, fields: dict[str, str]) -> str:
    """A `stat -c`/`stat -f` format with each %X replaced by its field ("?" when unknown)."""
    return re.sub(r"%(.)", lambda m: fields.get(m.group(1), "?"), fmt)


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
        io.say(_format_fields(fmt or STATFS_FORMAT, figures) + "\n")
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
