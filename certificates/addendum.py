"""The second person's validation (NIST SP 800-88 App. G "Validation"; R2v3's second look) as
a signed addendum: a small PDF that cites the certificate by its file's and its record's
SHA-256, names who validated it and when, and carries the re-verification result when one
was run (`phonewipe verify --plan-from CERT --json`). Its data is embedded as canonical JSON
and its pages are what that JSON renders to, so `cert verify` checks it like a certificate.

A certificate is signed when the erase ends, before anyone can look at it a second time; an
empty hand-signature box on a digitally signed PDF can never be filled. The addendum is the
second signature, linked by hash.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from phonewipe.erase.errors import UsageError
from phonewipe.erase.model import Record, canonical_json

from .fields import LAYOUT_VERSION, STATION_CLOCK, TSA_TIME, SigningInfo
from .render import printable

ADDENDUM_SCHEMA = "phonewipe.validation/1"
ADDENDUM_ATTACHMENT = ("phonewipe-validation.json",
                       "phonewipe validation addendum (canonical JSON): the certificate it "
                       "validates by SHA-256, who validated it, the re-verification")
TITLE = "Validation addendum"

_styles = getSampleStyleSheet()
_BODY = _styles["BodyText"].clone("addendum-body", fontSize=9, leading=11.5)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def addendum_name(certificate: Path) -> str:
    """`<certificate stem>-validation.pdf`, next to the certificate."""
    return f"{Path(certificate).stem}-validation.pdf"


def build_addendum(certificate: Path, data: bytes, record: Record, *, name: str,
                   title: str = "", organization: str = "",
                   reverification: dict[str, Any] | None = None, note: str = "",
                   validated_at: str | None = None) -> dict[str, Any]:
    """The addendum's data. `data` are the certificate file's bytes (already verified);
    `reverification` a `phonewipe verify --json` result for the same record."""
    if not name.strip():
        raise UsageError("the validation names nobody", "pass --by NAME (the second person)")
    if reverification is not None:
        if reverification.get("record_id") != record.record_id:
            raise UsageError("the re-verification result is for another record "
                             f"({reverification.get('record_id')!r}, the certificate's is "
                             f"{record.record_id!r})",
                             "pass the JSON that `phonewipe verify --plan-from` printed for "
                             "this certificate")
        keep = ("verdict", "reason", "samples", "fresh_seed", "problems_total", "medium",
                "started_at", "finished_at")
        seed = (reverification.get("plan") or {}).get("seed")
        reverification = {**{k: reverification.get(k) for k in keep}, "seed": seed}
    when = validated_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "schema": ADDENDUM_SCHEMA,
        "certificate": {"file": Path(certificate).name, "file_sha256": file_sha256(data),
                        "record_sha256": record.sha256(), "record_id": record.record_id,
                        "serial": record.device.serial or "", "result": record.result_text},
        "validated_by": {"name": name.strip(), "title": title.strip(),
                         "organization": organization.strip()},
        "validated_at": when,
        "reverification": reverification,
        "note": note.strip(),
    }


def _p(text: Any) -> Paragraph:
    safe = printable(str(text if text is not None else "")).replace("&", "&amp;") \
        .replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(safe, _BODY)


def statement(addendum: dict[str, Any]) -> str:
    """What the second person attests, in one paragraph built from the addendum's data."""
    cert, who = addendum["certificate"], addendum["validated_by"]
    person = who["name"] + (f" ({who['title']})" if who.get("title") else "") + \
        (f", {who['organization']}" if who.get("organization") else "")
    text = (f"{person} validated the sanitization record of device {cert['serial'] or 'unknown'} "
            f"(result {cert['result']}) on {addendum['validated_at']}: the certificate's "
            "signature and its embedded record were checked.")
    rv = addendum.get("reverification")
    if rv:
        how = "a fresh seed" if rv.get("fresh_seed") else "the certified plan"
        text += (f" The device was read again ({how}, "
                 f"{rv.get('samples', 0):,} samples): {str(rv.get('verdict', '')).upper()}"
                 f" - {rv.get('reason') or 'no reason given'}.")
    else:
        text += " No re-verification of the device was run for this validation."
    return text


def render_addendum(addendum: dict[str, Any], layout: int = LAYOUT_VERSION,
                    signing: SigningInfo | None = None) -> bytes:
    """PDF bytes; reportlab invariant mode: the same addendum gives the same bytes."""
    buf = io.BytesIO()
    cert = addendum["certificate"]
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=18 * mm, bottomMargin=18 * mm, invariant=1,
                            title=f"{TITLE} - {cert['serial'] or 'unknown'}",
                            author="phonewipe", creator="phonewipe")
    rows = [["Certificate file", cert["file"]],
            ["Certificate file SHA-256", cert["file_sha256"]],
            ["Record SHA-256", cert["record_sha256"]], ["Record ID", cert["record_id"]],
            ["Device serial", cert["serial"] or "unknown"], ["Result certified", cert["result"]],
            ["Validated by", addendum["validated_by"]["name"]],
            ["Title", addendum["validated_by"].get("title") or "none"],
            ["Organization", addendum["validated_by"].get("organization") or "none"],
            ["Validated at", addendum["validated_at"]]]
    rv = addendum.get("reverification")
    if rv:
        rows += [["Re-verification", str(rv.get("verdict", "")).upper()],
                 ["Re-verification reason", rv.get("reason") or "none"],
                 ["Samples read again", f"{rv.get('samples', 0):,}"],
                 ["Seed", f"{rv.get('seed')} ("
                          f"{'fresh' if rv.get('fresh_seed') else 'the certificate' + chr(39) + 's'})"],
                 ["Read at", rv.get("finished_at") or "unknown"]]
    else:
        rows.append(["Re-verification", "none run for this validation"])
    rows.append(["Note", addendum.get("note") or "none"])
    table = Table([[_p(a), _p(b)] for a, b in rows], colWidths=[48 * mm, 124 * mm])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("LINEBELOW", (0, 0), (-1, -1), 0.3, "#bbbbbb")]))
    story: list[Any] = [
        Paragraph(TITLE, _styles["Title"]),
        _p("Second person's validation of a sanitization record (NIST SP 800-88 Rev. 1 "
           "App. G; R2v3 re-verification). This addendum cites the certificate by its SHA-256 "
           "and is signed on its own; it changes nothing in the certificate."),
        Spacer(1, 4 * mm), _p(statement(addendum)), Spacer(1, 4 * mm), table,
        Spacer(1, 4 * mm),
        _p(f"Signed (PAdES) by {signing.subject if signing else 'unknown'}; signer SHA-256 "
           f"{signing.fingerprint if signing else 'unknown'}. Signing time: "
           f"{TSA_TIME if signing and signing.timestamped else STATION_CLOCK}. Check it with "
           "`phonewipe cert verify --trust FINGERPRINT` with the certificate beside it."),
    ]
    doc.build(story)
    return buf.getvalue()


def sign_addendum(signer: Any, addendum: dict[str, Any]) -> bytes:
    try:
        created = dt.datetime.fromisoformat(addendum["validated_at"])
    except (KeyError, ValueError):
        created = None
    return signer.sign_pdf(render_addendum(addendum, signing=getattr(signer, "signing_info", None)),
                           canonical_json(addendum), created, attachment=ADDENDUM_ATTACHMENT)
