"""Re-verification from a certificate's plan, cryptographic-erase before/after samples, and
the adversarial handsets the wire must catch (hidden area), through the real adb server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import require_binary
from test_verify import StorageReader

from phonewipe.erase.audit import AuditLog
from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
from phonewipe.erase.emulation.personal import load_personal_data
from phonewipe.erase.emulation.profiles import load_profile
from phonewipe.erase.emulation.storage import HandsetStorage
from phonewipe.erase.errors import MediumUnreachable
from phonewipe.erase.job import JobSettings, run_job
from phonewipe.erase.model import Category, EraseMethod, Expectation, Outcome, Technique
from phonewipe.erase.pattern import new_key
from phonewipe.erase.plugin import EraseContext, EraseReport, PluginOptions, load_plugins
from phonewipe.erase.reverify import certified_plan, reverify
from phonewipe.erase.verify import make_plan
from phonewipe.protocols.virtual import VirtualPlugin
from phonewipe.protocols.virtual.session import VirtualSession

CRYPTO = EraseMethod("test-crypto", "Cryptographic erase (key destroyed)", Category.PURGE,
                     Technique.CRYPTO_ERASE, verifiable=True, expectation=Expectation.NO_PLAINTEXT)


class CryptoSession(VirtualSession):
    """Erases by destroying the storage key (a reset of the emulated encrypted phone); its
    read-back before and after is the virtual handset's own."""

    def methods(self) -> list[EraseMethod]:
        return [CRYPTO]

    def erase(self, method: EraseMethod, context: Any, progress: Any) -> EraseReport:
        self.storage.factory_reset()
        for path in list(self.storage.table.files):  # the planted files live in fs.json
            self.storage.delete_file(path)
        return EraseReport(0, Expectation.NO_PLAINTEXT, "userdata, key destroyed")

    def finish(self, method: EraseMethod, progress: Any) -> dict[str, Any]:
        return {}


def virtual(storage: HandsetStorage, session: type[VirtualSession] = VirtualSession) -> VirtualPlugin:
    """The virtual plugin with ``storage`` attached to its bus (an explicit attach: the
    profile is the rooted Pixel's, which starts in adb mode)."""
    plugin = VirtualPlugin()
    plugin.session_class = session
    plugin.bus.attach(storage)
    return plugin


def job(plugin: Any, tmp_path: Path, **settings: Any) -> Any:
    with AuditLog(tmp_path / "audit.sqlite") as audit:
        return run_job(plugin, plugin.discover()[0], JobSettings(**settings), audit)


def refill_with_plaintext(storage: HandsetStorage) -> None:
    """What a careless refurbisher's restore looks like: personal data end to end."""
    blob = b"".join(item.content for item in load_personal_data())
    blob = (blob + bytes(-len(blob) % 4096)) * (1 << 20 // len(blob) + 1)
    for off in range(0, storage.size, len(blob)):
        storage.write(off, blob[:storage.size - off], faulty=False)


@pytest.fixture
def certified(tmp_path: Path) -> Iterator[tuple[HandsetStorage, Any]]:
    storage = HandsetStorage.create(tmp_path / "h", load_profile("rooted"), "TEST0001")
    record = job(virtual(storage), tmp_path, seed=11)
    assert record.outcome is Outcome.ERASED_VERIFIED
    yield storage, record
    storage.close()


def test_the_plan_is_re_derived_exactly_from_the_record(certified) -> None:
    storage, record = certified
    plan = certified_plan(record)
    assert plan.extents() == make_plan("quick", storage.size, seed=11).extents()
    assert record.evidence["samples"]["extents"] == len(plan.extents())


def test_an_unchanged_device_reverifies_identical_and_a_fresh_seed_as_certified(certified) -> None:
    storage, record = certified
    same = reverify(record, StorageReader(storage))
    assert same.ok and same.verdict == "identical", same.reason
    assert same.counts["unchanged"] == same.samples == record.verification.samples_read
    fresh = reverify(record, StorageReader(storage), fresh_seed=True)
    assert fresh.fresh_seed and fresh.plan["seed"] != record.verification.plan["seed"]
    assert fresh.ok and fresh.verdict == "as-certified", fresh.reason


def test_a_device_refilled_with_plaintext_is_a_mismatch(certified) -> None:
    storage, record = certified
    refill_with_plaintext(storage)
    for fresh in (False, True):
        result = reverify(record, StorageReader(storage), fresh_seed=fresh)
        assert not result.ok and result.verdict == "mismatch"
        assert result.problems_total == result.samples
        assert any("PWMARK-" in p.found or "vCard" in p.found for p in result.problems)


def test_one_changed_sample_is_caught_by_its_digest(certified) -> None:
    storage, record = certified
    offset = certified_plan(record).extents()[7][0]
    storage.write(offset, os.urandom(4096), faulty=False)  # random, so no plaintext to see
    result = reverify(record, StorageReader(storage))
    assert result.verdict == "mismatch" and [p.offset for p in result.problems] == [offset]


def test_grouped_digests_of_huge_plans_still_pin_each_change(tmp_path: Path, monkeypatch) -> None:
    import phonewipe.erase.evidence
    monkeypatch.setattr(phonewipe.erase.evidence, "MAX_DIGESTS", 1000)  # 4,6xx samples: groups of 5
    storage = HandsetStorage.create(tmp_path / "h", load_profile("rooted"), "TEST0001")
    record = job(virtual(storage), tmp_path, seed=11)
    assert record.evidence["samples"]["group"] == 5
    assert reverify(record, StorageReader(storage)).verdict == "identical"
    offset = certified_plan(record).extents()[12][0]
    storage.write(offset, os.urandom(4096), faulty=False)
    result = reverify(record, StorageReader(storage))
    assert result.verdict == "mismatch" and [p.offset for p in result.problems] == [offset]
    assert result.counts["as-certified"] == 4  # the rest of its group still shows the pattern
    storage.close()


def _reset_after_certifying(record: Any, storage: HandsetStorage, observed: bool) -> Any:
    """The record as a finish step that reset the phone writes it, and the reset itself."""
    storage.factory_reset()
    sanitization = replace(record.sanitization,
                           details={**record.sanitization.details, "factory_reset": "requested"})
    return replace(record, sanitization=sanitization,
                   post_state={"reset_observed": True} if observed else {})


@pytest.mark.parametrize("observed", [True, False])
def test_only_an_observed_reset_explains_changed_samples(certified, observed: bool) -> None:
    storage, record = certified
    record = _reset_after_certifying(record, storage, observed)
    result = reverify(record, StorageReader(storage))
    if observed:
        assert result.verdict == "consistent", result.reason
    else:
        assert result.verdict == "mismatch" and "never observed" in result.reason


class _CacheBoundReader(StorageReader):
    def bypass_cache(self) -> str:
        raise MediumUnreachable("no way past the cache", "use another method")


def test_a_reader_that_cannot_pass_the_cache_reverifies_nothing(certified) -> None:
    storage, record = certified
    with pytest.raises(MediumUnreachable):
        reverify(record, _CacheBoundReader(storage))


def test_crypto_erase_compares_the_same_offsets_before_and_after(tmp_path: Path) -> None:
    honest = HandsetStorage.create(tmp_path / "honest", load_profile("rooted"), "TEST0001")
    record = job(virtual(honest, CryptoSession), tmp_path / "a", seed=5)
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert "0 unchanged" in record.verification.reason
    assert record.evidence["samples"]["before_erase"] != record.evidence["samples"]["digests"]
    # the same phone whose reset is acknowledged but never happens
    rooted = load_profile("rooted")
    liar = replace(rooted, faults=replace(rooted.faults, reset_lies=True))
    lying = HandsetStorage.create(tmp_path / "lying", liar, "TEST0001")
    record = job(virtual(lying, CryptoSession), tmp_path / "b", seed=5)
    assert record.outcome is Outcome.FAILED
    found = {f.found for f in record.verification.failures}
    assert "unchanged by the erase (same content before and after)" in found
    # without the before samples, old ciphertext would look like a successful crypto erase
    assert record.verification.failures_total > 0.9 * record.verification.samples_read


# -- through the real adb server and the emulated adbd ----------------------------------------
PHONEWIPE = [sys.executable, "-m", "phonewipe"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_binary("adb")
    from phonewipe.demo import free_port
    tmp = tmp_path_factory.mktemp("reverify")
    port = free_port()
    plugins = load_plugins(PluginOptions({"adb_port": port, "adb_home": tmp / "home"}),
                           only=["adb"])
    handsets = start_handsets(["rooted", "unrooted", "hidden-area", "lying-zeros", "unreadable"],
                              tmp / "handsets", plugins,
                              userdata_bytes=8 << 20)
    from phonewipe.certificates.keys import init_keys
    init_keys(tmp / "keys", "Test Org", "test signing")
    try:
        yield {"tmp": tmp, "port": port, "plugin": plugins["adb"],
               "handsets": {h.profile.name: h for h in handsets}}
    finally:
        stop_handsets(handsets)
        plugins["adb"].server.stop()


def adb_job(bench: dict[str, Any], name: str, **settings: Any) -> Any:
    handset = bench["handsets"][name]
    plugin = bench["plugin"]
    endpoint = [e for e in plugin.discover() if e.address == handset.endpoints["adb"]][0]
    with AuditLog(bench["tmp"] / f"{name}.sqlite") as audit:
        return run_job(plugin, endpoint, JobSettings(**settings), audit)


def test_hidden_area_is_caught_by_the_partition_table(bench: dict[str, Any]) -> None:
    record = adb_job(bench, "hidden-area", method="adb-raw-pattern")
    assert record.outcome is Outcome.FAILED, record.reason
    capacity = record.verification.capacity
    assert capacity["status"] == "mismatch" and capacity["evidence"]["/proc/partitions"] == 8 << 20
    assert capacity["reported"] < 8 << 20 and "capacity" in record.reason
    assert record.evidence["transcript"]["by_program"]["dd"] > 0


def test_zeros_for_untouched_blocks_are_caught_over_the_wire(bench: dict[str, Any]) -> None:
    record = adb_job(bench, "lying-zeros", method="adb-raw-pattern", verify_mode="nist")
    assert record.outcome is Outcome.FAILED, record.reason
    assert record.verification.failures[0].found.startswith("zeros where the keyed pattern")


def test_read_back_batches_cross_unreadable_sectors_sample_by_sample(bench: dict[str, Any]) -> None:
    """Batches run one ahead on a second shell; an I/O error ends a batch's `&&` chain, and
    the reader must still give each planned extent its own answer, in order."""
    from phonewipe.erase.pattern import pattern_bytes
    from phonewipe.protocols.adb.client import READ_BATCH  # plugin internals: the batch size only
    handset = bench["handsets"]["unreadable"]
    plugin = bench["plugin"]
    session = plugin.open([e for e in plugin.discover() if e.address == handset.endpoints["adb"]][0])
    session.identify()
    key = new_key()
    method = {m.name: m for m in session.methods()}["adb-raw-pattern"]
    session.erase(method, EraseContext(key), lambda done, total: None)
    reader = session.reader()
    block = reader.block_size
    blocks = reader.size // block
    lo, hi = 0.40 * reader.size, 0.41 * reader.size  # fixtures/profiles/unreadable.toml
    # scattered: unreadable extents land in several batches; then one run of adjacent
    # blocks (read by one dd) from readable into unreadable and out again
    extents = [((i * 7919) % blocks * block, block) for i in range(3 * READ_BATCH + 17)]
    first_bad = int(lo) // block
    extents += [(b * block, block) for b in range(first_bad - 10, first_bad + 40)]
    samples = list(reader.read_many(extents))
    assert len(samples) == len(extents)
    bad = [(off, data) for (off, n), data in zip(extents, samples, strict=True)
           if off < hi and off + n > lo]
    good = [(off, data) for (off, n), data in zip(extents, samples, strict=True)
            if not (off < hi and off + n > lo)]
    assert bad and all(data is None for _, data in bad)
    assert all(data == pattern_bytes(key, off, block) for off, data in good)


def _cli(bench: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PHONEWIPE, "--adb-port", str(bench["port"]), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(bench["tmp"] / "home")})


def test_plan_from_certificate_over_adb_then_a_refill_is_caught(bench: dict[str, Any]) -> None:
    from phonewipe.certificates.sign import CertificateSigner
    handset = bench["handsets"]["rooted"]
    record = adb_job(bench, "rooted", method="adb-raw-pattern", verify_mode="nist")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    assert record.verification.capacity["status"] == "consistent"
    cert = CertificateSigner(bench["tmp"] / "keys").write_certificate(record, bench["tmp"] / "out")
    _back_on_adb(bench, handset)

    assert record.post_state.get("reset_observed") is not True  # adb is off after the reset
    result = _cli(bench, "verify", "--plan-from", str(cert), handset.serial, "--json")
    assert result.returncode == 12, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["plan"] == {k: v for k, v in record.verification.plan.items()
                              if k != "pattern_key"}  # the same offsets, re-derived
    assert "flushbufs" in report["medium"]  # read past the phone's page cache
    # the reset re-keyed the storage, but it was only requested, never observed: a storage
    # liar could hide behind it, so changed samples are a mismatch
    assert report["verdict"] == "mismatch" and "never observed" in report["reason"]

    refill_with_plaintext(handset.storage)
    result = _cli(bench, "verify", "--plan-from", str(cert), "--fresh-seed", "--json")
    assert result.returncode == 12, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "mismatch" and report["fresh_seed"]
    assert report["problems_total"] == report["samples"]


def _back_on_adb(bench: dict[str, Any], handset: Any) -> None:
    """After the finish step's reset, the technician turns USB debugging back on."""
    deadline = time.monotonic() + 10
    while handset.storage.state.mode != "setup-wizard" and time.monotonic() < deadline:
        time.sleep(0.05)
    handset.storage.state.mode = "adb"
    bench["plugin"].server.connect(handset.endpoints["adb"])


def test_fill_and_reset_certificates_say_they_cannot_be_rechecked(bench: dict[str, Any]) -> None:
    from phonewipe.certificates.sign import CertificateSigner
    handset = bench["handsets"]["unrooted"]
    record = adb_job(bench, "unrooted", method="adb-fill-reset")
    assert record.outcome is Outcome.ERASED_VERIFIED, record.reason
    cert = CertificateSigner(bench["tmp"] / "keys").write_certificate(record, bench["tmp"] / "out")
    _back_on_adb(bench, handset)
    result = _cli(bench, "verify", "--plan-from", str(cert), handset.serial)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be re-verified" in lines[0] and "fill files" in lines[0]


def test_plan_from_a_damaged_certificate_is_one_line(bench: dict[str, Any]) -> None:
    bad = bench["tmp"] / "not-a-cert.pdf"
    bad.write_bytes(b"%PDF-1.7\nnothing here\n")
    result = _cli(bench, "verify", "--plan-from", str(bad))
    assert result.returncode == 6
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
