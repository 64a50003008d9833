"""Device strings are data: what a phone says about itself (serial, model, manufacturer...)
is cleaned here, once, before it is shown or stored.

* C0/C1 control characters, bidi overrides and other invisible format characters are
  escaped visibly: ``\\x1b``, ``\\u202e`` (a serial cannot move the cursor, clear a line or
  reverse the text around it);
* bytes that are not UTF-8 (bytes input, or the ``surrogateescape`` decoding of them) are
  kept as escaped bytes, ``\\xff``;
* values longer than `MAX_CHARS` are cut, with a note saying how long they were;
* the original value goes into the record as evidence (`device_strings_evidence`), so the
  cleaning loses nothing.

`for_terminal` additionally escapes rich markup, for every place a device string reaches a
rich console (``CRASH[/]`` must print as itself, not crash the table). The certificate
renderer prints record text verbatim: it never interprets markup.
"""
from __future__ import annotations

import base64
import dataclasses
import re
import unicodedata
from typing import Any, overload

from rich.markup import escape as _escape_markup

MAX_CHARS = 256
_CUT = re.compile(r"\.\.\. \(cut: \d+ characters\)")
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format (bidi), surrogates, separators
IDENTITY_STRINGS = ("platform", "manufacturer", "model", "serial", "os_version", "storage_type",
                    "encryption", "build_type")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_controls(text: str) -> str:
    """Control, bidi and other invisible characters as visible escapes; nothing else changes.
    Idempotent: its output holds no character it would escape."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch
                   for ch in text)


@overload
def clean(value: str | bytes | bytearray, limit: int = MAX_CHARS) -> str: ...


@overload
def clean(value: None, limit: int = MAX_CHARS) -> None: ...


@overload
def clean(value: str | bytes | bytearray | None, limit: int = MAX_CHARS) -> str | None: ...


def clean(value: str | bytes | bytearray | None, limit: int = MAX_CHARS) -> str | None:
    """What a device said, as text safe to show and store (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    text = escape_controls(str(value))
    if len(text) > limit and not _CUT.fullmatch(text[limit:]):  # (already cut: idempotent)
        text = f"{text[:limit]}... (cut: {len(text)} characters)"
    return text


def original_bytes(value: str | bytes | bytearray) -> bytes:
    """The bytes the device sent (lossless for surrogateescape-decoded text)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value.encode("utf-8", "surrogateescape") if _encodable(value) else \
        value.encode("utf-8", "surrogatepass")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def for_terminal(value: Any) -> str:
    """Any text for a rich console: controls escaped, markup escaped (``[`` as ``\\[``)."""
    return _escape_markup(escape_controls("" if value is None else str(value)))


def clean_identity(identity: Any) -> tuple[Any, dict[str, Any]]:
    """(identity with every device string cleaned, evidence of what was changed).

    The evidence maps each changed field to the original bytes, base64-encoded, so the
    record keeps exactly what the device said."""
    changes: dict[str, Any] = {}
    original: dict[str, str] = {}
    for name in IDENTITY_STRINGS:
        value = getattr(identity, name, None)
        if isinstance(value, (str, bytes, bytearray)):
            cleaned = clean(value)
            if cleaned != value:
                changes[name] = cleaned
                original[name] = base64.b64encode(original_bytes(value)).decode("ascii")
    imeis = getattr(identity, "imeis", ())
    if imeis and any(clean(i) != i for i in imeis):
        changes["imeis"] = tuple(clean(i) or "" for i in imeis)
        original["imeis"] = base64.b64encode(
            b"\n".join(original_bytes(i) for i in imeis)).decode("ascii")
    if not changes:
        return identity, {}
    return dataclasses.replace(identity, **changes), {
        "encoding": "base64 of the bytes the device sent (UTF-8 where it was text)",
        "original": original}
