"""OpenID Connect clients, registered by the operator (`twostep client add|list|remove`).

The messages of ``add`` are for the operator at the command line, which speaks English: they are not in the
catalogues (issue 19). A person signing in never sees them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from twostep.core.access import Policy
from twostep.core.errors import InvalidRequest
from twostep.core.names import normalize_group, normalize_username
from twostep.services.context import Context
from twostep.storage import oidc_clients as store
from twostep.storage.oidc_clients import ClientRow

SIGNING_ALGS = ("RS256", "ES256")
MAX_URI = 512


def hash_secret(secret: str) -> str:
    """The stored form of a client secret: SHA-256 (32 random bytes: a fast hash is right)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(row: ClientRow, secret: str | None) -> bool:
    if row.secret_hash is None or not secret or len(secret) > 256:
        return False
    return hmac.compare_digest(row.secret_hash.encode(), hash_secret(secret).encode())


def _check_uri(uri: str, what: str) -> str:
    """An absolute http(s) URI without a fragment; http only for a loopback host (RFC 8252)."""
    parts = urlsplit(uri)
    if len(uri) > MAX_URI or parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise InvalidRequest(f"{what} must be an absolute https URI without a fragment: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise InvalidRequest(f"{what} must use https (http only for localhost): {uri!r}")
    return uri


@dataclass(frozen=True)
class NewClient:
    row: ClientRow
    secret: str | None


def add(
    ctx: Context,
    *,
    name: str,
    redirect_uris: list[str],
    public: bool = False,
    policy: str = Policy.ONE_FACTOR,
    groups: list[str] | None = None,
    users: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    signing_alg: str = "RS256",
) -> NewClient:
    """Register a client; its secret (confidential clients) is returned here and never again.

    Raises:
        InvalidRequest: a name, URI, policy, group, user or algorithm that cannot be used.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("The client name must have 1 to 100 characters.")
    if not redirect_uris:
        raise InvalidRequest("A client needs at least one --redirect-uri.")
    if policy not in (Policy.ONE_FACTOR, Policy.TWO_FACTOR):
        raise InvalidRequest("The policy must be one_factor or two_factor.")
    if signing_alg not in SIGNING_ALGS:
        raise InvalidRequest("The signing algorithm must be RS256 or ES256.")
    uris = [_check_uri(u, "--redirect-uri") for u in redirect_uris]
    logout_uris = [_check_uri(u, "--post-logout-redirect-uri") for u in post_logout_redirect_uris or []]
    group_names: list[str] = []
    for g in groups or []:
        n = normalize_group(g)
        if n is None:
            raise InvalidRequest(f"Not a group name: {g!r}")
        group_names.append(n)
    user_names: list[str] = []
    for u in users or []:
        n = normalize_username(u)
        if n is None:
            raise InvalidRequest(f"Not a username: {u!r}")
        user_names.append(n)
    secret = None if public else secrets.token_urlsafe(32)
    row = ClientRow(
        id=secrets.token_urlsafe(18),
        name=name,
        secret_hash=None if secret is None else hash_secret(secret),
        redirect_uris=tuple(dict.fromkeys(uris)),
        post_logout_redirect_uris=tuple(dict.fromkeys(logout_uris)),
        policy=str(policy),
        users=tuple(sorted(set(user_names))),
        groups=tuple(sorted(set(group_names))),
        signing_alg=signing_alg,
        created_at=ctx.now(),
    )
    with ctx.db.transaction() as conn:
        store.add(conn, row)
    return NewClient(row, secret)


def every(ctx: Context) -> list[ClientRow]:
    with ctx.db.transaction() as conn:
        return store.every(conn)


def get(ctx: Context, client_id: str) -> ClientRow | None:
    if not client_id or len(client_id) > 64:
        return None
    with ctx.db.transaction() as conn:
        return store.get(conn, client_id)


def remove(ctx: Context, client_id: str) -> bool:
    """Remove the client and every grant, code and token issued to it."""
    with ctx.db.transaction() as conn:
        return store.remove(conn, client_id)
