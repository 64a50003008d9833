"""One phone, one identity, whatever modes it was seen in.

A phone erased in the bootloader and read back in Android told each mode something the
other could not (the bootloader: its lock state and storage; Android: manufacturer, IMEIs,
OS version). `merge_identity` folds what a later mode learned into what the job already
knows: a later value fills a field still unknown, never replaces a known one, and the IMEIs
are the union in the order first seen. A different serial number is not the same phone:
that is an error, never merged.
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


def merge_identity(known: Identity, later: Identity) -> Identity:
    """``known`` with the fields it lacks filled from ``later`` (see the module docstring)."""
    if known.serial and later.serial and known.serial != later.serial:
        raise IdentityConflict(f"the phone reported serial {later.serial!r} in another mode, "
                               f"not {known.serial!r}", "erase each phone in the mode it is in")
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Identity):
        mine, theirs = getattr(known, f.name), getattr(later, f.name)
        if f.name == "imeis":
            merged = tuple(dict.fromkeys((*mine, *theirs)))
            if merged != mine:
                changes[f.name] = merged
        elif _unknown(mine) and not _unknown(theirs):
            changes[f.name] = theirs
    return dataclasses.replace(known, **changes) if changes else known
