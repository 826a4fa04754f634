"""Accounts, sign-in and its second steps, the session, verify access (docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.services import account, sign_in, verify_access
from twostep.services.sessions import logout
from twostep.services.sign_in import LoginResult
from twostep.services.verify_access import VerifyResult
from twostep.web import devices, trusted
from twostep.web.api.schemas import (
    AccountIn,
    AccountOut,
    CodeIn,
    Empty,
    LoginIn,
    LoginOut,
    PasswordIn,
    SecondStepCodeIn,
    SessionOut,
    VerifyOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of, run_service, state, token_of

router = APIRouter()

# Where a sign-in goes when its `next` is not allowed: the pages' default (web.pages.common.HOME).
DEFAULT_NEXT = "/settings/two-step"


def signed_in(request: Request, response: Response, result: LoginResult) -> dict[str, object]:
    """The body of a sign-in step (LoginOut); the new session cookie, and the device cookie (H07), are set on
    ``response``. With ``?next=`` the body says where to go once signed in (docs/api.md "Several domains")."""
    body: dict[str, object] = {"status": result.status}
    if result.status == "second_factor_required":
        body["methods"] = result.methods
    if result.recovery_codes_remaining is not None:
        body["recovery_codes_remaining"] = result.recovery_codes_remaining
    wanted = request.query_params.get("next")
    if result.status == "signed_in" and wanted is not None:
        # The same rule as the pages: a path or an allowed absolute URL, else the default page.
        body["next"] = state(request).next_hosts.safe(wanted, DEFAULT_NEXT)
    state(request).cookies.set(response, result.token)
    devices.remember(request, response, result.device)
    trusted.remember(request, response, result.trusted)
    return body


def verified(request: Request, response: Response, result: VerifyResult) -> dict[str, object]:
    """The body of a verify-access step (VerifyOut); the rotated session cookie is set on ``response``."""
    body: dict[str, object] = {"status": result.status}
    if result.status == "verified":
        body["verified_until"] = result.verified_until
    else:
        body["methods"] = result.methods
    if result.recovery_codes_remaining is not None:
        body["recovery_codes_remaining"] = result.recovery_codes_remaining
    state(request).cookies.set(response, result.token)
    return body


@router.post("/accounts", status_code=201, response_model=AccountOut)
def create_account(body: AccountIn, request: Request) -> dict[str, object]:
    username = account.sign_up(
        ctx_of(request),
        username=body.username,
        password=body.password,
        email=body.email,
        client=client_of(request),
        invite=body.invite,
    )
    return {"username": username}


@router.post("/login", response_model=LoginOut, response_model_exclude_unset=True)
def post_login(body: LoginIn, request: Request, response: Response) -> dict[str, object]:
    result = sign_in.password_step(
        ctx_of(request),
        username=body.username,
        password=body.password,
        client=client_of(request),
        current_token=token_of(request),
        device=devices.device_of(request),
        trusted=trusted.trusted_of(request),
    )
    return signed_in(request, response, result)


@router.post("/login/totp", response_model=LoginOut, response_model_exclude_unset=True)
async def post_login_totp(body: SecondStepCodeIn, request: Request, response: Response) -> dict[str, object]:
    result = await run_service(
        request,
        sign_in.totp_step,
        ctx=ctx_of(request),
        token=token_of(request),
        code=body.code,
        client=client_of(request),
        trust_browser=body.trust_browser,
        trusted=trusted.trusted_of(request),
    )
    return signed_in(request, response, result)


@router.post("/login/recovery-code", response_model=LoginOut, response_model_exclude_unset=True)
def post_login_recovery(body: SecondStepCodeIn, request: Request, response: Response) -> dict[str, object]:
    result = sign_in.recovery_step(
        ctx_of(request),
        token=token_of(request),
        code=body.code,
        client=client_of(request),
        trust_browser=body.trust_browser,
        trusted=trusted.trusted_of(request),
    )
    return signed_in(request, response, result)


@router.post("/logout", status_code=204, response_class=Response)
def post_logout(request: Request, response: Response, body: Empty | None = None) -> None:
    logout(ctx_of(request), token_of(request))
    state(request).cookies.clear(response)


@router.get("/session", response_model=SessionOut)
def get_session(session: SignedIn) -> dict[str, object]:
    return {
        "username": session.username,
        "signed_in_at": session.signed_in_at,
        "second_factor": session.second_factor,
        "access_verified_until": session.verified_until,
        "groups": list(session.groups),
        "email_verified": session.email_verified,
        "trusted_browser": session.trusted_browser is not None,
        "passkey_upgrade_until": session.passkey_upgrade_until,
    }


@router.post("/verify-access", response_model=VerifyOut, response_model_exclude_unset=True)
def post_verify_access(
    body: PasswordIn, request: Request, response: Response, session: SignedIn
) -> dict[str, object]:
    result = verify_access.with_password(
        ctx_of(request), session, password=body.password, client=client_of(request)
    )
    return verified(request, response, result)


@router.post("/verify-access/totp", response_model=VerifyOut, response_model_exclude_unset=True)
def post_verify_access_totp(
    body: CodeIn, request: Request, response: Response, session: SignedIn
) -> dict[str, object]:
    result = verify_access.with_totp(ctx_of(request), session, code=body.code, client=client_of(request))
    return verified(request, response, result)


@router.post("/verify-access/recovery-code", response_model=VerifyOut, response_model_exclude_unset=True)
def post_verify_access_recovery(
    body: CodeIn, request: Request, response: Response, session: SignedIn
) -> dict[str, object]:
    result = verify_access.with_recovery_code(
        ctx_of(request), session, code=body.code, client=client_of(request)
    )
    return verified(request, response, result)
