"""What a finished job may honestly claim: the NIST SP 800-88 / IEEE 2883 category and
the sentence that justifies it, printed beside each other on the certificate."""
from __future__ import annotations

from dataclasses import dataclass

from .model import Category, EraseMethod, Identity, Outcome, Technique, VerificationResult

STANDARD = "NIST SP 800-88 Rev. 2 (2025); IEEE 2883-2022; sampling per NIST SP 800-88 Rev. 1 §4.7"


@dataclass(frozen=True)
class Assessment:
    category: str
    justification: str


def assess(method: EraseMethod, identity: Identity, outcome: Outcome,
           verification: VerificationResult | None, scope: str = "") -> Assessment:
    if outcome in (Outcome.FAILED, Outcome.BLOCKED):
        return Assessment(Category.NONE.value,
                          "Sanitization was not demonstrated, so no category is claimed.")
    verified = outcome is Outcome.ERASED_VERIFIED and verification is not None
    sampled = (f"verified by {verification.mode} sampling ({verification.samples_read} samples, "
               f"{verification.bytes_read} bytes read back)") if verified else "not verified by read-back"
    encrypted = identity.encryption in ("file", "block")
    if method.technique is Technique.OVERWRITE and method.name.endswith(("raw-pattern", "raw-zeros")):
        return Assessment(Category.CLEAR.value,
                          f"Clear: logical overwrite of the whole user-data partition ({scope}), "
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
                          "NIST SP 800-88 Rev. 1 App. A counts a full factory reset as Clear "
                          "for mobile devices.")
    if method.technique in (Technique.FACTORY_RESET, Technique.CRYPTO_ERASE):
        what = ("cryptographic erase by factory reset, vendor-attested (the device encrypts "
                "user data; key destruction cannot be observed over this protocol)"
                if encrypted else "factory reset of an unencrypted device, vendor-attested")
        return Assessment(Category.CLEAR.value,
                          f"Clear: {what}; {sampled}. Purge is claimed only when key "
                          "erasure can be verified.")
    return Assessment(method.category.value, f"{method.title}; {sampled}.")
