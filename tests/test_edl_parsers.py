"""Property tests of the EDL parsers (Sahara packets, Firehose XML, the storage-info JSON,
GUID partition tables): any input gives a value or the module's own error, never another
exception; what one side writes, the other reads back."""
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonewipe.erase.errors import ProtocolError
from phonewipe.protocols.qualcomm_edl import firehose, gpt, sahara

# -- Sahara -----------------------------------------------------------------------------
packets = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda cmd, length, body: struct.pack("<2I", cmd, length) + body,
              st.sampled_from(sorted(sahara.LAYOUTS) + [0, 0x09, 0x13, 0xFFFFFFFF]),
              st.integers(0, 0xFFFFFFFF), st.binary(max_size=60)),
)


@given(packets)
def test_any_sahara_packet_decodes_or_is_a_protocol_error(raw: bytes) -> None:
    try:
        packet = sahara.decode(raw)
    except ProtocolError as exc:
        assert "\n" not in exc.line()
        return
    assert packet.command in sahara.LAYOUTS
    assert sahara.encode(packet.command, *packet.fields) == raw


@given(st.sampled_from(sorted(sahara.LAYOUTS)), st.data())
def test_sahara_packets_round_trip(command: int, data: st.DataObject) -> None:
    layout = sahara.LAYOUTS[command]
    count = struct.calcsize(layout) // (8 if "Q" in layout else 4)
    bits = 64 if "Q" in layout else 32
    fields = tuple(data.draw(st.integers(0, 2**bits - 1)) for _ in range(count))
    assert sahara.decode(sahara.encode(command, *fields)) == sahara.Packet(command, fields)


@given(st.binary(max_size=200))
def test_any_key_hash_answer_gives_at_most_one_digest(raw: bytes) -> None:
    assert len(sahara.parse_pkhash(raw)) <= 48


def test_key_hash_repeated_to_fill_the_answer_is_one_sha256() -> None:
    digest = bytes(range(32))
    assert sahara.parse_pkhash(digest * 2) == digest
    assert sahara.parse_pkhash(bytes(range(48)) * 2) == bytes(range(48))


# -- Firehose ---------------------------------------------------------------------------
xml_like = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: (firehose.XML_HEAD.decode() + t).encode()),
    st.builds(lambda tag, value: f'<?xml version="1.0" ?><data><{tag} value="{value}"/></data>'.encode(),
              st.sampled_from(["log", "response", "data", "x"]), st.text(max_size=40)),
    st.just(b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><data><log value="&a;"/></data>'),
)


@given(xml_like)
def test_any_firehose_transfer_parses_or_is_a_protocol_error(raw: bytes) -> None:
    try:
        elements = firehose.parse(raw)
    except ProtocolError as exc:
        assert "\n" not in exc.line()
        return
    assert all(isinstance(tag, str) and isinstance(attrs, dict) for tag, attrs in elements)


@given(st.lists(st.text(max_size=80), max_size=5))
def test_any_log_lines_give_a_storage_info_dict(lines: list[str]) -> None:
    assert isinstance(firehose.storage_info(lines), dict)


@given(st.sampled_from(["read", "program", "configure", "nop"]),
       st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
                       st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
                       max_size=4))
def test_commands_round_trip(tag: str, attrs: dict[str, str]) -> None:
    assert firehose.parse(firehose.build(tag, **attrs)) == [(tag, attrs)]


def test_entities_and_several_documents_in_one_transfer() -> None:
    with pytest.raises(ProtocolError):
        firehose.parse(b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "b">]><data><log value="&a;"/></data>')
    two = firehose.build("log", value="one") + firehose.build("response", value="ACK")
    assert [t for t, _ in firehose.parse(two)] == ["log", "response"]


# -- GPT --------------------------------------------------------------------------------
SECTOR, TOTAL = 512, 4096
PARTS = [("frp", 64, 127), ("userdata", 128, 3000)]


def disk(primary_bad: bool = False, backup_bad: bool = False) -> bytes:
    primary, backup = gpt.build(PARTS, SECTOR, TOTAL)
    image = bytearray(TOTAL * SECTOR)
    image[:len(primary)] = primary
    image[len(image) - len(backup):] = backup
    if primary_bad:
        image[SECTOR + 20] ^= 0xFF  # inside the header: its CRC no longer matches
    if backup_bad:
        image[-SECTOR + 20] ^= 0xFF
    return bytes(image)


def reader(image: bytes):
    return lambda lba, n: image[lba * SECTOR:(lba + n) * SECTOR]


def test_primary_table_is_used_when_valid() -> None:
    table = gpt.read_table(reader(disk()), SECTOR, TOTAL)
    assert table.source == "primary"
    assert [(p.name, p.first_lba, p.last_lba) for p in table.partitions] == PARTS


def test_backup_table_is_used_when_the_primary_is_damaged() -> None:
    table = gpt.read_table(reader(disk(primary_bad=True)), SECTOR, TOTAL)
    assert table.source == "backup" and "CRC" in table.problems[0]
    assert table.find("userdata") is not None


def test_both_tables_damaged_is_an_error_naming_both() -> None:
    with pytest.raises(gpt.GptError, match="primary table: .*backup table: "):
        gpt.read_table(reader(disk(True, True)), SECTOR, TOTAL)


def test_entries_crc_is_checked() -> None:
    image = bytearray(disk())
    image[2 * SECTOR + 200] ^= 1  # an entry changed, the header left alone
    table = gpt.read_table(reader(bytes(image)), SECTOR, TOTAL)
    assert table.source == "backup" and "entries" in table.problems[0]


@given(st.binary(min_size=0, max_size=4 * SECTOR), st.integers(0, 4 * SECTOR - 1))
def test_any_table_bytes_read_or_give_a_gpt_error(noise: bytes, at: int) -> None:
    image = bytearray(disk())
    image[at:at + len(noise)] = noise
    image = image[:TOTAL * SECTOR]
    try:
        table = gpt.read_table(reader(bytes(image)), SECTOR, TOTAL)
    except gpt.GptError:
        return
    assert all(0 < p.first_lba <= p.last_lba < TOTAL for p in table.partitions)


@given(st.binary(min_size=92, max_size=SECTOR))
def test_any_header_with_a_valid_crc_is_checked_field_by_field(raw: bytes) -> None:
    head = bytearray(raw.ljust(SECTOR, b"\0"))
    head[:8] = gpt.SIGNATURE
    head[12:16] = struct.pack("<I", 92)
    head[16:20] = b"\0\0\0\0"
    head[16:20] = struct.pack("<I", zlib.crc32(bytes(head[:92])))
    image = bytearray(disk(backup_bad=True))
    image[SECTOR:2 * SECTOR] = head
    try:
        gpt.read_table(reader(bytes(image)), SECTOR, TOTAL)
    except gpt.GptError:
        pass


simple_docs = st.builds(
    lambda tag, attrs, space: (firehose.XML_HEAD.decode() + f"<data><{tag}" + "".join(
        f' {k}="{v}"' for k, v in attrs) + (" " if space else "") + "/></data>").encode(),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.lists(st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)),
             max_size=4),
    st.booleans())


@given(simple_docs)
def test_the_fast_reader_agrees_with_defusedxml(raw: bytes) -> None:
    try:
        full = firehose.parse_xml(raw)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            firehose.parse(raw)
        return
    assert firehose.parse(raw) == full
