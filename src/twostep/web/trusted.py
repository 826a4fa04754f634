"""The trusted-browser cookie (docs/api.md "Trusted browsers"): set when a second step says "trust_browser",
read at the next password step. Random tokens only (their SHA-256 is stored); HttpOnly, SameSite=Lax,
Path=/, ``Secure`` and the ``__Host-`` prefix whenever the origin is https; it lasts as long as the trust.
Not cleared at sign-out: it remembers the browser, not a session, and signs nothing in by itself.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from twostep.services.trusted_browsers import MAX_COOKIE_CHARS
from twostep.web.deps import ctx_of, state


def _name(request: Request) -> str:
    return "__Host-twostep_trusted" if state(request).cookies.secure else "twostep_trusted"


def trusted_of(request: Request) -> str | None:
    value = request.cookies.get(_name(request))
    if value is None or len(value) > MAX_COOKIE_CHARS:
        return None
    return value


def remember(request: Request, response: Response, value: str | None) -> None:
    if value is None:
        return
    secure = state(request).cookies.secure
    max_age = ctx_of(request).trusted_browser_days * 24 * 3600
    response.set_cookie(
        _name(request), value, max_age=max_age, httponly=True, samesite="lax", secure=secure, path="/"
    )
