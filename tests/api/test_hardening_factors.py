"""Hardening findings H04, H05, H06 and H08 against the app over HTTP (security.md section 6).

H13 (one message per action, no flood) is in test_notifications.py, next to the other notification tests.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.api import (
    API,
    Clients,
    advance,
    begin_totp,
    expect,
    login,
    new_user,
    session_of,
    signup,
    verify_password,
)
from tests.support.database import account_id, database_url, db_rows
from tests.support.inprocess import AppServer
from tests.support.mail import read_outbox, wait_until

pytestmark = pytest.mark.api


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def forward_auth(client: httpx.Client) -> httpx.Response:
    return client.get(f"{API}/forward-auth")


def sessions_of(server: AppServer, username: str) -> list[tuple[object, ...]]:
    return db_rows(
        server,
        "SELECT public_id, second_factor FROM sessions WHERE account_id = :a AND kind = 'active'",
        a=account_id(server, username),
    )


# --- H04 -------------------------------------------------------------------------------------------------


def test_H04_turning_two_step_on_ends_the_other_password_only_sessions(
    server: AppServer, clients: Clients
) -> None:
    """H04: S1 signed in with the password alone; S2 turns TOTP on. S1 is signed out at once (401 on
    forward-auth and on /session), S2 keeps working (forward-auth 200, /session names the new factor),
    and the one e-mail of the change says that the other session was signed out."""
    email = f"h04{secrets.token_hex(4)}@example.test"
    user = new_user(server, clients, email=email)  # S2: signed in, access verified
    s1 = clients.new()
    assert login(s1, user.username) == {"status": "signed_in"}
    assert expect(forward_auth(s1), 200) == {} and forward_auth(s1).headers["Remote-User"] == user.username
    assert len(sessions_of(server, user.username)) == 2

    user.add_totp("Phone")

    expect(forward_auth(s1), 401, "not_signed_in")
    expect(session_of(s1), 401, "not_signed_in")
    s2 = user.client
    r = forward_auth(s2)
    assert r.status_code == 200 and r.headers["Remote-User"] == user.username
    assert expect(session_of(s2), 200)["second_factor"] == "totp"
    assert len(sessions_of(server, user.username)) == 1
    # The security log records how many sessions ended.
    events = expect(s2.get(f"{API}/security-events"), 200)["events"]
    enabled = [e for e in events if e["type"] == "two_factor_enabled"]
    assert len(enabled) == 1 and enabled[0]["detail"]["other_sessions_ended"] == 1
    # One message, and it says so.
    folder = server.data_dir / "outbox"
    assert wait_until(lambda: any(email in str(m.message["To"]) for m in read_outbox(folder)), 10)
    time.sleep(1.0)
    # The address's verification link (sent at sign-up) is not a notification of the change.
    mine = [
        m
        for m in read_outbox(folder)
        if email in str(m.message["To"]) and m.message["Subject"] != "Confirm your e-mail address"
    ]
    assert len(mine) == 1, [m.message["Subject"] for m in mine]
    assert "1 other session signed in with the password alone was signed out" in mine[0].text


def test_H04_forward_auth_never_admits_a_password_only_session_of_an_account_with_a_factor(
    server: AppServer, clients: Clients
) -> None:
    """H04, the second defence: a password-only session that survived the enrolment (a sign-in racing with
    it, made here by writing the factor row directly) is not signed in: forward-auth answers 401."""
    s1 = clients.new()
    victim = signup(s1)
    assert login(s1, victim) == {"status": "signed_in"}
    assert forward_auth(s1).status_code == 200
    # The account gets a factor behind the session's back, as if the sign-in had raced with the enrolment.
    engine = create_engine(database_url(server))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO factors"
                    " (id, account_id, type, name, created_at, totp_secret, totp_last_step)"
                    " SELECT :id, id, 'totp', 'raced', CURRENT_TIMESTAMP, :s, 0 FROM accounts"
                    " WHERE username = :u"
                ),
                {"id": secrets.token_hex(8), "s": b"x" * 40, "u": victim},
            )
    finally:
        engine.dispose()
    expect(forward_auth(s1), 401, "not_signed_in")
    expect(session_of(s1), 401, "not_signed_in")


# --- H05 -------------------------------------------------------------------------------------------------

NAMES = [
    "алиса",  # Cyrillic
    "josé",  # Latin-1
    "ελένη",  # Greek
    "李小龍",  # CJK
    "e\u0301mile",  # a combining mark (NFKC composes it)
    "ǅemal",  # a title-case digraph (NFKC + casefold)
    "किरण",  # Devanagari vowel signs are combining marks: not in the alphabet
    "محمد",  # Arabic
    "zoë+tag@ex.org",  # ASCII punctuation of the alphabet next to a non-ASCII letter
    "a\u200bb",  # a zero-width space: not in the alphabet
]


def test_H05_every_username_reaches_remote_user_unambiguously_and_never_a_500(
    server: AppServer, clients: Clients
) -> None:
    """H05: `алиса` and `josé` sign up and sign in; forward-auth answers 200 with an ASCII-only Remote-User
    that percent-decodes to the username (the raw form is never sent). No username, accepted or refused,
    gives a 500 at sign-up, sign-in, /session, forward-auth or the settings pages."""
    suffix = secrets.token_hex(2)
    accepted: dict[str, str] = {}
    for raw in NAMES:
        name = raw + suffix
        client = clients.new()
        r = client.post(
            f"{API}/accounts", json={"username": name, "password": "correct horse battery staple"}
        )
        assert r.status_code in (201, 422), (name, r.status_code, r.text)
        if r.status_code == 422:
            assert r.json()["error"] == "invalid_request"
            continue
        username = r.json()["username"]
        accepted[raw] = username
        assert login(client, name) == {"status": "signed_in"}
        fa = forward_auth(client)
        assert fa.status_code == 200, (name, fa.text)
        raw_values = [v for k, v in fa.headers.raw if k.lower() == b"remote-user"]
        assert len(raw_values) == 1
        value = raw_values[0]
        assert all(b < 0x80 for b in value), value
        assert unquote(value.decode("ascii"), errors="strict") == username
        if username.isascii():
            assert value.decode("ascii") == username  # ASCII usernames are sent as they are
        assert expect(session_of(client), 200)["username"] == username
        for path in ("/settings/two-step", "/settings/security-log", "/settings/sessions"):
            assert client.get(path).status_code < 500, path
    assert {"алиса", "josé", "ελένη", "李小龍", "e\u0301mile"} <= set(accepted), accepted
    assert accepted["алиса"] == "алиса" + suffix
    assert forward_auth(clients.new()).status_code == 401


# --- H06 -------------------------------------------------------------------------------------------------


def test_H06_adding_a_first_factor_does_not_hold_the_write_lock_while_hashing(
    server: AppServer, clients: Clients
) -> None:
    """H06: the server runs with TWOSTEP_ASSERT_NO_HASH_IN_TX=1, so a slow hash inside a write transaction
    fails the request. Adding a first factor (ten recovery-code hashes) succeeds, and the other requests
    made meanwhile are never held for the duration of those hashes."""
    user = new_user(server, clients)
    other = clients.new()
    name = signup(other)
    assert login(other, name) == {"status": "signed_in"}
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            t = time.monotonic()
            assert session_of(other).status_code == 200
            latencies.append(time.monotonic() - t)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        t = time.monotonic()
        user.add_totp("Phone")
        took = time.monotonic() - t
    finally:
        stop.set()
        thread.join()
    assert len(user.recovery_codes) == 10
    assert "HashInTransaction" not in server.log()
    print(f"H06: first factor took {took:.3f}s; concurrent /session max {max(latencies):.3f}s")


# --- H08 -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 1,000 requests
def test_H08_anonymous_passkey_options_leave_bounded_state(tmp_path: Path) -> None:
    """H08: 1,000 anonymous POST /login/passkey/options add 1,000 challenges; an hour later (server clock)
    the sweep has removed them: fewer than 50 rows remain."""
    with AppServer(tmp_path / "srv") as srv:
        local = threading.local()
        opened: list[httpx.Client] = []

        def ask(_: int) -> int:
            # Like an attacker: no cookie kept from one request to the next.
            if not hasattr(local, "client"):
                local.client = srv.client()
                opened.append(local.client)
            local.client.cookies.clear()
            return int(local.client.post(f"{API}/login/passkey/options", json={}).status_code)

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(ask, range(1000)))
        for client in opened:
            client.close()
        assert statuses.count(200) == 1000, set(statuses)
        created = db_rows(srv, "SELECT COUNT(*) FROM challenges")[0][0]
        assert created >= 950, created
        srv.set_clock(3600)
        assert wait_until(lambda: db_rows(srv, "SELECT COUNT(*) FROM challenges")[0][0] < 50, 20)
        remaining = db_rows(srv, "SELECT COUNT(*) FROM challenges")[0][0]
        print(f"H08: challenges after 1,000 anonymous requests: {created}; an hour later: {remaining}")
        assert remaining < 50


def test_H08_expired_session_is_deleted_when_seen_and_stays_dead_when_the_clock_steps_back(
    tmp_path: Path,
) -> None:
    """H08: a session idle for more than 30 minutes is refused and deleted when it is seen; when the clock
    steps back it does not come back to life. One never seen again is deleted by the sweep."""
    with AppServer(tmp_path / "srv") as srv, Clients(srv) as clients:
        seen, unseen = clients.new(), clients.new()
        name = signup(seen)
        assert login(seen, name) == {"status": "signed_in"}
        assert login(unseen, name) == {"status": "signed_in"}
        assert len(sessions_of(srv, name)) == 2
        advance(srv, 31 * 60)
        expect(session_of(seen), 401, "not_signed_in")
        srv.set_clock(0)  # the clock steps back
        expect(session_of(seen), 401, "not_signed_in")
        expect(forward_auth(seen), 401, "not_signed_in")
        # The one nobody looked at again: swept once the clock passes its end again.
        advance(srv, 31 * 60)
        assert wait_until(lambda: sessions_of(srv, name) == [], 20), sessions_of(srv, name)
        srv.set_clock(0)
        expect(session_of(unseen), 401, "not_signed_in")


def test_H08_the_sweep_removes_expired_enrolments_and_rate_windows(tmp_path: Path) -> None:
    """H08: pending TOTP enrolments past their 15 minutes and ended rate-limit windows are swept; live
    ones stay."""
    env = {"TWOSTEP_RATE_LIMIT_PER_MINUTE": "1000"}
    with AppServer(tmp_path / "srv", env=env) as srv, Clients(srv) as clients:
        client = clients.new()
        name = signup(client)
        assert login(client, name) == {"status": "signed_in"}
        assert verify_password(client)["status"] == "verified"
        begin_totp(client)
        assert db_rows(srv, "SELECT COUNT(*) FROM totp_enrollments")[0][0] == 1
        assert db_rows(srv, "SELECT COUNT(*) FROM rate_windows")[0][0] >= 1
        advance(srv, 20 * 60)
        assert wait_until(
            lambda: (
                db_rows(srv, "SELECT COUNT(*) FROM totp_enrollments")[0][0] == 0
                and db_rows(srv, "SELECT COUNT(*) FROM rate_windows")[0][0] == 0
            ),
            20,
        )
