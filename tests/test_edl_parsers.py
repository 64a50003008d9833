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


def _header_field(image: bytearray, lba: int, fmt: str, at: int, value: int) -> None:
    """Set one field of the header at ``lba`` and fix its CRC."""
    base = lba * SECTOR
    struct.pack_into(fmt, image, base + at, value)
    image[base + 16:base + 20] = b"\0\0\0\0"
    image[base + 16:base + 20] = struct.pack("<I", zlib.crc32(bytes(image[base:base + 92])))


def test_entries_larger_than_any_real_table_s_are_refused_before_any_read() -> None:
    """A header asking the host to read count x size bytes of entries: 4 GiB entries would
    be one read of terabytes (and the buffer for it)."""
    image = bytearray(disk(backup_bad=True))
    _header_field(image, 1, "<I", 84, 0xFFFFFFF8)
    asked: list[int] = []

    def read(lba: int, n: int) -> bytes:
        asked.append(n)
        return reader(bytes(image))(lba, n)

    with pytest.raises(gpt.GptError, match="is not a GPT"):
        gpt.read_table(read, SECTOR, TOTAL)
    assert max(asked) == 1


def _table(parts, backup=None, usable=(34, 999)) -> gpt.Table:
    return gpt.Table(tuple(gpt.Partition(*p) for p in parts), "primary", (),
                     None if backup is None else tuple(gpt.Partition(*p) for p in backup), usable)


def test_tables_placing_userdata_apart_disagree_even_with_the_same_total() -> None:
    """A primary that gives userdata's tail to nothing and names a "cache" of that size over
    another partition adds up to the backup's user data, but not where it lies."""
    backup = [("persist", 40, 103), ("userdata", 200, 999)]
    primary = [("cache", 40, 103), ("userdata", 200, 935)]
    apart = gpt.disagreement(_table(primary, backup))
    assert "userdata is LBA 200..935 in the primary table, 200..999 in the backup" in apart \
        or "cache is LBA 40..103 in the primary table, nothing in the backup" in apart
    assert gpt.disagreement(_table(backup, backup)) == ""
    assert gpt.disagreement(_table(primary)) == ""  # no backup: nothing to compare


def test_user_data_grows_over_the_unallocated_space_next_to_it_only() -> None:
    table = _table([("boot", 34, 99), ("metadata", 120, 129), ("userdata", 140, 900),
                    ("modem", 950, 979)])
    grown = {p.name: (p.first_lba, p.last_lba) for p in gpt.with_free_space(table)}
    assert grown == {"metadata": (100, 139), "userdata": (140, 949)}  # no gap twice
    overlapped = _table([("userdata", 100, 500), ("modem", 400, 600)])
    assert [(p.first_lba, p.last_lba) for p in gpt.with_free_space(overlapped)] == [(100, 500)]
    headless = gpt.Table((gpt.Partition("userdata", 100, 500),), "primary")
    assert [(p.first_lba, p.last_lba) for p in gpt.with_free_space(headless)] == [(100, 500)]


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
