"""Render a `Record` as a Certificate of Sanitization: PDF bytes, deterministic.

The layout follows the NIST SP 800-88 Rev. 1 Appendix G sample certificate and names the
revision the tool follows. Everything printed comes from `visible_sections(record)` (see
`fields.py`), so `cert verify` can re-render from the embedded JSON and compare the pages:
identical records always give identical bytes (reportlab invariant mode, the PDF dates are
taken from `record.created_at`, the QR code uses a fixed mask pattern).
"""
from __future__ import annotations

import datetime as dt
import io
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfmetrics import getFont, stringWidth
from reportlab.pdfgen.canvas import Canvas

from phonewipe.erase.model import Outcome, Record

from .fields import (
    LAYOUT_VERSION,
    QR_PREFIX,
    STANDARD_LINE,
    UNKNOWN,
    Section,
    SigningInfo,
    qr_payload,
    qr_text,
    title_text,
    tool_text,
    visible_fields,
    visible_sections,
)
from .photo_pages import draw_photo_pages, photo_page_count

PAGE_W, PAGE_H = A4
MARGIN = 40.0
CONTENT_W = PAGE_W - 2 * MARGIN
COL_W = CONTENT_W / 2
LABEL_W = 96.0
FULL_VALUE_W = CONTENT_W - LABEL_W - 8
HALF_VALUE_W = COL_W - LABEL_W - 10
FONT, FONT_BOLD, FONT_MONO = "Helvetica", "Helvetica-Bold", "Courier"
ROW_SIZE, ROW_LEAD, ROW_PAD = 7.8, 9.4, 1.6
HEAD_SIZE, HEAD_H, HEAD_GAP = 8.8, 13.0, 3.0
QR_SIZE = 92.0
QR_MASK = 0  # fixed mask pattern: valid QR, deterministic, and 9x faster than auto choice
FOOTER_Y = 24.0
BOTTOM = 40.0
VALIDATION_H = 58.0
GREY = colors.HexColor("#e6e6e6")
LABEL_GREY = colors.HexColor("#333333")

RESULT_COLORS = {
    Outcome.ERASED_VERIFIED: colors.HexColor("#1b7f3a"),
    Outcome.ERASED_UNVERIFIED: colors.HexColor("#a86400"),
    Outcome.FAILED: colors.HexColor("#b3261e"),
    Outcome.BLOCKED: colors.HexColor("#b3261e"),
}
HEADER_FIELDS = ("Record ID", "Job ID", "Batch ID", "Created", "Schema")


# letters without a Unicode decomposition to an ASCII base
_TRANSLIT = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h",
                           "ı": "i", "Ŀ": "L", "ŀ": "l", "Ŧ": "T", "ŧ": "t"})
TRANSLIT_NOTE = ("Characters the PDF's standard fonts cannot show are printed transliterated "
                 "or as '?'; the embedded record holds the exact text.")


def _showable(text: str, encodings: tuple[str, ...]) -> bool:
    for enc in encodings:
        try:
            text.encode(enc)
            return True
        except UnicodeEncodeError:
            continue
    return False


def printable(text: str, font: str = FONT) -> str:
    """`text` as the standard PDF fonts can show it: other characters are transliterated
    (Ł -> L, ż -> z) or become '?' (the embedded record keeps the exact text)."""
    if text.isascii():
        return text
    f = getFont(font)
    encodings = (f.encName, *(s.encName for s in getattr(f, "substitutionFonts", ())))
    out = []
    for ch in text:
        if _showable(ch, encodings):
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch.translate(_TRANSLIT))
                       if not unicodedata.combining(c))
        out.append(base if base and _showable(base, encodings) else "?")
    return "".join(out)


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Word-wrap; words longer than the width (hashes, serials) are broken by character."""
    lines: list[str] = []
    for line in simpleSplit(printable(text, font), font, size, width) or [""]:
        while len(line) > 1 and stringWidth(line, font, size) > width:
            lo, hi = 1, len(line) - 1  # longest prefix that fits, by bisection
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if stringWidth(line[:mid], font, size) <= width:
                    lo = mid
                else:
                    hi = mid - 1
            cut = lo
            lines.append(line[:cut])
            line = line[cut:]
        lines.append(line)
    return lines


@dataclass(frozen=True)
class _Cell:
    x: float  # offset of the label from the left margin
    value_w: float
    label: tuple[str, ...]
    value: tuple[str, ...]


@dataclass(frozen=True)
class _Block:
    height: float
    title: str = ""  # a section heading when set
    cells: tuple[_Cell, ...] = ()


def _fits_half(label: str, value: str) -> bool:
    return (stringWidth(printable(label, FONT_BOLD), FONT_BOLD, ROW_SIZE) <= LABEL_W - 4
            and stringWidth(printable(value), FONT, ROW_SIZE) <= HALF_VALUE_W)


def _cell(x: float, value_w: float, label: str, value: str) -> _Cell:
    return _Cell(x, value_w, tuple(wrap(label, FONT_BOLD, ROW_SIZE, LABEL_W - 4)),
                 tuple(wrap(value, FONT, ROW_SIZE, value_w)))


def _row(cells: tuple[_Cell, ...]) -> _Block:
    lines = max(max(len(c.label), len(c.value)) for c in cells)
    return _Block(lines * ROW_LEAD + ROW_PAD, cells=cells)


def _with_note(sections: list[Section]) -> list[Section]:
    """Adds a note when some text had to be transliterated."""
    changed = any(printable(text) != text for sec in sections
                  for row in sec.rows for text in row)
    return [*sections, Section("Note", (("Note", TRANSLIT_NOTE),))] if changed else sections


def _blocks(sections: Iterable[Section]) -> list[_Block]:
    """Headings and rows; short rows are paired two to a line, like a paper form."""
    out: list[_Block] = []
    for sec in sections:
        out.append(_Block(HEAD_H + HEAD_GAP, title=sec.title))
        rows = list(sec.rows)
        i = 0
        while i < len(rows):
            label, value = rows[i]
            if (i + 1 < len(rows) and _fits_half(label, value)
                    and _fits_half(*rows[i + 1])):
                out.append(_row((_cell(0, HALF_VALUE_W, label, value),
                                 _cell(COL_W, HALF_VALUE_W, *rows[i + 1]))))
                i += 2
            else:
                out.append(_row((_cell(0, FULL_VALUE_W, label, value),)))
                i += 1
    return out


def _section_height(blocks: list[_Block], i: int) -> float:
    """The height of the section whose heading is blocks[i]."""
    total = blocks[i].height
    for b in blocks[i + 1:]:
        if b.title:
            break
        total += b.height
    return total


def _paginate(blocks: list[_Block], first_top: float,
              validation_h: float = VALIDATION_H, whole_sections: bool = False) -> list[list[_Block]]:
    """Blocks onto pages; a heading stays with its first row (with `whole_sections`, layout
    4 on: with its whole section when that fits on a page, so no page starts with the tail
    of a short section)."""
    pages: list[list[_Block]] = [[]]
    y = first_top
    for i, b in enumerate(blocks):
        need = b.height
        if b.title and whole_sections and _section_height(blocks, i) < PAGE_H - MARGIN - BOTTOM:
            need = _section_height(blocks, i)
        elif b.title and i + 1 < len(blocks):
            need += blocks[i + 1].height  # keep a heading with its first row
        if y - need < BOTTOM and pages[-1]:
            pages.append([])
            y = PAGE_H - MARGIN
        pages[-1].append(b)
        y -= b.height
    if validation_h and y - validation_h < BOTTOM:  # layouts 1-3: room for the empty box
        pages.append([])
    return pages


def _pdf_date(created_at: str) -> str:
    try:
        when = dt.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        when = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("D:%Y%m%d%H%M%S+00'00'")


def _draw_qr(c: Canvas, payload: str, x: float, y: float, size: float) -> None:
    """The QR code as one filled path in module units: reportlab's encoder, one rectangle
    per dark run, integer coordinates (written as literal operators: fast and compact)."""
    qr = QrCodeWidget(payload, barLevel="M").qr
    if qr.version is None:
        qr.version = qr.calculate_version()
    qr.makeImpl(False, QR_MASK)
    n = qr.getModuleCount()
    border = 2
    box = size / (n + 2 * border)
    ops: list[str] = []
    for r, row in enumerate(qr.modules):
        top = n - 1 - r  # module rows count down from the top
        col = 0
        while col < n:
            if row[col]:
                start = col
                while col < n and row[col]:
                    col += 1
                ops.append(f"{start} {top} {col - start} 1 re")
            else:
                col += 1
    c.saveState()
    c.setFillColor(colors.black)
    c.transform(box, 0, 0, box, x + border * box, y + border * box)
    c.addLiteral("\n".join(ops) + "\nf")
    c.restoreState()


HEADER_SIZE, HEADER_LEAD, HEADER_MAX_LINES = 7.4, 8.6, 4
HEADER_VALUE_W = PAGE_W - 2 * MARGIN - QR_SIZE - 60 - 52


def _header_lines(head: Section) -> list[tuple[str, list[str]]]:
    fields = dict(head.rows)
    out = []
    for label in HEADER_FIELDS:
        lines = wrap(fields[label], FONT, HEADER_SIZE, HEADER_VALUE_W)
        if len(lines) > HEADER_MAX_LINES:
            lines = lines[:HEADER_MAX_LINES - 1] + [lines[HEADER_MAX_LINES - 1][:-3] + "..."]
        out.append((label, lines))
    return out


def _header_bottom(head: Section) -> float:
    """Where the sections start on page 1."""
    top = PAGE_H - MARGIN
    count = sum(len(lines) for _, lines in _header_lines(head))
    return min(top - 96 - count * HEADER_LEAD, top - QR_SIZE - 24) - 8


def _header(c: Canvas, record: Record, head: Section, qr: str,
            layout: int = LAYOUT_VERSION) -> float:
    """Title, standard, result line, identifiers and the QR code; returns the y below."""
    fields = dict(head.rows)
    top = PAGE_H - MARGIN
    c.setFillColor(colors.black)
    title = title_text(record, layout)
    size = 20.0
    if layout >= 4:  # a longer title ("Sanitization record: ...") stays clear of the QR code
        room = PAGE_W - 2 * MARGIN - QR_SIZE - 12
        while size > 12 and stringWidth(title, FONT_BOLD, size) > room:
            size -= 1
    c.setFont(FONT_BOLD, size)
    c.drawString(MARGIN, top - 18, title)
    c.setFont(FONT, 9.5)
    c.drawString(MARGIN, top - 33, f"Following {STANDARD_LINE}")
    qx, qy = PAGE_W - MARGIN - QR_SIZE, top - QR_SIZE
    digest = fields["Record SHA-256"]
    _draw_qr(c, qr, qx, qy, QR_SIZE)
    c.setFont(FONT_MONO, 5.4)
    for i in range(0, len(digest), 32):
        c.drawCentredString(qx + QR_SIZE / 2, qy - 4 - (i // 32) * 6.2, digest[i:i + 32])
    c.setFont(FONT, 5.4)
    c.drawCentredString(qx + QR_SIZE / 2, qy - 4 - 2 * 6.2, "record SHA-256")
    c.setFillColor(RESULT_COLORS.get(record.outcome, colors.black))
    c.setFont(FONT_BOLD, 28)
    c.drawString(MARGIN, top - 66, fields["Result"])
    c.setFillColor(colors.black)
    c.setFont(FONT, 8.5)
    c.drawString(MARGIN, top - 80, f"Result: {fields['Result']}    Outcome: {fields['Outcome']}"
                 if layout < 4 else f"Result: {fields['Result']} - {fields['Outcome']}")
    y = top - 96
    for label, lines in _header_lines(head):
        c.setFont(FONT_BOLD, HEADER_SIZE)
        c.drawString(MARGIN, y, label)
        c.setFont(FONT, HEADER_SIZE)
        for line in lines:
            c.drawString(MARGIN + 52, y, line)
            y -= HEADER_LEAD
    y = _header_bottom(head) + 4
    c.setStrokeColor(colors.black)
    c.setLineWidth(0.8)
    c.line(MARGIN, y, PAGE_W - MARGIN, y)
    return y - 4


def _heading(c: Canvas, title: str, y: float) -> None:
    c.setFillColor(GREY)
    c.rect(MARGIN, y - HEAD_H, CONTENT_W, HEAD_H - 1, stroke=0, fill=1)
    c.setFillColor(colors.black)
    c.setFont(FONT_BOLD, HEAD_SIZE)
    c.drawString(MARGIN + 4, y - HEAD_H + 3.5, title)


def _draw_block(c: Canvas, b: _Block, y: float) -> float:
    if b.title:
        _heading(c, b.title, y - HEAD_GAP)
        return y - b.height
    for cell in b.cells:
        x = MARGIN + cell.x
        c.setFillColor(LABEL_GREY)
        c.setFont(FONT_BOLD, ROW_SIZE)
        for n, line in enumerate(cell.label, 1):
            c.drawString(x + 4, y - n * ROW_LEAD + 1.5, line)
        c.setFillColor(colors.black)
        c.setFont(FONT, ROW_SIZE)
        for n, line in enumerate(cell.value, 1):
            c.drawString(x + LABEL_W, y - n * ROW_LEAD + 1.5, line)
    return y - b.height


def _validation_block(c: Canvas, y: float) -> None:
    """An empty block for a second person's validation (Appendix G; R2v3 re-verification)."""
    _heading(c, "Validation (second person)", y - HEAD_GAP)
    box_top = y - HEAD_GAP - HEAD_H - 1
    box_h = VALIDATION_H - HEAD_GAP - HEAD_H - 2
    width = CONTENT_W / 4
    c.setStrokeColor(colors.HexColor("#888888"))
    c.setLineWidth(0.5)
    c.setFont(FONT, 7)
    for i, label in enumerate(("Name", "Title", "Signature", "Date")):
        x = MARGIN + i * width
        c.rect(x, box_top - box_h, width, box_h, stroke=1, fill=0)
        c.drawString(x + 3, box_top - 9, label)


def _footer(c: Canvas, record: Record, page: int, pages: int,
            layout: int = LAYOUT_VERSION) -> None:
    c.setFillColor(colors.HexColor("#555555"))
    c.setFont(FONT, 6.5)
    text = f"{title_text(record, layout)} - record {record.record_id} - {STANDARD_LINE}"
    c.drawString(MARGIN, FOOTER_Y, wrap(text, FONT, 6.5, CONTENT_W - 60)[0])
    c.drawRightString(PAGE_W - MARGIN, FOOTER_Y, f"page {page} of {pages}")


def render_pdf(record: Record, layout: int = LAYOUT_VERSION,
               signing: SigningInfo | None = None) -> bytes:
    """The certificate as PDF bytes; identical records (and signers) give identical bytes.
    `signing` names the signer on the page and in the QR code (layout 3 and later)."""
    sections = visible_sections(record, layout, signing) if layout >= 3 else \
        visible_sections(record, layout)
    head = sections[0]
    qr = qr_text(dict(head.rows)["Record SHA-256"], layout, signing)
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=1, pageCompression=1, pdfVersion=(1, 7))
    pdf_date = _pdf_date(record.created_at)
    c.setDateFormatter(lambda *_: pdf_date)
    c.setTitle(f"{title_text(record, layout)} - {record.device.serial or UNKNOWN}")
    c.setAuthor(record.operator.organization or UNKNOWN)
    c.setSubject(QR_PREFIX + dict(head.rows)["Record SHA-256"])
    c.setCreator(tool_text(record.tool))
    boxed = layout < 4  # layouts 1-3 drew an empty box for a second person's hand signature
    pages = _paginate(_blocks(_with_note(sections)[1:]), _header_bottom(head),
                      VALIDATION_H if boxed else 0.0, whole_sections=not boxed)
    photos = photo_page_count(record) if layout >= 4 else 0  # photo evidence (#19)
    total = len(pages) + photos
    for n, blocks in enumerate(pages, 1):
        y = _header(c, record, head, qr, layout) if n == 1 else PAGE_H - MARGIN
        for b in blocks:
            y = _draw_block(c, b, y)
        if n == len(pages) and boxed:
            _validation_block(c, y)
        _footer(c, record, n, total, layout)
        c.showPage()
    if photos:
        draw_photo_pages(c, record, printable, lambda cv, i: _footer(
            cv, record, len(pages) + i + 1, total, layout))
    c.save()
    return buf.getvalue()


__all__ = ["LAYOUT_VERSION", "render_pdf", "visible_fields", "visible_sections", "qr_payload",
           "SigningInfo",
           "wrap", "printable",
           "STANDARD_LINE", "QR_PREFIX"]
