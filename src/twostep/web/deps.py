"""What routes get from the application: the service context, the cookie, the client, the session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from twostep import i18n
from twostep.core.access import AccessControl
from twostep.core.next import NextHosts
from twostep.services.context import Client, Context
from twostep.services.sessions import CurrentSession, authenticate
from twostep.web.security import client_address
from twostep.web.sessions import CookiePolicy


@dataclass
class WebState:
    ctx: Context
    cookies: CookiePolicy
    trusted_proxies: list[IPv4Network | IPv6Network]
    csrf_key: bytes
    # Told the peer when a worker first sees X-Forwarded-For from an untrusted peer (for check-config).
    untrusted_forwarding_noted: Callable[[str], None] | None = None
    # Who may read GET /metrics (the socket's peer); nobody when empty.
    metrics_from: list[IPv4Network | IPv6Network] = field(default_factory=list)
    # The access rules of forward authentication (docs/api.md "Access rules"); none: one_factor everywhere.
    access: AccessControl = field(default_factory=AccessControl)
    # Where `next` may lead after a sign-in besides this origin (docs/api.md "Several domains").
    next_hosts: NextHosts = field(default_factory=NextHosts)


def state(request: Request) -> WebState:
    ws = request.app.state.web
    assert isinstance(ws, WebState)
    return ws


def ctx_of(request: Request) -> Context:
    return state(request).ctx


T = TypeVar("T")


async def run_service(request: Request, service: Callable[..., T], *args: Any, **arguments: Any) -> T:
    """A service call from an ``async`` route: on SQLite in the event loop itself (its writes are serialised
    anyway, and the hand-off to a thread and back costs more than the statements: bench/README.md, FL·hop),
    on PostgreSQL in the thread pool (its transactions wait on the network)."""
    if ctx_of(request).db.dialect == "sqlite":
        return service(*args, **arguments)
    return await run_in_threadpool(partial(service, *args, **arguments))


def client_of(request: Request) -> Client:
    ws = state(request)
    ip = client_address(request, ws.trusted_proxies, untrusted_forwarding_noted=ws.untrusted_forwarding_noted)
    return Client(ip=ip, user_agent=request.headers.get("user-agent", "")[:512])


def token_of(request: Request) -> str | None:
    return state(request).cookies.read(request)


def current_session(request: Request) -> CurrentSession:
    """Dependency: the signed-in session; a pending sign-in is not signed in (SEC-01)."""
    cached = getattr(request.state, "twostep_session", None)
    if isinstance(cached, CurrentSession):
        return cached
    session = authenticate(ctx_of(request), token_of(request))
    request.state.twostep_session = session
    use_language_of(session)
    return session


def use_language_of(session: CurrentSession) -> None:
    """The account's stored language, once the session is known, wins over the browser's (issue 19)."""
    chosen = i18n.CURRENT.get()
    if chosen is not None:
        chosen.use_account_preference(session.language)


SignedIn = Annotated[CurrentSession, Depends(current_session)]
