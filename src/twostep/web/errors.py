"""Errors to HTTP in one place: ``{"error": code, "message": sentence}`` and the status of docs/api.md."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from twostep.core import errors as e

log = logging.getLogger("twostep.web")

STATUS: dict[type[e.TwostepError], int] = {
    e.InvalidRequest: 422,
    e.InvalidCredentials: 401,
    e.NotSignedIn: 401,
    e.NoPendingLogin: 401,
    e.InvalidEnrollmentCode: 400,
    e.InvalidCode: 401,
    e.PasskeyRegistrationRejected: 400,
    e.PasskeyRejected: 401,
    e.TooManyAttempts: 429,
    e.VerifyAccessRequired: 403,
    e.CrossSiteRequest: 403,
    e.UsernameTaken: 409,
    e.NameTaken: 409,
    e.WeakPassword: 422,
    e.TwoFactorNotEnabled: 409,
    e.EnrollmentExpired: 410,
    e.NotFound: 404,
    e.UnsupportedMediaType: 415,
    e.PayloadTooLarge: 413,
    e.Busy: 503,
}


def status_of(exc: e.TwostepError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def error_response(exc: e.TwostepError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, e.TooManyAttempts | e.Busy):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(
        error_body(exc.code, exc.message, **exc.extra()), status_code=status_of(exc), headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "The request is not valid."
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    kind = str(first.get("type", ""))
    if kind.startswith("json"):
        return "The body is not valid JSON."
    if kind == "missing":
        return f"The field '{where}' is required." if where else "A JSON body is required."
    if where:
        return f"The field '{where}' is not valid: {first.get('msg', 'invalid value')}."
    return "The body must be a JSON object of the documented shape."


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the contract's shape; never a stack trace."""

    @app.exception_handler(e.TwostepError)
    async def _twostep(_request: Request, exc: e.TwostepError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse(error_body("invalid_request", _validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            body = error_body("not_found", "Not found.")
        elif exc.status_code == 405:
            body = error_body("method_not_allowed", "This method is not allowed here.")
        elif exc.status_code == 400:
            # FastAPI's body reader: bytes that are not UTF-8, JSON nested too deeply, ...
            return JSONResponse(error_body("invalid_request", "The body is not valid JSON."), status_code=422)
        else:
            body = error_body("http_error", str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "Something went wrong on our side."), status_code=500
        )
