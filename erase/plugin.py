"""The protocol plugin contract and the registry that finds plugins.

Plugins register under the entry-point group ``phonewipe.protocols``; the ones that ship
with phonewipe are also listed in ``BUILTIN_PLUGINS`` so a source checkout works without
installation metadata (as python-can and pyOCD do). The core never imports a plugin module
directly: it goes through ``load_plugins()``.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from .errors import PhonewipeError
from .model import Endpoint, EraseMethod, Expectation, Finding, Identity

ENTRY_POINT_GROUP = "phonewipe.protocols"

BUILTIN_PLUGINS: dict[str, str] = {
    "adb": "protocols.adb:AdbPlugin",
    "fastboot": "protocols.fastboot:FastbootPlugin",
}

ProgressFn = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a long operation runs."""


Extent = tuple[int, int]
"""(offset, length) in bytes, block aligned."""


class BlockReader(Protocol):
    """Read-back of what a method wrote, addressed from 0 to ``size``."""

    size: int
    block_size: int

    def read_many(self, extents: Sequence[Extent]) -> Iterator[bytes | None]:
        """Read each extent, in order; None for an extent the device could not read
        (I/O error). Plugins batch these; a lost device raises DeviceGone."""
        ...

    def bypass_cache(self) -> str:
        """Make the reads that follow come from the storage medium, not from a cache that
        still holds what was just written (a kernel's page cache, a loader's RAM buffer):
        invalidate it, or switch to direct reads. The core calls this before every
        verification pass. Returns how, in words, for the record; raises
        `MediumUnreachable` when the device allows neither."""
        ...


@dataclass
class EraseContext:
    """What the job hands a method: the secret pattern key (never sent to the device)."""

    pattern_key: bytes
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EraseReport:
    """What a method did, in its own words, for the certificate."""

    bytes_written: int
    expectation: Expectation | None
    scope: str  # e.g. "userdata block device, 64 MiB" or "user-writable storage fill"
    details: dict[str, Any] = field(default_factory=dict)
    # the size of the erased area by sources independent of the one the erase used
    # (e.g. {"/proc/partitions": ...}); empty when the protocol offers none
    capacity_evidence: dict[str, int] = field(default_factory=dict)


class Session(abc.ABC):
    """One open connection to one device in one mode."""

    endpoint: Endpoint

    @abc.abstractmethod
    def identify(self) -> Identity: ...

    @property
    def identity(self) -> Identity | None:
        """The identity as the checks so far established it (preflight fills in the lock
        states it checked); None when the session keeps no such record."""
        return None

    @abc.abstractmethod
    def preflight(self) -> list[Finding]: ...

    @abc.abstractmethod
    def methods(self) -> list[EraseMethod]:
        """Methods this device allows, strongest first."""

    @abc.abstractmethod
    def erase(self, method: EraseMethod, context: EraseContext, progress: ProgressFn) -> EraseReport: ...

    @abc.abstractmethod
    def reader(self) -> BlockReader | None:
        """Read-back of what the last erase wrote, or None when the device cannot be read."""

    def readback(self) -> BlockReader | None:
        """Read access to the storage a method erases, without erasing: for before/after
        samples of a cryptographic erase and for re-verification. None when not readable."""
        return None

    def not_recheckable(self, record: Any) -> str | None:
        """Why `readback()` cannot re-check this certificate's samples (they were read from
        something that no longer exists, e.g. fill files a reset removed), or None."""
        return None

    def transcript(self) -> dict[str, Any]:
        """A summary of the protocol exchange so far (commands, bytes) for the evidence."""
        return {}

    def finish(self, method: EraseMethod, progress: ProgressFn) -> dict[str, Any]:
        """Steps after verification (delete the fill, factory reset...). Returns details."""
        return {}

    def post_state(self) -> dict[str, Any]:
        return {}

    def preflight_for(self, mode: str) -> list[Finding]:
        """The findings that still matter when the erase runs in another ``mode`` (reached
        with `reboot_to`): by default all of them; a plugin drops those that only concern
        its own methods."""
        return self.preflight()

    def reboot_to(self, mode: str) -> bool:
        """Reboot the device into ``mode`` (e.g. "adb": boot Android) so that another
        plugin can reach it (erase.follow); False when this session cannot. The session
        is not usable for device commands afterwards."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunningEmulator(Protocol):
    """An emulated handset in one plugin's mode, serving on loopback until stopped."""

    endpoints: dict[str, str]  # e.g. {"adb": "127.0.0.1:40123"}

    def stop(self) -> None: ...


class Plugin(abc.ABC):
    name: str = ""

    def __init__(self, options: "PluginOptions | None" = None) -> None:
        self.options = options or PluginOptions()

    @abc.abstractmethod
    def discover(self) -> list[Endpoint]: ...

    @abc.abstractmethod
    def open(self, endpoint: Endpoint) -> Session: ...

    def start_emulator(self, storage: Any, profile: Any) -> RunningEmulator | None:
        """Serve an emulated handset (`erase.emulation.storage.HandsetStorage`) in this
        plugin's mode; None when the plugin has no emulator."""
        return None


@dataclass
class PluginOptions:
    """Settings every plugin may read (e.g. the adb server port)."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def _load_target(target: str) -> type[Plugin]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def plugin_classes() -> dict[str, type[Plugin]]:
    """Every known plugin class by name: built-ins first, entry points may add or override."""
    found: dict[str, str | metadata.EntryPoint] = dict(BUILTIN_PLUGINS)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry
    classes: dict[str, type[Plugin]] = {}
    for name, target in found.items():
        try:
            cls = target.load() if isinstance(target, metadata.EntryPoint) else _load_target(target)
        except ImportError as exc:  # a broken third-party plugin must not take the tool down
            raise PhonewipeError(f"protocol plugin {name!r} cannot be loaded: {exc}",
                                 "reinstall phonewipe or remove the plugin") from exc
        classes[name] = cls
    return classes


def load_plugins(options: PluginOptions | None = None, only: Iterable[str] | None = None) -> dict[str, Plugin]:
    options = options or PluginOptions()
    wanted = set(only) if only is not None else None
    return {
        name: cls(options)  # type: ignore[call-arg]
        for name, cls in plugin_classes().items()
        if wanted is None or name in wanted
    }
