"""Accounts, sign-in and its second steps, the session, verify access (docs/api.md)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from twostep.core.errors import NotSignedIn
from twostep.services import account, sign_in, verify_access
from twostep.services.sessions import logout
from twostep.services.sign_in import LoginResult
from twostep.services.verify_access import VerifyResult
from twostep.web import devices
from twostep.web.api.schemas import (
    AccountIn,
    AccountOut,
    CodeIn,
    Empty,
    Error,
    LoginIn,
    LoginOut,
    PasswordIn,
    SessionOut,
    VerifyOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of, current_session, state, token_of
from twostep.web.errors import error_response

router = APIRouter()


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def login_response(request: Request, result: LoginResult) -> JSONResponse:
    body: dict[str, object] = {"status": result.status}
    if result.status == "second_factor_required":
        body["methods"] = result.methods
    if result.recovery_codes_remaining is not None:
        body["recovery_codes_remaining"] = result.recovery_codes_remaining
    response = JSONResponse(body)
    state(request).cookies.set(response, result.token)
    devices.remember(request, response, result.device)
    return response


def verify_response(request: Request, result: VerifyResult) -> JSONResponse:
    body: dict[str, object] = {"status": result.status}
    if result.status == "verified":
        body["verified_until"] = iso(result.verified_until)
    else:
        body["methods"] = result.methods
    if result.recovery_codes_remaining is not None:
        body["recovery_codes_remaining"] = result.recovery_codes_remaining
    response = JSONResponse(body)
    state(request).cookies.set(response, result.token)
    return response


@router.post("/accounts", status_code=201, response_model=AccountOut)
def create_account(body: AccountIn, request: Request) -> JSONResponse:
    username = account.sign_up(
        ctx_of(request),
        username=body.username,
        password=body.password,
        email=body.email,
        client=client_of(request),
    )
    return JSONResponse({"username": username}, status_code=201)


@router.post("/login", response_model=LoginOut)
def post_login(body: LoginIn, request: Request) -> JSONResponse:
    result = sign_in.password_step(
        ctx_of(request),
        username=body.username,
        password=body.password,
        client=client_of(request),
        current_token=token_of(request),
        device=devices.device_of(request),
    )
    return login_response(request, result)


@router.post("/login/totp", response_model=LoginOut)
def post_login_totp(body: CodeIn, request: Request) -> JSONResponse:
    result = sign_in.totp_step(
        ctx_of(request), token=token_of(request), code=body.code, client=client_of(request)
    )
    return login_response(request, result)


@router.post("/login/recovery-code", response_model=LoginOut)
def post_login_recovery(body: CodeIn, request: Request) -> JSONResponse:
    result = sign_in.recovery_step(
        ctx_of(request), token=token_of(request), code=body.code, client=client_of(request)
    )
    return login_response(request, result)


@router.post("/logout", status_code=204, response_class=Response)
def post_logout(request: Request, body: Empty | None = None) -> Response:
    logout(ctx_of(request), token_of(request))
    response = Response(status_code=204)
    state(request).cookies.clear(response)
    return response


@router.get("/session", response_model=SessionOut)
def get_session(session: SignedIn) -> dict[str, object]:
    return {
        "username": session.username,
        "signed_in_at": iso(session.signed_in_at),
        "second_factor": session.second_factor,
        "access_verified_until": iso(session.verified_until),
    }


@router.post("/verify-access", response_model=VerifyOut)
def post_verify_access(body: PasswordIn, request: Request, session: SignedIn) -> JSONResponse:
    result = verify_access.with_password(
        ctx_of(request), session, password=body.password, client=client_of(request)
    )
    return verify_response(request, result)


@router.post("/verify-access/totp", response_model=VerifyOut)
def post_verify_access_totp(body: CodeIn, request: Request, session: SignedIn) -> JSONResponse:
    result = verify_access.with_totp(ctx_of(request), session, code=body.code, client=client_of(request))
    return verify_response(request, result)


@router.post("/verify-access/recovery-code", response_model=VerifyOut)
def post_verify_access_recovery(body: CodeIn, request: Request, session: SignedIn) -> JSONResponse:
    result = verify_access.with_recovery_code(
        ctx_of(request), session, code=body.code, client=client_of(request)
    )
    return verify_response(request, result)


@router.get(
    "/forward-auth",
    tags=["forward authentication"],
    responses={
        200: {"description": "Signed in; the user is in the Remote-User header"},
        401: {"model": Error},
    },
)
def get_forward_auth(request: Request) -> Response:
    """For nginx auth_request, Caddy forward_auth and Traefik ForwardAuth: 200 + Remote-User, or 401.

    A session without a second factor of an account that has one is not signed in (H04, in authenticate).
    """
    try:
        session = current_session(request)
    except NotSignedIn as exc:
        return error_response(exc)
    return Response(status_code=200, headers={"Remote-User": remote_user(session.username)})


def remote_user(username: str) -> str:
    """The username as a header value (H05): US-ASCII usernames as they are; any other character
    percent-encoded as UTF-8 (RFC 3986). A username never contains "%", so the value is unambiguous:
    one without "%" is the username itself, and percent-decoding (not form-decoding: "+" stays "+") any
    value gives it back. The raw form of a non-ASCII username is never sent."""
    return quote(username, safe="@+")
