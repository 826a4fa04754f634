"""The two-step-required page: where forward authentication sends an account without a second factor that a
``two_factor`` rule asks for one (docs/api.md "The answers"). It says why, leads to adding a factor (the
settings pages, carrying ``next``), and then back to the application."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from twostep.core.access import Decision, Subject
from twostep.web.deps import SignedIn, state
from twostep.web.pages.common import PageRoute, render, safe_next, url_with
from twostep.web.pages.settings import APP_PATH, PASSKEY_PATH

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TWO_STEP_REQUIRED_PATH = "/two-step-required"


def reachable_applications(request: Request, session: SignedIn) -> list[str]:
    """The exact host names of the access rules that this account may open now (their "/"), in rule order."""
    ws = state(request)
    subject = Subject(
        username=session.username,
        groups=frozenset(session.groups),
        signed_in_with_second_factor=session.used_second_factor,
        account_has_second_factor=session.account_has_second_factor,
        trusted_browser=session.trusted_browser is not None,
    )
    hosts: list[str] = []
    for rule in ws.access.rules:
        for pattern in rule.domains:
            if pattern.wildcard or pattern.host in hosts:
                continue
            decision = ws.access.decide(host=pattern.host, path="/", method="GET", subject=subject)
            if decision is Decision.ALLOW:
                hosts.append(pattern.host)
    return hosts


@router.get(TWO_STEP_REQUIRED_PATH)
def two_step_required_page(request: Request, session: SignedIn, next: str = "") -> Response:
    then = safe_next(request, next, "")
    app = ""
    if then.startswith(("http://", "https://")):
        app = urlsplit(then).hostname or ""
    context = {
        "ready": session.used_second_factor,
        "next": then,
        "app": app,
        "app_href": url_with(APP_PATH, next=then),
        "passkey_href": url_with(PASSKEY_PATH, next=then),
        "apps": reachable_applications(request, session),
    }
    return render(request, "two_step_required.html", context, user=session)
