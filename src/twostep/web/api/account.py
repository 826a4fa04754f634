"""Account security of docs/api.md: password change, sessions, the security log."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.services import account, sessions, trusted_browsers
from twostep.web import trusted
from twostep.web.api.schemas import ChangePasswordIn, EventsOut, SessionsOut, TrustedBrowsersOut
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
