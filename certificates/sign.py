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
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import embed, generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from phonewipe.erase.errors import OutputError
from phonewipe.erase.model import Record

from .fields import STANDARD_LINE
from .keys import SigningMaterial, load_signing_material
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


class CertificateSigner:
    """Created once per key directory; `sign_record` is then cheap enough for batches."""

    def __init__(self, key_dir: Path, *, reason: str | None = None,
                 location: str | None = None) -> None:
        material = load_signing_material(Path(key_dir))
        self.material = material
        self._signer = _simple_signer(material)
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD_NAME,
            md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason or f"Certificate of Sanitization ({STANDARD_LINE})",
            location=location,
            embed_validation_info=False,
            use_pades_lta=False,
        )
        self._pdf_signer = signers.PdfSigner(meta, signer=self._signer)
        self._bytes_reserved = self._estimate_reservation()

    def _estimate_reservation(self) -> int:
        """Hex digits to reserve for the CMS blob. Without timestamps or revocation data its
        size is bounded by the certificates it carries plus ~1 KiB of signed attributes and
        signature, so pyHanko's per-signature dry run (a second signature) can be skipped."""
        certs = sum(len(c.dump()) for c in self._signer.cert_registry)
        certs += len(self._signer.signing_cert.dump())
        return 2 * (2048 + certs)

    @property
    def subject(self) -> str:
        return self.material.cert.subject.rfc4514_string()

    def sign_checkpoint(self, data: bytes) -> tuple[bytes, bytes]:
        """(signing certificate DER, detached signature over `data` with the organization
        key): the audit log's signed checkpoints (phonewipe.erase.audit)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        key = self.material.key
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
        sign, in one incremental update."""
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
        writer.update_root()
        out = io.BytesIO()
        self._pdf_signer.sign_pdf(writer, bytes_reserved=bytes_reserved, output=out)
        return out.getvalue()

    def sign_record(self, record: Record) -> bytes:
        """Render, attach and sign: the finished certificate as bytes."""
        return self.sign_pdf(render_pdf(record), record.canonical_json(), _created(record))

    def write_certificate(self, record: Record, out_dir: Path) -> Path:
        """Sign and write `<out_dir>/<serial-or-unknown>-<record_id[:8]>.pdf` atomically."""
        data = self.sign_record(record)
        return write_atomic(Path(out_dir), certificate_filename(record), data)


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
