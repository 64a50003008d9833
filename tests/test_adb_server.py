"""The adb server the tool talks to: a port where something else listens is one clear
line, never a hang."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import require_binary


def test_a_silent_service_on_the_adb_port_is_one_line_not_a_hang(tmp_path: Path) -> None:
    require_binary("adb")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:  # accepts every connection and never answers
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:
            return
    threading.Thread(target=accept, daemon=True).start()
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "phonewipe", "--adb-port",
                                 str(listener.getsockname()[1]), "devices"],
                                capture_output=True, text=True, timeout=90, cwd=tmp_path)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "--adb-port" in lines[0] and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
