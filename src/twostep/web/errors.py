"""Errors to HTTP in one place: ``{"error": code, "message": sentence}`` and the status of docs/api.md.

``STATUS`` is the one table from an error to its HTTP status: the JSON API answers with it, the pages with
the same status when a request fails on an error, the guard middleware with it for the requests it refuses,
and the OpenAPI document lists each status it uses, described by ``STATUS_DOCS``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from twostep import i18n
from twostep.core import errors as e
from twostep.i18n import N_

log = logging.getLogger("twostep.web")

STATUS: dict[type[e.TwostepError], int] = {
    e.InvalidRequest: 422,
    e.MalformedRequest: 400,
    e.InvalidCredentials: 401,
    e.NotSignedIn: 401,
    e.NoPendingLogin: 401,
    e.InvalidEnrollmentCode: 400,
    e.InvalidCode: 401,
    e.PasskeyRegistrationRejected: 400,
    e.UnknownPasskey: 401,
    e.PasskeyRejected: 401,
    e.TooManyAttempts: 429,
    e.VerifyAccessRequired: 403,
    e.CrossSiteRequest: 403,
    e.AccessDenied: 403,
    e.TwoFactorRequired: 403,
    e.UsernameTaken: 409,
    e.NameTaken: 409,
    e.WeakPassword: 422,
    e.TwoFactorNotEnabled: 409,
    e.EnrollmentExpired: 410,
    e.NotFound: 404,
    e.UnsupportedMediaType: 415,
    e.PayloadTooLarge: 413,
    e.Busy: 503,
    e.Unavailable: 503,
    e.SignupClosed: 403,
    e.AccountLocked: 403,
    e.LinkInvalid: 410,
}

# What the OpenAPI document says of each status of STATUS (a test checks that they are the same statuses).
STATUS_DOCS: dict[int, str] = {
    400: "A code, passkey or request refused while adding a factor, or a request that cannot be read",
    401: "Not signed in, no pending sign-in, or a credential, code or passkey refused",
    403: "Verify access required, a cross-site request, sign-up closed, the account is locked, or (forward "
    "authentication) access refused",
    404: "Not found",
    409: "A conflict: name or username taken, two-step verification not on",
    410: "The setup of an authenticator app expired, or an e-mail link was used or expired",
    413: "Body over 64 KiB",
    415: "Not JSON",
    422: "Invalid request or weak password",
    429: "Too many attempts; see Retry-After",
    503: "Busy (too many password checks at once in this worker) or unavailable (the database cannot be "
    "reached); see Retry-After",
}


def status_of(exc: e.TwostepError) -> int:
    """The HTTP status of ``exc``: that of its class, or of the nearest base class in STATUS."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    """The contract's error shape; ``message`` (a sentence marked N_) in the request's language (issue 19),
    ``code`` unchanged."""
    return {"error": code, "message": i18n.gettext(message), **extra}


def error_body_of(exc: e.TwostepError) -> dict[str, object]:
    """The body of ``exc``: its message translated, then its parameters put in (``TwostepError.text``)."""
    return {"error": exc.code, "message": exc.text(i18n.gettext), **exc.extra()}


def error_headers(exc: e.TwostepError) -> dict[str, str]:
    if isinstance(exc, e.TooManyAttempts | e.Busy | e.Unavailable):
        return {"Retry-After": str(exc.retry_after)}
    return {}


def error_response(exc: e.TwostepError) -> JSONResponse:
    return JSONResponse(
        error_body_of(exc),
        status_code=status_of(exc),
        headers=error_headers(exc),
    )


def _validation_error(exc: RequestValidationError) -> e.InvalidRequest:
    errs = exc.errors()
    if not errs:
        return e.InvalidRequest(N_("The request is not valid."))
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    kind = str(first.get("type", ""))
    if kind.startswith("json"):
        return e.InvalidRequest(N_("The body is not valid JSON."))
    if kind == "missing":
        if not where:
            return e.InvalidRequest(N_("A JSON body is required."))
        return e.InvalidRequest(N_("The field '%(field)s' is required."), params={"field": where})
    if where:
        # pydantic's own sentence stays English (it names a rule of the schema, not something to read aloud)
        return e.InvalidRequest(
            N_("The field '%(field)s' is not valid: %(reason)s."),
            params={"field": where, "reason": first.get("msg", "invalid value")},
        )
    return e.InvalidRequest(N_("The body must be a JSON object of the documented shape."))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the contract's shape; never a stack trace."""

    @app.exception_handler(e.TwostepError)
    async def _twostep(_request: Request, exc: e.TwostepError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(e.NotFound())
        if exc.status_code == 405:
            body = error_body("method_not_allowed", N_("This method is not allowed here."))
        elif exc.status_code == 400:
            # FastAPI's body reader: bytes that are not UTF-8, JSON nested too deeply, ...
            return error_response(e.InvalidRequest(N_("The body is not valid JSON.")))
        else:
            body = error_body("http_error", str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(
            error_body("internal_error", N_("Something went wrong on our side.")), status_code=500
        )
