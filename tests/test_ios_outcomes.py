"""Each emulated iPhone ends as an honest tool must end it, through the plugin registry and
the core's job flow: the clean one ERASED, NOT VERIFIED (no storage read-back exists, the
post-state is the evidence, no category claimed, never "sampled"), the locked ones BLOCKED
with what to do, the one that never returns and the one that lies FAILED."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("pymobiledevice3")

from phonewipe.erase.audit import AuditLog  # noqa: E402
from phonewipe.erase.emulation.fleet import EmulatedHandset, start_handsets, stop_handsets  # noqa: E402
from phonewipe.erase.emulation.profiles import load_profile  # noqa: E402
from phonewipe.erase.job import JobSettings, run_job  # noqa: E402
from phonewipe.erase.model import Outcome, Record  # noqa: E402
from phonewipe.erase.plugin import close_plugins, sandbox_plugins  # noqa: E402

PROFILES = ["iphone", "iphone-untrusted", "iphone-findmy", "iphone-supervised", "iphone-passcode",
            "iphone-never-returns", "iphone-lies"]


class IosBench:
    def __init__(self, tmp: Path, extra: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.plugins = sandbox_plugins(tmp, {"ios_reboot_timeout": 3.0, **(extra or {})})
        self.handsets: list[EmulatedHandset] = []

    def erase(self, profile: str) -> tuple[Record, EmulatedHandset]:
        [handset] = start_handsets([profile], self.tmp / "phones" / Path(profile).stem, self.plugins)
        self.handsets.append(handset)
        plugin = self.plugins["ios"]
        [endpoint] = [e for e in plugin.discover() if e.address == handset.endpoints["ios"]]
        with AuditLog(self.tmp / "audit.sqlite") as audit:
            return run_job(plugin, endpoint, JobSettings(), audit), handset

    def close(self) -> None:
        stop_handsets(self.handsets)
        close_plugins(self.plugins)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[IosBench]:
    b = IosBench(tmp_path)
    yield b
    b.close()


@pytest.mark.parametrize("profile", PROFILES)
def test_each_iphone_ends_as_its_profile_says_and_never_passes(bench: IosBench, profile: str) -> None:
    record, handset = bench.erase(profile)
    assert record.outcome.value == load_profile(profile).expect, record.reason
    assert record.outcome is not Outcome.ERASED_VERIFIED  # nothing reads an iPhone back
    assert record.device.platform == "ios" and record.device.model == "iPhone 13 Pro (iPhone14,2)"
    assert record.evidence["transcript"]["udid"] == handset.endpoints["ios"]


def test_the_clean_iphone_is_erased_not_verified_with_its_post_state(bench: IosBench) -> None:
    record, handset = bench.erase("iphone")
    assert record.outcome is Outcome.ERASED_UNVERIFIED
    device = record.device
    assert device.serial == handset.serial and device.manufacturer == "Apple"
    assert device.imeis == tuple(handset.storage.state.imeis) and len(device.imeis) == 2
    assert device.os_version == "iOS 17.5.1 (21F90)" and device.encryption == "file"
    assert device.capacity_bytes == handset.storage.size
    assert device.activation_lock is False and device.mdm is False
    s, v = record.sanitization, record.verification
    assert s is not None and v is not None
    assert s.method == "ios-erase-all" and s.technique == "crypto-erase"
    assert s.title == "cryptographic erase (Apple effaceable storage), vendor attested, post-state verified"
    assert s.category == "None" and "sampl" not in s.justification.lower()
    assert v.mode == "none" and v.samples_read == 0
    assert record.post_state == {"returned_by_udid": handset.endpoints["ios"], "left_the_bus": True,
                                 "returned_after_s": record.post_state["returned_after_s"],
                                 "activation_state": "Unactivated", "old_pair_record": "refused",
                                 "pairing_identity": "new", "setup_assistant": True}
    assert record.evidence["transcript"]["meid"] == device.imeis[0][:14]
    assert handset.storage.state.resets == 1  # the emulated storage key was destroyed


@pytest.mark.parametrize(("profile", "code", "words"), [
    ("iphone-untrusted", "ios-untrusted", "tap Trust"),
    ("iphone-passcode", "ios-passcode", "passcode"),
    ("iphone-findmy", "ios-activation-lock", "remove it from the owner's Apple ID"),
    ("iphone-supervised", "ios-managed", "ACME Corp"),
])
def test_locked_iphones_are_blocked_untouched_with_what_to_do(bench: IosBench, profile: str,
                                                            code: str, words: str) -> None:
    record, handset = bench.erase(profile)
    assert record.outcome is Outcome.BLOCKED and words in record.reason
    assert code in [f.code for f in record.findings if f.severity.value == "blocker"]
    assert record.sanitization is None and handset.storage.state.resets == 0


def test_a_supervised_iphone_is_erased_with_a_warning_when_the_policy_says_warn(tmp_path: Path) -> None:
    bench = IosBench(tmp_path, {"ios_supervised": "warn"})
    try:
        record, _ = bench.erase("iphone-supervised")
    finally:
        bench.close()
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    [managed] = [f for f in record.findings if f.code == "ios-managed"]
    assert managed.severity.value == "warning" and "ACME Corp" in managed.message
    assert record.device.mdm is True


def test_the_lying_iphone_fails_and_says_why(bench: IosBench) -> None:
    record, handset = bench.erase("iphone-lies")
    assert record.outcome is Outcome.FAILED
    assert "still Activated" in record.reason and "old pair record" in record.reason
    assert "destruction" in record.reason
    assert handset.storage.state.resets == 0
    assert record.sanitization is not None and record.sanitization.method == "ios-erase-all"
    assert record.sanitization.category == "None"  # what was attempted, nothing claimed


def test_the_iphone_that_never_returns_fails_with_what_to_do(bench: IosBench) -> None:
    record, _ = bench.erase("iphone-never-returns")
    assert record.outcome is Outcome.FAILED
    assert "did not come back within 3 s" in record.reason and "recovery mode" in record.reason


def test_an_ipad_without_telephony_from_a_profile_of_ones_own(bench: IosBench, tmp_path: Path) -> None:
    """A profile file outside fixtures/ (its [ios] table read from its own path), a Wi-Fi iPad:
    no IMEI, its marketing name from ProductType."""
    profile = tmp_path / "my-ipad.toml"
    profile.write_text('extends = "iphone"\ndescription = "iPad Wi-Fi"\nexpect = "ERASED_UNVERIFIED"\n'
                       '[device]\nserial_prefix = "PWIPAD"\nimei = ""\n'
                       '[ios]\nproduct_type = "iPad13,4"\nhardware_model = "J517AP"\n')
    record, handset = bench.erase(str(profile))
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert record.device.model == "iPad Pro 11-inch (3rd gen, WiFi) (iPad13,4)"
    assert record.device.imeis == () and record.device.serial == handset.serial


def test_the_iphone_certificate_wording_names_its_lock_and_scope(bench: IosBench) -> None:
    from phonewipe.certificates.wording import _device_rows, scope_sentence
    record, _ = bench.erase("iphone")
    assert scope_sentence(record).startswith(f"all user data of {record.device.capacity_bytes:,} bytes")
    labels = [label for label, _ in _device_rows(record)]
    assert "Activation Lock (Find My)" in labels and "FRP (Google account)" not in labels


def test_an_iphone_unplugged_mid_job_is_one_line_not_an_internal_error(bench: IosBench) -> None:
    from phonewipe.erase.errors import DeviceGone
    [handset] = start_handsets(["iphone"], bench.tmp / "phones" / "gone", bench.plugins)
    bench.handsets.append(handset)
    plugin = bench.plugins["ios"]
    [endpoint] = [e for e in plugin.discover() if e.address == handset.endpoints["ios"]]
    with plugin.open(endpoint) as session:
        session.identify()
        [emulator] = handset.emulators
        emulator.stop()  # the cable is pulled: off usbmuxd, its connections cut
        emulator.device._go_offline()
        with pytest.raises(DeviceGone) as gone:
            session.preflight()
    assert "\n" not in gone.value.line() and "check the cable" in gone.value.line()


def own_profile(tmp: Path, name: str, body: str) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(f'extends = "iphone"\ndescription = "{name}"\n{body}')
    return str(path)


def test_an_iphone_back_at_hello_but_still_trusting_the_old_pairing_fails(bench: IosBench,
                                                                         tmp_path: Path) -> None:
    """The other half of a lie: unactivated, but the same identity and pairings (nothing
    was erased). Each half of the post-state must hold."""
    record, handset = bench.erase(own_profile(tmp_path, "half-liar", '[device]\nserial_prefix = "PWIHL"\n'
                                              '[ios]\nerase = "lies-unactivated"\n'))
    assert record.outcome is Outcome.FAILED, record.reason
    assert "still trusting this computer's old pair record" in record.reason
    assert "still Activated" not in record.reason and handset.storage.state.resets == 0


def test_hostile_iphone_strings_are_cleaned_and_kept_as_evidence(bench: IosBench, tmp_path: Path) -> None:
    record, _ = bench.erase(own_profile(
        tmp_path, "hostile", '[device]\nserial_prefix = "PW\\u001b[2J"\n'
        '[ios]\nproduct_type = "iPhone99,9\\u202e[red]x[/red]"\nbuild_version = "21F90\\u0007"\n'))
    assert record.outcome is Outcome.ERASED_UNVERIFIED, record.reason
    assert record.device.serial is not None and "\x1b" not in record.device.serial
    assert "\\x1b" in record.device.serial
    assert record.device.model is not None and "\u202e" not in record.device.model
    assert "\\u202e" in record.device.model and "\x07" not in (record.device.os_version or "")
    original = record.evidence["device_strings"]["original"]  # the bytes as sent, base64
    assert base64.b64decode(original["model"]).decode() == "iPhone99,9\u202e[red]x[/red]"
    assert base64.b64decode(original["serial"]) == b"PW\x1b[2J0000"
