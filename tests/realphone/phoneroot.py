"""A phone's root file system for chroot: mksh as /system/bin/sh, busybox for the toybox
commands, device nodes, and the Android-only commands (getprop, su, dumpsys, service, cmd,
locksettings, reboot) as small shell scripts answering the way a phone does.

`build_root` makes the tree from a `PhoneSpec`; `mounted` mounts the kernel's file systems
(/proc, /sys, and /data when the spec names a data device) for as long as the phone runs.
An unrooted phone is the same tree with ``rooted=False`` (no su) run as uid 2000 with /data
on a real ext4 and /sdcard -> /data/media/0 (unrooted.py builds one).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SHELL_UID = 2000
# Android's ids (android_filesystem_config.h) this tier uses
AIDS = {"root": 0, "system": 1000, "input": 1004, "log": 1007, "adb": 1011, "sdcard_rw": 1015,
        "media_rw": 1023, "sdcard_r": 1028, "reserved_disk": 1065, "shell": SHELL_UID,
        "inet": 3003, "readproc": 3009}
SHELL_GROUPS = tuple(AIDS[g] for g in ("input", "log", "adb", "sdcard_rw", "sdcard_r", "inet",
                                       "readproc"))
"""The supplementary groups adbd gives the shell uid: sdcard_rw for /sdcard, never
reserved_disk (the blocks a file system keeps back are out of its reach)."""
PERSIST_PROPS = "/data/property/persist.prop"  # getprop: these override prop.default
APPLETS = ("blockdev", "cat", "chmod", "cp", "dd", "df", "grep", "head", "id", "ln", "ls",
           "mkdir", "mv", "rm", "rmdir", "sed", "sleep", "stat", "sync", "tail", "touch",
           "true", "false", "wc")
DIRS = ("system/bin", "system/etc", "dev/block/by-name", "proc", "sys", "data", "cache",
        "etc", "tmp")


@dataclass(frozen=True)
class PhoneSpec:
    props: dict[str, str]
    imei: str
    userdata: tuple[int, int]  # major, minor of the block device behind by-name/userdata
    rooted: bool = True
    google_accounts: tuple[str, ...] = ()
    data_device: tuple[int, int] | None = None  # a real ext4 to mount on /data (unrooted)
    extra_nodes: dict[str, tuple[int, int]] = field(default_factory=dict)  # by-name -> dev
    toybox_dd: bool = False  # dd refuses iflag=direct (EINVAL) as a phone's toybox dd does

    @property
    def uid(self) -> int:
        return 0 if self.rooted else SHELL_UID


def find_binaries() -> dict[str, str | None]:
    """The host binaries a phone root is made of (None where missing)."""
    return {"mksh": shutil.which("mksh-static") or shutil.which("mksh"),
            "busybox": shutil.which("busybox")}


def build_root(root: Path, spec: PhoneSpec) -> Path:
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    binaries = find_binaries()
    _install_binary(root, binaries["mksh"], "system/bin/sh")
    _install_binary(root, binaries["busybox"], "system/bin/busybox")
    for applet in APPLETS:
        (root / "system/bin" / applet).symlink_to("busybox")
    _make_nodes(root, spec)
    _write_accounts(root)
    (root / "system/etc/prop.default").write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(spec.props.items())))
    for name, text in _scripts(spec).items():
        _script(root / "system/bin" / name, text)
    if spec.toybox_dd:
        (root / "system/bin/dd").unlink()
        _script(root / "system/bin/dd", TOYBOX_DD)
    if not spec.rooted:
        (root / "sdcard").symlink_to("/data/media/0")
        (root / "cache").chmod(0o1777)  # where the Android-only scripts leave their requests
    return root


def _install_binary(root: Path, source: str | None, dest: str) -> None:
    """Copy a binary; a dynamic one brings the shared libraries it needs."""
    if source is None:
        raise FileNotFoundError(f"no binary for /{dest}")
    shutil.copy2(source, root / dest)
    if subprocess.run(["ldd", source], capture_output=True).returncode != 0:
        return  # static
    ldd = subprocess.run(["ldd", source], capture_output=True, text=True, check=True)
    for line in ldd.stdout.splitlines():
        parts = line.split()
        lib = next((p for p in parts if p.startswith("/")), None)
        if lib and os.path.exists(lib):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, target)


def _make_nodes(root: Path, spec: PhoneSpec) -> None:
    char = {"null": (1, 3), "zero": (1, 5), "urandom": (1, 9), "random": (1, 8)}
    for name, (major, minor) in char.items():
        os.mknod(root / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(root / "dev" / name, 0o666)  # past the umask: the shell uid uses them too
    block = {"userdata": spec.userdata, **spec.extra_nodes}
    for name, (major, minor) in block.items():
        os.mknod(root / "dev/block/by-name" / name, 0o600 | stat.S_IFBLK,
                 os.makedev(major, minor))


def _write_accounts(root: Path) -> None:
    (root / "etc/passwd").write_text(f"root:x:0:0:root:/:/system/bin/sh\n"
                                     f"shell:x:{SHELL_UID}:{SHELL_UID}:shell:/:/system/bin/sh\n")
    (root / "etc/group").write_text("".join(
        f"{name}:x:{gid}:{'shell' if gid in SHELL_GROUPS else ''}\n"
        for name, gid in AIDS.items()))


def _script(path: Path, body: str) -> None:
    path.write_text("#!/system/bin/sh\n" + body.lstrip("\n"))
    path.chmod(0o755)


# -- the Android-only commands ------------------------------------------------------------
def _scripts(spec: PhoneSpec) -> dict[str, str]:
    scripts = {"getprop": GETPROP, "dumpsys": _dumpsys(spec.google_accounts),
               "service": _service(spec.imei), "cmd": CMD, "locksettings": LOCKSETTINGS,
               "reboot": REBOOT}
    if spec.rooted:
        scripts["su"] = SU
    return scripts


GETPROP = r"""
files="%s /system/etc/prop.default"  # a persistent property overrides the build's
if [ $# -eq 0 ]; then
    for props in $files; do
        [ -r $props ] || continue
        while IFS='=' read -r key value; do echo "[$key]: [$value]"; done < $props
    done
    exit 0
fi
for props in $files; do
    [ -r $props ] || continue
    while IFS='=' read -r key value; do
        if [ "$key" = "$1" ]; then echo "$value"; exit 0; fi
    done < $props
done
echo "$2"
""" % PERSIST_PROPS

TOYBOX_DD = r"""
# toybox dd reads into an unaligned buffer: with iflag=direct the kernel answers EINVAL
# (busybox's dd would get past the page cache; a phone's dd does not)
for arg; do
    case $arg in
    iflag=*direct*)
        input=stdin
        for a; do case $a in if=*) input=${a#if=} ;; esac; done
        echo "dd: $input: Invalid argument" >&2
        exit 1 ;;
    esac
done
exec /system/bin/busybox dd "$@"
"""

SU = r"""
# Magisk-style su: the phone's shell already runs as root on this profile
while [ $# -gt 0 ]; do
    case $1 in
    -c|--command) shift; exec /system/bin/sh -c "$*" ;;
    -|-l|--login|-p|-mm|--mount-master|0|root) shift ;;
    *) echo "su: invalid uid/gid '$1'" >&2; exit 2 ;;
    esac
done
exec /system/bin/sh
"""

CMD = r"""
case "$1 $2" in
"testharness enable")
    mkdir -p /cache && echo enable > /cache/testharness-requested; exit 0 ;;
"testharness "*) echo "Test Harness Mode commands:" >&2; exit 255 ;;
esac
echo "cmd: Can't find service: $1" >&2
exit 20
"""

LOCKSETTINGS = r"""
case $1 in
verify) echo "Lock credential verified successfully" ;;
get-disabled) echo true ;;
clear) echo "Lock credential cleared" ;;
*) echo "usage: locksettings [--old <CREDENTIAL>] COMMAND" >&2; exit 1 ;;
esac
"""

REBOOT = r"""
# no init to reboot: leave the request where a test can see it
echo "${1:-normal}" > /cache/reboot-requested
"""


def _dumpsys(accounts: tuple[str, ...]) -> str:
    listed = "".join(f'    echo "    Account {{name={a}, type=com.google}}"\n' for a in accounts)
    return f"""
case $1 in
account)
    echo "User UserInfo{{0:Owner:c13}}:"
    echo "  Accounts: {len(accounts)}"
{listed}    echo ""
    echo "  Active Sessions: 0" ;;
device_policy)
    echo "Current Device Policy Manager state:"
    echo "  Immutable state:"
    echo "    mHasFeature=true"
    echo ""
    echo "  Enabled Device Admins (User 0, provisioningState: 0):" ;;
*) echo "Can't find service: $1" >&2 ;;
esac
"""


def _service(imei: str) -> str:
    answer = parcel_dump(struct.pack("<i", 0) + _string16(imei))
    return f"""
if [ "$1" = call ] && [ "$2" = iphonesubinfo ] && [ "$3" = 1 ]; then
    cat <<'EOF'
{answer}
EOF
    exit 0
fi
echo "service: Service $2 does not exist" >&2
exit 255
"""


def _string16(text: str) -> bytes:
    encoded = text.encode("utf-16-le") + b"\0\0"
    return struct.pack("<i", len(text)) + encoded + bytes(-len(encoded) % 4)


def parcel_dump(data: bytes) -> str:
    """A Parcel as `service call` prints it: rows of four little-endian words and text."""
    data += bytes(-len(data) % 4)
    lines = ["Result: Parcel("]
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        words = " ".join(f"{int.from_bytes(chunk[i:i + 4], 'little'):08x}"
                         for i in range(0, len(chunk), 4))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"  0x{off:08x}: {words:<35} '{text:<16}'")
    return "\n".join(lines) + ")"


# -- kernel file systems ------------------------------------------------------------------
@contextlib.contextmanager
def mounted(root: Path, spec: PhoneSpec) -> Iterator[Path]:
    """/proc and /sys (and /data from the spec's data device) mounted under ``root``; every
    mount made is lazily unmounted on the way out, whatever happened."""
    done: list[Path] = []
    try:
        for fstype, target in (("proc", root / "proc"), ("sysfs", root / "sys")):
            _mount(["-t", fstype, fstype, str(target)], target, done)
        data = root / "data"
        if spec.data_device is not None:
            node = root / "dev/block/data"
            os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(*spec.data_device))
            _mount(["-t", "ext4", str(node), str(data)], data, done)
        else:  # a mount point of its own, so that `df /data` answers
            _mount(["--bind", str(data), str(data)], data, done)
        yield root
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _mount(args: list[str], target: Path, done: list[Path]) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)
    done.append(target)
