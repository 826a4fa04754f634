"""Several domains (docs/api.md "Several domains"), in process: the session cookie for cookie_domain, `next`
URLs honoured only for that domain, its subdomains and the rules' domains, the CSP form-action that lets the
redirect after a form post reach them, and the two-step-required page leading to a factor and back."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support import STRONG_PASSWORD
from tests.support.api import API, expect, signup
from tests.support.inprocess import AppServer
from tests.support.totp import totp_code

pytestmark = pytest.mark.api

RULES = {
    "default_policy": "deny",
    "rules": [
        {"domain": ["app1.example.test"], "policy": "one_factor"},
        {"domain": ["app2.example.test"], "policy": "two_factor"},
        {"domain": ["other.example.org"], "policy": "one_factor"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(
        tmp_path_factory.mktemp("domains"),
        origin="https://auth.example.test:{port}",
        test_clock=False,  # refused with an https origin
        env={"TWOSTEP_COOKIE_DOMAIN": "example.test"},
        settings={"access": RULES},
    ) as srv:
        yield srv


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def page_sign_in(client: httpx.Client, username: str, next: str) -> httpx.Response:
    """The sign-in page with `next`, then its form posted as a browser would (password only)."""
    page = client.get("/login", params={"next": next})
    assert page.status_code == 200
    form = {"username": username, "password": STRONG_PASSWORD, "csrf": csrf_of(page)}
    hidden = re.search(r'name="next" value="([^"]*)"', page.text)
    if hidden:
        form["next"] = html.unescape(hidden.group(1))
    return client.post("/login", data=form)


def test_the_session_cookie_is_for_the_cookie_domain(server: AppServer) -> None:
    with server.client() as client:
        username = signup(client)
        r = client.post(f"{API}/login", json={"username": username, "password": STRONG_PASSWORD})
        cookie = next(c for c in r.headers.get_list("set-cookie") if "twostep_session=" in c)
        # A __Host- cookie cannot carry a Domain: with cookie_domain it is __Secure- over https.
        assert cookie.startswith("__Secure-twostep_session=")
        for attribute in ("Domain=example.test", "HttpOnly", "SameSite=lax", "Secure", "Path=/"):
            assert attribute in cookie, cookie


@pytest.mark.parametrize(
    "next_url",
    [
        "https://app1.example.test:8443/reports?from=1&to=2",
        "https://app1.example.test/x",
        "https://example.test/",
        "https://deep.sub.example.test/",
        "https://other.example.org/a?b=c&d=e",  # a rule's domain, outside cookie_domain
        "/settings/sessions",
    ],
)
def test_next_may_lead_to_the_cookie_domain_its_subdomains_and_the_rules_domains(
    server: AppServer, next_url: str
) -> None:
    with server.client() as client:
        username = signup(client)
        r = page_sign_in(client, username, next_url)
        assert r.status_code == 303 and r.headers["location"] == next_url


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.test/",
        "https://example.test.evil.test/",
        "https://evilexample.test/",
        "http://app1.example.test/",  # http for an https origin
        "https://user@app1.example.test/",
        "//app1.example.test/",
        "ftp://app1.example.test/",
        "javascript:alert(1)",
        "https://app1.example.test:99999/",
        "https:\\\\app1.example.test/",
        "https://other.example.org.evil.test/",
    ],
)
def test_SEC_next_never_leads_elsewhere(server: AppServer, next_url: str) -> None:
    with server.client() as client:
        username = signup(client)
        r = page_sign_in(client, username, next_url)
        assert r.status_code == 303 and r.headers["location"] == "/settings/two-step"


def test_csp_form_action_allows_the_return_to_the_cookie_domain_and_the_rules(server: AppServer) -> None:
    with server.client() as client:
        csp = client.get("/login").headers["content-security-policy"]
    form_action = next(d for d in csp.split(";") if d.strip().startswith("form-action"))
    sources = form_action.split()[1:]
    assert sources[0] == "'self'"
    assert {"https://example.test:*", "https://*.example.test:*", "https://other.example.org:*"} <= set(
        sources
    )
    assert not any(s.startswith("http:") for s in sources)  # https origin: https only


def test_the_two_step_required_page_leads_to_an_authenticator_app_and_back(server: AppServer) -> None:
    original = "https://app2.example.test/board?a=1&b=2"
    with server.client() as client:
        username = signup(client)
        page_sign_in(client, username, "/")
        fa = client.get(f"{API}/forward-auth", headers={"X-Original-URL": original})
        expect(fa, 403, "two_factor_required")
        required = fa.headers["location"]
        assert required == f"{server.url}/two-step-required?next={quote(original, safe='')}"
        page = client.get(required)
        assert page.status_code == 200 and "This application needs two-step verification" in page.text
        assert "app2.example.test" in page.text
        assert "app1.example.test" in page.text  # the applications this account may open
        add = re.search(r'id="add-app" href="([^"]+)"', page.text)
        assert add is not None
        # Adding a factor asks to verify access first, then comes back to the add-app page with `next`.
        r = client.get(html.unescape(add.group(1)))
        assert r.status_code == 303 and r.headers["location"].startswith("/verify-access?next=")
        verify = client.get(r.headers["location"])
        r = client.post(
            "/verify-access",
            data={
                "password": STRONG_PASSWORD,
                "csrf": csrf_of(verify),
                "next": html.unescape(re.findall(r'name="next" value="([^"]*)"', verify.text)[0]),
            },
        )
        assert r.status_code == 303
        name_page = client.get(r.headers["location"])
        assert f'name="next" value="{html.escape(original)}"' in name_page.text
        qr = client.post(
            "/settings/two-step/app", data={"name": "Phone", "next": original, "csrf": csrf_of(name_page)}
        )
        enrollment_id = re.search(r'name="enrollment_id" value="([^"]+)"', qr.text)
        key = re.search(r'id="totp-key"[^>]*>(.*?)</p>', qr.text, re.S)
        assert enrollment_id is not None and key is not None, qr.text[:2000]
        secret = re.sub(r"<[^>]+>|\s", "", key.group(1))
        done = client.post(
            "/settings/two-step/app/confirm",
            data={
                "enrollment_id": enrollment_id.group(1),
                "name": "Phone",
                "code": totp_code(secret, time.time()),
                "next": original,
                "csrf": csrf_of(qr),
            },
        )
        assert done.status_code == 200, done.text[:1000]
        assert f'id="codes-saved" href="{html.escape(original)}"' in done.text
        # The session that added the factor counts as having used it: the application lets it in.
        fa = client.get(f"{API}/forward-auth", headers={"X-Original-URL": original})
        assert fa.status_code == 200 and fa.headers["remote-user"] == username


def test_the_api_sign_in_says_where_to_go_when_asked_with_next(server: AppServer) -> None:
    with server.client() as client:
        username = signup(client)
        body = {"username": username, "password": STRONG_PASSWORD}
        allowed = "https://app1.example.test/a?b=1&c=2"
        r = client.post(f"{API}/login", params={"next": allowed}, json=body)
        assert expect(r, 200) == {"status": "signed_in", "next": allowed}
        r = client.post(f"{API}/login", params={"next": "https://evil.test/"}, json=body)
        assert expect(r, 200) == {"status": "signed_in", "next": "/settings/two-step"}
        assert expect(client.post(f"{API}/login", json=body), 200) == {"status": "signed_in"}


def test_the_api_second_step_says_where_to_go_too(server: AppServer) -> None:
    with server.client() as client:
        username = signup(client)
        body = {"username": username, "password": STRONG_PASSWORD}
        expect(client.post(f"{API}/login", json=body), 200)
        expect(client.post(f"{API}/verify-access", json={"password": STRONG_PASSWORD}), 200)
        enrollment = expect(client.post(f"{API}/factors/totp", json={}), 201)
        code = totp_code(enrollment["secret"], time.time())
        confirm = {"name": "Phone", "code": code}
        expect(client.post(f"{API}/factors/totp/{enrollment['enrollment_id']}/confirm", json=confirm), 201)
    with server.client() as client:
        assert expect(client.post(f"{API}/login", params={"next": "/x"}, json=body), 200)["status"] == (
            "second_factor_required"
        )
        allowed = "https://app2.example.test/board?a=1&b=2"
        code = totp_code(enrollment["secret"], time.time() + 30)
        r = client.post(f"{API}/login/totp", params={"next": allowed}, json={"code": code})
        assert expect(r, 200) == {"status": "signed_in", "next": allowed}
