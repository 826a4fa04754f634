"""Passkey endpoints of docs/api.md: registration, sign-in (second step or passwordless), verify access."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from twostep.services import enrolment, sign_in, verify_access
from twostep.web.api.auth import verify_response
from twostep.web.api.factors import added_response
from twostep.web.api.schemas import (
    Empty,
    FactorAddedOut,
    LoginOut,
    PasskeyAssertionIn,
    PasskeyIn,
    PublicKeyOut,
    VerifyOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of, state, token_of

router = APIRouter()


@router.post("/factors/passkey/options", response_model=PublicKeyOut, tags=["second factors"])
def post_registration_options(
    request: Request, session: SignedIn, body: Empty | None = None
) -> dict[str, object]:
    return {"publicKey": enrolment.registration_options(ctx_of(request), session)}


@router.post("/factors/passkey", status_code=201, response_model=FactorAddedOut, tags=["second factors"])
def post_passkey(body: PasskeyIn, request: Request, session: SignedIn) -> JSONResponse:
    added = enrolment.register_passkey(
        ctx_of(request), session, name=body.name, credential=body.credential, client=client_of(request)
    )
    return added_response(added)


@router.post(
    "/login/passkey/options",
    response_model=PublicKeyOut,
    tags=["sign-in"],
)
def post_login_options(request: Request, body: Empty | None = None) -> JSONResponse:
    cookies = state(request).cookies
    ceremony = cookies.read_ceremony(request) or secrets.token_urlsafe(32)
    result = sign_in.passkey_options(
        ctx_of(request), token=token_of(request), ceremony_key=ceremony, client=client_of(request)
    )
    response = JSONResponse({"publicKey": result.options})
    if result.passwordless:
        cookies.set_ceremony(response, ceremony)
    return response


@router.post("/login/passkey", response_model=LoginOut, tags=["sign-in"])
def post_login_passkey(body: PasskeyAssertionIn, request: Request) -> JSONResponse:
    cookies = state(request).cookies
    result = sign_in.passkey_step(
        ctx_of(request),
        token=token_of(request),
        ceremony_key=cookies.read_ceremony(request),
        credential=body.credential,
        client=client_of(request),
    )
    response = JSONResponse({"status": "signed_in"})
    cookies.set(response, result.token)
    return response


@router.post(
    "/verify-access/passkey/options",
    response_model=PublicKeyOut,
    tags=["sign-in"],
)
def post_verify_options(request: Request, session: SignedIn, body: Empty | None = None) -> dict[str, object]:
    return {"publicKey": verify_access.passkey_options(ctx_of(request), session, client=client_of(request))}


@router.post(
    "/verify-access/passkey",
    response_model=VerifyOut,
    tags=["sign-in"],
)
def post_verify_passkey(body: PasskeyAssertionIn, request: Request, session: SignedIn) -> JSONResponse:
    result = verify_access.with_passkey(
        ctx_of(request), session, credential=body.credential, client=client_of(request)
    )
    return verify_response(request, result)
