"""One phone over ADB: identify, check locks, erase, read back, reset.

Every command runs through shell protocol v2 (exit status and stderr travel separately)
and sticks to the portable toybox subset described in shared/protocols/adb.md.

The parts: `client_channel` (the shell v2 channel, the parsers, the transcript),
`client_fill` (the unrooted fill), `client_readback` (the dd reader past the page cache and
the phonewipe-pwread helper); this module is the session: identity, preflight, methods,
erase dispatch and the raw overwrite, reset and the state after it.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import DeviceCommandFailed, ProtocolError
from phonewipe.erase.identity import imei_ok
from phonewipe.erase.mdm import management_evidence, management_finding, mask_email, reactivation_lock_finding
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Expectation,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import EraseContext, EraseReport, ProgressFn, Session

from .client_channel import (
    _LINK_ERRORS,
    MAX_SHELL_PACKET,
    RECV_CHUNK,
    STREAM_CHUNK,
    ShellChannel,
    ShellResult,
    _quote_for_su,
    _Transcript,
    parse_df_kib,
    parse_getprop,
    parse_imei_parcel,
)
from .client_fill import FILL_DIR, UnrootedFill
from .client_readback import BLOCK, HELPER_ON_PHONE, READ_BATCH, _DdReader, push_reader_helper

if TYPE_CHECKING:
    from . import AdbPlugin

__all__ = ["BLOCK", "FACTORY_RESET", "FILL_DIR", "FILL_RESET", "HELPER_ON_PHONE",
           "MAX_SHELL_PACKET", "NO_SHELL_V2", "RAW_PATTERN", "RAW_ZEROS", "READ_BATCH",
           "RECV_CHUNK", "STREAM_CHUNK", "USERDATA", "ZERO_CHUNK_MIB", "AdbSession",
           "ShellResult", "parse_df_kib", "parse_getprop", "parse_imei_parcel"]

USERDATA = "/dev/block/by-name/userdata"
ZERO_CHUNK_MIB = 64
NO_SHELL_V2 = "device without shell v2"  # session state of a pre-Android-7 phone
# where the advice ends when neither adb nor the bootloader can erase a phone
RECOVERY_RESET = ("factory-reset it from the recovery menu (power off, hold power + volume "
                  "down, choose Recovery mode, then Wipe data/factory reset); phonewipe cannot "
                  "verify or certify that reset, so record the phone as not erased here and "
                  "route it to destruction if its data must be proven gone.")

RAW_PATTERN = EraseMethod(
    "adb-raw-pattern", "Overwrite of the userdata block device with a host-keyed pseudo-random "
    "pattern, streamed from the host", Category.CLEAR, Technique.OVERWRITE, True,
    Expectation.PATTERN, "needs root; the device cannot produce the pattern without storing it")
RAW_ZEROS = EraseMethod(
    "adb-raw-zeros", "Overwrite of the userdata block device with zeros, written on the device",
    Category.CLEAR, Technique.OVERWRITE, True, Expectation.ZEROS, "needs root; fastest")
FILL_RESET = EraseMethod(
    "adb-fill-reset", "Deletion of user files, fill of all free user storage with a host-keyed "
    "pattern, sampled read-back, then factory reset", Category.CLEAR, Technique.OVERWRITE, True,
    Expectation.PATTERN, "no root needed", through_files=True)
FACTORY_RESET = EraseMethod(
    "adb-factory-reset", "Factory reset (cryptographic erase of file-encryption keys, "
    "vendor-attested)", Category.CLEAR, Technique.CRYPTO_ERASE, False, None,
    "no read-back is possible")


IDENTITY_PROPS = ("ro.product.manufacturer", "ro.product.model", "ro.serialno",
                  "ro.build.version.release", "ro.build.type", "ro.crypto.type",
                  "ro.boot.flash.locked", "ro.product.cpu.abi")


def storage_type_of(devname: str | None) -> str | None:
    """The medium behind a block device's kernel name: sdX (UFS on a phone), mmcblkN (eMMC),
    nvmeN (NVMe); None when the name says nothing."""
    if not devname:
        return None
    if re.fullmatch(r"sd[a-z]+\d*", devname):
        return "UFS"
    if re.fullmatch(r"mmcblk\d+(p\d+)?", devname):
        return "eMMC"
    if re.fullmatch(r"nvme\d+n\d+(p\d+)?", devname):
        return "NVMe"
    return None


class AdbSession(UnrootedFill, ShellChannel, Session):
    """One phone over adb: identity, preflight, the methods it allows, the erase (raw, or the
    fill from `UnrootedFill`), the reader, the reset and what the phone looks like after it.
    Commands go through `ShellChannel` (shell v2)."""

    def __init__(self, plugin: "AdbPlugin", endpoint: Endpoint, state: str) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.state = state
        self.client = plugin.server.client()
        self.device = self.client.device(serial=endpoint.address)
        self.props: dict[str, str] = {}
        self.root: str | None = None  # None, "su" or "adbd"
        self._reader: _DdReader | None = None
        self._reset_done = False
        self.reader_helper = "not installed"  # install_reader_helper
        self._identity: Identity | None = None
        self._log = _Transcript()
        self.management: list[dict[str, Any]] = []  # MDM found by preflight (erase.mdm)

    # -- identity and preflight ------------------------------------------------------------
    def identify(self) -> Identity:
        if self.state == "device" and not self._speaks_shell_v2():
            self.state = NO_SHELL_V2
        if self.state == NO_SHELL_V2:  # who it is, through the old shell, for the record
            self.props = parse_getprop(self._v1_text("getprop"))
            for name in IDENTITY_PROPS:  # one by one, as over shell v2 (see _properties)
                value = self._v1_text(f"getprop {name}").removesuffix("\n").removesuffix("\r")
                self.props[name] = value
                if not value:
                    del self.props[name]
            p = self.props
            self._identity = Identity(
                platform="android", manufacturer=p.get("ro.product.manufacturer") or None,
                model=p.get("ro.product.model") or None, serial=p.get("ro.serialno") or None,
                os_version=p.get("ro.build.version.release") or None,
                build_type=p.get("ro.build.type") or None)
            return self._identity
        if self.state != "device":
            self._identity = Identity(platform="android")
            return self._identity
        self.props = self._properties()
        self.root = self._detect_root()
        p = self.props
        capacity = None
        if self.root:
            size = self.run(f"blockdev --getsize64 {USERDATA}", root=True)
            capacity = int(size.text.strip()) if size.status == 0 and size.text.strip().isdigit() else None
        if capacity is None:
            df = parse_df_kib(self.run("df /data").text)
            capacity = df[0] * 1024 if df else None
        imeis = self._imeis()
        locked = p.get("ro.boot.flash.locked")
        self._identity = Identity(
            platform="android", manufacturer=p.get("ro.product.manufacturer") or None,
            model=p.get("ro.product.model") or None, serial=p.get("ro.serialno") or None,
            imeis=imeis, os_version=p.get("ro.build.version.release") or None,
            storage_type=self._storage_type(), capacity_bytes=capacity,
            bootloader_locked=None if locked is None else locked == "1",
            frp=None, mdm=None, encryption=p.get("ro.crypto.type") or None,
            build_type=p.get("ro.build.type") or None)
        return self._identity

    def _properties(self) -> dict[str, str]:
        """Every property from the `getprop` dump, and the ones that name the phone read one
        by one: a value may hold a newline, and `[x]\n[ro.serialno]: [FAKE]` in one value
        is a well-formed line in the dump. Bytes that are not UTF-8 are kept (surrogateescape)
        for the core to show escaped and record as they were."""
        props = parse_getprop(self.check("getprop").stdout.decode("utf-8", "surrogateescape"))
        for name in IDENTITY_PROPS:
            answer = self.run(f"getprop {name}")
            value = answer.stdout.decode("utf-8", "surrogateescape").removesuffix("\n")
            if answer.status == 0 and value:
                props[name] = value
            else:
                props.pop(name, None)
        return props

    def _imeis(self) -> tuple[str, ...]:
        """Every IMEI, one per SIM slot: getDeviceIdForPhone(phoneId, callingPackage) for
        each phone, IPhoneSubInfo transaction 4 on Android 11-14 (SDK 30+) and 3 on 5.1-10
        (SDK 22-29); older ones only getDeviceId(callingPackage), 1, the default phone's. A
        phone id past the phone count answers phone 0's IMEI again (kept once). Only what
        is an IMEI (15 digits, Luhn check digit) is recorded as one."""
        sdk = int(self.props.get("ro.build.version.sdk", "0") or 0)
        first = "service call iphonesubinfo 1 s16 com.android.shell"
        code = 4 if sdk >= 30 else 3 if sdk >= 22 else None
        if code is None:
            found = [parse_imei_parcel(self.run(first).text)]
        else:
            slots = 3 if self.props.get("persist.radio.multisim.config") == "tsts" else 2
            found = [parse_imei_parcel(self.run(f"service call iphonesubinfo {code} i32 {slot} "
                                                "s16 com.android.shell").text)
                     for slot in range(slots)]
            if not found[0]:  # a vendor build that numbers the calls otherwise
                found[0] = parse_imei_parcel(self.run(first).text)
        return tuple(dict.fromkeys(i for i in found if i and imei_ok(i)))

    def _speaks_shell_v2(self) -> bool:
        try:
            return "shell_v2" in self.device.get_features().split(",")
        except _LINK_ERRORS as exc:
            if not self._alive():
                raise self._gone("while being identified") from exc
            return True  # the server could not say: shell v2 itself will tell

    def _detect_root(self) -> str | None:
        if "uid=0(" in self.run("id").text:
            return "adbd"
        su = self.run(_quote_for_su("id"))
        if su.status == 0 and "uid=0(" in su.text:
            return "su"
        return None

    def preflight(self) -> list[Finding]:
        if self.state == "unauthorized":
            return [Finding(Severity.BLOCKER, "usb-debugging-unauthorized",
                            "Unlock the phone and accept the 'Allow USB debugging?' prompt, then run again.")]
        if self.state == NO_SHELL_V2:
            version = self.props.get("ro.build.version.release") or "6 or older"
            return [Finding(Severity.BLOCKER, "adb-without-shell-v2",
                            f"This phone's adb (Android {version}) predates shell protocol v2, which "
                            "phonewipe needs to erase and read back storage over adb: erase it in the "
                            f"bootloader (`phonewipe erase {self.endpoint.address} --via fastboot`; "
                            "needs an unlocked bootloader or OEM unlocking allowed). If its "
                            f"bootloader is locked for good: {RECOVERY_RESET}")]
        if self.state != "device":
            return [Finding(Severity.BLOCKER, f"adb-{self.state}",
                            f"The phone is {self.state} over adb: reconnect the cable (another "
                            "port), then run again.")]
        findings = self._account_findings() + self._owner_findings()
        if self.run("locksettings verify").status != 0:
            findings.append(Finding(
                Severity.WARNING if self.root else Severity.BLOCKER, "screen-lock",
                "A screen lock is set and the phone is not rooted, so adb cannot reset it: remove the "
                "lock in Settings > Security, then run again."
                if not self.root else "A screen lock is set (root methods still work)."))
        findings.append(Finding(Severity.INFO, "root",
                                {"su": "Root available through su.", "adbd": "adbd runs as root.",
                                 None: "No root: the userdata block device cannot be overwritten "
                                       "directly."}[self.root]))
        return findings

    def _account_findings(self) -> list[Finding]:
        """Factory Reset Protection engages after a reset when a Google account is signed in."""
        result = self.run("dumpsys account")
        if result.status != 0:  # the check did not run: frp stays unknown on the record
            return [Finding(Severity.WARNING, "frp-unchecked",
                            f"Could not list the phone's accounts (`dumpsys account`: "
                            f"{result.error_line()}): check Settings > Accounts for a Google account.")]
        accounts = re.findall(r"Account \{name=([^,]+), type=com\.google\}", result.text)
        self._identity = self._with(frp=bool(accounts))
        findings = self._reactivation_findings(result.text)
        if accounts:  # the account's address is personal data: masked (j***@gmail.com)
            return findings + [Finding(
                Severity.BLOCKER, "frp-google-account",
                f"A Google account ({mask_email(', '.join(accounts))}) is signed in, so Factory "
                "Reset Protection would lock the next owner out: remove the account in Settings > "
                "Accounts, then run again.")]
        return findings + [Finding(Severity.INFO, "frp-clear", "No Google account is signed in "
                                   "(checked with `dumpsys account`): Factory Reset Protection "
                                   "will not engage.")]

    def _reactivation_findings(self, accounts_dump: str) -> list[Finding]:
        """Samsung's Reactivation Lock rides on a signed-in Samsung account (type
        com.osp.app.signin in `dumpsys account`): checked on Samsung phones only."""
        if (self.props.get("ro.product.manufacturer") or "").lower() != "samsung":
            return []
        samsung = re.findall(r"Account \{name=[^,]+, type=com\.osp\.app\.signin\}", accounts_dump)
        self._identity = self._with(activation_lock=bool(samsung))
        if samsung:
            return [reactivation_lock_finding(len(samsung))]
        return [Finding(Severity.INFO, "samsung-reactivation-lock-clear",
                        "No Samsung account is signed in (checked with `dumpsys account`): "
                        "Samsung's Reactivation Lock cannot engage.")]

    def _owner_findings(self) -> list[Finding]:
        result = self.run("dumpsys device_policy")
        if result.status != 0:
            return [Finding(Severity.WARNING, "mdm-unchecked",
                            f"Could not read the device policy (`dumpsys device_policy`: "
                            f"{result.error_line()}): check Settings > Security for a device admin.")]
        owner = re.search(r"Device Owner:.*?admin=ComponentInfo\{([^}]+)\}", result.text, re.S)
        # a work profile on a company-owned phone: its profile owner says so (Android 11+)
        profile = re.search(r"Profile Owner \(User \d+\):\s*admin=ComponentInfo\{([^}]+)\}"
                            r"(?:(?!Profile Owner|Device Owner).)*?isOrganizationOwnedDevice=true",
                            result.text, re.S)
        self._identity = self._with(mdm=bool(owner or profile))
        found = [(m.group(1), kind) for m, kind in ((owner, "device-owner"),
                                                   (profile, "work-profile")) if m]
        self.management = [management_evidence(c.split("/", 1)[0], c, kind) for c, kind in found]
        if found:
            return [management_finding(c.split("/", 1)[0], c, kind) for c, kind in found]
        return [Finding(Severity.INFO, "mdm-clear", "No device owner, company-owned work profile "
                        "or MDM enrolment (checked with `dumpsys device_policy`).")]

    def _with(self, **changes: Any) -> Identity:
        from dataclasses import replace
        return replace(self._identity or Identity(platform="android"), **changes)

    @property
    def identity(self) -> Identity:
        return self._identity or Identity(platform="android")

    def methods(self) -> list[EraseMethod]:
        if self.state != "device":
            return []
        testharness = int(self.props.get("ro.build.version.sdk", "0") or 0) >= 29
        locked_screen = self.run("locksettings verify").status != 0
        methods = []
        if self.root:
            methods += [RAW_PATTERN, RAW_ZEROS]
        if not locked_screen and testharness:
            methods.append(FILL_RESET)
        if self.root or (testharness and not locked_screen):
            methods.append(FACTORY_RESET)
        return methods

    # -- erase -----------------------------------------------------------------------------
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method is RAW_PATTERN or method is RAW_ZEROS:
            return self._erase_raw(method, context, progress)
        if method is FILL_RESET:
            return self._erase_fill(context, progress)
        if method is FACTORY_RESET:
            details = self._factory_reset()
            return EraseReport(0, None, "whole device (factory reset)", details)
        raise DeviceCommandFailed(f"unknown adb method {method.name}", "choose a listed method")

    def _userdata_size(self) -> int:
        text = self.check(f"blockdev --getsize64 {USERDATA}", root=True).text.strip()
        if not text.isdigit():
            raise ProtocolError(f"`blockdev --getsize64` answered {text[:40]!r}, not a size in bytes",
                                "this phone needs a different method (--method)")
        return int(text)

    def _erase_raw(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        size = self._userdata_size()
        if size % BLOCK:
            raise DeviceCommandFailed(f"userdata size {size} is not a multiple of {BLOCK}",
                                      "this phone needs a different method (--method)")
        if method is RAW_PATTERN:
            stream = PatternStream(context.pattern_key)
            chunks = (stream.next(min(STREAM_CHUNK, size - off)) for off in range(0, size, STREAM_CHUNK))
            self.check(f"dd of={USERDATA} bs={STREAM_CHUNK} conv=notrunc", root=True,
                       stdin=chunks, progress=progress, total=size)
        else:
            self._zero_fill(size, progress)
        self.check("sync", root=True)
        self._reader = _DdReader(self, [(USERDATA, size)], root=True)
        return EraseReport(size, method.expectation, f"userdata block device, {size:,} bytes",
                           {"device": USERDATA, "bytes": size, "root": self.root,
                            "pattern": "AES-256-CTR keystream, key held by the host"
                            if method is RAW_PATTERN else "zeros"},
                           capacity_evidence=self.table_sizes())

    def _zero_fill(self, size: int, progress: ProgressFn) -> None:
        mib = 1024 * 1024
        whole = size // mib
        for start in range(0, whole, ZERO_CHUNK_MIB):
            count = min(ZERO_CHUNK_MIB, whole - start)
            self.check(f"dd if=/dev/zero of={USERDATA} bs={mib} seek={start} count={count} conv=notrunc",
                       root=True)
            progress((start + count) * mib, size)
        tail = size - whole * mib
        if tail:
            self.check(f"dd if=/dev/zero of={USERDATA} bs={BLOCK} seek={whole * mib // BLOCK} "
                       f"count={tail // BLOCK} conv=notrunc", root=True)
        progress(size, size)

    # -- read-back, reset, after the reset ---------------------------------------------------
    def reader(self) -> "_DdReader | None":
        return self._reader

    def install_reader_helper(self) -> None:
        """Push phonewipe-pwread (protocols/adb/helper) for the phone's ABI to
        /data/local/tmp, where the shell uid may run it: a reader of the fill files past the
        page cache. It runs with the shell's rights only. `reader_helper` says how it went."""
        self.reader_helper = push_reader_helper(self.device, self.props.get("ro.product.cpu.abi", ""))

    def readback(self) -> "_DdReader | None":
        """The userdata block device, read with root, without erasing anything."""
        if self.state != "device" or not self.root:
            return None
        return _DdReader(self, [(USERDATA, self._userdata_size())], root=True)

    def not_recheckable(self, record: Any) -> str | None:
        if record.sanitization and record.sanitization.method == FILL_RESET.name:
            return ("its samples were read from fill files that the recorded factory reset "
                    "removed, so they cannot be read again")
        return None

    def transcript(self) -> dict[str, Any]:
        return self._log.summary()

    def _userdata_dev(self) -> tuple[str | None, dict[str, int]]:
        """The userdata partition's kernel name (sda34, mmcblk0p45, from the partition table
        and sysfs, readable without root) and the table's sizes in KiB."""
        table = self.run("cat /proc/partitions")
        kib = {parts[3]: int(parts[2]) for parts in (line.split() for line in table.text.splitlines())
               if len(parts) == 4 and parts[2].isdigit()}
        if table.status != 0 or not kib:
            return None, {}
        events = self.run("cat " + " ".join(f"/sys/class/block/{name}/uevent" for name in sorted(kib)))
        dev = current = None
        for line in events.text.splitlines():
            key, _, value = line.partition("=")
            current = value if key == "DEVNAME" else current
            if key == "PARTNAME" and value == "userdata":
                dev = current
        return (dev, kib) if dev in kib else (None, kib)

    def _storage_type(self) -> str | None:
        """UFS or eMMC from the userdata partition's kernel name: phones put UFS behind the
        SCSI layer (sdaN) and eMMC behind the MMC one (mmcblkNpM); unknown otherwise."""
        try:
            dev, _ = self._userdata_dev()
        except (DeviceCommandFailed, ProtocolError):
            return None
        return storage_type_of(dev)

    def table_sizes(self) -> dict[str, int]:
        """The userdata partition's size from the partition table (/proc/partitions and
        sysfs), independent of the BLKGETSIZE64 ioctl behind `blockdev`."""
        dev, kib = self._userdata_dev()
        if dev is None:
            return {}
        evidence = {"/proc/partitions": kib[dev] * 1024}
        sectors = self.run(f"cat /sys/class/block/{dev}/size").text.strip()
        if sectors.isdigit():
            evidence[f"/sys/class/block/{dev}/size"] = int(sectors) * 512
        return evidence

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        if method is FACTORY_RESET:
            return {}
        if method is FILL_RESET:
            self._finish_fill()
        return {"after_verification": "fill deleted; " if method is FILL_RESET else "",
                **self._factory_reset()}

    def _factory_reset(self) -> dict[str, Any]:
        if self.root:
            self.check("mkdir -p /cache/recovery", root=True)
            self.check("echo --wipe_data > /cache/recovery/command", root=True)
            self._reboot("reboot:recovery")
            self._reset_done = True
            return {"factory_reset": "recovery --wipe_data"}
        result = self.run("cmd testharness enable")
        if result.status != 0:
            raise DeviceCommandFailed(f"the phone refused the factory reset: {result.error_line()}",
                                      "remove the screen lock, or reset from Settings and run again")
        self._reset_done = True
        return {"factory_reset": "cmd testharness enable (Test Harness Mode reset)"}

    def preflight_for(self, mode: str) -> list[Finding]:
        if self.state == NO_SHELL_V2:  # adb cannot erase it, ``mode`` may: the locks still count
            return self._old_shell_lock_checks(mode)
        # a screen lock only stops adb's own reset; an erase in another mode removes it
        return [Finding(Severity.WARNING, f.code, f"A screen lock is set (the erase in {mode} "
                        "mode removes it).") if f.code == "screen-lock" else f
                for f in self.preflight()]

    def _old_shell_lock_checks(self, mode: str) -> list[Finding]:
        """The account and device-owner checks over a pre-Android-7 phone's old shell (output
        only, no exit status): a Google account left on it survives an erase in the
        bootloader (Factory Reset Protection), so it still blocks."""
        version = self.props.get("ro.build.version.release") or "6 or older"
        findings = [Finding(Severity.INFO, "adb-without-shell-v2",
                            f"adb cannot erase this phone (Android {version} predates shell "
                            f"protocol v2): it is erased in {mode} mode.")]
        accounts = self._v1_text("dumpsys account")
        if "Accounts:" not in accounts:
            findings.append(Finding(Severity.WARNING, "frp-unchecked",
                                    "Could not list the phone's accounts over its old adb shell: "
                                    "check Settings > Accounts for a Google account."))
        elif re.search(r"Account \{name=[^,]+, type=com\.google\}", accounts):
            self._identity = self._with(frp=True)
            findings.append(Finding(Severity.BLOCKER, "frp-google-account",
                                    "A Google account is signed in, so Factory Reset Protection "
                                    "would lock the next owner out: remove the account in Settings "
                                    "> Accounts, then run again."))
        else:
            self._identity = self._with(frp=False)
        policy = self._v1_text("dumpsys device_policy")
        if "Device Owner" in policy:
            self._identity = self._with(mdm=True)
            findings.append(Finding(Severity.BLOCKER, "mdm-device-owner",
                                    "The phone is managed (MDM device owner): have the organisation "
                                    "release it from management, then run again."))
        return findings

    def reboot_to(self, mode: str) -> bool:
        """Into the bootloader (fastboot) on request; "adb" is where the phone already is."""
        if mode != "fastboot":
            return False
        self._reboot("reboot:bootloader")
        return True

    def post_state(self) -> dict[str, Any]:
        if not self._reset_done:
            return {}
        wait = float(self.plugin.option("reboot_wait"))
        if self.root:
            return {"returned_over_adb": False,
                    "note": "rebooted to recovery to wipe; after a reset USB debugging is off, so "
                            "the post-reset state is not observable over adb"}
        deadline = time.monotonic() + wait
        address = self.endpoint.address
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if ":" in address:
                try:
                    self.client.connect(address, timeout=3)
                except _LINK_ERRORS:
                    continue
            if self._alive():
                accounts = re.findall(r"Account \{name=", self.run("dumpsys account").text)
                harness = self.run("getprop persist.sys.test_harness").text.strip()
                files = self.run("ls -A /sdcard").text.split()
                return {"returned_over_adb": True, "google_accounts": len(accounts),
                        "test_harness": harness == "1", "user_files": files,
                        "reset_observed": not accounts and not files}
        return {"returned_over_adb": False, "note": f"did not return over adb within {wait:.0f} s"}
