"""OpenID Connect clients registered by the operator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select

from twostep.storage.db import first_mapping
from twostep.storage.tables import oidc_clients


@dataclass(frozen=True)
class ClientRow:
    id: str
    name: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    policy: str
    users: tuple[str, ...]
    groups: tuple[str, ...]
    signing_alg: str
    created_at: datetime


def _row(r: Row[Any]) -> ClientRow:
    return _client(r._mapping)


def _client(m: Mapping[Any, Any]) -> ClientRow:
    return ClientRow(
        id=m["id"],
        name=m["name"],
        secret_hash=m["secret_hash"],
        redirect_uris=tuple(json.loads(m["redirect_uris"])),
        post_logout_redirect_uris=tuple(json.loads(m["post_logout_redirect_uris"])),
        policy=m["policy"],
        users=tuple(json.loads(m["users"])),
        groups=tuple(json.loads(m["groups"])),
        signing_alg=m["signing_alg"],
        created_at=m["created_at"],
    )


def add(conn: Connection, row: ClientRow) -> None:
    conn.execute(
        insert(oidc_clients).values(
            id=row.id,
            name=row.name,
            secret_hash=row.secret_hash,
            redirect_uris=json.dumps(list(row.redirect_uris)),
            post_logout_redirect_uris=json.dumps(list(row.post_logout_redirect_uris)),
            policy=row.policy,
            users=json.dumps(list(row.users)),
            groups=json.dumps(list(row.groups)),
            signing_alg=row.signing_alg,
            created_at=row.created_at,
        )
    )


_GET = select(oidc_clients).where(oidc_clients.c.id == bindparam("b_id"))  # every token request


def get(conn: Connection, client_id: str) -> ClientRow | None:
    r = first_mapping(conn, _GET, {"b_id": client_id})
    return None if r is None else _client(r)


def every(conn: Connection) -> list[ClientRow]:
    return [_row(r) for r in conn.execute(select(oidc_clients).order_by(oidc_clients.c.created_at))]


def remove(conn: Connection, client_id: str) -> bool:
    """Remove the client; its grants, codes and tokens go with it (ON DELETE CASCADE)."""
    return conn.execute(delete(oidc_clients).where(oidc_clients.c.id == client_id)).rowcount == 1
