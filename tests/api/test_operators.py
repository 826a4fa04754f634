"""What an operator does to an account, seen from the API: lock (sign-in, passkey sign-in and verify access
answer 403 account_locked, only after a correct credential), delete, groups; and the e-mail address, verified
through its single-use link and changed with POST /email."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.database import account_id, db_rows
from tests.support.inprocess import AppServer
from tests.support.operators import app_ctx
from tests.support.passkeys import Api, close_all, with_passkey
from twostep.core.errors import InvalidRequest, NotFound
from twostep.services import operators

pytestmark = pytest.mark.api

TABLES_WITH_ACCOUNT_ID = (
    "sessions",
    "factors",
    "totp_enrollments",
    "recovery_codes",
    "challenges",
    "security_events",
    "account_groups",
    "email_verifications",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("operators")) as srv:
        yield srv
        close_all()


def new_account(server: AppServer, client: httpx.Client, email: str | None = None) -> str:
    name = unique_username("op")
    body: dict[str, object] = {"username": name, "password": STRONG_PASSWORD}
    if email:
        body["email"] = email
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    return name


def login(client: httpx.Client, name: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    return client.post("/api/v1/login", json={"username": name, "password": password})


def events_of(server: AppServer, name: str) -> list[str]:
    rows = db_rows(
        server, "SELECT type FROM security_events WHERE account_id = :a", a=account_id(server, name)
    )
    return [row[0] for row in rows]


def mail_to(server: AppServer, address: str) -> list[tuple[str, str]]:
    return [
        (row[0], row[1])
        for row in db_rows(
            server, "SELECT subject, body FROM outbox WHERE recipient = :r ORDER BY id", r=address
        )
    ]


def link_token(body: str) -> str:
    found = re.search(r"/verify-email\?token=([A-Za-z0-9_-]+)", body)
    assert found is not None, body
    return found.group(1)


def test_SEC_05_lock_ends_every_session_and_is_told_only_after_the_correct_password(
    server: AppServer,
) -> None:
    with server.client() as one, server.client() as two:
        name = new_account(server, one, email="locked@example.com")
        assert login(one, name).status_code == 200
        assert login(two, name).status_code == 200
        assert operators.lock(app_ctx(server), name) == 2
        assert (
            db_rows(server, "SELECT 1 FROM sessions WHERE account_id = :a", a=account_id(server, name)) == []
        )
        for client in (one, two):
            assert client.get("/api/v1/session").status_code == 401
        r = login(one, name)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "account_locked"
        # A wrong password answers as for any account: the lock is no oracle.
        wrong = login(one, name, "a wrong password, long enough")
        unknown = login(one, unique_username("nobody"), "a wrong password, long enough")
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        assert operators.lock(app_ctx(server), name) is None  # already locked
        assert "operator_locked" in events_of(server, name)
        assert any("locked" in subject for subject, _ in mail_to(server, "locked@example.com"))
        assert operators.unlock(app_ctx(server), name)
        assert login(one, name).json() == {"status": "signed_in"}
        assert "operator_unlocked" in events_of(server, name)


def test_a_locked_account_cannot_sign_in_with_a_passkey_alone_or_verify_access(server: AppServer) -> None:
    account, api = with_passkey(server, "lockpk")
    operators.lock(app_ctx(server), account.username)
    assert api.get("/session").status_code == 401
    passwordless = Api(server)
    options = passwordless.options("/login/passkey/options")
    r = passwordless.post("/login/passkey", {"credential": account.auth.get(options)})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "account_locked"
    assert passwordless.get("/session").status_code == 401
    operators.unlock(app_ctx(server), account.username)
    options = passwordless.options("/login/passkey/options")
    r = passwordless.post("/login/passkey", {"credential": account.auth.get(options)})
    assert r.status_code == 200, r.text


def test_a_session_that_outlived_a_lock_is_not_signed_in(server: AppServer) -> None:
    """The lock deletes every session; were one to survive (a sign-in that committed just after the lock),
    it is dead at its first request: forward-auth, GET /session and verify access all answer 401, and the
    row is gone."""
    with server.client() as client:
        name = new_account(server, client)
        assert login(client, name).status_code == 200
        aid = account_id(server, name)
        with app_ctx(server).db.transaction() as conn:
            conn.execute(text("UPDATE accounts SET locked_at = CURRENT_TIMESTAMP WHERE id = :a"), {"a": aid})
        assert client.get("/api/v1/forward-auth").status_code == 401
        r = client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD})
        assert r.status_code == 401 and r.json()["error"] == "not_signed_in", r.text
        assert db_rows(server, "SELECT 1 FROM sessions WHERE account_id = :a", a=aid) == []


def test_groups_change_and_are_in_the_session(server: AppServer) -> None:
    with server.client() as client:
        name = new_account(server, client, email="groups@example.com")
        change = operators.change_groups(app_ctx(server), name, add=["Admins", "ops"], remove=[])
        assert change.groups == ("admins", "ops")
        change = operators.change_groups(app_ctx(server), name, add=[], remove=["ops"])
        assert change.removed == ("ops",)
        assert login(client, name).status_code == 200
        assert client.get("/api/v1/session").json()["groups"] == ["admins"]
        with pytest.raises(InvalidRequest):
            operators.change_groups(app_ctx(server), name, add=["two words"], remove=[])
        with pytest.raises(InvalidRequest):
            operators.change_groups(app_ctx(server), name, add=["bell\x07"], remove=[])
        with pytest.raises(NotFound):
            operators.change_groups(app_ctx(server), unique_username("ghost"), add=["x"], remove=[])
        assert events_of(server, name).count("operator_groups_changed") == 2
        subjects = [s for s, _ in mail_to(server, "groups@example.com")]
        assert "The groups of your account were changed" in subjects


def test_delete_removes_every_row_of_the_account_and_tells_its_holder(server: AppServer) -> None:
    account, api = with_passkey(server, "gone")
    aid = account_id(server, account.username)
    with app_ctx(server).db.transaction() as conn:
        conn.execute(text("UPDATE accounts SET email = 'gone@example.com' WHERE id = :a"), {"a": aid})
    operators.change_groups(app_ctx(server), account.username, add=["team"], remove=[])
    assert operators.delete(app_ctx(server), account.username) == account.username
    assert db_rows(server, "SELECT 1 FROM accounts WHERE id = :a", a=aid) == []
    for table in TABLES_WITH_ACCOUNT_ID:
        assert db_rows(server, f"SELECT 1 FROM {table} WHERE account_id = :a", a=aid) == [], table
    assert api.get("/session").status_code == 401
    # The message that tells the holder stays until delivered, tied to no account any more.
    rows = db_rows(
        server, "SELECT subject, account_id, coalesce_key FROM outbox WHERE recipient = 'gone@example.com'"
    )
    assert ("Your account was deleted by the operator", None, None) in rows
    with pytest.raises(NotFound):
        operators.delete(app_ctx(server), account.username)


def test_the_e_mail_link_verifies_the_address_once(server: AppServer) -> None:
    address = f"{unique_username('v')}@example.com"
    with server.client() as client:
        name = new_account(server, client, email=address)
        assert login(client, name).status_code == 200
        assert client.get("/api/v1/session").json()["email_verified"] is False
        ((subject, body),) = mail_to(server, address)
        assert subject == "Confirm your e-mail address"
        token = link_token(body)
        stored = db_rows(server, "SELECT token_hash FROM email_verifications")
        assert all(token not in row[0] for row in stored)
        # The link's page does not use the token (a mail scanner may fetch it).
        assert client.get(f"/verify-email?token={token}").status_code == 200
        assert client.get("/api/v1/session").json()["email_verified"] is False
        assert client.post("/api/v1/verify-email", json={"token": token}).status_code == 204
        assert client.get("/api/v1/session").json()["email_verified"] is True
        again = client.post("/api/v1/verify-email", json={"token": token})
        assert again.status_code == 410 and again.json()["error"] == "link_invalid"
        with server.client() as anonymous:
            assert anonymous.post("/api/v1/verify-email", json={"token": token}).status_code == 401
        assert "email_verified" in events_of(server, name)


def test_the_api_uses_only_a_link_of_the_signed_in_account(server: AppServer) -> None:
    address = f"{unique_username('mine')}@example.com"
    with server.client() as owner, server.client() as other:
        name = new_account(server, owner, email=address)
        token = link_token(mail_to(server, address)[0][1])
        assert login(other, new_account(server, other)).status_code == 200
        r = other.post("/api/v1/verify-email", json={"token": token})
        assert r.status_code == 410, r.text
        assert login(owner, name).status_code == 200
        assert owner.post("/api/v1/verify-email", json={"token": token}).status_code == 204, "still usable"


def test_post_email_needs_verify_access_tells_both_addresses_and_unverifies(server: AppServer) -> None:
    old, new = f"{unique_username('old')}@example.com", f"{unique_username('new')}@example.com"
    with server.client() as client:
        name = new_account(server, client, email=old)
        old_token = link_token(mail_to(server, old)[0][1])
        assert login(client, name).status_code == 200
        r = client.post("/api/v1/email", json={"email": new})
        assert r.status_code == 403 and r.json()["error"] == "verify_access_required", r.text
        assert client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD}).status_code == 200
        bad = client.post("/api/v1/email", json={"email": "not an address"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
        assert client.post("/api/v1/email", json={"email": new}).status_code == 204
        assert client.get("/api/v1/session").json()["email_verified"] is False
        assert "The e-mail address of your account was changed" in [s for s, _ in mail_to(server, old)]
        ((subject, body),) = mail_to(server, new)
        assert subject == "Confirm your e-mail address"
        # The old address's link no longer verifies anything.
        assert client.post("/api/v1/verify-email", json={"token": old_token}).status_code == 410
        assert client.post("/api/v1/verify-email", json={"token": link_token(body)}).status_code == 204
        assert client.get("/api/v1/session").json()["email_verified"] is True
