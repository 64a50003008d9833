"""The block plugin without root: what it lists, and the demo's line when it cannot attach
a loop device."""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from phonewipe.demo import start_demo_handsets
from phonewipe.erase.emulation.fleet import stop_handsets
from phonewipe.erase.plugin import PluginOptions, close_plugins, sandbox_plugins
from phonewipe.protocols.block import BlockPlugin, emulator
from phonewipe.protocols.block.disks import list_disks


def test_a_private_bench_never_lists_the_hosts_disks(tmp_path: Path) -> None:
    plugins = sandbox_plugins(tmp_path)
    try:
        assert plugins["block"].discover() == []
    finally:
        close_plugins(plugins)


def test_fixed_disks_and_loop_devices_are_listed_only_when_named() -> None:
    listed = {e.address for e in BlockPlugin(PluginOptions({})).discover()}
    internal = {d.node for d in list_disks() if d.internal}
    assert not listed & internal
    assert all(not d.internal for d in list_disks() if d.node in listed)


def test_the_demo_skips_the_block_handset_in_one_line_without_loop_devices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator, "loop_unavailable", lambda: "attaching a loop device needs root")
    out = io.StringIO()
    plugins = sandbox_plugins(tmp_path)
    try:
        handsets = start_demo_handsets(["lumia-mass-storage"], tmp_path / "h", plugins,
                                       Console(file=out, width=200))
        stop_handsets(handsets)
    finally:
        close_plugins(plugins)
    assert handsets == []
    assert out.getvalue().strip() == ("skipped lumia-mass-storage: cannot emulate "
                                      "lumia-mass-storage as a block device: attaching a loop "
                                      "device needs root")


def test_which_disks_count_as_internal() -> None:
    from phonewipe.protocols.block.disks import Disk
    base = Disk(node="/dev/x", name="x", vendor="", model="", serial="", size=1 << 30,
                transport="usb", removable=False, partitions=(), devno=(8, 0))
    assert not base.internal  # a USB reader, removable flag or not
    assert not replace(base, transport="mmc", mmc_type="SD").internal  # an SD card
    assert replace(base, transport="mmc", mmc_type="MMC").internal  # a soldered eMMC
    assert replace(base, transport="ata").internal and replace(base, transport="loop").internal
    assert not replace(base, transport="scsi", removable=True).internal
