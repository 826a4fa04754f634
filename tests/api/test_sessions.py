"""AppServer-side sessions over real HTTP: the cookie, rotation, logout, timeouts (SEC-04, SEC-48..SEC-53).

The server clock only moves forward here: an autouse fixture moves it a day on before each test, which
ends every session of earlier tests and starts the sign-in counters afresh.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import get
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

API = "/api/v1"
COOKIE = "twostep_session"  # the origin is http://localhost: no __Host- prefix, no Secure
MINUTE = 60
HOUR = 3600


# --------------------------------------------------------------------------------------------- helpers


class ServerClock:
    """Tracks the absolute offset of a server's test clock (set_clock takes an absolute offset)."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.offset = 0.0

    def set(self, offset: float) -> None:
        assert offset >= self.offset, "the clock only moves forward in this module"
        self.offset = offset
        self.server.set_clock(offset)

    def advance(self, seconds: float) -> None:
        self.set(self.offset + seconds)


@pytest.fixture(scope="module")
def server_clock(server: AppServer) -> ServerClock:
    return ServerClock(server)


@pytest.fixture(autouse=True)
def _fresh_day(server_clock: ServerClock) -> None:
    server_clock.advance(25 * HOUR)


@pytest.fixture
def client(server: AppServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    if code is not None:
        assert body["error"] == code, body
    return body


def set_cookies(response: httpx.Response) -> dict[str, tuple[str, dict[str, str | bool]]]:
    """Every Set-Cookie of a response: name → (value, {lower-case attribute: value or True})."""
    out: dict[str, tuple[str, dict[str, str | bool]]] = {}
    for raw in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in raw.split(";"))
        name, _, value = first.partition("=")
        attrs: dict[str, str | bool] = {}
        for attribute in attributes:
            key, eq, val = attribute.partition("=")
            attrs[key.strip().lower()] = val.strip() if eq else True
        out[name.strip()] = (value.strip(), attrs)
    return out


def session_token(response: httpx.Response) -> str:
    cookies = set_cookies(response)
    assert COOKIE in cookies, response.headers.get_list("set-cookie")
    value = cookies[COOKIE][0]
    assert value
    return value


def new_account(client: httpx.Client) -> str:
    username = unique_username()
    r = client.post(f"{API}/accounts", json={"username": username, "password": STRONG_PASSWORD})
    assert r.status_code == 201, r.text
    return username


def sign_in(client: httpx.Client, username: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    r = client.post(f"{API}/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "signed_in"}
    return r


def session_with(server: AppServer, token: str, path: str = "/session") -> httpx.Response:
    """A request that carries only this cookie value (no jar): how a replayed or forged cookie looks."""
    with server.client() as client:
        return client.get(f"{API}{path}", headers={"Cookie": f"{COOKIE}={token}"})


def verify_access(client: httpx.Client) -> httpx.Response:
    r = client.post(f"{API}/verify-access", json={"password": STRONG_PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verified"
    return r


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0), value
    return parsed


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# ----------------------------------------------------------------------------------- GET /session


def test_get_session_before_and_after_sign_in(server: AppServer, client: httpx.Client) -> None:
    """GET /session: 401 not_signed_in before; after sign-in the account, a UTC time and no factor."""
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    username = new_account(client)
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")  # sign-up does not sign in
    before = datetime.now(UTC) + timedelta(seconds=server_offset(server)) - timedelta(seconds=5)
    sign_in(client, username.upper())
    r = client.get(f"{API}/session")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"username", "signed_in_at", "second_factor", "access_verified_until"}
    assert body["username"] == username
    assert body["second_factor"] is None
    assert body["access_verified_until"] is None
    assert body["groups"] == [] and body["email_verified"] is False
    signed_in_at = parse_time(body["signed_in_at"])
    assert before <= signed_in_at <= before + timedelta(minutes=2)


def server_offset(server: AppServer) -> float:
    return float(get(server, f"{API}/_test/clock").json()["offset_seconds"])


def test_forward_auth_follows_the_session(server: AppServer, client: httpx.Client) -> None:
    """api.md forward auth: 401 without a session (with the login URL in Location since the second round:
    without X-Original-URL or X-Forwarded-*, the original request is the origin's "/"), 200 + Remote-User
    with one; never a redirect without ?redirect=1."""
    r = client.get(f"{API}/forward-auth")
    assert r.status_code == 401
    assert r.headers["location"] == f"{server.url}/login?next={quote(server.url + '/', safe='')}"
    assert "remote-user" not in r.headers
    username = new_account(client)
    sign_in(client, username)
    r = client.get(f"{API}/forward-auth")
    assert r.status_code == 200
    assert r.headers["remote-user"] == username


# ------------------------------------------------------------------------------------------- SEC-51


def test_sec51_logout_destroys_the_session_server_side(server: AppServer, client: httpx.Client) -> None:
    """SEC-51: POST /logout → 204; the old cookie, replayed, is 401 everywhere."""
    username = new_account(client)
    token = session_token(sign_in(client, username))
    assert session_with(server, token).status_code == 200
    r = client.post(f"{API}/logout", json={})
    assert r.status_code == 204
    assert r.content == b""
    cleared = set_cookies(r)
    assert COOKIE in cleared and cleared[COOKIE][0] in ("", '""')
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    assert_error(session_with(server, token), 401, "not_signed_in")
    assert_error(session_with(server, token, "/factors"), 401, "not_signed_in")
    assert session_with(server, token, "/forward-auth").status_code == 401
    # Logging out again, or without a session, is harmless.
    assert client.post(f"{API}/logout", json={}).status_code == 204


def test_sec51_logout_ends_only_this_session(server: AppServer) -> None:
    with server.client() as a, server.client() as b:
        username = new_account(a)
        sign_in(a, username)
        sign_in(b, username)
        assert a.post(f"{API}/logout", json={}).status_code == 204
        assert_error(a.get(f"{API}/session"), 401, "not_signed_in")
        assert b.get(f"{API}/session").status_code == 200


def test_sec51_ending_another_session_works_server_side(server: AppServer) -> None:
    """SEC-51: session A (access verified) ends session B; B's next request is 401."""
    with server.client() as a, server.client() as b:
        username = new_account(a)
        sign_in(a, username)
        sign_in(b, username)
        listed = a.get(f"{API}/sessions").json()["sessions"]
        assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
        other = next(s["id"] for s in listed if not s["current"])
        assert_error(a.delete(f"{API}/sessions/{other}"), 403, "verify_access_required")
        assert b.get(f"{API}/session").status_code == 200
        verify_access(a)
        assert a.delete(f"{API}/sessions/{other}").status_code == 204
        assert_error(b.get(f"{API}/session"), 401, "not_signed_in")
        assert a.get(f"{API}/session").status_code == 200
        assert_error(a.delete(f"{API}/sessions/{other}"), 404, "not_found")


# ------------------------------------------------------------------------------------------- SEC-49


def _assert_session_cookie_attributes(response: httpx.Response) -> str:
    cookies = set_cookies(response)
    assert COOKIE in cookies, cookies
    assert not any(name.startswith("__Host-") for name in cookies)  # http origin: no __Host- prefix
    value, attrs = cookies[COOKIE]
    assert attrs.get("httponly") is True, attrs
    assert str(attrs.get("samesite", "")).lower() in ("lax", "strict"), attrs
    assert str(attrs.get("samesite", "")).lower() == "lax", attrs
    assert attrs.get("path") == "/", attrs
    assert "domain" not in attrs, attrs
    assert "secure" not in attrs, attrs  # plain http://localhost: Secure would drop the cookie
    # The token is never in a body.
    assert value not in response.text
    return value


def test_sec49_session_cookie_attributes_at_every_step(server: AppServer, client: httpx.Client) -> None:
    """SEC-49: HttpOnly, SameSite=Lax, Path=/, no Domain (and no Secure on http) at sign-in and at
    verify-access; the token never appears in a response body."""
    username = new_account(client)
    login = sign_in(client, username)
    first = _assert_session_cookie_attributes(login)
    verified = verify_access(client)
    second = _assert_session_cookie_attributes(verified)
    assert first != second
    for r in (
        client.get(f"{API}/session"),
        client.get(f"{API}/sessions"),
        client.get(f"{API}/security-events"),
    ):
        assert r.status_code == 200
        assert first not in r.text and second not in r.text


# ------------------------------------------------------------------------------------------- SEC-48


def test_sec48_session_ids_are_256_bit_random_and_opaque(server: AppServer, client: httpx.Client) -> None:
    """SEC-48: the cookie value decodes to ≥ 32 bytes; values never repeat nor look sequential."""
    username = new_account(client)
    tokens = []
    for _ in range(20):
        with server.client() as c:
            tokens.append(session_token(sign_in(c, username)))
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        raw = b64url_decode(token)
        assert len(raw) >= 32, (token, len(raw))
        assert username not in token
    # No shared prefix or suffix worth mentioning (sequential or time-based ids share long ones).
    for a, b in itertools.pairwise(tokens):
        assert a[:6] != b[:6] and a[-6:] != b[-6:]
    # Roughly uniform bytes: 20 * 32 bytes cover most of the 256 values.
    seen = set().union(*(b64url_decode(t) for t in tokens))
    assert len(seen) > 180


def _forgeries(token: str) -> list[str]:
    raw = b64url_decode(token)
    incremented = (int.from_bytes(raw, "big") + 1).to_bytes(len(raw), "big")
    flip = "A" if token[-1] != "A" else "B"
    return [
        base64.urlsafe_b64encode(incremented).decode().rstrip("="),
        token[:-1] + flip,
        token[1:],
        token + "A",
        token.upper() if token.upper() != token else token.lower(),
        secrets.token_urlsafe(32),
        hashlib.sha256(token.encode()).hexdigest(),  # the stored hash is not a key either
        "",
        "x" * 200,
    ]


def test_sec48_forged_or_incremented_session_ids_are_401(server: AppServer, client: httpx.Client) -> None:
    """SEC-48: a forged, incremented or truncated cookie value → 401 not_signed_in, validated server-side."""
    username = new_account(client)
    token = session_token(sign_in(client, username))
    for forged in _forgeries(token):
        assert forged != token
        assert_error(session_with(server, forged), 401, "not_signed_in")
    assert session_with(server, token).status_code == 200


# ------------------------------------------------------------------------------------------- SEC-04


def test_sec04_session_id_rotates_at_sign_in_and_verify_access(
    server: AppServer, client: httpx.Client
) -> None:
    """SEC-04: a planted id is not adopted at sign-in; the id changes at sign-in and at verify-access;
    every earlier value, replayed, is 401."""
    username = new_account(client)
    planted = secrets.token_urlsafe(32)
    client.cookies.set(COOKIE, planted)
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    login = sign_in(client, username)
    assert f"{COOKIE}={planted}" in login.request.headers.get("cookie", "")  # the planted id was sent
    signed_in = session_token(login)
    assert signed_in != planted
    verified = session_token(verify_access(client))
    assert len({planted, signed_in, verified}) == 3
    assert_error(session_with(server, planted), 401, "not_signed_in")
    assert_error(session_with(server, signed_in), 401, "not_signed_in")
    r = session_with(server, verified)
    assert r.status_code == 200 and r.json()["username"] == username
    assert r.json()["access_verified_until"] is not None
    # A second verify-access rotates again and retires the previous value.
    again = session_token(verify_access(client))
    assert again != verified
    assert_error(session_with(server, verified), 401, "not_signed_in")
    assert session_with(server, again).status_code == 200


def test_sec04_signing_in_again_replaces_the_current_session(server: AppServer, client: httpx.Client) -> None:
    """SEC-04: a new sign-in in the same browser gets a new id and the old one stops working."""
    username = new_account(client)
    first = session_token(sign_in(client, username))
    second = session_token(sign_in(client, username))
    assert first != second
    assert_error(session_with(server, first), 401, "not_signed_in")
    assert session_with(server, second).status_code == 200


def test_sec04_failed_verify_access_keeps_the_session(server: AppServer, client: httpx.Client) -> None:
    username = new_account(client)
    token = session_token(sign_in(client, username))
    r = client.post(f"{API}/verify-access", json={"password": "not " + STRONG_PASSWORD})
    assert_error(r, 401, "invalid_credentials")
    assert COOKIE not in set_cookies(r)
    assert session_with(server, token).json()["access_verified_until"] is None


# ------------------------------------------------------------------------------------------- SEC-50


def test_sec50_idle_timeout_is_30_minutes(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-50: 29 minutes idle is fine (and counts as activity); 30 minutes + 1 s idle → 401."""
    username = new_account(client)
    sign_in(client, username)
    server_clock.advance(29 * MINUTE)
    assert client.get(f"{API}/session").status_code == 200
    server_clock.advance(30 * MINUTE + 1)
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    # Expired for good, even if the clock were kind again later: activity does not revive it.
    assert_error(client.get(f"{API}/factors"), 401, "not_signed_in")
    sign_in(client, username)  # a full sign-in starts afresh
    assert client.get(f"{API}/session").status_code == 200


def test_sec50_idle_timeout_is_enforced_for_every_endpoint(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    username = new_account(client)
    token = session_token(sign_in(client, username))
    server_clock.advance(30 * MINUTE + 1)
    for path in ("/session", "/factors", "/sessions", "/security-events"):
        assert_error(session_with(server, token, path), 401, "not_signed_in")
    assert session_with(server, token, "/forward-auth").status_code == 401


def test_sec50_absolute_lifetime_is_12_hours_despite_activity(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-50: activity every 29 minutes keeps a session alive until 12 h after sign-in, then 401."""
    username = new_account(client)
    sign_in(client, username)
    start = server_clock.offset
    step = 29 * MINUTE
    elapsed = 0
    while elapsed + step < 12 * HOUR:
        elapsed += step
        server_clock.set(start + elapsed)
        r = client.get(f"{API}/session")
        assert r.status_code == 200, (elapsed / HOUR, r.text)
    server_clock.set(start + 12 * HOUR - MINUTE)
    assert client.get(f"{API}/session").status_code == 200
    server_clock.set(start + 12 * HOUR + 1)
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    sign_in(client, username)
    assert client.get(f"{API}/session").status_code == 200


def test_sec50_verify_access_does_not_extend_the_absolute_lifetime(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-50: rotating the id at verify-access keeps the session's 12-hour end."""
    username = new_account(client)
    sign_in(client, username)
    start = server_clock.offset
    for k in range(1, 25):
        server_clock.set(start + k * 29 * MINUTE)
        if k == 24:
            verify_access(client)
        else:
            assert client.get(f"{API}/session").status_code == 200
    server_clock.set(start + 12 * HOUR + 1)
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")


# ------------------------------------------------------------------------------------------- SEC-53


def test_sec53_no_session_token_in_any_location_header_url_or_body(server: AppServer) -> None:
    """SEC-53: across sign-up, sign-in, verify-access, the session list, forward auth and logout, no
    session token (nor its hash) appears in a Location header, a URL or a response body."""
    seen: list[httpx.Response] = []

    def record(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    with server.client(event_hooks={"response": [record]}) as c:
        username = new_account(c)
        sign_in(c, username)
        c.get(f"{API}/session")
        c.get(f"{API}/forward-auth")
        verify_access(c)
        c.get(f"{API}/sessions")
        c.get(f"{API}/factors")
        c.get(f"{API}/security-events")
        c.get("/")
        c.post(f"{API}/login/passkey/options", json={})
        with server.client(event_hooks={"response": [record]}) as other:
            sign_in(other, username)
            sign_in(other, username)
        c.post(f"{API}/logout", json={})
        sign_in(c, username)
        c.post(f"{API}/logout", json={})
    tokens = {value for r in seen for name, (value, _) in set_cookies(r).items() if value not in ("", '""')}
    assert len(tokens) >= 6
    secrets_seen = tokens | {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    for r in seen:
        assert r.status_code < 400, (r.request.url, r.text)
        assert r.headers.get("cache-control") == "no-store" or not r.request.url.path.startswith(API)
        location = r.headers.get("location", "")
        for secret in secrets_seen:
            assert secret not in location, r.request.url
            assert secret not in str(r.request.url), r.request.url
            assert secret not in r.text, (r.request.url, "body")
    # The sessions list has public ids, which are not the tokens.
    with server.client() as c:
        sign_in(c, username)
        ids = [s["id"] for s in c.get(f"{API}/sessions").json()["sessions"]]
        assert ids and not set(ids) & tokens
