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


HANGS_ON_KILL = '''
import socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
held = []
while True:
    conn, _ = listener.accept()
    request = conn.recv(4 + int(conn.recv(4), 16))
    if request.endswith(b"host:version"):
        conn.sendall(b"OKAY00040029")
        conn.close()
    else:  # host:kill: takes it, answers, never exits (an adb 29 server stuck in exit())
        conn.sendall(b"OKAY")
        held.append(conn)
'''


def test_a_server_that_hangs_on_its_way_out_is_ended_by_signal(tmp_path: Path) -> None:
    """`adb kill-server` reaches the server, which answers and then never exits: stop()
    ends it (it is an adb process on our port) instead of failing after a long wait."""
    import signal

    from phonewipe.demo import free_port
    from phonewipe.protocols.adb.server import AdbServer
    adb = require_binary("adb")
    port = free_port()
    stuck = tmp_path / "adb"  # its process name, as a real server's
    stuck.write_text(f"#!{sys.executable}\n{HANGS_ON_KILL}")
    stuck.chmod(0o755)
    proc = subprocess.Popen([str(stuck), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        server = AdbServer(port=port, adb_path=adb, home=tmp_path / "home", kill_timeout=1.0)
        assert server.running()
        server.stop()
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


LEAVES_ITS_PORT_FIRST = HANGS_ON_KILL.replace(
    "        held.append(conn)", "        held.append(conn)\n        listener.close()\n        break"
) + "time.sleep(3600)\n"


def test_a_server_that_closed_its_port_and_hangs_is_ended_by_its_command_line(tmp_path: Path) -> None:
    """A server on its way out that has closed its listening socket and still holds the
    kill-server client is found by its command line (`adb -L tcp:PORT fork-server server`)."""
    import signal

    from phonewipe.demo import free_port
    from phonewipe.protocols.adb.server import AdbServer
    adb = require_binary("adb")
    port, other = free_port(), free_port()
    stuck = tmp_path / "adb"
    stuck.write_text(f"#!{sys.executable}\nimport sys\nsys.argv[1] = sys.argv[2][4:]\n"
                     f"{LEAVES_ITS_PORT_FIRST}")
    stuck.chmod(0o755)
    server_of = [str(stuck), "-L", "tcp:{}", "fork-server", "server", "--reply-fd", "3"]
    procs = [subprocess.Popen([a.format(p) for a in server_of], stdout=subprocess.PIPE, text=True)
             for p in (port, other)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        server = AdbServer(port=port, adb_path=adb, home=tmp_path / "home", kill_timeout=1.0)
        server.stop()
        assert procs[0].wait(timeout=10) == -signal.SIGKILL
        assert procs[1].poll() is None  # another port's server is left alone
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
