"""The OpenID Provider in real `twostep serve` processes: the CLI, races across workers, two servers."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.support.api import Clients, expect, new_user, release_together
from tests.support.oidc import REDIRECT_URI, RelyingParty
from tests.support.server import Server, free_port
from twostep.storage import migrate
from twostep.storage.db import make_engine

pytestmark = pytest.mark.e2e


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env}
    return subprocess.run(
        [sys.executable, "-m", "twostep", *args], env=env, capture_output=True, text=True, timeout=60
    )


def add_client(server: Server, *args: str) -> tuple[str, str | None]:
    done = cli(server, "client", "add", "App", "--redirect-uri", REDIRECT_URI, *args)
    assert done.returncode == 0, done.stderr
    client_id = re.search(r"client_id:\s+(\S+)", done.stdout)
    secret = re.search(r"client_secret:\s+(\S+)", done.stdout)
    assert client_id
    return client_id.group(1), secret.group(1) if secret else None


def code_for(rp: RelyingParty, browser: httpx.Client) -> str:
    r = browser.get(rp.authorize_url(), follow_redirects=False)
    assert r.status_code == 302, r.text
    return rp.code_from(r.headers["location"])


def test_client_commands(server: Server) -> None:
    client_id, secret = add_client(
        server, "--group", "staff", "--post-logout-redirect-uri", "https://rp.example/"
    )
    assert secret and len(secret) >= 40
    listed = cli(server, "client", "list")
    assert listed.returncode == 0 and client_id in listed.stdout and "groups: staff" in listed.stdout
    assert secret not in listed.stdout, "the secret is shown once"
    bad = cli(server, "client", "add", "Bad", "--redirect-uri", "http://example.com/cb")
    assert bad.returncode == 2 and "https" in bad.stderr and "Traceback" not in bad.stderr
    public_id, public_secret = add_client(server, "--public", "--signing-alg", "ES256")
    assert public_secret is None
    assert cli(server, "client", "remove", public_id).returncode == 0
    gone = cli(server, "client", "remove", public_id)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert public_id not in cli(server, "client", "list").stdout
    rotated = cli(server, "rotate-signing-key", "--now")
    assert rotated.returncode == 0, rotated.stderr


def test_SEC_oidc_code_single_use_across_workers(multi_server: Server) -> None:
    """20 token requests with one code at once, across 4 workers: exactly one gets tokens."""
    client_id, secret = add_client(multi_server)
    with Clients(multi_server) as clients:
        user = new_user(multi_server, clients)
        rp = RelyingParty(multi_server, client_id, secret)
        code = code_for(rp, user.client)
        answers = release_together([lambda: rp.token_request(code) for _ in range(20)])
        ok = [r for r in answers if r.status_code == 200]
        assert len(ok) == 1, [r.status_code for r in answers]
        assert all(r.json()["error"] == "invalid_grant" for r in answers if r.status_code != 200)
        # The replays revoked what the one use issued.
        assert rp.userinfo(ok[0].json()["access_token"]).status_code == 401


def test_SEC_oidc_refresh_single_use_across_workers(multi_server: Server) -> None:
    client_id, secret = add_client(multi_server)
    with Clients(multi_server) as clients:
        user = new_user(multi_server, clients)
        rp = RelyingParty(multi_server, client_id, secret)
        token = rp.tokens(code_for(rp, user.client))
        answers = release_together([lambda: rp.refresh(token["refresh_token"]) for _ in range(20)])
        assert sum(r.status_code == 200 for r in answers) == 1, [r.status_code for r in answers]


@pytest.fixture(scope="module")
def own_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of its own: the signing keys are sealed with the key file of the servers that made them,
    and the session's database is shared by servers with other key files."""
    base = make_url(postgres_url)
    name = f"twostep_oidc_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="module")
def pair(own_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two servers on one PostgreSQL database with one key file, behind one public origin."""
    postgres_url = own_postgres_url
    tmp: Path = tmp_path_factory.mktemp("oidc-pair")
    env = {"TWOSTEP_ORIGIN": f"http://localhost:{free_port()}"}
    a = Server(tmp / "a", database_url=postgres_url, env=env)
    b = Server(tmp / "b", database_url=postgres_url, env=env)
    a.start()
    try:
        (tmp / "b").mkdir()
        shutil.copy2(tmp / "a" / "secret.key", tmp / "b" / "secret.key")
        b.start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_two_servers_share_codes_and_keys(pair: tuple[Server, Server]) -> None:
    a, b = pair
    origin = a.env["TWOSTEP_ORIGIN"]
    client_id, secret = add_client(a)
    with Clients(a) as clients:
        user = new_user(a, clients)
        on_a = RelyingParty(a, client_id, secret, issuer=origin)
        code = code_for(on_a, user.client)
        # Redeemed at B; verified with A's JWKS and with B's.
        on_b = RelyingParty(b, client_id, secret, issuer=origin)
        on_b.state, on_b.nonce, on_b.verifier = on_a.state, on_a.nonce, on_a.verifier
        token = on_b.tokens(code)
        claims = on_b.verify_id_token(token["id_token"], jwks_from=a)
        assert claims == on_b.verify_id_token(token["id_token"], jwks_from=b)
        assert claims["iss"] == origin
        expect(on_a.userinfo(token["access_token"]), 200)
