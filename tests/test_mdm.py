"""Management an IT department can act on (#22 item 8) and locks recorded for the phones they
block (#22 item 2): the MDM product from the device owner's package with its console steps,
a company-owned work profile, Samsung's Reactivation Lock, `[fleet] mdm` for the
organisation's own MDM (recorded as evidence), storage type from the partition's kernel
name, e-mails masked. Driven over the real adb server against emulated handsets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import require_binary

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.mdm import GENERIC, PRODUCTS, management_finding, mask_email, product_of
from phonewipe.erase.model import Operator, Outcome, Severity
from phonewipe.erase.plugin import close_plugins, sandbox_plugins
from phonewipe.protocols.adb.client import storage_type_of

STEPS = ("wipe it from", "zero-touch", "Knox Mobile Enrollment",
         "enterprise Factory Reset Protection policy", "turn on USB debugging again")


@pytest.mark.parametrize("package, product", [
    ("com.microsoft.windowsintune.companyportal", "Microsoft Intune"),
    ("com.jamf.management.android", "Jamf"),
    ("com.airwatch.androidagent", "VMware Workspace ONE (AirWatch)"),
    ("com.google.android.apps.work.clouddpc", "Google endpoint management (Android Device Policy)"),
    ("com.sds.emm.cloud.knox.samsung", "Samsung Knox Manage"),
    ("com.mobileiron", "Ivanti (MobileIron)"),
    ("com.forgepond.locksmith", "Ivanti (MobileIron)"),
    ("com.example.mdm", GENERIC.name),
])
def test_the_advice_names_the_product_and_the_steps(package: str, product: str) -> None:
    assert product_of(package).name == product
    finding = management_finding(package, f"{package}/.Admin", "device-owner")
    assert finding.severity is Severity.BLOCKER
    assert product in finding.message and package in finding.message
    assert all(step in finding.message for step in STEPS), finding.message
    assert f"{package}/.Admin" not in finding.message  # a product, not a component
    assert "Have the organisation that manages it release it" in finding.message


def test_the_organisations_own_mdm_is_released_from_your_console() -> None:
    intune = "com.microsoft.windowsintune.companyportal"
    for own in ("Intune", intune, "com.microsoft.windowsintune"):
        message = management_finding(intune, "x", "device-owner", own).message
        assert "your organisation's own MDM" in message and "Release it from your console" in message
    other = management_finding("com.airwatch.androidagent", "x", "device-owner", "Intune").message
    assert "own MDM" not in other


def test_every_product_is_in_the_table() -> None:
    names = " ".join(p.name for p in PRODUCTS)
    for product in ("Intune", "Jamf", "Workspace ONE", "Google endpoint management",
                    "Knox Manage", "MobileIron"):
        assert product in names


def test_emails_are_masked() -> None:
    assert mask_email("A Google account (jane.doe@gmail.com) is in") == \
        "A Google account (j***@gmail.com) is in"


def test_storage_type_from_the_partitions_kernel_name() -> None:
    assert storage_type_of("sda34") == "UFS" and storage_type_of("mmcblk0p45") == "eMMC"
    assert storage_type_of("nvme0n1p3") == "NVMe"
    assert storage_type_of("dm-4") is None and storage_type_of(None) is None


@pytest.fixture
def erase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """erase(profile, **settings) -> the record of one job over adb on that emulated phone."""
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = sandbox_plugins(tmp_path)
    started: list[Any] = []

    def run(profile: str, **settings: Any) -> Any:
        handsets = start_handsets([profile], tmp_path / f"h{len(started)}", plugins)
        started.extend(handsets)
        adb = plugins["adb"]
        [endpoint] = [e for e in adb.discover() if e.address == handsets[0].endpoints["adb"]]
        with AuditLog(tmp_path / f"audit{len(started)}.sqlite") as audit:
            return run_job(adb, endpoint, JobSettings(
                seed=7, operator=Operator(name="Ada", organization="ACME"), **settings), audit)
    try:
        yield run
    finally:
        stop_handsets(started)
        close_plugins(plugins)


@pytest.mark.interop
def test_an_intune_phone_is_blocked_with_intunes_steps_and_recorded(erase) -> None:
    record = erase("mdm-intune")
    assert record.outcome is Outcome.BLOCKED and record.device.mdm is True
    [finding] = [f for f in record.findings if f.code == "mdm-device-owner"]
    assert "Microsoft Intune" in finding.message and "Retain enrollment state" in finding.message
    assert "Microsoft Intune" in record.reason
    [seen] = record.evidence["management"]
    assert seen["product"] == "Microsoft Intune" and seen["kind"] == "device-owner"
    assert seen["own_mdm"] is False


@pytest.mark.interop
def test_the_organisations_own_mdm_is_recorded_as_evidence(erase) -> None:
    record = erase("mdm-intune", fleet_mdm="Microsoft Intune")
    assert record.outcome is Outcome.BLOCKED
    assert record.evidence["management"][0]["own_mdm"] is True
    assert "Release it from your console" in record.reason


@pytest.mark.interop
def test_a_company_owned_work_profile_is_detected_and_blocks(erase) -> None:
    record = erase("work-profile-cope")
    assert record.outcome is Outcome.BLOCKED and record.device.mdm is True
    [finding] = [f for f in record.findings if f.code == "mdm-work-profile"]
    assert "work profile on a company-owned phone" in finding.message
    assert "wiping only the work profile is not enough" in finding.message
    assert record.evidence["management"][0]["kind"] == "work-profile"


@pytest.mark.interop
def test_samsungs_reactivation_lock_is_checked_and_blocks(erase) -> None:
    record = erase("samsung-reactivation")
    assert record.outcome is Outcome.BLOCKED
    assert record.device.activation_lock is True
    assert record.device.storage_type == "eMMC"  # mmcblk0pN
    assert any(f.code == "samsung-reactivation-lock" for f in record.findings)
    assert "Reactivation Lock" in record.reason


@pytest.mark.interop
def test_locks_and_storage_are_recorded_and_the_account_masked(erase) -> None:
    frp = erase("frp-locked")
    assert frp.outcome is Outcome.BLOCKED and frp.device.frp is True and frp.device.mdm is False
    assert frp.device.storage_type == "UFS"  # sdaN
    assert "owner.example@gmail.com" not in frp.reason and "o***@gmail.com" in frp.reason
    assert frp.device.activation_lock is None  # not a Samsung: not checked
    mdm = erase("mdm-owned")
    assert mdm.device.mdm is True and mdm.device.frp is False
