"""Two `twostep serve` processes (think: two machines) sharing one PostgreSQL database and one key file.

All state is in the database: single use of codes, attempt counting and sessions hold across processes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """A (1 worker) and B (2 workers), separate data directories, the same key file and public origin."""
    tmp_path = tmp_path_factory.mktemp("pair")
    env = {"TWOSTEP_ORIGIN": f"http://localhost:{free_port()}"}  # the load balancer's origin
    a = Server(tmp_path / "a", database_url=postgres_url, env=env)
    b = Server(tmp_path / "b", database_url=postgres_url, workers=2, env=env)
    a.start()
    try:
        (tmp_path / "b").mkdir()
        shutil.copy2(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
        b.start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


@pytest.fixture
def pair(servers: tuple[Server, Server]) -> tuple[Server, Server]:
    """The servers, with their test clocks back at the real time (each test uses a new account)."""
    set_clocks(servers, 0)
    return servers


def set_clocks(servers: tuple[Server, Server], offset: float) -> None:
    for server in servers:
        server.set_clock(offset)


def totp_code(secret: str, offset_seconds: float = 0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    out = subprocess.run(
        ["oathtool", "--totp", "-b", "--now", at.strftime("%Y-%m-%d %H:%M:%S UTC"), secret],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wrong_code(secret: str, offset_seconds: float) -> str:
    """Six digits that no time step near now accepts."""
    near = {totp_code(secret, offset_seconds + 30 * k) for k in range(-3, 4)}
    return next(
        c
        for c in ("000000", "111111", "222222", "333333", "444444", "555555", "666666", "777777")
        if c not in near
    )


def sign_up_with_totp(client: httpx.Client, username: str) -> str:
    assert (
        client.post("/api/v1/accounts", json={"username": username, "password": STRONG_PASSWORD}).status_code
        == 201
    )
    assert client.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD}).json() == {
        "status": "signed_in"
    }
    assert (
        client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD}).json()["status"]
        == "verified"
    )
    enrolment = client.post("/api/v1/factors/totp", json={}).json()
    r = client.post(
        f"/api/v1/factors/totp/{enrolment['enrollment_id']}/confirm",
        json={"name": "phone", "code": totp_code(enrolment["secret"])},
    )
    assert r.status_code == 201, r.text
    assert client.post("/api/v1/logout", json={}).status_code == 204
    return str(enrolment["secret"])


def pending_login(client: httpx.Client, username: str) -> None:
    r = client.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD})
    assert r.json()["status"] == "second_factor_required", r.text


def test_a_code_used_on_one_server_is_refused_on_the_other(pair: tuple[Server, Server]) -> None:
    a, b = pair
    username = unique_username("pair")
    with a.client() as on_a, b.client() as on_b:
        secret = sign_up_with_totp(on_a, username)
        set_clocks(pair, 60)
        code = totp_code(secret, 60)

        pending_login(on_a, username)
        assert on_a.post("/api/v1/login/totp", json={"code": code}).json() == {"status": "signed_in"}

        pending_login(on_b, username)
        r = on_b.post("/api/v1/login/totp", json={"code": code})
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_code"

        # B can check codes at all (same key file): the next time step's code works there.
        set_clocks(pair, 120)
        r = on_b.post("/api/v1/login/totp", json={"code": totp_code(secret, 120)})
        assert r.json() == {"status": "signed_in"}, r.text


def test_throttling_counts_attempts_made_on_both_servers(pair: tuple[Server, Server]) -> None:
    a, b = pair
    username = unique_username("pair")
    with a.client() as on_a, b.client() as on_b:
        secret = sign_up_with_totp(on_a, username)
        set_clocks(pair, 60)
        bad = wrong_code(secret, 60)
        pending_login(on_a, username)
        pending_login(on_b, username)

        # Five failures are free (three on A, two on B); each server alone has seen fewer.
        for client in (on_a, on_b, on_a, on_b, on_a):
            r = client.post("/api/v1/login/totp", json={"code": bad})
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "invalid_code"

        r = on_b.post("/api/v1/login/totp", json={"code": totp_code(secret, 60)})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "too_many_attempts"
        assert int(r.headers["retry-after"]) >= 1
        r = on_a.post("/api/v1/login/totp", json={"code": totp_code(secret, 60)})
        assert r.status_code == 429, r.text


def test_a_session_made_on_one_server_works_on_the_other(pair: tuple[Server, Server]) -> None:
    a, b = pair
    username = unique_username("pair")
    with a.client() as on_a:
        secret = sign_up_with_totp(on_a, username)
        set_clocks(pair, 60)
        pending_login(on_a, username)
        assert on_a.post("/api/v1/login/totp", json={"code": totp_code(secret, 60)}).json() == {
            "status": "signed_in"
        }
        cookies = dict(on_a.cookies)
        assert cookies, "no session cookie"

        with b.client() as on_b:
            on_b.cookies.update(cookies)
            r = on_b.get("/api/v1/session")
            assert r.status_code == 200, r.text
            assert r.json()["username"] == username
            assert r.json()["second_factor"] == "totp"
            r = on_b.get("/api/v1/forward-auth")
            assert r.status_code == 200
            assert r.headers["remote-user"] == username

            # Signing out on B ends the session on A as well.
            assert on_b.post("/api/v1/logout", json={}).status_code == 204
        assert on_a.get("/api/v1/session").status_code == 401
        assert on_a.get("/api/v1/forward-auth").status_code == 401
