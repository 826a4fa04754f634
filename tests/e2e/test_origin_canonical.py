"""H16: an origin configured in another spelling (upper case, an explicit default port) is canonicalised at
start-up, so that the Origin a browser sends matches it and browser posts and passkeys keep working."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e


def test_H16_browser_posts_pass_when_the_origin_is_configured_in_upper_case(tmp_path: Path) -> None:
    port = free_port()
    browser_origin = f"http://localhost:{port}"
    server = Server(tmp_path, port=port, env={"TWOSTEP_ORIGIN": f"HTTP://LOCALHOST:{port}/"})
    headers = {"Origin": browser_origin, "Sec-Fetch-Site": "same-origin"}
    with server, httpx.Client(base_url=server.url, headers=headers, timeout=30) as browser:
        body = {"username": unique_username("h16"), "password": STRONG_PASSWORD}
        r = browser.post(f"{API}/accounts", json=body)
        assert r.status_code == 201, r.text
        page = browser.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        r = browser.post("/login", data={**body, "csrf": token.group(1)})
        assert r.status_code == 303, r.text[:300]
        r = browser.post(f"{API}/verify-access", json={"password": STRONG_PASSWORD})
        assert r.json()["status"] == "verified"
        options = browser.post(f"{API}/factors/passkey/options", json={}).json()["publicKey"]
        assert options["rp"]["id"] == "localhost"
        # Another origin is still another site.
        r = browser.post(f"{API}/logout", json={}, headers={"Origin": "http://localhost:1"})
        assert r.status_code == 403
        assert r.json()["error"] == "cross_site_request"
