"""The language menu of every page: POST /language saves the choice and goes back to the page (issue 19).

Before signing in the choice is a cookie; signed in, it is also stored with the account, so that the pages
on another device and the e-mails use it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep import i18n
from twostep.services import account
from twostep.web.deps import ctx_of, state
from twostep.web.pages.common import PageRoute, check_csrf, redirect, safe_next, signed_in_or_none
from twostep.web.pages.forms import FormStr

router = APIRouter(route_class=PageRoute, include_in_schema=False)

LANGUAGE_PATH = "/language"
COOKIE_SECONDS = 365 * 24 * 3600


@router.post(LANGUAGE_PATH)
def choose_language(
    request: Request, language: FormStr = "", next: FormStr = "", csrf: FormStr = ""
) -> Response:
    check_csrf(request, csrf, session_required=False)
    back = safe_next(request, next, "/")
    if not back.startswith("/"):
        back = "/"  # the menu goes back to a page of this site only
    if language not in i18n.LANGUAGES:
        return redirect(back)
    session = signed_in_or_none(request)
    if session is not None:
        account.set_language(ctx_of(request), session, language)
    response = redirect(back)
    response.set_cookie(
        i18n.COOKIE,
        language,
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=state(request).cookies.secure,
        path="/",
    )
    return response
