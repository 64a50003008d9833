"""A real RFC 3161 time-stamping authority on loopback, for tests and the signing bench.

Certomancer (the test PKI tooling by pyHanko's author) builds a small PKI from a config:
a root CA, a TSA certificate it issued (extended key usage timeStamping), a CRL
repository; its Animator serves the TSA, the CRLs and the certificates over HTTP. We serve
it with werkzeug on 127.0.0.1 and a free port. The keys are made here with `cryptography`,
fresh for every server.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ARCH = "phonewipe-test"


@dataclass
class LoopbackTSA:
    url: str  # the TSA endpoint: [signing] tsa_url
    root_pem: Path  # the root CA that issued the TSA certificate (trust it with --trust-ca)
    base: str
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "LoopbackTSA":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _config(base: str) -> dict[str, Any]:
    validity = {"valid-from": "2020-01-01T00:00:00+0000", "valid-to": "2090-01-01T00:00:00+0000"}
    return {
        "external-url-prefix": base,
        "keysets": {ARCH: {"keys": {"root": {"path": "root.key.pem"},
                                    "tsa": {"path": "tsa.key.pem"}}}},
        "pki-architectures": {ARCH: {
            "keyset": ARCH,
            "entity-defaults": {"country-name": "GB", "organization-name": "Loopback Time Ltd"},
            "entities": {"root": {"common-name": "Loopback Test Root CA"},
                         "tsa": {"common-name": "Loopback Test TSA"}},
            "certs": {
                "root": {"subject": "root", "issuer": "root", "validity": validity,
                         "profiles": ["simple-ca"]},
                "tsa": {"subject": "tsa", "issuer": "root", "validity": validity,
                        "extensions": [
                            {"id": "key_usage", "critical": True,
                             "smart-value": {"schema": "key-usage",
                                             "params": ["digital_signature"]}},
                            {"id": "extended_key_usage", "critical": True,
                             "value": ["time_stamping"]},
                            {"id": "crl_distribution_points",
                             "smart-value": {"schema": "crl-dist-url",
                                             "params": {"crl-repo-names": ["root"]}}}]},
            },
            "services": {
                "time-stamping": {"tsa": {"signing-cert": "tsa", "signing-key": "tsa",
                                          "certs-to-embed": ["root"]}},
                "crl-repo": {"root": {"for-issuer": "root", "signing-key": "root",
                                      "simulated-update-schedule": "P90D"}},
            },
        }},
    }


def start_tsa(workdir: Path) -> LoopbackTSA:
    """Start the TSA; `close()` (or a `with` block) stops it."""
    import logging

    from certomancer.integrations.animator import Animator, AnimatorArchStore
    from certomancer.registry import ArchLabel, CertomancerConfig
    from werkzeug.serving import make_server
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_key(workdir / "root.key.pem")
    _write_key(workdir / "tsa.key.pem")
    app: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: app["wsgi"](env, start),
                         threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    config = CertomancerConfig(_config(base), key_search_dir=str(workdir))
    arch = config.get_pki_arch(ArchLabel(ARCH))
    app["wsgi"] = Animator(AnimatorArchStore(config.pki_archs), with_web_ui=False,
                           allow_time_override=False)
    root = arch.get_cert("root")  # noqa: the label is a CertLabel, a str subclass
    root_pem = workdir / "tsa-root.pem"
    from asn1crypto import pem
    root_pem.write_bytes(pem.armor("CERTIFICATE", root.dump()))
    thread = threading.Thread(target=server.serve_forever, name="loopback-tsa", daemon=True)
    thread.start()
    return LoopbackTSA(url=f"{base}/{ARCH}/tsa/tsa", root_pem=root_pem, base=base,
                       _server=server, _thread=thread)


if __name__ == "__main__":  # `python tests/tsa.py DIR`: a TSA to try by hand
    import sys
    import tempfile
    import time
    tsa = start_tsa(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()))
    print(f"tsa_url = \"{tsa.url}\"\nroot CA: {tsa.root_pem}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        tsa.close()
