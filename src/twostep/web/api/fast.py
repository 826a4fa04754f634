"""What the requests answered before FastAPI share (``fast_login.SignInStepFastPath``,
``protect.AllowedFastPath``): the headers the middleware stack would add, the answer, the metrics and the
access log. Each path decides what it answers; this is how it is sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request

from twostep.web.deps import WebState
from twostep.web.observe import log_access
from twostep.web.security import Scope, Send, client_address


class FastPath:
    """A path answered before FastAPI: ``static`` are the guard's security headers and ``no-store`` (and a
    subclass's ``extra_headers``), ``record`` counts the answer in the metrics."""

    extra_headers: Sequence[tuple[bytes, bytes]] = ()

    def __init__(
        self,
        web: WebState,
        *,
        security: list[tuple[bytes, bytes]],
        record: Callable[[str, str, int, float], None],
        default_language: str,
    ) -> None:
        self.web = web
        self.static = [*security, (b"cache-control", b"no-store"), *self.extra_headers]
        self.record = record
        self.default_language = default_language

    async def send_answer(
        self,
        scope: Scope,
        send: Send,
        *,
        path: str,
        status: int,
        headers: list[Any],
        body: bytes,
        language: str,
        request_id: str,
        started: float,
    ) -> None:
        """The answer (``headers``, its ``Content-Language`` and ``X-Request-Id``, then ``static``), counted
        in the metrics and written to the access log as the application's own answers are."""
        method: str = scope["method"]
        headers = [
            *headers,
            (b"content-language", language.encode()),
            (b"x-request-id", request_id.encode()),
            *self.static,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        self.record(path, method, status, seconds)
        web = self.web
        log_access(
            scope, path, method, status, seconds, lambda: client_address(Request(scope), web.trusted_proxies)
        )
