"""The OpenID Provider: Authlib's authorization server and grants, on twostep's tables.

Authlib (``authlib.oauth2`` / ``authlib.oidc.core``) does the protocol: request validation, client
authentication, PKCE, the token response and the ID token (signed with joserfc). This module gives it what it
asks for: clients, codes and tokens from the storage layer, the signed-in user and what the session did, and
a framework-neutral request (``HttpRequest``) that the web layer builds from Starlette's.

Codes and tokens are stored as SHA-256 hashes. A code works once (a conditional UPDATE decides which of
concurrent requests gets it); a second use revokes the grant it came from, and with it every token issued
from the first use. A refresh token works once too (rotation); a reused one revokes its grant.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    JsonRequest,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode

from twostep.core import oidc
from twostep.core.events import EventType
from twostep.i18n import N_
from twostep.services import oidc_keys
from twostep.services.audit import Audit
from twostep.services.context import Client, Context, hash_token, new_id
from twostep.services.oidc_clients import secret_matches
from twostep.storage import accounts, groups
from twostep.storage import oidc_clients as client_store
from twostep.storage import oidc_grants as grant_store
from twostep.storage.oidc_clients import ClientRow
from twostep.storage.oidc_grants import CodeRow, GrantRow

log = logging.getLogger("twostep.oidc")

CODE_TTL: Final = timedelta(seconds=60)
ACCESS_TOKEN_TTL: Final = timedelta(minutes=10)
REFRESH_TOKEN_TTL: Final = timedelta(days=14)


# --- the request, without a web framework ------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """What Authlib needs of an HTTP request. ``uri`` is built from TWOSTEP_ORIGIN, never from the Host
    header; ``headers`` is case-insensitive (Starlette's); ``params``: the query (GET) or the form (POST)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    params: list[tuple[str, str]]
    client: Client = field(default_factory=lambda: Client("unknown", ""))


class _Payload(OAuth2Payload):  # type: ignore[misc]  # Authlib has no type hints
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            datalist[key].append(value)
        self._datalist = datalist
        self._data = {key: values[0] for key, values in datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):  # type: ignore[misc]  # Authlib has no type hints
    def __init__(self, http: HttpRequest) -> None:
        super().__init__(method=http.method, uri=http.uri, headers=http.headers)
        self.http = http
        self.payload = _Payload(http.params)
        self.twostep_grant: GrantRow | None = None

    @property
    def args(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data if self.method == "POST" else {}


@dataclass(frozen=True)
class Answer:
    """Authlib's response: status, body (a dict for JSON, or a string) and headers."""

    status: int
    body: dict[str, Any] | str
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


# --- what Authlib asks for ---------------------------------------------------------------------------------


class OidcClient(ClientMixin):  # type: ignore[misc]  # Authlib has no type hints
    def __init__(self, row: ClientRow) -> None:
        self.row = row
        self.client_id = row.id
        self.id_token_signed_response_alg = row.signing_alg

    @property
    def public(self) -> bool:
        return self.row.secret_hash is None

    def get_client_id(self) -> str:
        return self.row.id

    def get_default_redirect_uri(self) -> None:
        return None  # OpenID Connect: redirect_uri is required

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in oidc.scope_list(scope) if s in oidc.SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass(frozen=True)
class OidcUser:
    """The account an authorization is for, and (at the authorization endpoint) what its session did."""

    account_id: int
    username: str
    display_name: str
    email: str | None
    email_verified: bool
    groups: tuple[str, ...]
    sub: str
    amr: str = "pwd"
    auth_time: datetime | None = None
    session_id: str | None = None


class _Code:
    """A used authorization code, as Authlib's grant and extensions read it."""

    def __init__(self, row: CodeRow) -> None:
        self.row = row
        self.grant = row.grant
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.grant.scope

    def get_nonce(self) -> str | None:
        return self.grant.nonce

    def get_auth_time(self) -> int:
        return int(self.grant.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.grant.acr

    def get_amr(self) -> list[str]:
        return oidc.parse_amr(self.grant.amr)


class _RefreshToken:
    def __init__(self, grant: GrantRow) -> None:
        self.grant = grant

    def get_scope(self) -> str:
        return self.grant.scope

    def check_client(self, client: OidcClient) -> bool:
        return self.grant.client_id == client.get_client_id()


def load_user(conn: Any, account_id: int) -> OidcUser | None:
    """The account and its claims; None when it is gone or locked."""
    account = accounts.by_id(conn, account_id)
    if account is None or account.locked_at is not None:
        return None  # a locked account gets no code, token or claims
    return OidcUser(
        account_id=account.id,
        username=account.username,
        display_name=account.display_name,
        email=account.email,
        email_verified=account.email_verified_at is not None,
        groups=tuple(groups.of_account(conn, account_id)),
        sub=oidc.subject(account.user_handle),
    )


def claims_for(user: OidcUser, scope: str) -> UserInfo:
    """The user's claims that ``scope`` allows (ID token and userinfo)."""
    scopes = set(oidc.scope_list(scope))
    info: dict[str, Any] = {"sub": user.sub}
    if "profile" in scopes:
        info["preferred_username"] = user.username
        info["name"] = user.display_name
    if "email" in scopes and user.email:
        info["email"] = user.email
        info["email_verified"] = user.email_verified
    if "groups" in scopes:
        info["groups"] = list(user.groups)
    return UserInfo(info)


class _Pkce(CodeChallenge):  # type: ignore[misc]  # Authlib has no type hints
    """PKCE with S256 only; required for public clients, accepted from confidential ones."""

    SUPPORTED_CODE_CHALLENGE_METHOD: Final = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD: Final = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if grant.request.client is not None and grant.request.client.public and not challenge:
            raise InvalidRequestError("A public client must send a PKCE code_challenge (S256).")
        if challenge and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class _IdToken(OpenIDCode):  # type: ignore[misc]  # Authlib has no type hints
    def __init__(self, server: OidcServer) -> None:
        super().__init__(require_nonce=False)
        self.server = server
        self._local = threading.local()

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # the nonce is bound to the one code it was sent with; the RP checks it

    def get_client_algorithm(self, client: OidcClient) -> str:
        return client.row.signing_alg

    def get_encode_header(self, client: OidcClient) -> dict[str, str]:
        signer = oidc_keys.signer(self.server.ctx, client.row.signing_alg)
        self._local.signer = signer  # the key of this header signs the token (same thread, same request)
        return {"alg": signer.alg, "kid": signer.kid, "typ": "JWT"}

    def resolve_client_private_key(self, client: OidcClient) -> Any:
        signer: oidc_keys.Signer = self._local.signer
        return signer.key

    def get_client_claims(self, client: OidcClient) -> dict[str, Any]:
        now = int(self.server.ctx.now().timestamp())
        ttl = int(oidc_keys.ID_TOKEN_TTL.total_seconds())
        return {"iss": self.server.ctx.origin, "aud": client.get_client_id(), "iat": now, "exp": now + ttl}

    def generate_user_info(self, user: OidcUser, scope: str) -> UserInfo:
        return claims_for(user, scope)


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]  # Authlib has no type hints
    TOKEN_ENDPOINT_AUTH_METHODS: Final = ["client_secret_basic", "client_secret_post", "none"]

    @property
    def ctx(self) -> Context:
        server: OidcServer = self.server
        return server.ctx

    def save_authorization_code(self, code: str, request: _Request) -> None:
        ctx = self.ctx
        user: OidcUser = request.user
        client: OidcClient = request.client
        now = ctx.now()
        data = request.payload.data
        amr = oidc.parse_amr(user.amr) or ["pwd"]
        grant = GrantRow(
            id=new_id(),
            client_id=client.get_client_id(),
            account_id=user.account_id,
            scope=request.scope,
            nonce=data.get("nonce"),
            auth_time=user.auth_time or now,
            amr=oidc.format_amr(amr),
            acr=oidc.acr_of(amr),
            session_id=user.session_id,
            created_at=now,
            revoked_at=None,
            expires_at=now + CODE_TTL,
        )
        with ctx.db.transaction() as conn:
            grant_store.add_grant(conn, grant)
            grant_store.add_code(
                conn,
                code_hash=hash_token(code),
                grant_id=grant.id,
                client_id=grant.client_id,
                redirect_uri=request.payload.redirect_uri,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                expires_at=now + CODE_TTL,
            )
            Audit(ctx, user.account_id, request.http.client, now).record(
                conn, EventType.OIDC_SIGN_IN, client=client.row.name, client_id=grant.client_id, acr=grant.acr
            )

    def query_authorization_code(self, code: str, client: OidcClient) -> _Code | None:
        """Single use: the code is marked used here, before anything else is checked; a code used before
        revokes its grant (RFC 6749 4.1.2: every token issued from it)."""
        if not isinstance(code, str) or len(code) > 256:
            return None
        ctx = self.ctx
        now = ctx.now()
        code_hash = hash_token(code)
        with ctx.db.transaction() as conn:
            row = grant_store.use_code(conn, code_hash=code_hash, client_id=client.get_client_id(), now=now)
            if row is None:
                replayed = grant_store.used_code_grant(conn, code_hash=code_hash)
                if replayed is not None and grant_store.revoke_grant(conn, grant_id=replayed, now=now):
                    log.warning("an authorization code was used twice: grant %s revoked", replayed)
                return None
        self.request.twostep_grant = row.grant
        return _Code(row)

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        pass  # used in query_authorization_code, kept as a tombstone until it expires

    def authenticate_user(self, authorization_code: _Code) -> OidcUser | None:
        with self.ctx.db.read() as conn:
            return load_user(conn, authorization_code.grant.account_id)


class _RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]  # Authlib has no type hints
    TOKEN_ENDPOINT_AUTH_METHODS: Final = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def ctx(self) -> Context:
        server: OidcServer = self.server
        return server.ctx

    def _validate_request_token(self, client: OidcClient) -> _RefreshToken:
        from authlib.oauth2.rfc6749.errors import InvalidGrantError

        token = self.request.form.get("refresh_token")
        if not token:
            raise InvalidRequestError("Missing 'refresh_token' in request.")
        if len(token) > 256:
            raise InvalidGrantError()
        ctx = self.ctx
        now = ctx.now()
        refresh_hash = hash_token(token)
        with ctx.db.transaction() as conn:
            grant = grant_store.use_refresh_token(
                conn, refresh_hash=refresh_hash, client_id=client.get_client_id(), now=now
            )
            if grant is None:
                reused = grant_store.used_refresh_grant(conn, refresh_hash=refresh_hash)
                if reused is not None and grant_store.revoke_grant(conn, grant_id=reused, now=now):
                    log.warning("a refresh token was used twice: grant %s revoked", reused)
        if grant is None:
            raise InvalidGrantError()
        self.request.twostep_grant = grant
        return _RefreshToken(grant)

    def authenticate_refresh_token(self, refresh_token: str) -> None:
        raise NotImplementedError  # _validate_request_token does it, atomically

    def authenticate_user(self, refresh_token: _RefreshToken) -> OidcUser | None:
        with self.ctx.db.read() as conn:
            return load_user(conn, refresh_token.grant.account_id)

    def revoke_old_credential(self, refresh_token: _RefreshToken) -> None:
        pass  # marked used in _validate_request_token


class OidcServer(AuthorizationServer):  # type: ignore[misc]  # Authlib has no type hints
    """Authlib's authorization server over twostep's context; one per application (stateless)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(scopes_supported=list(oidc.SCOPES))
        self.ctx = ctx
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(32),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: int(ACCESS_TOKEN_TTL.total_seconds()),
            ),
        )
        self.register_grant(_CodeGrant, [_Pkce(required=True), _IdToken(self)])
        self.register_grant(_RefreshGrant)

    def query_client(self, client_id: str) -> OidcClient | None:
        if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
            return None
        with self.ctx.db.read() as conn:  # reads take no write lock (the token endpoint makes three)
            row = client_store.get(conn, client_id)
        return None if row is None else OidcClient(row)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        grant = request.twostep_grant
        assert grant is not None  # set by the grant that issues the token
        now = self.ctx.now()
        refresh = token.get("refresh_token")
        with self.ctx.db.transaction() as conn:
            grant_store.add_token(
                conn,
                grant_id=grant.id,
                access_hash=hash_token(token["access_token"]),
                access_expires_at=now + ACCESS_TOKEN_TTL,
                refresh_hash=hash_token(refresh) if refresh else None,
                refresh_expires_at=now + REFRESH_TOKEN_TTL if refresh else None,
                now=now,
            )

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        assert isinstance(request, HttpRequest)
        return _Request(request)

    def create_json_request(self, request: Any) -> JsonRequest:
        raise NotImplementedError  # no JSON endpoint of Authlib's is used

    def handle_response(self, status: int, body: Any, headers: Any) -> Answer:
        return Answer(status, body, list(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


def token(server: OidcServer, request: HttpRequest) -> Answer:
    """POST /oidc/token."""
    answer: Answer = server.create_token_response(request)
    return answer


@dataclass(frozen=True)
class UserinfoAnswer:
    claims: dict[str, Any] | None
    error: str | None = None


def userinfo(ctx: Context, access_token: str | None) -> UserinfoAnswer:
    """GET|POST /oidc/userinfo: the claims of the grant's scope, for a live access token of a live grant."""
    if not access_token or len(access_token) > 256:
        return UserinfoAnswer(None, "invalid_token")
    with ctx.db.read() as conn:
        grant = grant_store.grant_of_access_token(conn, access_hash=hash_token(access_token), now=ctx.now())
        user = None if grant is None else load_user(conn, grant.account_id)
    if grant is None or user is None:
        return UserinfoAnswer(None, "invalid_token")
    return UserinfoAnswer(dict(claims_for(user, grant.scope)))


def discovery(origin: str) -> dict[str, Any]:
    """GET /.well-known/openid-configuration."""
    return {
        "issuer": origin,
        "authorization_endpoint": f"{origin}/oidc/authorize",
        "token_endpoint": f"{origin}/oidc/token",
        "userinfo_endpoint": f"{origin}/oidc/userinfo",
        "jwks_uri": f"{origin}/oidc/jwks",
        "end_session_endpoint": f"{origin}/oidc/logout",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(oidc_keys.ALGORITHMS),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(oidc.SCOPES),
        "claims_supported": list(oidc.CLAIMS),
        "acr_values_supported": [a.value for a in oidc.Acr],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


def applications(ctx: Context, account_id: int) -> list[grant_store.Application]:
    with ctx.db.transaction() as conn:
        return grant_store.applications(conn, account_id=account_id, now=ctx.now())


def revoke_application(ctx: Context, account_id: int, client_id: str) -> int:
    with ctx.db.transaction() as conn:
        return grant_store.revoke_client_grants(
            conn, account_id=account_id, client_id=client_id[:64], now=ctx.now()
        )


def sweep(ctx: Context) -> int:
    from twostep.storage import oidc_pending

    now = ctx.now()
    with ctx.db.transaction() as conn:
        n = grant_store.sweep(conn, now=now) + oidc_pending.sweep(conn, now=now)
    return n + oidc_keys.sweep(ctx)


# --- RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ------------------------------------------


@dataclass(frozen=True)
class LogoutPlan:
    """What GET /oidc/logout may do: where to send the browser afterwards (a registered URI, with the
    state), and whether the hint proved that this session's account is the one the client signed in."""

    redirect: str | None
    hint_sub: str | None
    client_name: str | None


class LogoutRefused(Exception):
    """The request names an unknown client, a URI not registered for it, or a hint that is not ours.
    ``message`` is marked with N_: the logout page shows it translated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def plan_logout(
    ctx: Context,
    *,
    id_token_hint: str | None,
    post_logout_redirect_uri: str | None,
    client_id: str | None,
    state: str | None,
) -> LogoutPlan:
    """Raises:
    LogoutRefused.
    """
    from authlib.common.urls import add_params_to_uri
    from joserfc import jwt
    from joserfc.errors import JoseError

    hint_sub = None
    audiences: list[str] = []
    if id_token_hint:
        if len(id_token_hint) > 8192:
            raise LogoutRefused(N_("The id_token_hint is too long."))
        try:
            # Signature only: an expired ID token is still a good hint (RP-Initiated Logout 1.0, 2).
            token = jwt.decode(id_token_hint, oidc_keys.key_set(ctx), algorithms=list(oidc_keys.ALGORITHMS))
        except (JoseError, ValueError):
            raise LogoutRefused(N_("The id_token_hint was not issued by this server.")) from None
        claims = token.claims
        if claims.get("iss") != ctx.origin or not isinstance(claims.get("sub"), str):
            raise LogoutRefused(N_("The id_token_hint was not issued by this server."))
        hint_sub = claims["sub"]
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]
    if client_id and audiences and client_id not in audiences:
        raise LogoutRefused(N_("The client_id does not match the id_token_hint."))
    wanted = client_id or (audiences[0] if len(audiences) == 1 else None)
    client = None
    if wanted:
        with ctx.db.transaction() as conn:
            client = client_store.get(conn, wanted[:64])
        if client is None:
            raise LogoutRefused(N_("This application is not registered here."))
    redirect = None
    if post_logout_redirect_uri:
        if client is None or post_logout_redirect_uri not in client.post_logout_redirect_uris:
            raise LogoutRefused(N_("The post_logout_redirect_uri is not registered for this application."))
        params = [("state", state)] if state and len(state) <= 2048 else []
        redirect = add_params_to_uri(post_logout_redirect_uri, params) if params else post_logout_redirect_uri
    return LogoutPlan(redirect, hint_sub, client.name if client else None)


def subject_of_account(ctx: Context, account_id: int) -> str | None:
    with ctx.db.transaction() as conn:
        handle = grant_store.user_handle(conn, account_id)
    return None if handle is None else oidc.subject(handle)
