"""Shared test helpers: system binaries, private adb servers, emulated handsets."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, settings

# `make test` runs each parser's property tests with a few examples; `make fuzz`
# (HYPOTHESIS_PROFILE=fuzz) with 10,000 each.
settings.register_profile("default", max_examples=50)
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


USERS_ADB = pytest.StashKey[str]()  # what answered on adb's default port before the run
RUN_ADB_PORT = pytest.StashKey[int]()  # the adb port of this run, for commands given none
USERS_ADB_VARIABLE = pytest.StashKey["str | None"]()  # ANDROID_ADB_SERVER_PORT before the run


def _users_adb_port() -> str:
    from phonewipe.protocols.adb.server import AdbServer
    return AdbServer().probe(timeout=2)


def pytest_configure(config: pytest.Config) -> None:
    """A command a test runs without an adb port (an erase of a block device still asks adb)
    uses ANDROID_ADB_SERVER_PORT, as adb does: a private port for the run, set before the
    xdist workers start so that they and every subprocess inherit it."""
    from phonewipe.erase.ports import free_port
    from phonewipe.protocols.adb.server import PORT_VARIABLE
    if hasattr(config, "workerinput"):
        return
    config.stash[USERS_ADB_VARIABLE] = os.environ.get(PORT_VARIABLE)  # the user's own server
    config.stash[RUN_ADB_PORT] = free_port()
    os.environ[PORT_VARIABLE] = str(config.stash[RUN_ADB_PORT])


def pytest_unconfigure(config: pytest.Config) -> None:
    from phonewipe.protocols.adb.server import PORT_VARIABLE
    if RUN_ADB_PORT not in config.stash:
        return
    users = config.stash[USERS_ADB_VARIABLE]
    if users is None:
        os.environ.pop(PORT_VARIABLE, None)
    else:
        os.environ[PORT_VARIABLE] = users


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the run itself, not an xdist worker
        session.config.stash[USERS_ADB] = _users_adb_port()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing a test starts outlives the run: the run's adb server is stopped, and an adb
    server on the user's port 5037 (adb starts one there for any command without -P or
    ANDROID_ADB_SERVER_PORT) fails the run, as the leak it is."""
    from phonewipe.erase.errors import PhonewipeError
    from phonewipe.protocols.adb.server import AdbServer
    writer = session.config.get_terminal_writer()
    if RUN_ADB_PORT in session.config.stash:
        try:
            AdbServer(port=session.config.stash[RUN_ADB_PORT]).stop()
        except PhonewipeError as exc:
            writer.line(f"the run's adb server did not stop: {exc.line()}", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.stash.get(USERS_ADB, "") == "free" and _users_adb_port() != "free":
        writer.line()
        writer.line(
            "a test left an adb server running on port 5037 (the user's own): give it a "
            "private port (--adb-port, [adb] port in its config, or ANDROID_ADB_SERVER_PORT) "
            "and stop it", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def require_binary(name: str) -> str:
    """Path of a system binary; skip when missing on a user's machine, fail under CI."""
    path = shutil.which(name)
    if path:
        return path
    package = "poppler-utils" if name.startswith("pdf") else \
        "libimobiledevice-utils" if name.startswith("idevice") else \
        "chromium-driver" if name == "chromedriver" else name
    message = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the interop tests: {message}")
    pytest.skip(message)


@pytest.fixture
def adb_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """(plugins, start): emulated handsets served to a private adb server (the real
    Debian binary); `start(PROFILE)` starts one more, each in its own directory."""
    from phonewipe.erase.emulation.fleet import start_handsets, stop_handsets
    from phonewipe.erase.plugin import close_plugins, sandbox_plugins
    require_binary("adb")
    monkeypatch.setenv("ADB_LIBUSB", os.environ.get("ADB_LIBUSB", "0"))
    plugins = sandbox_plugins(tmp_path, {"follow_timeout": 30})
    started: list[Any] = []

    def start(profile: str) -> Any:
        handsets = start_handsets([profile], tmp_path / "handsets" / str(len(started)), plugins)
        started.extend(handsets)
        return handsets[0]

    yield plugins, start
    stop_handsets(started)
    close_plugins(plugins)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An organization's signing key, made once per test module (EC P-256, self-signed)."""
    from phonewipe.certificates.keys import init_keys
    from phonewipe.certificates.sign import CertificateSigner
    keys = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(keys, "ACME Refurb", "ACME Refurb erasure signing")
    return CertificateSigner(keys)


def fingerprint(signer: Any) -> str:
    """The SHA-256 of a signer's certificate (DER), as `--trust` and checkpoints name it."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    return hashlib.sha256(signer.material.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
