"""One phone, one identity, whatever modes it was seen in.

A phone erased in the bootloader and read back in Android told each mode something the
other could not (the bootloader: its lock state and storage; Android: manufacturer, IMEIs,
OS version). `merge_identity` folds what a later mode learned into what the job already
knows: a later value fills a field still unknown, never replaces a known one, and the IMEIs
are the union in the order first seen. One exception: the model. A bootloader names the
board by its codename ("bluejay"), the running OS by its marketing name ("Pixel 6a"), and a
buyer knows the phone by the second, so the model of a mode that reports an OS version beats
one from a mode that does not. `model_names` keeps what each mode said, for the evidence.
A different serial number is not the same phone: that is an error, never merged.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .errors import PhonewipeError
from .model import Identity


class IdentityConflict(PhonewipeError):
    """Two identities that cannot be the same phone (their serial numbers differ)."""


def _unknown(value: object) -> bool:
    return value is None or value == () or value == "unknown"


def _from_os(identity: Identity) -> bool:
    """Whether the identity came from the running OS: only an OS reports its version."""
    return not _unknown(identity.os_version)


def _later_wins(name: str, known: Identity, later: Identity) -> bool:
    mine, theirs = getattr(known, name), getattr(later, name)
    if _unknown(theirs):
        return False
    if _unknown(mine):
        return True
    return name == "model" and mine != theirs and _from_os(later) and not _from_os(known)


def merge_identity(known: Identity, later: Identity) -> Identity:
    """``known`` with the fields it lacks filled from ``later`` (see the module docstring)."""
    if known.serial and later.serial and known.serial != later.serial:
        raise IdentityConflict(f"the phone reported serial {later.serial!r} in another mode, "
                               f"not {known.serial!r}", "erase each phone in the mode it is in")
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Identity):
        if f.name == "imeis":
            merged = tuple(dict.fromkeys((*known.imeis, *later.imeis)))
            if merged != known.imeis:
                changes[f.name] = merged
        elif _later_wins(f.name, known, later):
            changes[f.name] = getattr(later, f.name)
    return dataclasses.replace(known, **changes) if changes else known


def model_names(seen: dict[str, str], mode: str, identity: Identity) -> dict[str, str]:
    """``seen`` (mode -> model name that mode reported) with ``identity``'s added."""
    if _unknown(identity.model) or not mode:
        return seen
    return {**seen, mode: str(identity.model)}


def imei_ok(value: str) -> bool:
    """Whether ``value`` is an IMEI: 15 digits, the last the Luhn check digit of the others."""
    return len(value) == 15 and value.isdigit() and luhn_ok(value)


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits ends in its Luhn check digit."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0
