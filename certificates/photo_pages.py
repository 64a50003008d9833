"""The photo pages at the end of a certificate: each embedded photo (a reduced JPEG the record
carries, erase/photos.py) drawn two to a page with its caption. The image bytes come from the
record alone and are placed as they are (DCTDecode), so `cert verify` re-renders the same
pages; a photo entry whose bytes do not match its recorded SHA-256 is drawn as a note saying
so, never silently skipped."""
from __future__ import annotations

import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from phonewipe.erase.model import Record
from phonewipe.erase.photos import photo_bytes

from .manual import photos_of

PAGE_W, PAGE_H = A4
MARGIN = 40.0
PER_PAGE = 2
SLOT_H = (PAGE_H - 2 * MARGIN - 40) / PER_PAGE


def photo_page_count(record: Record) -> int:
    return -(-len(photos_of(record)) // PER_PAGE)


def _caption(n: int, entry: dict[str, Any]) -> str:
    return (f"Photo {n}: {entry.get('file', '?')} - original SHA-256 "
            f"{str(entry.get('sha256', '?'))[:32]}...")


def draw_photo_pages(c: Canvas, record: Record, printable: Any,
                     footer: Any) -> None:
    """Draw the photo pages; `footer(c, page_index)` draws each page's footer, `printable`
    makes a caption showable in the standard fonts."""
    photos = photos_of(record)
    for page in range(photo_page_count(record)):
        c.setFont("Helvetica-Bold", 11)
        c.setFillColor(colors.black)
        c.drawString(MARGIN, PAGE_H - MARGIN - 10, "Photos (evidence added by the operator)")
        for slot, entry in enumerate(photos[page * PER_PAGE:(page + 1) * PER_PAGE]):
            n = page * PER_PAGE + slot + 1
            top = PAGE_H - MARGIN - 30 - slot * SLOT_H
            c.setFont("Helvetica", 7.5)
            c.drawString(MARGIN, top - 8, printable(_caption(n, entry))[:140])
            data = photo_bytes(entry)
            if data is None:
                c.drawString(MARGIN, top - 24, "this photo's embedded copy does not match its "
                                               "recorded SHA-256 and is not shown")
                continue
            image = ImageReader(io.BytesIO(data))
            w, h = image.getSize()
            room_w, room_h = PAGE_W - 2 * MARGIN, SLOT_H - 24
            scale = min(room_w / w, room_h / h, 1.5)
            c.drawImage(image, MARGIN, top - 14 - h * scale, w * scale, h * scale)
        footer(c, page)
        c.showPage()
