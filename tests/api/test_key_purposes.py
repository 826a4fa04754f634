"""H15: the form tokens (CSRF) are not computed with the key that seals the TOTP secrets, but with a key
derived from it for that purpose; a token made with the master key itself is refused."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API
from tests.support.inprocess import AppServer
from twostep.core import keys
from twostep.keyfile import read_key

pytestmark = pytest.mark.api


def token(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@pytest.fixture
def browser(server: AppServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def test_H15_a_session_form_token_made_with_the_master_key_is_refused(
    server: AppServer, browser: httpx.Client
) -> None:
    master = read_key(server.data_dir / "secret.key")
    body = {"username": unique_username("h15"), "password": STRONG_PASSWORD}
    assert browser.post(f"{API}/accounts", json=body).status_code == 201
    assert browser.post(f"{API}/login", json=body).json() == {"status": "signed_in"}
    cookie = browser.cookies["twostep_session"].encode()

    r = browser.post("/logout", data={"csrf": token(master, b"csrf:" + cookie)})
    assert r.status_code == 403
    assert browser.get(f"{API}/session").status_code == 200
    r = browser.post("/logout", data={"csrf": token(keys.derive_key(master, keys.CSRF), b"csrf:" + cookie)})
    assert r.status_code == 303
    assert browser.get(f"{API}/session").status_code == 401


def test_H15_a_sign_in_form_token_made_with_the_master_key_is_refused(
    server: AppServer, browser: httpx.Client
) -> None:
    master = read_key(server.data_dir / "secret.key")
    body = {"username": unique_username("h15"), "password": STRONG_PASSWORD}
    assert browser.post(f"{API}/accounts", json=body).status_code == 201
    browser.get("/login")
    presession = browser.cookies["twostep_presession"].encode()

    raw = token(master, b"csrf-presession:" + presession)
    assert browser.post("/login", data={**body, "csrf": raw}).status_code == 403
    derived = token(keys.derive_key(master, keys.CSRF), b"csrf-presession:" + presession)
    r = browser.post("/login", data={**body, "csrf": derived})
    assert r.status_code == 303
    assert browser.get(f"{API}/session").json()["username"] == body["username"]
