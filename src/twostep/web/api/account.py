"""Account security of docs/api.md: password change, sessions, the security log."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.services import account, sessions
from twostep.web.api.auth import iso
from twostep.web.api.schemas import ChangePasswordIn, EventsOut, SessionsOut
from twostep.web.deps import SignedIn, client_of, ctx_of

router = APIRouter()


@router.post("/password", status_code=204, response_class=Response, tags=["account security"])
def post_password(body: ChangePasswordIn, request: Request, session: SignedIn) -> Response:
    account.change_password(
        ctx_of(request),
        session,
        current_password=body.current_password,
        new_password=body.new_password,
        client=client_of(request),
    )
    return Response(status_code=204)


@router.get("/sessions", response_model=SessionsOut, tags=["account security"])
def get_sessions(request: Request, session: SignedIn) -> dict[str, object]:
    return {
        "sessions": [
            {
                "id": s.id,
                "current": s.current,
                "created_at": iso(s.created_at),
                "last_seen_at": iso(s.last_seen_at),
                "ip": s.ip,
                "user_agent": s.user_agent,
            }
            for s in sessions.list_sessions(ctx_of(request), session)
        ]
    }


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response, tags=["account security"])
def delete_session(session_id: str, request: Request, session: SignedIn) -> Response:
    sessions.end_session(ctx_of(request), session, session_id, client_of(request))
    return Response(status_code=204)


@router.delete("/sessions", status_code=204, response_class=Response, tags=["account security"])
def delete_other_sessions(request: Request, session: SignedIn) -> Response:
    sessions.end_other_sessions(ctx_of(request), session, client_of(request))
    return Response(status_code=204)


@router.get("/security-events", response_model=EventsOut, tags=["account security"])
def get_security_events(request: Request, session: SignedIn) -> dict[str, object]:
    return {
        "events": [
            {"type": e.type, "at": iso(e.at), "ip": e.ip, "user_agent": e.user_agent, "detail": e.detail}
            for e in account.security_log(ctx_of(request), session)
        ]
    }
