"""Offline verification of a signed certificate, and reading its embedded record.

`verify_certificate` never raises for a bad certificate file: every defect becomes one short
sentence in `VerifyReport.problems`. Checks:
  1. the file is a PDF pyHanko can read, with exactly one signature, cryptographically valid,
     intact and covering the whole file (no later incremental updates); the signer's
     certificate was valid at the signing time (the time of an RFC 3161 timestamp from a
     trusted TSA when the signature carries one, else the time the signer's clock claimed);
     an attached timestamp token must match the signature;
  2. the embedded `phonewipe-record.json` exists, is canonical JSON and a valid Record (or,
     for a batch summary, `phonewipe-batch-summary.json` is a canonical batch summary);
  3. the evidence bundle inside the record (phonewipe.erase.evidence) fits the record: schema, plan,
     number of sample digests;
  4. what the pages show is what the record says: the pages are re-rendered from the
     embedded record and compared with the signed pages (content streams, decoded, plus
     page resources and size). This covers the QR code, the printed SHA-256 and every field,
     and (layout 3 on) the signer named on the page and in the QR code, and the printed
     source of the signing time, which are re-rendered from the signature itself.
Trust is separate from validity (`trust.py`): `report.ok` says the file is intact and
consistent, `report.trusted` says its signer is one the user trusts.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from phonewipe.erase.errors import CertificateInvalid
from phonewipe.erase.evidence import evidence_problems
from phonewipe.erase.model import Record

from .fields import STATION_CLOCK, SigningInfo, subject_text
from .keys import load_certificate_file
from .render import LAYOUT_VERSION, render_pdf
from .sign import ATTACHMENT_NAME, FIELD_NAME, LAYOUT_KEY
from .trust import TrustStore, cert_fingerprint, decide

SUMMARY_NAME = "phonewipe-batch-summary.json"  # batch.SUMMARY_ATTACHMENT's file name
ADDENDUM_NAME = "phonewipe-validation.json"  # addendum.ADDENDUM_ATTACHMENT's file name
LIST_NAME = "phonewipe-destruction-list.json"  # destruction_list.LIST_ATTACHMENT's file name

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
    signer_valid: str | None = None  # "<not before> to <not after>" of the signer certificate
    trusted: bool = False  # the signer is pinned, or chains to a trusted CA
    trust_note: str = ""  # how it is trusted, or why not
    timestamp: str | None = None  # RFC 3161 time (ISO) when the signature carries a token
    timestamp_by: str | None = None  # the TSA certificate's subject
    timestamp_trusted: bool = False  # the TSA chains to a trusted root
    time_source: str = STATION_CLOCK  # what the signing time rests on
    notes: list[str] = field(default_factory=list)  # worth saying, not a defect
    kind: str = "certificate"  # or "summary" (a signed batch summary), "addendum",
    # "destruction-list" (a destroy run's signed list)
    summary: dict[str, Any] | None = None
    addendum: dict[str, Any] | None = None  # a second person's validation (addendum.py)

    @property
    def verdict(self) -> str:
        """"invalid", "untrusted" (intact, signer not trusted) or "trusted"."""
        if not self.ok:
            return "invalid"
        return "trusted" if self.trusted else "untrusted"


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


def _embedded_names(reader: PdfFileReader) -> list[str]:
    try:
        tree = reader.root["/Names"]["/EmbeddedFiles"].get_object()
    except (KeyError, TypeError, AttributeError):
        return []
    return [name for name, _ in _name_tree_entries(tree)]


def _embedded_record_bytes(reader: PdfFileReader, name: str = ATTACHMENT_NAME,
                           what: str = "record") -> bytes:
    try:
        tree = reader.root["/Names"]["/EmbeddedFiles"].get_object()
    except (KeyError, TypeError, AttributeError) as e:
        raise _Bad(f"no embedded {what} ({name} is missing)") from e
    specs = [spec for entry, spec in _name_tree_entries(tree) if entry == name]
    if not specs:
        raise _Bad(f"no embedded {what} ({name} is missing)")
    if len(specs) > 1:
        raise _Bad(f"more than one embedded {name}")
    try:
        stream = specs[0].get_object()["/EF"]["/F"].get_object()
        data = stream.data
    except Exception as e:  # noqa: BLE001 - broken file spec or stream
        raise _Bad(f"the embedded {what} cannot be read ({_short(e)})") from e
    if len(data) > MAX_RECORD_BYTES:
        raise _Bad(f"the embedded {what} is implausibly large")
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
        try:
            return ("stream", sorted(body.items()), hashlib.sha256(obj.data).hexdigest())
        except NotImplementedError:  # a filter pyHanko does not decode (a photo's DCTDecode):
            # the encoded bytes and their filter, exactly as the renderer placed them
            return ("encoded-stream", sorted(body.items()), _canon(obj.get("/Filter"), depth + 1),
                    hashlib.sha256(obj.encoded_data).hexdigest())
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


def _same_pages(rendered_pdf: bytes, signed: PdfFileReader) -> tuple[bool, list[bytes]]:
    rendered = PdfFileReader(io.BytesIO(rendered_pdf), strict=False)
    mine, theirs = _pages(rendered), _pages(signed)
    for page in theirs:
        _check_annotations(page)
    shown = [_content(p) for p in theirs]
    same = len(mine) == len(theirs) and all(
        _content(a) == b_content and _page_signature(a) == _page_signature(b)
        for a, b, b_content in zip(mine, theirs, shown, strict=True))
    return same, shown


def _compare_pages(signed: PdfFileReader, record: Record, digest: str,
                   signing: SigningInfo | None = None) -> None:
    layout = _signed_layout(signed)
    same, shown = _same_pages(render_pdf(record, layout, signing) if layout >= 3
                              else render_pdf(record, layout), signed)
    if same:
        return
    halves = (digest[:32].encode("ascii"), digest[32:].encode("ascii"))  # printed in two lines
    if not all(any(h in c for c in shown) for h in halves):
        raise _Bad("the embedded record's SHA-256 is not the one printed on the certificate")
    if signing is not None and layout >= 3 and not any(
            signing.fingerprint.encode("ascii") in c for c in shown):
        raise _Bad("the signer named on the certificate is not the key that signed it")
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
            and _unsigned_attrs_ok(infos[0]["unsigned_attrs"])
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
        for token in _timestamp_tokens(infos[0]):
            _check_chain([x509.load_der_x509_certificate(c.chosen.dump())
                          for c in token["content"]["certificates"]])
    except _Bad:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure is tampering
        raise bad from e
    if not expected:
        raise bad


def _unsigned_attrs_ok(attrs: Any) -> bool:
    """Nothing, or exactly one RFC 3161 signature timestamp token (PAdES B-T)."""
    if not attrs.native:
        return True
    return (len(attrs) == 1
            and attrs[0]["type"].native == "signature_time_stamp_token"
            and len(attrs[0]["values"]) == 1
            and attrs[0]["values"][0]["content_type"].native == "signed_data")


def _timestamp_tokens(signer_info: Any) -> list[Any]:
    attrs = signer_info["unsigned_attrs"]
    if not attrs.native:
        return []
    return [v for a in attrs if a["type"].native == "signature_time_stamp_token"
            for v in a["values"]]


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


_TSA_ROOTS: list[asn1_x509.Certificate] | None = None


def _public_tsa_roots() -> list[asn1_x509.Certificate]:
    """The public CA roots (certifi's bundle) a TSA may chain to, loaded once."""
    global _TSA_ROOTS
    if _TSA_ROOTS is None:
        roots: list[asn1_x509.Certificate] = []
        try:
            import certifi
            from asn1crypto import pem
            with open(certifi.where(), "rb") as f:
                for _, _, der in pem.unarmor(f.read(), multiple=True):
                    try:
                        roots.append(asn1_x509.Certificate.load(der))
                    except ValueError:
                        continue
        except (ImportError, OSError):
            pass
        _TSA_ROOTS = roots
    return _TSA_ROOTS


def _utc(when: Any) -> Any:
    import datetime as dt
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=dt.timezone.utc)
    return when


def _ts_context(reader: PdfFileReader, store: TrustStore, report: VerifyReport) -> Any:
    """The context a timestamp is checked in: the trusted CAs and public roots, and the
    validation data embedded in the document security store (PAdES B-LT), never fetched."""
    kwargs: dict[str, Any] = dict(trust_roots=[*store.cas, *_public_tsa_roots()],
                                  allow_fetching=False, revocation_mode="soft-fail")
    if "/DSS" in reader.root:
        try:
            from pyhanko.sign.validation.dss import DocumentSecurityStore
            dss = DocumentSecurityStore.read_dss(reader)
            context = dss.as_validation_context(kwargs)
            report.notes.append(f"PAdES B-LT: {len(dss.certs)} certificates, {len(dss.crls)} "
                                f"CRLs, {len(dss.ocsps)} OCSP responses embedded for later checks")
            return context
        except Exception as e:  # noqa: BLE001 - a damaged store is reported, not fatal
            report.problems.append(f"the document security store cannot be read ({_short(e)})")
    return ValidationContext(**kwargs)


def _check_signature(reader: PdfFileReader, data: bytes, report: VerifyReport,
                     store: TrustStore) -> SigningInfo | None:
    """Cryptographic checks, the signer's validity at the signing time, the timestamp and
    the trust decision; returns what the page must say about the signer."""
    sigs = reader.embedded_signatures
    if not sigs:
        raise _Bad("the certificate is not signed")
    if len(sigs) != 1:
        report.problems.append(f"the certificate carries {len(sigs)} signatures, expected one")
    sig = sigs[-1]
    if sig.field_name != FIELD_NAME:
        report.problems.append(f"unexpected signature field {sig.field_name!r}")
    # pyHanko checks the cryptography with the signer's own certificate as the only root
    # (no path-building tracebacks for self-signed signers); who is trusted is decided below.
    try:
        own = sig.signer_cert
    except Exception as e:  # noqa: BLE001 - no signer certificate in the CMS
        raise _Bad(f"the signature carries no signer certificate ({_short(e)})") from e
    context = ValidationContext(trust_roots=[own], allow_fetching=False,
                                revocation_mode="soft-fail")
    has_token = bool(_timestamp_tokens(sig.signer_info))
    ts_context = _ts_context(reader, store, report) if has_token else None
    usage = KeyUsageConstraints(key_usage={"digital_signature", "non_repudiation"})
    try:
        status = validate_pdf_signature(sig, signer_validation_context=context,
                                        ts_validation_context=ts_context,
                                        key_usage_settings=usage)
    except Exception as e:  # noqa: BLE001 - malformed CMS, byte ranges, ...
        raise _Bad(f"the signature cannot be checked ({_short(e)})") from e
    _check_unsigned_gap(data, sig)
    cert = status.signing_cert
    if cert is None:
        raise _Bad("the signature names no signer certificate")
    report.signer_subject = subject_text(cert.dump())
    report.signer_fingerprint = _fingerprint(cert)
    crypto_cert = x509.load_der_x509_certificate(cert.dump())
    not_before, not_after = crypto_cert.not_valid_before_utc, crypto_cert.not_valid_after_utc
    report.signer_valid = f"{not_before.isoformat()} to {not_after.isoformat()}"
    if status.signer_reported_dt is not None:
        report.signed_at = _utc(status.signer_reported_dt).isoformat()
    if not status.intact:
        report.problems.append("the document was changed after signing (digest mismatch)")
    elif not status.valid:
        report.problems.append("the signature is not valid")
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        report.problems.append("the signature does not cover the whole file "
                               "(something was added after signing)")
    if status.docmdp_ok is False:
        report.problems.append("the document was modified in a way the signature forbids")

    # the signing time: a trusted timestamp's, else the signer's own clock
    moment = _utc(status.signer_reported_dt)
    ts = status.timestamp_validity
    if has_token and ts is None:
        report.problems.append("the signature's timestamp token cannot be read")
    if ts is not None:
        report.timestamp = _utc(ts.timestamp).isoformat()
        if ts.signing_cert is not None:
            report.timestamp_by = subject_text(ts.signing_cert.dump())
        if not (ts.intact and ts.valid):
            report.problems.append("the timestamp token does not match the signature")
        elif ts.trusted:
            report.timestamp_trusted = True
            moment = _utc(ts.timestamp)
            report.time_source = f"RFC 3161 timestamp by {report.timestamp_by}"
        else:
            report.notes.append(f"the timestamp's authority ({report.timestamp_by}) is not "
                                "trusted: pass its root CA with --trust-ca; the signing time "
                                "rests on the station's clock")
    if moment is None:
        report.problems.append("the signature states no signing time")
    elif not not_before <= moment <= not_after:
        report.problems.append(
            f"the signer's certificate was not valid at the signing time ({moment.isoformat()}; "
            f"valid {report.signer_valid}): refused even when trusted")
    elif not report.timestamp_trusted:
        import datetime as dt
        if dt.datetime.now(dt.timezone.utc) > not_after:
            report.notes.append("the signer's certificate has expired since; without a "
                                "trusted timestamp the signing time rests on the station's clock")

    carried = [c.chosen for c in sig.signed_data["certificates"] if c.name == "certificate"]
    if moment is not None:
        decision = decide(store, cert, carried, moment)
        report.trusted, report.trust_note = decision.trusted, decision.how
    return SigningInfo(subject=report.signer_subject, fingerprint=report.signer_fingerprint,
                       timestamped=has_token)


def load_pinned(trust: Path | None) -> asn1_x509.Certificate | None:
    if trust is None:
        return None
    cert = load_certificate_file(Path(trust))  # raises PhonewipeError for a bad --trust
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _store(trust: TrustStore | Path | str | asn1_x509.Certificate | None) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    store = TrustStore()
    if isinstance(trust, asn1_x509.Certificate):
        store.pinned[cert_fingerprint(trust)] = "--trust"
    elif trust is not None:
        store.add_trust_argument(str(trust))
    return store


# ---------------------------------------------------------------------------------------

def verify_bytes(data: bytes, path: Path,
                 trust: TrustStore | asn1_x509.Certificate | None = None) -> VerifyReport:
    """Check certificate (or batch summary) bytes; `trust` says whom to trust (a TrustStore,
    or one pinned signer certificate)."""
    report = VerifyReport(path=Path(path))
    try:
        store = _store(trust)
        reader = _open(data)
        signing = _check_signature(reader, data, report, store)
        names = _embedded_names(reader)
        if ATTACHMENT_NAME not in names and SUMMARY_NAME in names:
            _check_summary(reader, report, signing)
        elif ATTACHMENT_NAME not in names and ADDENDUM_NAME in names:
            _check_addendum(reader, report, signing)
        elif ATTACHMENT_NAME not in names and LIST_NAME in names:
            _check_destruction_list(reader, report, signing)
        else:
            raw = _embedded_record_bytes(reader)
            record = _parse_record(raw)
            report.record = record
            digest = record.sha256()
            if hashlib.sha256(raw).hexdigest() != digest:
                report.problems.append("the embedded record is not in canonical form")
            report.problems += evidence_problems(record.evidence, record.verification)
            _compare_pages(reader, record, digest, signing)
    except _Bad as e:
        report.problems.append(str(e))
    except RecursionError:
        report.problems.append("the certificate cannot be checked (it nests too deeply)")
    except Exception as e:  # noqa: BLE001 - never raise for a bad file
        report.problems.append(f"the certificate cannot be checked ({_short(e)})")
    report.ok = not report.problems
    return report


def _embedded_json(reader: PdfFileReader, report: VerifyReport, name: str, what: str,
                   schema: str) -> dict[str, Any]:
    """A signed JSON document embedded as `name` (a batch summary, a destruction list, an
    addendum): valid JSON of `schema`; not being in canonical form is a problem."""
    from phonewipe.erase.model import canonical_json
    raw = _embedded_record_bytes(reader, name, what)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _Bad(f"the embedded {what} is not valid JSON") from e
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise _Bad(f"the embedded {what} is not a phonewipe {what}")
    if canonical_json(data) != raw:
        report.problems.append(f"the embedded {what} is not in canonical form")
    return data


def _renders_as_signed(reader: PdfFileReader, what: str, render: Callable[..., bytes],
                       data: dict[str, Any], signing: SigningInfo | None) -> None:
    """The signed pages are exactly what `data` renders to, in the layout they were signed in."""
    try:
        rendered = render(data, _signed_layout(reader), signing)
    except _Bad:
        raise
    except Exception as e:  # noqa: BLE001 - a document that does not render is not ours
        raise _Bad(f"the embedded {what} cannot be rendered ({_short(e)})") from e
    same, _ = _same_pages(rendered, reader)
    if not same:
        raise _Bad(f"the embedded {what} does not match the visible pages")


def _check_summary(reader: PdfFileReader, report: VerifyReport,
                   signing: SigningInfo | None) -> None:
    """A signed batch summary: its embedded JSON is a canonical batch summary and the pages
    are exactly what it renders to."""
    from .batch import SUMMARY_SCHEMA, render_summary
    report.kind = "summary"
    report.summary = _embedded_json(reader, report, SUMMARY_NAME, "batch summary", SUMMARY_SCHEMA)
    _renders_as_signed(reader, "batch summary", render_summary, report.summary, signing)


def _check_destruction_list(reader: PdfFileReader, report: VerifyReport,
                            signing: SigningInfo | None) -> None:
    """A destruction run's signed list: canonical JSON that renders to exactly the pages."""
    from .destruction_list import LIST_SCHEMA, render_list
    report.kind = "destruction-list"
    report.summary = _embedded_json(reader, report, LIST_NAME, "destruction list", LIST_SCHEMA)
    _renders_as_signed(reader, "destruction list", render_list, report.summary, signing)


def _check_addendum(reader: PdfFileReader, report: VerifyReport,
                    signing: SigningInfo | None) -> None:
    """A second person's validation: canonical JSON that renders to exactly the signed pages,
    and, when the certificate it cites lies beside it, that file's SHA-256 is the cited one."""
    from .addendum import ADDENDUM_SCHEMA, render_addendum
    report.kind = "addendum"
    addendum = _embedded_json(reader, report, ADDENDUM_NAME, "validation addendum", ADDENDUM_SCHEMA)
    report.addendum = addendum
    _renders_as_signed(reader, "validation addendum", render_addendum, addendum, signing)
    cert = addendum.get("certificate") or {}
    name = Path(str(cert.get("file", ""))).name
    beside = report.path.parent / name if name else None
    if beside is None or not beside.is_file():
        report.notes.append(f"the validated certificate {name or '?'} is not beside the "
                            f"addendum: check that its SHA-256 is {cert.get('file_sha256')}")
        return
    try:
        digest = hashlib.sha256(beside.read_bytes()).hexdigest()
    except OSError as e:
        report.notes.append(f"the validated certificate {name} cannot be read ({e.strerror})")
        return
    if digest != cert.get("file_sha256"):
        report.problems.append(f"the certificate beside it ({name}) is not the one validated "
                               "(its SHA-256 differs)")
    else:
        report.notes.append(f"validates {name} (its SHA-256 matches)")


def verify_certificate(path: Path, trust: TrustStore | Path | str | None = None) -> VerifyReport:
    """Check a certificate offline; see the module docstring. Never raises for a bad
    certificate file; an unreadable `trust` certificate raises PhonewipeError."""
    path = Path(path)
    store = _store(trust)  # raises PhonewipeError for a bad --trust
    try:
        data = path.read_bytes()
    except OSError as e:
        return VerifyReport(path=path, problems=[f"cannot read {path}: {e.strerror or e}"])
    return verify_bytes(data, path, store)


def terminal_safe(value: Any) -> str:
    """Text from a certificate as a terminal may show it: control and bidi/format
    characters escaped visibly (\\x1b, \\u202e), rich markup escaped. A certificate's
    strings are data: a serial must not move the cursor or print a fake PASS."""
    import unicodedata

    from rich.markup import escape
    out = []
    for ch in str(value):
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return escape("".join(out))


def report_dict(report: VerifyReport) -> dict[str, Any]:
    """What `cert verify --json` prints for one file."""
    rec = report.record
    return {
        "path": str(report.path), "verdict": report.verdict, "kind": report.kind,
        "problems": list(report.problems), "notes": list(report.notes),
        "signer": {"subject": report.signer_subject, "fingerprint_sha256": report.signer_fingerprint,
                   "validity": report.signer_valid, "trusted": report.trusted,
                   "trust": report.trust_note},
        "time": {"source": report.time_source, "signer_reported": report.signed_at,
                 "timestamp": report.timestamp, "timestamp_authority": report.timestamp_by,
                 "timestamp_trusted": report.timestamp_trusted},
        "record": None if rec is None else {"result": rec.result_text, "serial": rec.device.serial,
                                            "sha256": rec.sha256()},
        "addendum": None if report.addendum is None else {
            "certificate": report.addendum.get("certificate"),
            "validated_by": report.addendum.get("validated_by"),
            "validated_at": report.addendum.get("validated_at"),
            "reverification": report.addendum.get("reverification")},
        "summary": None if report.summary is None else {
            "batch_id": report.summary.get("batch_id"),
            "device_count": report.summary.get("device_count")},
    }
