"""Firehose, the programmer's XML protocol: the host sends one ``<data>`` document per
command; the programmer answers with ``<log value=".."/>`` lines and one
``<response value="ACK|NAK" .../>``. Reads and programs have a raw data phase between an
ACK with ``rawmode="true"`` and the final response.

Device XML is hostile input: it is parsed with defusedxml (no entities, no DTD) and its
text is cleaned (erase/strings.py) before it reaches a message.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from phonewipe.erase.errors import ProtocolError
from phonewipe.erase.strings import clean

from .errors import RECONNECT, EdlTimeout, FirehoseNak, ShortRead
from .pieces import Fill, Pieces
from .sahara import Link

XML_HEAD = b'<?xml version="1.0" encoding="UTF-8" ?>'
MAX_XML = 64 * 1024  # one transfer of XML; longer is not a Firehose reply
DEFAULT_PAYLOAD = 1024 * 1024
MIN_READ_RATE = 64 * 1024  # bytes/s: slower than USB 1.1 at its worst is a stuck programmer
MIN_ERASE_RATE = 64 * 1024 * 1024  # bytes/s: an eMMC erase or a UFS unmap is far faster
MAX_ERASE_S = 3600.0  # no erase of a phone's partition takes longer
MAX_LUN_BYTES = 1 << 44  # 16 TiB: more than any phone's storage, less than a hostile claim
MAX_INFO_LINE = 4096  # a getstorageinfo JSON line is a few hundred characters
MAX_LOGS = 256  # log lines kept of one reply (a supported-functions list is a few dozen)
MEMORIES = ("ufs", "emmc")
_ESCAPES = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}  # kept through attribute normalisation
_DOC_SPLIT = re.compile(rb"<\?xml[^>]*\?>")
_NAME = rb"[A-Za-z_][A-Za-z0-9_]*"
_VALUE = rb'[\x20\x21\x23-\x25\x27-\x3b\x3d-\x7e]*'  # printable ASCII but " & <
_SIMPLE = re.compile(rb'<\?xml version="1\.0" encoding="UTF-8" \?><data><(' + _NAME + rb')((?: '
                     + _NAME + rb'="' + _VALUE + rb'")*) ?/></data>')
_ATTR = re.compile(rb" (" + _NAME + rb')="(' + _VALUE + rb')"')


@dataclass(frozen=True)
class Reply:
    """One `<response>` and the log lines before it."""

    ack: bool
    attrs: dict[str, str]
    logs: tuple[str, ...] = ()

    @property
    def rawmode(self) -> bool:
        return self.attrs.get("rawmode", "").lower() == "true"

    def why(self) -> str:
        """The device's own reason for a NAK: its last log line, cleaned."""
        return clean(self.logs[-1], 160) if self.logs else "no reason given"


def build(tag: str, **attrs: Any) -> bytes:
    """One command document: ``<?xml ...?><data><TAG a="v" /></data>`` (attribute values
    quoted and escaped by the standard library; tags and names are ours)."""
    fields = "".join(f" {name}={quoteattr(str(value), _ESCAPES)}" for name, value in attrs.items())
    return XML_HEAD + f"<data><{tag}{fields} /></data>".encode()


def parse(raw: bytes) -> list[tuple[str, dict[str, str]]]:
    """The elements inside the ``<data>`` documents of one transfer, in order (a transfer
    may hold several documents). ProtocolError for anything that is not such XML.

    One element with plain printable-ASCII attribute values (what programmers send for
    nearly every reply) is read by a strict pattern; anything else goes to defusedxml.
    Both give the same result for what the pattern accepts (tests/test_edl_parsers.py)."""
    match = _SIMPLE.fullmatch(raw)
    if match:
        pairs = _ATTR.findall(match.group(2))
        attrs = {k.decode(): v.decode() for k, v in pairs}
        if len(attrs) == len(pairs):  # a repeated attribute is not XML: the full parser says so
            return [(match.group(1).decode(), attrs)]
    return parse_xml(raw)


def parse_xml(raw: bytes) -> list[tuple[str, dict[str, str]]]:
    """`parse` through defusedxml alone."""
    if len(raw) > MAX_XML:
        raise ProtocolError(f"the programmer sent {len(raw)} bytes of XML at once",
                            "this is not a Firehose programmer; power-cycle the phone into EDL")
    out: list[tuple[str, dict[str, str]]] = []
    for doc in _DOC_SPLIT.split(raw):
        if not doc.strip(b" \t\r\n\0"):
            continue
        try:
            root = SafeET.fromstring(doc.strip(b"\0"), forbid_dtd=True)
        except (SafeET.ParseError, DefusedXmlException, ValueError, UnicodeError) as exc:
            raise ProtocolError(f"the programmer sent malformed XML ({clean(str(exc), 80)})",
                                "the link is corrupt or this is not a Firehose programmer; "
                                "power-cycle the phone into EDL and run again") from None
        if root.tag != "data":
            raise ProtocolError(f"the programmer sent <{clean(str(root.tag), 40)}> instead of <data>",
                                "this is not a Firehose programmer")
        out += [(str(child.tag), {str(k): str(v) for k, v in child.attrib.items()}) for child in root]
    return out


def storage_info(logs: Iterable[str]) -> dict[str, Any]:
    """The JSON a programmer logs for `getstorageinfo` ({"storage_info": {...}})."""
    for line in logs:
        start = line.find("{")
        if start < 0 or len(line) > MAX_INFO_LINE:
            continue
        try:
            data = json.loads(line[start:])
        except (ValueError, RecursionError):  # deep nesting exhausts the parser's stack
            continue
        if isinstance(data, dict) and isinstance(data.get("storage_info"), dict):
            return data["storage_info"]
    return {}


@dataclass
class Transcript:
    commands: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_read: int = 0
    naks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "qualcomm-edl (sahara + firehose)", "commands": len(self.commands),
                "last_commands": self.commands[-8:], "bytes_sent": self.bytes_sent,
                "bytes_read": self.bytes_read, "naks": self.naks}


@dataclass(frozen=True)
class StorageInfo:
    sector_size: int
    total_sectors: int
    memory: str
    raw: dict[str, Any]


class FirehoseClient:
    def __init__(self, link: Link, timeout: float = 10.0) -> None:
        self.link = link
        self.timeout = timeout
        self.transcript = Transcript()
        self.memory = ""
        self.max_payload = DEFAULT_PAYLOAD  # host to target, bytes per raw transfer
        self.last_logs: tuple[str, ...] = ()  # the log lines of the accepted configure

    # -- the exchange ---------------------------------------------------------------------
    def _send(self, tag: str, **attrs: Any) -> None:
        self.transcript.commands.append(tag)
        self.link.write(build(tag, **attrs))

    def _reply(self, timeout: float | None = None) -> Reply:
        """The next `<response>`, with the log lines before it (the last MAX_LOGS). A
        programmer that only ever logs is a frozen one: EdlTimeout once ``timeout`` is up."""
        logs: list[str] = []
        seconds = timeout or self.timeout
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EdlTimeout(f"the programmer sent log lines but no response in {seconds:g} s "
                                 f"(last: {clean(logs[-1], 80) if logs else 'none'})",
                                 f"it may be stuck; {RECONNECT}")
            for tag, attrs in parse(self.link.read(MAX_XML, max(0.05, left))):
                if tag == "log":
                    logs.append(attrs.get("value", ""))
                    del logs[:-MAX_LOGS]
                elif tag == "response":
                    ack = attrs.get("value", "").upper() == "ACK"
                    if not ack:
                        self.transcript.naks += 1
                    return Reply(ack, attrs, tuple(logs))

    def command(self, tag: str, **attrs: Any) -> Reply:
        self._send(tag, **attrs)
        return self._reply()

    def _checked(self, reply: Reply, what: str) -> Reply:
        if not reply.ack:
            raise FirehoseNak(f"the programmer refused {what}: {reply.why()}",
                              "the erase cannot go on this way; see the audit log for the "
                              "exchange")
        return reply

    # -- commands ---------------------------------------------------------------------------
    def nop(self) -> Reply:
        return self.command("nop")

    def configure(self, memory: str = "", payload: int = DEFAULT_PAYLOAD) -> str:
        """Negotiate the memory type (``memory``, else UFS then eMMC) and the largest raw
        transfer the programmer takes; returns the memory type."""
        last: Reply | None = None
        for name in ([memory] if memory else list(MEMORIES)):
            want = payload
            for _ in range(3):  # a NAK names the size it supports: ask for that
                last = self.command("configure", MemoryName=name, Verbose=0, AlwaysValidate=0,
                                    MaxDigestTableSizeInBytes=8192,
                                    MaxPayloadSizeToTargetInBytes=want, ZLPAwareHost=1,
                                    SkipStorageInit=0)
                supported = _int(last.attrs.get("MaxPayloadSizeToTargetInBytesSupported"))
                if last.ack:
                    self.last_logs = last.logs
                    agreed = _int(last.attrs.get("MaxPayloadSizeToTargetInBytes"))
                    # never more than asked for: the host allocates buffers of this size
                    self.memory, self.max_payload = name, agreed if 0 < agreed <= want else want
                    return name
                if supported and supported < want:
                    want = supported
                    continue
                break
        assert last is not None
        raise FirehoseNak(f"the programmer refused every storage configuration: {last.why()}",
                          "the programmer may not match this phone; get the one for its HW id")

    def storage_info(self, lun: int) -> StorageInfo:
        reply = self._checked(self.command("getstorageinfo", physical_partition_number=lun),
                              f"getstorageinfo of LUN {lun}")
        info = storage_info(reply.logs)
        sector = _int(info.get("block_size")) or (4096 if self.memory == "ufs" else 512)
        total = _int(info.get("total_blocks"))
        if not 0 < total * sector <= MAX_LUN_BYTES or sector not in (512, 4096):
            raise ProtocolError(f"the programmer reported no usable geometry for LUN {lun} "
                                f"(sectors {total}, sector size {sector})",
                                "the programmer may not match this phone")
        return StorageInfo(sector, total, str(info.get("mem_type", self.memory)), info)

    def read(self, lun: int, start: int, count: int, sector: int) -> bytes:
        want = count * sector
        reply = self.command("read", SECTOR_SIZE_IN_BYTES=sector, num_partition_sectors=count,
                             physical_partition_number=lun, start_sector=start)
        self._checked(reply, f"reading sectors {start}+{count} of LUN {lun}")
        data = bytearray()
        ended = False
        deadline = time.monotonic() + self.timeout + want / MIN_READ_RATE
        try:
            while len(data) < want:
                if time.monotonic() > deadline:
                    raise EdlTimeout(f"the programmer trickled {len(data):,} of {want:,} bytes "
                                     f"slower than {MIN_READ_RATE // 1024} KiB/s",
                                     f"it may be failing; {RECONNECT}")
                piece = self.link.read(want - len(data), self.timeout)
                if piece.startswith(b"<?xml") and b"<response" in piece:
                    ended = True  # the programmer ended the data phase early
                    break
                data += piece
        except ProtocolError as exc:
            raise ShortRead(f"short read: the programmer sent {len(data)} of {want} bytes of "
                            f"sectors {start}+{count} of LUN {lun} ({exc.message})",
                            "check the cable; power-cycle the phone into EDL and run again") from exc
        if len(data) < want:
            raise ShortRead(f"short read: the programmer sent {len(data)} of {want} bytes of "
                            f"sectors {start}+{count} of LUN {lun}",
                            "check the cable; power-cycle the phone into EDL and run again")
        self.transcript.bytes_read += len(data)
        if not ended:
            self._checked(self._reply(), f"reading sectors {start}+{count} of LUN {lun}")
        return bytes(data)

    def program(self, lun: int, start: int, count: int, sector: int, fill: Fill,
                progress: Callable[[int], None]) -> None:
        """Write ``count`` sectors from ``start``: ``fill(pos, out)`` writes the bytes at
        ``pos`` of the range into ``out``, called in order of ``pos`` from one worker
        thread; ``progress(n)`` after each transfer."""
        total = count * sector
        reply = self.command("program", SECTOR_SIZE_IN_BYTES=sector, num_partition_sectors=count,
                             physical_partition_number=lun, start_sector=start, filename="")
        self._checked(reply, f"programming sectors {start}+{count} of LUN {lun}")
        if not reply.rawmode:
            raise ProtocolError("the programmer accepted a program without a raw data phase",
                                "this programmer does not speak Firehose as expected")
        step = max(sector, self.max_payload // sector * sector)
        with Pieces(fill, total, step) as pieces:
            for piece in pieces:
                self.link.write(piece)
                self.transcript.bytes_sent += len(piece)
                progress(len(piece))
        self._checked(self._reply(), f"programming sectors {start}+{count} of LUN {lun}")

    def erase(self, lun: int, start: int, count: int, sector: int) -> None:
        """The programmer answers when the whole range is erased: the wait grows with it."""
        self._send("erase", SECTOR_SIZE_IN_BYTES=sector, num_partition_sectors=count,
                   physical_partition_number=lun, start_sector=start)
        reply = self._reply(self.timeout + min(MAX_ERASE_S, count * sector / MIN_ERASE_RATE))
        self._checked(reply, f"erasing sectors {start}+{count} of LUN {lun}")

    def power(self, value: str = "reset") -> Reply:
        return self.command("power", value=value)


def _int(value: Any) -> int:
    try:
        return int(str(value), 0)
    except (TypeError, ValueError):
        return 0
