"""Who may read the dashboard: anyone on this machine when it listens on loopback only;
otherwise only a client that shows the token (or, with mTLS, a client certificate).

A token arrives as ``Authorization: Bearer TOKEN``, or once as ``?token=TOKEN`` (a link a
supervisor opens), which sets an HttpOnly cookie and redirects to the same page without it,
so the token does not stay in the address bar or the history. Every response forbids
inline scripts and any other origin (Content-Security-Policy): a device string that got
into the page as markup still could not run."""
from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import parse_qsl, urlencode

from phonewipe.erase.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "phonewipe_token"
LOOPBACK_NAMES = ("localhost",)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cache-control", b"no-store")]


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, client_ca: bool) -> None:
    """Refuse a bind other machines can reach unless a token or mTLS guards it."""
    if is_loopback(host) or token or client_ca:
        return
    raise ConfigError(f"refusing to serve the dashboard on {host} without a token: anyone who "
                      "can reach it could read every record",
                      "set a token (--token-file FILE or PHONEWIPE_SERVE_TOKEN), use mTLS "
                      "(--tls-cert, --tls-key, --tls-client-ca), or bind to 127.0.0.1")


class Guard:
    """ASGI middleware: the token check, the security headers, and for a loopback server
    without a token the Host check that keeps other web sites out (DNS rebinding)."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token or None
        self.loopback_only = loopback_only and not token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            await _plain(send, 403, "this dashboard answers only to localhost")
            return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if "token" in query and self._ok(query["token"]):
                await self._set_cookie(scope, query, send)
                return
            if not self._ok(_presented(headers)):
                await _plain(send, 401, "token required: open the link with ?token=TOKEN once, or "
                                        "send Authorization: Bearer TOKEN")
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)
        await self.app(scope, receive, with_headers)

    def _ok(self, presented: str) -> bool:
        assert self.token is not None
        return bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode())

    async def _set_cookie(self, scope: Scope, query: dict[str, str], send: Send) -> None:
        rest = urlencode({k: v for k, v in query.items() if k != "token"})
        # one leading slash: "//host/..." would be a link to another site
        location = "/" + scope.get("path", "/").lstrip("/") + (f"?{rest}" if rest else "")
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/{secure}"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location.encode()),
                                (b"set-cookie", cookie.encode()), *HEADERS]})
        await send({"type": "http.response.body", "body": b""})


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _presented(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header is no token
        return ""
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel else ""


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": (text + "\n").encode()})
