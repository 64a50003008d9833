"""What a finished job may honestly claim: the NIST SP 800-88 / IEEE 2883 category and
the sentence that justifies it, printed beside each other on the certificate."""
from __future__ import annotations

from dataclasses import dataclass

from .model import Category, EraseMethod, Identity, Outcome, Technique, VerificationResult

STANDARD = "NIST SP 800-88 Rev. 2 (2025); IEEE 2883-2022"
NIST_SAMPLING = "sampling per NIST SP 800-88 Rev. 1 §4.7"
MOBILE_APPENDIX = "NIST SP 800-88 Rev. 1 App. A (mobile devices)"


@dataclass(frozen=True)
class Assessment:
    category: str
    justification: str
    standard: str = STANDARD  # exactly the documents the record relies on


def standard_for(verification: VerificationResult | None, justification: str) -> str:
    """The standards line: exactly the documents the record relies on — the Rev. 1 sampling
    clause only where `nist` sampling ran, the mobile-device appendix only where the
    justification cites it."""
    parts = [STANDARD]
    if verification is not None and verification.mode == "nist" and verification.samples_read:
        parts.append(NIST_SAMPLING)
    if MOBILE_APPENDIX in justification:
        parts.append(MOBILE_APPENDIX)
    return "; ".join(parts)


def assess(method: EraseMethod, identity: Identity, outcome: Outcome,
           verification: VerificationResult | None, scope: str = "") -> Assessment:
    if outcome in (Outcome.FAILED, Outcome.BLOCKED):
        return Assessment(Category.NONE.value,
                          "Sanitization was not demonstrated, so no category is claimed.")
    if outcome is Outcome.ERASED_UNVERIFIED:  # performed, not demonstrated: no category
        why = verification.reason.removeprefix("not verified: ") \
            if verification is not None and verification.reason else "no read-back"
        encrypted = identity.encryption in ("file", "block")
        keys = (" on a phone that encrypts user data (a reset destroys its keys, "
                "vendor-attested)" if encrypted and method.technique in (
                    Technique.FACTORY_RESET, Technique.CRYPTO_ERASE) else "")
        return Assessment(Category.NONE.value,
                          f"No category is claimed: {method.title} was performed{keys}, but "
                          f"nothing was read back to demonstrate it ({why}). "
                          f"{method.category.value} is claimed only for an erase verified by "
                          "read-back.", standard_for(verification, ""))
    return _assess(method, identity, outcome, verification, scope)


def _assess(method: EraseMethod, identity: Identity, outcome: Outcome,
            verification: VerificationResult | None, scope: str) -> Assessment:
    a = _claim(method, identity, outcome, verification, scope)
    return Assessment(a.category, a.justification, standard_for(verification, a.justification))


def _claim(method: EraseMethod, identity: Identity, outcome: Outcome,
           verification: VerificationResult | None, scope: str) -> Assessment:
    sampled = "not verified by read-back"
    if outcome is Outcome.ERASED_VERIFIED and verification is not None:
        how = "a full read-back" if verification.mode == "full" else f"{verification.mode} sampling"
        sampled = (f"verified by {how} ({verification.samples_read:,} samples, "
                   f"{verification.bytes_read:,} bytes read back)")
    encrypted = identity.encryption in ("file", "block")
    if method.technique is Technique.OVERWRITE and not method.through_files:
        return Assessment(Category.CLEAR.value,
                          f"Clear: logical overwrite of every addressable block of the erased "
                          f"area ({scope}), "
                          f"{sampled}. Flash over-provisioning and remapped blocks are not "
                          "addressable by overwrite, so Purge is not claimed.")
    if method.technique is Technique.OVERWRITE:
        reset = ("then the manufacturer's factory reset, which destroys the file-encryption "
                 "keys (vendor-attested) and so also covers what the fill cannot reach (the "
                 "file system's reserved blocks and metadata: see the method details)"
                 if encrypted else "then the manufacturer's factory reset; what the fill "
                 "cannot reach (the file system's reserved blocks and metadata) is not covered")
        return Assessment(Category.CLEAR.value,
                          f"Clear: all user-accessible files deleted, the free space an app "
                          f"can reach overwritten with a keyed pattern and {sampled}; {reset}. "
                          f"{MOBILE_APPENDIX} counts a full factory reset as Clear for "
                          "mobile devices.")
    if method.technique in (Technique.FACTORY_RESET, Technique.CRYPTO_ERASE):
        what = ("cryptographic erase by factory reset, vendor-attested (the device encrypts "
                "user data; key destruction cannot be observed over this protocol)"
                if encrypted else "factory reset of an unencrypted device, vendor-attested")
        return Assessment(Category.CLEAR.value,
                          f"Clear: {what}; {sampled}. Purge is claimed only when key "
                          "erasure can be verified.")
    return Assessment(method.category.value, f"{method.title}; {sampled}.")
