"""What a certificate may claim is built from what the record proves."""
from __future__ import annotations

import importlib

from phonewipe.erase.model import (
    Category,
    EraseMethod,
    Expectation,
    Identity,
    Outcome,
    Technique,
    VerificationResult,
)
from phonewipe.erase.policy import MOBILE_APPENDIX, NIST_SAMPLING, STANDARD, assess

RAW = EraseMethod("x-raw-pattern", "raw", Category.CLEAR, Technique.OVERWRITE, True,
                  Expectation.PATTERN)
FILL = EraseMethod("x-fill-reset", "fill", Category.CLEAR, Technique.OVERWRITE, True,
                   Expectation.PATTERN, through_files=True)
RESET = EraseMethod("x-factory-reset", "reset", Category.CLEAR, Technique.CRYPTO_ERASE, False)
PHONE = Identity(platform="android", encryption="file")


def verified(mode: str, samples: int = 100) -> VerificationResult:
    return VerificationResult(mode=mode, status="passed", samples_read=samples)


def test_the_sampling_clause_is_cited_only_where_nist_sampling_ran() -> None:
    nist = assess(RAW, PHONE, Outcome.ERASED_VERIFIED, verified("nist"))
    quick = assess(RAW, PHONE, Outcome.ERASED_VERIFIED, verified("quick"))
    reset = assess(RESET, PHONE, Outcome.ERASED_UNVERIFIED,
                   VerificationResult(mode="none", status="unavailable"))
    assert NIST_SAMPLING in nist.standard
    assert NIST_SAMPLING not in quick.standard and quick.standard == STANDARD
    assert NIST_SAMPLING not in reset.standard


def test_the_mobile_appendix_is_cited_where_the_justification_leans_on_it() -> None:
    fill = assess(FILL, PHONE, Outcome.ERASED_VERIFIED, verified("quick"))
    assert MOBILE_APPENDIX in fill.justification and MOBILE_APPENDIX in fill.standard
    raw = assess(RAW, PHONE, Outcome.ERASED_VERIFIED, verified("quick"))
    assert MOBILE_APPENDIX not in raw.standard


def test_a_failure_claims_no_category() -> None:
    failed = assess(RAW, PHONE, Outcome.FAILED, verified("quick"))
    assert failed.category == Category.NONE.value


def test_a_whole_area_overwrite_is_never_worded_as_a_fill_and_reset() -> None:
    """Every plugin's overwrite of a whole area (a disk, an eMMC, a LUN, a partition) is
    claimed as such; only a fill through files cites the free space and the factory reset."""
    modules = ["adb.client", "block.session", "fastboot.session", "maemo.session",
               "qualcomm_edl.session", "virtual.session"]
    overwrites = [m for name in modules
                  for m in vars(importlib.import_module(f"phonewipe.protocols.{name}")).values()
                  if isinstance(m, EraseMethod) and m.technique is Technique.OVERWRITE]
    assert {m.name for m in overwrites} >= {"adb-raw-pattern", "block-pattern", "maemo-pattern",
                                            "edl-raw-pattern", "virtual-pattern", "adb-fill-reset"}
    for method in overwrites:
        a = assess(method, PHONE, Outcome.ERASED_VERIFIED, verified("quick"), "the area")
        if method.through_files:
            assert "free space" in a.justification and "factory reset" in a.justification
        else:
            assert "every addressable block of the erased area (the area)" in a.justification, method.name
            assert "factory reset" not in a.justification and "free space" not in a.justification
