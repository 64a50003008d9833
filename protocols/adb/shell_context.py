"""The emulated shell's context: what one command can reach (the handset's storage and
state, its streams, its environment and working directory), how a session ends
(`Cancelled`), and the phone's system properties as `getprop` reports them."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from phonewipe.erase.emulation.storage import HandsetStorage

SH = "/system/bin/sh"
CHUNK = 1024 * 1024
EXIT_NOT_FOUND = 127
EXIT_KILLED = 137
EXIT_PIPE = 141

Writer = Callable[[bytes | bytearray | memoryview], None]


class Reader(Protocol):
    def read(self, n: int) -> bytes | bytearray | memoryview:
        """Up to ``n`` bytes; empty at end of input."""


class BytesReader:
    """A `Reader` over a bytes object."""

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._view = memoryview(bytes(data))
        self._pos = 0

    def read(self, n: int) -> memoryview:
        piece = self._view[self._pos:self._pos + max(0, n)]
        self._pos += len(piece)
        return piece


def _discard(_data: bytes | bytearray | memoryview) -> None:
    return None


class Cancelled(Exception):
    """The session ended (emulator stopped, cable pulled, reboot): stop at once."""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class ShellContext:
    """Everything a command can reach."""

    storage: HandsetStorage
    is_root: bool = False
    stdin: Reader = field(default_factory=BytesReader)
    stdout: Writer = _discard
    stderr: Writer = _discard
    adbd_root: bool = False  # adbd itself runs as root (engineering build after `adb root`)
    events: Callable[[str], None] | None = None  # "reboot:", "reboot:recovery", "testharness"...
    cancelled: threading.Event = field(default_factory=threading.Event)
    flush: Callable[[], None] | None = None  # push buffered output before blocking
    dirs: set[str] = field(default_factory=set)  # directories made with mkdir
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    status: int = 0  # $?

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()


def properties(ctx: ShellContext) -> dict[str, str]:
    storage = ctx.storage
    d = storage.profile.device
    state = storage.state
    locked = state.bootloader_locked
    brand = d.manufacturer.lower()
    props = {
        "ro.product.manufacturer": d.manufacturer,
        "ro.product.brand": brand,
        "ro.product.model": d.model,
        "ro.product.name": d.product,
        "ro.product.device": d.device,
        "ro.product.cpu.abi": "arm64-v8a",
        "ro.serialno": state.serial,
        "ro.boot.serialno": state.serial,
        "ro.build.version.release": d.android,
        "ro.build.version.sdk": str(d.sdk),
        "ro.build.type": d.build_type,
        "ro.build.tags": "release-keys" if d.build_type == "user" else "test-keys",
        "ro.build.fingerprint": (f"{brand}/{d.product}/{d.device}:{d.android}/PW1A.240101.001/"
                                 f"1:{d.build_type}/release-keys"),
        "ro.debuggable": "0" if d.build_type == "user" else "1",
        "ro.secure": "1",
        "ro.adb.secure": "0" if storage.profile.access.auth == "none" else "1",
        "ro.crypto.type": d.crypto_type,
        "ro.crypto.state": "encrypted",
        "ro.boot.flash.locked": "1" if locked else "0",
        "ro.boot.verifiedbootstate": "green" if locked else "orange",
        "ro.boot.vbmeta.device_state": "locked" if locked else "unlocked",
        "ro.frp.pst": "/dev/block/by-name/frp",
        "ro.hardware": "emulated",
        "ro.bootmode": "normal",
        "persist.sys.test_harness": "1" if state.test_harness else "0",
        # dual SIM dual standby: two phones, an IMEI each (single SIM: "ssss")
        "persist.radio.multisim.config": "dsds" if len(getattr(state, "imeis", ())) > 1 else "ssss",
        "service.adb.root": "1" if ctx.adbd_root else "0",
        "sys.boot_completed": "1",
        "init.svc.adbd": "running",
        "sys.usb.state": "adb",
    }
    return dict(sorted(props.items()))
