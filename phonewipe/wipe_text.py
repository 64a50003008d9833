"""What `phonewipe wipe` says, in plain words: how to enable USB debugging on each make,
what each lock is and the exact steps to remove it, what "verified" means, the time an
erase takes, and the paragraph a seller pastes into a listing. Text only, no I/O."""
from __future__ import annotations

import sys
from pathlib import Path

# -- makes -------------------------------------------------------------------------------------
# USB vendor ids (what a phone shows on the bus even before USB debugging is on) -> make
USB_VENDORS = {"04e8": "samsung", "18d1": "google", "2717": "xiaomi", "2a70": "oneplus",
               "22b8": "motorola", "12d1": "huawei", "0fce": "sony", "1004": "lg",
               "22d9": "oppo", "2d95": "vivo", "0bb4": "htc", "05ac": "apple"}

MAKE_NAMES = {"samsung": "Samsung", "google": "Google Pixel", "xiaomi": "Xiaomi",
              "oneplus": "OnePlus", "motorola": "Motorola", "huawei": "Huawei", "sony": "Sony",
              "lg": "LG", "oppo": "OPPO", "vivo": "vivo", "htc": "HTC", "apple": "iPhone"}


def make_key(manufacturer: str | None) -> str:
    """'samsung', 'google', 'xiaomi' (Redmi, POCO), 'oneplus', ... or '' when unknown."""
    m = (manufacturer or "").strip().lower()
    for alias, key in (("redmi", "xiaomi"), ("poco", "xiaomi"), ("pixel", "google"),
                       ("motorola", "motorola"), ("moto", "motorola")):
        if m.startswith(alias):
            return key
    return m if m in MAKE_NAMES else ""


def usb_makes(sysfs: Path = Path("/sys/bus/usb/devices")) -> list[str]:
    """Makes of the phones on the USB bus by their vendor id (Linux sysfs; [] elsewhere)."""
    found = []
    try:
        for vendor in sorted(sysfs.glob("*/idVendor")):
            key = USB_VENDORS.get(vendor.read_text().strip().lower())
            if key and key not in found:
                found.append(key)
    except OSError:
        return []
    return found


DEVELOPER_OPTIONS = {
    "samsung": ["Open Settings > About phone > Software information.",
                "Tap 'Build number' seven times (enter your PIN if asked) until it says "
                "'Developer mode has been turned on'.",
                "Go back to Settings: 'Developer options' is now at the very bottom.",
                "Open it and turn on 'USB debugging'."],
    "google": ["Open Settings > About phone.",
               "Tap 'Build number' (at the bottom) seven times, entering your PIN if asked.",
               "Open Settings > System > Developer options.",
               "Turn on 'USB debugging'."],
    "xiaomi": ["Open Settings > About phone.",
               "Tap 'MIUI version' (or 'OS version') seven times until it says you are a "
               "developer.",
               "Open Settings > Additional settings > Developer options.",
               "Turn on 'USB debugging' (Xiaomi may ask you to insert a SIM card or sign in "
               "to your Mi account first)."],
    "oneplus": ["Open Settings > About device > Version.",
                "Tap 'Build number' seven times, entering your PIN if asked.",
                "Open Settings > System settings (or System) > Developer options.",
                "Turn on 'USB debugging'."],
    "motorola": ["Open Settings > About phone.",
                 "Tap 'Build number' seven times, entering your PIN if asked.",
                 "Open Settings > System > Developer options.",
                 "Turn on 'USB debugging'."],
    "": ["Open Settings > About phone (on some phones: About phone > Software information).",
         "Tap 'Build number' seven times, entering your PIN if asked, until the phone says "
         "you are now a developer.",
         "Find 'Developer options' (in Settings, or Settings > System, or Settings > "
         "Additional settings) and open it.",
         "Turn on 'USB debugging'."],
}


def usb_debugging_steps(make: str) -> tuple[str, list[str]]:
    """(title, numbered steps) to turn on USB debugging on this make."""
    if make == "apple":
        return ("On your iPhone", ["Unlock it and tap 'Trust' when it asks 'Trust This "
                                   "Computer?' (iPhones are not supported yet by this "
                                   "version of phonewipe)."])
    steps = DEVELOPER_OPTIONS.get(make, DEVELOPER_OPTIONS[""])
    name = MAKE_NAMES.get(make)
    return (f"Turn on USB debugging ({name})" if name else "Turn on USB debugging", steps)


ALLOW_PROMPT = ["Plug the phone into this computer with a USB cable that carries data (some "
                "charging cables do not).",
                "Unlock the phone. It asks 'Allow USB debugging?': tick 'Always allow from "
                "this computer' and tap 'Allow'.",
                "No prompt? Pull the notification shade down, tap the USB notification and "
                "choose 'File transfer', or unplug and plug the cable in again."]

UDEV_RULE = ('SUBSYSTEM=="usb", ENV{ID_USB_INTERFACES}=="*:ff4201:*", MODE="0660", '
             'GROUP="plugdev", TAG+="uaccess"')
UDEV_COMMAND = (f"echo '{UDEV_RULE}' | sudo tee /etc/udev/rules.d/51-android.rules >/dev/null "
                "&& sudo udevadm control --reload && sudo udevadm trigger")


def on_linux() -> bool:
    return sys.platform.startswith("linux")


# -- locks -------------------------------------------------------------------------------------
GOOGLE_ACCOUNT_STEPS = {
    "samsung": ["Settings > Accounts and backup > Manage accounts.",
                "Tap your Google account > Remove account > Remove account.",
                "Do the same for your Samsung account (it has its own lock)."],
    "xiaomi": ["Settings > Accounts & sync > Google.",
               "Tap your account > More (three dots) > Remove account.",
               "Also sign out of your Mi account: Settings > Mi Account > Sign out."],
    "oneplus": ["Settings > Users & accounts.",
                "Tap your Google account > Remove account."],
    "": ["Settings > Passwords & accounts (Android 14: 'Passwords, passkeys & accounts').",
         "Tap your Google account > Remove account > Remove account."],
}

SCREEN_LOCK_STEPS = {
    "samsung": ["Settings > Lock screen > Screen lock type.", "Enter your PIN, choose 'None'."],
    "google": ["Settings > Security & privacy > Device unlock > Screen lock.",
               "Enter your PIN, choose 'None' and confirm."],
    "": ["Settings > Security (or Lock screen) > Screen lock.",
         "Enter your PIN, choose 'None' and confirm."],
}


def lock_help(code: str, message: str, make: str) -> tuple[str, str, list[str]]:
    """(what the lock is called, what it means in plain words, the steps to remove it)."""
    if code == "frp-google-account":
        return ("Your Google account is still on the phone",
                "Google's Factory Reset Protection would ask the next owner for YOUR Google "
                "password after the erase, so the phone would be useless to a buyer.",
                GOOGLE_ACCOUNT_STEPS.get(make, GOOGLE_ACCOUNT_STEPS[""]))
    if code in ("activation-lock", "find-my"):
        return ("Find My is on",
                "Apple's Activation Lock would ask the next owner for YOUR Apple ID password.",
                ["Settings > your name > Find My > Find My iPhone.",
                 "Turn it off and enter your Apple ID password."])
    if code == "mdm-device-owner":
        return ("An organisation manages this phone",
                "This phone is enrolled in an organisation's device management (MDM): only "
                "that organisation can release it; you cannot remove it yourself.",
                ["Ask the organisation's IT department to remove the phone from management "
                 "(they call it 'retire' or 'unenroll')."])
    if code == "screen-lock":
        return ("A screen lock is set",
                "Without root, phonewipe can only finish the erase with a factory reset, and "
                "the phone refuses that while a PIN, pattern or password is set.",
                SCREEN_LOCK_STEPS.get(make, SCREEN_LOCK_STEPS[""]))
    if code == "usb-debugging-unauthorized":
        return ("The phone has not allowed this computer yet", "", ALLOW_PROMPT[1:])
    return ("The phone cannot be erased as it is", message, [])


# -- the erase ---------------------------------------------------------------------------------
def plan_text(method: str, rooted: bool) -> str:
    """What the strongest method will do to this phone, before it runs."""
    if method.startswith("adb-raw") or method.startswith("fastboot-raw"):
        return ("This phone gives full access to its storage (it is rooted), so phonewipe "
                "overwrites every block of it, reads samples back to check, then resets it.")
    if method == "adb-fill-reset":
        return ("This phone is not rooted, so phonewipe deletes your files, fills all the free "
                "space with random data, reads samples of that back to check, deletes the "
                "fill and factory-resets the phone.")
    if method in ("adb-factory-reset", "fastboot-unlock-wipe"):
        return ("This phone only allows a factory reset, which destroys the keys that "
                "encrypt your data. phonewipe cannot read the storage back to check it.")
    return f"phonewipe erases this phone with the method {method}."


# MiB/s a phone's storage is written at: slowest and fastest we expect
RATES = {"host": (15.0, 40.0),  # streamed from this computer over USB 2 / USB 3
         "device": (40.0, 250.0)}  # written by the phone itself


def size_text(n: int) -> str:
    """Storage as phone makers count it (GB), or MB for a small (emulated) one."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return "less than a minute"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def time_estimate(method: str, capacity: int | None) -> str:
    """An honest range, said as one: the speed is only known once the erase runs."""
    if not capacity:
        return ("How long this takes depends on the phone's storage; the time left appears "
                "once the erase is running, measured from its real speed.")
    slow, fast = RATES["host" if method.startswith("adb-raw-pattern") else "device"]
    mib = capacity / 2**20
    low, high = _duration(mib / fast), _duration(mib / slow)
    span = low if low == high else f"between {low} and {high}"
    extra = " plus a few minutes for the factory reset" if "reset" in method else ""
    return (f"Estimate for {size_text(capacity)}: {span}{extra}. The real time depends on the "
            "cable, the USB port and the phone's storage: the bar below shows the time left, "
            "measured from the real speed, once the erase runs.")


def outcome_meaning(outcome: str, method: str, samples: int, confidence: float,
                    residual: float) -> str:
    """What the result means for this phone and this method."""
    if outcome == "ERASED_VERIFIED" and method == "adb-fill-reset":
        return (f"VERIFIED means: phonewipe read back {samples:,} samples spread over all the "
                "free space it filled, and every one held the random data it wrote: your "
                f"deleted files are overwritten (had {residual:.1%} or more of the fill not "
                f"reached the storage, this check would have caught it with {confidence:.0%} "
                "certainty). The small part of the storage an app cannot write to is covered "
                "by the factory reset that followed, which destroys the keys that encrypt it.")
    if outcome == "ERASED_VERIFIED":
        return (f"VERIFIED means: after erasing, phonewipe read back {samples:,} samples spread "
                "over the whole storage and every one held what the erase wrote. Had even "
                f"{residual:.1%} of the storage escaped the erase, this check would have caught "
                f"it with {confidence:.0%} certainty.")
    if outcome == "ERASED_UNVERIFIED":
        return ("ERASED, NOT VERIFIED means: the erase ran, but this phone does not let a "
                "computer read its storage back, so the result rests on the phone's own "
                "factory reset (which destroys the keys that encrypt your data). phonewipe "
                "cannot check it and says so.")
    return ""


NEXT_STEPS = ["Hold the power button and power the phone off.",
              "Take out the SIM card and any memory card (they are not erased: keep them, or "
              "cut them up).",
              "Do not sign in to the phone again before you hand it over."]


def listing_text(make_model: str, serial: str, date: str, result: str, how: str,
                 certificate: str, fingerprint: str, version: str) -> str:
    """One paragraph the seller pastes into a listing."""
    return (f"Data wiped: this phone ({make_model}, serial {serial}) was erased on {date} with "
            f"phonewipe {version}; {how} Result: {result}. Signed erasure certificate "
            f"{certificate}, signing key fingerprint {fingerprint}. Ask me for the PDF: "
            "`phonewipe cert verify --trust` with that fingerprint checks it.")


# what the owner of an emulated phone changes in its state.json, for each lock
EMULATED_FIX = {"frp-google-account": '"google_accounts": []', "screen-lock": '"screen_lock": false',
                "mdm-device-owner": '"device_owner": ""'}


def emulated_hint(state_file: str, codes: list[str]) -> str:
    fixes = [EMULATED_FIX[c] for c in codes if c in EMULATED_FIX] or ['"google_accounts": []']
    return ("This phone is emulated. To do on it what its owner would do in Settings, set "
            f"{' and '.join(fixes)} in {state_file}, then press Enter.")
