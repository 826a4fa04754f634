"""Account security of docs/api.md: password change, sessions, the security log."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.services import account, email, sessions, trusted_browsers
from twostep.web import trusted
from twostep.web.api.schemas import (
    ChangePasswordIn,
    EmailIn,
    EventsOut,
    SessionsOut,
    TokenIn,
    TrustedBrowsersOut,
)
from twostep.web.deps import SignedIn, client_of, ctx_of

router = APIRouter(tags=["account security"])


@router.post("/password", status_code=204, response_class=Response)
def post_password(body: ChangePasswordIn, request: Request, session: SignedIn) -> None:
    account.change_password(
        ctx_of(request),
        session,
        current_password=body.current_password,
        new_password=body.new_password,
        client=client_of(request),
    )


@router.get("/sessions", response_model=SessionsOut)
def get_sessions(request: Request, session: SignedIn) -> dict[str, object]:
    return {"sessions": sessions.list_sessions(ctx_of(request), session)}


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response)
def delete_session(session_id: str, request: Request, session: SignedIn) -> None:
    sessions.end_session(ctx_of(request), session, session_id, client_of(request))


@router.delete("/sessions", status_code=204, response_class=Response)
def delete_other_sessions(request: Request, session: SignedIn) -> None:
    sessions.end_other_sessions(ctx_of(request), session, client_of(request))


@router.get("/security-events", response_model=EventsOut)
def get_security_events(request: Request, session: SignedIn) -> dict[str, object]:
    return {"events": account.security_log(ctx_of(request), session)}


@router.get("/trusted-browsers", response_model=TrustedBrowsersOut)
def get_trusted_browsers(request: Request, session: SignedIn) -> dict[str, object]:
    listed = trusted_browsers.list_trusted(ctx_of(request), session, cookie=trusted.trusted_of(request))
    return {"trusted_browsers": listed}


@router.delete("/trusted-browsers/{browser_id}", status_code=204, response_class=Response)
def delete_trusted_browser(browser_id: str, request: Request, session: SignedIn) -> None:
    trusted_browsers.revoke(ctx_of(request), session, browser_id, client_of(request))


@router.delete("/trusted-browsers", status_code=204, response_class=Response)
def delete_trusted_browsers(request: Request, session: SignedIn) -> None:
    trusted_browsers.revoke_every(ctx_of(request), session, client_of(request))


@router.post("/email", status_code=204, response_class=Response)
def post_email(body: EmailIn, request: Request, session: SignedIn) -> None:
    """A new e-mail address (verify access): unverified until the link sent to it is followed; the former
    address is told."""
    email.change_email(ctx_of(request), session, email=body.email, client=client_of(request))


@router.post("/verify-email", status_code=204, response_class=Response)
def post_verify_email(body: TokenIn, request: Request, session: SignedIn) -> None:
    """Follow an e-mail verification link of the signed-in account: ``token`` is the link's ``?token=``;
    single use, 24 hours. (The link's page, /verify-email, needs no session.)"""
    email.verify(ctx_of(request), token=body.token, client=client_of(request), account_id=session.account_id)
