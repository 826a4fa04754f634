"""Passkey flows of the JSON API over HTTP (docs/api.md), with the software authenticator.

Each :class:`Api` is one browser-like client with its own cookie jar (the session cookie and, for a
passwordless ceremony, the ``twostep_ceremony`` cookie). Every helper asserts the happy path it needs, so a
test fails at the step that broke rather than later with a confusing error.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import PASSWORD
from tests.support.server import Target
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode

API = "/api/v1"
RP_ID = "localhost"
ONEPASSWORD_AAGUID = "bada5566-a7aa-401f-bd96-45619a55120d"


_OPEN: list[Api] = []


def close_all() -> None:
    """Close every client made so far (call it when a test ends)."""
    while _OPEN:
        _OPEN.pop().close()


class Api:
    """A client of the JSON API with its own cookies (like one browser)."""

    def __init__(self, server: Target) -> None:
        self.server = server
        self.http = server.client()
        _OPEN.append(self)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(API + path, json={} if body is None else body)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(API + path)

    def patch(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.patch(API + path, json=body)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(API + path)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------------------------- shortcuts

    def factors(self) -> dict[str, Any]:
        r = self.get("/factors")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def session(self) -> httpx.Response:
        return self.get("/session")

    def security_events(self) -> list[dict[str, Any]]:
        r = self.get("/security-events")
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        r = self.post("/login", {"username": username, "password": password})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def options(self, path: str) -> dict[str, Any]:
        """POST an options endpoint and return its ``publicKey``."""
        r = self.post(path)
        assert r.status_code == 200, r.text
        public_key: dict[str, Any] = r.json()["publicKey"]
        return public_key

    def verify_with_password(self, password: str = PASSWORD) -> dict[str, Any]:
        r = self.post("/verify-access", {"password": password})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def expect_rejected(r: httpx.Response, status: int) -> None:
    """A passkey refusal: the documented status and code, never a 5xx."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"] == "passkey_rejected", r.text


@dataclass
class Account:
    """An account and the passkey provider of its owner."""

    username: str
    auth: SoftAuthenticator
    password: str = PASSWORD
    user_handle: bytes | None = None
    factor_ids: list[str] = field(default_factory=list)


def new_authenticator(server: Target, **kwargs: Any) -> SoftAuthenticator:
    return SoftAuthenticator(RP_ID, server.url, **kwargs)


def sign_up(server: Target, prefix: str = "pk", **auth_kwargs: Any) -> Account:
    username = f"{prefix}_{secrets.token_hex(5)}"
    with server.client() as http:
        r = http.post(API + "/accounts", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return Account(username, new_authenticator(server, **auth_kwargs))


def verified_session(server: Target, account: Account) -> Api:
    """A signed-in session of an account *without* two-step verification, with access verified."""
    api = Api(server)
    assert api.login(account.username)["status"] == "signed_in"
    assert api.verify_with_password()["status"] == "verified"
    return api


def register(api: Api, account: Account, name: str = "", **overrides: Any) -> httpx.Response:
    """Options, then the authenticator's answer (with ``overrides``), then POST /factors/passkey."""
    options = api.options("/factors/passkey/options")
    credential = account.auth.create(options, **overrides)
    r = api.post("/factors/passkey", {"name": name, "credential": credential})
    if r.status_code == 201:
        account.user_handle = b64url_decode(options["user"]["id"])
        account.factor_ids.append(r.json()["factor"]["id"])
    return r


def with_passkey(
    server: Target, prefix: str = "pk", name: str = "", **auth_kwargs: Any
) -> tuple[Account, Api]:
    """A new account with one passkey; returns it and the (still verified) session that added it."""
    account = sign_up(server, prefix, **auth_kwargs)
    api = verified_session(server, account)
    r = register(api, account, name)
    assert r.status_code == 201, r.text
    return account, api


def pending_login(server: Target, account: Account) -> Api:
    """A new client whose password step is done and whose second step is owed."""
    api = Api(server)
    body = api.login(account.username)
    assert body["status"] == "second_factor_required", body
    assert "passkey" in body["methods"], body
    return api


def second_step(api: Api, account: Account, **overrides: Any) -> httpx.Response:
    options = api.options("/login/passkey/options")
    return api.post("/login/passkey", {"credential": account.auth.get(options, **overrides)})


def sign_in(server: Target, account: Account) -> Api:
    """Password, then the passkey: a signed-in session (access not verified)."""
    api = pending_login(server, account)
    r = second_step(api, account)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "signed_in"}
    return api


def passkey_factor(api: Api, factor_id: str) -> dict[str, Any]:
    for factor in api.factors()["factors"]:
        if factor["id"] == factor_id:
            return dict(factor)
    raise AssertionError(f"factor {factor_id} not listed")
