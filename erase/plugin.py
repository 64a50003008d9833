"""The protocol plugin contract and the registry that finds plugins.

Plugins register under the entry-point group ``phonewipe.protocols``, the built-in ones
too: the core keeps no list of its own and never imports a plugin module. A plugin
*declares* (pyOCD-style) and the core asks: its options (CLI flags and the keys of its
config table), the modes it speaks, whether it reads storage back, the modes its sessions
can reboot a phone into (`--via` choices and follow targets come from these), and its
emulator. A plugin that fails to load is reported and skipped.
"""
from __future__ import annotations

import abc
import difflib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from .errors import UsageError
from .model import Endpoint, EraseMethod, Expectation, Finding, Identity

ENTRY_POINT_GROUP = "phonewipe.protocols"

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

    def entered_asset_tag(self) -> str:
        """The asset tag the operator entered for this device through the plugin's options
        (a dead phone cannot tell its own); the record's asset tag when the run names none."""
        return ""

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
        plugin can reach it (phonewipe.erase.follow); False when this session cannot. The session
        is not usable for device commands afterwards."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook: most sessions hold nothing to release
        pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunningEmulator(Protocol):
    """An emulated handset in one plugin's mode, serving on loopback until stopped."""

    endpoints: dict[str, str]  # e.g. {"adb": "127.0.0.1:40123"}

    def stop(self) -> None: ...


@dataclass(frozen=True)
class PluginOption:
    """A setting a plugin brings: the CLI flag ``--<plugin>-<key>`` and the key ``<key>``
    of its ``[<plugin>]`` config table; plugins read it as ``options.get("<plugin>_<key>")``."""

    key: str
    help: str
    type: type = str  # str, int, float or bool
    default: Any = None
    multiple: bool = False  # a repeatable flag, a list in the config
    range: tuple[float, float] | None = None  # inclusive bounds of a number
    metavar: str = ""
    aliases: tuple[str, ...] = ()  # further flags for it, e.g. "--allow-internal"

    def value_key(self, plugin: str) -> str:
        return f"{plugin}_{self.key}"

    def flag(self, plugin: str) -> str:
        return f"--{plugin}-{self.key}".replace("_", "-")

    def check(self, plugin: str, value: Any) -> Any:
        """The value converted to the declared type; ValueError naming what is wrong."""
        if self.multiple:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [self._one(plugin, v) for v in items]
        return self._one(plugin, value)

    def _one(self, plugin: str, value: Any) -> Any:
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.key} must be true or false, not {value!r}")
            return value
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"{self.key} must be a number, not {value!r}")
            try:
                number = self.type(value)
            except ValueError:
                raise ValueError(f"{self.key} must be a number, not {value!r}") from None
            if self.range and not self.range[0] <= number <= self.range[1]:
                raise ValueError(f"{self.key} {number} is outside {self.range[0]:g}..{self.range[1]:g}")
            return number
        if not isinstance(value, str):
            raise ValueError(f"{self.key} must be a string, not {value!r}")
        return value


class Plugin(abc.ABC):
    name: str = ""
    modes: tuple[str, ...] = ()  # the modes its endpoints are in (adb, fastboot, edl, ...)
    reads_back: bool = False  # its sessions can read storage back (Session.readback)
    reboots_into: tuple[str, ...] = ()  # modes its sessions can reboot a phone into
    option_specs: tuple[PluginOption, ...] = ()
    has_emulator: bool = False  # start_emulator serves a wire-level emulated handset
    # the names of every erase method its sessions may offer (`EraseMethod.name`), so that
    # `--method` is checked before any phone is touched; None: not declared (not checked)
    method_names: tuple[str, ...] | None = None

    def __init__(self, options: "PluginOptions | None" = None) -> None:
        self.options = options or PluginOptions()

    def option(self, key: str) -> Any:
        """A declared option's value: as given, else its declared default."""
        spec = next((s for s in self.option_specs if s.key == key), None)
        default = spec.default if spec else None
        return self.options.get(f"{self.name}_{key}", default)

    @classmethod
    def sandbox_options(cls, workdir: Path) -> dict[str, Any]:
        """Option values for a private instance that touches nothing outside ``workdir``
        (the demo, an emulated station, tests): e.g. a server on a free port."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook: most plugins start nothing of their own
        """Stop what this plugin started for itself (a private server)."""

    @abc.abstractmethod
    def discover(self) -> list[Endpoint]: ...

    @abc.abstractmethod
    def open(self, endpoint: Endpoint) -> Session: ...

    def start_emulator(self, storage: Any, profile: Any) -> RunningEmulator | None:
        """Serve an emulated handset (`phonewipe.erase.emulation.storage.HandsetStorage`) in this
        plugin's mode; None when the plugin has no emulator."""
        return None


@dataclass
class PluginOptions:
    """Settings every plugin may read (e.g. the adb server port)."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass(frozen=True)
class Registry:
    """The plugin classes the entry points name, and the ones that failed to load."""

    classes: dict[str, type[Plugin]]
    failures: dict[str, str]  # name -> one line: why it was skipped

    @classmethod
    def load(cls) -> "Registry":
        classes: dict[str, type[Plugin]] = {}
        failures: dict[str, str] = {}
        for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                loaded = entry.load()
                if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
                    raise TypeError(f"{entry.value} is not a phonewipe Plugin class")
            except Exception as exc:  # a broken third-party plugin must not take the tool down
                failures[entry.name] = f"{type(exc).__name__}: {exc}"
                continue
            classes[entry.name] = loaded
        if not classes and not failures:
            failures["(none)"] = "no protocol plugins are installed (is phonewipe installed?)"
        return cls(classes, failures)

    def option_specs(self) -> list[tuple[str, PluginOption]]:
        return [(name, spec) for name, plugin in self.classes.items() for spec in plugin.option_specs]

    def method_names(self) -> dict[str, tuple[str, ...]]:
        """Each plugin's declared method names (plugins that declare none are left out)."""
        return {name: tuple(cls.method_names) for name, cls in self.classes.items()
                if cls.method_names is not None}

    def check_method(self, method: str | None) -> None:
        """A method no plugin offers is a usage error naming the closest ones (difflib) and
        each family's methods. A plugin that declares no names might offer it: not refused."""
        if method is None:
            return
        declared = self.method_names()
        if any(method in names for names in declared.values()) \
                or any(cls.method_names is None for cls in self.classes.values()):
            return
        every = [m for names in declared.values() for m in names]
        close = difflib.get_close_matches(method, every, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UsageError(f"unknown method {method!r}", f"{hint}methods: {self.methods_text()}")

    def methods_text(self) -> str:
        """`adb: a, b; fastboot: c` — for help texts and errors."""
        return "; ".join(f"{name}: {', '.join(names)}" for name, names in self.method_names().items()
                         if names)

    def via_modes(self) -> list[str]:
        """Modes a phone can be rebooted into and erased in: `erase --via` choices."""
        served = {mode for plugin in self.classes.values() for mode in plugin.modes}
        return sorted({m for p in self.classes.values() for m in p.reboots_into} & served)

    def plugins(self, options: PluginOptions | None = None,
                only: Iterable[str] | None = None) -> dict[str, Plugin]:
        options = options or PluginOptions()
        wanted = set(only) if only is not None else None
        return {name: cls(options) for name, cls in self.classes.items()
                if wanted is None or name in wanted}


def load_plugins(options: PluginOptions | None = None,
                 only: Iterable[str] | None = None) -> dict[str, Plugin]:
    """One instance of every plugin that loads (failures: `Registry.load().failures`)."""
    return Registry.load().plugins(options, only)


def sandbox_plugins(workdir: Path, extra: dict[str, Any] | None = None) -> dict[str, Plugin]:
    """Plugins for a private bench under ``workdir`` (servers on free ports, homes inside)."""
    registry = Registry.load()
    values: dict[str, Any] = {}
    for cls in registry.classes.values():
        values.update(cls.sandbox_options(workdir))
    values.update(extra or {})
    return registry.plugins(PluginOptions(values))


def close_plugins(plugins: dict[str, Plugin]) -> None:
    for plugin in plugins.values():
        plugin.close()
