"""Every request observed once: a request id, one access log line, its latency in the metrics.

The request id is the ``X-Request-Id`` a trusted proxy (``trusted_proxies``) sent, when it is a short token,
or a new one (32 hex digits: the worker's 64 random bits and a counter); it is returned in the response's
``X-Request-Id`` and carried by every log line written while the request is served (``request_id``). The
route is the template that matched (``/api/v1/factors/{factor_id}``), never the path; ``unmatched`` when none
did.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter
from starlette.routing import Match, Mount, Route

from twostep.web import metrics
from twostep.web.security import ASGIApp, Message, Receive, Scope, Send, is_trusted_peer

access_log = logging.getLogger("twostep.access")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "twostep_request_id", default=None
)

REQUEST_ID_HEADER = b"x-request-id"
# What a proxy's request id may be: a token, so that it cannot forge a log line or carry a secret's length.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes answered normally are logged at DEBUG: they arrive every few seconds (access_level).
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"

Networks = list[IPv4Network | IPv6Network]


def _plain_route(scope: Scope) -> object | None:
    """The application's own Starlette routes and mounts (the OpenAPI document, /static), which FastAPI's
    router does not name in the scope: matched again, only for a request no APIRoute answered."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        if isinstance(route, Route | Mount) and route.matches(scope)[0] is Match.FULL:
            return route
    return None


def route_of(scope: Scope, original: Scope | None = None) -> str:
    """The template of the route that answered, with the prefix of the routers it is included in: a route
    of a router included under ``/api/v1`` knows only its own part (``/factors/{factor_id}``), so the prefix
    is the path's segments before the template's own. A mount (``/static``) is named by its prefix."""
    original = scope if original is None else original  # the scope as it came, before routing changed it
    route = scope.get("route")
    if route is None:
        route = _plain_route(original)
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template.startswith("/"):
        return UNMATCHED
    if isinstance(route, Mount) or ":path}" in template:
        return template
    segments = str(original.get("path", "")).split("/")
    own = template.count("/")
    if own >= len(segments):
        return template
    return "/".join(segments[: len(segments) - own]) + template


def request_id_of(scope: Scope, trusted: Networks) -> str:
    client = scope.get("client")
    # The same decision as X-Forwarded-For's (web/security.py): only the socket's peer is a proxy.
    if trusted and client and is_trusted_peer(str(client[0]), trusted):
        for name, value in scope.get("headers", []):
            if name.lower() == REQUEST_ID_HEADER:
                sent = str(value.decode("latin-1")).strip()
                if _REQUEST_ID.fullmatch(sent):
                    return sent
                break
    return new_request_id()


# A new request id: this process's 64 random bits and a counter, 32 hex digits, unique without a system call
# at every request (forward authentication answers thousands a second; a forked child draws its own bits).
_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count()


def _new_prefix() -> None:
    global _id_prefix
    _id_prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    return f"{_id_prefix}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


class ObserveMiddleware:
    """Pure ASGI, outermost: sees every response, also the ones the guards refuse."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Networks,
        client_address: Callable[[Scope], str],
        record: Callable[[str, str, int, float], None] = metrics.request_done,
    ) -> None:
        self.app = app
        self.trusted = trusted_proxies
        self.client_address = client_address
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        original = dict(scope)
        rid = request_id_of(scope, self.trusted)
        token = request_id_var.set(rid)
        status = 500
        header = (REQUEST_ID_HEADER, rid.encode())

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - started
            route = route_of(scope, original)
            method = str(scope.get("method", "GET"))
            self.record(route, method, status, seconds)
            self._log(scope, route, method, status, seconds)
            request_id_var.reset(token)

    def _log(self, scope: Scope, route: str, method: str, status: int, seconds: float) -> None:
        log_access(scope, route, method, status, seconds, lambda: self.client_address(scope))


# Forward authentication's allowed answers are logged at DEBUG too: the proxy asks once for every request
# to every protected application, and logs that request itself; its refusals stay at INFO.
FORWARD_AUTH = "/api/v1/forward-auth"


def access_level(route: str, status: int) -> int:
    """The level of a request's access line: DEBUG for probes, scrapes and allowed forward authentication
    answered normally, INFO for everything else."""
    if (route in QUIET_ROUTES and status < 400) or (route == FORWARD_AUTH and status == 200):
        return logging.DEBUG
    return logging.INFO


def log_access(
    scope: Scope, route: str, method: str, status: int, seconds: float, client: Callable[[], str]
) -> None:
    """The one access line of a request, when its level is enabled (``client`` is asked only then)."""
    level = access_level(route, status)
    if not access_log.isEnabledFor(level):
        return
    latency_ms = round(seconds * 1000, 1)
    path = str(scope.get("path", ""))
    access_log.log(
        level,
        "%s %s %d %.1f ms",
        method,
        path,
        status,
        latency_ms,
        extra={
            "route": route,
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": latency_ms,
            "client": client(),
        },
    )


class RequestIdFilter(logging.Filter):
    """Gives every log record the id of the request being served (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, request_id, and the fields a
    line adds (route, status, latency_ms of an access line; event, account_id, client_ip of a security
    event). uvicorn's coloured copy of its message is left out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "color_message"])
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")
        super().__init__("{levelname}{name}{message}", *args, style="{", **kwargs)
