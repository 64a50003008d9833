"""`phonewipe serve --out DIR...`: the facility's live dashboard in a browser (uvicorn)."""
from __future__ import annotations

import os
import re
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import click

from phonewipe.common import config_of, expected_errors
from phonewipe.erase.errors import ConfigError, UsageError

TOKEN_ENV = "PHONEWIPE_SERVE_TOKEN"
TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def read_token(token_file: Path | None) -> str | None:
    """The token from --token-file (its first line) or PHONEWIPE_SERVE_TOKEN; never from
    the command line, where every user of the machine could read it in the process list."""
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc}",
                             "give a readable file holding the token on its first line") from exc
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if not TOKEN.fullmatch(token):
        raise ConfigError("the dashboard token must be 16 to 256 letters, digits, '.', '_', '~' "
                          "or '-'", "make one with: python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'")
    return token


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "choose another --port (or --host)") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def register(group: click.Group) -> None:
    """Add `serve` to `group`."""

    @group.command()
    @click.option("--out", "outs", type=click.Path(path_type=Path), multiple=True,
                  help="station directory holding audit.sqlite; repeat for each station (default: "
                       "the facility's database, [store] url)")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="address to listen on; anything but loopback needs a token or mTLS")
    @click.option("--port", type=click.IntRange(0, 65535), default=8780, show_default=True,
                  help="port to listen on (0: any free port, printed)")
    @click.option("--token-file", type=click.Path(path_type=Path),
                  help=f"file whose first line is the token clients must show (or {TOKEN_ENV})")
    @click.option("--tls-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                  help="serve HTTPS with this certificate (PEM)")
    @click.option("--tls-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                  help="the key of --tls-cert (PEM)")
    @click.option("--tls-client-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                  help="mTLS: require a client certificate issued by this CA")
    @click.option("--trust", multiple=True, metavar="CERT|FINGERPRINT",
                  help="trust this certificate signer when verifying (as `cert verify --trust`)")
    @click.option("--trust-ca", multiple=True, type=click.Path(path_type=Path), metavar="CERT",
                  help="trust signers this CA issued")
    @click.option("--poll", type=click.FloatRange(0.05), default=0.5, show_default=True,
                  help="seconds between looks at the audit logs for live updates")
    @click.pass_context
    @expected_errors
    def serve(ctx: click.Context, outs: tuple[Path, ...], host: str, port: int,
              token_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
              tls_client_ca: Path | None, trust: tuple[str, ...], trust_ca: tuple[Path, ...],
              poll: float) -> None:
        """A read-only live dashboard of stations, jobs, batches, throughput and failures,
        with search by IMEI, serial or asset tag and each certificate's verification."""
        from phonewipe.certificates.trust import TrustStore
        try:
            from .app import ServeSettings, create_app
        except ImportError as exc:
            raise UsageError(f"phonewipe serve needs the dashboard's libraries ({exc.name} is not "
                             "installed)", "pip install 'phonewipe[facility]'") from exc
        from .certs import Verifier
        from .security import check_bind, is_loopback
        from .source import Facility, open_directories, open_facility

        token = read_token(token_file)
        if (tls_cert is None) != (tls_key is None) or (tls_client_ca and tls_cert is None):
            raise UsageError("HTTPS needs both --tls-cert and --tls-key (and mTLS needs them too)",
                             "give --tls-cert CERT.pem --tls-key KEY.pem")
        check_bind(host, token, tls_client_ca is not None)
        config = config_of(ctx)
        store = TrustStore.build(certificates=config.trust_certificates,
                                 fingerprints=config.trust_fingerprints,
                                 ca_certificates=config.trust_ca_certificates,
                                 trust=trust, trust_ca=trust_ca)
        sock = listen(host, port)
        sources = open_directories(outs, required=not config.store_url)
        if config.store_url:
            sources.insert(0, open_facility(config.store_url))
        facility = Facility(sources)
        app = create_app(facility, Verifier(store), token, is_loopback(host) and not tls_client_ca,
                         ServeSettings(poll=poll))
        click.echo(f"dashboard: {url_of(sock, tls_cert is not None)}"
                   + (" (token required)" if token else ""), err=False)
        sys.stdout.flush()
        try:
            _run(app, sock, tls_cert, tls_key, tls_client_ca)
        finally:
            facility.close()


def _run(app: Any, sock: socket.socket, cert: Path | None, key: Path | None,
         client_ca: Path | None) -> None:
    import uvicorn
    tls: dict[str, Any] = {}
    if cert is not None:
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:
        tls |= {"ssl_ca_certs": str(client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, **tls)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot start the dashboard: {exc}",
                          "check --tls-cert, --tls-key and --tls-client-ca") from exc
