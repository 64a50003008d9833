"""Sign certificates: render, attach the record's canonical JSON, PAdES-sign, write.

`CertificateSigner` loads the key and builds the pyHanko signer once; batch signing reuses
it. The attachment and the signature go into the same incremental update, so the signature
covers the whole file, attachment included.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import embed, generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from phonewipe.erase.errors import OutputError, PhonewipeError, UsageError
from phonewipe.erase.model import Record

from .fields import STANDARD_LINE, SigningInfo, subject_text
from .keys import SigningMaterial, fingerprint, load_signing_material
from .render import LAYOUT_VERSION, render_pdf

FIELD_NAME = "phonewipe"
LAYOUT_KEY = "/PhonewipeLayout"  # catalog entry: which renderer drew the pages
ATTACHMENT_NAME = "phonewipe-record.json"
ATTACHMENT_MIME = "application/json"
ATTACHMENT_DESCRIPTION = "phonewipe erasure record (canonical JSON; its SHA-256 is in the QR code)"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def certificate_filename(record: Record) -> str:
    """`<serial-or-unknown>-<record_id[:8]>.pdf`, safe for any filesystem."""
    serial = _SAFE.sub("_", record.device.serial or "").strip("._") or "unknown"
    rid = _SAFE.sub("_", record.record_id[:8]) or "norecord"
    return f"{serial[:64]}-{rid}.pdf"


def _created(record: Record) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(record.created_at)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _simple_signer(material: SigningMaterial) -> signers.SimpleSigner:
    der = serialization.Encoding.DER
    key_der = material.key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    cert = asn1_x509.Certificate.load(material.cert.public_bytes(der))
    # the registry holds only the issuers: pyHanko adds the signing certificate itself,
    # and a leaf in the registry too would be embedded twice
    chain = [asn1_x509.Certificate.load(c.public_bytes(der)) for c in material.chain]
    return signers.SimpleSigner(signing_cert=cert,
                                signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
                                cert_registry=SimpleCertificateStore.from_certs(chain))


DEFAULT_TSA_TIMEOUT = 10.0  # seconds for one time-stamping request


class TimestampUnavailable(PhonewipeError):
    """The configured time-stamping authority did not answer with a valid timestamp: no
    certificate can be signed as configured (exit 5, like a missing key)."""

    exit_code = 5


def _timestamper(url: str, timeout: float) -> Any:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"[signing] tsa_url {url!r} is not an http(s) URL",
                         "set the time-stamping authority's URL, e.g. https://tsa.example/tsr")
    return _keep_alive_timestamper(url, timeout)


MAX_TSA_RESPONSE = 1024 * 1024


def _keep_alive_timestamper(url: str, timeout: float) -> Any:
    """An RFC 3161 client over one persistent HTTP connection (stdlib http.client).
    pyHanko's own client opens a new HTTP session for every signature (each signature runs
    in its own event loop), which cost more CPU than the signature itself."""
    import http.client
    import threading
    import urllib.parse

    from asn1crypto import tsp
    from pyhanko.sign.timestamps import TimeStamper, TimestampRequestError

    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None:
        raise UsageError(f"[signing] tsa_url {url!r} names no host",
                         "set the time-stamping authority's URL, e.g. https://tsa.example/tsr")
    host: str = parts.hostname
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    factory = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection

    class KeepAliveTimeStamper(TimeStamper):
        def __init__(self) -> None:
            super().__init__()
            self.url = url
            self._conn: Any = None
            self._lock = threading.Lock()

        def _post(self, body: bytes) -> bytes:
            for attempt in (1, 2):  # a kept-alive connection the server closed: once more
                if self._conn is None:
                    self._conn = factory(host, parts.port, timeout=timeout)
                try:
                    self._conn.request("POST", path, body, {
                        "Content-Type": "application/timestamp-query",
                        "Accept": "application/timestamp-reply"})
                    response = self._conn.getresponse()
                    data = response.read(MAX_TSA_RESPONSE + 1)
                except (OSError, http.client.HTTPException) as e:
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise TimestampRequestError(
                            f"no answer from the timestamp server ({e})") from e
                    continue
                if response.will_close:
                    self._conn.close()
                    self._conn = None
                if response.status != 200:
                    raise TimestampRequestError(f"the timestamp server answered HTTP "
                                                f"{response.status}")
                kind = (response.getheader("Content-Type") or "").split(";")[0].strip()
                if kind != "application/timestamp-reply" or len(data) > MAX_TSA_RESPONSE:
                    raise TimestampRequestError("the timestamp server's answer is not a "
                                                "timestamp reply")
                return data
            raise AssertionError("unreachable")

        async def async_request_tsa_response(self, req: Any) -> Any:
            with self._lock:
                return tsp.TimeStampResp.load(self._post(req.dump()))

    return KeepAliveTimeStamper()


class CertificateSigner:
    """Created once per key directory; `sign_record` is then cheap enough for batches.

    With `tsa_url` every signature carries an RFC 3161 timestamp from that authority
    (PAdES B-T), and the certificates of the signer and the TSA are embedded in a document
    security store inside the signed revision (validation data at hand: B-LT when the TSA
    chain carries what a validator needs)."""

    def __init__(self, key_dir: Path, *, reason: str | None = None,
                 location: str | None = None, tsa_url: str | None = None,
                 tsa_timeout: float = DEFAULT_TSA_TIMEOUT) -> None:
        material = load_signing_material(Path(key_dir))
        self.material = material
        self._signer = _simple_signer(material)
        self._sign_lock = threading.Lock()
        self.tsa_url = tsa_url or None
        self._timestamper = _timestamper(tsa_url, tsa_timeout) if tsa_url else None
        self._tsa_timeout = tsa_timeout
        der = material.cert.public_bytes(serialization.Encoding.DER)
        self.signing_info = SigningInfo(subject=subject_text(der),
                                        fingerprint=fingerprint(material.cert),
                                        timestamped=self._timestamper is not None)
        self._tsa_certs: list[asn1_x509.Certificate] = []
        self._tsa_crls: list[Any] = []
        token_size = self._probe_tsa(self._timestamper) if self._timestamper is not None else 0
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD_NAME,
            md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason or f"Certificate of Sanitization ({STANDARD_LINE})",
            location=location,
            embed_validation_info=False,
            use_pades_lta=False,
        )
        self._pdf_signer = signers.PdfSigner(meta, signer=self._signer,
                                             timestamper=self._timestamper)
        self._bytes_reserved = self._estimate_reservation(token_size)

    def _probe_tsa(self, timestamper: Any) -> int:
        """Ask the TSA once: it must answer now (a station should not find out at its first
        phone), and its token's size sizes the signature reservation."""
        import asyncio
        import hashlib
        try:
            token = asyncio.run(timestamper.async_timestamp(
                hashlib.sha256(b"phonewipe tsa probe").digest(), "sha256"))
        except Exception as e:  # noqa: BLE001 - network, HTTP or TSP failure
            raise TimestampUnavailable(
                f"the time-stamping authority {self.tsa_url} did not give a timestamp "
                f"({_first_line(e)})",
                "check [signing] tsa_url and the network, or remove tsa_url to sign with the "
                "station's clock") from e
        self._tsa_certs = [c.chosen for c in token["content"]["certificates"]
                           if c.name == "certificate"]
        self._tsa_crls = _fetch_crls(self._tsa_certs, self._tsa_timeout)
        return len(token.dump())

    def _add_validation_data(self, writer: IncrementalPdfFileWriter) -> None:
        """PAdES B-LT where the data is at hand: a document security store in the signed
        revision with the signer's chain, the TSA's certificates and the CRLs its
        certificates point to (fetched once, when the signer starts), so a validator needs
        nothing from the network after the signing certificate or the TSA's expires."""
        from pyhanko.sign.validation.dss import DocumentSecurityStore
        certs = [self._signer.signing_cert, *self._signer.cert_registry, *self._tsa_certs]
        DocumentSecurityStore.supply_dss_in_writer(writer, None, certs=certs, ocsps=[],
                                                   crls=self._tsa_crls)

    def _estimate_reservation(self, token_size: int = 0) -> int:
        """Hex digits to reserve for the CMS blob. Its size is bounded by the certificates
        it carries plus ~1 KiB of signed attributes and signature, plus the timestamp token
        (its size as probed, with room for a longer serial or chain), so pyHanko's
        per-signature dry run (a second signature, a second TSA request) can be skipped."""
        certs = sum(len(c.dump()) for c in self._signer.cert_registry)
        certs += len(self.material.cert.public_bytes(serialization.Encoding.DER))
        return 2 * (2048 + certs + (2 * token_size + 1024 if token_size else 0))

    @property
    def subject(self) -> str:
        return self.material.cert.subject.rfc4514_string()

    def sign_checkpoint(self, data: bytes) -> tuple[bytes, bytes]:
        """(signing certificate DER, detached signature over `data` with the organization
        key): the audit log's signed checkpoints (phonewipe.erase.audit)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        key: Any = self.material.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:  # Ed25519 / Ed448
            signature = key.sign(data)
        return self.material.cert.public_bytes(serialization.Encoding.DER), signature

    def sign_pdf(self, pdf: bytes, record_json: bytes, created: dt.datetime | None = None,
                 attachment: tuple[str, str] = (ATTACHMENT_NAME, ATTACHMENT_DESCRIPTION)) -> bytes:
        """Attach `record_json` to `pdf` (as `attachment` = (file name, description)) and
        sign, in one incremental update. One signature at a time: the signer's asn1crypto
        objects are shared and parsed lazily, and two station jobs signing at once failed
        with "can't concat NoneType to bytes while constructing CMSAttributes"."""
        with self._sign_lock:
            try:
                return self._sign_once(pdf, record_json, created, self._bytes_reserved, attachment)
            except SigningError:  # pragma: no cover - reservation too small for an unusual key
                return self._sign_once(pdf, record_json, created, None, attachment)

    def _sign_once(self, pdf: bytes, record_json: bytes, created: dt.datetime | None,
                   bytes_reserved: int | None,
                   attachment: tuple[str, str] = (ATTACHMENT_NAME, "")) -> bytes:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        params = embed.EmbeddedFileParams(embed_size=True, embed_checksum=True,
                                          creation_date=created, modification_date=created)
        data = embed.EmbeddedFileObject.from_file_data(writer, record_json, compress=True,
                                                       params=params, mime_type=ATTACHMENT_MIME)
        embed.embed_file(writer, embed.FileSpec(
            file_spec_string=attachment[0], file_name=attachment[0], embedded_data=data,
            description=attachment[1] or ATTACHMENT_DESCRIPTION,
            af_relationship=generic.pdf_name("/Data")))
        writer.root[LAYOUT_KEY] = generic.NumberObject(LAYOUT_VERSION)
        if self._timestamper is not None:
            self._add_validation_data(writer)
        writer.update_root()
        out = io.BytesIO()
        try:
            self._pdf_signer.sign_pdf(writer, bytes_reserved=bytes_reserved, output=out)
        except SigningError:
            raise
        except Exception as e:  # noqa: BLE001 - the TSA failed for this signature
            if self._timestamper is None:
                raise
            raise TimestampUnavailable(
                f"the time-stamping authority {self.tsa_url} did not give a timestamp "
                f"({_first_line(e)})", "check the network and the TSA; the record is kept "
                "and can be certified again") from e
        return out.getvalue()

    def sign_record(self, record: Record) -> bytes:
        """Render, attach and sign: the finished certificate as bytes."""
        return self.sign_pdf(render_pdf(record, signing=self.signing_info),
                             record.canonical_json(), _created(record))

    def write_certificate(self, record: Record, out_dir: Path) -> Path:
        """Sign and write `<out_dir>/<serial-or-unknown>-<record_id[:8]>.pdf` atomically."""
        data = self.sign_record(record)
        return write_atomic(Path(out_dir), certificate_filename(record), data)


def _fetch_crls(certs: list[asn1_x509.Certificate], timeout: float) -> list[Any]:
    """The CRLs the TSA's certificates name (http distribution points), as far as they
    can be fetched now; what cannot be fetched is left out (validation data "at hand")."""
    import urllib.request

    from asn1crypto import crl as asn1_crl
    out, seen = [], set()
    for cert in certs:
        for url in cert.crl_distribution_points and [
                name.native for point in cert.crl_distribution_points
                for name in (point["distribution_point"].chosen
                             if point["distribution_point"].name == "full_name" else [])
                if name.name == "uniform_resource_identifier"] or []:
            if url in seen or not str(url).startswith(("http://", "https://")):
                continue
            seen.add(url)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                    data = response.read(4 * 1024 * 1024)
                out.append(asn1_crl.CertificateList.load(data, strict=True))
            except Exception:  # noqa: BLE001 - not at hand: leave it out
                continue
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def write_atomic(out_dir: Path, name: str, data: bytes) -> Path:
    """Temp file in the same directory, fsync, rename; OutputError on any OS failure."""
    target = out_dir / name
    tmp: str | None = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(out_dir)
    except OSError as e:
        raise OutputError(f"cannot write certificate to {out_dir}: {e.strerror or e}",
                          "choose a writable --out directory / free disk space") from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_certificate(record: Record, out_dir: Path, signer: CertificateSigner) -> Path:
    """Module-level convenience: `signer.write_certificate(record, out_dir)`."""
    return signer.write_certificate(record, out_dir)
