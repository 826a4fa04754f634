"""Pages: active sessions, the security log, and changing the password."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from twostep.core.errors import Busy, InvalidCredentials, NotFound, TwostepError, WeakPassword
from twostep.core.events import EventType
from twostep.core.kinds import FactorKind, Method
from twostep.i18n import N_, ngettext
from twostep.i18n import gettext as _
from twostep.services import account, sessions, trusted_browsers
from twostep.services import email as email_service
from twostep.web import trusted
from twostep.web.deps import SignedIn, client_of, ctx_of
from twostep.web.pages.common import (
    HOME,
    PageRoute,
    check_csrf,
    message_of,
    redirect,
    redirect_unless_verified,
    render,
    url_with,
)
from twostep.web.pages.forms import FormSecret, FormStr

router = APIRouter(route_class=PageRoute, include_in_schema=False)

SESSIONS_PATH = "/settings/sessions"
LOG_PATH = "/settings/security-log"
PASSWORD_PATH = "/settings/password"  # noqa: S105 (a URL path)

SESSION_NOTICES = {
    "ended": N_("The session was ended."),
    "others_ended": N_("Every other session was signed out."),
    "gone": N_("That session had already ended."),
    "browser_forgotten": N_("That browser will ask for the second step again."),
    "browsers_forgotten": N_("Every trusted browser will ask for the second step again."),
}

# The label of each kind of event on the security-log page, keyed by the enums (a StrEnum member is equal to,
# and hashes like, its stored string); a test checks that every EventType has one.
EVENT_LABELS: dict[str, str] = {
    EventType.ACCOUNT_CREATED: N_("Account created"),
    EventType.SIGNED_IN: N_("Signed in"),
    EventType.PASSWORD_FAILED: N_("Wrong password"),
    EventType.SECOND_FACTOR_FAILED: N_("Failed second step"),
    EventType.SECOND_FACTOR_ABANDONED: N_("Sign-in not finished"),
    EventType.SECOND_FACTOR_LOCKED: N_("Second step locked after too many attempts"),
    EventType.TOTP_REPLAY: N_("A code was used twice"),
    EventType.FACTOR_ADDED: N_("Second factor added"),
    EventType.FACTOR_RENAMED: N_("Second factor renamed"),
    EventType.FACTOR_REMOVED: N_("Second factor removed"),
    EventType.TWO_FACTOR_ENABLED: N_("Two-step verification turned on"),
    EventType.TWO_FACTOR_DISABLED: N_("Two-step verification turned off"),
    EventType.RECOVERY_CODE_USED: N_("Recovery code used"),
    EventType.RECOVERY_CODES_REGENERATED: N_("New recovery codes made"),
    EventType.ACCESS_VERIFIED: N_("Access verified"),
    EventType.VERIFY_ACCESS_FAILED: N_("Failed to verify access"),
    EventType.SESSION_ENDED: N_("Session ended"),
    EventType.OTHER_SESSIONS_ENDED: N_("Other sessions ended"),
    EventType.PASSWORD_CHANGED: N_("Password changed"),
    EventType.PASSKEY_COUNTER_REGRESSED: N_("Passkey counter went backwards (possible clone)"),
    EventType.PASSKEY_SIGN_IN_FAILED: N_("Failed sign-in with one of your passkeys, without password"),
    EventType.BROWSER_TRUSTED: N_("Browser trusted: no second step there for a while"),
    EventType.TRUSTED_BROWSERS_REVOKED: N_("Trusted browsers forgotten"),
    EventType.PASSKEY_ADDED_AUTOMATICALLY: N_("Passkey added by your password manager after signing in"),
    EventType.PASSKEY_BACKUP_ELIGIBILITY_CHANGED: N_("A passkey changed whether it can be backed up"),
    EventType.OPERATOR_LOCKED: N_("Account locked by the operator"),
    EventType.OPERATOR_UNLOCKED: N_("Account unlocked by the operator"),
    EventType.OPERATOR_GROUPS_CHANGED: N_("Groups changed by the operator"),
    EventType.OPERATOR_DELETED: N_("Account deleted by the operator"),
    EventType.EMAIL_CHANGED: N_("E-mail address changed"),
    EventType.EMAIL_VERIFIED: N_("E-mail address verified"),
    EventType.OIDC_SIGN_IN: N_("Signed in to an application"),
}
METHOD_LABELS: dict[str, str] = {
    Method.PASSWORD: N_("password only"),
    Method.TOTP: N_("authentication app"),
    Method.PASSKEY: N_("passkey"),
    Method.PASSKEY_PASSWORDLESS: N_("passkey, without password"),
    Method.RECOVERY_CODE: N_("recovery code"),
    Method.TRUSTED_BROWSER: N_("password, in a trusted browser (no second step)"),
}
FACTOR_LABELS: dict[str, str] = {FactorKind.TOTP: N_("authentication app"), FactorKind.PASSKEY: N_("passkey")}


def describe(event_type: str, detail: dict[str, Any]) -> str:
    """A short phrase for a security event's detail (never a secret: details hold none)."""
    parts: list[str] = []
    method = detail.get("method")
    if isinstance(method, str):
        label = METHOD_LABELS.get(method)
        parts.append(_("with %(method)s") % {"method": _(label) if label else method.replace("_", " ")})
    name = detail.get("factor_name")
    if isinstance(name, str):
        kind = FACTOR_LABELS.get(str(detail.get("type")), "")
        parts.append(_("“%(name)s”") % {"name": name} + (f" ({_(kind)})" if kind else ""))
    if event_type == EventType.RECOVERY_CODE_USED and isinstance(detail.get("remaining"), int):
        left = detail["remaining"]
        parts.append(ngettext("%(num)d left", "%(num)d left", left) % {"num": left})
    for key in ("count", "other_sessions_ended"):
        if isinstance(detail.get(key), int):
            ended = detail[key]
            parts.append(
                ngettext("%(num)d other session signed out", "%(num)d other sessions signed out", ended)
                % {"num": ended}
            )
    if isinstance(detail.get("browsers"), int):
        browsers = detail["browsers"]
        parts.append(ngettext("%(num)d browser", "%(num)d browsers", browsers) % {"num": browsers})
    if isinstance(detail.get("days"), int):
        days = detail["days"]
        parts.append(ngettext("for %(num)d day", "for %(num)d days", days) % {"num": days})
    if event_type == EventType.OIDC_SIGN_IN and isinstance(detail.get("client"), str):
        # The application's name as the operator registered it (`twostep client add --name`).
        parts.append(_("to %(client)s") % {"client": detail["client"]})
    if detail.get("during") == "verify_access":
        parts.append(_("while verifying access"))
    return ", ".join(parts)


@router.get(SESSIONS_PATH)
def sessions_page(request: Request, session: SignedIn, done: str = "") -> Response:
    rows = sessions.list_sessions(ctx_of(request), session)
    rows.sort(key=lambda s: (not s.current, -s.last_seen_at.timestamp()))
    context = {
        "sessions": rows,
        "verified": session.access_verified(ctx_of(request).now()),
        "notice": _(SESSION_NOTICES[done]) if done in SESSION_NOTICES else None,
        "trusted": trusted_browsers.list_trusted(
            ctx_of(request), session, cookie=trusted.trusted_of(request)
        ),
        "trust_days": ctx_of(request).trusted_browser_days,
    }
    return render(request, "sessions.html", context, user=session)


@router.post(SESSIONS_PATH + "/forget-browser")
def forget_browser(request: Request, session: SignedIn, id: FormStr = "", csrf: FormStr = "") -> Response:
    """Revoke one trusted browser; no verify access needed (it only takes a shortcut away)."""
    check_csrf(request, csrf)
    try:
        trusted_browsers.revoke(ctx_of(request), session, id, client_of(request))
    except NotFound:
        return redirect(url_with(SESSIONS_PATH, done="gone"))
    return redirect(url_with(SESSIONS_PATH, done="browser_forgotten"))


@router.post(SESSIONS_PATH + "/forget-browsers")
def forget_browsers(request: Request, session: SignedIn, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    trusted_browsers.revoke_every(ctx_of(request), session, client_of(request))
    return redirect(url_with(SESSIONS_PATH, done="browsers_forgotten"))


@router.post(SESSIONS_PATH + "/end")
def end_one(request: Request, session: SignedIn, id: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, SESSIONS_PATH)
    try:
        sessions.end_session(ctx_of(request), session, id, client_of(request))
    except NotFound:
        return redirect(url_with(SESSIONS_PATH, done="gone"))
    return redirect(url_with(SESSIONS_PATH, done="ended"))


@router.post(SESSIONS_PATH + "/end-others")
def end_others(request: Request, session: SignedIn, back: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, SESSIONS_PATH)
    sessions.end_other_sessions(ctx_of(request), session, client_of(request))
    if back == "two-step":
        return redirect(url_with(HOME, done="sessions_ended"))
    return redirect(url_with(SESSIONS_PATH, done="others_ended"))


@router.get(LOG_PATH)
def log_page(request: Request, session: SignedIn) -> Response:
    rows = [
        {
            "label": _(EVENT_LABELS[e.type])
            if e.type in EVENT_LABELS
            else e.type.replace("_", " ").capitalize(),
            "type": e.type,
            "detail": describe(e.type, e.detail),
            "at": e.at,
            "ip": e.ip,
            "user_agent": e.user_agent,
        }
        for e in account.security_log(ctx_of(request), session)
    ]
    return render(request, "security_log.html", {"events": rows}, user=session)


@router.get(PASSWORD_PATH)
def password_page(request: Request, session: SignedIn, done: str = "") -> Response:
    if done:
        return render(request, "password.html", {"done": True}, user=session)
    redirect_unless_verified(request, session, PASSWORD_PATH)
    return render(request, "password.html", {"errors": {}}, user=session)


@router.post(PASSWORD_PATH)
def password_post(
    request: Request,
    session: SignedIn,
    current_password: FormSecret = "",
    new_password: FormSecret = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, PASSWORD_PATH)
    errors: dict[str, str] = {}
    try:
        account.change_password(
            ctx_of(request),
            session,
            current_password=current_password,
            new_password=new_password,
            client=client_of(request),
        )
    except Busy:
        raise  # the 503 page
    except InvalidCredentials:
        errors["current"] = _("Your current password is not correct.")
    except WeakPassword as exc:
        errors["new"] = _("This password can't be used: %(reason)s") % {"reason": exc.text(_)}
    except TwostepError as exc:
        errors["form"] = message_of(exc)
    else:
        return redirect(url_with(PASSWORD_PATH, done="1"))
    return render(request, "password.html", {"errors": errors}, status_code=422, user=session)


# ---------------------------------------------------------------------------------------- e-mail address

EMAIL_PATH = "/settings/email"


@router.get(EMAIL_PATH)
def email_page(request: Request, session: SignedIn, done: str = "") -> Response:
    if done:
        return render(request, "email.html", {"done": True}, user=session)
    redirect_unless_verified(request, session, EMAIL_PATH)
    return render(request, "email.html", {"errors": {}, "form": {}}, user=session)


@router.post(EMAIL_PATH)
def email_post(request: Request, session: SignedIn, email: FormStr = "", csrf: FormStr = "") -> Response:
    """A new address (verify access): unverified until the link sent to it is followed; the former address
    is told."""
    check_csrf(request, csrf)
    redirect_unless_verified(request, session, EMAIL_PATH)
    errors: dict[str, str] = {}
    try:
        email_service.change_email(ctx_of(request), session, email=email, client=client_of(request))
    except TwostepError as exc:
        errors["email" if exc.field == "email" else "form"] = message_of(exc)
    else:
        return redirect(url_with(EMAIL_PATH, done="1"))
    context = {"errors": errors, "form": {"email": email}}
    return render(request, "email.html", context, status_code=422, user=session)
