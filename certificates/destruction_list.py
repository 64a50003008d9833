"""The signed list of one `phonewipe destroy` run: what was done (method, particle size,
equipment, facility, operator, witness, when), every device destroyed with its record's
SHA-256 and certificate file. Its data is embedded as canonical JSON and its pages are what
that JSON renders to, so `cert verify` checks it like a batch summary."""
from __future__ import annotations

import datetime as dt
import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from phonewipe.erase.model import Record, canonical_json

from .fields import LAYOUT_VERSION, STANDARD_LINE, STATION_CLOCK, TSA_TIME, SigningInfo
from .render import printable

LIST_SCHEMA = "phonewipe.destruction-list/1"
LIST_ATTACHMENT = ("phonewipe-destruction-list.json",
                   "phonewipe destruction list (canonical JSON): the destruction, every device "
                   "and its record's SHA-256")
TITLE = "Destruction list"

_styles = getSampleStyleSheet()
_SMALL = _styles["BodyText"].clone("destroy-small", fontSize=7, leading=8.5)
_BODY = _styles["BodyText"].clone("destroy-body", fontSize=8.5, leading=10.5)


def _p(text: Any, style: Any = _SMALL) -> Paragraph:
    safe = printable(str(text if text is not None else "")).replace("&", "&amp;") \
        .replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(safe, style)


def build_list(batch_id: str, destruction: dict[str, Any], destroyed_at: str,
               entries: list[tuple[Record, str]], audit: dict[str, Any]) -> dict[str, Any]:
    """The list's data: `entries` are (record, certificate file name)."""
    first = entries[0][0] if entries else None
    return {
        "schema": LIST_SCHEMA, "batch_id": batch_id, "destroyed_at": destroyed_at,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "destruction": destruction,
        "operator": {} if first is None else {
            k: getattr(first.operator, k) for k in ("name", "title", "organization", "location")},
        "category": "" if first is None or first.sanitization is None
        else first.sanitization.category,
        "device_count": len(entries),
        "devices": [{"serial": r.device.serial or "", "imei": ", ".join(r.device.imeis),
                     "manufacturer": r.device.manufacturer or "", "model": r.device.model or "",
                     "asset_tag": r.asset_tag, "result": r.result_text,
                     "record_id": r.record_id, "record_sha256": r.sha256(),
                     "certificate": name} for r, name in entries],
        "audit": audit,
    }


def render_list(data: dict[str, Any], layout: int = LAYOUT_VERSION,
                signing: SigningInfo | None = None) -> bytes:
    """PDF bytes; reportlab invariant mode: the same list gives the same bytes."""
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                            topMargin=12 * mm, bottomMargin=12 * mm, invariant=1,
                            title=f"{TITLE} {data['batch_id']}", author="phonewipe",
                            creator="phonewipe")
    d, op = data["destruction"], data.get("operator", {})
    particle = d.get("particle_mm")
    what = (f"Method: {d.get('method')}; particle size: "
            f"{f'at most {particle:g} mm' if isinstance(particle, (int, float)) else 'not applicable'}"
            f"; equipment: {d.get('equipment') or 'not given'}; facility: {d.get('facility')}; "
            f"destroyed at {data['destroyed_at']}; category: {data.get('category') or 'none'}.")
    people = ", ".join(op.get(k) for k in ("name", "title", "organization", "location") if op.get(k))
    who = (f"Operator: {people}"
           f"; witness: {d.get('witness')}"
           + (f" ({d['witness_title']})" if d.get("witness_title") else "") + ".")
    story: list[Any] = [
        Paragraph(f"{TITLE} {printable(str(data['batch_id']))}", _styles["Title"]),
        _p(f"Physical destruction, one signed certificate per device - {STANDARD_LINE}", _BODY),
        _p(what, _BODY), _p(who, _BODY),
        _p(f"Nothing was read back: the destruction is attested by the operator and the "
           f"witness. Audit log: {data.get('audit', {}).get('rows', '?')} rows, head "
           f"{data.get('audit', {}).get('head', '?')}.", _BODY),
        Spacer(1, 4 * mm)]
    rows: list[list[Any]] = [["#", "serial", "IMEI", "make / model", "asset tag", "result",
                              "certificate", "record SHA-256"]]
    for i, e in enumerate(data["devices"], start=1):
        rows.append([str(i), _p(e["serial"] or "?"), _p(e["imei"]),
                     _p(f"{e['manufacturer']} {e['model']}".strip()), _p(e["asset_tag"]),
                     _p(e["result"]), _p(e["certificate"]), _p(e["record_sha256"])])
    table = Table(rows, colWidths=[8 * mm, 32 * mm, 34 * mm, 36 * mm, 22 * mm, 20 * mm,
                                   46 * mm, 70 * mm], repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6e6e6")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("FONTSIZE", (0, 0), (-1, -1), 7)]))
    story += [table, Spacer(1, 4 * mm), _p(
        f"Each device's own signed certificate holds its full record. Signed (PAdES) by "
        f"{signing.subject if signing else 'unknown'}; signer SHA-256 "
        f"{signing.fingerprint if signing else 'unknown'}. Signing time: "
        f"{TSA_TIME if signing and signing.timestamped else STATION_CLOCK}. Check it with "
        "`phonewipe cert verify --trust FINGERPRINT`.", _BODY)]
    doc.build(story)
    return buf.getvalue()


def sign_list(signer: Any, data: dict[str, Any]) -> bytes:
    try:
        created = dt.datetime.fromisoformat(data["generated_at"])
    except (KeyError, ValueError):
        created = None
    return signer.sign_pdf(render_list(data, signing=getattr(signer, "signing_info", None)),
                           canonical_json(data), created, attachment=LIST_ATTACHMENT)
