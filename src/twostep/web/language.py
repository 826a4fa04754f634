"""The language of each request (twostep.i18n), and the language menu's endpoint.

``LocaleMiddleware`` chooses before anything else runs, so that even a request refused by the guard gets its
``message`` in the reader's language: the language cookie (the menu's choice), else ``Accept-Language``, else
the operator's ``default_language``. Once a signed-in session is known (web/deps, pages/common), the
account's stored preference replaces that choice. The API's error codes never change; only ``message`` does.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twostep import i18n


def choose(cookie_header: str, accept_language: str, default: str) -> str:
    """The language of a request before its session is known: cookie, Accept-Language, default."""
    if i18n.COOKIE not in cookie_header:
        return i18n.negotiate(accept_language) or default
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except Exception:
        jar = SimpleCookie()
    morsel = jar.get(i18n.COOKIE)
    if morsel is not None and i18n.is_language(morsel.value):
        return morsel.value
    return i18n.negotiate(accept_language) or default


class LocaleMiddleware:
    """Pure ASGI: sets ``i18n.CURRENT`` for the request and names its language in ``Content-Language``."""

    def __init__(self, app: ASGIApp, *, default_language: str) -> None:
        self.app = app
        self.default = self.language_or_source(default_language)

    @staticmethod
    def language_or_source(language: str) -> str:
        """The operator's ``default_language`` when it is one of ours, else the source language."""
        return language if language in i18n.LANGUAGES else i18n.SOURCE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = ""
        accept = ""
        for key, value in scope.get("headers", []):
            if key == b"cookie":
                cookie = (cookie + "; " if cookie else "") + value.decode("latin-1")
            elif key == b"accept-language":
                accept = value.decode("latin-1")
        chosen = i18n.Chosen(choose(cookie, accept, self.default))
        reset = i18n.CURRENT.set(chosen)

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                raw.append((b"content-language", chosen.language.encode()))
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, receive, send_with_language)
        finally:
            i18n.CURRENT.reset(reset)
