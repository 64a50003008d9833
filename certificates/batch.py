"""The signed batch summary: totals, every device and its result, the reconciliation with
the expected-asset list, and the second-look picks. Rendered with reportlab from one
summary dict, which is also embedded (canonical JSON) in the signed PDF."""
from __future__ import annotations

import datetime as dt
import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from phonewipe.erase.model import canonical_json

from .fields import LAYOUT_VERSION, STANDARD_LINE, STATION_CLOCK, TSA_TIME, SigningInfo
from .render import printable

SUMMARY_SCHEMA = "phonewipe.batch-summary/1"
SUMMARY_ATTACHMENT = ("phonewipe-batch-summary.json",
                      "phonewipe batch summary (canonical JSON): totals, devices, reconciliation")
RESULT_COLOURS = {"PASS": "#1b7f3a", "ERASED, NOT VERIFIED": "#a86400", "FAIL": "#b3261e",
                  "NOT ERASED": "#b3261e"}
RECONCILIATION_TITLES = (
    ("erased", "Erased"), ("blocked", "Blocked (not erased)"), ("failed", "Failed"),
    ("expected_never_seen", "Expected but never seen"),
    ("seen_not_expected", "Seen but not expected"), ("duplicates", "Duplicates"),
    ("destroyed", "Destroyed (Destruct records)"),
    ("offered_for_destruction", "Failed twice, offered for destruction"))

_styles = getSampleStyleSheet()
_SMALL = _styles["BodyText"].clone("small", fontSize=7, leading=8.5)
_BODY = _styles["BodyText"].clone("body", fontSize=8.5, leading=10.5)


def _why_destroy(entry: dict[str, Any]) -> str:
    return str(entry.get("why") or f"failed {entry.get('failures', 2)} times")


def _p(text: Any, style: Any = _SMALL) -> Paragraph:
    safe = printable(str(text if text is not None else "")).replace("&", "&amp;") \
        .replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(safe, style)


def _grid(rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6e6e6")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("FONTSIZE", (0, 0), (-1, -1), 7)]))
    return table


def _device_label(entry: dict[str, Any]) -> str:
    tags = ", ".join(t for t in entry.get("asset_tags", []) if t)
    return f"{entry.get('serial') or '?'}" + (f" ({tags})" if tags else "")


def render_summary(summary: dict[str, Any], layout: int = LAYOUT_VERSION,
                   signing: SigningInfo | None = None) -> bytes:
    """PDF bytes; reportlab invariant mode, so the same summary gives the same bytes.
    From layout 3 on the last paragraph names the signer (subject, SHA-256 fingerprint) and
    the source of the signing time; `cert verify` re-renders it from the signature."""
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                            topMargin=12 * mm, bottomMargin=12 * mm, invariant=1,
                            title=f"Batch summary {summary['batch_id']}", author="phonewipe",
                            creator="phonewipe")
    op = summary.get("operator", {})
    story: list[Any] = [
        Paragraph("Batch Sanitization Summary", _styles["Title"]),
        _p(f"Batch {summary['batch_id']} - generated {summary['generated_at']} - {STANDARD_LINE}",
           _BODY),
        _p("Operator: " + ", ".join(op.get(k) for k in ("name", "title", "organization", "location")
                                    if op.get(k)) +
           f". Destination: {summary.get('destination', {}).get('kind', '')}.", _BODY),
        _p(f"Asset list: {summary.get('manifest') or 'none'}. Audit log: "
           f"{summary.get('audit', {}).get('rows', '?')} rows, hash chain "
           f"{summary.get('audit', {}).get('chain', '?')}.", _BODY),
        Spacer(1, 4 * mm)]
    totals = summary["totals"]
    story.append(_grid([["devices", *totals.keys()], [summary["device_count"], *totals.values()]]))
    story += [Spacer(1, 4 * mm), Paragraph("Devices", _styles["Heading2"])]
    rows: list[list[Any]] = [["#", "serial", "IMEI", "model", "asset tag", "result", "method",
                              "verification", "reason", "record SHA-256"]]
    for i, d in enumerate(summary["devices"], start=1):
        colour = RESULT_COLOURS.get(d["result"], "#000000")
        rows.append([str(i), _p(d["serial"]), _p(d["imei"]), _p(d["model"]), _p(d["asset_tag"]),
                     Paragraph(f'<font color="{colour}"><b>{d["result"]}</b></font>', _SMALL),
                     _p(d["method"]), _p(d["verification"]), _p(d["reason"]),
                     _p(d["record_sha256"][:16])])
    widths = [8 * mm, 24 * mm, 26 * mm, 24 * mm, 18 * mm, 20 * mm, 26 * mm, 22 * mm, 75 * mm, 30 * mm]
    story.append(_grid(rows, widths))
    rec = summary["reconciliation"]
    story += [Spacer(1, 4 * mm), Paragraph("Reconciliation", _styles["Heading2"])]
    if not rec.get("has_manifest"):
        story.append(_p("No expected-asset list was given for this batch.", _BODY))
    for key, title in RECONCILIATION_TITLES:
        items = rec.get(key, [])
        if key in ("expected_never_seen", "seen_not_expected", "duplicates") or items:
            if key == "duplicates":
                text = "; ".join(items) or "none"
            elif key == "expected_never_seen":
                text = "; ".join(f"{a['asset_tag']} {a['identifier']} ({a['owner']})"
                                 for a in items) or "none"
            elif key == "offered_for_destruction":
                text = "; ".join(f"{_device_label(e)}: {_why_destroy(e)}, "
                                 "record its destruction with `phonewipe destroy`"
                                 for e in items)
                if any(e.get("why") for e in items):  # not only devices that failed twice
                    title = "Offered for destruction"
            else:
                text = "; ".join(_device_label(e) for e in items) or "none"
            story.append(_p(f"{title} ({len(items)}): {text}", _BODY))
    looks = summary.get("second_look", [])
    story += [Spacer(1, 3 * mm), Paragraph("Second look (R2v3)", _styles["Heading2"]),
              _p(f"Share picked: {summary.get('second_look_share', 0):.0%} of passed devices. " +
                 ("; ".join(f"{s['serial']}: {s['status']} by {s['by']}" for s in looks) or "none picked"),
                 _BODY)]
    story += [_p(note, _BODY) for note in summary.get("second_look_notes", [])]  # pending, passed on
    story.append(Spacer(1, 3 * mm))
    story.append(_p("Each device's own signed certificate holds its full record; this summary "
                    "embeds its data as JSON and is signed by the same organization key.", _BODY))
    if layout >= 3:
        story.append(_p(
            f"Signed (PAdES) by {signing.subject if signing else 'unknown'}; signer SHA-256 "
            f"{signing.fingerprint if signing else 'unknown'}. Signing time: "
            f"{TSA_TIME if signing and signing.timestamped else STATION_CLOCK}. Check it with "
            "`phonewipe cert verify --trust FINGERPRINT summary.pdf`, with the fingerprint the "
            "organization publishes.", _BODY))
    doc.build(story)
    return buf.getvalue()


def sign_summary(signer: Any, summary: dict[str, Any]) -> bytes:
    try:
        created = dt.datetime.fromisoformat(summary["generated_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        created = None
    return signer.sign_pdf(render_summary(summary, signing=getattr(signer, "signing_info", None)),
                           canonical_json(summary), created, attachment=SUMMARY_ATTACHMENT)
