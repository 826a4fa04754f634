"""Sign-up and password sign-in over real HTTP (SEC-05, SEC-08..SEC-11, SEC-28; docs/api.md "Accounts").

The sign-in counters are per username and address, per username (a ceiling of 100, H07) and per client
address; every request here comes from 127.0.0.1, whose counter allows 20 failures before it backs off.
An autouse fixture moves the server clock a day forward before each test, which starts the address counter
afresh (it forgets after 24 hours) and leaves nothing of an earlier test's timing behind.
"""

from __future__ import annotations

import secrets
import statistics
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

API = "/api/v1"
DAY_AND_MORE = 25 * 3600


# --------------------------------------------------------------------------------------------- helpers


class ServerClock:
    """Tracks the absolute offset of a server's test clock (set_clock takes an absolute offset)."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.server.set_clock(self.offset)

    def new_day(self) -> None:
        """Past every backoff (≤ 1 h) and past the address counter's 24-hour memory."""
        self.advance(DAY_AND_MORE)


@pytest.fixture(scope="module")
def server_clock(server: AppServer) -> ServerClock:
    return ServerClock(server)


@pytest.fixture(autouse=True)
def _fresh_day(server_clock: ServerClock) -> None:
    server_clock.new_day()


@pytest.fixture
def client(server: AppServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    if code is not None:
        assert body["error"] == code, body
    return body


def sign_up(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post(f"{API}/accounts", json={"username": username, "password": password})


def sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post(f"{API}/login", json={"username": username, "password": password})


def new_account(client: httpx.Client, password: str = STRONG_PASSWORD, prefix: str = "user") -> str:
    username = unique_username(prefix)
    r = sign_up(client, username, password)
    assert r.status_code == 201, r.text
    assert r.json() == {"username": username}
    return username


def fold(username: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def assert_signed_in(server: AppServer, username: str, password: str) -> None:
    """A fresh client signs in with these credentials and GET /session names the account."""
    with server.client() as c:
        r = sign_in(c, username, password)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "signed_in"}
        s = c.get(f"{API}/session")
        assert s.status_code == 200, s.text
        assert s.json()["username"] == fold(username)


def assert_refused(server: AppServer, username: str, password: str) -> None:
    with server.client() as c:
        assert_error(sign_in(c, username, password), 401, "invalid_credentials")
        assert_error(c.get(f"{API}/session"), 401, "not_signed_in")


def weak(response: httpx.Response) -> str:
    body = assert_error(response, 422, "weak_password")
    message: str = body["message"]
    assert len(message) >= 10, body  # a reason for a person, not just a code
    return message


def rand_text(n: int) -> str:
    """n characters of mixed-case letters and digits, never common and never a context word."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


# ------------------------------------------------------------------------------------------- SEC-08


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        ("ascii-14", False),
        ("ascii-15", True),
        ("é" * 14, False),
        ("é" * 15, True),
        ("😀" * 14, False),
        ("😀" * 15, True),
        ("e\u0301" * 14, False),  # 28 code points as sent, 14 after NFKC
    ],
    ids=["14-ascii", "15-ascii", "14-e-acute", "15-e-acute", "14-emoji", "15-emoji", "14-nfd-e-acute"],
)
def test_sec08_minimum_length_is_15_code_points(
    password: str, accepted: bool, server: AppServer, client: httpx.Client
) -> None:
    """SEC-08: 15 Unicode code points (after NFKC) at least; 14 is refused with a reason."""
    if password.startswith("ascii-"):
        password = rand_text(int(password.removeprefix("ascii-")))
    username = unique_username()
    r = sign_up(client, username, password)
    if accepted:
        assert r.status_code == 201, r.text
        assert_signed_in(server, username, password)
    else:
        message = weak(r)
        assert "15" in message, message
        assert_refused(server, username, password)


# ------------------------------------------------------------------------------------------- SEC-09


def test_sec09_long_password_is_checked_in_full(server: AppServer, client: httpx.Client) -> None:
    """SEC-09: a 128-character password; its first 127 characters fail, its case swapped fails, it works."""
    password = rand_text(64) + rand_text(64)
    assert len(password) == 128 and password.swapcase() != password
    username = new_account(client, password)
    assert_refused(server, username, password[:127])
    assert_refused(server, username, password.swapcase())
    assert_refused(server, username, password + "x")
    assert_signed_in(server, username, password)


def test_sec09_upper_bound_is_256_code_points(server: AppServer, client: httpx.Client) -> None:
    """SEC-09: at most 256 characters (≥ 64 allowed); above it, weak_password says why."""
    ok = rand_text(256)
    username = new_account(client, ok)
    assert_signed_in(server, username, ok)
    weak(sign_up(client, unique_username(), rand_text(257)))


def test_sec09_huge_password_is_refused_quickly(client: httpx.Client) -> None:
    """SEC-09: a very long password is refused fast (no hashing of it), at sign-up and at sign-in."""
    huge = "x" * 60_000
    start = time.perf_counter()
    r = sign_up(client, unique_username(), huge)
    assert 400 <= r.status_code < 500, r.text
    r = sign_in(client, unique_username(), huge)
    assert 400 <= r.status_code < 500, r.text
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------------------------------- SEC-10


@pytest.mark.parametrize(
    "password",
    ["correct horse battery", "Пароль-надёжный-1", "  spaces at both ends  ", "пароль 密码 كلمة السر ✓✓"],
)
def test_sec10_no_composition_rules_and_unicode_allowed(
    password: str, server: AppServer, client: httpx.Client
) -> None:
    """SEC-10: spaces, Cyrillic, CJK, Arabic and symbols are accepted without any composition rule."""
    username = new_account(client, password)
    assert_signed_in(server, username, password)


def test_sec10_password_is_normalized_the_same_way_at_set_and_at_verify(
    server: AppServer, client: httpx.Client
) -> None:
    """SEC-10: set with precomposed "é" (NFC), sign in with decomposed "e" + U+0301 (NFD), and back."""
    nfc = unicodedata.normalize("NFC", f"Café-crème-brûlée-{rand_text(4)}")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    first = new_account(client, nfc)
    assert_signed_in(server, first, nfd)
    second = new_account(client, nfd)
    assert_signed_in(server, second, nfc)
    # Compatibility forms too (NFKC): fullwidth letters are their ASCII counterparts.
    ascii_pw = f"Fullwidth-{rand_text(10)}"
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in ascii_pw)
    third = new_account(client, fullwidth)
    assert_signed_in(server, third, ascii_pw)


def test_sec10_spaces_are_not_trimmed(server: AppServer, client: httpx.Client) -> None:
    password = f"  {rand_text(16)}  "
    username = new_account(client, password)
    assert_refused(server, username, password.strip())
    assert_signed_in(server, username, password)


# ------------------------------------------------------------------------------------------- SEC-11


def test_sec11_service_name_is_refused_with_a_reason(client: httpx.Client) -> None:
    """SEC-11: "twostep-twostep" (and its case variants) is refused, saying why."""
    for password in ("twostep-twostep", "TwoStep-TwoStep", "twostep_twostep!"):
        message = weak(sign_up(client, unique_username(), password))
        assert "twostep" in message.lower(), message


def test_sec11_username_is_refused_with_a_reason(client: httpx.Client) -> None:
    """SEC-11: "<username>123456789" is refused as too close to the username, saying why."""
    username = unique_username()
    message = weak(sign_up(client, username, f"{username}123456789"))
    assert "username" in message.lower(), message
    # Whatever case the person types the username in.
    message = weak(sign_up(client, username.upper(), f"{username}123456789"))
    assert "username" in message.lower(), message


@pytest.mark.parametrize(
    "password", ["passwordpassword", "123456789012345", "qwertyuiopasdfgh", "PasswordPassword"]
)
def test_sec11_common_passwords_of_15_or_more_characters_are_refused(
    password: str, client: httpx.Client
) -> None:
    """SEC-11: whole-value entries of the bundled common-password list are refused, saying why."""
    message = weak(sign_up(client, unique_username(), password))
    assert "common" in message.lower(), message


def test_sec11_blocklist_compares_the_whole_value_not_substrings(
    server: AppServer, client: httpx.Client
) -> None:
    """SEC-11: a strong random password that merely contains "password" is accepted."""
    password = f"{rand_text(6)}password{rand_text(6)}"
    username = new_account(client, password)
    assert_signed_in(server, username, password)


# -------------------------------------------------------------------------------------- usernames


def test_usernames_are_case_insensitive_nfkc_casefolded(server: AppServer, client: httpx.Client) -> None:
    """api.md: usernames are NFKC-normalised and case-folded; a variant is 409 username_taken."""
    tail = secrets.token_hex(4)
    r = sign_up(client, f"Alice_{tail}", STRONG_PASSWORD)
    assert r.status_code == 201, r.text
    assert r.json() == {"username": f"alice_{tail}"}
    fullwidth_alice = "".join(chr(ord(ch) + 0xFEE0) for ch in "ALICE")
    for variant in (f"alice_{tail}", f"ALICE_{tail}", f"aLiCe_{tail}", f"{fullwidth_alice}_{tail}"):
        assert_error(sign_up(client, variant, STRONG_PASSWORD), 409, "username_taken")
        assert_signed_in(server, variant, STRONG_PASSWORD)
    # Full case folding, not just lower(): "ß" folds to "ss".
    r = sign_up(client, f"Straße_{tail}", STRONG_PASSWORD)
    assert r.status_code == 201, r.text
    assert_error(sign_up(client, f"STRASSE_{tail}", STRONG_PASSWORD), 409, "username_taken")
    assert_signed_in(server, f"strasse_{tail}", STRONG_PASSWORD)


def test_username_taken_does_not_replace_the_account(server: AppServer, client: httpx.Client) -> None:
    username = new_account(client)
    other = f"{rand_text(20)}-other"
    assert_error(sign_up(client, username, other), 409, "username_taken")
    assert_signed_in(server, username, STRONG_PASSWORD)
    assert_refused(server, username, other)


@pytest.mark.parametrize(
    ("length", "accepted"), [(2, False), (3, True), (4, True), (63, True), (64, True), (65, False)]
)
def test_usernames_have_3_to_64_characters(length: int, accepted: bool, client: httpx.Client) -> None:
    username = ("u" + secrets.token_hex(40))[:length]
    r = sign_up(client, username, STRONG_PASSWORD)
    if accepted:
        assert r.status_code == 201, r.text
        assert r.json() == {"username": username}
    else:
        assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize(
    "username", ["", "   ", "has space", "tab\tname", "new\nline", "slash/name", "x" * 300]
)
def test_malformed_usernames_are_refused(username: str, client: httpx.Client) -> None:
    assert_error(sign_up(client, username, STRONG_PASSWORD), 422, "invalid_request")


# ------------------------------------------------------------------------------------------- SEC-05


def _first_step_failures(server: AppServer, known: str) -> list[httpx.Response]:
    with server.client() as c:
        return [
            sign_in(c, unique_username("ghost"), STRONG_PASSWORD),  # unknown user
            sign_in(c, known, STRONG_PASSWORD + "!"),  # wrong password
            sign_in(c, known.upper(), "x" * 15),  # wrong password, username in another case
            sign_in(c, "not a valid name", STRONG_PASSWORD),  # could never exist
        ]


def test_sec05_unknown_user_and_wrong_password_are_byte_identical(
    server: AppServer, client: httpx.Client
) -> None:
    """SEC-05: unknown user, wrong password and an impossible username give the same status and body."""
    known = new_account(client)
    responses = _first_step_failures(server, known)
    first = responses[0]
    assert_error(first, 401, "invalid_credentials")
    for r in responses[1:]:
        assert r.status_code == first.status_code
        assert r.content == first.content
        assert r.headers.get("content-type") == first.headers.get("content-type")
        assert "set-cookie" not in r.headers and "retry-after" not in r.headers


# The OWASP floor for argon2id (m = 19 MiB, t = 2, p = 1): hashing then costs clearly more than a request.
OWASP_FLOOR_ARGON2 = {
    "TWOSTEP_ARGON2_TIME_COST": "2",
    "TWOSTEP_ARGON2_MEMORY_COST": "19456",
    "TWOSTEP_ARGON2_PARALLELISM": "1",
}


@pytest.fixture(scope="module")
def real_cost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """A server with argon2id at a real cost: timing only means something when hashing costs."""
    data_dir = Path(tmp_path_factory.mktemp("real-argon2"))
    with AppServer(data_dir, cheap_argon2=False, env=OWASP_FLOOR_ARGON2) as srv:
        yield srv
        srv.set_clock(0)


@pytest.mark.slow  # argon2id at a real cost, 30 sign-ins
def test_sec05_unknown_user_and_wrong_password_take_about_the_same_time(real_cost_server: AppServer) -> None:
    """SEC-05: a dummy argon2id verification for unknown users: medians of 15 requests each within ~50%."""
    rounds = 15
    clock = ServerClock(real_cost_server)
    with real_cost_server.client() as c:
        known = []
        for _ in range(rounds + 1):
            username = unique_username("timing")
            assert sign_up(c, username, STRONG_PASSWORD).status_code == 201
            known.append(username)

        def timed(username: str) -> float:
            start = time.perf_counter()
            r = sign_in(c, username, "wrong " + STRONG_PASSWORD)
            elapsed = time.perf_counter() - start
            assert_error(r, 401, "invalid_credentials")
            return elapsed

        timed(unique_username("ghost"))  # warm-up: both paths once
        timed(known.pop())
        unknown_times: list[float] = []
        known_times: list[float] = []
        for i in range(rounds):
            if i % 8 == 0:
                clock.new_day()  # ≤ 16 failures per day from this address: under its free 20
            unknown_times.append(timed(unique_username("ghost")))
            known_times.append(timed(known[i]))
    slow, fast = (
        max(statistics.median(unknown_times), statistics.median(known_times)),
        min(statistics.median(unknown_times), statistics.median(known_times)),
    )
    assert fast > 0
    assert slow <= fast * 1.5 + 0.005, (statistics.median(unknown_times), statistics.median(known_times))


# ------------------------------------------------------------------------------------------- SEC-28


def test_sec28_password_guessing_backs_off_per_account(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-28: after 5 wrong passwords from one address the next attempt from it is 429 with Retry-After;
    the right password from it waits too; another account is unaffected; once the wait is over the right
    password signs in. (H07: the counter is per account and address; test_password_lockout.py has more.)"""
    victim = new_account(client)
    bystander = new_account(client)
    for _ in range(5):
        assert_error(sign_in(client, victim, "wrong " + STRONG_PASSWORD), 401, "invalid_credentials")
    r = sign_in(client, victim, "wrong " + STRONG_PASSWORD)
    body = assert_error(r, 429, "too_many_attempts")
    retry_after = int(r.headers["Retry-After"])
    assert isinstance(body.get("retry_after"), int) and not isinstance(body["retry_after"], bool)
    assert 1 <= body["retry_after"] <= 3600
    assert abs(body["retry_after"] - retry_after) <= 1
    # The right password during the wait is refused as well, with no cookie.
    r = sign_in(client, victim, STRONG_PASSWORD)
    assert_error(r, 429, "too_many_attempts")
    assert "Retry-After" in r.headers and "set-cookie" not in r.headers
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
    # Whatever case the username is typed in, it is the same counter.
    assert_error(sign_in(client, victim.upper(), STRONG_PASSWORD), 429, "too_many_attempts")
    # Someone else signs in as usual from the same address.
    assert_signed_in(server, bystander, STRONG_PASSWORD)
    # After the wait the right password works, and success resets the counter.
    server_clock.advance(retry_after + 1)
    assert_signed_in(server, victim, STRONG_PASSWORD)
    assert_error(sign_in(client, victim, "wrong " + STRONG_PASSWORD), 401, "invalid_credentials")


def test_sec28_backoff_doubles(server: AppServer, server_clock: ServerClock, client: httpx.Client) -> None:
    """SEC-28 / security.md §0.7: the wait after each further failure doubles (30 s, then 60 s)."""
    victim = new_account(client)
    for _ in range(5):
        assert_error(sign_in(client, victim, "wrong"), 401, "invalid_credentials")
    first = int(assert_error(sign_in(client, victim, "wrong"), 429)["retry_after"])
    server_clock.advance(first + 1)
    assert_error(sign_in(client, victim, "wrong"), 401, "invalid_credentials")  # the 6th failure
    second = int(assert_error(sign_in(client, victim, "wrong"), 429)["retry_after"])
    assert second >= 2 * first - 2, (first, second)
    server_clock.advance(second + 1)
    assert_signed_in(server, victim, STRONG_PASSWORD)


def test_sec28_unknown_usernames_are_throttled_alike(client: httpx.Client) -> None:
    """SEC-28 / SEC-05: an unknown username backs off exactly like a known one (no enumeration), from one
    address here and across addresses in test_H07_the_account_wide_ceiling_stops_a_distributed_attack."""
    ghost = unique_username("ghost")
    for _ in range(5):
        assert_error(sign_in(client, ghost, STRONG_PASSWORD), 401, "invalid_credentials")
    r = sign_in(client, ghost, STRONG_PASSWORD)
    assert_error(r, 429, "too_many_attempts")
    assert int(r.headers["Retry-After"]) >= 1


def test_sec28_password_guessing_backs_off_per_client_address(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-28: 20 failures from one address over many usernames, then that address waits, for everyone."""
    account = new_account(client)
    for _ in range(20):
        assert_error(sign_in(client, unique_username("spray"), STRONG_PASSWORD), 401, "invalid_credentials")
    r = sign_in(client, account, STRONG_PASSWORD)
    body = assert_error(r, 429, "too_many_attempts")
    assert int(r.headers["Retry-After"]) >= 1 and body["retry_after"] >= 1
    server_clock.advance(int(r.headers["Retry-After"]) + 1)
    assert_signed_in(server, account, STRONG_PASSWORD)


def test_sec28_a_correct_password_does_not_make_the_address_wait(
    server: AppServer, server_clock: ServerClock, client: httpx.Client
) -> None:
    """SEC-28: once an address has served its wait, a correct sign-in must not start a new wait for it."""
    first = new_account(client)
    second = new_account(client)
    for _ in range(20):
        assert_error(sign_in(client, unique_username("spray"), STRONG_PASSWORD), 401, "invalid_credentials")
    r = sign_in(client, first, STRONG_PASSWORD)
    assert_error(r, 429, "too_many_attempts")
    server_clock.advance(int(r.headers["Retry-After"]) + 1)
    assert_signed_in(server, first, STRONG_PASSWORD)
    # No failure happened since the wait ended: the next person at this address is not held back.
    assert_signed_in(server, second, STRONG_PASSWORD)
