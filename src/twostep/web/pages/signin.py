"""Pages: home, sign up, sign in with its second step (code, passkey, recovery code), sign out."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from twostep.core.errors import (
    AccountLocked,
    Busy,
    InvalidRequest,
    LinkInvalid,
    NoPendingLogin,
    PasskeyRejected,
    SignupClosed,
    TwostepError,
    UnknownPasskey,
    UsernameTaken,
    WeakPassword,
)
from twostep.i18n import N_
from twostep.i18n import gettext as _
from twostep.services import account, email, sign_in
from twostep.services.sessions import logout
from twostep.web import devices, trusted
from twostep.web.deps import client_of, ctx_of, state, token_of
from twostep.web.errors import status_of
from twostep.web.pages.common import (
    HOME,
    PageRoute,
    check_csrf,
    code_error,
    message_of,
    redirect,
    render,
    safe_next,
    second_step_context,
    signed_in_or_none,
    url_with,
)
from twostep.web.pages.forms import CredentialField, FormSecret, FormStr, parse_credential

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/")
def index(request: Request) -> Response:
    if signed_in_or_none(request) is not None:
        return redirect(HOME)
    return render(request, "index.html")


def _closed(request: Request, exc: SignupClosed) -> Response:
    """The page of a sign-up that cannot happen: closed, no invitation, or an invitation not usable."""
    heading = {
        "closed": N_("Sign-up is closed"),
        "invitation_required": N_("Sign-up needs an invitation"),
        "invitation_invalid": N_("This invitation cannot be used"),
    }.get(exc.reason, N_("Sign-up is closed"))
    return render(
        request, "signup_closed.html", {"heading": _(heading), "message": exc.text(_)}, status_code=403
    )


def _signup_context(request: Request, invite: str) -> dict[str, object] | SignupClosed:
    """What the sign-up form shows under the policy: an invitation's fixed fields, or why there is no form."""
    ctx = ctx_of(request)
    if ctx.signup == "closed":
        return SignupClosed("closed")
    if not invite:
        return (
            {"invitation": None, "invite": ""}
            if ctx.signup == "open"
            else SignupClosed("invitation_required")
        )
    invitation = account.invitation_for(ctx, invite)
    if invitation is None:
        return SignupClosed("invitation_invalid")
    return {"invitation": invitation, "invite": invite}


@router.get("/signup")
def signup_page(request: Request, invite: str = "") -> Response:
    if signed_in_or_none(request) is not None:
        return redirect(HOME)
    context = _signup_context(request, invite)
    if isinstance(context, SignupClosed):
        return _closed(request, context)
    return render(request, "signup.html", {"form": {}, **context})


@router.post("/signup")
def signup(
    request: Request,
    username: FormStr = "",
    password: FormSecret = "",
    email: FormStr = "",
    invite: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf, session_required=False)
    form = {"username": username, "email": email}
    errors: dict[str, str] = {}
    ctx, client = ctx_of(request), client_of(request)
    try:
        account.sign_up(
            ctx,
            username=username,
            password=password,
            email=email or None,
            client=client,
            invite=invite or None,
        )
    except Busy:
        raise  # the 503 page
    except SignupClosed as exc:
        return _closed(request, exc)
    except (WeakPassword, UsernameTaken, InvalidRequest) as exc:
        # Beside the field it is about, the form shown again (422).
        message = exc.text(_)
        if isinstance(exc, WeakPassword):
            message = _("This password can't be used: %(reason)s") % {"reason": message}
        errors[exc.field or "username"] = message
    except TwostepError as exc:
        errors["form"] = message_of(exc)
        context = {"form": form, "errors": errors, **_invitation_again(request, invite)}
        return render(request, "signup.html", context, status_code=status_of(exc))
    else:
        try:
            result = sign_in.password_step(
                ctx,
                username=username,
                password=password,
                client=client,
                current_token=token_of(request),
                device=devices.device_of(request),
                trusted=trusted.trusted_of(request),
            )
        except TwostepError:
            # The account exists; signing in can wait (a limit, or a busy worker): say so, never "failed".
            return redirect(url_with("/login", created="1"))
        response = redirect(url_with(HOME, done="welcome"), result.token, request)
        devices.remember(request, response, result.device)
        return response
    context = {"form": form, "errors": errors, **_invitation_again(request, invite)}
    return render(request, "signup.html", context, status_code=422)


def _invitation_again(request: Request, invite: str) -> dict[str, object]:
    """The invitation's fixed fields for the form shown again."""
    context = _signup_context(request, invite)
    return {} if isinstance(context, SignupClosed) else context


@router.get("/login")
def login_page(
    request: Request, next: str = "", expired: str = "", signed_out: str = "", created: str = ""
) -> Response:
    target = safe_next(request, next)
    if signed_in_or_none(request) is not None:
        return redirect(target)
    notice = None
    if created:
        notice = _("Your account was created. Sign in with your new username and password.")
    elif expired:
        notice = _("Your sign-in took longer than 5 minutes or was cancelled. Sign in again.")
    elif signed_out:
        notice = _("You are signed out.")
    # Autofill (a conditional passkey request) starts on a fresh sign-in page, not after an error.
    return render(request, "login.html", {"next": target, "form": {}, "notice": notice, "autofill": True})


@router.post("/login")
def login_post(
    request: Request,
    username: FormStr = "",
    password: FormSecret = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf, session_required=False)
    target = safe_next(request, next)
    try:
        result = sign_in.password_step(
            ctx_of(request),
            username=username,
            password=password,
            client=client_of(request),
            current_token=token_of(request),
            device=devices.device_of(request),
            trusted=trusted.trusted_of(request),
        )
    except (Busy, AccountLocked):
        raise  # the 503 page; the locked-account page
    except TwostepError as exc:
        context = {"next": target, "form": {"username": username}, "error": message_of(exc)}
        return render(request, "login.html", context, status_code=status_of(exc))
    if result.status == "signed_in":
        response = redirect(target, result.token, request)
    else:
        methods = ",".join(result.methods)
        second = url_with("/login/second-step", methods=methods, next=target)
        response = redirect(second, result.token, request)
    devices.remember(request, response, result.device)
    return response


@router.get("/login/second-step")
def second_step_page(request: Request, methods: str = "", next: str = "") -> Response:
    if signed_in_or_none(request) is not None:
        return redirect(safe_next(request, next))
    if token_of(request) is None:
        return redirect(url_with("/login", next=safe_next(request, next)))
    return render(request, "second_step.html", _second_step(request, methods, next))


def _second_step(request: Request, methods: str, next: str) -> dict[str, object]:
    """The second step's context, with the offer to trust this browser (0 days: not offered)."""
    return {**second_step_context(request, methods, next), "trust_days": ctx_of(request).trusted_browser_days}


def _signed_in(request: Request, url: str, result: sign_in.LoginResult) -> Response:
    """The redirect after a second step: the new session cookie, and the trusted-browser cookie if asked."""
    response = redirect(url, result.token, request)
    trusted.remember(request, response, result.trusted)
    return response


def _pending_gone(request: Request, next: str) -> Response:
    return redirect(url_with("/login", next=safe_next(request, next), expired="1"))


@router.post("/login/second-step")
def second_step_post(
    request: Request,
    code: FormStr = "",
    methods: FormStr = "",
    next: FormStr = "",
    trust_browser: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    try:
        result = sign_in.totp_step(
            ctx_of(request),
            token=token_of(request),
            code=code,
            client=client_of(request),
            trust_browser=bool(trust_browser),
            trusted=trusted.trusted_of(request),
        )
    except NoPendingLogin:
        return _pending_gone(request, next)
    except AccountLocked:
        raise
    except TwostepError as exc:
        context = {**_second_step(request, methods, next), "error": code_error(exc)}
        return render(request, "second_step.html", context, status_code=401)
    return _signed_in(request, safe_next(request, next), result)


@router.get("/login/recovery-code")
def recovery_page(request: Request, methods: str = "", next: str = "") -> Response:
    if token_of(request) is None:
        return redirect(url_with("/login", next=safe_next(request, next)))
    return render(request, "recovery_login.html", _second_step(request, methods, next))


@router.post("/login/recovery-code")
def recovery_post(
    request: Request,
    code: FormStr = "",
    methods: FormStr = "",
    next: FormStr = "",
    trust_browser: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    try:
        result = sign_in.recovery_step(
            ctx_of(request),
            token=token_of(request),
            code=code,
            client=client_of(request),
            trust_browser=bool(trust_browser),
            trusted=trusted.trusted_of(request),
        )
    except NoPendingLogin:
        return _pending_gone(request, next)
    except AccountLocked:
        raise
    except TwostepError as exc:
        context = {**_second_step(request, methods, next), "error": code_error(exc, recovery=True)}
        return render(request, "recovery_login.html", context, status_code=401)
    # The two-step page shows the recovery banner to a session signed in with a recovery code; an
    # application's sign-in (OpenID Connect) goes on to the application.
    target = safe_next(request, next)
    return _signed_in(request, target if target.startswith("/oidc/continue?") else HOME, result)


@router.post("/login/passkey")
def passkey_login(
    request: Request,
    credential: CredentialField = "",
    next: FormStr = "",
    methods: FormStr = "",
    trust_browser: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    """The end of a passkey sign-in (second step or passwordless): the JS posts the assertion here."""
    check_csrf(request, csrf, session_required=False)
    cookies = state(request).cookies
    parsed = parse_credential(credential)
    try:
        if parsed is None:
            raise PasskeyRejected()
        result = sign_in.passkey_step(
            ctx_of(request),
            token=token_of(request),
            ceremony_key=cookies.read_ceremony(request),
            credential=parsed,
            client=client_of(request),
            trust_browser=bool(trust_browser),
            trusted=trusted.trusted_of(request),
        )
    except AccountLocked:
        raise
    except TwostepError as exc:
        error = message_of(exc)
        if isinstance(exc, PasskeyRejected):
            error = _("That passkey could not be verified. Try again, or use another way to sign in.")
        if methods:
            context = {**_second_step(request, methods, next), "error": error}
            return render(request, "second_step.html", context, status_code=401)
        context = {"next": safe_next(request, next), "form": {}, "error": error}
        if isinstance(exc, UnknownPasskey):
            # The page tells the password manager to forget this passkey (signalUnknownCredential).
            context |= {"unknown_credential": _credential_id(parsed), "rp_id": ctx_of(request).rp_id}
        return render(request, "login.html", context, status_code=401)
    return _signed_in(request, safe_next(request, next), result)


def _credential_id(credential: dict[str, object] | None) -> str | None:
    """The base64url credential id the browser sent (for signalUnknownCredential), or None."""
    value = credential.get("id") if credential else None
    if isinstance(value, str) and 0 < len(value) <= 1400 and re.fullmatch(r"[A-Za-z0-9_-]+", value):
        return value
    return None


@router.post("/logout")
def logout_post(request: Request, csrf: FormStr = "") -> Response:
    check_csrf(request, csrf)
    logout(ctx_of(request), token_of(request))
    response = redirect("/login?signed_out=1")
    state(request).cookies.clear(response)
    return response


@router.get("/verify-email")
def verify_email_page(request: Request, token: str = "") -> Response:
    """The link of the verification message: a page with a button, so that a mail scanner that fetches the
    link does not use it (no GET changes state)."""
    return render(request, "verify_email.html", {"token": token})


@router.post("/verify-email")
def verify_email_post(request: Request, token: FormStr = "", csrf: FormStr = "") -> Response:
    check_csrf(request, csrf, session_required=False)
    try:
        email.verify(ctx_of(request), token=token, client=client_of(request))
    except LinkInvalid as exc:
        return render(request, "verify_email.html", {"error": exc.text(_)}, status_code=410)
    return render(request, "verify_email.html", {"done": True})
