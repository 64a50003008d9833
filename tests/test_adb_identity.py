"""What a phone says about itself over adb is data: a property value cannot inject another
property, and the identity holds the device's own serial."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import require_binary

from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.plugin import close_plugins, sandbox_plugins
from phonewipe.protocols.adb.client import parse_getprop


def test_the_getprop_dump_alone_can_be_injected() -> None:
    """Why the client reads the naming properties one by one: in the dump an injected line
    is as well-formed as a real one (here it even comes last and wins)."""
    dump = ("[ro.boot.flash.locked]: [1]\n[ro.product.manufacturer]: [samsung]\n"
            "[ro.boot.flash.locked]: [0]\n[ro.serialno]: [PWINJ0000]\n")
    assert parse_getprop(dump)["ro.boot.flash.locked"] == "0"


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = sandbox_plugins(tmp_path)
    handsets = start_handsets(["hostile-getprop"], tmp_path / "handsets", plugins)
    try:
        yield plugins["adb"], handsets[0]
    finally:
        stop_handsets(handsets)
        close_plugins(plugins)


@pytest.mark.interop
def test_a_value_that_injects_a_property_does_not_change_the_identity(phone) -> None:
    adb, handset = phone
    [endpoint] = [e for e in adb.discover() if e.address == handset.endpoints["adb"]]
    with adb.open(endpoint) as session:
        identity = session.identify()
    assert identity.serial == handset.serial == "PWINJ0000"
    assert identity.bootloader_locked is True  # what the phone reports, not the injected line
    assert identity.manufacturer == "samsung]\n[ro.boot.flash.locked]: [0"  # kept as sent
    assert identity.imeis and identity.capacity_bytes  # identified over shell v2
