"""Who may have an account (docs/api.md "Who may have an account"): the sign-up policy on the API, and
invitations used once, in the transaction of the account they make."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import release_together
from tests.support.database import db_rows
from tests.support.inprocess import AppServer
from tests.support.operators import app_ctx, token_of
from twostep.core.errors import UsernameTaken
from twostep.services import operators

pytestmark = pytest.mark.api


def sign_up(client: httpx.Client, username: str, **extra: object) -> httpx.Response:
    return client.post("/api/v1/accounts", json={"username": username, "password": STRONG_PASSWORD, **extra})


def accounts_named(server: AppServer, username: str) -> int:
    return len(db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=username))


def invite(server: AppServer, **kwargs: object) -> str:
    return token_of(operators.invite(app_ctx(server), **kwargs).url)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def invite_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("invite"), env={"TWOSTEP_SIGNUP": "invite"}) as srv:
        yield srv


def test_closed_sign_up_answers_403_signup_closed_and_creates_nothing(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_SIGNUP": "closed"}) as server, server.client() as client:
        token = invite(server)
        for extra in ({}, {"invite": token}):
            name = unique_username("closed")
            r = sign_up(client, name, **extra)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "signup_closed"
            assert r.json()["reason"] == "closed"
            assert accounts_named(server, name) == 0
        assert db_rows(server, "SELECT used_at FROM invitations") == [(None,)]


def test_invite_sign_up_without_an_invitation_answers_403(invite_only: AppServer) -> None:
    with invite_only.client() as client:
        name = unique_username("noinv")
        r = sign_up(client, name)
        assert r.status_code == 403, r.text
        assert r.json() == {
            "error": "signup_closed",
            "message": r.json()["message"],
            "reason": "invitation_required",
        }
        assert "invitation" in r.json()["message"]
        r = sign_up(client, name, invite="not-a-token")
        assert r.status_code == 403
        assert r.json()["reason"] == "invitation_invalid"
        assert accounts_named(invite_only, name) == 0


def test_an_invitation_makes_one_account_in_its_groups_then_is_used(invite_only: AppServer) -> None:
    token = invite(invite_only, groups=["Admins", "ops"])
    stored = db_rows(invite_only, "SELECT token_hash, groups FROM invitations")
    assert all(token not in str(row) for row in stored), "only the token's hash is stored"
    with invite_only.client() as client:
        name = unique_username("invited")
        assert sign_up(client, name, invite=token).status_code == 201
        assert client.post("/api/v1/login", json={"username": name, "password": STRONG_PASSWORD}).is_success
        assert client.get("/api/v1/session").json()["groups"] == ["admins", "ops"]
        again = unique_username("again")
        r = sign_up(client, again, invite=token)
        assert r.status_code == 403, r.text
        assert r.json()["reason"] == "invitation_invalid"
        assert accounts_named(invite_only, again) == 0


def test_an_expired_invitation_is_refused(invite_only: AppServer) -> None:
    token = invite(invite_only, expires=timedelta(minutes=30))
    invite_only.set_clock(31 * 60)
    try:
        with invite_only.client() as client:
            name = unique_username("late")
            r = sign_up(client, name, invite=token)
            assert r.status_code == 403 and r.json()["reason"] == "invitation_invalid", r.text
            assert accounts_named(invite_only, name) == 0
    finally:
        invite_only.set_clock(0)


def test_the_invitations_username_and_address_are_the_ones_used(invite_only: AppServer) -> None:
    fixed = unique_username("fixed")
    token = invite(invite_only, username=fixed.upper(), email="fixed@example.com")
    with invite_only.client() as client:
        other = unique_username("other")
        r = sign_up(client, other, invite=token)
        assert r.status_code == 422, r.text
        assert fixed in r.json()["message"]
        r = sign_up(client, fixed, invite=token, email="someone@example.com")
        assert r.status_code == 422, r.text
        assert accounts_named(invite_only, other) == 0
        assert db_rows(invite_only, "SELECT used_at FROM invitations WHERE username = :u", u=fixed) == [
            (None,)
        ]
        assert sign_up(client, fixed, invite=token).status_code == 201
    rows = db_rows(invite_only, "SELECT email, email_verified_at FROM accounts WHERE username = :u", u=fixed)
    assert rows == [("fixed@example.com", None)]


def test_an_invitation_for_a_name_taken_meanwhile_is_refused_and_stays_unused(invite_only: AppServer) -> None:
    name = unique_username("race")
    token = invite(invite_only, username=name)
    with invite_only.client() as client:
        # Taken by someone else after the invitation was made (here with another invitation).
        assert sign_up(client, name, invite=invite(invite_only)).status_code == 201
        r = sign_up(client, name, invite=token)
        assert r.status_code == 409 and r.json()["error"] == "username_taken", r.text
    assert db_rows(invite_only, "SELECT used_at FROM invitations WHERE username = :u", u=name) == [(None,)]
    with pytest.raises(UsernameTaken):
        operators.invite(app_ctx(invite_only), username=name)


def test_twenty_parallel_sign_ups_with_one_invitation_make_exactly_one_account(
    invite_only: AppServer,
) -> None:
    token = invite(invite_only, groups=["crowd"])
    names = [unique_username("crowd") for _ in range(20)]
    clients = [invite_only.client() for _ in names]
    try:
        responses = release_together(
            [partial(sign_up, c, n, invite=token) for c, n in zip(clients, names, strict=True)]
        )
    finally:
        for c in clients:
            c.close()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert all(s in (201, 403, 503) for s in statuses), statuses
    made = db_rows(
        invite_only,
        "SELECT a.username FROM accounts a JOIN account_groups g ON g.account_id = a.id"
        " WHERE g.name = 'crowd'",
    )
    assert len(made) == 1
    assert sum(accounts_named(invite_only, n) for n in names) == 1


def test_H02_the_invitation_path_keeps_the_address_limit(tmp_path: Path) -> None:
    env = {"TWOSTEP_RATE_LIMIT_PER_MINUTE": "2", "TWOSTEP_SIGNUP": "invite"}
    with AppServer(tmp_path, env=env) as server, server.client() as client:
        server.set_clock(60 - time.time() % 60 + 1)
        for _ in range(2):
            assert sign_up(client, unique_username("x")).status_code == 403
        token = invite(server)
        name = unique_username("limited")
        r = sign_up(client, name, invite=token)
        assert r.status_code == 429, r.text
        assert accounts_named(server, name) == 0
        assert db_rows(server, "SELECT used_at FROM invitations") == [(None,)]


def test_an_invitations_refusal_names_its_username_and_address_in_the_readers_language(
    invite_only: AppServer,
) -> None:
    """Issue 19: a message with a value in it is translated first, then the value is put in its place; the
    code stays the same in every language."""
    fixed = unique_username("lang")
    token = invite(invite_only, username=fixed, email="lang@example.com")
    other = unique_username("other")
    with invite_only.client() as client:

        def refusal(language: str | None, username: str, **extra: object) -> object:
            headers = {"Accept-Language": language} if language else {}
            body = {"username": username, "password": STRONG_PASSWORD, "invite": token, **extra}
            r = client.post("/api/v1/accounts", json=body, headers=headers)
            assert r.status_code == 422, r.text
            return r.json()

        assert refusal(None, other) == {
            "error": "invalid_request",
            "message": f"This invitation is for the username {fixed}; sign up with that username.",
        }
        assert refusal("sl", other) == {
            "error": "invalid_request",
            "message": f"Povabilo velja za uporabniško ime {fixed}; ustvarite račun s tem uporabniškim "
            "imenom.",
        }
        assert refusal("de-AT, en;q=0.5", other) == {
            "error": "invalid_request",
            "message": f"Diese Einladung gilt für den Benutzernamen {fixed}; registrieren Sie sich mit "
            "diesem Benutzernamen.",
        }
        assert refusal("fr", other)["message"] == refusal(None, other)["message"]  # type: ignore[index]
        assert refusal("sl", fixed, email="someone@example.com") == {
            "error": "invalid_request",
            "message": "Povabilo velja za naslov lang@example.com; pustite ga takšnega, kot je.",
        }
        assert refusal("de", fixed, email="someone@example.com") == {
            "error": "invalid_request",
            "message": "Diese Einladung gilt für die Adresse lang@example.com; lassen Sie sie unverändert.",
        }
    assert accounts_named(invite_only, other) == 0


def test_the_invitation_refusals_of_sign_up_are_translated(invite_only: AppServer) -> None:
    """The sentences SignupClosed chooses by its reason are in the catalogues too (they were English only)."""
    with invite_only.client(headers={"Accept-Language": "sl"}) as client:
        r = sign_up(client, unique_username("noinv"))
        assert r.status_code == 403, r.text
        assert r.json()["message"] == (
            "Za registracijo na tej strani potrebujete povabilo. Prosite zanj upravljavca strani."
        )
        r = sign_up(client, unique_username("badinv"), invite="not-a-token")
        assert r.status_code == 403, r.text
        assert r.json()["reason"] == "invitation_invalid"
        assert r.json()["message"].startswith("Tega povabila ni mogoče uporabiti:")
