"""Offline verification of a signed certificate, and reading its embedded record.

`verify_certificate` never raises for a bad certificate file: every defect becomes one short
sentence in `VerifyReport.problems`. Checks:
  1. the file is a PDF pyHanko can read, with exactly one signature, cryptographically valid,
     intact and covering the whole file (no later incremental updates);
     with `trust`, the signer certificate must be the pinned one;
  2. the embedded `phonewipe-record.json` exists, is canonical JSON and a valid Record;
  3. the evidence bundle inside the record (phonewipe.erase.evidence) fits the record: schema, plan,
     number of sample digests;
  4. what the pages show is what the record says: the pages are re-rendered from the
     embedded record and compared with the signed pages (content streams, decoded, plus
     page resources and size). This covers the QR code, the printed SHA-256 and every field.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from phonewipe.erase.errors import CertificateInvalid
from phonewipe.erase.evidence import evidence_problems
from phonewipe.erase.model import Record

from .keys import load_certificate_file
from .render import LAYOUT_VERSION, render_pdf
from .sign import ATTACHMENT_NAME, FIELD_NAME, LAYOUT_KEY

MAX_DEPTH = 32  # name trees, page trees and resource dictionaries nest at most this deep
MAX_RECORD_BYTES = 4 * 1024 * 1024


@dataclass
class VerifyReport:
    path: Path
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    record: Record | None = None
    signer_subject: str | None = None
    signed_at: str | None = None
    signer_fingerprint: str | None = None
    trusted: bool = False  # the signer is the pinned --trust certificate


class _Bad(Exception):
    """A defect of the certificate file; its message is the problem line."""


# ---------------------------------------------------------------------------------------
# reading

def _open(data: bytes) -> PdfFileReader:
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise _Bad("not a PDF file")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        reader.root  # noqa: B018 - forces the catalog to be parsed
    except Exception as e:  # noqa: BLE001 - any parser failure means an unreadable file
        raise _Bad(f"not a readable PDF ({_short(e)})") from e
    return reader


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:120]


def _name_tree_entries(node: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > MAX_DEPTH or not isinstance(node, generic.DictionaryObject):
        return
    names = node.get("/Names")
    if names is not None:
        names = names.get_object()
        for i in range(0, len(names) - 1, 2):
            key = names[i].get_object()
            if isinstance(key, (generic.TextStringObject, generic.ByteStringObject)):
                text = key if isinstance(key, str) else bytes(key).decode("latin-1")
                yield str(text), names[i + 1]
    for kid in node.get("/Kids", ()):
        yield from _name_tree_entries(kid.get_object(), depth + 1)


def _embedded_record_bytes(reader: PdfFileReader) -> bytes:
    try:
        tree = reader.root["/Names"]["/EmbeddedFiles"].get_object()
    except (KeyError, TypeError, AttributeError) as e:
        raise _Bad(f"no embedded record ({ATTACHMENT_NAME} is missing)") from e
    specs = [spec for name, spec in _name_tree_entries(tree) if name == ATTACHMENT_NAME]
    if not specs:
        raise _Bad(f"no embedded record ({ATTACHMENT_NAME} is missing)")
    if len(specs) > 1:
        raise _Bad(f"more than one embedded {ATTACHMENT_NAME}")
    try:
        stream = specs[0].get_object()["/EF"]["/F"].get_object()
        data = stream.data
    except Exception as e:  # noqa: BLE001 - broken file spec or stream
        raise _Bad(f"the embedded record cannot be read ({_short(e)})") from e
    if len(data) > MAX_RECORD_BYTES:
        raise _Bad("the embedded record is implausibly large")
    return bytes(data)


def _parse_record(data: bytes) -> Record:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _Bad("the embedded record is not valid JSON") from e
    if not isinstance(parsed, dict):
        raise _Bad("the embedded record is not a JSON object")
    try:
        return Record.from_dict(parsed)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _Bad(f"the embedded record is not a phonewipe record ({_short(e)})") from e


def read_record(data: bytes) -> Record:
    """The Record embedded in certificate bytes (no signature check)."""
    return _parse_record(_embedded_record_bytes(_open(data)))


def show_certificate(path: Path) -> Record:
    """The embedded record, for `phonewipe cert show` (use `verify_certificate` to trust it)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CertificateInvalid(f"cannot read {path}: {e.strerror or e}",
                                 "check the path of the certificate") from e
    try:
        return read_record(data)
    except _Bad as e:
        raise CertificateInvalid(f"{path}: {e}",
                                 "this is not a phonewipe certificate, or it is damaged") from e


# ---------------------------------------------------------------------------------------
# comparing pages

def _pages(reader: PdfFileReader) -> list[generic.DictionaryObject]:
    out: list[generic.DictionaryObject] = []

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH or len(out) > 64:
            raise _Bad("the page tree is malformed")
        node = node.get_object()
        if node.get("/Type") == "/Pages" or "/Kids" in node:
            for kid in node["/Kids"]:
                walk(kid, depth + 1)
        else:
            out.append(node)

    walk(reader.root["/Pages"], 0)
    return out


def _content(page: generic.DictionaryObject) -> bytes:
    contents = page.get("/Contents")
    if contents is None:
        return b""
    contents = contents.get_object()
    if isinstance(contents, generic.ArrayObject):
        return b"\n".join(bytes(c.get_object().data) for c in contents)
    return bytes(contents.data)


def _canon(obj: Any, depth: int = 0) -> Any:
    """A structural, reference-free form of a PDF object (for comparing resources)."""
    if depth > MAX_DEPTH:
        raise _Bad("the page resources nest too deeply")
    if isinstance(obj, generic.IndirectObject):
        obj = obj.get_object()
    if isinstance(obj, generic.StreamObject):
        body = {k: _canon(v, depth + 1) for k, v in obj.items()
                if k not in ("/Length", "/Filter", "/DecodeParms")}
        return ("stream", sorted(body.items()), hashlib.sha256(obj.data).hexdigest())
    if isinstance(obj, generic.DictionaryObject):
        return ("dict", sorted((str(k), _canon(v, depth + 1)) for k, v in obj.items()))
    if isinstance(obj, generic.ArrayObject):
        return ("array", [_canon(v, depth + 1) for v in obj])
    if isinstance(obj, generic.FloatObject):
        return ("num", float(obj))
    return (type(obj).__name__, str(obj) if not isinstance(obj, bytes) else obj.hex())


def _page_signature(page: generic.DictionaryObject) -> tuple[Any, ...]:
    box = [float(v) for v in page.get("/MediaBox", ())]
    return (box, _canon(page.get("/Resources", generic.DictionaryObject())))


def _check_annotations(page: generic.DictionaryObject) -> None:
    """Only the (invisible) signature widget may sit on the pages."""
    for annot in page.get("/Annots", ()):
        annot = annot.get_object()
        if annot.get("/Subtype") != "/Widget" or annot.get("/FT") != "/Sig":
            raise _Bad("the certificate carries annotations that are not part of the signature")


def _signed_layout(reader: PdfFileReader) -> int:
    """The layout the issuing version drew (the marker is inside the signed revision)."""
    try:
        layout = int(reader.root.get(LAYOUT_KEY, 0))
    except (TypeError, ValueError):
        layout = 0
    if layout == 0:
        raise _Bad("not a phonewipe certificate (no layout marker)")
    if layout > LAYOUT_VERSION:
        raise _Bad(f"certificate layout {layout} is newer than this phonewipe version knows "
                   f"(layout {LAYOUT_VERSION}); update phonewipe to verify it")
    return layout


def _compare_pages(signed: PdfFileReader, record: Record, digest: str) -> None:
    rendered = PdfFileReader(io.BytesIO(render_pdf(record, _signed_layout(signed))), strict=False)
    mine, theirs = _pages(rendered), _pages(signed)
    for page in theirs:
        _check_annotations(page)
    shown = [_content(p) for p in theirs]
    same = len(mine) == len(theirs) and all(
        _content(a) == b_content and _page_signature(a) == _page_signature(b)
        for a, b, b_content in zip(mine, theirs, shown))
    if same:
        return
    halves = (digest[:32].encode("ascii"), digest[32:].encode("ascii"))  # printed in two lines
    if not all(any(h in c for c in shown) for h in halves):
        raise _Bad("the embedded record's SHA-256 is not the one printed on the certificate")
    raise _Bad("embedded record does not match the visible certificate")


# ---------------------------------------------------------------------------------------
# signature

def _fingerprint(cert: asn1_x509.Certificate) -> str:
    return hashlib.sha256(cert.dump()).hexdigest()


def _der_size(raw: bytes) -> int:
    """Length of the DER element at the start of `raw` (header included)."""
    if len(raw) < 2 or raw[0] != 0x30:
        raise _Bad("the signature is not a CMS object")
    first = raw[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 4 or len(raw) < 2 + n:
        raise _Bad("the signature is not a CMS object")
    return 2 + n + int.from_bytes(raw[2:2 + n], "big")


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _reencodes(value: Any) -> bool:
    original = value.dump()
    return type(value).load(original).dump(force=True) == original


SIGNED_DATA_FIELDS = ("version", "digest_algorithms", "encap_content_info", "certificates",
                      "crls", "signer_infos")


def _check_cms_encoding(der: bytes) -> None:
    """The parts of the CMS object that no signature covers (outer headers, version,
    algorithm set, certificates) must be exactly what phonewipe writes: pyHanko reads them
    lazily or not at all, so a changed byte there would otherwise go unnoticed."""
    bad = _Bad("the signature container was altered after signing")
    try:
        info = cms.ContentInfo.load(der, strict=True)
        signed = info["content"]
        body = b"".join(signed[k].dump() for k in SIGNED_DATA_FIELDS)
        rebuilt = _tlv(0x30, info["content_type"].dump() + _tlv(0xA0, _tlv(0x30, body)))
        infos = signed["signer_infos"]
        expected = (
            rebuilt == der
            and info["content_type"].native == "signed_data"
            and signed["version"].native == "v1"
            and signed["encap_content_info"].native == {"content_type": "data", "content": None}
            and len(infos) == 1
            and infos[0]["version"].native == "v1"
            and not infos[0]["unsigned_attrs"].native
            and [a.dump() for a in signed["digest_algorithms"]]
            == [infos[0]["digest_algorithm"].dump()]
            and not signed["crls"].native
            and all(_reencodes(signed[k]) for k in ("version", "digest_algorithms",
                                                    "encap_content_info", "signer_infos"))
        )
        certs = [c.chosen for c in signed["certificates"]]
        if any(c.name != "certificate" for c in signed["certificates"]):
            expected = False
        _check_chain([x509.load_der_x509_certificate(c.dump()) for c in certs])
    except _Bad:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure is tampering
        raise bad from e
    if not expected:
        raise bad


def _check_chain(certs: list[x509.Certificate]) -> None:
    """Every certificate carried in the CMS must verify against itself (self-issued) or an
    issuer carried alongside it; a certificate whose issuer is not carried cannot be
    checked here (pin it with --trust)."""
    for cert in certs:
        issuers = [cert] if cert.issuer == cert.subject else \
            [c for c in certs if c.subject == cert.issuer and c is not cert]
        try:
            for issuer in issuers[:1]:
                cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as e:
            raise _Bad("a certificate in the signature is damaged "
                       "(its own signature does not verify)") from e


def _check_unsigned_gap(data: bytes, sig: Any) -> None:
    """The signature's /Contents is the one part of the file the signature cannot cover.
    It must read exactly as the signer wrote it: the CMS object in upper-case hex, then only
    zero padding. So no single byte of the file can change unnoticed."""
    raw = bytes(sig.sig_object["/Contents"])
    size = _der_size(raw)
    if raw[size:].strip(b"\x00"):
        raise _Bad("the signature container was altered after signing")
    _check_cms_encoding(raw[:size])
    try:
        start = int(sig.byte_range[0]) + int(sig.byte_range[1])
        end = int(sig.byte_range[2])
    except (IndexError, TypeError, ValueError) as e:
        raise _Bad("the signature's byte range is malformed") from e
    if data[start:end] != b"<" + raw.hex().upper().encode("ascii") + b">":
        raise _Bad("the signature container was altered after signing")


def _check_signature(reader: PdfFileReader, data: bytes, report: VerifyReport,
                     pinned: asn1_x509.Certificate | None) -> None:
    sigs = reader.embedded_signatures
    if not sigs:
        raise _Bad("the certificate is not signed")
    if len(sigs) != 1:
        report.problems.append(f"the certificate carries {len(sigs)} signatures, expected one")
    sig = sigs[-1]
    if sig.field_name != FIELD_NAME:
        report.problems.append(f"unexpected signature field {sig.field_name!r}")
    # Trust is decided by pinning (below), not by pyHanko's path building: the signer's own
    # certificate is the only trust root here, which keeps the cryptographic checks and
    # avoids pyHanko logging a path-building traceback for every self-signed signer.
    try:
        own = sig.signer_cert
    except Exception as e:  # noqa: BLE001 - no signer certificate in the CMS
        raise _Bad(f"the signature carries no signer certificate ({_short(e)})") from e
    context = ValidationContext(trust_roots=[own], allow_fetching=False,
                                revocation_mode="soft-fail")
    usage = KeyUsageConstraints(key_usage={"digital_signature", "non_repudiation"})
    try:
        status = validate_pdf_signature(sig, signer_validation_context=context,
                                        key_usage_settings=usage)
    except Exception as e:  # noqa: BLE001 - malformed CMS, byte ranges, ...
        raise _Bad(f"the signature cannot be checked ({_short(e)})") from e
    _check_unsigned_gap(data, sig)
    cert = status.signing_cert
    if cert is not None:
        report.signer_subject = cert.subject.human_friendly
        report.signer_fingerprint = _fingerprint(cert)
    if status.signer_reported_dt is not None:
        report.signed_at = status.signer_reported_dt.isoformat()
    if not status.intact:
        report.problems.append("the document was changed after signing (digest mismatch)")
    elif not status.valid:
        report.problems.append("the signature is not valid")
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        report.problems.append("the signature does not cover the whole file "
                               "(something was added after signing)")
    if status.docmdp_ok is False:
        report.problems.append("the document was modified in a way the signature forbids")
    if pinned is not None:
        if cert is None or _fingerprint(cert) != _fingerprint(pinned):
            report.problems.append("signed by a different key than the trusted certificate")
        else:
            report.trusted = True


def load_pinned(trust: Path | None) -> asn1_x509.Certificate | None:
    if trust is None:
        return None
    cert = load_certificate_file(Path(trust))  # raises PhonewipeError for a bad --trust
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


# ---------------------------------------------------------------------------------------

def verify_bytes(data: bytes, path: Path,
                 pinned: asn1_x509.Certificate | None = None) -> VerifyReport:
    """Check certificate bytes; `pinned` is the trusted signer certificate, if any."""
    report = VerifyReport(path=Path(path))
    try:
        reader = _open(data)
        _check_signature(reader, data, report, pinned)
        raw = _embedded_record_bytes(reader)
        record = _parse_record(raw)
        report.record = record
        digest = record.sha256()
        if hashlib.sha256(raw).hexdigest() != digest:
            report.problems.append("the embedded record is not in canonical form")
        report.problems += evidence_problems(record.evidence, record.verification)
        _compare_pages(reader, record, digest)
    except _Bad as e:
        report.problems.append(str(e))
    except Exception as e:  # noqa: BLE001 - never raise for a bad file
        report.problems.append(f"the certificate cannot be checked ({_short(e)})")
    report.ok = not report.problems
    return report


def verify_certificate(path: Path, trust: Path | None = None) -> VerifyReport:
    """Check a certificate offline; see the module docstring. Never raises for a bad
    certificate file; an unreadable `trust` certificate raises PhonewipeError."""
    path = Path(path)
    pinned = load_pinned(trust)
    try:
        data = path.read_bytes()
    except OSError as e:
        return VerifyReport(path=path, problems=[f"cannot read {path}: {e.strerror or e}"])
    return verify_bytes(data, path, pinned)
