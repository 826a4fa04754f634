"""What every page shares: templates, the CSRF check, safe `?next=`, redirects and errors as pages."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from twostep import i18n
from twostep.core.errors import (
    AccountLocked,
    Busy,
    InvalidCode,
    NotSignedIn,
    TooManyAttempts,
    TwostepError,
    VerifyAccessRequired,
)
from twostep.i18n import N_, ngettext
from twostep.i18n import gettext as _
from twostep.services.sessions import CurrentSession, authenticate
from twostep.web.deps import ctx_of, state, token_of, use_language_of
from twostep.web.errors import error_headers, status_of
from twostep.web.security import csrf_ok, csrf_token, presession_csrf_ok, presession_csrf_token

TEMPLATES = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
    )
)
# The request's catalogue (twostep.i18n.CURRENT, set by web.language.LocaleMiddleware); new-style gettext:
# `_("Hello %(name)s", name=n)` formats after translating, and escapes what it is given.
TEMPLATES.env.policies["ext.i18n.trimmed"] = True  # {% trans %} blocks: whitespace and line breaks folded
TEMPLATES.env.install_gettext_callables(  # type: ignore[attr-defined]  # jinja2.ext.i18n adds it
    i18n.gettext, i18n.ngettext, newstyle=True, pgettext=i18n.pgettext, npgettext=i18n.npgettext
)

HOME = "/settings/two-step"
N_("the administrator of this site")  # the default of the setting operator_contact (config.py), translated
# The sentences of static/ui.js and static/webauthn.js: each page gives them, translated, in <body data-text>.
JS_MESSAGES = (
    N_("Show"),
    N_("Hide"),
    N_("Show password"),
    N_("Hide password"),
    N_("Copied. Paste them somewhere safe."),
    N_("Copying did not work here: select the codes and copy them."),
    N_("The passkey dialog was closed or timed out, so nothing happened. You can try again."),
    N_("This passkey is already registered to your account. Choose another one."),
    N_("The browser refused the passkey on this address."),
    N_("The passkey request was cancelled. You can try again."),
    N_("Something went wrong with the passkey. Try again."),
    N_("The server refused to start the passkey request."),
    N_("Starting…"),
    N_("Waiting for your passkey… Follow the instructions in your browser's dialog."),
    N_("No passkey was chosen."),
    N_("Checking your passkey…"),
)
METHODS = ("totp", "passkey", "recovery_code")


class Redirect(Exception):
    """Raised by a page route to answer with a 303 to ``url`` (a same-origin path)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class CsrfRefused(Exception):
    """The form did not carry this session's synchronizer token (SEC-52)."""


def safe_next(request: Request, value: str | None, default: str = HOME) -> str:
    """A same-origin path, or an absolute URL this deployment allows (``core.next.NextHosts``: the origin;
    with cookie_domain its domain, subdomains and the rules' domains), else ``default``: never `//host`,
    `/\\host` or another site (no open redirect)."""
    return state(request).next_hosts.safe(value, default)


def url_with(path: str, **params: str | None) -> str:
    """``path`` with the non-empty ``params`` as a query string."""
    query = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(query)}" if query else path


def parse_methods(raw: str | None) -> list[str]:
    """The second-step methods of a redirect query (not a secret: the kinds the account has)."""
    wanted = set((raw or "").split(","))
    return [m for m in METHODS if m in wanted]


def second_step_context(request: Request, methods: str, next: str) -> dict[str, object]:
    """What a second-step page (sign-in or verify access) shows: its methods and where it returns to."""
    kinds = parse_methods(methods)
    return {"methods": kinds, "methods_raw": ",".join(kinds), "next": safe_next(request, next)}


def redirect(url: str, token: str | None = None, request: Request | None = None) -> RedirectResponse:
    """A 303 to ``url``; sets the session cookie when a service returned a new token (step up)."""
    response = RedirectResponse(url, status_code=303)
    if token is not None and request is not None:
        state(request).cookies.set(response, token)
    return response


def redirect_unless_verified(request: Request, session: CurrentSession, return_to: str) -> None:
    """Send the user to verify access first, then back to ``return_to`` (SEC-43). The pages' counterpart of
    ``services.sessions.require_verified``, which raises VerifyAccessRequired for the API instead.

    Raises:
        Redirect: access was not verified in the last 10 minutes.
    """
    if not session.access_verified(state(request).ctx.now()):
        raise Redirect(url_with("/verify-access", next=return_to))


def signed_in_or_none(request: Request) -> CurrentSession | None:
    cached = getattr(request.state, "twostep_session", None)
    if isinstance(cached, CurrentSession):
        return cached
    try:
        session = authenticate(state(request).ctx, token_of(request))
    except NotSignedIn:
        return None
    request.state.twostep_session = session
    use_language_of(session)
    return session


def csrf_for(request: Request, token: str | None = None) -> str:
    """The synchronizer token of the current (or just issued) session cookie.

    Without a session, the token of the pre-session cookie (H14), which ``render`` sets when it is new.
    """
    ws = state(request)
    value = token if token is not None else token_of(request)
    if value:
        return csrf_token(ws.csrf_key, value)
    presession = ws.cookies.read_presession(request)
    if presession is None:
        presession = getattr(request.state, "twostep_new_presession", None) or ws.cookies.new_presession()
        request.state.twostep_new_presession = presession
    return presession_csrf_token(ws.csrf_key, presession)


def check_csrf(request: Request, sent: str, *, session_required: bool = True) -> None:
    """Every state-changing form: the token must match the cookie it was rendered for.

    The forms of a session carry its token. The pre-session forms (sign up, sign in: ``session_required``
    off) may carry instead the token of the pre-session cookie; without either the post is refused (H14).
    """
    ws = state(request)
    if csrf_ok(ws.csrf_key, token_of(request), sent or None):
        return
    if not session_required and presession_csrf_ok(ws.csrf_key, ws.cookies.read_presession(request), sent):
        return
    raise CsrfRefused()


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    token: str | None = None,
    user: CurrentSession | None = None,
) -> HTMLResponse:
    """Render a page; ``token`` is a cookie value issued by this very request (set it and bind CSRF to it)."""
    user = user if user is not None else getattr(request.state, "twostep_session", None)
    if user is not None:
        use_language_of(user)
    language = i18n.current()
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    ctx: dict[str, Any] = {
        "csrf": csrf_for(request, token),
        "user": user,
        "path": request.url.path,
        "here": here,
        "lang": "en" if language == i18n.PSEUDO else language,
        "dir": i18n.text_direction(language),
        "language": language,
        "languages": i18n.LANGUAGES,
        "js_text": {message: _(message) for message in JS_MESSAGES},
        "signup_open": ctx_of(request).signup == "open",
        # The default contact is a phrase of the catalogue; one the operator wrote stays as written.
        "operator_contact": _(ctx_of(request).operator_contact),
    }
    ctx.update(context or {})
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status_code)
    if token is not None:
        state(request).cookies.set(response, token)
    presession = getattr(request.state, "twostep_new_presession", None)
    if presession is not None:
        state(request).cookies.set_presession(response, presession)
    return response


def message_of(exc: TwostepError) -> str:
    """The sentence for a person; a throttle says how long to wait, in words."""
    if isinstance(exc, TooManyAttempts):
        return _("Too many attempts. For your security, wait %(wait)s and try again.") % {
            "wait": wait_words(exc.retry_after)
        }
    return exc.text(_)


WRONG_CODE = N_("That code is not right. Enter the current code from your authenticator app.")
WRONG_RECOVERY_CODE = N_("That recovery code is not right, or it was already used.")


def code_error(exc: TwostepError, *, recovery: bool = False) -> str:
    """The sentence for a refused second factor, the same at sign-in and at verify access."""
    if isinstance(exc, InvalidCode):
        return _(WRONG_RECOVERY_CODE if recovery else WRONG_CODE)
    return message_of(exc)


def wait_words(seconds: int) -> str:
    if seconds < 60:
        return ngettext("%(num)d second", "%(num)d seconds", seconds) % {"num": seconds}
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return ngettext("about %(num)d minute", "about %(num)d minutes", minutes) % {"num": minutes}
    hours = math.ceil(minutes / 60)
    return ngettext("about %(num)d hour", "about %(num)d hours", hours) % {"num": hours}


def skew_words(seconds: int) -> str:
    """'Your device's clock seems about 3 minutes behind.' from clock_skew_seconds (positive: ahead)."""
    size = abs(seconds)
    if size < 60:
        amount = ngettext("%(num)d second", "%(num)d seconds", size) % {"num": size}
    else:
        minutes = round(size / 60)
        amount = ngettext("%(num)d minute", "%(num)d minutes", minutes) % {"num": minutes}
    if seconds > 0:
        sentence = _("Your device's clock seems about %(amount)s ahead.")
    else:
        sentence = _("Your device's clock seems about %(amount)s behind.")
    return sentence % {"amount": amount} + " " + _("Set it to update automatically, then enter the new code.")


def when(value: datetime | None) -> str:
    """A time in the request's language, with its time zone named (Babel)."""
    if value is None:
        return _("Never")
    return i18n.format_datetime(value)


def datetime_attribute(value: datetime | None) -> str:
    """The ``datetime`` attribute of a ``<time>`` element (ISO 8601, UTC as "Z"); "" for no time."""
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def browser_name(user_agent: str) -> str:
    """'Chrome on Linux' from a User-Agent header; the raw value (shortened) when nothing is recognised."""
    ua = user_agent or ""
    browsers = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"))
    browser = next((name for token, name in browsers if token in ua), None)
    if browser is None and "Safari/" in ua:
        browser = "Safari"
    systems = (
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    )
    system = next((name for token, name in systems if token in ua), None)
    if browser and system:
        return _("%(browser)s on %(system)s") % {"browser": browser, "system": system}
    if browser or system:
        return browser or system or ""
    return ua[:60] or _("Unknown browser")


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["browser"] = browser_name
TEMPLATES.env.filters["datetime_attribute"] = datetime_attribute


# Where the 403 page sends a refused form back to: its own page, reloaded with a fresh token.
FORM_PAGES = {"/login": "/login", "/login/passkey": "/login", "/signup": "/signup"}


def _forbidden(request: Request) -> HTMLResponse:
    back = FORM_PAGES.get(request.url.path, "/")
    return render(request, "forbidden.html", {"back": back}, status_code=403)


def _invalid_form(request: Request) -> HTMLResponse:
    back = FORM_PAGES.get(request.url.path, "/")
    message = _("The form could not be read: a field is too long or contains characters that cannot be used.")
    return render(request, "error.html", {"message": message, "back": back}, status_code=422)


class PageRoute(APIRoute):
    """Turns a page's ``Redirect``, sign-in and CSRF failures into redirects and pages instead of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except Redirect as exc:
                return RedirectResponse(exc.url, status_code=303)
            except CsrfRefused:
                return _forbidden(request)
            except RequestValidationError:
                return _invalid_form(request)
            except NotSignedIn:
                back = request.url.path if request.method == "GET" else None
                if back is not None and request.url.query:
                    back = f"{back}?{request.url.query}"
                return RedirectResponse(url_with("/login", next=back), status_code=303)
            except VerifyAccessRequired:
                back = request.url.path if request.method == "GET" else HOME
                return RedirectResponse(url_with("/verify-access", next=back), status_code=303)
            except AccountLocked:
                return render(request, "locked.html", status_code=403)
            except Busy as exc:
                wait = wait_words(exc.retry_after)
                response = render(request, "busy.html", {"wait": wait}, status_code=503)
                response.headers["Retry-After"] = str(exc.retry_after)
                return response
            except TwostepError as exc:
                response = render(
                    request, "error.html", {"message": message_of(exc)}, status_code=status_of(exc)
                )
                response.headers.update(error_headers(exc))  # Retry-After of a 503 unavailable
                return response

        return handler
