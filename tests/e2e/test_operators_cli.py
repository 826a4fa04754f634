"""The operators' commands as an operator runs them: `twostep invite` and `twostep user ...` in a subprocess,
against the database of a running `twostep serve --workers 4` (SQLite and PostgreSQL), with sign-up by
invitation only. And the race: twenty sign-ups at once with one invitation make exactly one account."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import release_together
from tests.support.database import account_id, db_rows
from tests.support.operators import invite_url, token_of, twostep
from tests.support.server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def invite_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp(f"operators-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with Server(data_dir, database_url=url, workers=4, env={"TWOSTEP_SIGNUP": "invite"}) as srv:
        yield srv


def sign_up(client: httpx.Client, username: str, token: str | None) -> httpx.Response:
    body: dict[str, object] = {"username": username, "password": STRONG_PASSWORD}
    if token is not None:
        body["invite"] = token
    return client.post("/api/v1/accounts", json=body)


def refused(done: object, needle: str) -> None:
    """A clear message and exit status 1, never a traceback."""
    assert getattr(done, "returncode") == 1, done
    stderr = str(getattr(done, "stderr"))
    assert needle in stderr, stderr
    assert "Traceback" not in stderr + str(getattr(done, "stdout"))


def test_twenty_parallel_sign_ups_with_one_invitation_make_exactly_one_account(invite_server: Server) -> None:
    for _ in range(3):
        token = token_of(invite_url(invite_server, "--group", "racers"))
        names = [unique_username("race") for _ in range(20)]
        clients = [invite_server.client() for _ in names]
        try:
            responses = release_together(
                [partial(sign_up, c, n, token) for c, n in zip(clients, names, strict=True)]
            )
        finally:
            for c in clients:
                c.close()
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 1, statuses
        assert all(s in (201, 403, 503) for s in statuses), statuses
        made = [n for n in names if db_rows(invite_server, "SELECT 1 FROM accounts WHERE username = :u", u=n)]
        assert len(made) == 1, made
        groups = db_rows(
            invite_server,
            "SELECT name FROM account_groups WHERE account_id = :a",
            a=account_id(invite_server, made[0]),
        )
        assert groups == [("racers",)]
        assert "Traceback" not in invite_server.log()


def test_the_operators_walk_invite_list_show_lock_unlock_groups_delete(invite_server: Server) -> None:
    with invite_server.client() as client:
        assert sign_up(client, unique_username("stranger"), None).status_code == 403
        name = unique_username("walker")
        url = invite_url(
            invite_server, "--username", name, "--email", f"{name}@example.com", "--group", "admins"
        )
        assert url.startswith(f"{invite_server.url}/signup?invite=")
        assert sign_up(client, name, token_of(url)).status_code == 201
        assert client.post("/api/v1/login", json={"username": name, "password": STRONG_PASSWORD}).is_success

        listed = twostep(invite_server, "user", "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split() == [
            "USERNAME",
            "E-MAIL",
            "VERIFIED",
            "GROUPS",
            "TWO-STEP",
            "CREATED",
            "LAST",
            "SIGN-IN",
            "LOCKED",
        ]
        row = next(line for line in lines if line.startswith(name))
        assert lines[0].index("GROUPS") == row.index("admins"), "aligned columns"
        assert " UTC" in row
        as_json = json.loads(twostep(invite_server, "user", "list", "--json").stdout)
        assert name in [u["username"] for u in as_json]

        shown = twostep(invite_server, "user", "show", name, "--json")
        view = json.loads(shown.stdout)
        assert view["groups"] == ["admins"]
        assert view["email"] == f"{name}@example.com" and view["email_verified"] is False
        assert view["two_step"] is False and view["factors"] == []
        assert view["locked"] is False and view["last_sign_in_at"] is not None
        human = twostep(invite_server, "user", "show", name)
        assert human.returncode == 0 and "not verified" in human.stdout
        for output in (shown.stdout, human.stdout, listed.stdout):
            assert "argon2" not in output and "password" not in output.lower()

        locked = twostep(invite_server, "user", "lock", name)
        assert locked.returncode == 0, locked.stderr
        assert f"locked {name}; 1 session ended" in locked.stdout
        assert client.get("/api/v1/session").status_code == 401
        r = client.post("/api/v1/login", json={"username": name, "password": STRONG_PASSWORD})
        assert r.status_code == 403 and r.json()["error"] == "account_locked"
        assert json.loads(twostep(invite_server, "user", "show", name, "--json").stdout)["locked"] is True
        assert twostep(invite_server, "user", "unlock", name).returncode == 0
        assert client.post("/api/v1/login", json={"username": name, "password": STRONG_PASSWORD}).is_success

        groups = twostep(invite_server, "user", "groups", name, "--add", "Ops", "--remove", "admins")
        assert groups.returncode == 0, groups.stderr
        assert "groups now: ops" in groups.stdout
        assert client.get("/api/v1/session").json()["groups"] == ["ops"]
        types = [
            t
            for (t,) in db_rows(
                invite_server,
                "SELECT type FROM security_events WHERE account_id = :a",
                a=account_id(invite_server, name),
            )
        ]
        assert {"operator_locked", "operator_unlocked", "operator_groups_changed"} <= set(types)

        kept = twostep(invite_server, "user", "delete", name, stdin="no\n")
        refused(kept, "not deleted")
        assert db_rows(invite_server, "SELECT 1 FROM accounts WHERE username = :u", u=name) == [(1,)]
        gone = twostep(invite_server, "user", "delete", name, stdin=f"{name}\n")
        assert gone.returncode == 0, gone.stderr
        assert db_rows(invite_server, "SELECT 1 FROM accounts WHERE username = :u", u=name) == []
        assert client.get("/api/v1/session").status_code == 401


def test_bad_input_is_a_message_and_a_non_zero_exit(invite_server: Server) -> None:
    ghost = unique_username("ghost")
    for args in (
        ("user", "show", ghost),
        ("user", "lock", ghost),
        ("user", "unlock", ghost),
        ("user", "delete", ghost, "--yes"),
        ("user", "groups", ghost, "--add", "x"),
    ):
        refused(twostep(invite_server, *args), f"no user named '{ghost}'")
    refused(twostep(invite_server, "invite", "--group", "two words"), "is not a group name")
    refused(twostep(invite_server, "invite", "--group", "bell\x07"), "is not a group name")
    refused(twostep(invite_server, "invite", "--username", "a b"), "is not a username")
    refused(twostep(invite_server, "invite", "--expires", "soon"), "--expires")
    refused(twostep(invite_server, "invite", "--email", "nope"), "e-mail address")
    with invite_server.client() as client:
        name = unique_username("taken")
        assert sign_up(client, name, token_of(invite_url(invite_server))).status_code == 201
        refused(twostep(invite_server, "invite", "--username", name), "is taken")
        refused(twostep(invite_server, "user", "groups", name, "--add", "with space"), "is not a group name")
    assert db_rows(invite_server, "SELECT 1 FROM invitations WHERE username = :u", u=name) == []
