"""Emulated storage: planted data is really there, and resets/overwrites remove it."""
from __future__ import annotations

from phonewipe.erase.emulation.faults import lying_regions
from phonewipe.erase.emulation.personal import planted_markers
from phonewipe.erase.emulation.profiles import available_profiles, load_profile
from phonewipe.erase.emulation.storage import HandsetStorage


def test_every_profile_loads():
    names = available_profiles()
    for required in ("rooted", "unrooted", "frp-locked", "lying-1pct", "partial-50", "unplug-40"):
        assert required in names
    for name in names:
        assert load_profile(name).expect in {"ERASED_VERIFIED", "ERASED_UNVERIFIED", "FAILED", "BLOCKED"}


def test_planted_markers_are_findable_then_gone_after_reset(tmp_path):
    storage = HandsetStorage.create(tmp_path / "h", load_profile("unrooted"), "S1")
    image = (tmp_path / "h" / "userdata.img").read_bytes()
    markers = planted_markers()
    assert len(markers) >= 10
    assert all(m in image for m in markers), "the marker scan could never fail"
    assert b"SQLite format 3\x00" in image
    storage.factory_reset()
    image = (tmp_path / "h" / "userdata.img").read_bytes()
    assert not [m for m in markers if m in image]


def test_file_table_allocates_and_frees(tmp_path):
    storage = HandsetStorage.create(tmp_path / "h", load_profile("rooted"), "S1")
    free = storage.table.free_bytes()
    storage.create_file("/sdcard/a.bin", b"x" * 10000)
    assert storage.table.free_bytes() == free - 12288
    assert storage.read_file("/sdcard/a.bin", 9990, 100) == b"x" * 10
    storage.delete_file("/sdcard/a.bin")
    assert storage.table.free_bytes() == free


def test_lying_regions_have_the_requested_size():
    size = 64 << 20
    for layout in ("scattered", "contiguous", "middle"):
        regions = lying_regions(size, 0.01, layout, seed=5)
        total = sum(e - s for s, e in regions)
        assert 0.009 * size <= total <= 0.011 * size, layout
    middle = lying_regions(size, 0.01, "middle", 5)[0]
    assert middle[0] > 4096 and middle[1] < size - 4096
