"""What a certificate may claim is built from what the record proves."""
from __future__ import annotations

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
                   Expectation.PATTERN)
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
