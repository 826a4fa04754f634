"""Pages: Preferences → Two-step verification, and every change to second factors and recovery codes."""

from __future__ import annotations

import base64
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from twostep.core.errors import (
    InvalidEnrollmentCode,
    NotFound,
    PasskeyRejected,
    TwoFactorNotEnabled,
    TwostepError,
)
from twostep.core.totp import format_secret_for_display
from twostep.i18n import N_
from twostep.i18n import gettext as _
from twostep.services import enrolment, factors
from twostep.services.enrolment import TotpEnrollment
from twostep.services.factors import FactorView
from twostep.services.sessions import CurrentSession
from twostep.web.deps import SignedIn, client_of, ctx_of, state
from twostep.web.pages.common import (
    HOME,
    PageRoute,
    check_csrf,
    message_of,
    redirect,
    redirect_unless_verified,
    render,
    safe_next,
    skew_words,
    url_with,
)
from twostep.web.pages.forms import CredentialField, FormStr, parse_credential

router = APIRouter(route_class=PageRoute, include_in_schema=False)

NOTICES = {
    "welcome": N_("Welcome! Your account is ready. Add a second factor to turn on two-step verification."),
    "app_added": N_("The authentication app was added."),
    "passkey_added": N_("The passkey was added."),
    "passkey_added_automatically": N_(
        "Your password manager saved a passkey for twostep. It now works as a "
        "second factor, and signing in with it needs no code."
    ),
    "renamed": N_("The name was changed."),
    "removed": N_("The second factor was removed."),
    "removed_last": N_("The second factor was removed. Two-step verification is now off."),
    "turned_off": N_("Two-step verification is off. Every second factor and recovery code was removed."),
    "sessions_ended": N_("Your other sessions were signed out."),
}
# After a factor goes, the user is offered to end the other sessions (SEC-46, SEC-47).
OFFER_END_SESSIONS = {"removed", "removed_last", "turned_off"}


def _factor(request: Request, session: CurrentSession, factor_id: str) -> FactorView:
    for factor in factors.overview(ctx_of(request), session).factors:
        if factor.id == factor_id:
            return factor
    raise NotFound()


@router.get(HOME)
def two_step_page(request: Request, session: SignedIn, done: str = "") -> Response:
    view = factors.overview(ctx_of(request), session)
    context = {
        "view": view,
        "notice": _(NOTICES[done]) if done in NOTICES else None,
        "offer_end_sessions": done in OFFER_END_SESSIONS,
        "recovery_banner": session.second_factor == "recovery_code" and done == "",
        # The Signal API (static/webauthn.js): after a sign-in or a removal, the password manager learns the
        # account's current passkeys.
        "accepted": factors.accepted_credentials(ctx_of(request), session),
        # The automatic passkey upgrade right after a password sign-in (static/webauthn.js), and otherwise a
        # prompt to add a passkey, until dismissed for 30 days.
        "upgrade": session.passkey_upgrade_until is not None
        and session.passkey_upgrade_until > ctx_of(request).now(),
        "passkey_prompt": not any(f.type == "passkey" for f in view.factors)
        and request.cookies.get(_prompt_cookie(request)) is None,
    }
    return render(request, "two_step.html", context, user=session)


def _prompt_cookie(request: Request) -> str:
    return "__Host-twostep_passkey_prompt" if state(request).cookies.secure else "twostep_passkey_prompt"


@router.post(HOME + "/passkey-prompt/dismiss")
def dismiss_passkey_prompt(request: Request, session: SignedIn, csrf: FormStr = "") -> Response:
    """ "Not now" on the prompt to add a passkey: not shown again in this browser for 30 days."""
    check_csrf(request, csrf)
    response = redirect(HOME)
    secure = state(request).cookies.secure
    response.set_cookie(
        _prompt_cookie(request),
        "dismissed",
        max_age=PROMPT_DISMISSED_DAYS * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    return response


PROMPT_DISMISSED_DAYS = 30


# ---------------------------------------------------------------------------------- authentication app

APP_PATH = HOME + "/app"


def _then(request: Request, next: str) -> str:
    """Where adding a factor returns to (the two-step-required page's application), or "" for the settings."""
    return safe_next(request, next, "")


@router.get(APP_PATH)
def app_name_page(request: Request, session: SignedIn, next: str = "") -> Response:
    then = _then(request, next)
    redirect_unless_verified(request, session, url_with(APP_PATH, next=then))
    return render(request, "app_name.html", {"name": _("Authenticator app"), "next": then}, user=session)


def _qr_context(enrollment: TotpEnrollment, name: str) -> dict[str, object]:
    qr = base64.b64encode(enrollment.qr_svg.encode()).decode()
    return {
        "enrollment_id": enrollment.enrollment_id,
        "name": name,
        "qr_src": f"data:image/svg+xml;base64,{qr}",
        "key_groups": format_secret_for_display(enrollment.secret),
    }


@router.post(APP_PATH)
def app_begin(
    request: Request, session: SignedIn, name: FormStr = "", next: FormStr = "", csrf: FormStr = ""
) -> Response:
    check_csrf(request, csrf)
    then = _then(request, next)
    redirect_unless_verified(request, session, url_with(APP_PATH, next=then))
    try:
        factors.clean_name(name)
        enrollment = enrolment.begin_totp(ctx_of(request), session)
    except TwostepError as exc:
        context = {"name": name, "error": message_of(exc), "next": then}
        return render(request, "app_name.html", context, status_code=422, user=session)
    return render(request, "app_qr.html", {**_qr_context(enrollment, name), "next": then}, user=session)


@router.post(APP_PATH + "/confirm")
def app_confirm(
    request: Request,
    session: SignedIn,
    enrollment_id: FormStr = "",
    name: FormStr = "",
    code: FormStr = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    then = _then(request, next)
    redirect_unless_verified(request, session, url_with(APP_PATH, next=then))
    try:
        added = enrolment.confirm_totp(
            ctx_of(request),
            session,
            enrollment_id=enrollment_id,
            name=name,
            code=code,
            client=client_of(request),
        )
    except TwostepError as exc:
        if isinstance(exc, InvalidEnrollmentCode):
            error = _("That code is not right. Enter the six-digit code your app shows now.")
            if exc.clock_skew_seconds:
                error = _("That code is from another time.") + " " + skew_words(exc.clock_skew_seconds)
        else:
            error = message_of(exc)
        context: dict[str, object] = {
            "enrollment_id": enrollment_id,
            "name": name,
            "retry": True,
            "next": then,
        }
        again = enrolment.pending_totp(ctx_of(request), session, enrollment_id=enrollment_id)
        if again is not None:
            # Still pending: show the QR code and the key again with the error.
            context = {**_qr_context(again, name), "retry": False, "next": then}
        context["error"] = error
        return render(request, "app_qr.html", context, status_code=400, user=session)
    if added.recovery_codes:
        return recovery_codes_page(
            request,
            session,
            added.recovery_codes,
            first=True,
            sessions_ended=added.other_sessions_ended,
            then=then,
        )
    return redirect(then or url_with(HOME, done="app_added"))


# ------------------------------------------------------------------------------------------- passkey

PASSKEY_PATH = HOME + "/passkey"


@router.get(PASSKEY_PATH)
def passkey_page(request: Request, session: SignedIn, next: str = "") -> Response:
    then = _then(request, next)
    redirect_unless_verified(request, session, url_with(PASSKEY_PATH, next=then))
    return render(request, "passkey_add.html", {"name": "", "next": then}, user=session)


@router.post(PASSKEY_PATH)
def passkey_add(
    request: Request,
    session: SignedIn,
    name: FormStr = "",
    credential: CredentialField = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    """The end of a registration ceremony (static/webauthn.js, /api/v1/factors/passkey/options)."""
    check_csrf(request, csrf)
    then = _then(request, next)
    redirect_unless_verified(request, session, url_with(PASSKEY_PATH, next=then))
    parsed = parse_credential(credential)
    try:
        if parsed is None:
            raise PasskeyRejected(N_("The browser did not return a passkey. Try again."))
        added = enrolment.register_passkey(
            ctx_of(request), session, name=name, credential=parsed, client=client_of(request)
        )
    except TwostepError as exc:
        context = {"name": name, "error": message_of(exc), "next": then}
        return render(request, "passkey_add.html", context, status_code=400, user=session)
    if added.recovery_codes:
        return recovery_codes_page(
            request,
            session,
            added.recovery_codes,
            first=True,
            sessions_ended=added.other_sessions_ended,
            then=then,
        )
    return redirect(then or url_with(HOME, done="passkey_added"))


# ------------------------------------------------------------------------------------ rename, remove


@router.get(HOME + "/factors/{factor_id}/rename")
def rename_page(request: Request, session: SignedIn, factor_id: str) -> Response:
    factor = _factor(request, session, factor_id)
    return render(request, "rename.html", {"factor": factor, "name": factor.name}, user=session)


@router.post(HOME + "/factors/{factor_id}/rename")
def rename_post(
    request: Request, session: SignedIn, factor_id: str, name: FormStr = "", csrf: FormStr = ""
) -> Response:
    check_csrf(request, csrf)
    try:
        factors.rename(ctx_of(request), session, factor_id=factor_id, name=name, client=client_of(request))
    except TwostepError as exc:
        factor = _factor(request, session, factor_id)
        context = {"factor": factor, "name": name, "error": message_of(exc)}
        return render(request, "rename.html", context, status_code=422, user=session)
    return redirect(url_with(HOME, done="renamed"))


@router.get(HOME + "/factors/{factor_id}/remove")
def remove_page(request: Request, session: SignedIn, factor_id: str) -> Response:
    redirect_unless_verified(request, session, f"{HOME}/factors/{quote(factor_id)}/remove")
    view = factors.overview(ctx_of(request), session)
    factor = next((f for f in view.factors if f.id == factor_id), None)
    if factor is None:
        raise NotFound()
    context = {"factor": factor, "last": len(view.factors) == 1}
    return render(request, "remove.html", context, user=session)


@router.post(HOME + "/factors/{factor_id}/remove")
def remove_post(request: Request, session: SignedIn, factor_id: str, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, f"{HOME}/factors/{quote(factor_id)}/remove")
    turned_off = factors.remove(ctx_of(request), session, factor_id=factor_id, client=client_of(request))
    return redirect(url_with(HOME, done="removed_last" if turned_off else "removed"))


# ------------------------------------------------------------------------- recovery codes, turn off

CODES_PATH = HOME + "/recovery-codes"
OFF_PATH = HOME + "/turn-off"


def recovery_codes_page(
    request: Request,
    session: CurrentSession,
    codes: list[str],
    *,
    first: bool,
    sessions_ended: int | None = None,
    then: str = "",
) -> Response:
    """The codes, once, in the response of the POST that made them (no-store is set on every page)."""
    text = "twostep recovery codes for " + session.username + "\n\n" + "\n".join(codes) + "\n"
    context = {
        "codes": codes,
        "first": first,
        "download_href": "data:text/plain;charset=utf-8," + quote(text),
        "codes_text": "\n".join(codes),
        "sessions_ended": sessions_ended,
        "then": then,
    }
    return render(request, "recovery_codes.html", context, user=session)


@router.get(CODES_PATH)
def codes_confirm_page(request: Request, session: SignedIn) -> Response:
    redirect_unless_verified(request, session, CODES_PATH)
    view = factors.overview(ctx_of(request), session)
    if not view.two_factor_enabled:
        return redirect(HOME)
    return render(request, "codes_confirm.html", {"view": view}, user=session)


@router.post(CODES_PATH)
def codes_post(request: Request, session: SignedIn, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, CODES_PATH)
    try:
        codes = factors.regenerate_recovery_codes(ctx_of(request), session, client=client_of(request))
    except TwoFactorNotEnabled:
        return redirect(HOME)
    return recovery_codes_page(request, session, codes, first=False)


@router.get(OFF_PATH)
def off_confirm_page(request: Request, session: SignedIn) -> Response:
    redirect_unless_verified(request, session, OFF_PATH)
    view = factors.overview(ctx_of(request), session)
    if not view.two_factor_enabled:
        return redirect(HOME)
    return render(request, "turn_off.html", {"view": view}, user=session)


@router.post(OFF_PATH)
def off_post(request: Request, session: SignedIn, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, OFF_PATH)
    try:
        factors.disable(ctx_of(request), session, client=client_of(request))
    except TwoFactorNotEnabled:
        return redirect(HOME)
    return redirect(url_with(HOME, done="turned_off"))
