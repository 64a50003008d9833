"""Photos an operator adds as evidence (an attested wipe's screen, a shredder's output).

An image file is hostile input: it is read with a size limit, opened only as JPEG or PNG,
its pixel count is checked from the header before any pixel is decoded (no decompression
bomb), and it is decoded fully inside a guard, so a truncated or malformed file is one
clear error (`PhotoRejected`, exit 2), never a traceback. What goes into the record is a
re-encoded copy — at most `MAX_EDGE` pixels a side, baseline JPEG, no metadata (EXIF GPS
positions and camera serials stay out of the certificate) — beside the SHA-256 of the
original file, so the original can be matched to the certificate later.
"""
from __future__ import annotations

import base64
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .strings import clean

MAX_FILE_BYTES = 20 * 1024 * 1024  # a phone camera's JPEG is 2-8 MB
MAX_PIXELS = 50_000_000  # from the header, before decoding
MAX_EDGE = 1024  # pixels, longest side of the embedded copy
JPEG_QUALITY = 70
MAX_PHOTOS = 6
MAX_EMBEDDED_BYTES = 2 * 1024 * 1024  # all embedded copies of one record together
FORMATS = ("JPEG", "PNG")


class PhotoRejected(UsageError):
    """An image file that cannot be used as evidence; the message says which and why."""


@dataclass(frozen=True)
class Photo:
    file: str  # the original file's name (cleaned), for the operator to find it
    sha256: str  # of the original file's bytes
    size: int  # of the original file, bytes
    format: str
    width: int
    height: int
    jpeg: bytes  # the embedded copy
    caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        from PIL import Image
        with Image.open(io.BytesIO(self.jpeg)) as im:
            size = im.size
        return {"file": self.file, "sha256": self.sha256, "bytes": self.size,
                "format": self.format, "width": self.width, "height": self.height,
                "caption": self.caption,
                "embedded": {"format": "JPEG", "width": size[0], "height": size[1],
                             "sha256": hashlib.sha256(self.jpeg).hexdigest(),
                             "base64": base64.b64encode(self.jpeg).decode("ascii")}}


def _reject(path: Path, why: str) -> PhotoRejected:
    return PhotoRejected(f"photo {path}: {why}",
                         "give a JPEG or PNG photo of at most "
                         f"{MAX_FILE_BYTES // 2**20} MB and {MAX_PIXELS // 10**6} megapixels")


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise _reject(path, "is a directory") from None
    except OSError as exc:
        raise _reject(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise _reject(path, f"is larger than {MAX_FILE_BYTES // 2**20} MB")
    if not data:
        raise _reject(path, "is empty")
    return data


def embed_copy(data: bytes, path: Path) -> tuple[str, int, int, bytes]:
    """(format, width, height, re-encoded JPEG) of image bytes; PhotoRejected otherwise."""
    from PIL import Image, ImageOps
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                fmt, (w, h) = str(im.format), im.size
                if w < 1 or h < 1 or w * h > MAX_PIXELS:
                    raise _reject(path, f"is {w}x{h} pixels (at most {MAX_PIXELS:,} in all)")
                im.load()
                shown = ImageOps.exif_transpose(im).convert("RGB")
                shown.thumbnail((MAX_EDGE, MAX_EDGE))
                out = io.BytesIO()
                shown.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False,
                           progressive=False, exif=b"")
    except PhotoRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure: not a usable image
        raise _reject(path, f"is not a readable JPEG or PNG image ({type(exc).__name__})") \
            from None
    return fmt, w, h, out.getvalue()


def check_photo(path: Path, caption: str = "") -> Photo:
    path = Path(path)
    data = _read(path)
    fmt, w, h, jpeg = embed_copy(data, path)
    return Photo(file=clean(path.name, 120), sha256=hashlib.sha256(data).hexdigest(),
                 size=len(data), format=fmt, width=w, height=h, jpeg=jpeg,
                 caption=clean(caption, 200))


def check_photos(paths: list[Path] | tuple[Path, ...]) -> list[Photo]:
    """Every photo checked before anything is recorded; limits on count and total size."""
    if len(paths) > MAX_PHOTOS:
        raise PhotoRejected(f"{len(paths)} photos given, at most {MAX_PHOTOS} per record",
                            "choose the photos that show the result best")
    photos = [check_photo(p) for p in paths]
    total = sum(len(p.jpeg) for p in photos)
    if total > MAX_EMBEDDED_BYTES:
        raise PhotoRejected(f"the photos take {total:,} bytes once reduced, more than "
                            f"{MAX_EMBEDDED_BYTES:,} per record", "give fewer photos")
    return photos


def photo_bytes(entry: dict[str, Any]) -> bytes | None:
    """The embedded JPEG of one photo entry of a record, or None when it is malformed."""
    try:
        data = base64.b64decode(str(entry["embedded"]["base64"]).encode("ascii"), validate=True)
    except (KeyError, TypeError, ValueError):
        return None
    return data if hashlib.sha256(data).hexdigest() == entry["embedded"].get("sha256") else None
