"""Shared test helpers: system binaries, private adb servers, emulated handsets."""
from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# `make test` runs each parser's property tests with a few examples; `make fuzz`
# (HYPOTHESIS_PROFILE=fuzz) with 10,000 each.
settings.register_profile("default", max_examples=50)
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def require_binary(name: str) -> str:
    """Path of a system binary; skip when missing on a user's machine, fail under CI."""
    path = shutil.which(name)
    if path:
        return path
    package = "poppler-utils" if name.startswith("pdf") else name
    message = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the interop tests: {message}")
    pytest.skip(message)
