"""The audit log: an append-only, hash-chained SQLite events table, with signed checkpoints.

Each row's hash is sha256(previous row's hash || canonical JSON of this row), so editing,
deleting or reordering any row breaks the chain at that row. It is the source of truth for
what happened to every device, written before each next step starts.

A chain alone cannot prove its own length or origin: deleting the last rows, or editing a row
and recomputing every hash after it, leaves a chain that checks. So the organization key
signs **checkpoints** (row count, head hash, time) into a `checkpoints` table: every
`CHECKPOINT_EVERY` rows, after each certificate and batch close, and at the end of every
erase run. `verify_audit` checks each checkpoint's signature and that its head is the
chain's hash at that row: a recomputed chain, a log cut shorter than a checkpoint, or a
fabricated database (no checkpoint, or one signed by another key) is named as such. Rows
after the last checkpoint are covered by nothing but the chain: `--expect-head` (the head a
certificate or summary printed) is how a reader proves more.
"""
from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import AuditBroken, OutputError
from .model import canonical_json
from .strings import clean

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    job_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    row INTEGER NOT NULL,
    head TEXT NOT NULL,
    reason TEXT NOT NULL,
    certificate TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""
CHECKPOINT_SCHEMA = "phonewipe.audit-checkpoint/1"
CHECKPOINT_EVERY = 50  # rows between periodic checkpoints
CHECKPOINT_AFTER = frozenset({"certified", "certificate-failed", "batch-closed", "station-stopped"})


class AuditEmpty(AuditBroken):
    """The log holds no row at all (and no checkpoint says it ever held one)."""
    exit_code = 14


class AuditTruncated(AuditBroken):
    """Rows a checkpoint (or an expected head) covers are gone from the end of the log."""
    exit_code = 15


class AuditRewritten(AuditBroken):
    """The chain is intact but is not the one that was signed: recomputed or fabricated."""
    exit_code = 16


class AuditUnproven(AuditBroken):
    """No checkpoint signed by a trusted key: nothing proves where the log came from."""
    exit_code = 17


_SUSPECT = "the log was rewritten after it was written; treat its records as suspect"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(row)).hexdigest()


@dataclass(frozen=True)
class Event:
    id: int
    ts: str
    job_id: str
    serial: str
    event: str
    payload: str  # canonical JSON


_appended = threading.local()


@dataclass
class _Queued:
    """A row waiting for the next commit, and how its append ended."""

    job_id: str
    serial: str
    event: str
    payload: str  # canonical JSON
    head: tuple[int, str] | None = None  # (id, hash) once committed
    error: BaseException | None = None


def last_appended() -> tuple[int, str] | None:
    """(row id, hash) of the last row this thread appended, to any log: what a job behind a
    wrapper of the log (the station's) knows of the chain it wrote to."""
    return getattr(_appended, "head", None)


def note_appended(row: int, digest: str) -> None:
    """Record (row id, hash) as this thread's last append (for logs other than AuditLog)."""
    _appended.head = (row, digest)


def checkpoint_message(row: int, head: str, ts: str, reason: str) -> bytes:
    """The bytes the organization key signs for one checkpoint."""
    return canonical_json({"schema": CHECKPOINT_SCHEMA, "row": row, "head": head, "ts": ts,
                           "reason": reason})


class AuditLog:
    """`signer` (optional) signs checkpoints: any object with
    ``sign_checkpoint(data) -> (certificate DER, signature)``, e.g. the CertificateSigner.
    A log opened with a signer is verified first (chain and checkpoints): the station never
    signs a head over rows someone rewrote while it was not running."""

    def __init__(self, path: Path, signer: Any = None, every: int = CHECKPOINT_EVERY) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the writer's: one transaction at a time
        self._queue_lock = threading.Lock()  # the queue's: held only to add or take rows
        self._queued: list[_Queued] = []
        self.signer = signer
        self.every = every
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open audit log {self.path}: {exc}",
                              "choose a writable --out directory") from exc
        if signer is not None:
            try:
                verify_audit(self.path, require_checkpoint=False, allow_empty=True)
            except AuditBroken:
                self._db.close()
                raise

    def close(self) -> None:
        """Checkpoint and close. Under the writer's lock: a job still running (after a third
        Ctrl-C) gets an error for its next row, never a connection closed in its hands."""
        if self.signer is not None:
            self.checkpoint("closed")
        with self._lock:
            self._db.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, job_id: str, serial: str, event: str, payload: dict[str, Any] | None = None) -> int:
        """Append one row and return its id once it is on disk. Rows that arrive while
        another append is committing wait and go to disk together in the next transaction
        (one fsync for all of them: with many phones the fsyncs, not the rows, are the cost);
        each caller still returns only after its own row is committed."""
        queued = _Queued(job_id, clean(serial) or "", event, canonical_json(payload or {}).decode())
        with self._queue_lock:
            self._queued.append(queued)
        with self._lock:
            if queued.head is None and queued.error is None:  # no earlier writer took it
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)
        if queued.error is not None:
            raise queued.error
        assert queued.head is not None
        _appended.head = queued.head
        return queued.head[0]

    def _commit(self, batch: list[_Queued]) -> None:
        """Chain and insert the rows in order, in one transaction; each gets its (id, hash),
        or all get the error."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            last = self._db.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            row_id, prev = (last[0], last[1]) if last else (0, GENESIS)
            heads = []
            for queued in batch:
                row_id += 1
                row = {"id": row_id, "ts": now_iso(), "job_id": queued.job_id,
                       "serial": queued.serial, "event": queued.event, "payload": queued.payload}
                digest = row_hash(prev, row)
                self._db.execute(
                    "INSERT INTO events (id, ts, job_id, serial, event, payload, prev_hash, hash)"
                    " VALUES (:id, :ts, :job_id, :serial, :event, :payload, :prev, :hash)",
                    {**row, "prev": prev, "hash": digest})
                if self.signer is not None and (queued.event in CHECKPOINT_AFTER or
                                                row_id - self._checkpointed() >= self.every):
                    self._insert_checkpoint(row_id, digest, queued.event
                                            if queued.event in CHECKPOINT_AFTER else "periodic")
                heads.append((row_id, digest))
                prev = digest
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._roll_back()
            error = OutputError(f"cannot write audit log {self.path}: {exc}",
                                "free disk space or choose another --out directory")
            for queued in batch:
                queued.error = error
            return
        except BaseException as exc:  # a signer's failure: no row of the batch was written
            self._roll_back()
            for queued in batch:
                queued.error = exc
            return
        for queued, head in zip(batch, heads, strict=True):
            queued.head = head

    def _roll_back(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.ProgrammingError:  # closed: nothing was begun
            pass

    def head(self) -> tuple[int, str]:
        """(id of the last row, its hash); (0, GENESIS) for an empty log."""
        last = self._db.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return (last[0], last[1]) if last else (0, GENESIS)

    def _checkpointed(self) -> int:
        last = self._db.execute("SELECT MAX(row) FROM checkpoints").fetchone()
        return last[0] or 0

    def _insert_checkpoint(self, row: int, head: str, reason: str) -> None:
        ts = now_iso()
        cert, signature = self.signer.sign_checkpoint(checkpoint_message(row, head, ts, reason))
        self._db.execute(
            "INSERT INTO checkpoints (ts, row, head, reason, certificate, signature)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (ts, row, head, reason, base64.b64encode(cert).decode("ascii"),
             base64.b64encode(signature).decode("ascii")))

    def checkpoint(self, reason: str = "requested") -> tuple[int, str]:
        """Sign the current head unless a checkpoint already covers it; returns the head."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row, head = self.head()
                if self.signer is not None and row > self._checkpointed():
                    self._insert_checkpoint(row, head, reason)
                self._db.execute("COMMIT")
                return row, head
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutputError(f"cannot write audit log {self.path}: {exc}",
                                  "free disk space or choose another --out directory") from exc

    def events(self, job_id: str | None = None, kinds: Sequence[str] = ()) -> list[Event]:
        """Rows in order; only one job's with `job_id`, only these events with `kinds`."""
        query = "SELECT id, ts, job_id, serial, event, payload FROM events"
        where, args = [], []
        if job_id:
            where.append("job_id = ?")
            args.append(job_id)
        if kinds:
            where.append(f"event IN ({', '.join('?' for _ in kinds)})")
            args += list(kinds)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._lock:  # jobs look up a device's history while others append
            return [Event(*r) for r in self._db.execute(query + " ORDER BY id", tuple(args))]


# -- read side: a device's history ----------------------------------------------------------
@dataclass(frozen=True)
class LoggedRecord:
    """A final record as a log holds it, with what happened to it afterwards."""

    log: Path
    row: int
    job_id: str
    record: dict[str, Any]  # the record as logged (Record.to_dict)
    record_sha256: str
    certificate: str | None = None  # the path its `certified` event names
    second_look: dict[str, Any] | None = None  # its `second-look` event's payload


def logged_records(path: Path) -> list[LoggedRecord]:
    """Every job's final record in the log at `path` (opened read-only, nothing written),
    oldest first: a job's first `record` event, the certificate its `certified` event names
    and its second look."""
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise OutputError(f"cannot read audit log {path}: {exc}", "give the --out directory "
                          "of a station or an erase run (it holds audit.sqlite)") from exc
    try:
        rows = db.execute("SELECT id, job_id, event, payload FROM events WHERE event IN "
                          "('record', 'certified', 'second-look') ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise OutputError(f"cannot read audit log {path}: {exc}", "check the file is a phonewipe "
                          "audit log (`phonewipe audit verify`)") from exc
    finally:
        db.close()
    found: dict[str, LoggedRecord] = {}
    extra: dict[str, dict[str, Any]] = {}
    for row_id, job_id, event, text in rows:
        try:
            payload = json.loads(text)
        except ValueError:
            continue
        if not isinstance(payload, dict):
            continue
        if event == "record" and job_id not in found and isinstance(payload.get("record"), dict):
            found[job_id] = LoggedRecord(Path(path), row_id, job_id, payload["record"],
                                         str(payload.get("record_sha256", "")))
        elif event == "certified":
            extra.setdefault(job_id, {}).setdefault("certificate", payload.get("certificate"))
        elif event == "second-look" and payload.get("selected", True):
            extra.setdefault(job_id, {})["second_look"] = payload
    return [replace(r, **{k: v for k, v in extra.get(r.job_id, {}).items()
                          if k != "certificate" or v})
            for r in found.values()]


# -- verification ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    id: int
    ts: str
    row: int
    head: str
    reason: str
    fingerprint: str  # SHA-256 of the signing certificate's DER, lower-case hex
    subject: str


@dataclass
class AuditReport:
    """What `verify_audit` established."""
    path: Path
    rows: int
    head: str  # hash of the last row (GENESIS when empty)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    signers: dict[str, str] = field(default_factory=dict)  # fingerprint -> subject
    pinned: bool = False  # the signers were checked against trusted fingerprints
    expected: list[tuple[str, int]] = field(default_factory=list)  # heads found as expected

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return max(self.checkpoints, key=lambda c: c.row) if self.checkpoints else None

    @property
    def uncovered(self) -> int:
        """Rows after the last checkpoint: only the chain vouches for them."""
        last = self.last_checkpoint
        return self.rows - (last.row if last else 0)

    def line(self) -> str:
        parts = [f"audit log {self.path}: {self.rows} rows, hash chain intact"]
        last = self.last_checkpoint
        if last is not None:
            who = "; ".join(f"{subject} (sha256 {fp})" for fp, subject in self.signers.items())
            parts.append(f"{len(self.checkpoints)} signed checkpoint(s), the last at row "
                         f"{last.row} ({last.ts}), signed by {who}"
                         + (" (trusted)" if self.pinned else
                            " (not pinned: pass --trust FINGERPRINT to check the signer)"))
        parts.append(f"head {self.head}:{self.rows}")
        if self.uncovered and last is not None:
            parts.append(f"rows {last.row + 1}-{self.rows} follow the last checkpoint (covered "
                         "by the chain only)")
        for head, rows in self.expected:
            parts.append(f"expected head {head[:16]}...:{rows} found")
        return "; ".join(parts)


def _chain_rows(path: Path) -> tuple[list[str], list[tuple]]:
    """Every row's hash in order, after walking the chain; and the raw checkpoint rows."""
    path = Path(path)
    if not path.is_file():
        raise AuditBroken(f"no audit log at {path}", "give the path of an audit.sqlite file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, ts, job_id, serial, event, payload, prev_hash, hash"
                              " FROM events ORDER BY id").fetchall()
            has_checkpoints = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                         "name = 'checkpoints'").fetchone() is not None
            checkpoints = db.execute(
                "SELECT id, ts, row, head, reason, certificate, signature FROM checkpoints "
                "ORDER BY row, id").fetchall() if has_checkpoints else []
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise AuditBroken(f"{path} is not a readable phonewipe audit log: {exc}",
                          "check the file; restore it from backup if it is damaged") from exc
    return walk_chain(path, rows), checkpoints


def walk_chain(path: Path, rows: Sequence[Sequence[Any]]) -> list[str]:
    """Every row's hash in order, checked: rows are (id, ts, job_id, serial, event, payload,
    prev_hash, hash) in id order; raises AuditBroken at the first bad row."""
    hashes: list[str] = []
    prev = GENESIS
    expected_id = 1
    for r in rows:
        row = dict(zip(("id", "ts", "job_id", "serial", "event", "payload"), r[:6], strict=True))
        if row["id"] != expected_id:
            raise AuditBroken(f"audit log broken at row {expected_id}: row missing or reordered",
                              "the log was edited after it was written; treat its records as suspect")
        try:
            digest = row_hash(prev, row)
        except (TypeError, ValueError, AttributeError):
            digest = ""
        if r[6] != prev or digest != r[7]:
            raise AuditBroken(f"audit log broken at row {row['id']} ({row['event']} of job "
                              f"{str(row['job_id'])[:8]}): its hash does not match its content",
                              "the log was edited after it was written; treat its records as suspect")
        prev = r[7]
        hashes.append(prev)
        expected_id += 1
    return hashes


def verify_log(path: Path) -> int:
    """Walk the chain; returns the number of rows, raises AuditBroken naming the first bad row.
    (The chain only: `verify_audit` also checks the signed checkpoints.)"""
    return len(_chain_rows(path)[0])


def _signature_ok(cert_der: bytes, signature: bytes, message: bytes) -> tuple[str, str] | None:
    """(fingerprint, subject) of the certificate when its key made `signature`, else None."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, message)  # type: ignore[call-arg,union-attr]  # Ed25519/Ed448
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return None
    return hashlib.sha256(cert_der).hexdigest(), cert.subject.rfc4514_string()


def normalize_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").strip().lower()


def parse_expected_head(text: str) -> tuple[str, int | None]:
    """``HASH`` or ``HASH:ROWS`` (as `audit verify`, certificates and summaries print it)."""
    head, _, rows = text.strip().partition(":")
    head = head.lower()
    if len(head) != 64 or any(c not in "0123456789abcdef" for c in head) or \
            (rows and not rows.isdigit()):
        raise ValueError(f"expected head {text!r} is not HASH or HASH:ROWS (64 hex digits)")
    return head, int(rows) if rows else None


def verify_audit(path: Path, trusted: Iterable[str] = (),
                 expect: Iterable[tuple[str, int | None]] = (),
                 require_checkpoint: bool = True, allow_empty: bool = False) -> AuditReport:
    """Check the chain, every checkpoint and the expected heads; raises the AuditBroken
    subclass naming what is wrong (broken 7, empty 14, truncated 15, rewritten 16, unproven
    17). `trusted`: SHA-256 fingerprints the checkpoint signers must have (none: any key,
    and the report says the signer was not pinned)."""
    path = Path(path)
    hashes, raw_checkpoints = _chain_rows(path)
    return verify_chain(path, hashes, raw_checkpoints, trusted, expect, require_checkpoint,
                        allow_empty)


def verify_chain(path: Path, hashes: list[str], raw_checkpoints: Sequence[Sequence[Any]],
                 trusted: Iterable[str] = (), expect: Iterable[tuple[str, int | None]] = (),
                 require_checkpoint: bool = True, allow_empty: bool = False) -> AuditReport:
    """`verify_audit` on a chain already walked (`walk_chain`) and its checkpoints, rows of
    (id, ts, row, head, reason, certificate, signature): a chain from any store."""
    pins = {normalize_fingerprint(t) for t in trusted}
    report = AuditReport(path, len(hashes), hashes[-1] if hashes else GENESIS, pinned=bool(pins))
    rows = len(hashes)
    for cid, ts, row, head, reason, cert_b64, sig_b64 in raw_checkpoints:
        try:
            cert, signature = base64.b64decode(cert_b64), base64.b64decode(sig_b64)
            signed = _signature_ok(cert, signature, checkpoint_message(int(row), str(head),
                                                                        str(ts), str(reason)))
        except (ValueError, TypeError):
            signed = None
        if signed is None:
            raise AuditRewritten(f"audit log {path}: checkpoint {cid} (row {row}, {ts}) does not "
                                 "carry a valid signature: it was forged or altered", _SUSPECT)
        fingerprint, subject = signed
        if pins and fingerprint not in pins:
            raise AuditUnproven(f"audit log {path}: checkpoint {cid} (row {row}) is signed by a "
                                f"key that is not trusted: {subject} (sha256 {fingerprint})",
                                "the log was not written by the trusted key: treat it as fabricated")
        if row > rows:
            top = max(int(c[2]) for c in raw_checkpoints)
            gone = "every row" if rows == 0 else f"rows {rows + 1}-{top}"
            raise AuditTruncated(f"audit log {path} truncated: it has {rows} rows, but checkpoint "
                                 f"{cid} ({ts}) signed {row} (and the last, {top}); {gone} were "
                                 "deleted", _SUSPECT)
        if row < 1 or hashes[row - 1] != head:
            raise AuditRewritten(f"audit log {path} rewritten: row {row}'s hash is not the one "
                                 f"checkpoint {cid} ({ts}) signed; the chain was recomputed or "
                                 "the log fabricated", _SUSPECT)
        report.signers.setdefault(fingerprint, subject)
        report.checkpoints.append(Checkpoint(cid, ts, row, head, reason, fingerprint, subject))
    for head, want in expect:
        if want is None:
            if head not in hashes:
                raise AuditRewritten(f"audit log {path}: the expected head {head} is in no row of "
                                     f"its {rows} rows; rows were deleted or rewritten", _SUSPECT)
            want = hashes.index(head) + 1
        elif want > rows:
            raise AuditTruncated(f"audit log {path} truncated: it has {rows} rows, but the "
                                 f"expected head is at row {want}", _SUSPECT)
        elif hashes[want - 1] != head:
            raise AuditRewritten(f"audit log {path} rewritten: row {want}'s hash is not the "
                                 f"expected head {head}", _SUSPECT)
        report.expected.append((head, want))
    if rows == 0 and not allow_empty:
        raise AuditEmpty(f"audit log {path} is empty: no event was recorded, or every one was "
                         "deleted", "an erase or station run always writes events: treat an "
                         "empty log as suspect")
    if require_checkpoint and rows and not report.checkpoints:
        raise AuditUnproven(f"audit log {path}: {rows} rows, hash chain intact, but no signed "
                            "checkpoint: nothing proves its length or who wrote it (fabricated, "
                            "or written before checkpoints existed)",
                            "check its records against their signed certificates")
    return report
