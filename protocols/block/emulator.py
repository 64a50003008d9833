"""An emulated handset in mass-storage mode: its storage image attached to a real kernel
loop device (root and the loop driver needed; `LoopUnavailable` says why not). Writes and
reads go through the real kernel, so the emulated storage's fault injection does not apply:
lying media are FUSE-backed in the tests instead."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonewipe.erase.errors import PhonewipeError

from .session import OperatorEntered

if TYPE_CHECKING:
    from . import BlockPlugin


class LoopUnavailable(PhonewipeError):
    """No loop device can be set up here (not root, no loop driver, no losetup)."""


def loop_unavailable() -> str | None:
    """Why no loop device can be attached here, or None."""
    if os.geteuid() != 0:
        return "attaching a loop device needs root"
    if not Path("/dev/loop-control").exists():
        return "this kernel has no loop devices (/dev/loop-control)"
    if subprocess.run(["sh", "-c", "command -v losetup"], capture_output=True).returncode:
        return "losetup is not installed (Debian: apt-get install mount)"
    return None


def attach(image: Path) -> str:
    """A new loop device over ``image`` (its path)."""
    result = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True)
    if result.returncode:
        raise LoopUnavailable(f"losetup failed: {result.stderr.strip()}",
                              "free a loop device, or run without the block demo")
    return result.stdout.strip()


def detach(node: str) -> None:
    subprocess.run(["losetup", "--detach", node], capture_output=True)


@dataclass
class LoopHandset:
    plugin: "BlockPlugin"
    node: str
    entered: OperatorEntered
    serial: str

    @property
    def endpoints(self) -> dict[str, str]:
        return {"block": self.node}

    @classmethod
    def start(cls, plugin: "BlockPlugin", storage: Any, profile: Any) -> "LoopHandset":
        why = loop_unavailable()
        if why:
            raise LoopUnavailable(f"cannot emulate {profile.name} as a block device: {why}",
                                  "run as root on a kernel with loop devices")
        storage.sync()
        node = attach(storage.directory / "userdata.img")
        device = profile.device
        handset = cls(plugin, node, OperatorEntered(
            imeis=tuple(storage.state.imeis), manufacturer=device.manufacturer,
            model=device.model, storage_type=device.storage_type), storage.state.serial)
        plugin.emulated[node] = handset
        return handset

    def stop(self) -> None:
        self.plugin.emulated.pop(self.node, None)
        detach(self.node)
