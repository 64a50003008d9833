"""Ports for servers started later (private adb servers) come from outside the kernel's
ephemeral range, so no outgoing connection takes one or connects to itself through it (the
'protocol fault (status 30 30 30 63?!)' flake of an adb server started on such a port)."""
from __future__ import annotations

import socket
from pathlib import Path

from phonewipe.erase.ports import DEFAULT_EPHEMERAL, candidate_ports, ephemeral_range, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_are_bindable() -> None:
    low, high = ephemeral_range()
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_larger_side_of_the_range_is_used() -> None:
    assert candidate_ports(32768, 60999) == range(10000, 32768)
    assert candidate_ports(10500, 40000) == range(40001, 65536)


def test_an_unreadable_range_falls_back_to_linuxs_default(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("garbage\n")
    assert ephemeral_range(tmp_path / "range") == DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL
    (tmp_path / "range").write_text("1024\t65000\n")
    assert ephemeral_range(tmp_path / "range") == (1024, 65000)
