"""ID token signing keys: RS256 always, ES256 for clients that ask for it.

The private keys are kept in the database sealed with the secret box (like the TOTP secrets: ``twostep
rotate-key`` re-seals them), so that every worker and every machine signs with the same key. A worker opens a
key once and keeps it (by key id) for as long as it lives; the list of keys is read from the database at each
use, so that a rotation made by the command is seen by every worker at once.

Rotation (``twostep rotate-signing-key``): a new key per algorithm is published in the JWKS at once and signs
from ``delay`` on (caches of relying parties pick it up meanwhile); the key it replaces keeps being published
until every ID token signed with it has expired, then it is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from joserfc.jwk import ECKey, KeySet, RSAKey

from twostep.core.secretbox import KeyRing, SecretBox, SecretBoxError, aad_for
from twostep.services.context import Context
from twostep.storage import oidc_signing_keys as store
from twostep.storage.oidc_signing_keys import SigningKeyRow

log = logging.getLogger("twostep.oidc")

ALGORITHMS: Final = ("RS256", "ES256")
ID_TOKEN_TTL: Final = timedelta(hours=1)
ROTATION_DELAY: Final = timedelta(hours=1)
# How long the JWKS may be cached (Cache-Control max-age).
JWKS_MAX_AGE: Final = 300

SigningKey = RSAKey | ECKey

_opened: dict[str, SigningKey] = {}
_lock = threading.Lock()
# The list of keys, read again at most this often by a worker (a rotation is seen within seconds; the new
# key signs only after its delay anyway). Keyed by the database, for processes that serve several.
ROWS_TTL: Final = 5.0
_rows: dict[int, tuple[float, list[SigningKeyRow]]] = {}


def _cached_rows(ctx: Context) -> list[SigningKeyRow]:
    key = id(ctx.db)
    with _lock:
        hit = _rows.get(key)
    if hit is not None and time.monotonic() - hit[0] < ROWS_TTL:
        return hit[1]
    with ctx.db.transaction() as conn:
        rows = store.every(conn)
    with _lock:
        _rows[key] = (time.monotonic(), rows)
    return rows


def _forget_rows(ctx: Context) -> None:
    with _lock:
        _rows.pop(id(ctx.db), None)


def _aad(kid: str) -> bytes:
    return aad_for("oidc_signing_keys", "private_key", kid)


def _generate(alg: str) -> SigningKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", auto_kid=True)
    return RSAKey.generate_key(2048, auto_kid=True)


def _new_row(ctx: Context, alg: str, *, now: datetime, active_from: datetime) -> SigningKeyRow:
    key = _generate(alg)
    kid = str(key.kid)
    public: dict[str, Any] = dict(key.as_dict(private=False))
    public.update({"kid": kid, "alg": alg, "use": "sig"})
    sealed = ctx.box.seal(key.as_pem(private=True), aad=_aad(kid))
    return SigningKeyRow(
        kid=kid,
        alg=alg,
        private_key=sealed,
        public_jwk=json.dumps(public, sort_keys=True),
        created_at=now,
        active_from=active_from,
        retired_at=None,
        drop_after=None,
    )


def _published(rows: list[SigningKeyRow], now: datetime) -> list[SigningKeyRow]:
    return [r for r in rows if r.drop_after is None or r.drop_after > now]


def _current(rows: list[SigningKeyRow], alg: str, now: datetime) -> SigningKeyRow | None:
    """The key that signs now: the newest of this algorithm whose time has come."""
    live = [r for r in _published(rows, now) if r.alg == alg and r.active_from <= now]
    return max(live, key=lambda r: (r.active_from, r.kid), default=None)


def ensure_keys(ctx: Context, now: datetime | None = None) -> list[SigningKeyRow]:
    """The keys, after creating a first key of each algorithm that has none (first start)."""
    now = now or ctx.now()
    with ctx.db.transaction() as conn:
        rows = store.every(conn)
        for alg in ALGORITHMS:
            if _current(rows, alg, now) is None:
                store.add(conn, _new_row(ctx, alg, now=now, active_from=now))
        return store.every(conn)


def _open(ctx: Context, row: SigningKeyRow) -> SigningKey:
    with _lock:
        key = _opened.get(row.kid)
    if key is not None:
        return key
    try:
        pem = ctx.box.open(row.private_key, aad=_aad(row.kid))
    except SecretBoxError:
        log.error(
            "The OpenID Connect signing key %s cannot be opened with this server's key file: every server "
            "that shares this database must have the same key file.",
            row.kid,
        )
        raise
    params: Any = {"kid": row.kid, "alg": row.alg, "use": "sig"}
    key = ECKey.import_key(pem, params) if row.alg == "ES256" else RSAKey.import_key(pem, params)
    with _lock:
        _opened[row.kid] = key
    return key


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str
    key: SigningKey


def signer(ctx: Context, alg: str) -> Signer:
    """The key that signs ID tokens with ``alg`` now."""
    now = ctx.now()
    row = _current(_cached_rows(ctx), alg, now)
    if row is None:
        _forget_rows(ctx)
        row = _current(ensure_keys(ctx, now), alg, now)
    assert row is not None  # ensure_keys made one
    return Signer(row.kid, row.alg, _open(ctx, row))


def jwks(ctx: Context) -> dict[str, Any]:
    """The public keys to publish: the current ones, the next ones, and the retired ones whose ID tokens may
    still be live."""
    now = ctx.now()
    rows = ensure_keys(ctx, now)
    return {"keys": [json.loads(r.public_jwk) for r in _published(rows, now)]}


def key_set(ctx: Context) -> KeySet:
    """The published keys, to verify an ID token of ours (RP-initiated logout)."""
    return KeySet.import_key_set(jwks(ctx))  # type: ignore[arg-type]  # joserfc types the dict narrowly


@dataclass(frozen=True)
class Rotation:
    added: list[str]
    active_from: datetime
    retiring: list[str]
    dropped: int


def rotate(ctx: Context, *, delay: timedelta = ROTATION_DELAY) -> Rotation:
    """Add a new key per algorithm, signing from ``now + delay``; the keys it replaces stop signing then and
    are dropped once the ID tokens they signed have expired. Keys already past that are dropped now."""
    now = ctx.now()
    active_from = now + delay
    added: list[str] = []
    retiring: list[str] = []
    with ctx.db.transaction() as conn:
        dropped = store.drop_expired(conn, now=now)
        rows = store.every(conn)
        for alg in ALGORITHMS:
            for row in rows:
                if row.alg == alg and row.retired_at is None:
                    store.retire(conn, kid=row.kid, at=active_from, drop_after=active_from + ID_TOKEN_TTL)
                    retiring.append(row.kid)
            new = _new_row(ctx, alg, now=now, active_from=active_from)
            store.add(conn, new)
            added.append(new.kid)
    _forget_rows(ctx)
    return Rotation(added, active_from, retiring, dropped)


def sweep(ctx: Context) -> int:
    with ctx.db.transaction() as conn:
        return store.drop_expired(conn, now=ctx.now())


def reseal(conn: Any, *, old: KeyRing | SecretBox, new: SecretBox) -> int:
    """``twostep rotate-key``: the signing keys re-sealed with the new secret key, in the caller's
    transaction."""
    count = 0
    for row in store.every(conn):
        pem = old.open(row.private_key, aad=_aad(row.kid))
        store.set_sealed(conn, kid=row.kid, private_key=new.seal(pem, aad=_aad(row.kid)))
        count += 1
    return count
