"""Management that stops an erase, as advice an IT department can act on: the MDM product
recognised from the device owner's package, the steps in that product's console, a
company-owned work profile, Samsung's Reactivation Lock, and the organisation's own MDM
(`[fleet] mdm`), whose presence is recorded as evidence rather than guessed at."""
from __future__ import annotations

from dataclasses import dataclass

from .model import Finding, Severity


@dataclass(frozen=True)
class Product:
    name: str
    packages: tuple[str, ...]  # package names or prefixes (ending in ".") of its agent
    wipe: str  # where the console wipes a device without keeping its enrolment
    frp: str  # where the console's enterprise Factory Reset Protection policy is cleared
    also: tuple[str, ...] = ()  # other products that manage phones through this agent


PRODUCTS = (
    Product("Microsoft Intune",
            ("com.microsoft.windowsintune.companyportal", "com.microsoft.intune",
             "com.microsoft.intune."),
            "Intune admin center > Devices > Android > the phone > Wipe, with 'Retain "
            "enrollment state' unticked (or Retire, then Delete)",
            "the device restrictions profile's 'Factory reset protection' e-mails"),
    Product("Jamf", ("com.jamf.", "com.jamfsoftware."),
            "Jamf console > the device > Management > Wipe, then remove the device record",
            "the enterprise Factory Reset Protection setting of its Android restrictions"),
    Product("VMware Workspace ONE (AirWatch)",
            ("com.airwatch.androidagent", "com.airwatch.", "com.vmware.hub"),
            "Workspace ONE UEM console > Devices > List View > the phone > More Actions > "
            "Device Wipe, then Delete Device",
            "the Android restrictions profile's Factory Reset Protection accounts"),
    Product("Google endpoint management (Android Device Policy)",
            ("com.google.android.apps.work.clouddpc",),
            "the console that enrolled it - Google Admin console > Devices > Mobile & endpoints "
            "> the phone > Wipe device (not 'Wipe account'), then Delete; Microsoft Intune, "
            "which manages fully managed and company-owned phones through Android Device "
            "Policy too: Intune admin center > Devices > the phone > Wipe, 'Retain enrollment "
            "state' unticked",
            "Google Admin: Devices > Mobile & endpoints > Settings > Android > Factory reset "
            "protection; Intune: the device restrictions profile's 'Factory reset protection' "
            "e-mails", also=("Microsoft Intune", "Intune")),
    Product("Samsung Knox Manage",
            ("com.sds.emm.", "com.samsung.android.knox.kpu", "com.samsung.klmsagent"),
            "Knox Manage console > Device > the phone > Factory Reset (or Unenroll), then "
            "delete the device",
            "the Android Enterprise policy's 'Factory Reset Protection' accounts"),
    Product("Ivanti (MobileIron)",
            ("com.mobileiron", "com.mobileiron.", "com.forgepond.locksmith", "com.ivanti."),
            "Ivanti (MobileIron) console > Devices > the phone > Actions > Wipe, then Retire",
            "the lockdown policy's Factory Reset Protection setting"),
)
GENERIC = Product("the organisation's MDM", (),
                  "its management console: wipe the phone without keeping its enrolment, then "
                  "delete or retire the device", "the policy that sets enterprise Factory "
                  "Reset Protection accounts")
ZERO_TOUCH = ("remove the phone (by IMEI or serial) from Android zero-touch enrolment and from "
              "Samsung Knox Mobile Enrollment, where it is listed, so that it does not enrol again "
              "when it is set up")
AFTER = ("after the wipe, set the phone up without an account, turn on USB debugging again "
         "(Settings > About phone > tap Build number seven times > Developer options) and run "
         "the erase again")


def product_of(package: str) -> Product:
    """The MDM product whose agent has `package` (GENERIC when none is known)."""
    for product in PRODUCTS:
        for known in product.packages:
            if package == known or (known.endswith(".") and package.startswith(known)):
                return product
    return GENERIC


def is_own(package: str, fleet_mdm: str) -> bool:
    """`[fleet] mdm` names this agent: its package (or a prefix), or its product's name."""
    want = fleet_mdm.strip().lower()
    if not want or not package:
        return False
    product = product_of(package)
    names = (product.name, *product.also) if product is not GENERIC else ()
    return (package.lower() == want or package.lower().startswith(want.rstrip(".") + ".")
            or any(want in name.lower() for name in names))


def management_finding(package: str, component: str, kind: str, fleet_mdm: str = "") -> Finding:
    """The blocker for a managed phone: `kind` is "device-owner" or "work-profile" (a profile
    owner on an organization-owned device); the steps name the product's console."""
    product = product_of(package)
    own = is_own(package, fleet_mdm)
    what = ("a work profile on a company-owned phone (profile owner on an organization-owned "
            "device, which the owner cannot remove)" if kind == "work-profile"
            else "the device owner (fully managed phone)")
    who = "your organisation's own MDM ([fleet] mdm)" if own else product.name
    whose = "Release it from your console" if own else \
        "Have the organisation that manages it release it"
    steps = (f"1) wipe it from {product.wipe}"
             + ("; wiping only the work profile is not enough" if kind == "work-profile" else "")
             + f"; 2) {ZERO_TOUCH}; 3) clear the enterprise Factory Reset Protection policy "
             f"({product.frp}) or the phone will ask for those accounts after the reset; "
             f"4) {AFTER}")
    code = "mdm-work-profile" if kind == "work-profile" else "mdm-device-owner"
    return Finding(Severity.BLOCKER, code,
                   f"The phone is managed by {who} ({package}) as {what}. {whose}: {steps}.")


def management_evidence(package: str, component: str, kind: str, fleet_mdm: str = "") -> dict:
    """What the record keeps of the management found (record evidence `management`)."""
    product = product_of(package)
    return {"package": package, "component": component, "kind": kind,
            "product": product.name if product is not GENERIC else "unknown",
            "own_mdm": is_own(package, fleet_mdm),
            "checked_with": "dumpsys device_policy"}


def reactivation_lock_finding(accounts: int) -> Finding:
    """Samsung's Reactivation Lock (Find My Mobile) is tied to a signed-in Samsung account
    and survives a factory reset."""
    return Finding(Severity.BLOCKER, "samsung-reactivation-lock",
                   f"{accounts} Samsung account{'s are' if accounts > 1 else ' is'} signed in, so "
                   "Samsung's Reactivation Lock (Find My Mobile) can lock the next owner out "
                   "after the reset: turn it off in Settings > Security and privacy > Lost device "
                   "protection > Find My Mobile, remove the Samsung account in Settings > "
                   "Accounts (or unregister the phone at smartthingsfind.samsung.com), then "
                   "run again.")


def mask_email(text: str) -> str:
    """Account e-mails as j***@gmail.com: personal data stays off findings and certificates."""
    import re
    return re.sub(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})",
                  lambda m: f"{m.group(1)}***@{m.group(2)}", text)
