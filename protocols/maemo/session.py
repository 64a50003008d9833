"""One N900 over SSH: who it is (Maemo's version file, the product, the IMEI from the SIM
service, the eMMC from /proc/partitions), whether root is reachable (`sudo gainroot`), the
keyed-pattern overwrite of the whole eMMC and its read-back past the phone's page cache."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from phonewipe.erase.errors import MediumUnreachable, PhonewipeError
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
from phonewipe.erase.pattern import PatternStream
from phonewipe.erase.plugin import BlockReader, EraseContext, EraseReport, Extent, ProgressFn, Session
from phonewipe.erase.strings import clean

from .client import DEVICE, MaemoClient, parse_imei, parse_partitions, records_out

BLOCK = 4096
CHUNK = 1 << 20
IMEI_COMMAND = ("dbus-send --system --print-reply --type=method_call --dest=com.nokia.phone.SIM "
                "/com/nokia/phone/SIM/security Phone.Sim.Security.get_imei")
REFLASH_ADVICE = ("to use the phone again, re-flash its eMMC image with Nokia's flasher or "
                  "0xFFFF (flasher -F RX-51_2009SE_10.2010.13-2.VANILLA_PR_EMMC_MR0_ARM.bin "
                  "-f), then the combined firmware image")

PATTERN = EraseMethod(
    name="maemo-pattern",
    title="Overwrite of the whole eMMC (/dev/mmcblk0) with a keyed pattern over SSH",
    category=Category.CLEAR, technique=Technique.OVERWRITE, verifiable=True,
    expectation=Expectation.PATTERN,
    description="Streams the host's keyed pseudo-random pattern over SSH into dd on the "
                "phone (root through sudo gainroot), over MyDocs, /home and swap; read back "
                "over the same channel after dropping the phone's page cache.")


class MaemoReader:
    block_size = BLOCK

    def __init__(self, session: "MaemoSession") -> None:
        self.session = session
        self.size = session.device_size // BLOCK * BLOCK

    def bypass_cache(self) -> str:
        result = self.session.client.run_root("sync; echo 3 > /proc/sys/vm/drop_caches\n")
        if result.status != 0:
            raise MediumUnreachable("the N900 would not drop its page cache, so a read-back "
                                    "could come from RAM: "
                                    + clean(result.stderr.strip(), 120),
                                    "check that sudo gainroot gives root")
        return "sync and echo 3 > /proc/sys/vm/drop_caches as root on the phone before reading"

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        return self.session.client.read_extents(extents, BLOCK)


class MaemoSession(Session):
    def __init__(self, endpoint: Endpoint, client: MaemoClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self._identity: Identity | None = None
        self.partitions: dict[str, int] = {}
        self.device_size = 0
        self.bytes_written = 0
        self.size_probed = False  # dd found the eMMC's end where /proc/partitions puts it

    def identify(self) -> Identity:
        version = self.client.run("cat /etc/osso_software_version").stdout.decode(errors="replace")
        product = self.client.run("sysinfoclient -p /component/product").stdout.decode(
            errors="replace").strip()
        imei = parse_imei(self.client.run(IMEI_COMMAND).stdout.decode(errors="replace"))
        self.partitions = parse_partitions(
            self.client.run("cat /proc/partitions").stdout.decode(errors="replace"))
        self.device_size = self.partitions.get("mmcblk0", 0)
        model = "N900" + (f" ({product})" if product else "")
        self._identity = Identity(
            platform="maemo", manufacturer="Nokia", model=model, serial=imei or None,
            imeis=(imei,) if imei else (), os_version=version.strip() or None,
            storage_type="eMMC", capacity_bytes=self.device_size or None)
        return self._identity

    @property
    def identity(self) -> Identity | None:
        return self._identity

    def preflight(self) -> list[Finding]:
        if self._identity is None:
            self.identify()
        findings = []
        root = self.client.run_root("id -u\n")
        if root.status != 0 or root.stdout.split()[-1:] != [b"0"]:
            findings.append(Finding(Severity.BLOCKER, "maemo-no-root",
                                    "sudo gainroot does not give root: install rootsh from the "
                                    "application manager, then run again"))
        elif self.device_size:
            findings += self._size_checks()
        if not self.device_size:
            findings.append(Finding(Severity.BLOCKER, "maemo-no-emmc",
                                    "the phone lists no eMMC (mmcblk0) in /proc/partitions: "
                                    "check that it is an N900 and run again"))
        findings.append(Finding(Severity.WARNING, "maemo-reflash",
                                "The overwrite takes MyDocs, /home and swap with it; "
                                f"{REFLASH_ADVICE}."))
        return findings

    def _size_checks(self) -> list[Finding]:
        """/proc/partitions is the phone's word for the eMMC's size, and the erase and the
        sampling cover only that much: its partitions must fit in it, and dd must find
        nothing past its end (a size said too small leaves the tail with the old data)."""
        size = self.device_size
        parts = sum(v for k, v in self.partitions.items() if k.startswith("mmcblk0p"))
        _, past_end = self.client.root_output(f"dd if={DEVICE} bs=1024 skip={size // 1024} "
                                              "count=1 2>/dev/null\n")
        if parts <= size and past_end == b"":
            self.size_probed = True
            return []
        said = (f"its partitions add up to {parts:,} bytes" if parts > size else
                "dd reads data past that end" if past_end else "dd could not probe its end")
        return [Finding(Severity.BLOCKER, "maemo-size-understated",
                        f"the phone says its eMMC is {size:,} bytes (/proc/partitions), but "
                        f"{said}: an erase of that size could leave old data beyond it; "
                        "re-flash the phone and run again, or destroy it")]

    def methods(self) -> list[EraseMethod]:
        return [PATTERN]

    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport:
        if method is not PATTERN:
            raise PhonewipeError(f"method {method.name} is not an N900 method", "use maemo-pattern")
        size = self.device_size
        stream = PatternStream(context.pattern_key)

        def chunks() -> Iterator[bytes]:
            for offset in range(0, size, CHUNK):
                yield stream.next(min(CHUNK, size - offset))

        sent = 0

        def sending(done: int) -> None:
            nonlocal sent
            sent = done
            progress(done, size)

        result = self.client.write_device(chunks(), sending)
        said = records_out(result.stderr + result.stdout, 65536)
        if result.status != 0:
            said_first = ((result.stderr or result.stdout).strip().splitlines() or [b""])[0]
            raise PhonewipeError(f"dd on the N900 failed after {sent:,} of {size:,} bytes: "
                                 + clean(said_first, 160),
                                 "run again; a medium that fails twice is for destruction")
        if sent < size:
            raise PhonewipeError(f"dd on the N900 stopped reading after {sent:,} of {size:,} "
                                 "bytes yet reported success", "run again; a medium that fails "
                                 "twice is for destruction")
        self.bytes_written = size
        return EraseReport(size, method.expectation,
                           f"whole eMMC {DEVICE}, {size / 2**20:,.0f} MiB (MyDocs, /home, swap)",
                           {"protocol": "ssh", "host_key": self.client.host_key,
                            "root": "sudo gainroot", "dd_records_out_bytes": said,
                            "before_writing": "MyDocs unmounted, file systems synced and "
                                              "remounted read-only (SysRq s, u)"},
                           {"dd end-of-device probe": size} if self.size_probed else {})

    def reader(self) -> BlockReader | None:
        return MaemoReader(self) if self.device_size else None

    def readback(self) -> BlockReader | None:
        if not self.device_size:
            self.identify()
        return MaemoReader(self) if self.device_size else None

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        return {"reuse": REFLASH_ADVICE}

    def transcript(self) -> dict[str, Any]:
        return {"protocol": "ssh", "address": self.client.address, "commands": self.client.commands,
                "host_key": self.client.host_key}

    def close(self) -> None:
        self.client.close()
