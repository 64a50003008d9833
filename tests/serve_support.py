"""What the dashboard tests share: a real station run with emulated handsets, a real
`phonewipe serve` process on a free loopback port, plain HTTP requests to it, and a real
headless Chromium (Debian's chromium + chromium-driver, through selenium)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from conftest import require_binary

ASSETS = """asset_tag,serial_or_imei,owner
A-1001,PWVIRT0000,Finance
A-1002,PWVIRT0001,Finance
A-1003,PWVFRP0000,Sales
A-1009,PWNEVER0001,Sales
"""


def phonewipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "phonewipe", *args]


def station_command(out: Path, profiles: list[str], *extra: str) -> list[str]:
    emulate = [arg for p in profiles for arg in ("--emulate", p)]
    return phonewipe("station", "--out", str(out), *emulate, "--exit-when-idle",
                     "--idle-seconds", "1", "--json-lines", *extra)


def run_station(out: Path, profiles: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """A whole batch: every handset erased, the batch closed (the exit code is the batch's)."""
    if any(not p.startswith("virtual") for p in profiles):
        require_binary("adb")
    return subprocess.run(station_command(out, profiles, *extra), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


class Server:
    """`phonewipe serve` in its own process; `url` once it listens."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(phonewipe("serve", "--port", "0", "--poll", "0.2", *args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("dashboard: "):
            self.stop()
            raise AssertionError(f"serve did not start: {line!r} {self.proc.stderr.read()!r}")
        self.url = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body); redirects are not followed."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def get_json(url: str, **kwargs: Any) -> Any:
    import json
    status, _, body = request(url, **kwargs)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1360,900"]


def chromium(profile_dir: Path) -> Iterator[Any]:
    """A headless Chromium driven through chromedriver; fails under CI=true without them."""
    binary = require_binary("chromium")
    driver_path = require_binary("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Any, timeout: float = 30.0, every: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(every)
