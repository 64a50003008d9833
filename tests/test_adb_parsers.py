"""Parsers of what a phone prints: never crash on arbitrary text, find what is there."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.adb.client import parse_df_kib, parse_getprop, parse_imei_parcel

prop_names = st.from_regex(r"[a-z][a-z0-9_.]{0,30}", fullmatch=True)
prop_values = st.text(st.characters(blacklist_characters="\n\r]", codec="utf-8"), max_size=40)


@given(st.dictionaries(prop_names, prop_values, max_size=20))
def test_getprop_round_trips(props: dict[str, str]) -> None:
    text = "".join(f"[{k}]: [{v}]\n" for k, v in props.items())
    assert parse_getprop(text) == props


@given(st.text())
def test_parsers_accept_any_text(text: str) -> None:
    assert isinstance(parse_getprop(text), dict)
    imei = parse_imei_parcel(text)
    assert imei is None or (imei.isdigit() and 14 <= len(imei) <= 16)
    df = parse_df_kib(text)
    assert df is None or (df[0] >= 0 and df[1] >= 0)


@given(st.from_regex(r"[0-9]{15}", fullmatch=True))
def test_imei_from_a_parcel_dump(imei: str) -> None:
    chunks = [imei[i:i + 6] for i in range(0, len(imei), 6)]
    lines = [f"0x{i:08x}: 00000000 00000000 '{'.'.join(c)}'" for i, c in enumerate(chunks)]
    assert parse_imei_parcel("Result: Parcel(\n" + "\n".join(lines) + ")") == imei


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_df_reads_total_and_available(total: int, avail: int) -> None:
    text = ("Filesystem     1K-blocks    Used Available Use% Mounted on\n"
            f"/dev/block/dm-5 {total} 0 {avail} 1% /data\n")
    assert parse_df_kib(text) == (total, avail)
    assert parse_df_kib("Filesystem 1K-blocks Used Available Use% Mounted on\n") is None
