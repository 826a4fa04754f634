"""Pages: verify access (password, then a second factor; or a passkey alone), returning to `?next=`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from twostep.core.errors import AccountLocked, Busy, PasskeyRejected, TwostepError, VerifyAccessRequired
from twostep.i18n import gettext as _
from twostep.services import factors, verify_access
from twostep.services.sessions import CurrentSession
from twostep.services.verify_access import VerifyResult
from twostep.web.deps import SignedIn, client_of, ctx_of
from twostep.web.pages.common import (
    PageRoute,
    check_csrf,
    code_error,
    message_of,
    redirect,
    render,
    safe_next,
    second_step_context,
    url_with,
)
from twostep.web.pages.forms import CredentialField, FormSecret, FormStr, parse_credential

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _has_passkey(request: Request, session: CurrentSession) -> bool:
    return any(f.type == "passkey" for f in factors.overview(ctx_of(request), session).factors)


def _after(request: Request, result: VerifyResult, next: str) -> Response:
    if result.status == "verified":
        return redirect(safe_next(request, next), result.token, request)
    methods = ",".join(result.methods)
    target = url_with("/verify-access/second-step", methods=methods, next=safe_next(request, next))
    return redirect(target, result.token, request)


@router.get("/verify-access")
def verify_page(request: Request, session: SignedIn, next: str = "") -> Response:
    context = {"next": safe_next(request, next), "has_passkey": _has_passkey(request, session)}
    return render(request, "verify.html", context, user=session)


@router.post("/verify-access")
def verify_post(
    request: Request, session: SignedIn, password: FormSecret = "", next: FormStr = "", csrf: FormStr = ""
) -> Response:
    check_csrf(request, csrf)
    try:
        result = verify_access.with_password(
            ctx_of(request), session, password=password, client=client_of(request)
        )
    except Busy:
        raise  # the 503 page
    except AccountLocked:
        raise  # the locked-account page
    except TwostepError as exc:
        context = {
            "next": safe_next(request, next),
            "has_passkey": _has_passkey(request, session),
            "error": message_of(exc),
        }
        return render(request, "verify.html", context, status_code=401, user=session)
    return _after(request, result, next)


@router.get("/verify-access/second-step")
def verify_second_page(request: Request, session: SignedIn, methods: str = "", next: str = "") -> Response:
    return render(request, "verify_second.html", second_step_context(request, methods, next), user=session)


def _restart(request: Request, next: str) -> Response:
    return redirect(url_with("/verify-access", next=safe_next(request, next)))


@router.post("/verify-access/totp")
def verify_totp(
    request: Request,
    session: SignedIn,
    code: FormStr = "",
    methods: FormStr = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    try:
        result = verify_access.with_totp(ctx_of(request), session, code=code, client=client_of(request))
    except VerifyAccessRequired:
        return _restart(request, next)
    except AccountLocked:
        raise  # the locked-account page
    except TwostepError as exc:
        context = {**second_step_context(request, methods, next), "error": code_error(exc)}
        return render(request, "verify_second.html", context, status_code=401, user=session)
    return _after(request, result, next)


@router.get("/verify-access/recovery-code")
def verify_recovery_page(request: Request, session: SignedIn, methods: str = "", next: str = "") -> Response:
    return render(request, "verify_recovery.html", second_step_context(request, methods, next), user=session)


@router.post("/verify-access/recovery-code")
def verify_recovery(
    request: Request,
    session: SignedIn,
    code: FormStr = "",
    methods: FormStr = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    check_csrf(request, csrf)
    try:
        result = verify_access.with_recovery_code(
            ctx_of(request), session, code=code, client=client_of(request)
        )
    except VerifyAccessRequired:
        return _restart(request, next)
    except AccountLocked:
        raise  # the locked-account page
    except TwostepError as exc:
        context = {**second_step_context(request, methods, next), "error": code_error(exc, recovery=True)}
        return render(request, "verify_recovery.html", context, status_code=401, user=session)
    return _after(request, result, next)


@router.post("/verify-access/passkey")
def verify_passkey(
    request: Request,
    session: SignedIn,
    credential: CredentialField = "",
    methods: FormStr = "",
    next: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    """The end of a passkey ceremony (static/webauthn.js, /api/v1/verify-access/passkey/options)."""
    check_csrf(request, csrf)
    parsed = parse_credential(credential)
    try:
        if parsed is None:
            raise PasskeyRejected()
        result = verify_access.with_passkey(
            ctx_of(request), session, credential=parsed, client=client_of(request)
        )
    except AccountLocked:
        raise  # the locked-account page
    except TwostepError as exc:
        error = (
            _("That passkey could not be verified. Try again, or use another way.")
            if isinstance(exc, PasskeyRejected)
            else message_of(exc)
        )
        if methods:
            context = {**second_step_context(request, methods, next), "error": error}
            return render(request, "verify_second.html", context, status_code=401, user=session)
        context = {"next": safe_next(request, next), "has_passkey": True, "error": error}
        return render(request, "verify.html", context, status_code=401, user=session)
    return redirect(safe_next(request, next), result.token, request)
