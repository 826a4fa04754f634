"""The floor (issue 16): twostep's TOTP sign-in step with the least machinery that still does all of its work.

One Starlette route, ``POST /api/v1/login/totp``, that runs exactly the statements twostep runs per TOTP step
(the same SQL text, captured from twostep by bench/statements.py and checked again in every run), in one
transaction, with the standard library's ``sqlite3`` or with psycopg 3 directly, and answers with twostep's
body, cookie and headers. Every answer is a real sign-in: the pending sign-in is looked up by the SHA-256 of
its cookie, the per-address counter and the account's attempt counter are counted, the factor's secret is
opened with AES-256-GCM (twostep's key file and associated data), the code is checked against the time steps
T-1..T+1 (twostep.core.totp, which is pure), the step is taken by compare-and-set, the pending sign-in is
consumed, a session is created, the counter reset and the ``signed_in`` event written.

Only the success path is twostep's: a wrong code, an unknown cookie or a counter that says wait is answered
with twostep's status and error shape but rolled back, not recorded (a valid bench run has none of them).

``FLOOR_MODE`` chooses how the database work runs:

* ``sqlite-loop``: one ``sqlite3`` connection, the transaction run in the event loop (SQLite's writes are
  serialised anyway; nothing else runs while it does).
* ``sqlite-thread``: the same transaction in Starlette's thread pool (anyio, as twostep's sync endpoints),
  one connection shared under a ``threading.Lock`` (writers queue on it rather than in SQLite's busy
  handler, as twostep's storage/db.py does).
* ``pg-async``: psycopg's ``AsyncConnection``, a pool of ``FLOOR_PG_POOL`` connections, in the event loop.
* ``pg-thread``: psycopg's sync ``Connection`` in the thread pool, a pool of ``FLOOR_PG_POOL``.

Set-up, from the environment: ``FLOOR_DATA_DIR`` (``secret.key``, and ``twostep.sqlite3`` for SQLite),
``FLOOR_DATABASE_URL`` (PostgreSQL), ``FLOOR_RATE_LIMIT`` (the per-address limit, as
TWOSTEP_RATE_LIMIT_PER_MINUTE). Run by bench.servers as ``uvicorn bench.floor_app:app`` with the options
``twostep serve`` uses.

``GET /_floor/stats`` tells the bench how many answers were sign-ins and which statements the traced
requests ran (every request of the first few after ``POST /_floor/reset``, then one in ``TRACE_EVERY``):
SQLite's own trace callback on SQLite, the text sent to psycopg on PostgreSQL, normalised by
bench.statements.normalise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import re
import secrets
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.statements import normalise
from twostep.core.errors import InvalidCode
from twostep.core.secretbox import aad_for
from twostep.core.totp import verify_code

MODE = os.environ.get("FLOOR_MODE", "sqlite-loop")
DATA_DIR = Path(os.environ.get("FLOOR_DATA_DIR", "twostep-data"))
RATE_LIMIT = int(os.environ.get("FLOOR_RATE_LIMIT", "120"))
PG_POOL = int(os.environ.get("FLOOR_PG_POOL", "16"))
PG_URL = re.sub(r"^postgresql\+\w+://", "postgresql://", os.environ.get("FLOOR_DATABASE_URL", ""))
TRACE_FIRST = 16
TRACE_EVERY = 32

# twostep's constants (services/context.py, core/throttle.py SECOND_FACTOR, services/regulator.py).
SESSION_ABSOLUTE = timedelta(hours=12)
PASSKEY_UPGRADE = timedelta(minutes=5)
WINDOW = 60
FREE = 5  # failures before the backoff starts
CAP = 100  # no attempt at all past this many failures
FIRST_DELAY, MAX_DELAY = 30, 3600
DELAYS = [FIRST_DELAY * 2**i for i in range(7)]  # 30 .. 1920 s: the waits below MAX_DELAY
COOKIE = "twostep_session"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")

# The answer, as twostep sends it: JSONResponse, its cookie, and the headers of web/security.py.
BODY = b'{"status":"signed_in"}'
_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
    # The language of the answer (web/language.py): the bench sends no Accept-Language, so the default.
    (b"content-language", b"en"),
]

# ------------------------------------------------------------------------------------------ SQL, SQLite
# The text twostep's SQLAlchemy sends to sqlite3 (python -m bench.statements prints it).

SQLITE_RATE = (
    'INSERT INTO rate_windows ("key", count, expires_at) VALUES (?, ?, ?) ON CONFLICT ("key") DO UPDATE SET '
    "count = (rate_windows.count + ?) RETURNING count"
)
_SESSION_COLUMNS = (
    "sessions.token_hash, sessions.public_id, sessions.account_id, sessions.kind, sessions.created_at, "
    "sessions.signed_in_at, sessions.last_seen_at, sessions.expires_at, sessions.second_factor, "
    "sessions.verified_until, sessions.reauth_until, sessions.alerted, sessions.ip, sessions.user_agent, "
    "sessions.trusted_browser, sessions.passkey_upgrade_until, sessions.amr, sessions.authenticated_at"
)
SQLITE_PENDING = (
    f"SELECT {_SESSION_COLUMNS} \nFROM sessions \n"
    "WHERE sessions.token_hash = ? AND sessions.kind = ? AND sessions.expires_at > ?"
)
_WHENS = " ".join("WHEN (throttles.failures + ? = ?) THEN ?" for _ in DELAYS)
SQLITE_RESERVE = (
    'INSERT INTO throttles ("key", failures, next_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT ("key") '
    "DO UPDATE SET failures = (throttles.failures + ?), next_at = CASE WHEN (throttles.failures + ? < ?) "
    f"THEN NULL {_WHENS} ELSE ? END, updated_at = ? WHERE (throttles.next_at IS NULL OR "
    "throttles.next_at <= ?) AND throttles.failures < ? RETURNING failures"
)
SQLITE_TOTP = (
    "SELECT factors.type, factors.id, factors.totp_secret, factors.totp_last_step \nFROM factors \n"
    "WHERE factors.account_id = ?"
)
SQLITE_ADVANCE = (
    "UPDATE factors SET last_used_at=?, totp_last_step=? WHERE factors.id = ? AND "
    "(factors.totp_last_step IS NULL OR factors.totp_last_step < ?)"
)
SQLITE_CONSUME = (
    "DELETE FROM sessions WHERE sessions.token_hash = ? AND sessions.kind = ? AND sessions.expires_at > ? "
    "RETURNING account_id, (SELECT accounts.locked_at \nFROM accounts \nWHERE id = account_id) AS anon_1"
)
SQLITE_INSERT_SESSION = (
    "INSERT INTO sessions (token_hash, public_id, account_id, kind, created_at, signed_in_at, last_seen_at, "
    "expires_at, second_factor, verified_until, reauth_until, alerted, ip, user_agent, trusted_browser, "
    "passkey_upgrade_until, amr, authenticated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SQLITE_RESET = 'DELETE FROM throttles WHERE throttles."key" = ?'
SQLITE_EVENT = (
    "INSERT INTO security_events (account_id, type, at, ip, user_agent, detail) VALUES (?, ?, ?, ?, ?, ?)"
)

# -------------------------------------------------------------------------------------- SQL, PostgreSQL
# The text twostep's SQLAlchemy sends to psycopg (pyformat, with its casts).

_V, _I, _T, _B = "::VARCHAR", "::INTEGER", "::TIMESTAMP WITH TIME ZONE", "::BIGINT"
PG_RATE = (
    f"INSERT INTO rate_windows (key, count, expires_at) VALUES (%(b_key)s{_V}, %(count)s{_I}, "
    f"%(b_expires)s{_T}) ON CONFLICT (key) DO UPDATE SET count = (rate_windows.count + %(count_1)s{_I}) "
    "RETURNING rate_windows.count"
)
PG_PENDING = (
    f"SELECT {_SESSION_COLUMNS} \nFROM sessions \n"
    f"WHERE sessions.token_hash = %(b_hash)s{_V} AND sessions.kind = %(kind_1)s{_V} "
    f"AND sessions.expires_at > %(b_now)s{_T}"
)
_PG_WHENS = " ".join(
    f"WHEN (throttles.failures + %(failures_1)s{_I} = %(param_{i + 2})s{_I}) THEN %(wait_{i})s{_T}"
    for i in range(len(DELAYS))
)
PG_RESERVE = (
    f"INSERT INTO throttles (key, failures, next_at, updated_at) VALUES (%(key)s{_V}, %(failures)s{_I}, "
    f"%(first_next_at)s{_T}, %(now)s{_T}) ON CONFLICT (key) DO UPDATE SET failures = (throttles.failures + "
    f"%(failures_1)s{_I}), next_at = CASE WHEN (throttles.failures + %(failures_1)s{_I} < %(param_1)s{_I}) "
    f"THEN NULL {_PG_WHENS} ELSE %(wait_max)s{_T} END, updated_at = %(now)s{_T} WHERE (throttles.next_at IS "
    f"NULL OR throttles.next_at <= %(now)s{_T}) AND throttles.failures < %(failures_2)s{_I} "
    "RETURNING throttles.failures"
)
PG_TOTP = (
    "SELECT factors.type, factors.id, factors.totp_secret, factors.totp_last_step \nFROM factors \n"
    f"WHERE factors.account_id = %(b_account)s{_I}"
)
PG_ADVANCE = (
    f"UPDATE factors SET last_used_at=%(b_now)s{_T}, totp_last_step=%(b_new_step)s{_B} WHERE factors.id = "
    f"%(b_id)s{_V} AND (factors.totp_last_step IS NULL OR factors.totp_last_step < %(b_step)s{_B})"
)
PG_CONSUME = (
    f"DELETE FROM sessions WHERE sessions.token_hash = %(b_hash)s{_V} AND sessions.kind = %(kind_1)s{_V} "
    f"AND sessions.expires_at > %(b_now)s{_T} RETURNING sessions.account_id, (SELECT accounts.locked_at "
    "\nFROM accounts \nWHERE accounts.id = sessions.account_id) AS anon_1"
)
PG_INSERT_SESSION = (
    "INSERT INTO sessions (token_hash, public_id, account_id, kind, created_at, signed_in_at, last_seen_at, "
    "expires_at, second_factor, verified_until, reauth_until, alerted, ip, user_agent, trusted_browser, "
    "passkey_upgrade_until, amr, authenticated_at) "
    "VALUES "
    f"(%(token_hash)s{_V}, %(public_id)s{_V}, %(account_id)s{_I}, %(kind)s{_V}, %(created_at)s{_T}, "
    f"%(signed_in_at)s{_T}, %(last_seen_at)s{_T}, %(expires_at)s{_T}, %(second_factor)s{_V}, "
    f"%(verified_until)s{_T}, %(reauth_until)s{_T}, %(alerted)s, %(ip)s{_V}, %(user_agent)s{_V}, "
    f"%(trusted_browser)s{_V}, %(passkey_upgrade_until)s{_T}, %(amr)s{_V}, %(authenticated_at)s{_T})"
)
PG_RESET = f"DELETE FROM throttles WHERE throttles.key = %(b_key)s{_V}"
PG_EVENT = (
    f"INSERT INTO security_events (account_id, type, at, ip, user_agent, detail) VALUES (%(account_id)s{_I}, "
    f"%(type)s{_V}, %(at)s{_T}, %(ip)s{_V}, %(user_agent)s{_V}, %(detail)s{_V}) RETURNING security_events.id"
)

# ------------------------------------------------------------------------------------------ the step

ONE, ALL, COUNT = "one", "all", "count"
Op = tuple[str, str, Any]
Step = Generator[Op, Any, "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """The answer: a new session token, or twostep's error (status, code, message)."""

    token: str | None = None
    status: int = 200
    error: str = ""
    message: str = ""


NO_PENDING = Outcome(None, 401, "no_pending_login", "No sign-in is waiting for a second step.")
INVALID_CODE = Outcome(None, 401, "invalid_code", "The code is not valid.")
TOO_MANY = Outcome(None, 429, "too_many_attempts", "Too many attempts.")


KEY: list[AESGCM] = []  # the server's sealing key, read at start-up


def load_key(data_dir: Path) -> None:
    KEY[:] = [AESGCM(bytes.fromhex((data_dir / "secret.key").read_text().strip()))]


def open_secret(sealed: bytes, factor_id: str) -> bytes | None:
    """twostep's sealed format: 0x01 ‖ 12-byte nonce ‖ ciphertext+tag, bound to its row by the AAD."""
    if len(sealed) < 29 or sealed[:1] != b"\x01":
        return None
    try:
        return KEY[0].decrypt(sealed[1:13], sealed[13:], aad_for("factors", "totp_secret", factor_id))
    except InvalidTag:
        return None


def match_totp(rows: list[Any], code: str, now: datetime) -> tuple[str, int] | None:
    """The factor and time step the code matches, above the factor's last used step (or None)."""
    for factor_id, sealed, last_step in rows:
        secret = open_secret(bytes(sealed), factor_id)
        if secret is None:
            continue
        try:
            step = verify_code(secret=secret, code=code, now=now, last_used_step=None)
        except InvalidCode:
            continue
        if last_step is not None and step <= last_step:
            continue
        return factor_id, step
    return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ts(value: datetime) -> str:
    """A datetime as SQLAlchemy's SQLite dialect stores it: naive UTC, microseconds."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_step(token_hash: str, code: str, ip: str, ua: str, now: datetime) -> Step:
    """The statements of one TOTP step on SQLite; each ``yield`` runs one and receives its result."""
    at = _ts(now)
    start = int(now.timestamp()) // WINDOW * WINDOW
    ends = datetime.fromtimestamp(start + WINDOW, UTC)
    (count,) = yield ONE, SQLITE_RATE, (f"{ip}:{start}", 1, _ts(ends), 1)
    if count > RATE_LIMIT:
        return TOO_MANY
    pend = yield ONE, SQLITE_PENDING, (token_hash, "pending", at)
    if pend is None:
        return NO_PENDING
    public_id, account_id = pend[1], pend[2]
    key = f"mfa:{account_id}"
    ladder: list[object] = []
    for i, d in enumerate(DELAYS):
        ladder += [1, FREE + i, _ts(now + timedelta(seconds=d))]
    wait_max = _ts(now + timedelta(seconds=MAX_DELAY))
    counted = yield ONE, SQLITE_RESERVE, (key, 1, None, at, 1, 1, FREE, *ladder, wait_max, at, at, CAP)
    if counted is None:
        return TOO_MANY
    rows = yield ALL, SQLITE_TOTP, (account_id,)
    match = match_totp([r[1:] for r in rows if r[0] == "totp"], code, now)
    if match is None:
        return INVALID_CODE
    factor_id, step = match
    if (yield COUNT, SQLITE_ADVANCE, (at, step, factor_id, step)) != 1:
        return INVALID_CODE
    consumed = yield ONE, SQLITE_CONSUME, (token_hash, "pending", at)
    if consumed is None or consumed[1] is not None:
        return NO_PENDING
    # The automatic passkey upgrade: granted after a password sign-in of an account without a passkey.
    upgrade = None if any(r[0] == "passkey" for r in rows) else _ts(now + PASSKEY_UPGRADE)
    token = secrets.token_urlsafe(32)
    yield (
        COUNT,
        SQLITE_INSERT_SESSION,
        (
            hash_token(token),
            public_id,
            account_id,
            "active",
            at,
            at,
            at,
            _ts(now + SESSION_ABSOLUTE),
            "totp",
            None,
            None,
            0,
            ip,
            ua,
            None,
            upgrade,
            "pwd otp mfa",
            at,
        ),
    )
    yield COUNT, SQLITE_RESET, (key,)
    detail = json.dumps({"method": "totp", "factor_id": factor_id, "session": public_id})
    yield COUNT, SQLITE_EVENT, (account_id, "signed_in", at, ip, ua, detail)
    return Outcome(token)


def pg_step(token_hash: str, code: str, ip: str, ua: str, now: datetime) -> Step:
    """The statements of one TOTP step on PostgreSQL."""
    start = int(now.timestamp()) // WINDOW * WINDOW
    ends = datetime.fromtimestamp(start + WINDOW, UTC)
    (count,) = yield ONE, PG_RATE, {"b_key": f"{ip}:{start}", "count": 1, "b_expires": ends, "count_1": 1}
    if count > RATE_LIMIT:
        return TOO_MANY
    pend = yield ONE, PG_PENDING, {"b_hash": token_hash, "kind_1": "pending", "b_now": now}
    if pend is None:
        return NO_PENDING
    public_id, account_id = pend[1], pend[2]
    key = f"mfa:{account_id}"
    params: dict[str, object] = {
        "key": key,
        "failures": 1,
        "first_next_at": None,
        "now": now,
        "failures_1": 1,
        "param_1": FREE,
        "wait_max": now + timedelta(seconds=MAX_DELAY),
        "failures_2": CAP,
    }
    for i, d in enumerate(DELAYS):
        params[f"param_{i + 2}"] = FREE + i
        params[f"wait_{i}"] = now + timedelta(seconds=d)
    if (yield ONE, PG_RESERVE, params) is None:
        return TOO_MANY
    rows = yield ALL, PG_TOTP, {"b_account": account_id}
    match = match_totp([r[1:] for r in rows if r[0] == "totp"], code, now)
    if match is None:
        return INVALID_CODE
    factor_id, step = match
    advanced = yield COUNT, PG_ADVANCE, {"b_now": now, "b_new_step": step, "b_id": factor_id, "b_step": step}
    if advanced != 1:
        return INVALID_CODE
    consumed = yield ONE, PG_CONSUME, {"b_hash": token_hash, "kind_1": "pending", "b_now": now}
    if consumed is None or consumed[1] is not None:
        return NO_PENDING
    upgrade = None if any(r[0] == "passkey" for r in rows) else now + PASSKEY_UPGRADE
    token = secrets.token_urlsafe(32)
    yield (
        COUNT,
        PG_INSERT_SESSION,
        {
            "token_hash": hash_token(token),
            "public_id": public_id,
            "account_id": account_id,
            "kind": "active",
            "created_at": now,
            "signed_in_at": now,
            "last_seen_at": now,
            "expires_at": now + SESSION_ABSOLUTE,
            "second_factor": "totp",
            "verified_until": None,
            "reauth_until": None,
            "alerted": False,
            "ip": ip,
            "user_agent": ua,
            "trusted_browser": None,
            "passkey_upgrade_until": upgrade,
            "amr": "pwd otp mfa",
            "authenticated_at": now,
        },
    )
    yield COUNT, PG_RESET, {"b_key": key}
    detail = json.dumps({"method": "totp", "factor_id": factor_id, "session": public_id})
    event = {"account_id": account_id, "type": "signed_in", "at": now, "ip": ip, "user_agent": ua}
    yield ONE, PG_EVENT, {**event, "detail": detail}
    return Outcome(token)


# ------------------------------------------------------------------------------------------ drivers


class Trace:
    """The statements of the traced requests, normalised, and how many requests ran each list."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lists: Counter[tuple[str, ...]] = Counter()
        self.requests = 0
        self.outcomes: Counter[str] = Counter()

    def wanted(self) -> list[str] | None:
        self.requests += 1
        n = self.requests
        return [] if n <= TRACE_FIRST or n % TRACE_EVERY == 0 else None

    def add(self, statements: list[str]) -> None:
        key = tuple(normalise(s) for s in statements)
        with self.lock:
            self.lists[key] += 1


TRACE = Trace()


def sqlite_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    # twostep's pragmas (storage/db.py).
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA busy_timeout=30000",
        "PRAGMA cache_size=-1024",
    ):
        conn.execute(pragma)
    return conn


def run_sqlite(conn: sqlite3.Connection, step: Step, trace: list[str] | None) -> Outcome:
    """One ``BEGIN IMMEDIATE`` transaction around the step; SQLite's trace callback records what ran."""
    if trace is not None:
        conn.set_trace_callback(trace.append)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            op = next(step)
            while True:
                kind, sql, params = op
                cur = conn.execute(sql, params)
                if kind == COUNT:
                    result: Any = cur.rowcount
                else:
                    rows = cur.fetchall()
                    result = rows if kind == ALL else (rows[0] if rows else None)
                op = step.send(result)
        except StopIteration as stop:
            outcome: Outcome = stop.value
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT" if outcome.token else "ROLLBACK")
        return outcome
    finally:
        if trace is not None:
            conn.set_trace_callback(None)


# On PostgreSQL the step's first statement, the per-address counter, runs before the transaction, committing
# on its own (twostep's regulator.edge: the window's row is not kept locked for the whole ceremony).


async def run_pg_async(pool: asyncio.Queue[Any], step: Step, trace: list[str] | None) -> Outcome:
    conn = await pool.get()
    outcome: Outcome | None = None
    try:
        op: Any = next(step)
        try:
            op = step.send(await _execute_async(conn, op, trace))
        except StopIteration as stop:
            outcome = stop.value
        if outcome is None:
            async with conn.transaction():
                if trace is not None:
                    trace.append("BEGIN")
                try:
                    while True:
                        op = step.send(await _execute_async(conn, op, trace))
                except StopIteration as stop:
                    outcome = stop.value
                assert outcome is not None
                if not outcome.token:
                    raise psycopg.Rollback()
            if trace is not None:
                trace.append("COMMIT" if outcome.token else "ROLLBACK")
    finally:
        pool.put_nowait(conn)
    assert outcome is not None
    return outcome


async def _execute_async(conn: Any, op: Any, trace: list[str] | None) -> Any:
    kind, sql, params = op
    if trace is not None:
        trace.append(sql)
    cur = await conn.execute(sql, params)
    if kind == COUNT:
        return cur.rowcount
    if kind == ALL:
        return await cur.fetchall()
    return await cur.fetchone()


def run_pg_sync(pool: queue.Queue[Any], step: Step, trace: list[str] | None) -> Outcome:
    conn = pool.get()
    outcome: Outcome | None = None
    try:
        op: Any = next(step)
        try:
            op = step.send(_execute_sync(conn, op, trace))
        except StopIteration as stop:
            outcome = stop.value
        if outcome is None:
            with conn.transaction():
                if trace is not None:
                    trace.append("BEGIN")
                try:
                    while True:
                        op = step.send(_execute_sync(conn, op, trace))
                except StopIteration as stop:
                    outcome = stop.value
                assert outcome is not None
                if not outcome.token:
                    raise psycopg.Rollback()
            if trace is not None:
                trace.append("COMMIT" if outcome.token else "ROLLBACK")
    finally:
        pool.put_nowait(conn)
    assert outcome is not None
    return outcome


def _execute_sync(conn: Any, op: Any, trace: list[str] | None) -> Any:
    kind, sql, params = op
    if trace is not None:
        trace.append(sql)
    cur = conn.execute(sql, params)
    if kind == COUNT:
        return cur.rowcount
    if kind == ALL:
        return cur.fetchall()
    return cur.fetchone()


# ---------------------------------------------------------------------- F1: the forward-auth session read
# The statement twostep's storage/sessions.py sends per forward-auth request (its _LOOKUP, compiled), and
# the answer: the session, its account's names, groups and whether it has a factor, in one read.
_LOOKUP_TAIL = (
    "SELECT sessions.last_seen_at, sessions.expires_at, sessions.second_factor, sessions.trusted_browser, "
    "accounts.username, accounts.email, accounts.email_verified_at IS NOT NULL AS email_verified, "
    "accounts.locked_at IS NOT NULL AS locked, accounts.language, (SELECT {agg} "
    "AS aggregate_strings_1 \nFROM account_groups \nWHERE account_groups.account_id = sessions.account_id) "
    "AS groups, EXISTS (SELECT * \nFROM factors \nWHERE factors.account_id = sessions.account_id) "
    "AS has_factor "
    "\nFROM sessions JOIN accounts ON accounts.id = sessions.account_id \n"
)
SQLITE_LOOKUP = (
    _LOOKUP_TAIL.format(agg="group_concat(account_groups.name, ',')")
    + "WHERE sessions.token_hash = ? AND sessions.kind = ?"
)
PG_LOOKUP = (
    _LOOKUP_TAIL.format(agg="string_agg(account_groups.name, ',')")
    + "WHERE sessions.token_hash = %(b_hash)s::VARCHAR AND sessions.kind = %(kind_1)s::VARCHAR"
)
SESSION_IDLE = timedelta(minutes=30)


def _aware(value: Any) -> datetime:
    """A timestamp as SQLite (text) or psycopg (datetime) gives it, in UTC."""
    when: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def sqlite_read(conn: sqlite3.Connection, token_hash: str) -> Any:
    """One SELECT, no explicit transaction (as twostep's storage/db.py Database.read on SQLite)."""
    return conn.execute(SQLITE_LOOKUP, (token_hash, "active")).fetchone()


# The columns of the lookup, by name: a column added to twostep's statement and not here fails the check of
# the statement's text (bench/forward_auth.py), and one that moved cannot be read at the wrong position.
LOOKUP_COLUMNS = (
    *("last_seen_at", "expires_at", "second_factor", "trusted_browser", "username", "email"),
    *("email_verified", "locked", "language", "groups", "has_factor"),
)
_AT = {name: i for i, name in enumerate(LOOKUP_COLUMNS)}


def lookup_differences() -> list[str]:
    """Where F1's statement differs from the one twostep sends (storage/sessions.py's access read, as
    ``Database.read_row`` compiles it) on either database, or the columns from LOOKUP_COLUMNS; empty when
    they are the same."""
    from sqlalchemy import create_engine

    from twostep.storage.db import Prepared
    from twostep.storage.sessions import access_statement

    found = []
    for url, ours in (
        ("sqlite://", SQLITE_LOOKUP),
        ("postgresql+psycopg://floor@127.0.0.1/floor", PG_LOOKUP),
    ):
        engine = create_engine(url)
        theirs = Prepared.of(access_statement(), engine)
        if theirs.sql != ours:
            found.append(f"{engine.dialect.name}: twostep sends {theirs.sql!r}, the floor {ours!r}")
        if theirs.keys != LOOKUP_COLUMNS:
            found.append(f"{engine.dialect.name}: columns {theirs.keys} vs {LOOKUP_COLUMNS}")
        engine.dispose()
    return found


def forward_auth_answer(row: Any) -> Response:
    """twostep's answer to an allowed request, or 401: the liveness checks of services/sessions.py on the
    row (the idle and absolute ends; the operator's lock; H04, a trusted browser's session excepted), and
    the Remote-* headers (web/api/protect.py)."""
    now = datetime.now(UTC)
    if (
        row is None
        or _aware(row[_AT["expires_at"]]) <= now
        or _aware(row[_AT["last_seen_at"]]) <= now - SESSION_IDLE
        or row[_AT["locked"]]
        or (
            row[_AT["second_factor"]] is None
            and row[_AT["trusted_browser"]] is None
            and row[_AT["has_factor"]]
        )
    ):
        return _error(401, "not_signed_in", "Sign in first.")
    groups = row[_AT["groups"]]
    verified = row[_AT["email_verified"]]
    response = Response(status_code=200)
    response.raw_headers += [
        (b"remote-user", row[_AT["username"]].encode()),
        (b"remote-groups", ",".join(sorted(groups.split(","))).encode() if groups else b""),
        (b"remote-email", (row[_AT["email"]] or "").encode() if verified else b""),
        *HEADERS,
    ]
    return response


Runner = Callable[[str, str, str, str, datetime, list[str] | None], Any]
RUN: dict[str, Runner] = {}
READ: dict[str, Callable[[str], Any]] = {}


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    """Open the connection(s) of the mode."""
    closers: list[Callable[[], Any]] = []
    load_key(DATA_DIR)
    if MODE == "sqlite-loop":
        conn = sqlite_connect(DATA_DIR / "twostep.sqlite3")
        closers.append(conn.close)

        async def run(token_hash: str, code: str, ip: str, ua: str, now: datetime, trace: Any) -> Outcome:
            return run_sqlite(conn, sqlite_step(token_hash, code, ip, ua, now), trace)

        async def read(token_hash: str) -> Any:
            return sqlite_read(conn, token_hash)

    elif MODE == "sqlite-thread":
        conn = sqlite_connect(DATA_DIR / "twostep.sqlite3")
        closers.append(conn.close)
        lock = threading.Lock()

        def locked(token_hash: str, code: str, ip: str, ua: str, now: datetime, trace: Any) -> Outcome:
            with lock:
                return run_sqlite(conn, sqlite_step(token_hash, code, ip, ua, now), trace)

        async def run(token_hash: str, code: str, ip: str, ua: str, now: datetime, trace: Any) -> Outcome:
            return await run_in_threadpool(locked, token_hash, code, ip, ua, now, trace)

        def locked_read(token_hash: str) -> Any:
            with lock:
                return sqlite_read(conn, token_hash)

        async def read(token_hash: str) -> Any:
            return await run_in_threadpool(locked_read, token_hash)

    elif MODE == "pg-async":
        apool: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(PG_POOL):
            aconn = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True)
            apool.put_nowait(aconn)
            closers.append(aconn.close)

        async def run(token_hash: str, code: str, ip: str, ua: str, now: datetime, trace: Any) -> Outcome:
            return await run_pg_async(apool, pg_step(token_hash, code, ip, ua, now), trace)

        async def read(token_hash: str) -> Any:
            aconn = await apool.get()
            try:  # one SELECT in autocommit, as twostep's Database.read_row_async
                cur = await aconn.execute(PG_LOOKUP, {"b_hash": token_hash, "kind_1": "active"})
                return await cur.fetchone()
            finally:
                apool.put_nowait(aconn)

    elif MODE == "pg-thread":
        spool: queue.Queue[Any] = queue.Queue()
        for _ in range(PG_POOL):
            sconn = psycopg.Connection.connect(PG_URL, autocommit=True)
            spool.put_nowait(sconn)
            closers.append(sconn.close)

        async def run(token_hash: str, code: str, ip: str, ua: str, now: datetime, trace: Any) -> Outcome:
            return await run_in_threadpool(run_pg_sync, spool, pg_step(token_hash, code, ip, ua, now), trace)

        def sync_read(token_hash: str) -> Any:
            sconn = spool.get()
            try:
                return sconn.execute(PG_LOOKUP, {"b_hash": token_hash, "kind_1": "active"}).fetchone()
            finally:
                spool.put_nowait(sconn)

        async def read(token_hash: str) -> Any:
            return await run_in_threadpool(sync_read, token_hash)

    else:
        raise RuntimeError(f"FLOOR_MODE={MODE!r}: sqlite-loop, sqlite-thread, pg-async or pg-thread")
    RUN["step"] = run
    READ["read"] = read
    try:
        yield
    finally:
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": code, "message": message}).encode()
    return Response(body, status, media_type="application/json")


async def login_totp(request: Request) -> Response:
    raw = await request.body()
    try:
        code = json.loads(raw)["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if not isinstance(code, str) or len(code) > 64:
        return _error(422, "invalid_request", "The request body is not valid.")
    token = request.cookies.get(COOKIE)
    if token is None or not _TOKEN.fullmatch(token):
        return _error(401, NO_PENDING.error, NO_PENDING.message)
    ip = request.client.host if request.client else "unknown"
    ua = request.headers.get("user-agent", "")[:512]
    trace = TRACE.wanted()
    outcome: Outcome = await RUN["step"](hash_token(token), code, ip, ua, datetime.now(UTC), trace)
    if trace is not None:
        TRACE.add(trace)
    if outcome.token is None:
        TRACE.outcomes[outcome.error] += 1
        return _error(outcome.status, outcome.error, outcome.message)
    TRACE.outcomes["signed_in"] += 1
    response = Response(BODY)
    response.raw_headers += [
        (b"set-cookie", f"{COOKIE}={outcome.token}; HttpOnly; Path=/; SameSite=lax".encode()),
        *HEADERS,
        # Every twostep response carries a request id (issue 15, web/observe.py): the floor makes one too.
        (b"x-request-id", secrets.token_hex(16).encode()),
    ]
    return response


async def forward_auth(request: Request) -> Response:
    """F1's floor: the session read of GET /api/v1/forward-auth and twostep's answer (no rules)."""
    token = request.cookies.get(COOKIE)
    if token is None or not _TOKEN.fullmatch(token):
        return _error(401, "not_signed_in", "Sign in first.")
    return forward_auth_answer(await READ["read"](hash_token(token)))


async def stats(request: Request) -> Response:
    data = {
        "mode": MODE,
        "requests": TRACE.requests,
        "outcomes": dict(TRACE.outcomes),
        "traced": sum(TRACE.lists.values()),
        "lists": [[list(k), n] for k, n in TRACE.lists.items()],
    }
    return Response(json.dumps(data).encode(), media_type="application/json")


async def reset(request: Request) -> Response:
    global TRACE
    TRACE = Trace()
    return Response(b"{}", media_type="application/json")


app = Starlette(
    routes=[
        Route("/api/v1/login/totp", login_totp, methods=["POST"]),
        Route("/api/v1/forward-auth", forward_auth, methods=["GET"]),
        Route("/_floor/stats", stats, methods=["GET"]),
        Route("/_floor/reset", reset, methods=["POST"]),
    ],
    lifespan=lifespan,
)
