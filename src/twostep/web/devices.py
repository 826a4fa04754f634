"""The device cookie (H07): set at each accepted password, read at the next password step.

HttpOnly, SameSite=Lax, Path=/, kept for a year and not cleared at sign-out (it remembers the browser,
not a session); ``Secure`` and the ``__Host-`` prefix whenever the origin is https.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from twostep.core.devices import MAX_COOKIE_CHARS
from twostep.web.deps import state

MAX_AGE = 365 * 24 * 3600


def _name(request: Request) -> str:
    return "__Host-twostep_device" if state(request).cookies.secure else "twostep_device"


def device_of(request: Request) -> str | None:
    value = request.cookies.get(_name(request))
    if value is None or len(value) > MAX_COOKIE_CHARS:
        return None
    return value


def remember(request: Request, response: Response, value: str | None) -> None:
    if value is None:
        return
    secure = state(request).cookies.secure
    response.set_cookie(
        _name(request), value, max_age=MAX_AGE, httponly=True, samesite="lax", secure=secure, path="/"
    )
