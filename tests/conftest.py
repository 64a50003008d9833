"""Shared test helpers: system binaries, private adb servers, emulated handsets."""
from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Path of a system binary; skip when missing on a user's machine, fail under CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install {'poppler-utils' if name.startswith('pdf') else name})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the interop tests: {message}")
    pytest.skip(message)
