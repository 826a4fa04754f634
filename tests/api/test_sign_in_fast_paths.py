"""The second sign-in steps' fast paths (issue 16, FL1/FL2): ``POST /api/v1/login/totp`` and
``POST /api/v1/login/passkey`` in their plain form are answered before FastAPI, and the answer must be the one
the whole application gives (status, body, cookie, headers, language, Retry-After); every other form is
declined and answered by the route, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.storage.test_read_row import run as in_new_loop
from tests.support import passkeys
from tests.support.api import (
    API,
    Clients,
    code_now,
    error_of,
    expect,
    fresh_step,
    login_totp,
    new_2fa_user,
    start_login,
)
from tests.support.inprocess import AppServer
from tests.support.soft_authenticator import flip_bit
from twostep.web.api.fast_login import LOGIN_PASSKEY_PATH, LOGIN_TOTP_PATH
from twostep.web.app import TwostepAPI

pytestmark = pytest.mark.api


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with AppServer(tmp_path_factory.mktemp("totpfast"), database_url=url) as srv:
        yield srv


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


class Spy:
    """Which requests the fast path answered itself (True) and which it handed to the application."""

    def __init__(self, app: TwostepAPI, path: str = LOGIN_TOTP_PATH) -> None:
        self.app = app
        self.path = path
        self.answered: list[bool] = []

    def __enter__(self) -> Spy:
        fast = self.app.fast_posts[self.path]
        self.saved = fast

        async def spied(scope: Any, receive: Any, send: Any) -> Any:
            declined = await fast(scope, receive, send)
            self.answered.append(declined is None)
            return declined

        self.app.fast_posts = {**self.app.fast_posts, self.path: spied}
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.fast_posts = {**self.app.fast_posts, self.path: self.saved}


def app_of(server: AppServer) -> TwostepAPI:
    assert isinstance(server.app, TwostepAPI)
    return server.app


@contextmanager
def whole_application(server: AppServer) -> Iterator[None]:
    """Requests in the block go through FastAPI, the middleware and the route (no fast path)."""
    app = app_of(server)
    saved, app.fast_posts = app.fast_posts, {}
    try:
        yield
    finally:
        app.fast_posts = saved


def comparable(r: httpx.Response) -> dict[str, str]:
    """The headers, without the request id and with the cookie's value taken out (its form stays)."""
    out = {k: v for k, v in r.headers.items() if k not in ("x-request-id", "set-cookie")}
    cookie = r.headers.get("set-cookie")
    if cookie is not None:
        name, rest = cookie.split("=", 1)
        out["set-cookie"] = f"{name}=<token>;{rest.split(';', 1)[1]}"
    return out


def test_a_sign_in_is_answered_as_the_whole_application_answers_it(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    fresh_step(server)
    first = start_login(clients, user.username)
    with Spy(app_of(server)) as spy:
        fast = login_totp(first, code_now(server, user.secret))
    assert spy.answered == [True]
    fresh_step(server)
    second = start_login(clients, user.username)
    with whole_application(server):
        whole = login_totp(second, code_now(server, user.secret))
    assert fast.status_code == whole.status_code == 200
    assert fast.content == whole.content == b'{"status":"signed_in"}'
    assert comparable(fast) == comparable(whole)
    assert fast.headers["x-request-id"] != whole.headers["x-request-id"]
    # Both cookies are sessions: the fast path's signs its client in.
    for client in (first, second):
        assert expect(client.get(f"{API}/session"), 200)["username"] == user.username


def test_refusals_are_the_whole_applications_in_the_readers_language(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    answers = []
    for fast_path in (True, False):
        for headers in ({}, {"Accept-Language": "sl"}):
            with Spy(app_of(server)) as spy:
                if fast_path:
                    r = pending.post(f"{API}/login/totp", json={"code": "000000"}, headers=headers)
                else:
                    with whole_application(server):
                        r = pending.post(f"{API}/login/totp", json={"code": "000000"}, headers=headers)
            assert spy.answered == ([True] if fast_path else [])
            answers.append(r)
    english, slovenian, english_whole, slovenian_whole = answers
    for fast, whole in ((english, english_whole), (slovenian, slovenian_whole)):
        assert fast.status_code == whole.status_code == 401
        assert error_of(fast) == error_of(whole) == "invalid_code"
        assert fast.json() == whole.json()
        assert comparable(fast) == comparable(whole)
    assert english.headers["content-language"] == "en"
    assert slovenian.headers["content-language"] == "sl"
    assert slovenian.json()["message"] != english.json()["message"]


def test_no_pending_sign_in_is_refused_alike(server: AppServer, clients: Clients) -> None:
    anonymous = clients.new()
    fast = login_totp(anonymous, "123456")
    with whole_application(server):
        whole = login_totp(anonymous, "123456")
    assert fast.status_code == whole.status_code == 401
    assert fast.json() == whole.json() and error_of(fast) == "no_pending_login"
    assert comparable(fast) == comparable(whole)


def test_SEC_27_the_backoff_answers_429_with_retry_after_on_the_fast_path(
    server: AppServer, clients: Clients
) -> None:
    """SEC-27: the attempts are counted in the database before the code is evaluated; the fast path gives
    the route's 429 and Retry-After once the account's counter says wait."""
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    statuses = []
    with Spy(app_of(server)) as spy:
        for _ in range(7):
            r = login_totp(pending, "000000")
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
    assert all(spy.answered)
    assert statuses[-1] == 429, statuses
    assert error_of(r) == "too_many_attempts"
    assert int(r.headers["retry-after"]) > 0
    with whole_application(server):
        whole = login_totp(pending, "000000")
    assert whole.status_code == 429
    assert whole.json()["error"] == r.json()["error"]
    assert set(comparable(whole)) == set(comparable(r))


def test_SEC_28_a_code_is_accepted_once_on_the_fast_path(server: AppServer, clients: Clients) -> None:
    """SEC-28: the time step is taken by compare-and-set; the same code cannot sign a second browser in."""
    user = new_2fa_user(server, clients)
    fresh_step(server)
    code = code_now(server, user.secret)
    first, second = start_login(clients, user.username), start_login(clients, user.username)
    with Spy(app_of(server)) as spy:
        assert login_totp(first, code).status_code == 200
        replay = login_totp(second, code)
    assert spy.answered == [True, True]
    assert replay.status_code == 401 and error_of(replay) == "invalid_code"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/login/totp?next=/settings", {"code": "000000"}, {}, 401),
        ("/login/totp", {"code": "000000", "trust_browser": True}, {}, 401),
        ("/login/totp", {"code": 123456}, {}, 422),
        ("/login/totp", {"code": "0" * 257}, {}, 422),
        ("/login/totp", {"code": "00\x000000"}, {}, 422),
        ("/login/totp", ["000000"], {}, 422),
        ("/login/totp", {"code": "000000"}, {"Origin": "https://evil.example"}, 403),
        ("/login/totp", {"code": "000000"}, {"Content-Type": "text/plain"}, 415),
    ],
)
def test_other_forms_are_handed_to_the_application(
    server: AppServer, clients: Clients, path: str, body: Any, headers: dict[str, str], status: int
) -> None:
    """Whatever is not the plain form goes through the guard and the route, which answer it."""
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    with Spy(app_of(server)) as spy:
        r = pending.post(f"{API}{path}", json=body, headers=headers)
    assert spy.answered == [False]
    assert r.status_code == status, r.text
    assert set(r.json()) >= {"error", "message"}


def test_unknown_fields_are_ignored_on_the_fast_path_as_by_the_route(
    server: AppServer, clients: Clients
) -> None:
    """SEC-03 d: a client cannot switch anything on by adding a field."""
    user = new_2fa_user(server, clients)
    fresh_step(server)
    pending = start_login(clients, user.username)
    with Spy(app_of(server)) as spy:
        r = pending.post(
            f"{API}/login/totp",
            json={"code": code_now(server, user.secret), "admin": True, "trust_browser": False},
        )
    assert spy.answered == [True]
    assert r.status_code == 200 and r.json() == {"status": "signed_in"}
    assert "twostep_trusted" not in r.headers.get("set-cookie", "")


def test_a_passkey_sign_in_is_answered_as_the_whole_application_answers_it(server: AppServer) -> None:
    account, _ = passkeys.with_passkey(server)
    first = passkeys.pending_login(server, account)
    with Spy(app_of(server), LOGIN_PASSKEY_PATH) as spy:
        fast = passkeys.second_step(first, account)
    assert spy.answered == [True]
    second = passkeys.pending_login(server, account)
    with whole_application(server):
        whole = passkeys.second_step(second, account)
    assert fast.status_code == whole.status_code == 200
    assert fast.content == whole.content == b'{"status":"signed_in"}'
    assert comparable(fast) == comparable(whole)
    for api in (first, second):
        assert api.session().status_code == 200


def test_WA_A14_a_refused_assertion_is_refused_alike_on_the_fast_path(server: AppServer) -> None:
    """WA-A14: a flipped signature bit gets the route's refusal on the fast path too."""
    account, _ = passkeys.with_passkey(server)
    answers = []
    for fast_path in (True, False):
        api = passkeys.pending_login(server, account)
        with Spy(app_of(server), LOGIN_PASSKEY_PATH) as spy:
            if fast_path:
                r = passkeys.second_step(api, account, mutate_signature=lambda sig: flip_bit(sig, -1))
            else:
                with whole_application(server):
                    r = passkeys.second_step(api, account, mutate_signature=lambda sig: flip_bit(sig, -1))
        assert spy.answered == ([True] if fast_path else [])
        answers.append(r)
    fast, whole = answers
    assert fast.status_code == whole.status_code == 401
    assert fast.json() == whole.json()
    assert comparable(fast) == comparable(whole)


def test_a_passkey_step_asking_to_trust_the_browser_goes_to_the_route(server: AppServer) -> None:
    account, _ = passkeys.with_passkey(server)
    api = passkeys.pending_login(server, account)
    options = api.options("/login/passkey/options")
    with Spy(app_of(server), LOGIN_PASSKEY_PATH) as spy:
        r = api.post("/login/passkey", {"credential": account.auth.get(options), "trust_browser": True})
    assert spy.answered == [False]
    assert r.status_code == 200 and "twostep_trusted" in r.headers.get("set-cookie", "")


def test_a_client_gone_before_its_body_arrived_gets_nothing_and_nothing_runs(server: AppServer) -> None:
    """The body never came (http.disconnect): no answer is sent, the request goes nowhere, nothing runs."""
    app = app_of(server)
    sent: list[Any] = []
    spy = Spy(app)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": LOGIN_TOTP_PATH,
        "raw_path": LOGIN_TOTP_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", b"20"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    with spy:
        in_new_loop(app(scope, receive, send))
    assert spy.answered == [True]  # taken by the fast path, which had nobody to answer
    assert sent == []
