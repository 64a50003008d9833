"""`phonewipe serve` over HTTP: a real station's batch (emulated handsets, real certificates)
served by a real uvicorn process; what the API says, who may read it, that nothing can be
written through it, the certificate download and its verification, and the refusals."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from serve_support import ASSETS, Server, get_json, phonewipe, request, run_station

from phonewipe.erase.audit import AuditLog

PROFILES = ["virtual:2", "virtual-frp", "virtual-lying", "hostile-html"]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "bench-1"
    assets = out.parent / "assets.csv"
    assets.write_text(ASSETS)
    run_station(out, PROFILES, "--assets", str(assets), "--batch", "B-serve-1")
    assert (out / "audit.sqlite").is_file()
    return out


@pytest.fixture(scope="module")
def server(station: Path) -> Iterator[Server]:
    with Server("--out", str(station), "--trust", str(station / "keys" / "signing-cert.pem")) as s:
        yield s


def _by_serial(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {j["serial"]: j for j in jobs}


def test_the_live_view_lists_the_station_and_every_job(server: Server) -> None:
    overview = get_json(server.url + "api/overview")
    [card] = overview["stations"]
    assert card["name"] == "bench-1" and card["running"] == 0 and card["finished"] == 5
    assert card["outcomes"]["PASS"] == 3 and card["outcomes"]["FAIL"] == 1
    jobs = _by_serial(get_json(server.url + "api/jobs")["jobs"])
    assert jobs["PWVIRT0000"]["result"] == "PASS" and jobs["PWVIRT0000"]["certificate"]
    assert jobs["PWVFRP0000"]["result"] == "NOT ERASED"
    assert jobs["PWVLIE0000"]["result"] == "FAIL"
    hostile = [j for j in jobs.values() if j["serial"].startswith("PW<svg")]
    assert hostile and "<script>" in hostile[0]["model"]  # data kept as the store holds it


def test_a_batch_shows_its_reconciliation(server: Server) -> None:
    [batch] = get_json(server.url + "api/batches")["batches"]
    assert batch["batch_id"] == "B-serve-1" and batch["state"] == "closed" and batch["has_manifest"]
    detail = get_json(server.url + "api/batches/bench-1/B-serve-1")
    recon = detail["reconciliation"]
    assert [a["asset_tag"] for a in recon["expected_never_seen"]] == ["A-1009"]
    assert {e["serial"] for e in recon["seen_not_expected"]} >= {"PWVLIE0000"}
    assert {e["serial"] for e in recon["blocked"]} == {"PWVFRP0000"}
    assert len(detail["job_list"]) == 5
    assert request(server.url + "api/batches/bench-1/no-such-batch")[0] == 404


def test_throughput_and_failures(server: Server) -> None:
    plot = get_json(server.url + "api/throughput")
    assert len(plot["hours"]) == 24 and plot["total"] == 5
    assert plot["stations"] == [{"name": "bench-1", "counts": [0] * 23 + [5]}] or \
        sum(plot["stations"][0]["counts"][-2:]) == 5  # the batch may straddle an hour
    failures = get_json(server.url + "api/failures")["failures"]
    assert {(f["result"], f["count"]) for f in failures} == {("NOT ERASED", 1), ("FAIL", 1)}
    assert all(f["stations"] == ["bench-1"] for f in failures)


def test_search_finds_the_record_its_certificate_and_verifies_it(server: Server, station: Path) -> None:
    job = _by_serial(get_json(server.url + "api/jobs")["jobs"])["PWVIRT0001"]
    imei = job["imeis"][1]
    for query in (imei, "pwvirt0001", "A-1002"):
        [hit] = get_json(server.url + f"api/search?q={query}")["records"]
        assert hit["serial"] == "PWVIRT0001" and hit["result"] == "PASS" and hit["certificate"]
    status, headers, pdf = request(server.url + f"api/certificate/bench-1/{hit['record_id']}")
    assert status == 200 and headers["content-type"] == "application/pdf"
    [on_disk] = station.glob("batches/*/certificates/PWVIRT0001-*.pdf")
    assert pdf == on_disk.read_bytes()
    verdict = get_json(server.url + f"api/verify/bench-1/{hit['record_id']}")
    assert verdict["verdict"] == "trusted", verdict
    assert verdict["sha256"] == hashlib.sha256(pdf).hexdigest() and not verdict["problems"]
    assert get_json(server.url + "api/search?q=nothing-like-it")["records"] == []


def test_a_changed_certificate_file_is_reported_invalid(tmp_path: Path) -> None:
    out = tmp_path / "bench-2"
    run_station(out, ["virtual"])
    [pdf] = out.glob("batches/*/certificates/PWVIRT0000-*.pdf")
    with Server("--out", str(out), "--trust", str(out / "keys" / "signing-cert.pem")) as s:
        [hit] = get_json(s.url + "api/search?q=PWVIRT0000")["records"]
        assert get_json(s.url + f"api/verify/bench-2/{hit['record_id']}")["verdict"] == "trusted"
        data = bytearray(pdf.read_bytes())
        at = data.index(b"PWVIRT0000")
        data[at:at + 10] = b"PWVIRT9999"
        pdf.write_bytes(bytes(data))
        verdict = get_json(s.url + f"api/verify/bench-2/{hit['record_id']}")
    assert verdict["verdict"] == "invalid"
    assert any("not the one the station certified" in p for p in verdict["problems"])


def test_nothing_can_be_written_through_it(server: Server) -> None:
    for path in ("", "api/overview", "api/jobs", "api/search?q=x", "api/batches/bench-1/B-serve-1",
                 "api/certificate/bench-1/x", "api/events", "static/app.js"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, _, _ = request(server.url + path, method=method, body=b"{}")
            assert status == 405, (method, path, status)


def test_pages_forbid_inline_script_and_other_hosts(server: Server) -> None:
    status, headers, body = request(server.url)
    assert status == 200 and b"<script src=\"/static/app.js\"" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    # a loopback dashboard without a token answers to localhost only (DNS rebinding)
    assert request(server.url + "api/overview", headers={"Host": "evil.example:80"})[0] == 403


def test_live_changes_arrive_as_server_sent_events(station: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bench-1"
    shutil.copytree(station, copy)
    with Server("--out", str(copy)) as s:
        host, port = s.url.split("//")[1].rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            _read_until(sock, b"retry:")
            with AuditLog(copy / "audit.sqlite") as log:
                log.append("job-live-1", "PWLIVE0001", "queued",
                           {"batch_id": "B-live", "endpoint": {"address": "usb:1-1"}})
                log.append("job-live-1", "PWLIVE0001", "erasing", {"method": "virtual-pattern"})
            text = _read_until(sock, b"PWLIVE0001")
    event = text[text.index("event: change"):]
    data = json.loads(event.split("data: ", 1)[1].split("\n", 1)[0])
    [job] = [j for j in data["jobs"] if j["job_id"] == "job-live-1"]
    assert job["running"] and job["serial"] == "PWLIVE0001"


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 15.0) -> str:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        assert time.monotonic() < deadline, f"no {marker!r} in {got[-500:]!r}"
        got += sock.recv(65536)
    return got.decode("utf-8", "replace")


def test_a_token_guards_the_dashboard(station: Path) -> None:
    token = "t0ken-for-the-dashboard-tests"
    with Server("--out", str(station), env={"PHONEWIPE_SERVE_TOKEN": token}) as s:
        assert request(s.url + "api/overview")[0] == 401
        assert request(s.url + "api/overview", headers={"Authorization": "Bearer wrong-token-x"})[0] == 401
        assert request(s.url + "api/overview", headers={"Authorization": f"Bearer {token}"})[0] == 200
        status, headers, _ = request(s.url + f"?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        assert request(s.url + "api/jobs", headers={"Cookie": cookie})[0] == 200
        assert request(s.url + "?token=wrong-token-xxxxxxx")[0] == 401
        # a link whose path starts "//" must not redirect to another site with the cookie set
        status, headers, _ = request(s.url + f"/evil.example/x?token={token}")
        assert status == 303 and headers["location"] == "/evil.example/x", headers["location"]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run(phonewipe("serve", *args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_it_refuses_a_public_bind_without_a_token(station: Path) -> None:
    result = _serve("--out", str(station), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_public_bind_with_a_token_serves_only_to_the_token(station: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("another-token-for-the-tests\n")
    with Server("--out", str(station), "--host", "0.0.0.0", "--token-file", str(token_file)) as s:
        url = s.url.replace("0.0.0.0", "127.0.0.1")
        assert request(url + "api/overview")[0] == 401
        headers = {"Authorization": "Bearer another-token-for-the-tests"}
        assert request(url + "api/overview", headers=headers)[0] == 200


@pytest.mark.parametrize("args, env, says", [
    (["--out", "{missing}"], {}, "no audit log"),
    (["--out", "{station}"], {"PHONEWIPE_SERVE_TOKEN": "short"}, "token must be"),
    (["--out", "{station}", "--tls-cert", "{cert}"], {}, "needs both --tls-cert and --tls-key"),
    (["--out", "{station}", "--port", "{busy}"], {}, "cannot listen"),
])
def test_bad_input_is_one_line_and_exit_2(station: Path, tmp_path: Path, args: list[str],
                                          env: dict[str, str], says: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        values = {"missing": str(tmp_path / "nowhere"), "station": str(station),
                  "cert": str(station / "keys" / "signing-cert.pem"),
                  "busy": str(busy.getsockname()[1])}
        result = _serve(*[a.format(**values) for a in args], "--port", "0", env=env) \
            if "--port" not in args else _serve(*[a.format(**values) for a in args], env=env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.stderr


def _tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(name: str, key: Any, issuer: Any, issuer_key: Any, ca: bool,
             san: list[Any] | None = None) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facility test CA")])
    ca = cert("facility test CA", ca_key, ca_name, ca_key, True)
    pem = serialization.Encoding.PEM
    key_pem = {"encoding": pem, "format": serialization.PrivateFormat.PKCS8,
               "encryption_algorithm": serialization.NoEncryption()}
    write("ca", ca.public_bytes(pem))
    for who, san in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                     ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(who, cert(who, key, ca_name, ca_key, False, san).public_bytes(pem))
        write(f"{who}-key", key.private_bytes(**key_pem))
    return files


def test_mtls_lets_only_a_client_with_a_certificate_in(station: Path, tmp_path: Path) -> None:
    import ssl
    import urllib.request
    files = _tls_files(tmp_path)
    with Server("--out", str(station), "--host", "0.0.0.0", "--tls-cert", str(files["server"]),
                "--tls-key", str(files["server-key"]), "--tls-client-ca", str(files["ca"])) as s:
        assert s.url.startswith("https://")
        url = s.url.replace("0.0.0.0", "127.0.0.1") + "api/overview"
        context = ssl.create_default_context(cafile=str(files["ca"]))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            urllib.request.urlopen(url, context=context, timeout=10).read()
        context.load_cert_chain(str(files["client"]), str(files["client-key"]))
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["stations"][0]["name"] == "bench-1"
