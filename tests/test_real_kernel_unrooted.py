"""The unrooted erase (`adb-fill-reset`) against a real ext4 with a real shell: an unrooted
phone whose /data is a real ext4 (2 % reserved for the reserved_disk group) on a loop device
over a FUSE medium that may silently drop writes, its shell mksh + busybox as uid 2000 in a
chroot, adb sync reaching the same files as that uid (phonewipe-pwread is pushed for real and
runs natively), served by the emulated adbd to Debian's adb server, erased by the `phonewipe`
command. The fill meets the real ENOSPC, the read-back goes through the page cache unless
pwread reads past it, and `cmd testharness enable` formats /data (tests/realphone/unrooted.py).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from realphone import tier
from realphone.phone import BLOCK
from realphone.phoneroot import AIDS
from realphone.tier import check_prerequisites, missing
from realphone.unrooted import ABI, ABIS, UnrootedPhone, markers, unrooted_phone

from phonewipe.protocols.adb.server import AdbServer

pytestmark = pytest.mark.interop
adb, keys = tier.adb, tier.keys  # the module-wide adb server and signing key (fixtures)

LYING_SHARE = 0.01
HELPER_ON_PHONE = "/data/local/tmp/phonewipe-pwread"


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    check_prerequisites({"mkfs.ext4": "e2fsprogs", "tune2fs": "e2fsprogs", "dumpe2fs": "e2fsprogs",
                         "filefrag": "e2fsprogs"}, "loop devices, mounts, chroot, mkfs")
    if ABI not in ABIS.values():
        missing(f"no phonewipe-pwread build runs on this machine ({ABI})")
    if "ext4" not in Path("/proc/filesystems").read_text():
        missing("the kernel has no ext4")


@pytest.fixture
def phone(adb: AdbServer, tmp_path: Path) -> Iterator[Callable[[float], UnrootedPhone]]:
    """Factory: a connected unrooted phone whose medium drops ``share`` of userdata (0:
    honest). Afterwards nothing of it is left: no adb transport, mount, loop device, FUSE
    process, sync worker or chroot process."""
    with ExitStack() as stack:
        def make(share: float = 0.0) -> UnrootedPhone:
            started = stack.enter_context(unrooted_phone(tmp_path / "phone", share))
            stack.callback(adb.run, "disconnect", started.address)
            adb.connect(started.address)
            return started
        yield make
    _assert_nothing_left(tmp_path)


def _assert_nothing_left(tmp_path: Path) -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "a mount was left behind"
    loops = subprocess.run(["losetup", "-a"], check=False, capture_output=True,
                           text=True).stdout
    assert str(tmp_path) not in loops, f"a loop device was left behind: {loops}"
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(tmp_path).encode() in _read(p)]
    assert not left, f"processes were left behind: {[_read(p) for p in left]}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def _config(out: Path) -> Path:
    """Fill files of 16 MiB (bounded files: several on this 64 MiB phone)."""
    path = out.parent / "phonewipe.toml"
    path.write_text("[adb]\nfill_file_max = 16777216\nreboot_wait = 20\n")
    return path


def erase(adb: AdbServer, keys: Path, phone: UnrootedPhone, out: Path,
          verify: str) -> tuple[int, dict]:
    """`phonewipe erase --method adb-fill-reset` as a user runs it, against the private adb
    server."""
    home = out.parent / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "phonewipe", "--adb-port", str(adb.port), "--config",
         str(_config(out)), "erase", phone.address, "--out", str(out), "--keys", str(keys),
         "--operator", "Test Operator", "--organization", "Test Org",
         "--method", "adb-fill-reset", "--verify", verify,
         "--json"],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": str(home)})
    assert "Traceback" not in result.stderr, result.stderr
    [entry] = json.loads(result.stdout)
    return result.returncode, entry


def dropped_range_holds_markers(phone: UnrootedPhone) -> bool:
    """Whether the medium still stores owner's data inside the range it drops."""
    stored = phone.backing.read_bytes()
    return any(m in stored[start:start + length] for start, length in phone.drops
               for m in markers())


def record_of(entry: dict):
    from phonewipe.certificates.verify import show_certificate
    assert entry["certificate"], entry
    return show_certificate(Path(entry["certificate"]))


def reserved_blocks(device: str) -> int:
    """The ext4's reserved block count (for root and the reserved_disk group)."""
    out = subprocess.run(["dumpe2fs", "-h", device], check=True, capture_output=True,
                         text=True).stdout
    return next(int(line.split(":")[1]) for line in out.splitlines()
                if line.startswith("Reserved block count:"))


def report(name: str, **facts: object) -> None:
    """Facts for the run's log (pytest -s, or the captured output of a failure)."""
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in facts.items()))


# -- adb sync reaches the phone's real files, as the shell uid ------------------------------------
def test_adb_sync_reaches_the_phones_files_as_the_shell_uid(adb: AdbServer, phone,
                                                            tmp_path: Path) -> None:
    """Debian's adb push/pull (STA2, LST2, fixed_push_mkdir) and adbutils (STAT, LIST)."""
    ph = phone()
    device = adb.client().device(serial=ph.address)
    tool = tmp_path / "tool"
    tool.write_text("#!/system/bin/sh\necho pushed-and-run\n")
    tool.chmod(0o750)

    def push(source: Path, target: str) -> subprocess.CompletedProcess:
        return adb.run("-s", ph.address, "push", str(source), target)

    result = push(tool, "/data/local/tmp/tool")
    assert result.returncode == 0, result.stderr
    pushed = (ph.data / "local/tmp/tool").stat()
    assert (pushed.st_uid, stat.S_IMODE(pushed.st_mode)) == (2000, 0o750)  # the SEND mode
    assert device.shell("/data/local/tmp/tool").strip() == "pushed-and-run"

    result = push(tool, "/sdcard/Download/new/deeper/tool")  # parents made, /sdcard resolved
    assert result.returncode == 0, result.stderr
    deep = (ph.data / "media/0/Download/new/deeper/tool").stat()
    assert (deep.st_uid, deep.st_gid) == (2000, AIDS["sdcard_rw"])  # setgid /sdcard dirs

    result = push(tool, "/data/data/planted-by-adb")  # the kernel says no to uid 2000
    assert result.returncode != 0 and "Permission denied" in result.stdout + result.stderr
    assert not (ph.data / "data/planted-by-adb").exists()

    notes = next(i for i in ph.items if i.path == "/sdcard/Documents/notes.txt")
    result = adb.run("-s", ph.address, "pull", "/sdcard/Documents/notes.txt",
                     str(tmp_path / "notes.txt"))
    assert result.returncode == 0 and (tmp_path / "notes.txt").read_bytes() == notes.content
    private = next(i.path for i in ph.items if i.path.startswith("/data/data/"))
    result = adb.run("-s", ph.address, "pull", private, str(tmp_path / "private"))
    assert result.returncode != 0 and "Permission denied" in result.stdout + result.stderr

    assert stat.S_ISLNK(device.sync.stat("/sdcard").mode)  # STAT is an lstat, as in adbd
    listed = {entry.path for entry in device.sync.list("/sdcard/")}
    assert {".vault", "DCIM", "Download"} <= listed
    assert device.sync.read_bytes("/sdcard/Documents/notes.txt") == notes.content


# -- (a) honest medium: fill to ENOSPC, read back through pwread, PASS, nothing left ------------
def test_honest_ext4_is_filled_read_past_the_cache_and_verified(adb: AdbServer, keys: Path,
                                                                  phone, tmp_path: Path) -> None:
    honest = phone()
    sdcard = honest.data / "media/0"
    assert any(sdcard.iterdir()) and (sdcard / ".vault").is_dir()  # the owner's files
    code, entry = erase(adb, keys, honest, tmp_path / "out", "quick")
    assert (code, entry["outcome"]) == (0, "ERASED_VERIFIED"), entry
    record = record_of(entry)

    medium = record.evidence["readback"]["medium"]
    assert "phonewipe-pwread" in medium and ABI in medium and "O_DIRECT" in medium, medium

    # the fill met the real ENOSPC: the shell uid's share of the file system was used up
    assert honest.harness.least_available is not None
    assert honest.harness.least_available < 16 * BLOCK, honest.harness.least_available

    # what the phone held when it reset: no fill, none of the owner's files (hidden included)
    [before] = honest.harness.resets
    assert before.sdcard == [], before.sdcard
    assert set(before.local_tmp) <= {"phonewipe-pwread"}, before.local_tmp
    post = record.post_state
    assert post.get("returned_over_adb") and post.get("reset_observed"), post
    assert post.get("user_files") == [] and post.get("test_harness") is True, post

    details = record.sanitization.details
    reserved = reserved_blocks(honest.device) * BLOCK
    if "deleted_top_level_entries" in details:
        assert ".vault" in details["deleted_top_level_entries"], details
    if "fill_bytes" in details and "free_bytes_before" in details:
        assert 0 < details["free_bytes_before"] - details["fill_bytes"] < 1024 * 1024, details
    if "fill_files" in details and details.get("fill_file_max") == 16 * 1024 * 1024:
        assert details["fill_files"] > 1, details  # bounded files
    if details.get("reserved_bytes") is not None:
        # statfs f_bfree - f_bavail: the -m 2 share, and what ext4 keeps for its own metadata
        assert details["reserved_bytes"] >= reserved, (details["reserved_bytes"], reserved)
    if "not_reached" in details:
        assert "reserved" in details["not_reached"], details["not_reached"]
    report("honest", details=json.dumps(details, sort_keys=True), medium=medium,
           least_available=honest.harness.least_available, ext4_reserved=reserved,
           markers_left_on_medium=[m[:32].decode() for m in honest.surviving()],
           post_state=json.dumps(post, sort_keys=True))


# -- (b) a medium that drops a contiguous 1 % of the ext4 device: FAILED, never PASS ---------------
@pytest.mark.parametrize("verify", ["quick", "nist"])
def test_lying_medium_under_ext4_is_never_passed(adb: AdbServer, keys: Path, phone,
                                                  tmp_path: Path, verify: str) -> None:
    lying = phone(LYING_SHARE)
    code, entry = erase(adb, keys, lying, tmp_path / "out", verify)
    assert dropped_range_holds_markers(lying), "the dropped range should still hold old data"
    assert entry["outcome"] == "FAILED", (
        f"false {entry['result']}: the medium kept old data in {LYING_SHARE:.0%} of userdata "
        f"under the fill")
    assert code == 12
    record = record_of(entry)
    assert "phonewipe-pwread" in record.evidence["readback"]["medium"]
    assert record.verification.failures_total > 0
    report(f"lying-{verify}", reason=entry["reason"],
           failures=record.verification.failures_total,
           samples_read=record.verification.samples_read)


# -- (c) the helper is what makes (b) fail --------------------------------------------------------
def _shell(device, command: str) -> tuple[int, bytes]:
    out = device.shell2(command, encoding=None)
    return out.returncode, out.output


def _mapped_offset(host_file: Path, device_offset: int) -> int | None:
    """The offset in ``host_file`` whose block the file system stored at ``device_offset``
    of the device (filefrag's extent list), or None."""
    out = subprocess.run(["filefrag", "-e", "-b4096", str(host_file)], capture_output=True,
                         text=True, check=True).stdout
    block = device_offset // BLOCK
    for line in out.splitlines():
        parts = [p.strip() for p in line.replace("..", ":").split(":")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        logical, physical = int(parts[1]), int(parts[3])
        length = int(parts[5]) if len(parts) > 5 and parts[5].isdigit() else int(parts[2]) - logical + 1
        if physical <= block < physical + length:
            return (logical + block - physical) * BLOCK
    return None


def test_without_the_helper_the_fill_is_unverified_and_a_buffered_read_would_pass(
        adb: AdbServer, phone, tmp_path: Path, monkeypatch) -> None:
    from phonewipe.erase.audit import AuditLog
    from phonewipe.erase.job import JobSettings, run_job
    from phonewipe.erase.model import Outcome
    from phonewipe.erase.plugin import PluginOptions, load_plugins
    from phonewipe.protocols.adb import client_readback

    lying = phone(LYING_SHARE)
    device = adb.client().device(serial=lying.address)
    start, length = lying.drops[0]

    # a direct experiment: a file over the free space, read back buffered and through pwread
    helper = (client_readback.HELPER_BUILDS / f"phonewipe-pwread-{ABI}").read_bytes()
    device.sync.push(helper, HELPER_ON_PHONE, mode=0o755)
    on_phone = lying.data / "local/tmp/phonewipe-pwread"
    assert on_phone.read_bytes() == helper and on_phone.stat().st_uid == 2000
    assert on_phone.stat().st_mode & 0o777 == 0o755
    pattern = b"PHONEWIPE-FILL-PATTERN-".ljust(BLOCK, b"#")
    fill = "/sdcard/experiment.bin"
    with open(tmp_path / "pattern.bin", "wb") as f:  # pushed as the shell uid writes it
        f.write(pattern * (40 * 1024 * 1024 // BLOCK))
    device.sync.push(tmp_path / "pattern.bin", fill, mode=0o644)
    _shell(device, "sync")
    offset = _mapped_offset(lying.data / "media/0/experiment.bin", start + length // 2)
    assert offset is not None, "the experiment's file does not cover the dropped range"
    skip = offset // BLOCK
    status, buffered = _shell(device, f"dd if={fill} bs={BLOCK} skip={skip} count=1 2>/dev/null")
    assert status == 0 and buffered == pattern  # the page cache answers for the medium
    status, direct = _shell(device, f"{HELPER_ON_PHONE} {fill}:{offset}:{BLOCK}")
    assert status == 0 and len(direct) == BLOCK and direct != pattern  # the medium's old data
    stored = lying.backing.read_bytes()[start + length // 2:start + length // 2 + BLOCK]
    assert direct == stored
    _shell(device, f"rm -f {fill} {HELPER_ON_PHONE} && sync")
    report("buffered-vs-pwread", device_offset=start + length // 2, file_offset=offset,
           buffered=buffered[:24], pwread=direct[:24].hex())

    plugins = load_plugins(PluginOptions({"adb_port": adb.port, "reboot_wait": 20,
                                          "fill_file_max": 16 * 1024 * 1024}))

    def job(name: str):
        endpoint = next(e for e in plugins["adb"].discover() if e.address == lying.address)
        with AuditLog(tmp_path / f"audit-{name}.sqlite") as audit:
            return run_job(plugins["adb"], endpoint,
                           JobSettings(method="adb-fill-reset", verify_mode="quick"), audit)

    # the erase without a helper build: the client cannot get past the cache and says so
    builds = client_readback.HELPER_BUILDS
    monkeypatch.setattr(client_readback, "HELPER_BUILDS", tmp_path / "no-builds")
    record = job("no-helper")
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert f"no build for the phone's ABI {ABI}" in record.reason
    assert dropped_range_holds_markers(lying)
    report("no-helper", reason=record.reason)

    # what a buffered read-back (dd, no bypass) says of the same fill: the page cache answers
    # for the medium, a false PASS (the phone reset above: a fresh /data, the same medium)
    monkeypatch.setattr(client_readback, "HELPER_BUILDS", builds)
    monkeypatch.setattr(client_readback._DdReader, "bypass_cache", lambda self: "nothing (test)")
    record = job("buffered")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert dropped_range_holds_markers(lying)
    report("buffered", outcome=record.outcome.value, samples_read=record.verification.samples_read,
           failures=record.verification.failures_total)
