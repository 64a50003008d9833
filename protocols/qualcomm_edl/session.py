"""One phone in Emergency Download mode: identify it over Sahara, load the operator's
programmer, find the user-data partitions in the GPTs of every LUN, overwrite them with
the keyed pattern (Firehose `program`) or erase them, and read samples back."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import PhonewipeError, ProtocolError
from phonewipe.erase.model import (
    Category,
    Endpoint,
    EraseMethod,
    Expectation,
    Finding,
    Identity,
    Severity,
    Technique,
)
from phonewipe.erase.pattern import PatternStream, pattern_bytes
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, ProgressFn, Session
from phonewipe.erase.strings import clean

from . import gpt
from .areas import Area, AreaMap, AreaReader
from .errors import RECONNECT, EdlTimeout, FirehoseNak
from .firehose import FirehoseClient, StorageInfo
from .loaders import NoLoader, find_loader
from .pieces import Fill
from .sahara import LoaderRejected, SaharaClient, SaharaInfo

if TYPE_CHECKING:
    from . import EdlPlugin
    from .transport import UsbLink

RAW_PATTERN = EraseMethod(
    name="edl-raw-pattern",
    title="Overwrite of userdata and the other user-data partitions with a keyed pattern "
          "(Qualcomm EDL, Firehose program)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="The host streams a keyed pseudo-random pattern over every sector of the "
                "user-data partitions the GPTs name, then reads samples back through the "
                "programmer.")
ERASE = EraseMethod(
    name="edl-erase",
    title="Firehose erase of userdata and the other user-data partitions (Qualcomm EDL)",
    category=Category.CLEAR, technique=Technique.BLOCK_ERASE, verifiable=True,
    expectation=Expectation.ZEROS,
    description="The programmer erases the sectors of the user-data partitions; samples "
                "read back must be zeros.")
WHOLE_LUN = EraseMethod(
    name="edl-lun-raw-pattern",
    title="Overwrite of every LUN in full with a keyed pattern (Qualcomm EDL, Firehose "
          "program; the phone's firmware must be reflashed afterwards)",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="For a phone whose partition tables are gone: every sector of every LUN "
                "(the eMMC user area) is overwritten, boot firmware included.")
WHOLE_LUN_HINT = ("run again with --edl-whole-lun true to overwrite every LUN in full (the "
                  "phone's firmware must then be reflashed)")


class EdlSession(Session):
    def __init__(self, plugin: "EdlPlugin", endpoint: Endpoint, link: "UsbLink") -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.link = link
        self.sahara = SaharaClient(link, plugin.timeout)
        self.firehose = FirehoseClient(link, plugin.timeout)
        self.info: SaharaInfo | None = None
        self._identity: Identity | None = None
        self.loader: dict[str, Any] = {}
        self.functions: tuple[str, ...] = ()
        self.geometry: list[StorageInfo] = []
        self.tables: dict[int, gpt.Table] = {}
        self.lost_tables: dict[int, str] = {}  # LUN -> why neither copy is valid
        self.disagreeing: dict[int, str] = {}  # LUN -> where its two copies place user data apart
        self.areas: AreaMap | None = None
        self.reset_sent = False
        self.certified_method: str | None = None  # set by `not_recheckable` for a re-check

    # -- identity -------------------------------------------------------------------------
    def identify(self) -> Identity:
        if self._identity is not None:
            return self._identity
        try:
            self.info = self.sahara.read_info()
        except EdlTimeout:
            if self._runs_programmer():
                raise PhonewipeError(f"the EDL device {self.endpoint.address} is already running "
                                     "a programmer, so it cannot say who it is",
                                     f"power it off (hold power for 10 s), then {RECONNECT}") from None
            raise
        entered = self.plugin.entered(self.info.serial_text)
        self._identity = Identity(
            platform="android", manufacturer=entered.get("manufacturer"),
            model=entered.get("model") or f"Qualcomm MSM {self.info.msm_id:08x} (EDL)",
            serial=self.info.serial_text, imeis=tuple(entered.get("imeis", ())))
        return self._identity

    def _runs_programmer(self) -> bool:
        try:
            return self.firehose.nop().ack
        except PhonewipeError:
            return False

    @property
    def identity(self) -> Identity | None:
        return self._identity

    # -- preflight: programmer, storage, tables -------------------------------------------
    def preflight(self) -> list[Finding]:
        if self.info is None:
            self.identify()
        info = self.info
        assert info is not None
        findings = [Finding(Severity.INFO, "EDL_IDENTITY",
                            f"Identified over Sahara (Qualcomm EDL): chip serial {info.serial_text}, "
                            f"MSM HW id {info.hwid_text}, OEM key hash {info.pkhash.hex()[:16]}…; "
                            "the phone's Android serial number and IMEI cannot be read in EDL.")]
        entered = self.plugin.entered(info.serial_text)
        if entered:
            findings.append(Finding(Severity.INFO, "operator-entered",
                                    "Entered by the operator, not read from the device: " +
                                    ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}"
                                              for k, v in entered.items())))
        try:
            loader = find_loader(self.plugin.option("loaders"), info)
            sent = self.sahara.upload(loader.data)
        except NoLoader as exc:
            return findings + [Finding(Severity.BLOCKER, "EDL_NO_PROGRAMMER", exc.line())]
        except LoaderRejected as exc:
            return findings + [Finding(
                Severity.BLOCKER, "EDL_PROGRAMMER_REJECTED",
                f"The phone's boot ROM rejected the programmer {loader.path.name} (Sahara status "
                f"0x{exc.status:x}): it is not signed for this phone's OEM key hash "
                f"{info.pkhash.hex()[:16]}…. Get the programmer signed for HW id {info.hwid_text} "
                f"with that key, then power-cycle the phone into EDL and run again.")]
        self.loader = {"file": loader.path.name, "sha256": hashlib.sha256(loader.data).hexdigest(),
                       "bytes_sent": sent}
        self.firehose.configure(self.plugin.option("memory") or "")
        self.functions = _functions(self.firehose.last_logs)
        findings += self._read_tables()
        if self._identity is not None:
            self._identity = replace(
                self._identity, storage_type="UFS" if self.firehose.memory == "ufs" else "eMMC",
                capacity_bytes=sum(g.sector_size * g.total_sectors for g in self.geometry))
        return findings

    def _read_tables(self) -> list[Finding]:
        findings: list[Finding] = []
        for lun in range(8 if self.firehose.memory == "ufs" else 1):
            try:
                self.geometry.append(self.firehose.storage_info(lun))
            except FirehoseNak:  # no such LUN: the list ends (a LUN that answers nonsense
                if lun == 0:     # is a failure, not the end of the list)
                    raise
                break
            geo = self.geometry[-1]
            try:
                table = gpt.read_table(self._sectors(lun, geo.sector_size), geo.sector_size,
                                       geo.total_sectors)
            except gpt.GptError as exc:
                self.lost_tables[lun] = str(exc)
                continue
            self.tables[lun] = table
            apart = gpt.disagreement(table, bool(self.plugin.option("only_userdata")))
            if apart:
                self.disagreeing[lun] = apart
            if table.source == "primary" and table.problems:
                findings.append(Finding(Severity.WARNING, "GPT_BACKUP_DAMAGED",
                                        f"LUN {lun}: the backup partition table is damaged "
                                        f"({table.problems[0].removeprefix('backup table: ')}); "
                                        "the primary table was used."))
            if table.source == "backup":
                findings.append(Finding(Severity.WARNING, "GPT_PRIMARY_DAMAGED",
                                        f"LUN {lun}: the primary partition table is damaged "
                                        f"({table.problems[0].removeprefix('primary table: ')}); "
                                        "the backup table was used."))
        whole = bool(self.plugin.option("whole_lun"))

        def untrusted(code: str, why: str) -> Finding:
            """A LUN whose tables cannot say where userdata is: the whole-LUN overwrite, or
            a blocker saying how to ask for it."""
            return Finding(Severity.WARNING if whole else Severity.BLOCKER, code, why + "; " +
                           ("every LUN will be overwritten in full." if whole else
                            WHOLE_LUN_HINT + "."))

        findings += [untrusted("GPT_UNREADABLE", f"LUN {lun}: neither partition table is valid "
                                                 f"({why}), so userdata cannot be found")
                     for lun, why in self.lost_tables.items()]
        findings += [untrusted("GPT_TABLES_DISAGREE",
                               f"LUN {lun}: the two partition tables place the user data apart "
                               f"({apart}), so one of them may hide part of it")
                     for lun, apart in self.disagreeing.items()]
        if not self.lost_tables and not self._partitions() and not whole:
            findings.append(Finding(Severity.BLOCKER, "NO_USERDATA",
                                    "No LUN's partition table names a userdata partition; "
                                    + WHOLE_LUN_HINT + "."))
        return findings

    def _sectors(self, lun: int, sector: int) -> gpt.ReadSectors:
        def read(lba: int, count: int) -> bytes:
            return self.firehose.read(lun, lba, count, sector)
        return read

    def _partitions(self) -> list[Area]:
        only = bool(self.plugin.option("only_userdata"))
        return [Area(lun, p.first_lba, p.sectors, self.geometry[lun].sector_size, clean(p.name, 36))
                for lun, table in sorted(self.tables.items())
                for p in gpt.with_free_space(table, only)]

    def _free_space_added(self) -> int:
        """Bytes of unallocated space next to the user-data partitions that the erase covers
        beyond the partitions themselves."""
        only = bool(self.plugin.option("only_userdata"))
        return sum((sum(p.sectors for p in gpt.with_free_space(t, only)) -
                    sum(p.sectors for p in gpt.user_data(t, only))) * self.geometry[lun].sector_size
                   for lun, t in self.tables.items())

    def _whole_luns(self) -> list[Area]:
        return [Area(lun, 0, g.total_sectors, g.sector_size, f"LUN {lun}")
                for lun, g in enumerate(self.geometry)]

    def methods(self) -> list[EraseMethod]:
        if not self.geometry:
            return []
        whole = [WHOLE_LUN] if self.plugin.option("whole_lun") else []
        if self.lost_tables or self.disagreeing or not self._partitions():
            return whole
        erase = [ERASE] if "erase" in self.functions else []
        return whole + [RAW_PATTERN] + erase

    # -- erase ------------------------------------------------------------------------------
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        areas = AreaMap(self._whole_luns() if method is WHOLE_LUN else self._partitions())
        self.areas = areas
        names = [f"{a.name} (LUN {a.lun}, {a.size / 2**20:.1f} MiB)" if not a.name.startswith("LUN")
                 else f"{a.name} ({a.size / 2**20:.1f} MiB)" for a in areas.areas]
        details: dict[str, Any] = {"protocol": "qualcomm-edl (sahara + firehose)",
                                   "partitions": names, "bytes": areas.size,
                                   "programmer": self.loader.get("file"),
                                   "identity": self._provenance(),
                                   "operator_entered": self.plugin.entered(
                                       self.info.serial_text if self.info else "")}
        free = 0
        if method is not WHOLE_LUN:
            free = details["unallocated_bytes_included"] = self._free_space_added()
        if method is ERASE:
            for area in areas.areas:
                self.firehose.erase(area.lun, area.first, area.sectors, area.sector)
            progress(areas.size, areas.size)
            return EraseReport(0, Expectation.ZEROS, self._scope(areas, "erased", free), details,
                               self._backup_sizes())
        if method not in (RAW_PATTERN, WHOLE_LUN):
            raise PhonewipeError(f"method {method.name} is not an EDL method",
                                 "choose one listed by the device")
        key, done = context.pattern_key, 0
        for base, area in zip(areas.starts, areas.areas, strict=True):
            def advance(n: int) -> None:
                nonlocal done
                done += n
                progress(done, areas.size)

            self.firehose.program(area.lun, area.first, area.sectors, area.sector,
                                  _pattern(key, base), advance)
        return EraseReport(areas.size, Expectation.PATTERN, self._scope(areas, "overwritten", free),
                           {**details, "pattern": "AES-256-CTR keystream, key kept on the host"},
                           {} if method is WHOLE_LUN else self._backup_sizes())

    def _backup_sizes(self) -> dict[str, int]:
        """The same partitions' size by the backup tables: a second source of the size the
        erase covered (a phone whose two tables disagree may hide an area). Empty when a
        LUN's backup is not valid."""
        only = bool(self.plugin.option("only_userdata"))
        total = 0
        for lun, table in self.tables.items():
            if table.backup is None:
                return {}
            backup = gpt.Table(table.backup, "backup", usable=table.usable)
            total += sum(p.sectors for p in gpt.with_free_space(backup, only)) * \
                self.geometry[lun].sector_size
        return {"backup GPT": total}

    @staticmethod
    def _scope(areas: AreaMap, verb: str, free: int) -> str:
        what = ", ".join(a.name for a in areas.areas)
        amount = f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free:,} bytes"
        beside = f" (with {amount} of unallocated space beside them)" if free else ""
        return f"{what}{beside}: {areas.size / 2**20:.1f} MiB {verb} over Qualcomm EDL"

    def _provenance(self) -> str:
        info = self.info
        said = f"chip serial and HW id read over Sahara ({info.serial_text}, {info.hwid_text})" \
            if info else "read over Sahara"
        entered = self.plugin.entered(info.serial_text if info else "")
        return said + ("; " + ", ".join(entered) + " entered by the operator from the label"
                       if entered else "; IMEI not readable in EDL and not entered")

    def reader(self) -> BlockReader | None:
        if self.areas is None:
            return None
        return AreaReader(self.firehose, self.areas, self.endpoint.address)

    def not_recheckable(self, record: Any) -> str | None:
        """Nothing stops a re-check; which areas the certificate covered is noted here."""
        sanitization = getattr(record, "sanitization", None)
        self.certified_method = sanitization.method if sanitization else None
        return None

    def readback(self) -> BlockReader | None:
        """The areas the certified method covered, read through a freshly loaded programmer
        (a re-verification has not run the preflight)."""
        if self.areas is None:
            if not self.geometry and any(f.severity is Severity.BLOCKER and not self.geometry
                                         for f in self.preflight()):
                return None
            whole = self.certified_method == WHOLE_LUN.name
            areas = self._whole_luns() if whole else self._partitions()
            if not areas:
                return None
            self.areas = AreaMap(areas)
        return self.reader()

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        try:
            self.reset_sent = self.firehose.power("reset").ack
        except ProtocolError:
            self.reset_sent = False
        return {"after_verification": "power reset sent to the programmer" if self.reset_sent
                else "the programmer did not acknowledge the power reset"}

    def entered_asset_tag(self) -> str:
        return str(self.plugin.entered(self.info.serial_text if self.info else "").get("asset_tag", ""))

    def transcript(self) -> dict[str, Any]:
        out = self.firehose.transcript.to_dict()
        out["sahara"] = self.sahara.sent[-12:]
        if self.firehose.memory:
            out["configured"] = {"memory": self.firehose.memory,
                                 "max_payload": self.firehose.max_payload}
        if self.info is not None:
            out["sahara_info"] = self.info.to_dict()
        if self.loader:
            out["programmer"] = self.loader
        if self.tables or self.lost_tables:
            out["gpt"] = {**{str(lun): t.source for lun, t in self.tables.items()},
                          **{str(lun): "unreadable" for lun in self.lost_tables}}
        return out

    def post_state(self) -> dict[str, Any]:
        return {"mode": "EDL; reset after the erase" if self.reset_sent else "EDL (programmer running)"}

    def close(self) -> None:
        """A programmer this session loaded is told to reset the phone, so the next run
        finds it speaking Sahara again (a phone left running it cannot say who it is)."""
        if self.loader and not self.reset_sent:
            self.firehose.timeout = min(self.firehose.timeout, 2.0)
            try:
                self.reset_sent = self.firehose.power("reset").ack
            except PhonewipeError:
                pass  # gone or frozen: the next run says so
        self.link.close()


def _pattern(key: bytes, base: int) -> Fill:
    """The keyed pattern of an area that starts at ``base`` of the address space, asked for
    in order (one keystream, not a cipher per piece)."""
    stream = PatternStream(key, base)
    expected = 0

    def fill(pos: int, out: memoryview) -> None:
        nonlocal expected
        if pos != expected:  # out of order: the random-access form
            out[:] = pattern_bytes(key, base + pos, len(out))
            return
        expected = pos + len(out)
        stream.fill(out)
    return fill


def _functions(logs: tuple[str, ...]) -> tuple[str, ...]:
    """The commands a programmer lists after "Supported Functions" when configured."""
    out: list[str] = []
    listing = False
    for line in logs:
        text = line.strip()
        if "Supported Functions" in text:
            listing = True
            continue
        if listing and text.isidentifier():
            out.append(text.lower())
        elif listing:
            listing = False
    return tuple(out)
