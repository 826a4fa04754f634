"""SEC-26 (b): X-Forwarded-For is believed only from TWOSTEP_TRUSTED_PROXIES, and never buys more guesses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.server import Server

pytestmark = pytest.mark.e2e

CLIENT = "203.0.113.9"
# The tests reach the servers over loopback: the peer is always 127.0.0.1.
TRUST = {
    "none": None,
    "loopback": "127.0.0.1",
    "elsewhere": "192.0.2.0/24, 2001:db8::/32",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name, trusted in TRUST.items():
            env = {"TWOSTEP_TRUSTED_PROXIES": trusted} if trusted else {}
            started[name] = Server(tmp_path_factory.mktemp(f"proxies-{name}"), env=env).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def totp_code(secret: str, offset_seconds: float = 0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    out = subprocess.run(
        ["oathtool", "--totp", "-b", "--now", at.strftime("%Y-%m-%d %H:%M:%S UTC"), secret],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def sign_in_ip(server: Server, forwarded_for: str | None) -> str:
    """Sign up and sign in sending this X-Forwarded-For; the address twostep recorded for the sign-in."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    username = unique_username("xff")
    with server.client(headers=headers) as client:
        body = {"username": username, "password": STRONG_PASSWORD}
        assert client.post("/api/v1/accounts", json=body).status_code == 201
        assert client.post("/api/v1/login", json=body).json() == {"status": "signed_in"}
        events = client.get("/api/v1/security-events").json()["events"]
        assert events[0]["type"] == "signed_in"
        sessions = client.get("/api/v1/sessions").json()["sessions"]
        assert [s["ip"] for s in sessions] == [events[0]["ip"]]
        return str(events[0]["ip"])


def test_without_trusted_proxies_forwarded_for_is_ignored(servers: dict[str, Server]) -> None:
    assert sign_in_ip(servers["none"], CLIENT) == "127.0.0.1"


def test_from_a_trusted_proxy_forwarded_for_is_believed(servers: dict[str, Server]) -> None:
    assert sign_in_ip(servers["loopback"], CLIENT) == CLIENT
    assert sign_in_ip(servers["loopback"], None) == "127.0.0.1"


def test_from_a_peer_that_is_not_a_trusted_proxy_forwarded_for_is_ignored(servers: dict[str, Server]) -> None:
    assert sign_in_ip(servers["elsewhere"], CLIENT) == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        # A client-written hop in front of the one the proxy appended does not win.
        (f"198.51.100.7, {CLIENT}", CLIENT),
        # Trusted hops are skipped from the right.
        (f"{CLIENT}, 127.0.0.1", CLIENT),
    ],
)
def test_the_rightmost_untrusted_hop_is_the_client(
    servers: dict[str, Server], forwarded_for: str, expected: str
) -> None:
    assert sign_in_ip(servers["loopback"], forwarded_for) == expected


@pytest.mark.parametrize("trust", ["none", "loopback"])
def test_spoofed_forwarded_for_never_resets_the_second_factor_counter(
    servers: dict[str, Server], trust: str
) -> None:
    server = servers[trust]
    server.set_clock(0)
    username = unique_username("xff")
    body = {"username": username, "password": STRONG_PASSWORD}
    with server.client() as client:
        assert client.post("/api/v1/accounts", json=body).status_code == 201
        assert client.post("/api/v1/login", json=body).json() == {"status": "signed_in"}
        assert (
            client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD}).json()["status"]
            == "verified"
        )
        enrolment = client.post("/api/v1/factors/totp", json={}).json()
        secret = enrolment["secret"]
        r = client.post(
            f"/api/v1/factors/totp/{enrolment['enrollment_id']}/confirm",
            json={"name": "phone", "code": totp_code(secret)},
        )
        assert r.status_code == 201, r.text

    server.set_clock(60)
    near = {totp_code(secret, 60 + 30 * k) for k in range(-3, 4)}
    bad = next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in near)

    def attempt(n: int, code: str) -> httpx.Response:
        # Every attempt: a new pending sign-in, from a "different" address.
        with server.client(headers={"X-Forwarded-For": f"198.51.100.{n}"}) as client:
            r = client.post("/api/v1/login", json=body)
            assert r.json()["status"] == "second_factor_required", r.text
            return client.post("/api/v1/login/totp", json={"code": code})

    for n in range(1, 6):
        r = attempt(n, bad)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_code"
    r = attempt(6, totp_code(secret, 60))
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "too_many_attempts"
    assert "retry-after" in r.headers


def test_forwarded_for_split_over_several_header_lines_is_read_as_one_list(
    servers: dict[str, Server],
) -> None:
    # HAProxy's `option forwardfor` (and others) add a header line of their own after the client's;
    # RFC 9110 §5.3: the lines are one comma-separated list. The client's own line must not win.
    headers = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", CLIENT)]
    username = unique_username("xff")
    with httpx.Client(base_url=servers["loopback"].url, headers=headers, timeout=30) as client:
        body = {"username": username, "password": STRONG_PASSWORD}
        assert client.post("/api/v1/accounts", json=body).status_code == 201
        assert client.post("/api/v1/login", json=body).json() == {"status": "signed_in"}
        events = client.get("/api/v1/security-events").json()["events"]
    assert events[0]["ip"] == CLIENT
