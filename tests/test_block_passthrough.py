"""Asking a disk whether it has a sanitize command: the commands' bytes as the standards lay
them out, the reading of the answers (real layouts built here, and hostile bytes that must
never crash the parser or make it say "supported"), and the ioctl structures' sizes."""
from __future__ import annotations

import ctypes

from hypothesis import given
from hypothesis import strategies as st

from phonewipe.protocols.block import passthrough as pt
from phonewipe.protocols.block.sanitize import scsi_or_ata
from phonewipe.protocols.block.session import sanitize_finding
from phonewipe.protocols.block.sgio import NvmeAdminCmd, PassthroughError, SgIoHdr


def test_report_supported_operation_codes_for_sanitize_block_erase() -> None:
    # SPC-4 6.35: MAINTENANCE IN, service action 0x0C, reporting option 010b, the opcode,
    # its service action (2 bytes), allocation length (4 bytes), reserved, control
    assert pt.rsoc_cdb(0x48, 0x02, 64) == bytes.fromhex("a30c02480002000000400000")


def test_ata_pass_through_identify_device() -> None:
    # SAT-3 12.2.2: opcode 0x85; PIO data-in; T_DIR=1, BYTE_BLOCK=1, T_LENGTH=2; count 1; 0xEC
    cdb = pt.ata_identify_cdb()
    assert len(cdb) == 16 and cdb[0] == 0x85 and cdb[14] == 0xEC
    assert (cdb[1] >> 1) & 0x0F == 4 and cdb[2] == 0b0000_1110 and cdb[6] == 1


def test_ioctl_structures_have_the_kernels_sizes() -> None:
    assert ctypes.sizeof(NvmeAdminCmd) == 72  # the size NVME_IOCTL_ADMIN_CMD encodes
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(SgIoHdr) == 88


def test_rsoc_support_values() -> None:
    answer = bytearray(16)
    for support, offered in ((0b000, False), (0b001, False), (0b011, True), (0b101, True),
                             (0b010, False), (0b111, False)):
        answer[1] = 0x80 | support  # CTDP set: timeouts descriptor follows, irrelevant here
        assert pt.rsoc_supported(bytes(answer)) is offered
    assert not pt.rsoc_supported(b"\x00\x03")  # cut short: no


def identify(word59: int, model: str = "SAMSUNG MZ7LH", checksum: bool = True,
             word0: int = 0x0040) -> bytes:
    words = [0] * 256
    words[0] = word0
    text = model.ljust(40).encode()
    for i in range(20):  # ATA strings: two characters per word, first in the high byte
        words[27 + i] = text[2 * i] << 8 | text[2 * i + 1]
    words[59] = word59
    data = bytearray(b"".join(w.to_bytes(2, "little") for w in words))
    if checksum:
        data[510] = 0xA5
        data[511] = -sum(data[:511]) % 256
    return bytes(data)


def test_identify_word_59_sanitize_bits() -> None:
    found = pt.parse_ata_identify(identify(1 << 12 | 1 << 15 | 1 << 13))
    assert found is not None and found.model == "SAMSUNG MZ7LH"
    assert found.kinds == (pt.BLOCK_ERASE, pt.CRYPTO)
    every = pt.parse_ata_identify(identify(0xF000, checksum=False))
    assert every is not None and every.kinds == (pt.BLOCK_ERASE, pt.CRYPTO, pt.OVERWRITE)


def test_identify_without_the_feature_set_bit_offers_nothing() -> None:
    # the command bits without bit 12 (feature set supported) are not a claim of support
    found = pt.parse_ata_identify(identify(1 << 15 | 1 << 14 | 1 << 13))
    assert found is not None and found.kinds == ()


def test_identify_data_that_is_not_an_ata_disks_is_refused() -> None:
    good = identify(0xF000)
    assert pt.parse_ata_identify(good[:-2]) is None  # short
    assert pt.parse_ata_identify(bytes(512)) is None and pt.parse_ata_identify(b"\xff" * 512) is None
    assert pt.parse_ata_identify(identify(0xF000, word0=0x8580)) is None  # ATAPI
    broken = bytearray(good)
    broken[118] ^= 0x01  # a bit flipped after the checksum was made
    assert pt.parse_ata_identify(bytes(broken)) is None


def nvme_identify(sanicap: int, model: str = "WDC PC SN530") -> bytes:
    data = bytearray(4096)
    data[0:2] = (0x15B7).to_bytes(2, "little")
    data[24:64] = model.ljust(40).encode()
    data[328:332] = sanicap.to_bytes(4, "little")
    return bytes(data)


def test_nvme_sanicap() -> None:
    found = pt.parse_nvme_identify(nvme_identify(0b011))
    assert found is not None and found.kinds == (pt.BLOCK_ERASE, pt.CRYPTO)
    assert found.model == "WDC PC SN530"
    none = pt.parse_nvme_identify(nvme_identify(0))
    assert none is not None and none.kinds == ()
    assert pt.parse_nvme_identify(nvme_identify(0b111)[:4095]) is None
    assert pt.parse_nvme_identify(bytes(4096)) is None


def test_sense_data_fixed_and_descriptor() -> None:
    fixed = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00])
    descriptor = bytes([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0])
    assert pt.parse_sense(fixed) == pt.Sense(5, 0x20, 0)
    assert pt.parse_sense(fixed).describe() == "ILLEGAL REQUEST, invalid command operation code"
    assert pt.parse_sense(descriptor).describe() == "ILLEGAL REQUEST, invalid field in CDB"
    assert pt.parse_sense(b"\x00" * 18) is None and pt.parse_sense(b"\x72") is None


@given(st.binary(max_size=5000))
def test_hostile_answers_never_crash_any_parser(data: bytes) -> None:
    pt.rsoc_supported(data)
    sense = pt.parse_sense(data)
    if sense is not None:
        assert sense.describe()
    for parse in (pt.parse_ata_identify, pt.parse_nvme_identify):
        found = parse(data)
        assert found is None or set(found.kinds) <= set(pt.KINDS)


@given(st.binary(min_size=512, max_size=512))
def test_hostile_identify_data_claims_sanitize_only_with_the_feature_set_bit(data: bytes) -> None:
    found = pt.parse_ata_identify(data)
    if found is not None and found.kinds:
        assert data[119] & 0x10  # word 59, bit 12 (the high byte's bit 4)
        assert "\n" not in found.model


@given(st.binary(min_size=40, max_size=40), st.binary(min_size=4, max_size=4))
def test_hostile_nvme_identify_never_crashes(model: bytes, sanicap: bytes) -> None:
    data = bytearray(4096)
    data[0], data[24:64], data[328:332] = 1, model, sanicap
    found = pt.parse_nvme_identify(bytes(data))
    assert found is not None and "\x00" not in found.model and "\n" not in found.model
    assert set(found.kinds) == {k for k, bit in ((pt.CRYPTO, 0), (pt.BLOCK_ERASE, 1),
                                                 (pt.OVERWRITE, 2)) if sanicap[0] >> bit & 1}


class Bridge:
    """A USB reader or SAT bridge as the commands see it: what it answers to REPORT
    SUPPORTED OPERATION CODES per SANITIZE service action, and to ATA IDENTIFY."""

    def __init__(self, scsi: dict[int, int] | None = None, identify: bytes | None = None) -> None:
        self.scsi, self.identify = scsi, identify
        self.sent: list[bytes] = []

    def ask(self, cdb: bytes, length: int) -> bytes:
        self.sent.append(cdb)
        if cdb[0] == 0xA3 and cdb[1] == 0x0C:
            if self.scsi is None:
                raise PassthroughError(pt.Sense(5, 0x20, 0).describe())
            support = self.scsi.get(int.from_bytes(cdb[4:6], "big"), 0b001)
            return bytes([0, support, 0, 10]) + bytes(10)
        if cdb[0] == 0x85 and cdb[14] == 0xEC:
            if self.identify is None:
                raise PassthroughError(pt.Sense(5, 0x24, 0).describe())
            return self.identify
        raise AssertionError(f"only reading commands are sent: {cdb.hex()}")


def test_a_scsi_disk_reporting_sanitize_service_actions() -> None:
    bridge = Bridge(scsi={0x02: 0b011, 0x03: 0b101})
    found = scsi_or_ata("/dev/sdb", bridge.ask)
    assert (found.interface, found.kinds) == ("SCSI", (pt.BLOCK_ERASE, pt.CRYPTO))
    assert all(cdb[0] == 0xA3 for cdb in bridge.sent)  # no ATA command once SCSI said yes


def test_an_ata_disk_behind_a_bridge_that_refuses_rsoc() -> None:
    found = scsi_or_ata("/dev/sdb", Bridge(identify=identify(1 << 12 | 1 << 13)).ask)
    assert found.interface == "ATA through a SCSI/ATA bridge" and found.kinds == (pt.CRYPTO,)
    assert found.model == "SAMSUNG MZ7LH"


def test_a_card_reader_that_refuses_both_is_not_offered_sanitize_with_why() -> None:
    found = scsi_or_ata("/dev/sdb", Bridge().ask)
    assert found.kinds == () and found.why_not == (
        "/dev/sdb answered REPORT SUPPORTED OPERATION CODES: ILLEGAL REQUEST, invalid command "
        "operation code; ATA IDENTIFY (pass-through): ILLEGAL REQUEST, invalid field in CDB")
    assert sanitize_finding(found).message.startswith("Sanitize (Purge) not offered: /dev/sdb ")


def test_a_bridge_returning_garbage_for_identify_is_not_offered_sanitize() -> None:
    found = scsi_or_ata("/dev/sdb", Bridge(scsi={}, identify=b"\xff" * 512).ask)
    assert found.kinds == () and "SANITIZE not supported" in found.why_not
    assert "no ATA identify data came back" in found.why_not


def test_a_device_reporting_sanitize_is_told_and_still_gets_only_the_verified_overwrites() -> None:
    found = scsi_or_ata("/dev/sdb", Bridge(scsi={0x02: 0b011}).ask)
    message = sanitize_finding(found).message
    assert message == ("Sanitize (Purge) not offered: the device reports SCSI sanitize: block "
                       "erase, which this version does not send; the overwrite reaches Clear.")
