"""H07: password guessing stays limited per account, but an attacker cannot lock the owner out cheaply.

Counters: per (username, client address) with the usual backoff (5 free failures); per username from every
address, a ceiling of 100 consecutive failures; a browser that signed in to the account before (a device
cookie) does not meet that ceiling. Loopback is a trusted proxy here, so X-Forwarded-For sets each
request's client address (as tests/e2e/test_trusted_proxies.py shows).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

API = "/api/v1"
WRONG = "wrong " + STRONG_PASSWORD
NEW_PASSWORD = "a brand new passphrase for twostep tests"
CEILING = 100
DEVICE = "twostep_device"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("h07"), env={"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}) as srv:
        yield srv


class Clock:
    """The server's test clock, moved forward only."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.server.set_clock(self.offset)


@pytest.fixture(scope="module")
def clock(server: AppServer) -> Clock:
    return Clock(server)


def address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def sign_in(client: httpx.Client, username: str, password: str, ip: str) -> httpx.Response:
    body = {"username": username, "password": password}
    return client.post(f"{API}/login", json=body, headers={"X-Forwarded-For": ip})


def new_account(server: AppServer) -> str:
    username = unique_username("h07")
    with server.client() as client:
        body = {"username": username, "password": STRONG_PASSWORD}
        r = client.post(f"{API}/accounts", json=body, headers={"X-Forwarded-For": address()})
        assert r.status_code == 201, r.text
    return username


def assert_signed_in(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "signed_in"}


def assert_waits(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == "too_many_attempts"
    assert int(r.headers["Retry-After"]) == body["retry_after"] >= 1
    assert "set-cookie" not in r.headers
    return int(body["retry_after"])


def distributed_attack(server: AppServer, username: str, failures: int = CEILING) -> None:
    """``failures`` wrong passwords, 5 from each of many addresses: each one evaluated (401)."""
    for _ in range(failures // 5):
        ip = address()
        with server.client() as attacker:
            for _ in range(5):
                r = sign_in(attacker, username, WRONG, ip)
                assert r.status_code == 401, r.text


def test_H07_wrong_passwords_from_one_address_do_not_lock_the_owner_out_elsewhere(server: AppServer) -> None:
    victim = new_account(server)
    attacker_ip = address()
    with server.client() as attacker:
        for _ in range(5):
            assert sign_in(attacker, victim, WRONG, attacker_ip).status_code == 401
        assert_waits(sign_in(attacker, victim, WRONG, attacker_ip))
        # That address stays limited for this account: case and width variants too, the right password too.
        assert_waits(sign_in(attacker, victim.upper(), WRONG, attacker_ip))
        assert_waits(sign_in(attacker, victim, STRONG_PASSWORD, attacker_ip))
    with server.client() as owner:  # a new browser, no device cookie, another address
        assert_signed_in(sign_in(owner, victim, STRONG_PASSWORD, address()))


@pytest.mark.parametrize("known", [True, False], ids=["known-username", "unknown-username"])
def test_H07_the_account_wide_ceiling_stops_a_distributed_attack(
    server: AppServer, clock: Clock, known: bool
) -> None:
    """100 failures from 20 addresses, then every browser without a device cookie waits, from anywhere;
    an unknown username behaves exactly alike (SEC-05). The wait ends (never a lock for ever)."""
    victim = new_account(server) if known else unique_username("ghost")
    distributed_attack(server, victim)
    with server.client() as fresh:
        wait = assert_waits(sign_in(fresh, victim, STRONG_PASSWORD, address()))
        assert 25 <= wait <= 30
        assert_waits(sign_in(fresh, victim, WRONG, address()))
    clock.advance(wait + 1)
    with server.client() as fresh:
        r = sign_in(fresh, victim, STRONG_PASSWORD, address())
        if known:
            assert_signed_in(r)  # and the success resets the ceiling
            assert sign_in(fresh, victim, WRONG, address()).status_code == 401
        else:
            assert r.status_code == 401, r.text
            # The 101st failure starts a longer wait (60 s).
            assert 55 <= assert_waits(sign_in(fresh, victim, WRONG, address())) <= 60


def test_H07_a_browser_that_signed_in_before_passes_the_ceiling(server: AppServer) -> None:
    victim = new_account(server)
    home = address()
    with server.client() as owner:
        r = sign_in(owner, victim, STRONG_PASSWORD, home)
        assert_signed_in(r)
        device = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{DEVICE}=")]
        assert len(device) == 1, r.headers.get_list("set-cookie")
        attributes = {part.strip().lower() for part in device[0].split(";")[1:]}
        assert {"httponly", "path=/", "samesite=lax", f"max-age={365 * 24 * 3600}"} <= attributes, device
        assert owner.cookies.get(DEVICE)
        assert owner.post(f"{API}/logout", json={}).status_code == 204
        assert owner.cookies.get(DEVICE)  # signing out keeps the device cookie
        distributed_attack(server, victim)
        with server.client() as stranger:  # the same address, no device cookie: the ceiling
            assert_waits(sign_in(stranger, victim, STRONG_PASSWORD, home))
        assert_signed_in(sign_in(owner, victim, STRONG_PASSWORD, home))
        # The signed-in session verifies access with its password (H07: verify access is not locked out).
        r = owner.post(
            f"{API}/verify-access", json={"password": STRONG_PASSWORD}, headers={"X-Forwarded-For": home}
        )
        assert r.status_code == 200 and r.json()["status"] == "verified", r.text
        # Anywhere else, the same browser passes too.
        assert owner.post(f"{API}/logout", json={}).status_code == 204
        assert_signed_in(sign_in(owner, victim, STRONG_PASSWORD, address()))
    # The owner's success did not lift the ceiling for the attacker.
    with server.client() as stranger:
        assert_waits(sign_in(stranger, victim, STRONG_PASSWORD, address()))


def test_H07_a_forged_moved_or_stale_device_cookie_gives_nothing(server: AppServer) -> None:
    attacker_account = new_account(server)
    victim = new_account(server)
    with server.client() as attacker:
        assert_signed_in(sign_in(attacker, attacker_account, STRONG_PASSWORD, address()))
        attackers_cookie = attacker.cookies.get(DEVICE)
    assert attackers_cookie
    # The victim's old browser: signed in, then the password was changed from it.
    with server.client() as old_browser:
        ip = address()
        assert_signed_in(sign_in(old_browser, victim, STRONG_PASSWORD, ip))
        stale_cookie = old_browser.cookies.get(DEVICE)
        headers = {"X-Forwarded-For": ip}
        r = old_browser.post(f"{API}/verify-access", json={"password": STRONG_PASSWORD}, headers=headers)
        assert r.status_code == 200, r.text
        change = {"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD}
        assert old_browser.post(f"{API}/password", json=change, headers=headers).status_code == 204
    # The victim's current browser, signed in with the new password.
    with server.client() as current:
        assert_signed_in(sign_in(current, victim, NEW_PASSWORD, address()))
        current_cookie = current.cookies.get(DEVICE)
    assert stale_cookie and current_cookie
    distributed_attack(server, victim)
    device_id, _, tag = current_cookie.partition(".")
    cookies = {
        "another account's": attackers_cookie,
        "stale (password changed)": stale_cookie,
        "forged tag": f"{device_id}.{'A' * len(tag)}",
        "made up": f"{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}",
    }
    for what, value in cookies.items():
        with server.client(cookies={DEVICE: value}) as browser:
            r = sign_in(browser, victim, NEW_PASSWORD, address())
            assert r.status_code == 429, (what, r.text)
    with server.client(cookies={DEVICE: current_cookie}) as browser:  # the real one, for contrast
        assert_signed_in(sign_in(browser, victim, NEW_PASSWORD, address()))
