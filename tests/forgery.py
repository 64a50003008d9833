"""Forgeries of signed certificates that tests expect the verifier to catch."""
from __future__ import annotations

import io

from pyhanko.pdf_utils import embed
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from phonewipe.certificates import sign as sign_mod


def swap_embedded_record(data: bytes, new_json: bytes) -> bytes:
    """Append an incremental update that points phonewipe-record.json at new content."""
    w = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    ef = embed.EmbeddedFileObject.from_file_data(w, new_json, mime_type="application/json")
    spec = embed.FileSpec(file_spec_string=sign_mod.ATTACHMENT_NAME,
                          file_name=sign_mod.ATTACHMENT_NAME, embedded_data=ef)
    names = w.root["/Names"]["/EmbeddedFiles"]["/Names"]
    names[1] = w.add_object(spec.as_pdf_object())
    w.update_container(names)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()
