"""The emulated shell's Android applets: identity (id, whoami, su), properties (getprop,
setprop) and the system services a refurbishing tool asks (dumpsys, locksettings, cmd
testharness, service call iphonesubinfo, reboot)."""
from __future__ import annotations

import struct
from typing import Any

from .shell_context import _Exit, properties
from .shell_interp import IO, _read_all, _run_script, applet

# -- identity ------------------------------------------------------------------------------

_SHELL_GROUPS = ("1004(input),1007(log),1011(adb),1015(sdcard_rw),1028(sdcard_r),"
                 "1078(ext_data_rw),1079(ext_obb_rw),3001(net_bt_admin),3002(net_bt),"
                 "3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid),3012(readtracefs)")


@applet("id")
def _id(argv: list[str], io: IO) -> int:
    if len(argv) > 1 and argv[1] in ("-u", "-g"):
        io.say("0\n" if io.root else "2000\n")
        return 0
    if len(argv) > 1 and argv[1] in ("-un", "-nu", "-gn", "-ng"):
        io.say("root\n" if io.root else "shell\n")
        return 0
    if not io.root:
        io.say(f"uid=2000(shell) gid=2000(shell) groups=2000(shell),{_SHELL_GROUPS} "
               "context=u:r:shell:s0\n")
    elif io.ctx.storage.profile.access.root == "su":
        io.say("uid=0(root) gid=0(root) groups=0(root) context=u:r:magisk:s0\n")
    else:
        io.say(f"uid=0(root) gid=0(root) groups=0(root),{_SHELL_GROUPS} context=u:r:su:s0\n")
    return 0


@applet("whoami")
def _whoami(argv: list[str], io: IO) -> int:
    io.say("root\n" if io.root else "shell\n")
    return 0


@applet("su")
def _su(argv: list[str], io: IO) -> int:
    args = argv[1:]
    command: str | None = None
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--command"):
            if not args:
                io.complain("su: option requires an argument -- c\n")
                return 2
            command = " ".join(args)
            break
        if arg in ("-", "-l", "--login", "-p", "-mm", "--mount-master", "0", "root"):
            continue
        io.complain(f"su: invalid uid/gid '{arg}'\n")
        return 2
    if command is None:
        command = _read_all(io.stdin, io.ctx).decode("utf-8", "replace")
    saved = io.ctx.status
    try:
        status = _run_script(command, io.ctx, io.stdin, io.out, io.err, True)
    except _Exit as done:
        status = done.status
    io.ctx.status = saved
    return status


@applet("getprop")
def _getprop(argv: list[str], io: IO) -> int:
    props = properties(io.ctx)
    if len(argv) == 1:
        io.say("".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
        return 0
    default = argv[2] if len(argv) > 2 else ""
    io.say(props.get(argv[1], default) + "\n")
    return 0


@applet("setprop")
def _setprop(argv: list[str], io: IO) -> int:
    if len(argv) != 3:
        io.complain("usage: setprop NAME VALUE\n")
        return 1
    io.complain(f"Failed to set property '{argv[1]}' to '{argv[2]}'.\n"
                "See dmesg for error reason.\n")
    return 1


# -- Android services ---------------------------------------------------------------------------


@applet("dumpsys")
def _dumpsys(argv: list[str], io: IO) -> int:
    state = io.ctx.storage.state
    if len(argv) < 2:
        io.say("Currently running services:\n  account\n  battery\n  device_policy\n"
               "  iphonesubinfo\n  lock_settings\n")
        return 0
    service = argv[1]
    if service == "account":
        count = len(state.google_accounts) + len(getattr(state, "samsung_accounts", ()))
        lines = ["User UserInfo{0:Owner:c13}:", f"  Accounts: {count}"]
        lines += [f"    Account {{name={a}, type=com.google}}" for a in state.google_accounts]
        lines += [f"    Account {{name={a}, type=com.osp.app.signin}}"  # Samsung account
                  for a in getattr(state, "samsung_accounts", ())]
        lines += ["", "  AccountId, Action_Type, timestamp, UID, TableName, Key", "",
                  "  Active Sessions: 0", ""]
        io.say("\n".join(lines) + "\n")
        return 0
    if service == "device_policy":
        lines = ["Current Device Policy Manager state:", "  Immutable state:",
                 "    mHasFeature=true", "    mIsWatch=false", "    mIsAutomotive=false",
                 "    mHasTelephonyFeature=true", "    mSafetyChecker=null"]
        if state.device_owner:
            package = state.device_owner.split("/", 1)[0]
            lines += ["Device Owner: ", f"  admin=ComponentInfo{{{state.device_owner}}}",
                      "  name=", f"  package={package}", "  isOrganizationOwnedDevice=true",
                      "  User ID: 0"]
        profile_owner = getattr(state, "profile_owner", "")
        if profile_owner:  # a work profile (user 10) on an organization-owned phone
            lines += ["Profile Owner (User 10): ", f"  admin=ComponentInfo{{{profile_owner}}}",
                      "  name=", f"  package={profile_owner.split('/', 1)[0]}",
                      "  isOrganizationOwnedDevice=true", "  User ID: 10"]
        lines += ["", "  Enabled Device Admins (User 0, provisioningState: "
                  f"{3 if state.device_owner else 0}):"]
        if state.device_owner:
            lines.append(f"    {state.device_owner}:")
        if profile_owner:
            lines += ["", "  Enabled Device Admins (User 10, provisioningState: 3):",
                      f"    {profile_owner}:"]
        io.say("\n".join(lines) + "\n")
        return 0
    if service == "battery":
        io.say("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
               "  Wireless powered: false\n  Max charging current: 500000\n"
               "  Charge counter: 3811000\n  status: 2\n  health: 2\n  present: true\n"
               "  level: 85\n  scale: 100\n  voltage: 4180\n  temperature: 260\n"
               "  technology: Li-ion\n")
        return 0
    io.complain(f"Can't find service: {service}\n")
    return 0


@applet("locksettings")
def _locksettings(argv: list[str], io: IO) -> int:
    state = io.ctx.storage.state
    sub = argv[1] if len(argv) > 1 else ""
    if sub == "verify":
        if not state.screen_lock:
            io.say("Lock credential verified successfully\n")
            return 0
        io.complain("Old password provided does not match\n")
        return 1
    if sub == "get-disabled":
        io.say("false\n" if state.screen_lock else "true\n")
        return 0
    if sub == "clear":
        if state.screen_lock:
            io.complain("Old password provided does not match\n")
            return 1
        io.say("Lock credential cleared\n")
        return 0
    io.complain(f"Unknown command: {sub}\n" if sub else
                "usage: locksettings [--old <CREDENTIAL>] COMMAND\n")
    return 1


@applet("cmd")
def _cmd(argv: list[str], io: IO) -> int:
    storage = io.ctx.storage
    if len(argv) < 2:
        io.complain("cmd: No service specified; use -l to list all running services. "
                    "Use -w to start and wait for a service.\n")
        return 20
    service = argv[1]
    if service == "testharness" and storage.profile.device.sdk >= 29:
        sub = argv[2] if len(argv) > 2 else ""
        if sub != "enable":
            io.complain("Test Harness Mode commands:\n  help\n    Print this help text.\n\n"
                        "  enable|restore\n    Erase all data from this device and enable "
                        "Test Harness Mode,\n    preserving the stored ADB key currently on "
                        "the device and then\n    rebooting the device.\n")
            return 0 if sub == "help" else 255
        if storage.state.screen_lock:
            io.complain("Test Harness Mode cannot be enabled if there is a lock screen\n")
            return 1
        if io.ctx.events:
            io.ctx.events("testharness")
        return 0
    io.complain(f"cmd: Can't find service: {service}\n")
    return 1 if service == "testharness" else 20


def _parcel_dump(data: bytes) -> str:
    """Format a Parcel the way `service call` prints it."""
    data = data + bytes(-len(data) % 4)
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    if len(data) <= 16:
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
        return f"Result: Parcel({' '.join(f'{w:08x}' for w in words)}   '{text}')"
    lines = ["Result: Parcel("]
    for off in range(0, len(data), 16):
        row = words[off // 4:off // 4 + 4]
        chunk = data[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        hexes = " ".join(f"{w:08x}" for w in row)
        lines.append(f"  0x{off:08x}: {hexes:<35} '{text:<16}'")
    lines[-1] += ")"
    return "\n".join(lines)


def _parcel_string16(text: str | None) -> bytes:
    if text is None:
        return struct.pack("<i", -1)
    encoded = text.encode("utf-16-le") + b"\0\0"
    encoded += bytes(-len(encoded) % 4)
    return struct.pack("<i", len(text)) + encoded


def _imeis(storage: Any) -> list[str]:
    """The handset's IMEIs, one per SIM slot (its state; a profile's one for older images)."""
    imeis = list(getattr(storage.state, "imeis", None) or ())
    return imeis or ([storage.profile.device.imei] if storage.profile.device.imei else [])


def _device_id_phone(code: str, args: list[str], sdk: int) -> int | None:
    """The phone (SIM slot) a `service call iphonesubinfo CODE ARGS` asks the IMEI of, with
    IPhoneSubInfo's transactions as that Android version numbers them; None when CODE is not
    a device-ID call there. Everywhere 1 is getDeviceId(callingPackage), the default phone's;
    getDeviceIdForPhone(phoneId, callingPackage[, callingFeatureId]) is 3 on Android 5.1-10
    (SDK 22-29, after getNaiForSubscriber) and 4 on Android 11-14 (SDK 30+, after
    getDeviceIdWithFeature and getNaiForSubscriber); on 5.1-10, 4 is getImeiForSubscriber,
    and 3 on 11-14 getNaiForSubscriber."""
    if code == "1":
        return 0
    if code != ("4" if sdk >= 30 else "3" if sdk >= 22 else ""):
        return None
    asked = args[1] if args[:1] == ["i32"] and args[1:2] else "0"
    return int(asked) if asked.lstrip("-").isdigit() else 0


@applet("service")
def _service(argv: list[str], io: IO) -> int:
    if len(argv) >= 2 and argv[1] == "list":
        io.say("Found 4 services:\n0\taccount: [android.accounts.IAccountManager]\n"
               "1\tdevice_policy: [android.app.admin.IDevicePolicyManager]\n"
               "2\tiphonesubinfo: [com.android.internal.telephony.IPhoneSubInfo]\n"
               "3\tlock_settings: [com.android.internal.widget.ILockSettings]\n")
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        found = argv[2] in ("account", "device_policy", "iphonesubinfo", "lock_settings")
        io.say(f"Service {argv[2]}: {'found' if found else 'not found'}\n")
        return 0
    if len(argv) < 4 or argv[1] != "call":
        io.complain("Usage: service [-h|-?]\n       service list\n       service check SERVICE\n"
                    "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR "
                    "| null | fd f | nfd n | afd f ] ...\n")
        return 1
    name, code = argv[2], argv[3]
    if name != "iphonesubinfo":
        io.complain(f"service: Service {name} does not exist\n")
        return 255
    imeis = _imeis(io.ctx.storage)
    sdk = io.ctx.storage.profile.device.sdk
    phone = _device_id_phone(code, argv[4:], sdk)
    if phone is not None and imeis:
        # a phone id past the phone count is phone 0 (PhoneSubInfoController), so a
        # single-SIM phone asked for its second answers its one IMEI again
        imei = imeis[phone] if 0 <= phone < len(imeis) else imeis[0]
        io.say(_parcel_dump(struct.pack("<i", 0) + _parcel_string16(imei)) + "\n")
        return 0
    if phone is None and code.isdigit() and 1 < int(code) <= 40:  # another getter: no value
        io.say(_parcel_dump(struct.pack("<i", 0) + _parcel_string16(None)) + "\n")
        return 0
    message = ("getDeviceId: The user 2000 does not meet the requirements to access device "
               "identifiers." if phone is not None else "Unknown transaction code")
    io.say(_parcel_dump(struct.pack("<i", -1) + _parcel_string16(message)
                        + struct.pack("<i", 0)) + "\n")
    return 0


@applet("reboot")
def _reboot(argv: list[str], io: IO) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    target = args[0] if args else ""
    if target not in ("", "bootloader", "recovery", "fastboot"):
        target = ""
    if io.ctx.events:
        io.ctx.events("reboot:" + ("bootloader" if target == "fastboot" else target))
    return 0
