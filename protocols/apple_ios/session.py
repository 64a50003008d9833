"""One iPhone or iPad over usbmuxd/lockdownd: who it is, what stands in the way (Trust,
passcode, Find My / Activation Lock, supervision and MDM), Erase All Content and Settings,
and the phone followed through its reboot by UDID to check the state it came back in.

Nothing can read an iPhone's storage back, so the outcome is at best ERASED_UNVERIFIED.
The post-state is the evidence, and each part of it must hold or the job FAILs: the phone
came back (same UDID), unactivated (at the setup assistant), and refusing the pair record
this host held before the erase (a new pairing identity).
"""
from __future__ import annotations

import time
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pymobiledevice3.exceptions import (
    GetProhibitedError,
    MissingValueError,
    PairingDialogResponsePendingError,
    PasswordRequiredError,
    PyMobileDevice3Exception,
    UserDeniedPairingError,
)
from pymobiledevice3.irecv_devices import IRECV_DEVICES

from phonewipe.erase.errors import DeviceGone, PhonewipeError
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, ProgressFn, Session

from .client import IosClient

if TYPE_CHECKING:
    from . import IosPlugin

ERASE_ALL = EraseMethod(
    name="ios-erase-all",
    title="cryptographic erase (Apple effaceable storage), vendor attested, post-state verified",
    category=Category.PURGE, technique=Technique.CRYPTO_ERASE, verifiable=False,
    expectation=None,
    description="Erase All Content and Settings (lockdown service com.apple.mobile.MCInstall, "
                "EraseDevice): the phone discards the keys of its encrypted storage and reboots; "
                "the phone is then found again by its UDID and must come back unactivated and "
                "refusing this computer's old pair record. Storage cannot be read back.")

TRUST_ADVICE = ("The iPhone does not trust this computer: unlock the phone, tap Trust when it "
                "asks (and enter its passcode), then run again.")
DENIED_ADVICE = ("The iPhone answered Don't Trust: unplug it, plug it back in, unlock it and tap "
                 "Trust, then run again.")
PASSCODE_ADVICE = ("The iPhone is locked with its passcode: unlock it and keep it on the Home "
                   "Screen, then run again.")
FIND_MY_ADVICE = ("Find My is on, so Activation Lock would keep the erased iPhone locked to its "
                  "owner: remove it from the owner's Apple ID (on the phone: Settings > [name] > "
                  "Find My > Find My iPhone off; or at icloud.com/find: Remove This Device), then "
                  "run again.")
RETURN_ADVICE = ("look at the phone: a progress bar means it is still erasing (run again when it "
                 "shows Hello); stuck on the Apple logo, put it in recovery mode and restore it "
                 "with Finder or Apple Devices, then erase it again")
NOT_ERASED_ADVICE = ("do not release it: erase it again (Settings > General > Transfer or Reset "
                     "iPhone, or a restore in recovery mode); if it still comes back as it was, "
                     "send it to physical destruction")


def marketing_name(product_type: str) -> str | None:
    return next((d.display_name for d in IRECV_DEVICES if d.product_type == product_type), None)


class IosSession(Session):
    def __init__(self, plugin: "IosPlugin", endpoint: Endpoint, client: IosClient) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.client = client
        self.udid = endpoint.address
        self.trust = "trusted"  # or untrusted, denied, passcode
        self._identity: Identity | None = None
        self.values: dict[str, Any] = {}
        self.post: dict[str, Any] = {}
        self.log: list[str] = []
        self._before: tuple[dict[str, Any] | None, Any, float] = (None, None, 0.0)

    # -- who it is -----------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            self.client.open(autopair=True, pair_timeout=self.plugin.pair_timeout)
            self.log.append("paired" if self.client.lockdown and self.client.lockdown.paired else "unpaired")
        except PairingDialogResponsePendingError:
            self.trust = "untrusted"
        except UserDeniedPairingError:
            self.trust = "denied"
        except PasswordRequiredError:
            self.trust = "passcode"
        if self.trust != "trusted":
            self.log.append(f"pairing refused: {self.trust}")
            self.client.open(autopair=False, pair_timeout=0)  # what it tells an unpaired host

    def identify(self) -> Identity:
        if self.client.lockdown is None:
            self._connect()
        lockdown = self.client.lockdown
        assert lockdown is not None
        self.values = dict(lockdown.all_values)
        v = self.values
        product = str(v.get("ProductType") or "")
        name = marketing_name(product)
        imeis = tuple(str(v[k]) for k in ("InternationalMobileEquipmentIdentity",
                                          "InternationalMobileEquipmentIdentity2") if v.get(k))
        capacity = None
        if lockdown.paired:
            capacity = self._value("com.apple.disk_usage", "TotalDiskCapacity")
        version = f"iOS {v.get('ProductVersion', '?')} ({v.get('BuildVersion', '?')})"
        self._identity = Identity(
            platform="ios", manufacturer="Apple",
            model=f"{name} ({product})" if name else product or None,
            serial=str(v["SerialNumber"]) if v.get("SerialNumber") else None, imeis=imeis,
            os_version=version, storage_type="NAND",
            capacity_bytes=int(capacity) if isinstance(capacity, int) else None,
            encryption="file")  # Data Protection: every file under keys in effaceable storage
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def _value(self, domain: str | None, key: str | None) -> Any:
        try:
            return self.client.value(domain, key)
        except (MissingValueError, GetProhibitedError):
            return None

    # -- what stands in the way ---------------------------------------------------------------
    def preflight(self) -> list[Finding]:
        if self._identity is None:
            self.identify()
        if self.trust != "trusted":
            advice = {"untrusted": TRUST_ADVICE, "denied": DENIED_ADVICE,
                      "passcode": PASSCODE_ADVICE}[self.trust]
            return [Finding(Severity.BLOCKER, f"ios-{self.trust}", advice)]
        findings = []
        if self.values.get("PasswordProtected"):
            findings.append(Finding(Severity.BLOCKER, "ios-passcode", PASSCODE_ADVICE))
        find_my = self._value("com.apple.fmip", "IsAssociated")
        if find_my:
            findings.append(Finding(Severity.BLOCKER, "ios-activation-lock", FIND_MY_ADVICE))
        elif find_my is None:
            findings.append(Finding(Severity.WARNING, "ios-find-my-unknown",
                                    "The iPhone did not say whether Find My is on: if it is, "
                                    "Activation Lock will hold the erased phone."))
        else:
            findings.append(Finding(Severity.INFO, "ios-find-my-off", "Find My is off: no "
                                    "Activation Lock will hold the erased phone."))
        managed = self._management()
        findings.append(self.plugin.management_finding(managed) if managed else Finding(
            Severity.INFO, "ios-unmanaged", "Not supervised, no MDM profile installed."))
        state = self.values.get("ActivationState")
        findings.append(Finding(Severity.INFO, "ios-activation", f"ActivationState: {state}."))
        assert self._identity is not None
        self._identity = replace(self._identity, activation_lock=bool(find_my), mdm=bool(managed))
        return findings

    def _management(self) -> dict[str, Any]:
        try:
            cloud, profiles = self.client.management()
        except PyMobileDevice3Exception as exc:
            return {"unknown": f"MCInstall did not answer ({type(exc).__name__})"}
        out: dict[str, Any] = {}
        if cloud.get("IsSupervised"):
            out["supervised_by"] = str(cloud.get("OrganizationName") or "an organisation")
        if profiles:
            out["profiles"] = profiles
        return out

    def methods(self) -> list[EraseMethod]:
        return [ERASE_ALL] if self.trust == "trusted" else []

    # -- the erase ------------------------------------------------------------------------------
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        """Ask for Erase All Content and Settings; `finish` follows the phone's reboot."""
        if method != ERASE_ALL or self.client.lockdown is None:
            raise PhonewipeError(f"method {method.name} is not an iPhone method",
                                 "choose ios-erase-all")
        lockdown = self.client.lockdown
        self._before = (lockdown.pair_record, self.values.get("DevicePublicKey"), time.monotonic())
        try:
            self.client.erase_device()
        except PasswordRequiredError as exc:
            raise PhonewipeError("the iPhone refused the erase while locked", PASSCODE_ADVICE) from exc
        self.log.append("EraseDevice acknowledged")
        self.client.close_lockdown()
        capacity = self._identity.capacity_bytes if self._identity else None
        size = f", {capacity / 2**30:.2f} GiB" if capacity else ""
        return EraseReport(0, None, f"all user data (the phone's encrypted storage{size})",
                           {"protocol": "lockdown com.apple.mobile.MCInstall EraseDevice"})

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        """Follow the phone through its reboot by UDID and check the state it came back in:
        the erase's only evidence. Anything short of it FAILs the job."""
        old_record, old_key, asked = self._before
        left = self.client.wait_listed(False, timeout=min(60.0, self.plugin.reboot_timeout))
        back = self.client.wait_listed(True, timeout=self.plugin.reboot_timeout)
        if back is None:
            raise PhonewipeError(
                f"the iPhone acknowledged Erase All Content and Settings but did not come back "
                f"within {self.plugin.reboot_timeout:g} s", RETURN_ADVICE)
        self.post = self._post_check(old_record, old_key, time.monotonic() - asked, left)
        return {"post_state": self.post}

    def _reopen(self, old_record: dict[str, Any] | None) -> Any:
        """lockdownd of the returned phone, unpaired, offered the old pair record; a phone
        just back on the bus may take a moment before lockdownd answers."""
        deadline = time.monotonic() + min(60.0, self.plugin.reboot_timeout)
        while True:
            try:
                return self.client.open(autopair=False, pair_timeout=0, pair_record=old_record)
            except DeviceGone:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _post_check(self, old_record: dict[str, Any] | None, old_key: Any, elapsed: float,
                    left: float | None) -> dict[str, Any]:
        lockdown = self._reopen(old_record)
        values = lockdown.all_values
        post = {"returned_by_udid": self.udid, "returned_after_s": round(elapsed, 1),
                "left_the_bus": left is not None,
                "activation_state": str(values.get("ActivationState")),
                "old_pair_record": "accepted" if lockdown.paired else "refused",
                "pairing_identity": "unchanged" if values.get("DevicePublicKey") == old_key else "new"}
        self.log.append(f"post-state {post}")
        wrong = []
        if values.get("UniqueDeviceID") != self.udid:  # usbmuxd's listing, confirmed by lockdownd
            wrong.append(f"as another device ({str(values.get('UniqueDeviceID'))[:40]!r})")
        if post["activation_state"] != "Unactivated":
            wrong.append(f"still {post['activation_state']} (not at the setup assistant)")
        if lockdown.paired:
            wrong.append("still trusting this computer's old pair record")
        if wrong:
            raise PhonewipeError("the iPhone acknowledged the erase but came back "
                                 f"{' and '.join(wrong)}: it was not erased", NOT_ERASED_ADVICE)
        post["setup_assistant"] = True  # unactivated: activation is the assistant's first step
        return post

    def reader(self) -> BlockReader | None:
        return None  # no raw storage access exists on an iPhone

    def post_state(self) -> dict[str, Any]:
        return dict(self.post)

    def transcript(self) -> dict[str, Any]:
        v = self.values
        return {"protocol": "usbmuxd/lockdownd", "commands": self.client.exchanges,
                "client": f"pymobiledevice3 "
                f"{metadata.version('pymobiledevice3')}", "udid": self.udid,
                "product_type": v.get("ProductType"), "meid": v.get("MobileEquipmentIdentifier"),
                "activation_state": v.get("ActivationState"), "trust": self.trust,
                "steps": list(self.log)}

    def close(self) -> None:
        self.client.close()
