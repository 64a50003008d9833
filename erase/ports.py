"""A loopback TCP port for a server that binds it later (a private adb server, a test's).

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the range
outgoing connections draw their source ports from. Between our check and the server's bind,
any connection on the machine may take that port; worse, a client connecting to it while
nothing listens there can be given that very port as its source and connect to itself
(TCP simultaneous open): adb then reads its own request back as the answer and reports
"protocol fault (status 30 30 30 63?!)" ("000c", the length of "host:version"). Ports below
the ephemeral range are never given to outgoing connections, so a port chosen there stays
free until its server binds it (unless another server picks the same one by chance).
"""
from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default; IANA's is 49152-65535
LOWEST = 10000  # below: well-known and registered services' habitual ports
ATTEMPTS = 200


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(n) for n in source.read_text().split())
        return low, high
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def candidate_ports(low: int, high: int) -> range:
    """Ports outside [low, high] that are not well known: the larger side of the range."""
    below, above = range(LOWEST, low), range(max(LOWEST, high + 1), 65536)
    return below if len(below) >= len(above) else above


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing on loopback holds now and no outgoing connection will be given."""
    pick = random.SystemRandom()
    ports = candidate_ports(*ephemeral_range())
    for _ in range(ATTEMPTS if ports else 0):
        port = pick.choice(ports)
        if _bindable(port):
            return port
    with socket.socket() as s:  # every candidate taken: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
