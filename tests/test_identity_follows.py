"""Identity follows the phone (#18 item 2, #22 item 7): what any mode learned is merged into
the one record; emulated handsets have distinct, valid IMEIs, a dual-SIM one two; the adb
client reads both."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import require_binary
from test_adb_emulator import sh
from test_fastboot_follow import erase_in_bootloader, fleet  # noqa: F401 - a fixture

from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.emulation.profiles import load_profile, luhn_check_digit
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.identity import IdentityConflict, imei_ok, luhn_ok, merge_identity, model_names
from phonewipe.erase.model import Identity, Outcome
from phonewipe.erase.plugin import close_plugins, sandbox_plugins
from phonewipe.protocols.adb.client_channel import parse_imei_parcel


# -- the merge rule ------------------------------------------------------------------------
def test_later_values_fill_unknown_fields_and_never_replace_known_ones() -> None:
    bootloader = Identity("android", model="bluejay", serial="PW1", storage_type="UFS",
                          capacity_bytes=1 << 25, bootloader_locked=False)
    android = Identity("android", manufacturer="Google", model="Pixel 6a", serial="PW1",
                       imeis=("356938037290302", "356938037290310"), os_version="14",
                       bootloader_locked=True, frp=False)
    merged = merge_identity(bootloader, android)
    assert merged.manufacturer == "Google" and merged.os_version == "14" and merged.frp is False
    assert merged.imeis == android.imeis
    assert merged.bootloader_locked is False  # known: kept
    assert merged.model == "Pixel 6a"  # but Android's marketing name beats the codename
    assert merged.storage_type == "UFS" and merged.capacity_bytes == 1 << 25
    assert merge_identity(merged, Identity("android", serial="PW1", imeis=("1", merged.imeis[0]))
                          ).imeis == (*android.imeis, "1")  # the union, in the order first seen
    assert merge_identity(Identity("unknown"), android).platform == "android"


def test_the_os_side_model_name_wins_whichever_mode_came_first() -> None:
    bootloader = Identity("android", model="bluejay", serial="PW1")
    android = Identity("android", manufacturer="Google", model="Pixel 6a", serial="PW1",
                       os_version="14")
    assert merge_identity(android, bootloader).model == "Pixel 6a"  # erased in Android first
    assert merge_identity(bootloader, android).model == "Pixel 6a"  # erased in the bootloader
    recovery = Identity("android", model="Pixel 6a (recovery)", serial="PW1", os_version="14")
    assert merge_identity(android, recovery).model == "Pixel 6a"  # two OS sides: the first kept
    assert merge_identity(bootloader, Identity("android", model="oriole", serial="PW1")
                          ).model == "bluejay"  # two codenames: the first kept
    assert model_names(model_names({}, "fastboot", bootloader), "adb", android) == \
        {"fastboot": "bluejay", "adb": "Pixel 6a"}
    assert model_names({}, "adb", Identity("android")) == {}


def test_a_different_serial_is_never_merged() -> None:
    with pytest.raises(IdentityConflict) as err:
        merge_identity(Identity("android", serial="PW1"), Identity("android", serial="PW2"))
    assert "'PW2'" in err.value.line() and "'PW1'" in err.value.line()
    assert merge_identity(Identity("android", serial=None), Identity("android", serial="PW2")
                          ).serial == "PW2"


# -- emulated IMEIs ---------------------------------------------------------------------------
def test_luhn_check_digit() -> None:
    assert luhn_check_digit("35693803564380") == "9" and luhn_ok("356938035643809")
    assert luhn_check_digit("49015420323751") == "8"  # the GSMA's worked example


def test_each_emulated_handset_has_its_own_valid_imeis(tmp_path: Path) -> None:
    rooted = load_profile("rooted")  # a Pixel 6a: physical SIM and eSIM
    imeis = {serial: rooted.imeis(serial) for serial in (rooted.serial(i) for i in range(64))}
    flat = [i for pair in imeis.values() for i in pair]
    assert len(set(flat)) == len(flat) == 128  # distinct across 64 handsets
    for first, second in imeis.values():
        assert luhn_ok(first) and luhn_ok(second) and len(first) == 15
        assert first[:8] == second[:8] == "35693803"  # the model's type allocation code
        assert int(second[8:14]) == int(first[8:14]) + 1 or first[8:14] == "999999"
    assert len(load_profile("unrooted").imeis("PWUNRT0000")) == 1
    assert load_profile("virtual").imeis("X") == [] or all(map(luhn_ok, load_profile("virtual").imeis("X")))
    storage = HandsetStorage.create(tmp_path / "h", rooted, "PWROOT0007")
    assert storage.state.imeis == rooted.imeis("PWROOT0007")
    assert HandsetStorage(tmp_path / "h", rooted).state.imeis == storage.state.imeis  # kept


def android_10_dual_sim(tmp_path: Path) -> Path:
    """A dual-SIM phone on Android 10, whose IPhoneSubInfo numbers getDeviceIdForPhone 3."""
    path = tmp_path / "android-10-dual.toml"
    path.write_text('extends = "rooted"\ndescription = "dual-SIM Android 10"\n'
                    '[device]\nandroid = "10"\nsdk = 29\nserial_prefix = "PWDS10"\n')
    return path


def test_the_emulated_shell_answers_each_sim_slot_as_its_android_version_does(
        tmp_path: Path) -> None:
    dual = HandsetStorage.create(tmp_path / "dual", load_profile("rooted"), "PWROOT0000")
    single = HandsetStorage.create(tmp_path / "single", load_profile("unrooted"), "PWUNRT0000")
    ten = HandsetStorage.create(tmp_path / "ten", load_profile(str(android_10_dual_sim(tmp_path))),
                                "PWDS100000")

    def digits(storage: HandsetStorage, command: str) -> str | None:
        status, out, _ = sh(storage, command)
        assert status == 0 and out.startswith("Result: Parcel(")
        return parse_imei_parcel(out)
    ask = "service call iphonesubinfo {} i32 {} s16 com.android.shell"
    assert digits(dual, ask.format(4, 0)) == dual.state.imeis[0]  # Android 14: 4
    assert digits(dual, ask.format(4, 1)) == dual.state.imeis[1]
    assert digits(dual, ask.format(4, 1) + " s16 null") == dual.state.imeis[1]  # with a feature id
    assert digits(dual, ask.format(3, 1)) is None  # getNaiForSubscriber there: no IMEI
    assert digits(ten, ask.format(3, 0)) == ten.state.imeis[0]  # Android 10: 3
    assert digits(ten, ask.format(3, 1)) == ten.state.imeis[1]
    assert digits(ten, ask.format(4, 1)) is None  # getImeiForSubscriber there
    assert digits(single, ask.format(4, 0)) == single.state.imeis[0]
    # no second phone: a phone id past the count is phone 0 (PhoneSubInfoController)
    assert digits(single, ask.format(4, 1)) == single.state.imeis[0]
    assert digits(dual, "service call iphonesubinfo 1 s16 com.android.shell") == dual.state.imeis[0]
    assert sh(dual, "getprop persist.radio.multisim.config")[1] == "dsds\n"
    assert sh(single, "getprop persist.radio.multisim.config")[1] == "ssss\n"


def test_only_an_imei_is_recorded_as_one() -> None:
    assert imei_ok("356938035643809") and imei_ok("490154203237518")
    assert not imei_ok("356938035643808")  # check digit wrong
    assert not imei_ok("310260000000000")  # an IMSI's shape: 15 digits, no check digit
    assert not imei_ok("35693803564380") and not imei_ok("3569380356438090")
    assert not imei_ok("35693803564380A")


# -- through the real adb server ---------------------------------------------------------------
@pytest.fixture
def adb_phones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[Any]]]:
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = sandbox_plugins(tmp_path)
    handsets = start_handsets(["rooted", "rooted", "unrooted", str(android_10_dual_sim(tmp_path))],
                              tmp_path / "handsets", plugins)
    try:
        yield plugins["adb"], handsets
    finally:
        stop_handsets(handsets)
        close_plugins(plugins)


def test_the_adb_client_reads_both_imeis_of_a_dual_sim_phone(adb_phones) -> None:
    adb, handsets = adb_phones
    seen = {}
    for handset in handsets:
        [endpoint] = [e for e in adb.discover() if e.address == handset.endpoints["adb"]]
        with adb.open(endpoint) as session:
            seen[handset.serial] = session.identify().imeis
        assert seen[handset.serial] == tuple(handset.storage.state.imeis)
    assert [len(v) for v in seen.values()] == [2, 2, 1, 2]  # Android 14, 14, 14, 10
    assert len({i for v in seen.values() for i in v}) == 7  # no two phones share an IMEI
    assert all(imei_ok(i) for v in seen.values() for i in v)


def test_a_phone_erased_in_the_bootloader_is_certified_with_what_android_said(
        fleet, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    plugins, start = fleet
    handset = start("bootloader-unlocked")
    record, events = erase_in_bootloader(plugins, handset, tmp_path)
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    device = record.device
    assert device.serial == handset.serial and device.manufacturer == "Google"
    assert device.os_version == "14" and device.imeis == tuple(handset.storage.state.imeis)
    assert device.storage_type == "UFS" and device.bootloader_locked is False  # the bootloader's
    assert device.model == "Pixel 6a"  # Android's name for it, not the board's codename
    assert record.evidence["model_names"] == {"fastboot": "bluejay", "adb": "Pixel 6a"}
    assert events.count("identified") == 2  # in the bootloader, then in Android
    assert len(device.imeis) == 2 and all(map(imei_ok, device.imeis))  # both SIM slots
    from phonewipe.certificates.keys import init_keys
    from phonewipe.certificates.sign import CertificateSigner
    init_keys(tmp_path / "keys", "Test Org", "test signing")
    cert = CertificateSigner(tmp_path / "keys").write_certificate(record, tmp_path / "certs")
    text = subprocess.run([require_binary("pdftotext"), "-layout", str(cert), "-"],
                          capture_output=True, text=True).stdout
    assert all(imei in text for imei in device.imeis), text  # both on the certificate
    assert "Pixel 6a" in text
