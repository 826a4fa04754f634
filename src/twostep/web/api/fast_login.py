"""The second sign-in steps before FastAPI (issue 16, FL1/FL2): ``POST /api/v1/login/totp`` and
``POST /api/v1/login/passkey``, the hot paths of every sign-in with a second factor.

FastAPI's routing, dependency injection and validation, and the three middleware layers around them, cost
more per request than the step's eleven statements, its AES-GCM and its HMACs (bench/README.md, "The floor").
``SignInStepFastPath`` answers the common form of the request here, in the event loop, and runs the very same
service (``sign_in.totp_step``, ``sign_in.passkey_step``) with the same inputs; what it answers is what the
route would have answered: the same status, body, cookie and headers (the guard's security headers and
``no-store``, ``Content-Language``, ``X-Request-Id``), counted in the metrics and logged as the middleware
would.

It declines (and the request goes through the whole application, which answers it) whenever the request is not
the plain form: a query string (``?next=``), a repeated header, a body of unknown or too large a length, not
JSON, cross-site, a body that is not ``{"code": "<text>"}`` (or ``{"credential": <object or text>}``),
optionally with ``"trust_browser": false`` (unknown fields are ignored, as ``In`` does), or one that asks to
trust the browser. The guard's and the route's checks are therefore never skipped: a request they would refuse
is handed to them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from twostep import i18n
from twostep.core.errors import TwostepError
from twostep.i18n import N_
from twostep.services import sign_in
from twostep.services.context import Client
from twostep.services.sign_in import LoginResult
from twostep.web.api.fast import FastPath
from twostep.web.deps import WebState
from twostep.web.errors import error_body, error_response
from twostep.web.inputs import has_control, json_without_controls
from twostep.web.language import choose
from twostep.web.observe import request_id_of, request_id_var
from twostep.web.security import MAX_BODY, Receive, Scope, Send, client_address, is_cross_site, replay

log = logging.getLogger("twostep.web")

LOGIN_TOTP_PATH: Final = "/api/v1/login/totp"
LOGIN_PASSKEY_PATH: Final = "/api/v1/login/passkey"
# The body of the route's answer (LoginOut with only its status set, no ``next``).
_SIGNED_IN: Final = bytes(JSONResponse({"status": "signed_in"}).body)
# Its headers, as Starlette's Response makes them (the session cookie follows).
_SIGNED_IN_HEADERS: Final = tuple(Response(_SIGNED_IN, media_type="application/json").raw_headers)
# schemas.Short
_CODE_MAX: Final = 256


def _object_of(body: bytes) -> dict[str, Any] | None:
    """The JSON object of ``body`` asking for no trusted browser, or None for anything the route would
    answer differently (an error, or a browser to trust)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply: the route says which
        return None
    if not isinstance(data, dict) or data.get("trust_browser", False) is not False:
        return None
    return data


def _code_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """``SecondStepCodeIn``'s ``code``: a string of at most 256 characters, no control character."""
    code = data.get("code")
    if not isinstance(code, str) or len(code) > _CODE_MAX or has_control(code):
        return None
    return {"code": code}


def _credential_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """``SecondStepPasskeyIn``'s ``credential``: an object or a string, no control character at any depth."""
    credential = data.get("credential")
    if not isinstance(credential, dict | str):
        return None
    try:
        json_without_controls(credential)
    except ValueError:
        return None
    return {"credential": credential}


def _totp(web: WebState, cookie: str, client: Client, args: dict[str, Any]) -> LoginResult:
    return sign_in.totp_step(web.ctx, token=web.cookies.read_header(cookie), code=args["code"], client=client)


def _passkey(web: WebState, cookie: str, client: Client, args: dict[str, Any]) -> LoginResult:
    return sign_in.passkey_step(
        web.ctx,
        token=web.cookies.read_header(cookie),
        ceremony_key=web.cookies.read_ceremony_header(cookie),
        credential=args["credential"],
        client=client,
    )


@dataclass(frozen=True)
class Step:
    """A sign-in step answered before FastAPI: its path, what it takes of the body (None: hand the request
    to the route), and its service with the request's session cookies and client."""

    path: str
    parse: Callable[[dict[str, Any]], dict[str, Any] | None]
    service: Callable[[WebState, str, Client, dict[str, Any]], LoginResult]


TOTP: Final = Step(LOGIN_TOTP_PATH, _code_of, _totp)
PASSKEY: Final = Step(LOGIN_PASSKEY_PATH, _credential_of, _passkey)


class SignInStepFastPath(FastPath):
    """A sign-in step (``TOTP``, ``PASSKEY``) before the middleware stack (see the module's text). Called
    with the request; returns None when it answered, else the ``receive`` the application must read the body
    from."""

    def __init__(
        self,
        web: WebState,
        step: Step,
        *,
        security: list[tuple[bytes, bytes]],
        record: Callable[[str, str, int, float], None],
        default_language: str,
    ) -> None:
        super().__init__(web, security=security, record=record, default_language=default_language)
        self.step = step
        self.in_loop = web.ctx.db.dialect == "sqlite"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        started = time.perf_counter()
        raw_headers = scope["headers"]
        headers: dict[str, str] = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in raw_headers
        }
        if scope["query_string"] or len(headers) != len(raw_headers) or "transfer-encoding" in headers:
            return receive
        length = headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            return receive
        if headers.get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
            return receive
        web = self.web
        if is_cross_site(headers, web.ctx.origin):
            return receive
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away: there is nobody to answer (as the route's body read)
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                return replay(body, receive)
            if not message.get("more_body", False):
                break
        data = _object_of(body)
        args = None if data is None else self.step.parse(data)
        if args is None:
            return replay(body, receive)
        await self._answer(scope, send, headers, args, started)
        return None

    async def _answer(
        self, scope: Scope, send: Send, headers: dict[str, str], args: dict[str, Any], started: float
    ) -> None:
        web = self.web
        cookie = headers.get("cookie", "")
        chosen = i18n.Chosen(choose(cookie, headers.get("accept-language", ""), self.default_language))
        language = i18n.CURRENT.set(chosen)
        rid = request_id_of(scope, web.trusted_proxies)
        rid_token = request_id_var.set(rid)
        try:
            client = Client(
                ip=client_address(
                    Request(scope),
                    web.trusted_proxies,
                    untrusted_forwarding_noted=web.untrusted_forwarding_noted,
                ),
                user_agent=headers.get("user-agent", "")[:512],
            )
            step = partial(self.step.service, web, cookie, client, args)
            refused: Response | None = None
            try:
                result = step() if self.in_loop else await run_in_threadpool(step)
            except TwostepError as exc:
                refused = error_response(exc)
            except Exception as exc:  # the application's last handler (web/errors.py): never a stack trace
                log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
                refused = JSONResponse(
                    error_body("internal_error", N_("Something went wrong on our side.")), status_code=500
                )
            if refused is None:
                status, body = 200, _SIGNED_IN
                raw: list[Any] = [*_SIGNED_IN_HEADERS, web.cookies.set_header(result.token)]
            else:
                status, body = refused.status_code, bytes(refused.body)
                raw = list(refused.raw_headers)
            await self.send_answer(
                scope,
                send,
                path=self.step.path,
                status=status,
                headers=raw,
                body=body,
                language=chosen.language,
                request_id=rid,
                started=started,
            )
        finally:
            request_id_var.reset(rid_token)
            i18n.CURRENT.reset(language)
