"""The block plugin on real kernel block devices: loop devices the tests attach, some over a
FUSE medium (tests/realphone/medium.py) that drops writes, fails reads or is slow. Every
erase goes through `phonewipe erase` as a user runs it. Needs root, loop devices, FUSE and
libfuse 3 (skipped on a user's machine, a failure under CI)."""
from __future__ import annotations

import ctypes.util
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from realphone.medium import LyingMedium
from realphone.phone import BLOCK, contiguous_drop, make_medium_image
from realphone.tier import missing

from phonewipe.erase.emulation.personal import planted_markers

pytestmark = pytest.mark.interop
SIZE = 16 * 2**20
MARKERS = planted_markers()


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    for name, package in {"losetup": "mount", "mkfs.ext4": "e2fsprogs", "mount": "mount",
                          "fusermount3": "fuse3"}.items():
        if shutil.which(name) is None:
            missing(f"{name} is not installed (Debian: apt-get install {package})")
    if os.geteuid() != 0:
        missing("needs root (loop devices, mounts)")
    if not Path("/dev/loop-control").exists():
        missing("no loop devices (/dev/loop-control)")
    if not Path("/dev/fuse").exists() or not ctypes.util.find_library("fuse3"):
        missing("no FUSE with libfuse 3 (Debian: apt-get install fuse3)")
    if importlib.util.find_spec("mfusepy") is None:
        missing("the Python package mfusepy is not installed (pip install mfusepy)")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phonewipe.certificates.keys import init_keys
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, "Test Org", "block tests")
    return directory


@contextmanager
def loop_device(image: Path, partscan: bool = False, read_only: bool = False) -> Iterator[str]:
    args = ["losetup", "--find", "--show", *(["--partscan"] if partscan else []),
            *(["--read-only"] if read_only else []), str(image)]
    node = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield node
    finally:
        subprocess.run(["losetup", "--detach", node], capture_output=True)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s
    for _ in range(50):  # a detach while something has the device open completes on its close
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        if str(tmp_path) not in loops:
            break
        time.sleep(0.1)
    assert str(tmp_path) not in loops, f"a loop device was left behind: {loops}"
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text(), "a mount was left"


def used_image(path: Path, drops: list[tuple[int, int]] = ()) -> Path:
    make_medium_image(path, SIZE, list(drops))
    return path


def surviving(image: Path) -> list[bytes]:
    data = image.read_bytes()
    return [m for m in MARKERS if m in data]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def erase(node: str, keys: Path, out: Path, *extra: str, allow: bool = True,
          method: str = "block-pattern", verify: str = "quick") -> tuple[int, dict | None, str]:
    """`phonewipe erase NODE` against the block plugin alone: (exit code, result, stderr).
    A node the block plugin does not list is looked for through every plugin: adb's on a
    private port, whose server is stopped afterwards (not the user's 5037)."""
    from phonewipe.demo import free_port
    from phonewipe.protocols.adb.server import AdbServer
    home = out.parent / "home"
    (home / ".config" / "phonewipe").mkdir(parents=True, exist_ok=True)
    adb = AdbServer(port=free_port())
    (home / ".config" / "phonewipe" / "config.toml").write_text(f"[adb]\nport = {adb.port}\n")
    flags = ["--allow-internal", node] if allow else []  # alias of --block-allow-internal
    try:
        result = subprocess.run(
            [sys.executable, "-m", "phonewipe", *flags, *extra, "erase", node, "--out", str(out),
             "--keys", str(keys), "--operator", "Test Operator", "--organization", "Test Org",
             "--method", method, "--verify", verify, "--json"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(home)})
    finally:
        adb.stop()
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    entry = data[0] if isinstance(data, list) else None
    return result.returncode, entry, result.stderr


# -- a honest medium (an eMMC in a reader) ------------------------------------------------------
@pytest.mark.parametrize("method", ["block-pattern", "block-zeros"])
def test_honest_medium_is_erased_and_verified(keys: Path, stack: ExitStack, tmp_path: Path,
                                              method: str) -> None:
    image = used_image(tmp_path / "emmc.img")
    assert len(surviving(image)) == len(MARKERS)
    node = stack.enter_context(loop_device(image))
    code, entry, _ = erase(node, keys, tmp_path / "out", method=method)
    assert entry is not None and (code, entry["outcome"]) == (0, "ERASED_VERIFIED"), entry
    assert entry["method"] == method and entry["certificate"]
    assert surviving(image) == []


# -- a liar: acknowledges every write, keeps 1 % of the old data -------------------------------
@pytest.mark.parametrize("verify", ["quick", "nist"])
def test_medium_keeping_one_percent_fails(keys: Path, stack: ExitStack, tmp_path: Path,
                                          verify: str) -> None:
    drop = contiguous_drop(SIZE, 0.01)
    backing = used_image(tmp_path / "backing.img", [drop])
    medium = stack.enter_context(LyingMedium(backing, tmp_path / "fuse", [drop]))
    node = stack.enter_context(loop_device(medium.path))
    code, entry, _ = erase(node, keys, tmp_path / "out", verify=verify)
    assert surviving(backing), "the medium should still hold planted data in its dropped range"
    assert entry is not None and entry["outcome"] == "FAILED", f"false {entry}"
    assert code == 12 and "verification failed" in entry["reason"]


# -- refusals: one line, nothing written --------------------------------------------------------
def test_mounted_device_is_refused_untouched(keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    image = used_image(tmp_path / "card.img")
    node = stack.enter_context(loop_device(image))
    _mkfs(node)
    mountpoint = tmp_path / "mnt"
    _mount(stack, node, mountpoint)
    before = digest(image)
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (11, "BLOCKED"), entry
    assert "is mounted" in entry["reason"] and str(mountpoint) in entry["reason"]
    assert "\n" not in entry["reason"]
    assert digest(image) == before


def _with_partition(image: Path) -> None:
    """An MBR with one Linux partition from 1 MiB to the end."""
    start, count = 2048, SIZE // 512 - 2048
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + start.to_bytes(4, "little") + \
        count.to_bytes(4, "little")
    with open(image, "r+b") as f:
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")


def _partition_node(node: str) -> str | None:
    for _ in range(50):
        if Path(f"{node}p1").exists():
            return f"{node}p1"
        time.sleep(0.04)
    return None


def test_device_with_a_mounted_partition_is_refused_untouched(keys: Path, stack: ExitStack,
                                                               tmp_path: Path) -> None:
    image = used_image(tmp_path / "card.img")
    _with_partition(image)
    node = stack.enter_context(loop_device(image, partscan=True))
    part = _partition_node(node)
    if part is None:  # a kernel capability, not an install: skipped under CI too
        pytest.skip("this kernel reads no partition tables (see the stand-in test below)")
    _mkfs(part)
    _mount(stack, part, tmp_path / "mnt")
    before = digest(image)
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (11, "BLOCKED"), entry
    assert "is mounted" in entry["reason"]
    assert digest(image) == before


def test_a_mounted_partition_refuses_its_disk(stack: ExitStack, tmp_path: Path) -> None:
    """Stand-in for kernels without partition tables: a second loop device plays the disk's
    partition (its device number is what the check compares with the mount table)."""
    from phonewipe.protocols.block.disks import find_disk
    from phonewipe.protocols.block.safety import refusal
    disk_node = stack.enter_context(loop_device(used_image(tmp_path / "disk.img")))
    part_node = stack.enter_context(loop_device(used_image(tmp_path / "part.img")))
    _mkfs(part_node)
    disk = find_disk(disk_node)
    assert disk is not None
    assert refusal(disk, {disk_node}) is None
    _mount(stack, part_node, tmp_path / "mnt")
    refused = refusal(replace(disk, partitions=(part_node,)), {disk_node})
    assert refused is not None and refused.code == "block-mounted"
    assert str(tmp_path / "mnt") in refused.message


def test_a_device_mounted_in_another_mount_namespace_is_refused_untouched(
        keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    """A mount this process's table does not show (a container's, a private namespace's):
    the kernel's exclusive claim finds it, so it is BLOCKED before anything, not a FAILED
    certificate for a disk left untouched."""
    if shutil.which("unshare") is None:
        missing("unshare is not installed (Debian: apt-get install util-linux)")
    image = used_image(tmp_path / "card.img")
    node = stack.enter_context(loop_device(image))
    _mkfs(node)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -o noinit_itable {node} {mountpoint} && echo mounted && exec sleep 600"],
        stdout=subprocess.PIPE, text=True)
    stack.callback(holder.wait, 30)
    stack.callback(holder.kill)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "mounted"
    assert str(mountpoint) not in Path("/proc/self/mountinfo").read_text()
    before = digest(image)
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (11, "BLOCKED"), entry
    assert "another mount namespace" in entry["reason"] and "\n" not in entry["reason"]
    assert digest(image) == before


def test_a_write_protected_card_is_refused_untouched(keys: Path, stack: ExitStack,
                                                    tmp_path: Path) -> None:
    """An SD card's lock switch (here a read-only loop device): BLOCKED with what to do, not
    a FAILED certificate saying the medium is failing."""
    image = used_image(tmp_path / "card.img")
    node = stack.enter_context(loop_device(image, read_only=True))
    before = digest(image)
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (11, "BLOCKED"), entry
    assert "is read-only" in entry["reason"] and "lock switch" in entry["reason"]
    assert digest(image) == before


def _mkfs(node: str) -> None:
    """ext4 that writes nothing in the background once mounted (inode tables and journal
    initialised now), so the checksum sees only what the erase would write."""
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    node], check=True, capture_output=True)


def _mount(stack: ExitStack, node: str, mountpoint: Path) -> None:
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "noinit_itable", node, str(mountpoint)], check=True)
    stack.callback(subprocess.run, ["umount", str(mountpoint)], capture_output=True)
    subprocess.run(["sync", "-f", str(mountpoint)], check=True)


def test_loop_device_not_named_is_not_listed(keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    """A fixed disk or loop device is erased only when --block-allow-internal names it."""
    image = used_image(tmp_path / "disk.img")
    node = stack.enter_context(loop_device(image))
    before = digest(image)
    code, entry, stderr = erase(node, keys, tmp_path / "out", allow=False)
    assert code == 3 and entry is None and "no device" in stderr
    assert digest(image) == before


# -- a failing medium and a slow one ------------------------------------------------------------
def test_unreadable_blocks_fail_verification(keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    backing = used_image(tmp_path / "backing.img")
    medium = stack.enter_context(LyingMedium(backing, tmp_path / "fuse",
                                             fails=[(SIZE // 2, 64 * BLOCK)]))
    node = stack.enter_context(loop_device(medium.path))
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (12, "FAILED"), entry
    assert "verification failed" in entry["reason"]


@pytest.mark.parametrize("where", [SIZE // 4, SIZE // 4 + 2**20])  # either pattern writer's
def test_a_write_error_fails_the_erase_in_one_line(keys: Path, stack: ExitStack,
                                                   tmp_path: Path, where: int) -> None:
    backing = used_image(tmp_path / "backing.img")
    medium = stack.enter_context(LyingMedium(backing, tmp_path / "fuse",
                                             write_fails=[(where, BLOCK)]))
    node = stack.enter_context(loop_device(medium.path))
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (12, "FAILED"), entry
    assert "write failed (Input/output error)" in entry["reason"], entry["reason"]
    assert "destroy it" in entry["reason"] and "\n" not in entry["reason"]


def test_slow_medium_is_erased_and_verified(keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    backing = used_image(tmp_path / "backing.img")
    medium = stack.enter_context(LyingMedium(backing, tmp_path / "fuse", slow_mib_s=8))
    node = stack.enter_context(loop_device(medium.path))
    code, entry, _ = erase(node, keys, tmp_path / "out")
    assert entry is not None and (code, entry["outcome"]) == (0, "ERASED_VERIFIED"), entry
    assert surviving(backing) == []


# -- a Lumia in mass-storage mode: identity from its label --------------------------------------
def test_lumia_in_mass_storage_mode_is_certified_with_operator_entered_identity(
        keys: Path, stack: ExitStack, tmp_path: Path) -> None:
    image = used_image(tmp_path / "lumia.img")
    node = stack.enter_context(loop_device(image))
    out = tmp_path / "out"
    code, entry, _ = erase(node, keys, out, "--block-manufacturer", "Nokia", "--block-model",
                           "Lumia 920", "--block-imei", "356938035643809",
                           "--block-asset-tag", "ACME-0042")
    assert entry is not None and (code, entry["outcome"]) == (0, "ERASED_VERIFIED"), entry
    assert (entry["manufacturer"], entry["model"]) == ("Nokia", "Lumia 920")
    shown = subprocess.run([sys.executable, "-m", "phonewipe", "cert", "show", "--json",
                            entry["certificate"]], capture_output=True, text=True, check=True)
    record = json.loads(shown.stdout)
    assert record["device"]["imeis"] == ["356938035643809"]
    assert record["asset_tag"] == "ACME-0042"  # what `find`, reports and asset lists go by
    entered = record["sanitization"]["details"]["operator_entered"]
    assert entered == {"imeis": ["356938035643809"], "asset_tag": "ACME-0042",
                       "manufacturer": "Nokia", "model": "Lumia 920"}


@pytest.mark.parametrize("imei", ["356938035643808", "35693803564380", "35693803564380x"])
def test_a_mistyped_imei_is_refused_in_one_line_before_the_disk_is_touched(
        keys: Path, stack: ExitStack, tmp_path: Path, imei: str) -> None:
    """A label misread (wrong check digit, a digit short, a letter) never reaches a
    certificate: exit 2, one line, the disk as it was."""
    image = used_image(tmp_path / "lumia.img")
    node = stack.enter_context(loop_device(image))
    before = digest(image)
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "phonewipe", "--allow-internal", node, "--block-imei", imei,
         "erase", node, "--out", str(tmp_path / "out"), "--keys", str(keys), "--operator",
         "Test Operator", "--organization", "Test Org", "--method", "block-pattern"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"--block-imei '{imei}' is not a valid IMEI" in lines[0], lines
    assert digest(image) == before and not (tmp_path / "out").exists()


def test_an_imei_typed_with_spaces_is_kept_as_its_digits() -> None:
    from phonewipe.erase.plugin import PluginOptions
    from phonewipe.protocols.block import BlockPlugin
    plugin = BlockPlugin(PluginOptions({"block_imei": ["35 693803 564380 9"]}))
    assert plugin.entered().imeis == ("356938035643809",)


# -- the plugin itself: re-identification just before writing, the system disk -----------------
def _session(node: str) -> tuple[object, object]:
    from phonewipe.erase.plugin import PluginOptions
    from phonewipe.protocols.block import BlockPlugin
    plugin = BlockPlugin(PluginOptions({"block_scan": False, "block_allow_internal": [node]}))
    [endpoint] = [e for e in plugin.discover() if e.address == node]
    return plugin, plugin.open(endpoint)


def test_a_device_swapped_after_the_checks_is_not_written(stack: ExitStack, tmp_path: Path) -> None:
    from phonewipe.erase.errors import PhonewipeError
    from phonewipe.erase.pattern import new_key
    from phonewipe.erase.plugin import EraseContext
    from phonewipe.protocols.block.session import PATTERN
    first = used_image(tmp_path / "first.img")
    node = stack.enter_context(loop_device(first))
    _, session = _session(node)
    identity = session.identify()
    assert identity.serial and identity.capacity_bytes == SIZE
    assert not [f for f in session.preflight() if f.severity.value == "blocker"]
    other = used_image(tmp_path / "other.img")
    subprocess.run(["losetup", "--detach", node], check=True)
    subprocess.run(["losetup", node, str(other)], check=True)  # another medium, same node
    before = digest(other)
    with pytest.raises(PhonewipeError, match="nothing was written"):
        session.erase(PATTERN, EraseContext(new_key()), lambda done, total: None)
    assert digest(other) == before


def test_a_medium_attached_anew_after_the_checks_is_not_written(stack: ExitStack,
                                                                tmp_path: Path) -> None:
    """A card reader keeps its serial when its card is swapped for one of the same size: the
    kernel's disk sequence number, read from sysfs and from the opened device, tells."""
    from phonewipe.erase.errors import PhonewipeError
    from phonewipe.erase.pattern import new_key
    from phonewipe.erase.plugin import EraseContext
    from phonewipe.protocols.block import directio
    from phonewipe.protocols.block.session import PATTERN
    image = used_image(tmp_path / "card.img")
    node = stack.enter_context(loop_device(image))
    _, session = _session(node)
    session.identify()
    fd = os.open(node, os.O_RDONLY)
    try:
        assert directio.disk_sequence(fd) == session.disk.diskseq > 0
    finally:
        os.close(fd)
    before = digest(image)
    checked = session.disk
    session.disk = replace(checked, diskseq=checked.diskseq - 1)  # the card that was checked
    with pytest.raises(PhonewipeError, match="attached anew since it was checked"):
        session.erase(PATTERN, EraseContext(new_key()), lambda done, total: None)
    session._current = lambda: session.disk  # the sysfs look agrees: the opened device tells
    with pytest.raises(PhonewipeError, match="attached anew since it was checked"):
        session.erase(PATTERN, EraseContext(new_key()), lambda done, total: None)
    assert digest(image) == before


def test_a_disk_claimed_between_the_overwrite_and_the_read_back_is_not_said_untouched(
        stack: ExitStack, tmp_path: Path) -> None:
    from phonewipe.erase.errors import PhonewipeError
    from phonewipe.erase.pattern import new_key
    from phonewipe.erase.plugin import EraseContext
    from phonewipe.protocols.block.session import ZEROS
    node = stack.enter_context(loop_device(used_image(tmp_path / "card.img")))
    _, session = _session(node)
    session.identify()
    session.erase(ZEROS, EraseContext(new_key()), lambda done, total: None)
    holder = os.open(node, os.O_RDONLY | os.O_EXCL)
    try:
        with pytest.raises(PhonewipeError, match="after the overwrite") as raised:
            list(session.readback().read_many([(0, 4096)]))
        assert "nothing was written" not in str(raised.value)
    finally:
        os.close(holder)


def test_the_disk_holding_the_running_system_is_refused(stack: ExitStack, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from phonewipe.protocols.block import safety
    node = stack.enter_context(loop_device(used_image(tmp_path / "root.img")))
    st = os.stat(node)
    monkeypatch.setattr(safety, "_root_devno", lambda: (os.major(st.st_rdev), os.minor(st.st_rdev)))
    _, session = _session(node)
    findings = session.preflight()
    assert [f.code for f in findings if f.severity.value == "blocker"] == ["block-system-disk"]


def test_discovery_reports_what_the_host_knows(stack: ExitStack, tmp_path: Path) -> None:
    node = stack.enter_context(loop_device(used_image(tmp_path / "disk.img")))
    _, session = _session(node)
    identity = session.identify()
    assert (identity.manufacturer, identity.model) == ("Linux", "loop device")
    assert identity.capacity_bytes == SIZE and identity.serial.startswith("LOOP-")
    codes = {f.code for f in session.preflight()}
    assert "block-sanitize-not-offered" in codes and "operator-entered" not in codes


def test_a_loop_device_is_asked_for_sanitize_and_honestly_not_offered_one(
        stack: ExitStack, tmp_path: Path) -> None:
    """The SG_IO ioctl really goes to the loop device, which takes no SCSI command: the
    preflight says so in one line and the methods stay the verified overwrites."""
    node = stack.enter_context(loop_device(used_image(tmp_path / "disk.img")))
    _, session = _session(node)
    session.identify()
    [finding] = [f for f in session.preflight() if f.code == "block-sanitize-not-offered"]
    assert finding.message.startswith(f"Sanitize (Purge) not offered: {node} takes no SCSI "
                                      "commands (SG_IO: "), finding.message
    assert "\n" not in finding.message
    assert [m.name for m in session.methods()] == ["block-pattern", "block-zeros"]
