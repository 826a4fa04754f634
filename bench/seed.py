"""Bulk-written database state for the load: accounts, second factors, pending sign-ins, challenges.

Rows are written with the schema's own SQLAlchemy tables (twostep.storage.tables), the TOTP secrets sealed
with the server's key exactly as twostep.services.factors does, so every request of the load is a real
sign-in: a fresh pending session, a code (or passkey assertion) never used before, the throttle and replay
checks done by the server.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, func, insert, select, text
from sqlalchemy.pool import NullPool

from twostep.core.secretbox import SecretBox, aad_for
from twostep.core.totp import hotp, time_step
from twostep.keyfile import load_or_create_key
from twostep.storage.tables import accounts, challenges, factors, sessions

PENDING_TTL = timedelta(minutes=5)
BATCH = 2000


def now_utc() -> datetime:
    return datetime.now(UTC)


def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 60})
    # No idle connections kept: the run holds an engine per load, and with the servers' pools and the floors'
    # a kept pool per engine went past PostgreSQL's max_connections (100), which the servers then met.
    return create_engine(url, poolclass=NullPool)


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database, in use or not (SQLite's backup API); WAL mode is kept."""
    import sqlite3

    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(dst)) as b:
        a.backup(b)
        b.execute("PRAGMA journal_mode=WAL")


def server_box(data_dir: Path) -> SecretBox:
    """The sealing key of the server that uses ``data_dir`` (created now if the server has not started)."""
    return SecretBox(load_or_create_key(data_dir / "secret.key"))


def _chunks(rows: list[dict[str, object]]) -> list[list[dict[str, object]]]:
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]


def _insert(conn: Connection, table: object, rows: list[dict[str, object]]) -> None:
    for chunk in _chunks(rows):
        conn.execute(insert(table), chunk)  # type: ignore[arg-type]


def next_account_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(accounts.c.id), 0))).scalar_one()) + 1


def add_accounts(conn: Connection, n: int, *, prefix: str, password_hash: str, now: datetime) -> list[int]:
    """``n`` accounts named ``<prefix><id>`` (no e-mail, so no notification mail is queued)."""
    first = next_account_id(conn)
    ids = list(range(first, first + n))
    _insert(
        conn,
        accounts,
        [
            {
                "id": i,
                "username": f"{prefix}{i}",
                "display_name": f"{prefix}{i}",
                "password_hash": password_hash,
                "email": None,
                "user_handle": secrets.token_bytes(64),
                "created_at": now,
            }
            for i in ids
        ],
    )
    if conn.dialect.name == "postgresql":
        # The ids were given, not drawn: move the sequence past them, so that the application's own inserts
        # (sign-ups on the same database, as in the tests) do not draw one of them.
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))")
        )
    return ids


@dataclass
class TotpAccount:
    account_id: int
    factor_id: str
    secret: bytes
    last_step: int  # the last time step the bench has used a code of (the server keeps its own)

    def code(self, step: int) -> str:
        return hotp(self.secret, step)


def add_totp(conn: Connection, account_ids: list[int], *, box: SecretBox, now: datetime) -> list[TotpAccount]:
    """One authenticator-app factor per account, enrolled 10 steps ago."""
    enrolled = time_step(now) - 10
    out: list[TotpAccount] = []
    rows: list[dict[str, object]] = []
    for account_id in account_ids:
        factor_id = secrets.token_urlsafe(16)
        secret = secrets.token_bytes(20)
        sealed = box.seal(secret, aad=aad_for("factors", "totp_secret", factor_id))
        rows.append(
            {
                "id": factor_id,
                "account_id": account_id,
                "type": "totp",
                "name": "Authenticator app",
                "created_at": now,
                "last_used_at": None,
                "totp_secret": sealed,
                "totp_last_step": enrolled,
            }
        )
        out.append(TotpAccount(account_id, factor_id, secret, enrolled))
    _insert(conn, factors, rows)
    return out


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_pending(conn: Connection, account_ids: list[int], *, now: datetime) -> list[str]:
    """A pending sign-in (password accepted, second factor owed) per account id; returns the cookie values."""
    tokens = [secrets.token_urlsafe(32) for _ in account_ids]
    _insert(
        conn,
        sessions,
        [
            {
                "token_hash": token_hash(token),
                "public_id": secrets.token_urlsafe(16),
                "account_id": account_id,
                "kind": "pending",
                "created_at": now,
                "signed_in_at": now,
                "last_seen_at": now,
                "expires_at": now + PENDING_TTL,
                "second_factor": None,
                "verified_until": None,
                "reauth_until": None,
                "alerted": False,
                "ip": "127.0.0.1",
                "user_agent": "",
            }
            for token, account_id in zip(tokens, account_ids, strict=True)
        ],
    )
    return tokens


def totp_lines(
    engine: Engine, box: SecretBox, n: int, *, prefix: str, password_hash: str
) -> list[tuple[str | None, str]]:
    """``n`` new accounts with an authenticator app and a pending sign-in each; the (cookie, body) of each
    one's sign-in with the code of the current time step (valid for 30 to 60 s from now)."""
    now = now_utc()
    with engine.begin() as conn:
        ids = add_accounts(conn, n, prefix=prefix, password_hash=password_hash, now=now)
        accts = add_totp(conn, ids, box=box, now=now)
        tokens = add_pending(conn, ids, now=now)
    step = time_step(now_utc())
    return [
        (token, json.dumps({"code": a.code(step)}, separators=(",", ":")))
        for token, a in zip(tokens, accts, strict=True)
    ]


def totp_lines_for(
    engine: Engine, accts: list[TotpAccount], steps: list[int]
) -> list[tuple[str | None, str]]:
    """Sign-ins of existing accounts, one per account and step, in blocks of ascending steps (so that
    an account's earlier step is used before its later one); each with its own new pending sign-in."""
    now = now_utc()
    with engine.begin() as conn:
        tokens = add_pending(conn, [a.account_id for a in accts] * len(steps), now=now)
    out: list[tuple[str | None, str]] = []
    i = 0
    for step in steps:
        for a in accts:
            out.append((tokens[i], json.dumps({"code": a.code(step)}, separators=(",", ":"))))
            i += 1
    for a in accts:
        a.last_step = max(a.last_step, *steps)
    return out


def passkey_lines(
    engine: Engine, n: int, *, prefix: str, password_hash: str, origin: str, rp_id: str
) -> list[tuple[str | None, str]]:
    """``n`` new accounts with a passkey (a P-256 key of the software authenticator), a pending sign-in and
    its login challenge each; the (cookie, body) of each one's signed assertion."""
    from tests.support.soft_authenticator import SoftAuthenticator, cose_public_key, generate_private_key

    now = now_utc()
    auth = SoftAuthenticator(rp_id, origin)
    with engine.begin() as conn:
        ids = add_accounts(conn, n, prefix=prefix, password_hash=password_hash, now=now)
        handles = dict(
            conn.execute(select(accounts.c.id, accounts.c.user_handle).where(accounts.c.id >= ids[0])).all()
        )
        factor_rows: list[dict[str, object]] = []
        creds: list[bytes] = []
        for account_id in ids:
            key = generate_private_key()
            credential_id = secrets.token_bytes(32)
            auth.add_credential(credential_id, key, user_handle=bytes(handles[account_id]))
            creds.append(credential_id)
            factor_rows.append(
                {
                    "id": secrets.token_urlsafe(16),
                    "account_id": account_id,
                    "type": "passkey",
                    "name": "Passkey 1",
                    "created_at": now,
                    "last_used_at": None,
                    "credential_id": credential_id,
                    "public_key": cose_public_key(key),
                    "algorithm": -7,
                    "sign_count": 0,
                    "transports": json.dumps(["internal", "hybrid"]),
                    "aaguid": "00000000-0000-0000-0000-000000000000",
                    "backup_eligible": False,
                    "backup_state": False,
                    "user_verified": True,
                }
            )
        _insert(conn, factors, factor_rows)
        tokens = add_pending(conn, ids, now=now)
        challenge_bytes = [secrets.token_bytes(32) for _ in ids]
        _insert(
            conn,
            challenges,
            [
                {
                    "id": secrets.token_urlsafe(16),
                    "session_key": token_hash(token),
                    "purpose": "login",
                    "challenge": challenge,
                    "account_id": account_id,
                    "expires_at": now + PENDING_TTL,
                }
                for token, challenge, account_id in zip(tokens, challenge_bytes, ids, strict=True)
            ],
        )
    out: list[tuple[str | None, str]] = []
    for token, challenge, credential_id in zip(tokens, challenge_bytes, creds, strict=True):
        assertion = auth.get(challenge, credential_id=credential_id)
        out.append((token, json.dumps({"credential": assertion}, separators=(",", ":"))))
    return out


def password_accounts(engine: Engine, n: int, *, prefix: str, password_hash: str) -> list[str]:
    """``n`` accounts without a second factor; their usernames."""
    with engine.begin() as conn:
        ids = add_accounts(conn, n, prefix=prefix, password_hash=password_hash, now=now_utc())
    return [f"{prefix}{i}" for i in ids]


def bulk_accounts_pg(engine: Engine, *, first_id: int, count: int, password_hash: str) -> None:
    """``count`` more accounts on PostgreSQL in one INSERT ... SELECT generate_series, each with an
    authenticator-app factor (a dummy sealed secret that is never opened), as if every account used two-step
    sign-in; unique usernames and 64-byte user handles."""
    last = first_id + count - 1
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        # Bulk load of rows consistent by construction: skip the per-row foreign-key triggers.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(
                "INSERT INTO accounts "
                "(id, username, display_name, password_hash, email, user_handle, created_at) "
                "SELECT g, 'bulk' || g, 'bulk' || g, :hash, NULL, sha512(('bulk' || g)::bytea), now() "
                "FROM generate_series(:first, :last) AS g"
            ),
            {"hash": password_hash, "first": first_id, "last": last},
        )
        conn.execute(
            text(
                "INSERT INTO factors (id, account_id, type, name, created_at, totp_secret, totp_last_step) "
                "SELECT 'bulk' || g, g, 'totp', 'Authenticator app', now(), "
                "'\\x01'::bytea || sha256(('s' || g)::bytea) || sha256(('t' || g)::bytea), NULL "
                "FROM generate_series(:first, :last) AS g"
            ),
            {"first": first_id, "last": last},
        )
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))")
        )
    analyze(engine)


def analyze(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


# --- OpenID Connect (O1, O2) -------------------------------------------------------------------------------

OIDC_REDIRECT = "https://app.example/callback"


@dataclass
class OidcClient:
    client_id: str
    secret: str
    account_id: int


def oidc_client(engine: Engine, *, password_hash: str) -> OidcClient:
    """A confidential client and one account to authorize it."""
    from twostep.storage import oidc_clients
    from twostep.storage.oidc_clients import ClientRow

    now = now_utc()
    secret = secrets.token_urlsafe(32)
    client_id = secrets.token_urlsafe(18)
    with engine.begin() as conn:
        (account_id,) = add_accounts(conn, 1, prefix="o1u", password_hash=password_hash, now=now)
        oidc_clients.add(
            conn,
            ClientRow(
                id=client_id,
                name="bench",
                secret_hash=token_hash(secret),
                redirect_uris=(OIDC_REDIRECT,),
                post_logout_redirect_uris=(),
                policy="one_factor",
                users=(),
                groups=(),
                signing_alg="RS256",
                created_at=now,
            ),
        )
    return OidcClient(client_id, secret, account_id)


def _grants(conn: Connection, client: OidcClient, n: int, *, now: datetime, ttl: timedelta) -> list[str]:
    from twostep.storage import oidc_grants

    ids = []
    for _ in range(n):
        grant_id = secrets.token_urlsafe(16)
        oidc_grants.add_grant(
            conn,
            oidc_grants.GrantRow(
                id=grant_id,
                client_id=client.client_id,
                account_id=client.account_id,
                scope="openid profile email groups",
                nonce="n",
                auth_time=now,
                amr="pwd otp mfa",
                acr="mfa",
                session_id=None,
                created_at=now,
                revoked_at=None,
                expires_at=now + ttl,
            ),
        )
        ids.append(grant_id)
    return ids


def oidc_code_lines(engine: Engine, client: OidcClient, n: int) -> list[tuple[str | None, str]]:
    """O1: ``n`` authorization codes (valid 60 s); each line a token request with client_secret_post."""
    from urllib.parse import urlencode

    from twostep.storage import oidc_grants

    now = now_utc()
    codes = [secrets.token_urlsafe(36) for _ in range(n)]
    with engine.begin() as conn:
        grant_ids = _grants(conn, client, n, now=now, ttl=timedelta(minutes=10))
        for code, grant_id in zip(codes, grant_ids, strict=True):
            oidc_grants.add_code(
                conn,
                code_hash=token_hash(code),
                grant_id=grant_id,
                client_id=client.client_id,
                redirect_uri=OIDC_REDIRECT,
                code_challenge=None,
                code_challenge_method=None,
                expires_at=now + timedelta(seconds=60),
            )
    return [
        (
            None,
            urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": OIDC_REDIRECT,
                    "client_id": client.client_id,
                    "client_secret": client.secret,
                }
            ),
        )
        for code in codes
    ]


def oidc_token_lines(engine: Engine, client: OidcClient, n: int) -> list[tuple[str | None, str]]:
    """O2: ``n`` access tokens (valid 10 minutes); each line a userinfo request (form access_token)."""
    from twostep.storage import oidc_grants

    now = now_utc()
    tokens = [secrets.token_urlsafe(32) for _ in range(n)]
    with engine.begin() as conn:
        grant_ids = _grants(conn, client, n, now=now, ttl=timedelta(minutes=10))
        for token, grant_id in zip(tokens, grant_ids, strict=True):
            oidc_grants.add_token(
                conn,
                grant_id=grant_id,
                access_hash=token_hash(token),
                access_expires_at=now + timedelta(minutes=10),
                refresh_hash=None,
                refresh_expires_at=None,
                now=now,
            )
    return [(None, f"access_token={token}") for token in tokens]
