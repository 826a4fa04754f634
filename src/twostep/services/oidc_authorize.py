"""GET /oidc/authorize and /oidc/continue: decide what an authorization request needs, and answer it.

The client and the redirect URI are checked first and exactly; until both are known good, every error is a
page of ours, never a redirect. Then Authlib validates the rest (response type, scope, PKCE, nonce, repeated
parameters, ``prompt=none`` without a session). A request that needs the browser to sign in, or to sign in
again (``prompt=login``, ``max_age``, ``acr_values``, the client's policy), is kept server-side (10 minutes)
and resumed by ``/oidc/continue?id=``; it goes on only when the session authenticated after the request was
made (a database fact, never a flag of the client).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error

from twostep.core import oidc
from twostep.core.access import Policy
from twostep.i18n import N_
from twostep.services.context import Context
from twostep.services.oidc import Answer, HttpRequest, OidcServer, OidcUser, load_user
from twostep.services.sessions import CurrentSession
from twostep.storage import factors, oidc_pending
from twostep.storage.oidc_pending import PendingRow

PENDING_TTL: Final = timedelta(minutes=10)
MAX_PARAM: Final = 2048
MAX_PARAMS: Final = 40


@dataclass(frozen=True)
class ErrorPage:
    """The client or the redirect URI is not known good: say so on a page of ours (400). ``message`` is
    marked with N_; ``params`` fill its ``%(name)s`` places once it is translated (i18n.translate)."""

    message: str
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ToClient:
    """Send the browser to the client's redirect URI (a code, or an error)."""

    url: str


@dataclass(frozen=True)
class SignIn:
    """Not signed in: the sign-in pages, then /oidc/continue?id=."""

    pending_id: str


@dataclass(frozen=True)
class Reauthenticate:
    """Signed in, but not recently or not strongly enough: verify access, then /oidc/continue?id=."""

    pending_id: str
    passkey: bool = False


@dataclass(frozen=True)
class SetUpFactor:
    """The account lacks the factor the request demands (a second factor, or a passkey)."""

    pending_id: str
    passkey: bool


Outcome = ErrorPage | ToClient | SignIn | Reauthenticate | SetUpFactor


def _session_amr(session: CurrentSession) -> list[str]:
    """What the session did; sessions older than migration 0008 have only ``second_factor``."""
    if session.amr:
        return oidc.parse_amr(session.amr)
    if session.second_factor == "totp" or session.second_factor == "recovery_code":
        return ["pwd", "otp", "mfa"]
    if session.second_factor == "passkey":
        return ["pwd", "swk", "mfa"]
    return ["pwd"]


def authorize(
    ctx: Context,
    server: OidcServer,
    http: HttpRequest,
    session: CurrentSession | None,
    *,
    pending: PendingRow | None = None,
) -> Outcome:
    data: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in http.params:
        if key in data:
            repeated.add(key)
        else:
            data[key] = value
    client = server.query_client(data.get("client_id", ""))
    if client is None or "client_id" in repeated:
        return ErrorPage(N_("This application is not registered here (unknown client_id)."))
    redirect_uri = data.get("redirect_uri", "")
    if "redirect_uri" in repeated or not client.check_redirect_uri(redirect_uri):
        return ErrorPage(
            N_("The address %(client)s asked to return to (redirect_uri) is not registered for it."),
            {"client": client.row.name},
        )
    state = data.get("state")

    def fail(error: str, description: str) -> ToClient:
        params = [("error", error), ("error_description", description)]
        if state and len(state) <= MAX_PARAM:
            params.append(("state", state))
        return ToClient(add_params_to_uri(redirect_uri, params))

    if len(http.params) > MAX_PARAMS or any(len(v) > MAX_PARAM or len(k) > 64 for k, v in http.params):
        return fail("invalid_request", "A parameter is too long, or there are too many.")
    if "request" in data or "request_uri" in data:
        return fail("request_not_supported", "Request objects are not supported.")
    if "openid" not in oidc.scope_list(data.get("scope")):
        return fail("invalid_scope", "The scope must include openid.")
    prompts = set(data.get("prompt", "").split())
    if "none" in prompts and len(prompts) > 1:
        return fail("invalid_request", "prompt=none cannot be combined with other values.")
    max_age: int | None = None
    if "max_age" in data:
        try:
            max_age = int(data["max_age"])
        except ValueError:
            max_age = -1
        if max_age < 0 or max_age > 10**9:
            return fail("invalid_request", "max_age must be a number of seconds.")

    user = None
    if session is not None:
        with ctx.db.transaction() as conn:
            loaded = load_user(conn, session.account_id)
        if loaded is not None:
            amr = _session_amr(session)
            user = OidcUser(
                **{
                    **loaded.__dict__,
                    "amr": oidc.format_amr(amr),
                    "auth_time": session.auth_time,
                    "session_id": session.public_id,
                }
            )
    try:
        grant = server.get_consent_grant(http, end_user=user)
    except OAuth2Error as error:
        if error.redirect_uri:
            answer: Answer = server.handle_error_response(None, error)
            return ToClient(answer.location or redirect_uri)
        return fail(error.error, error.get_error_description() or "The request is not valid.")

    now = ctx.now()
    created = pending.created_at if pending is not None else now

    def keep() -> str:
        if pending is not None:
            return pending.id
        pending_id = secrets.token_urlsafe(24)
        with ctx.db.transaction() as conn:
            oidc_pending.add(conn, PendingRow(pending_id, data, now, now + PENDING_TTL))
        return pending_id

    if session is None or user is None:
        if "none" in prompts:
            return fail("login_required", "The user is not signed in.")
        return SignIn(keep())

    # Who may use this client (its users and groups, with the meaning of the access rules).
    if client.row.users or client.row.groups:
        allowed = user.username in client.row.users or bool(set(user.groups) & set(client.row.groups))
        if not allowed:
            return fail("access_denied", "This account may not use this application.")

    fresh = session.auth_time > created
    too_old = max_age is not None and (now - session.auth_time).total_seconds() > max_age
    if ("login" in prompts or too_old) and not fresh:
        if "none" in prompts:
            return fail("login_required", "The user must sign in again.")
        return Reauthenticate(keep())

    want = oidc.wanted_acr(data.get("acr_values"))
    if client.row.policy == Policy.TWO_FACTOR and (want is None or want.rank < oidc.Acr.MFA.rank):
        want = oidc.Acr.MFA
    have = oidc.acr_of(oidc.parse_amr(user.amr))
    if not oidc.satisfies(have, want):
        if "none" in prompts:
            return fail("interaction_required", "The user must sign in with a stronger method.")
        passkey = want is oidc.Acr.PHR
        with ctx.db.transaction() as conn:
            kinds = factors.kinds(conn, session.account_id)
        if (passkey and "passkey" not in kinds) or not kinds:
            return SetUpFactor(keep(), passkey)
        # Verify access again, until the user chooses the factor asked for (each round is a page the user
        # acts on, never a redirect loop; the request expires after 10 minutes).
        return Reauthenticate(keep(), passkey)

    if pending is not None:
        with ctx.db.transaction() as conn:
            if not oidc_pending.take(conn, pending_id=pending.id, now=now):
                return ErrorPage(
                    N_("This sign-in request was used already. Start again from the application.")
                )
    answer = server.create_authorization_response(http, grant_user=user, grant=grant)
    return ToClient(answer.location or redirect_uri)


def pending_request(ctx: Context, pending_id: str) -> PendingRow | None:
    if not pending_id or len(pending_id) > 64:
        return None
    with ctx.db.transaction() as conn:
        return oidc_pending.get(conn, pending_id=pending_id, now=ctx.now())
