"""The session cookie: opaque, HttpOnly, SameSite=Lax, Path=/; Secure and __Host- on https (SEC-49)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response


@dataclass(frozen=True)
class CookiePolicy:
    secure: bool

    @property
    def name(self) -> str:
        return "__Host-twostep_session" if self.secure else "twostep_session"

    def read(self, request: Request) -> str | None:
        value = request.cookies.get(self.name)
        if value is None or len(value) > 128:
            return None
        return value

    def set(self, response: Response, token: str) -> None:
        response.set_cookie(self.name, token, httponly=True, samesite="lax", secure=self.secure, path="/")

    def clear(self, response: Response) -> None:
        response.delete_cookie(self.name, path="/", secure=self.secure, httponly=True, samesite="lax")

    # A passwordless passkey ceremony has no session yet: its challenge is bound to this cookie instead.
    @property
    def ceremony_name(self) -> str:
        return "__Host-twostep_ceremony" if self.secure else "twostep_ceremony"

    def read_ceremony(self, request: Request) -> str | None:
        value = request.cookies.get(self.ceremony_name)
        if value is None or len(value) > 128:
            return None
        return value

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
