"""Request guards and headers for every route: body size, JSON only, same-site, no-store (SEC-52..54)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from twostep.core.errors import (
    CrossSiteRequest,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    TwostepError,
    UnsupportedMediaType,
)
from twostep.i18n import N_
from twostep.web.errors import error_body_of, status_of
from twostep.web.inputs import has_control

log = logging.getLogger("twostep.web")

MAX_BODY = 64 * 1024
API_PREFIX = "/api/v1"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def security_headers(form_action: tuple[str, ...] = ()) -> list[tuple[bytes, bytes]]:
    """SECURITY_HEADERS, with ``form_action`` sources added to the CSP's ``form-action 'self'``: Chromium
    applies that directive to the redirect that follows a form post (the return to another subdomain)."""
    if not form_action:
        return SECURITY_HEADERS
    csp = CSP.replace("form-action 'self'", "form-action 'self' " + " ".join(form_action))
    return [(b"content-security-policy", csp.encode()), *SECURITY_HEADERS[1:]]


# Public documents that relying parties may cache: their own Cache-Control is kept (not no-store).
CACHEABLE = {"/.well-known/openid-configuration", "/oidc/jwks"}
# Endpoints authenticated by what the request carries (client credentials, PKCE, a bearer token), never by a
# cookie: a request from another site is no forgery there, and a single-page application calls them.
NO_COOKIE_AUTH = {"/oidc/token", "/oidc/userinfo"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
WITH_BODY = {"POST", "PUT", "PATCH"}


def is_cross_site(headers: dict[str, str], origin: str) -> bool:
    """A request from another site: an Origin other than ours, or Sec-Fetch-Site: cross-site.

    A browser that says the request is same-origin (or typed by the user) is believed when it sends
    ``Origin: null``, which referrer policies can cause; any other ``null`` origin is refused.
    """
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site == "cross-site":
        return True
    sent = headers.get("origin")
    if sent is None:
        return False
    if sent == "null" and fetch_site in ("same-origin", "none"):
        return False
    return sent.rstrip("/") != origin


def _json_error(exc: TwostepError) -> tuple[int, bytes]:
    """The status of ``exc`` (errors.STATUS) and its body, for a request refused before the app."""
    return status_of(exc), json.dumps(error_body_of(exc)).encode()


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (read already) once, then whatever comes after it."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class GuardMiddleware:
    """Pure ASGI: refuses oversize bodies, non-JSON API writes and cross-site writes; adds headers."""

    def __init__(self, app: ASGIApp, *, origin: str, form_action: tuple[str, ...] = ()) -> None:
        self.app = app
        self.origin = origin
        self.headers = security_headers(form_action)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        is_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        if has_control(path):
            # H10: no route, id or name contains a control character (`/factors/%00`): nothing is there.
            await self._send_error(send, *_json_error(NotFound()))
            return
        refusal = self._refusal(path, method, headers, is_api)
        if refusal is not None:
            await self._send_error(send, *refusal)
            return
        if method in WITH_BODY and "content-length" not in headers:
            # A body of unknown length (chunked) is read here, so that its size is decided before the app.
            buffered = await self._buffer(receive)
            if buffered is None:
                await self._send_error(send, *_json_error(PayloadTooLarge()))
                return
            receive = buffered
        receive = self._limited(receive, send)
        no_store = not path.startswith("/static/") and path not in CACHEABLE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                names = {k.lower() for k, _ in raw}
                raw += [(k, v) for k, v in self.headers if k not in names]
                if no_store:
                    raw = [(k, v) for k, v in raw if k.lower() != b"cache-control"]
                    raw.append((b"cache-control", b"no-store"))
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except _BodyTooLarge:
            await self._send_error(send, *_json_error(PayloadTooLarge()))

    def _refusal(
        self, path: str, method: str, headers: dict[str, str], is_api: bool
    ) -> tuple[int, bytes] | None:
        length = headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > MAX_BODY
            except ValueError:
                return _json_error(MalformedRequest(N_("Content-Length is not a number.")))
            if too_big:
                return _json_error(PayloadTooLarge())
        if method in STATE_CHANGING and path not in NO_COOKIE_AUTH and is_cross_site(headers, self.origin):
            return _json_error(CrossSiteRequest())
        if is_api and method in WITH_BODY:
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return _json_error(UnsupportedMediaType())
        return None

    def _limited(self, receive: Receive, send: Send) -> Receive:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise _BodyTooLarge()
            return message

        return limited_receive

    async def _buffer(self, receive: Receive) -> Receive | None:
        """The whole body, replayed to the app; None when it is over the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return replay(b"".join(chunks), receive)

    async def _send_error(self, send: Send, status: int, body: bytes) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _Once:
    """A warning written once per worker process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = False

    def claim(self) -> bool:
        with self._lock:
            if self.done:
                return False
            self.done = True
            return True


_untrusted_forwarding = _Once()


def is_trusted_peer(peer: str, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _warn_untrusted_forwarding(
    request: Request,
    peer: str,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    noted: Callable[[str], None] | None,
) -> None:
    """H17: X-Forwarded-For from a peer that is not a trusted proxy is ignored, and said once per worker."""
    if "x-forwarded-for" not in request.headers or is_trusted_peer(peer, trusted):
        return
    if not _untrusted_forwarding.claim():
        return
    if noted is not None:
        noted(peer)  # for `twostep check-config`
    if trusted:
        why = f"{peer} is not in TWOSTEP_TRUSTED_PROXIES"
    else:
        why = "TWOSTEP_TRUSTED_PROXIES is not set"
    log.warning(
        "A request from %s carries X-Forwarded-For, which is ignored because %s. If twostep runs behind a "
        "reverse proxy, set TWOSTEP_TRUSTED_PROXIES to the proxy's address: otherwise every client has the "
        "proxy's address and the per-address limits apply to all clients together. "
        "(This warning is written once per worker.)",
        peer,
        why,
    )


def client_address(
    request: Request,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    *,
    untrusted_forwarding_noted: Callable[[str], None] | None = None,
) -> str:
    """The peer address, or the right-most untrusted X-Forwarded-For hop when the peer is a trusted proxy.

    X-Forwarded-For from an untrusted peer is ignored; the first time in a worker it is logged (H17) and
    ``untrusted_forwarding_noted`` is told the peer.
    """
    peer = request.client.host if request.client else "unknown"
    _warn_untrusted_forwarding(request, peer, trusted, untrusted_forwarding_noted)
    if not trusted:
        return peer
    chain = [peer]
    # Every header line: a client's own line ahead of the proxy's must not hide the proxy's hops.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    chain = [*hops, peer]
    for hop in reversed(chain):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return hop[:64]
        if not any(ip in net for net in trusted):
            return str(ip)
    return chain[0][:64]


def csrf_token(key: bytes, session_token: str) -> str:
    """A synchronizer token bound to the session (changes with it), for the HTML forms (SEC-52)."""
    return hmac.new(key, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, session_token: str | None, sent: str | None) -> bool:
    if not session_token or not sent:
        return False
    return _same(csrf_token(key, session_token), sent)


def presession_csrf_token(key: bytes, presession: str) -> str:
    """The token of a form shown before any session (sign in, sign up), bound to the pre-session cookie
    (H14); a different message from a session's token, so that neither stands for the other."""
    return hmac.new(key, b"csrf-presession:" + presession.encode(), hashlib.sha256).hexdigest()


def presession_csrf_ok(key: bytes, presession: str | None, sent: str | None) -> bool:
    if not presession or not sent:
        return False
    return _same(presession_csrf_token(key, presession), sent)


def _same(expected: str, sent: str) -> bool:
    # compare_digest refuses str with non-ASCII characters (a TypeError, a 500): compare bytes.
    return hmac.compare_digest(expected.encode(), sent.encode("utf-8", "surrogatepass"))
