"""The session cookie: opaque, HttpOnly, SameSite=Lax, Path=/; Secure and __Host- on https (SEC-49);
with cookie_domain, Domain=<cookie_domain> and __Secure- on https."""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass

from starlette.requests import Request, cookie_parser
from starlette.responses import Response

# Every value twostep puts in a cookie is secrets.token_urlsafe(); anything else is not ours.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def _ours(value: str | None) -> str | None:
    return value if value is not None and _TOKEN.fullmatch(value) else None


@dataclass(frozen=True)
class CookiePolicy:
    secure: bool
    # cookie_domain (docs/api.md "Several domains"): the session cookie is sent to that domain and its
    # subdomains. A __Host- cookie cannot carry a Domain, so it is then __Secure- over https.
    domain: str | None = None

    @property
    def name(self) -> str:
        if self.domain is not None:
            return "__Secure-twostep_session" if self.secure else "twostep_session"
        return "__Host-twostep_session" if self.secure else "twostep_session"

    def read(self, request: Request) -> str | None:
        return _ours(request.cookies.get(self.name))

    def read_header(self, cookie_header: str) -> str | None:
        """``read`` from a ``Cookie`` header (forward authentication's fast path, without a Request)."""
        return _ours(cookie_parser(cookie_header).get(self.name)) if self.name in cookie_header else None

    def set(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.name, token, httponly=True, samesite="lax", secure=self.secure, path="/", domain=self.domain
        )

    def set_header(self, token: str) -> tuple[bytes, bytes]:
        """The ``Set-Cookie`` header ``set`` adds, as raw bytes, without building a cookie jar per request
        (the TOTP step's fast path, issue 16): Starlette's own header, made once, with ``token`` put in."""
        if _TOKEN.fullmatch(token) is None:
            raise ValueError("not a session token")
        before, after = _set_cookie_parts(self)
        return (b"set-cookie", before + token.encode() + after)

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            self.name, path="/", secure=self.secure, httponly=True, samesite="lax", domain=self.domain
        )

    # A passwordless passkey ceremony has no session yet: its challenge is bound to this cookie instead.
    @property
    def ceremony_name(self) -> str:
        return "__Host-twostep_ceremony" if self.secure else "twostep_ceremony"

    def read_ceremony(self, request: Request) -> str | None:
        return _ours(request.cookies.get(self.ceremony_name))

    def read_ceremony_header(self, cookie_header: str) -> str | None:
        """``read_ceremony`` from a ``Cookie`` header (the passkey step's fast path, without a Request)."""
        name = self.ceremony_name
        return _ours(cookie_parser(cookie_header).get(name)) if name in cookie_header else None

    def set_ceremony(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.ceremony_name,
            token,
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
            max_age=300,
        )

    # The sign-in and sign-up forms are shown before any session exists: their CSRF token is bound to this
    # random cookie instead (H14), so that another site cannot sign a browser in to the attacker's account.
    @property
    def presession_name(self) -> str:
        return "__Host-twostep_presession" if self.secure else "twostep_presession"

    def read_presession(self, request: Request) -> str | None:
        return _ours(request.cookies.get(self.presession_name))

    @staticmethod
    def new_presession() -> str:
        return secrets.token_urlsafe(32)

    def set_presession(self, response: Response, value: str) -> None:
        response.set_cookie(
            self.presession_name, value, httponly=True, samesite="strict", secure=self.secure, path="/"
        )


_PLACEHOLDER = "TWOSTEPxTOKENxPLACEHOLDER"


@functools.lru_cache(maxsize=8)
def _set_cookie_parts(policy: CookiePolicy) -> tuple[bytes, bytes]:
    """What comes before and after the value in the ``Set-Cookie`` header ``policy.set`` gives."""
    response = Response()
    policy.set(response, _PLACEHOLDER)
    header = next(value for name, value in response.raw_headers if name == b"set-cookie")
    before, after = header.split(_PLACEHOLDER.encode())
    return before, after
