"""The bytes of the commands that ask a disk whether it has a sanitize command, and the
reading of its answers (no I/O here: sgio.py sends them). Every parser takes whatever a
reader returned, hostile or truncated, and answers None or "not supported" rather than
raising: a device that cannot say it supports sanitize is never offered one.

- SCSI: REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN 0xA3/0x0C, SPC-4 6.35) for
  SANITIZE (0x48, SBC-3 5.30) with each service action: 1 overwrite, 2 block erase,
  3 cryptographic erase.
- ATA behind a SCSI/ATA translation bridge (SAT-3): ATA PASS-THROUGH(16) of IDENTIFY DEVICE
  (0xEC); word 59 (ACS-3 7.12.7.33): bit 12 the sanitize feature set, 13 CRYPTO SCRAMBLE
  EXT, 14 OVERWRITE EXT, 15 BLOCK ERASE EXT.
- NVMe: Identify Controller (admin opcode 0x06, CNS 1), SANICAP at bytes 328-331 (NVMe 1.3
  figure 109): bit 0 crypto erase, bit 1 block erase, bit 2 overwrite.
"""
from __future__ import annotations

from dataclasses import dataclass

from phonewipe.erase.strings import clean

CRYPTO, BLOCK_ERASE, OVERWRITE = "crypto erase", "block erase", "overwrite"
KINDS = (BLOCK_ERASE, CRYPTO, OVERWRITE)  # the order they are listed in

SANITIZE = 0x48
SCSI_SERVICE_ACTIONS = {OVERWRITE: 0x01, BLOCK_ERASE: 0x02, CRYPTO: 0x03}
RSOC_LENGTH = 64  # one command's descriptor: 4 bytes and SANITIZE's 10-byte usage data
ATA_IDENTIFY_LENGTH = 512
NVME_IDENTIFY_LENGTH = 4096

SENSE_KEYS = {0x0: "NO SENSE", 0x1: "RECOVERED ERROR", 0x2: "NOT READY", 0x3: "MEDIUM ERROR",
              0x4: "HARDWARE ERROR", 0x5: "ILLEGAL REQUEST", 0x6: "UNIT ATTENTION",
              0x7: "DATA PROTECT", 0xB: "ABORTED COMMAND"}
ADDITIONAL = {(0x20, 0x00): "invalid command operation code",
              (0x24, 0x00): "invalid field in CDB",
              (0x3A, 0x00): "medium not present"}


def rsoc_cdb(opcode: int, service_action: int, length: int = RSOC_LENGTH) -> bytes:
    """REPORT SUPPORTED OPERATION CODES, reporting option 010b: one opcode with the given
    service action."""
    return bytes([0xA3, 0x0C, 0x02, opcode, *service_action.to_bytes(2, "big"),
                  *length.to_bytes(4, "big"), 0, 0])


def ata_identify_cdb() -> bytes:
    """ATA PASS-THROUGH(16): protocol 4 (PIO data-in), T_DIR from the device, BYTE_BLOCK,
    T_LENGTH in the sector count (one 512-byte block), command IDENTIFY DEVICE."""
    return bytes([0x85, 4 << 1, 0x0E, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xEC, 0])


@dataclass(frozen=True)
class Sense:
    key: int
    asc: int
    ascq: int

    def describe(self) -> str:
        key = SENSE_KEYS.get(self.key, f"sense key 0x{self.key:x}")
        extra = ADDITIONAL.get((self.asc, self.ascq), f"ASC/ASCQ {self.asc:02x}/{self.ascq:02x}")
        return f"{key}, {extra}"


def parse_sense(data: bytes) -> Sense | None:
    """Fixed (0x70/0x71) or descriptor (0x72/0x73) sense data; None when it is neither."""
    if len(data) < 4:
        return None
    code = data[0] & 0x7F
    if code in (0x72, 0x73):
        return Sense(data[1] & 0x0F, data[2], data[3])
    if code in (0x70, 0x71) and len(data) >= 14:
        return Sense(data[2] & 0x0F, data[12], data[13])
    if code in (0x70, 0x71):
        return Sense(data[2] & 0x0F, 0, 0)
    return None


def rsoc_supported(data: bytes) -> bool:
    """Whether a one-command REPORT SUPPORTED OPERATION CODES answer says the command is
    supported: SUPPORT 011b (as a standard says) or 101b (vendor specific). Anything else,
    a short answer included, is no."""
    return len(data) >= 4 and data[1] & 0x07 in (0b011, 0b101)


@dataclass(frozen=True)
class AtaSanitize:
    kinds: tuple[str, ...]  # empty: the feature set is not supported
    model: str


def parse_ata_identify(data: bytes) -> AtaSanitize | None:
    """Word 59's sanitize bits of IDENTIFY DEVICE data; None when the 512 bytes are not an
    ATA device's identify data (short, blank, an ATAPI device, a failed checksum)."""
    if len(data) != ATA_IDENTIFY_LENGTH or not data.strip(b"\x00") or not data.strip(b"\xff"):
        return None
    word = [int.from_bytes(data[i:i + 2], "little") for i in range(0, ATA_IDENTIFY_LENGTH, 2)]
    if word[0] & 0x8000:  # ATAPI (a packet device): not a disk
        return None
    if word[255] & 0xFF == 0xA5 and sum(data) % 256:  # integrity word present but wrong
        return None
    model = bytes(b for i in range(54, 94, 2) for b in (data[i + 1], data[i]))
    w59 = word[59]
    kinds = () if not w59 & (1 << 12) else tuple(
        kind for kind, bit in ((BLOCK_ERASE, 15), (CRYPTO, 13), (OVERWRITE, 14))
        if w59 & (1 << bit))
    return AtaSanitize(kinds, _text(model))


@dataclass(frozen=True)
class NvmeSanitize:
    kinds: tuple[str, ...]
    model: str


def parse_nvme_identify(data: bytes) -> NvmeSanitize | None:
    """SANICAP of an Identify Controller structure; None when the 4096 bytes are not one
    (short, or blank)."""
    if len(data) != NVME_IDENTIFY_LENGTH or not data.strip(b"\x00"):
        return None
    sanicap = int.from_bytes(data[328:332], "little")
    kinds = tuple(kind for kind, bit in ((BLOCK_ERASE, 1), (CRYPTO, 0), (OVERWRITE, 2))
                  if sanicap & (1 << bit))
    return NvmeSanitize(kinds, _text(data[24:64]))


def _text(raw: bytes) -> str:
    return clean(raw.decode("ascii", errors="replace").strip(" \x00"), 40)
