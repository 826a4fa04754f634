"""Passkey endpoints of docs/api.md: registration, sign-in (second step or passwordless), verify access."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response

from twostep.services import enrolment, sign_in, verify_access
from twostep.web import trusted
from twostep.web.api.auth import signed_in, verified
from twostep.web.api.factors import added_json
from twostep.web.api.schemas import (
    Empty,
    FactorAddedOut,
    LoginOut,
    PasskeyAssertionIn,
    PasskeyIn,
    PublicKeyOut,
    RegistrationOptionsIn,
    SecondStepPasskeyIn,
    VerifyOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of, run_service, state, token_of

router = APIRouter()


@router.post("/factors/passkey/options", response_model=PublicKeyOut, tags=["second factors"])
def post_registration_options(
    request: Request, session: SignedIn, body: RegistrationOptionsIn | None = None
) -> dict[str, object]:
    hint = body.authenticator if body is not None else None
    return {"publicKey": enrolment.registration_options(ctx_of(request), session, hint=hint)}


@router.post("/factors/passkey/automatic/options", response_model=PublicKeyOut, tags=["second factors"])
def post_automatic_options(
    request: Request, session: SignedIn, body: Empty | None = None
) -> dict[str, object]:
    return {"publicKey": enrolment.automatic_options(ctx_of(request), session)}


@router.post(
    "/factors/passkey/automatic",
    status_code=201,
    response_model=FactorAddedOut,
    response_model_exclude_unset=True,
    tags=["second factors"],
)
def post_automatic_passkey(
    body: PasskeyAssertionIn, request: Request, session: SignedIn
) -> dict[str, object]:
    added = enrolment.register_automatic(
        ctx_of(request), session, credential=body.credential, client=client_of(request)
    )
    return added_json(added)


@router.post(
    "/factors/passkey",
    status_code=201,
    response_model=FactorAddedOut,
    response_model_exclude_unset=True,
    tags=["second factors"],
)
def post_passkey(body: PasskeyIn, request: Request, session: SignedIn) -> dict[str, object]:
    added = enrolment.register_passkey(
        ctx_of(request), session, name=body.name, credential=body.credential, client=client_of(request)
    )
    return added_json(added)


@router.post("/login/passkey/options", response_model=PublicKeyOut, tags=["sign-in"])
def post_login_options(request: Request, response: Response, body: Empty | None = None) -> dict[str, object]:
    cookies = state(request).cookies
    ceremony = cookies.read_ceremony(request) or secrets.token_urlsafe(32)
    result = sign_in.passkey_options(
        ctx_of(request), token=token_of(request), ceremony_key=ceremony, client=client_of(request)
    )
    if result.passwordless:
        cookies.set_ceremony(response, ceremony)
    return {"publicKey": result.options}


@router.post("/login/passkey", response_model=LoginOut, response_model_exclude_unset=True, tags=["sign-in"])
async def post_login_passkey(
    body: SecondStepPasskeyIn, request: Request, response: Response
) -> dict[str, object]:
    result = await run_service(
        request,
        sign_in.passkey_step,
        ctx=ctx_of(request),
        token=token_of(request),
        ceremony_key=state(request).cookies.read_ceremony(request),
        credential=body.credential,
        client=client_of(request),
        trust_browser=body.trust_browser,
        trusted=trusted.trusted_of(request),
    )
    return signed_in(request, response, result)


@router.post("/verify-access/passkey/options", response_model=PublicKeyOut, tags=["sign-in"])
def post_verify_options(request: Request, session: SignedIn, body: Empty | None = None) -> dict[str, object]:
    return {"publicKey": verify_access.passkey_options(ctx_of(request), session, client=client_of(request))}


@router.post(
    "/verify-access/passkey", response_model=VerifyOut, response_model_exclude_unset=True, tags=["sign-in"]
)
def post_verify_passkey(
    body: PasskeyAssertionIn, request: Request, response: Response, session: SignedIn
) -> dict[str, object]:
    result = verify_access.with_passkey(
        ctx_of(request), session, credential=body.credential, client=client_of(request)
    )
    return verified(request, response, result)
