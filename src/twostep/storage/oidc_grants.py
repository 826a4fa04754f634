"""OpenID Connect grants and what is issued from them: authorization codes and access/refresh tokens.

A grant is the family of one authorization: a replayed code or a reused refresh token sets its
``revoked_at``, and every token of a revoked grant stops working (the lookups join the grant), whatever the
order in which the requests of a race commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from twostep.storage.db import first, first_mapping, run
from twostep.storage.tables import accounts, oidc_clients, oidc_codes, oidc_grants, oidc_tokens


@dataclass(frozen=True)
class GrantRow:
    id: str
    client_id: str
    account_id: int
    scope: str
    nonce: str | None
    auth_time: datetime
    amr: str
    acr: str
    session_id: str | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime


@dataclass(frozen=True)
class CodeRow:
    grant: GrantRow
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str | None


_GRANT_COLUMNS = (
    oidc_grants.c.id,
    oidc_grants.c.client_id,
    oidc_grants.c.account_id,
    oidc_grants.c.scope,
    oidc_grants.c.nonce,
    oidc_grants.c.auth_time,
    oidc_grants.c.amr,
    oidc_grants.c.acr,
    oidc_grants.c.session_id,
    oidc_grants.c.created_at,
    oidc_grants.c.revoked_at,
    oidc_grants.c.expires_at,
)


def add_grant(conn: Connection, grant: GrantRow) -> None:
    conn.execute(insert(oidc_grants).values(**grant.__dict__))


# The statements of the token and userinfo endpoints are built once, with bound parameters (O1, O2).
_GET_GRANT = select(*_GRANT_COLUMNS).where(oidc_grants.c.id == bindparam("b_id"))
_USE_CODE = (
    update(oidc_codes)
    .where(
        oidc_codes.c.code_hash == bindparam("b_hash"),
        oidc_codes.c.client_id == bindparam("b_client"),
        oidc_codes.c.used_at.is_(None),
        oidc_codes.c.expires_at > bindparam("b_now"),
    )
    .values(used_at=bindparam("b_used", type_=oidc_codes.c.used_at.type))
    .returning(
        oidc_codes.c.grant_id,
        oidc_codes.c.redirect_uri,
        oidc_codes.c.code_challenge,
        oidc_codes.c.code_challenge_method,
    )
)
_ADD_TOKEN = insert(oidc_tokens)
_EXTEND_GRANT = (
    update(oidc_grants)
    .where(oidc_grants.c.id == bindparam("b_id"), oidc_grants.c.expires_at < bindparam("b_until"))
    .values(expires_at=bindparam("b_new_until", type_=oidc_grants.c.expires_at.type))
)
_GRANT_OF_ACCESS_TOKEN = (
    select(*_GRANT_COLUMNS)
    .join(oidc_tokens, oidc_tokens.c.grant_id == oidc_grants.c.id)
    .where(
        oidc_tokens.c.access_hash == bindparam("b_hash"),
        oidc_tokens.c.access_expires_at > bindparam("b_now"),
        oidc_grants.c.revoked_at.is_(None),
    )
)


def get_grant(conn: Connection, grant_id: str) -> GrantRow | None:
    r = first_mapping(conn, _GET_GRANT, {"b_id": grant_id})
    return None if r is None else GrantRow(**r)


def add_code(
    conn: Connection,
    *,
    code_hash: str,
    grant_id: str,
    client_id: str,
    redirect_uri: str,
    code_challenge: str | None,
    code_challenge_method: str | None,
    expires_at: datetime,
) -> None:
    conn.execute(
        insert(oidc_codes).values(
            code_hash=code_hash,
            grant_id=grant_id,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            expires_at=expires_at,
            used_at=None,
        )
    )


def use_code(conn: Connection, *, code_hash: str, client_id: str, now: datetime) -> CodeRow | None:
    """Single use: one conditional UPDATE ... RETURNING marks the live, unused code of this client used;
    of concurrent requests with one code, exactly one gets it. None for any other code."""
    params = {"b_hash": code_hash, "b_client": client_id, "b_now": now, "b_used": now}
    r = first(conn, _USE_CODE, params)
    if r is None:
        return None
    grant_id, redirect_uri, code_challenge, code_challenge_method = r
    grant = get_grant(conn, grant_id)
    if grant is None or grant.revoked_at is not None:
        return None
    return CodeRow(grant, redirect_uri, code_challenge, code_challenge_method)


def used_code_grant(conn: Connection, *, code_hash: str) -> str | None:
    """The grant of a code that was used already (kept until it expires): a replay."""
    return conn.execute(
        select(oidc_codes.c.grant_id).where(
            oidc_codes.c.code_hash == code_hash, oidc_codes.c.used_at.is_not(None)
        )
    ).scalar()


def revoke_grant(conn: Connection, *, grant_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(oidc_grants)
        .where(oidc_grants.c.id == grant_id, oidc_grants.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def add_token(
    conn: Connection,
    *,
    grant_id: str,
    access_hash: str,
    access_expires_at: datetime,
    refresh_hash: str | None,
    refresh_expires_at: datetime | None,
    now: datetime,
) -> None:
    run(
        conn,
        _ADD_TOKEN,
        {
            "grant_id": grant_id,
            "access_hash": access_hash,
            "access_expires_at": access_expires_at,
            "refresh_hash": refresh_hash,
            "refresh_expires_at": refresh_expires_at,
            "refresh_used_at": None,
            "created_at": now,
        },
    )
    # The grant lives as long as the longest-lived token issued from it.
    until = max(access_expires_at, refresh_expires_at or access_expires_at)
    run(conn, _EXTEND_GRANT, {"b_id": grant_id, "b_until": until, "b_new_until": until})


def grant_of_access_token(conn: Connection, *, access_hash: str, now: datetime) -> GrantRow | None:
    """The live grant of a live access token."""
    r = first_mapping(conn, _GRANT_OF_ACCESS_TOKEN, {"b_hash": access_hash, "b_now": now})
    return None if r is None else GrantRow(**r)


def use_refresh_token(
    conn: Connection, *, refresh_hash: str, client_id: str, now: datetime
) -> GrantRow | None:
    """Rotation: one conditional UPDATE ... RETURNING marks the live refresh token used, once."""
    live_grant = (
        select(oidc_grants.c.id)
        .where(oidc_grants.c.revoked_at.is_(None), oidc_grants.c.client_id == client_id)
        .scalar_subquery()
    )
    grant_id = conn.execute(
        update(oidc_tokens)
        .where(
            oidc_tokens.c.refresh_hash == refresh_hash,
            oidc_tokens.c.refresh_used_at.is_(None),
            oidc_tokens.c.refresh_expires_at > now,
            oidc_tokens.c.grant_id.in_(live_grant),
        )
        .values(refresh_used_at=now)
        .returning(oidc_tokens.c.grant_id)
    ).scalar()
    return None if grant_id is None else get_grant(conn, grant_id)


def used_refresh_grant(conn: Connection, *, refresh_hash: str) -> str | None:
    """The grant of a refresh token that was used already: a reuse."""
    return conn.execute(
        select(oidc_tokens.c.grant_id).where(
            oidc_tokens.c.refresh_hash == refresh_hash, oidc_tokens.c.refresh_used_at.is_not(None)
        )
    ).scalar()


@dataclass(frozen=True)
class Application:
    client_id: str
    name: str
    since: datetime


def applications(conn: Connection, *, account_id: int, now: datetime) -> list[Application]:
    """The clients holding live grants of this account (the account page)."""
    rows = conn.execute(
        select(oidc_clients.c.id, oidc_clients.c.name, func.min(oidc_grants.c.created_at).label("since"))
        .join(oidc_grants, oidc_grants.c.client_id == oidc_clients.c.id)
        .where(
            oidc_grants.c.account_id == account_id,
            oidc_grants.c.revoked_at.is_(None),
            oidc_grants.c.expires_at > now,
        )
        .group_by(oidc_clients.c.id, oidc_clients.c.name)
        .order_by(oidc_clients.c.name)
    ).all()
    return [Application(r.id, r.name, r.since) for r in rows]


def revoke_client_grants(conn: Connection, *, account_id: int, client_id: str, now: datetime) -> int:
    result = conn.execute(
        update(oidc_grants)
        .where(
            oidc_grants.c.account_id == account_id,
            oidc_grants.c.client_id == client_id,
            oidc_grants.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def user_handle(conn: Connection, account_id: int) -> bytes | None:
    return conn.execute(select(accounts.c.user_handle).where(accounts.c.id == account_id)).scalar()


def sweep(conn: Connection, *, now: datetime) -> int:
    """Expired codes and grants (with their tokens)."""
    n = conn.execute(delete(oidc_codes).where(oidc_codes.c.expires_at <= now)).rowcount
    n += conn.execute(delete(oidc_grants).where(oidc_grants.c.expires_at <= now)).rowcount
    return int(n)
