"""Forward authentication: may this browser reach this application? (docs/api.md "Protecting applications").

One session read (``authenticate``), the rules in memory (``twostep.core.access``), and an answer the proxy
acts on: 200 with ``Remote-*`` headers, 401 with the login URL, 403 (with the two-step-required page for a
``two_factor`` rule). It never changes state beyond the session's once-a-minute last-seen time, never sets a
cookie, never answers 500 for anything a request can carry.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from twostep.core.access import Decision, Subject
from twostep.core.errors import AccessDenied, NotSignedIn, TwoFactorRequired, TwostepError
from twostep.services.sessions import Caller, caller_of, look_up_async, settle
from twostep.web.api.fast import FastPath
from twostep.web.api.schemas import Error
from twostep.web.deps import state, token_of
from twostep.web.errors import error_response
from twostep.web.language import choose
from twostep.web.observe import request_id_of
from twostep.web.security import Scope, Send

router = APIRouter()

# An original URL longer than this is not carried to the login page (its `next` falls back to the default).
MAX_ORIGINAL: Final = 2048
# Printable US-ASCII but "%": what a header value may carry as it is (an e-mail address's local part may hold
# any of it); everything else is percent-encoded, so that "%" always starts an escape.
_HEADER_SAFE: Final = "".join(c for c in string.printable if c not in string.whitespace and c != "%")


@dataclass(frozen=True, slots=True)
class Original:
    """The request the proxy asks about."""

    url: str  # absolute, as the browser asked for it ("" when unknown or too long)
    host: str
    path: str  # the path with its query
    method: str


def _first(value: str | None) -> str:
    """The first of a comma-separated header value (a chain of proxies), trimmed."""
    return (value or "").split(",", 1)[0].strip()


def original_request(request: Request) -> Original:
    """The original request of ``request`` (``original_of``)."""
    return original_of(request.headers, state(request).ctx.origin, request.method)


def original_of(headers: Mapping[str, str], origin_url: str, method: str) -> Original:
    """From ``X-Original-URL`` (nginx), else ``X-Forwarded-Proto``/``-Host``/``-Uri``/``-Method`` (Caddy,
    Traefik), else the origin's host and ``/``. Raises: nothing."""
    method = _first(headers.get("x-forwarded-method") or headers.get("x-original-method")) or method
    method = method.upper()[:16]
    original_url = headers.get("x-original-url", "").strip()
    if original_url:
        try:
            parts = urlsplit(original_url)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme.lower() in ("http", "https") and parts.netloc:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            return Original(_bounded(original_url), parts.netloc, path, method)
    origin = urlsplit(origin_url)
    host = _first(headers.get("x-forwarded-host"))
    if not host:
        url = f"{origin.scheme}://{origin.netloc}/"
        return Original(url, origin.netloc, "/", method)
    proto = _first(headers.get("x-forwarded-proto")).lower()
    if proto not in ("http", "https"):
        proto = origin.scheme
    uri = headers.get("x-forwarded-uri", "").strip() or "/"
    if not uri.startswith("/"):
        uri = "/" + uri
    return Original(_bounded(f"{proto}://{host}{uri}"), host, uri, method)


def _bounded(url: str) -> str:
    return url if len(url) <= MAX_ORIGINAL else ""


def encoded(value: str) -> str:
    """``value`` percent-encoded whole (UTF-8; a header's bytes as they came: Starlette reads them as
    latin-1), so that a query with ``&`` comes back whole as one ``next``."""
    return quote(value.encode("latin-1", errors="replace"), safe="")


def page_url(request: Request, path: str, original: Original) -> str:
    """``<origin><path>?next=<original URL, percent-encoded>`` (without ``next`` when it is unknown)."""
    origin = state(request).ctx.origin
    return f"{origin}{path}?next={encoded(original.url)}" if original.url else f"{origin}{path}"


def remote_user(username: str) -> str:
    """The username as a header value (H05): US-ASCII usernames as they are; any other character
    percent-encoded as UTF-8 (RFC 3986). A username never contains "%", so the value is unambiguous:
    one without "%" is the username itself, and percent-decoding (not form-decoding: "+" stays "+") any
    value gives it back. The raw form of a non-ASCII username is never sent."""
    if _PLAIN.fullmatch(username):
        return username  # what quote() would give back unchanged, without its work
    return quote(username, safe="@+")


# What quote(..., safe="@+") leaves as it is.
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.~@+-]*")


def remote_headers(caller: Caller) -> dict[str, str]:
    """``Remote-User``, ``Remote-Groups`` (comma-separated, each encoded as ``Remote-User`` is) and
    ``Remote-Email`` (only a verified address, else empty; any character outside printable US-ASCII, and
    "%", percent-encoded as UTF-8)."""
    # Remote-Email is always sent, empty when not known: Caddy 2.6 copies an absent header as the text of its
    # placeholder ("{http.reverse_proxy.header.Remote-Email}"); nginx passes an empty one as no header.
    return {
        "Remote-User": remote_user(caller.username),
        "Remote-Groups": ",".join(remote_user(group) for group in caller.groups),
        "Remote-Email": quote(caller.email or "", safe=_HEADER_SAFE),
    }


def _wants_redirect(request: Request, original: Original) -> bool:
    """``?redirect=1`` answers 302 only to what a browser loads as a page: a GET or HEAD that accepts HTML."""
    if request.query_params.get("redirect") not in ("1", "true"):
        return False
    return original.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "").lower()


def _refusal(request: Request, original: Original, exc: TwostepError, location: str | None) -> Response:
    if location is not None and _wants_redirect(request, original):
        return Response(status_code=302, headers={"Location": location})
    response = error_response(exc)
    if location is not None:
        response.headers["Location"] = location
    return response


def _subject(caller: Caller | None) -> Subject | None:
    if caller is None:
        return None
    return Subject(
        username=caller.username,
        groups=frozenset(caller.groups),
        signed_in_with_second_factor=caller.used_second_factor,
        account_has_second_factor=caller.account_has_second_factor,
        trusted_browser=caller.trusted_browser,
    )


@router.get(
    "/forward-auth",
    tags=["forward authentication"],
    responses={
        200: {"description": "Allowed; Remote-User, Remote-Groups and (when verified) Remote-Email"},
        302: {"description": "With ?redirect=1, for a browser's page load: to the login or two-step page"},
        401: {"model": Error, "description": "Not signed in; Location is the login URL"},
        403: {"model": Error, "description": "Signed in, not allowed (Location: the two-step page)"},
    },
)
async def get_forward_auth(request: Request) -> Response:
    """For nginx auth_request, Caddy forward_auth and Traefik ForwardAuth (docs/api.md "The answers").

    A session without a second factor of an account that has one is not signed in (H04, in look_up).
    The hottest path of a deployment: its common answer is given by ``AllowedFastPath`` before FastAPI; the
    one read runs in the event loop (SQLite: a WAL read never waits for the writer; PostgreSQL: psycopg's
    asyncio interface), the write owed about once a minute per session in the thread pool.
    """
    return await answer(request)


async def answer(request: Request) -> Response:
    """The answer of forward authentication to ``request`` (the route's)."""
    original = original_request(request)
    ctx = state(request).ctx
    token = token_of(request)
    lookup = await look_up_async(ctx, token)
    if lookup.owes is not None:
        await run_in_threadpool(settle, ctx, lookup)
    caller = None if lookup.session is None else Caller.of(lookup.session)
    decision = state(request).access.decide(
        host=original.host, path=original.path, method=original.method, subject=_subject(caller)
    )
    if decision is Decision.ALLOW:
        return Response(status_code=200, headers=remote_headers(caller) if caller is not None else {})
    if decision in (Decision.SIGN_IN, Decision.SECOND_FACTOR_REQUIRED):
        return _refusal(request, original, NotSignedIn(), page_url(request, "/login", original))
    if decision is Decision.SET_UP_SECOND_FACTOR:
        location = page_url(request, "/two-step-required", original)
        return _refusal(request, original, TwoFactorRequired(), location)
    return _refusal(request, original, AccessDenied(), None)


FORWARD_AUTH_PATH: Final = "/api/v1/forward-auth"


class AllowedFastPath(FastPath):
    """The common answer of forward authentication, given before FastAPI (issue 13, F1): the route is called
    for every request to every protected application, so a signed-in session that a rule allows, with no
    write owed, is answered here, in the event loop, from one read on the driver itself (no thread
    hand-off, no SQLAlchemy execution, no routing, no middleware stack), with the same headers the
    middleware would add (the guard's security headers and ``no-store``, ``Content-Language``,
    ``X-Request-Id``), counted in the metrics and logged at DEBUG (``observe.access_level``). Everything else
    (no session, a refusal, the once-a-minute last-seen write, a request with a body, the database away)
    declines (``False``) and goes through the whole application to the route, which answers it.
    """

    extra_headers = ((b"content-length", b"0"),)  # the answer has no body

    async def __call__(self, scope: Scope, send: Send) -> bool:
        started = time.perf_counter()
        # One pass over the headers (the first of a repeated one, as Starlette's Headers.get gives it).
        headers: dict[str, str] = {}
        for key, value in reversed(scope["headers"]):
            headers[key.decode("latin-1")] = value.decode("latin-1")
        if "content-length" in headers or "transfer-encoding" in headers:
            return False
        web = self.web
        cookie = headers.get("cookie", "")
        token = web.cookies.read_header(cookie)
        if token is None:
            return False
        try:
            caller = await caller_of(web.ctx, token)
        except TwostepError:
            return False
        if caller is None:
            return False
        method: str = scope["method"]
        original = original_of(headers, web.ctx.origin, method)
        decision = web.access.decide(
            host=original.host, path=original.path, method=original.method, subject=_subject(caller)
        )
        if decision is not Decision.ALLOW:
            return False
        language = caller.language or choose(
            cookie, headers.get("accept-language", ""), self.default_language
        )
        rid = request_id_of(scope, web.trusted_proxies)
        raw = [(name.encode(), value.encode("latin-1")) for name, value in remote_headers(caller).items()]
        await self.send_answer(
            scope,
            send,
            path=FORWARD_AUTH_PATH,
            status=200,
            headers=raw,
            body=b"",
            language=language,
            request_id=rid,
            started=started,
        )
        return True
