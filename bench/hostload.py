"""What the host took from a benchmark: on a virtual machine the hypervisor can give a vCPU
to another guest ("steal"), and a side that needs both cores (our pattern's AES in a second
thread) loses more than one that needs one. A ratio measured while much was stolen says
so beside it instead of passing for the code's figure."""
from __future__ import annotations

from pathlib import Path


def cpu_times() -> list[int]:
    """The host's CPU time counters (/proc/stat, all CPUs); [] where there is none."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return []
    return [int(v) for v in first[1:]] if first and first[0] == "cpu" else []


def stolen_since(before: list[int]) -> str:
    """The share of CPU time the hypervisor took since ``before``: one phrase to print."""
    after = cpu_times()
    if len(before) < 8 or len(after) < 8:
        return "CPU stolen by the hypervisor: not known here"
    delta = [a - b for a, b in zip(after[:8], before[:8], strict=True)]
    total = sum(delta)  # user nice system idle iowait irq softirq steal (guest is in user)
    share = delta[7] / total if total else 0.0
    note = "" if share < 0.02 else " (a busy host: the side that needs both cores loses more)"
    return f"CPU stolen by the hypervisor during the run: {share:.0%}{note}"
