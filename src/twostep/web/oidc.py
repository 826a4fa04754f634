"""The OpenID Provider's endpoints (docs/api.md "OpenID Connect provider"; docs/oidc.md).

A thin Starlette integration of Authlib's server (services/oidc.py): the request handed to it is built from
TWOSTEP_ORIGIN and the path, never from the Host header; its answers become Starlette responses.

Content-Security-Policy ``form-action 'self'`` also governs the redirects that follow a form POST
(Chromium), so a sign-in form must never end in a redirect to the application: the sign-in pages return to
``/oidc/continue`` (same origin, a GET), which answers with a small page that moves the browser on with a
meta refresh (and a link), not with a redirect.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from twostep import i18n
from twostep.i18n import gettext as _
from twostep.services import oidc, oidc_authorize, oidc_keys, sessions
from twostep.services.oidc import Answer, HttpRequest, OidcServer
from twostep.web.deps import SignedIn, client_of, ctx_of, run_service, token_of
from twostep.web.deps import state as state_of
from twostep.web.pages.common import PageRoute, check_csrf, redirect, render, signed_in_or_none, url_with
from twostep.web.pages.forms import FormStr
from twostep.web.security import csrf_ok

router = APIRouter(include_in_schema=False)

CONTINUE = "/oidc/continue"


def server_of(request: Request) -> OidcServer:
    server = getattr(request.app.state, "oidc_server", None)
    if not isinstance(server, OidcServer):
        server = OidcServer(ctx_of(request))
        request.app.state.oidc_server = server
    return server


def _http(request: Request, params: list[tuple[str, str]]) -> HttpRequest:
    uri = ctx_of(request).origin + request.url.path
    if request.url.query:
        uri += "?" + request.url.query
    return HttpRequest(request.method, uri, request.headers, params, client_of(request))


# Read by single-page applications on other origins; none of these endpoints uses a cookie.
CORS = {"access-control-allow-origin": "*"}


def _response(answer: Answer) -> Response:
    headers = {k: v for k, v in answer.headers if k.lower() != "content-type"} | CORS
    if isinstance(answer.body, dict):
        return JSONResponse(answer.body, status_code=answer.status, headers=headers)
    return Response(answer.body, status_code=answer.status, headers=headers)


@router.get("/.well-known/openid-configuration")
def discovery(request: Request) -> Response:
    return JSONResponse(
        oidc.discovery(ctx_of(request).origin), headers={"cache-control": "public, max-age=3600", **CORS}
    )


@router.get("/oidc/jwks")
def jwks(request: Request) -> Response:
    return JSONResponse(
        oidc_keys.jwks(ctx_of(request)),
        headers={"cache-control": f"public, max-age={oidc_keys.JWKS_MAX_AGE}", **CORS},
    )


def _outcome(request: Request, outcome: oidc_authorize.Outcome, *, continuing: bool) -> Response:
    if isinstance(outcome, oidc_authorize.ErrorPage):
        return render(
            request,
            "error.html",
            {"message": i18n.translate(outcome.message, outcome.params)},
            status_code=400,
        )
    if isinstance(outcome, oidc_authorize.ToClient):
        if not continuing:
            return RedirectResponse(outcome.url, status_code=302)
        # Reached from the end of a sign-in form: a page, not a redirect (form-action, see above).
        return render(request, "oidc_continue.html", {"url": outcome.url})
    back = url_with(CONTINUE, id=outcome.pending_id)
    if isinstance(outcome, oidc_authorize.SignIn):
        return RedirectResponse(url_with("/login", next=back), status_code=303)
    if isinstance(outcome, oidc_authorize.Reauthenticate):
        return RedirectResponse(url_with("/verify-access", next=back), status_code=303)
    return render(
        request,
        "oidc_set_up.html",
        {"passkey": outcome.passkey, "back": back},
        status_code=403,
    )


@router.get("/oidc/authorize")
def authorize(request: Request) -> Response:
    params = list(request.query_params.multi_items())
    outcome = oidc_authorize.authorize(
        ctx_of(request), server_of(request), _http(request, params), signed_in_or_none(request)
    )
    return _outcome(request, outcome, continuing=False)


@router.get(CONTINUE)
def continue_(request: Request, id: str = "") -> Response:
    ctx = ctx_of(request)
    pending = oidc_authorize.pending_request(ctx, id)
    if pending is None:
        message = _("This sign-in request has expired or was used already. Start again from the application.")
        return render(request, "error.html", {"message": message}, status_code=400)
    params = list(pending.params.items())
    http = HttpRequest(
        "GET",
        ctx.origin + "/oidc/authorize?" + urlencode(params),
        request.headers,
        params,
        client_of(request),
    )
    outcome = oidc_authorize.authorize(
        ctx, server_of(request), http, signed_in_or_none(request), pending=pending
    )
    return _outcome(request, outcome, continuing=True)


@router.post("/oidc/token")
async def token(request: Request) -> Response:
    form = await request.form()
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    # The database work in the thread pool, as in a sync route: never in the event loop.
    answer = await run_service(request, oidc.token, server_of(request), _http(request, params))
    return _response(answer)


async def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "POST":
        form = await request.form()
        sent = form.get("access_token")
        if isinstance(sent, str):
            return sent
    return None


@router.api_route("/oidc/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request) -> Response:
    answer = await run_service(request, oidc.userinfo, ctx_of(request), await _bearer(request))
    if answer.claims is None:
        body: dict[str, Any] = {"error": answer.error or "invalid_token"}
        challenge = f'Bearer error="{body["error"]}"'
        return JSONResponse(body, status_code=401, headers={"www-authenticate": challenge, **CORS})
    return Response(json.dumps(answer.claims), media_type="application/json", headers=CORS)


@router.options("/oidc/userinfo")
def userinfo_preflight() -> Response:
    """CORS preflight of a single-page application sending its bearer token."""
    headers = {
        **CORS,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "600",
    }
    return Response(status_code=204, headers=headers)


@router.get("/oidc/logout")
def logout(
    request: Request,
    id_token_hint: str = "",
    post_logout_redirect_uri: str = "",
    client_id: str = "",
    state: str = "",
) -> Response:
    """RP-initiated logout. With an ID token of ours for this very account (id_token_hint), the session ends
    at once; otherwise the user confirms with a button (a page of ours: another site cannot sign the user
    out by a link alone). Then the browser goes to the registered post_logout_redirect_uri, if any."""
    ctx = ctx_of(request)
    try:
        plan = oidc.plan_logout(
            ctx,
            id_token_hint=id_token_hint or None,
            post_logout_redirect_uri=post_logout_redirect_uri or None,
            client_id=client_id or None,
            state=state or None,
        )
    except oidc.LogoutRefused as exc:
        return render(request, "error.html", {"message": _(exc.message)}, status_code=400)
    session = signed_in_or_none(request)
    if session is None:
        return _signed_out(request, plan.redirect, continuing=False)
    if plan.hint_sub is not None and plan.hint_sub == oidc.subject_of_account(ctx, session.account_id):
        sessions.logout(ctx, token_of(request))
        response = _signed_out(request, plan.redirect, continuing=False)
        state_of(request).cookies.clear(response)
        return response
    context = {
        "client_name": plan.client_name,
        "id_token_hint": id_token_hint,
        "post_logout_redirect_uri": post_logout_redirect_uri,
        "client_id": client_id,
        "state": state,
    }
    return render(request, "oidc_logout.html", context, user=session)


@router.post("/oidc/logout")
def logout_confirmed(
    request: Request,
    id_token_hint: FormStr = "",
    post_logout_redirect_uri: FormStr = "",
    client_id: FormStr = "",
    state: FormStr = "",
    csrf: FormStr = "",
) -> Response:
    ctx = ctx_of(request)
    if not csrf_ok(state_of(request).csrf_key, token_of(request), csrf or None):
        return render(
            request, "error.html", {"message": _("Sign out from the page, please.")}, status_code=403
        )
    try:
        plan = oidc.plan_logout(
            ctx,
            id_token_hint=id_token_hint or None,
            post_logout_redirect_uri=post_logout_redirect_uri or None,
            client_id=client_id or None,
            state=state or None,
        )
    except oidc.LogoutRefused as exc:
        return render(request, "error.html", {"message": _(exc.message)}, status_code=400)
    sessions.logout(ctx, token_of(request))
    # After a form POST: a page that moves on, not a redirect (form-action 'self').
    response = _signed_out(request, plan.redirect, continuing=True)
    state_of(request).cookies.clear(response)
    return response


def _signed_out(request: Request, redirect: str | None, *, continuing: bool) -> Response:
    if redirect is None:
        return RedirectResponse("/login?signed_out=1", status_code=303)
    if not continuing:
        return RedirectResponse(redirect, status_code=302)
    return render(request, "oidc_continue.html", {"url": redirect, "signed_out": True})


# --- the account page: applications that hold tokens for this account ------------------------------------

pages = APIRouter(route_class=PageRoute, include_in_schema=False)
APPLICATIONS = "/settings/applications"


@pages.get(APPLICATIONS)
def applications_page(request: Request, session: SignedIn, done: str = "") -> Response:
    rows = oidc.applications(ctx_of(request), session.account_id)
    notice = _("The application's access was revoked.") if done == "revoked" else None
    return render(request, "applications.html", {"applications": rows, "notice": notice}, user=session)


@pages.post(APPLICATIONS + "/revoke")
def revoke_application(
    request: Request, session: SignedIn, client_id: FormStr = "", csrf: FormStr = ""
) -> Response:
    check_csrf(request, csrf)
    oidc.revoke_application(ctx_of(request), session.account_id, client_id)
    return redirect(url_with(APPLICATIONS, done="revoked"))
