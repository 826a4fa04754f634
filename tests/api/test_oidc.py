"""The OpenID Provider in process, driven by an independent relying party (oauthlib + PyJWT)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.api import (
    Clients,
    advance,
    code_now,
    expect,
    fresh_step,
    new_2fa_user,
    new_user,
    server_time,
    signed_in_with_totp,
)
from tests.support.inprocess import AppServer
from tests.support.oidc import REDIRECT_URI, RelyingParty, query_of, register

pytestmark = pytest.mark.api


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def _confidential(server: AppServer, **kwargs: Any) -> RelyingParty:
    new = register(server, **kwargs)
    assert new.secret is not None
    return RelyingParty(server, new.row.id, new.secret)


def _authorize(browser: httpx.Client, url: str) -> httpx.Response:
    return browser.get(url, follow_redirects=False)


def _continue_url(page: str) -> str:
    found = re.search(r'id="oidc-continue" href="([^"]+)"', page)
    assert found, page
    return html.unescape(found.group(1))


def _code(rp: RelyingParty, browser: httpx.Client, **extra: Any) -> str:
    r = _authorize(browser, rp.authorize_url(**extra))
    assert r.status_code == 302, r.text
    return rp.code_from(r.headers["location"])


def test_discovery_and_jwks(server: AppServer) -> None:
    with server.client() as http:
        conf = expect(http.get("/.well-known/openid-configuration"), 200)
        assert conf["issuer"] == server.url
        assert conf["authorization_endpoint"] == f"{server.url}/oidc/authorize"
        assert conf["token_endpoint"] == f"{server.url}/oidc/token"
        assert conf["userinfo_endpoint"] == f"{server.url}/oidc/userinfo"
        assert conf["end_session_endpoint"] == f"{server.url}/oidc/logout"
        assert conf["response_types_supported"] == ["code"]
        assert conf["code_challenge_methods_supported"] == ["S256"]
        assert set(conf["acr_values_supported"]) == {"pwd", "mfa", "phr"}
        r = http.get("/oidc/jwks")
        assert r.status_code == 200
        assert "max-age=300" in r.headers["cache-control"]
        keys = r.json()["keys"]
        assert {k["alg"] for k in keys} == {"RS256", "ES256"}
        assert all("d" not in k and "p" not in k for k in keys), "no private part is published"


def test_code_flow_with_totp_sign_in(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients, email="oidc@example.org")
    fresh_step(server, 2)
    browser = signed_in_with_totp(clients, user, code_now(server, user.secret))
    rp = _confidential(server, name="Grafana")
    code = _code(rp, browser)
    token = rp.tokens(code)
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == 600
    assert token["refresh_token"]
    claims = rp.verify_id_token(token["id_token"])
    assert claims["preferred_username"] == user.username
    assert claims["sub"] != user.username and len(claims["sub"]) >= 40
    assert claims["email"] == "oidc@example.org"
    assert claims["email_verified"] is False, "the address was never verified"
    assert claims["groups"] == []
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "mfa"
    assert abs(claims["auth_time"] - server_time(server)) < 60
    assert claims["aud"] == rp.client_id
    info = expect(rp.userinfo(token["access_token"]), 200)
    assert info["sub"] == claims["sub"] and info["preferred_username"] == user.username
    assert expect(rp.userinfo(token["access_token"], "POST"), 200)["sub"] == claims["sub"]
    # The security log names the client.
    events = user.client.get("/api/v1/security-events").json()
    found = [e for e in events["events"] if e["type"] == "oidc_sign_in"]
    assert found and found[0]["detail"]["client"] == "Grafana"


def test_password_only_sign_in_is_acr_pwd(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    claims = rp.verify_id_token(rp.tokens(_code(rp, user.client))["id_token"])
    assert claims["amr"] == ["pwd"] and claims["acr"] == "pwd"
    assert "email" not in claims


def test_sub_is_stable_and_per_account(server: AppServer, clients: Clients) -> None:
    a, b = new_user(server, clients), new_user(server, clients)
    rp = _confidential(server)
    sub_a1 = rp.verify_id_token(rp.tokens(_code(rp, a.client))["id_token"])["sub"]
    sub_a2 = rp.verify_id_token(rp.tokens(_code(rp, a.client))["id_token"])["sub"]
    sub_b = rp.verify_id_token(rp.tokens(_code(rp, b.client))["id_token"])["sub"]
    assert sub_a1 == sub_a2 != sub_b


def test_unknown_client_and_bad_redirect_uri_are_pages_never_redirects(
    server: AppServer, clients: Clients
) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    url = rp.authorize_url()
    for bad in (
        url.replace(rp.client_id, "nope"),
        url.replace("rp.example", "evil.example"),
        url.replace("callback", "callback/other"),
        url.replace("redirect_uri=", "x="),
        url + "&redirect_uri=https%3A%2F%2Fevil.example%2F",
    ):
        r = _authorize(user.client, bad)
        assert r.status_code == 400, (bad, r.status_code)
        assert "location" not in r.headers
        assert "evil.example" not in r.text or "redirect_uri" in r.text


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "soon"}, "invalid_request"),
        ({"request": "eyJ"}, "request_not_supported"),
        ({"nonce": "n" * 5000}, "invalid_request"),
    ],
)
def test_bad_requests_get_the_error_at_the_redirect_uri(
    server: AppServer, clients: Clients, change: dict[str, str], error: str
) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    url = rp.authorize_url()
    params = query_of(url) | change
    r = user.client.get("/oidc/authorize", params=params, follow_redirects=False)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    got = query_of(location)
    assert got["error"] == error, got
    assert got["state"] == rp.state


def test_public_client_needs_pkce(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    new = register(server, public=True)
    rp = RelyingParty(server, new.row.id, None)
    r = _authorize(user.client, rp.authorize_url(pkce=False))
    assert query_of(r.headers["location"])["error"] == "invalid_request"
    code = _code(rp, user.client)
    # Without the verifier, or with a wrong one: refused.
    r = rp.token_request(code, verifier="")
    assert r.status_code == 400
    code = _code(rp, user.client)
    wrong = base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).decode().rstrip("=") + "A" * 20
    assert rp.token_request(code, verifier=wrong).json()["error"] == "invalid_grant"
    token = rp.tokens(_code(rp, user.client))
    assert rp.verify_id_token(token["id_token"])["preferred_username"] == user.username


def test_token_endpoint_refusals(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    other = _confidential(server, name="Other")
    # Wrong client secret.
    code = _code(rp, user.client)
    r = rp.token_request(code, secret="wrong" * 8)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # A code issued to another client.
    code = _code(rp, user.client)
    other.verifier = rp.verifier
    assert other.token_request(code).json()["error"] == "invalid_grant"
    # Bad grant_type.
    with server.client() as http:
        r = http.post(
            "/oidc/token",
            data={"grant_type": "password", "username": "x"},
            auth=(rp.client_id, rp.secret or ""),
        )
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        r = http.post("/oidc/token", data={"grant_type": "authorization_code", "code": "x" * 5000})
        assert r.status_code in (400, 401)
    # An expired code (60 s).
    code = _code(rp, user.client)
    advance(server, 61)
    assert rp.token_request(code).json()["error"] == "invalid_grant"


def test_SEC_oidc_reused_code_revokes_what_the_first_use_issued(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    code = _code(rp, user.client)
    token = rp.tokens(code)
    expect(rp.userinfo(token["access_token"]), 200)
    r = rp.token_request(code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert rp.userinfo(token["access_token"]).status_code == 401
    assert rp.refresh(token["refresh_token"]).json()["error"] == "invalid_grant"


def test_SEC_oidc_refresh_tokens_rotate_and_reuse_revokes_the_family(
    server: AppServer, clients: Clients
) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    first = rp.tokens(_code(rp, user.client))
    r = rp.refresh(first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    expect(rp.userinfo(second["access_token"]), 200)
    # The old refresh token again: refused, and the whole family is revoked.
    assert rp.refresh(first["refresh_token"]).json()["error"] == "invalid_grant"
    assert rp.userinfo(second["access_token"]).status_code == 401
    assert rp.refresh(second["refresh_token"]).json()["error"] == "invalid_grant"


def test_userinfo_refuses_unknown_and_expired_tokens(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    token = rp.tokens(_code(rp, user.client))
    r = rp.userinfo("nope")
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    with server.client() as http:
        assert http.get("/oidc/userinfo").status_code == 401
    advance(server, 601)
    assert rp.userinfo(token["access_token"]).status_code == 401


def test_not_signed_in_goes_to_login_and_continues(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    browser = clients.new()
    # prompt=none without a session: login_required at the redirect URI.
    r = _authorize(browser, rp.authorize_url(prompt="none"))
    assert query_of(r.headers["location"])["error"] == "login_required"
    r = _authorize(browser, rp.authorize_url())
    assert r.status_code == 303
    login = r.headers["location"]
    assert login.startswith("/login?next=")
    next_path = query_of(login)["next"]
    assert next_path.startswith("/oidc/continue?id=")
    expect(browser.post("/api/v1/login", json={"username": user.username, "password": user.password}), 200)
    r = browser.get(next_path)
    assert r.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=' in r.text
    code = rp.code_from(_continue_url(r.text))
    assert rp.verify_id_token(rp.tokens(code)["id_token"])["preferred_username"] == user.username
    # The pending request works once.
    assert browser.get(next_path).status_code == 400


def test_client_users_and_groups_deny_others(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server, users=["somebody-else"], groups=["admins"])
    r = _authorize(user.client, rp.authorize_url())
    assert query_of(r.headers["location"])["error"] == "access_denied"
    rp_ok = _confidential(server, users=[user.username])
    assert _authorize(user.client, rp_ok.authorize_url()).status_code == 302
    assert "code" in query_of(_authorize(user.client, rp_ok.authorize_url()).headers["location"])


def test_max_age_and_prompt_login_send_to_verify_access(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    advance(server, 120)
    extras: list[dict[str, Any]] = [{"max_age": "60"}, {"prompt": "login"}]
    for extra in extras:
        r = _authorize(user.client, rp.authorize_url(**extra))
        assert r.status_code == 303, extra
        assert r.headers["location"].startswith("/verify-access?next=")
        back = query_of(r.headers["location"])["next"]
        # Not verified yet: sent again (the request's time is what counts, not a flag).
        assert user.client.get(back, follow_redirects=False).headers["location"].startswith("/verify-access")
        advance(server, 1)
        expect(user.client.post("/api/v1/verify-access", json={"password": user.password}), 200)
        r = user.client.get(back)
        assert r.status_code == 200 and "oidc-continue" in r.text
    # max_age met: straight to the client.
    assert _authorize(user.client, rp.authorize_url(max_age="3600")).status_code == 302
    # prompt=none and too old: login_required.
    advance(server, 120)
    r = _authorize(user.client, rp.authorize_url(max_age="60", prompt="none"))
    assert query_of(r.headers["location"])["error"] == "login_required"


def test_acr_values_mfa_and_two_factor_policy(server: AppServer, clients: Clients) -> None:
    plain = new_user(server, clients)
    rp = _confidential(server)
    # No second factor: led to set one up.
    r = _authorize(plain.client, rp.authorize_url(acr_values="mfa"))
    assert r.status_code == 403 and "a second factor" in r.text
    strict = _confidential(server, policy="two_factor")
    assert _authorize(plain.client, strict.authorize_url()).status_code == 403
    # With a TOTP sign-in: mfa satisfied, phr not (sent to verify access with a passkey).
    user = new_2fa_user(server, clients)
    fresh_step(server, 2)
    browser = signed_in_with_totp(clients, user, code_now(server, user.secret))
    claims = rp.verify_id_token(rp.tokens(_code(rp, browser, acr_values="mfa"))["id_token"])
    assert claims["acr"] == "mfa"
    r = _authorize(browser, rp.authorize_url(acr_values="phr"))
    assert r.status_code == 403 and "a passkey" in r.text  # no passkey on this account


def test_signing_key_rotation(server: AppServer, clients: Clients) -> None:
    from datetime import timedelta

    from twostep.services import oidc_keys

    assert server.app is not None
    ctx = server.app.state.web.ctx
    user = new_user(server, clients)
    rp = _confidential(server)
    old_kid = jwt.get_unverified_header(rp.tokens(_code(rp, user.client))["id_token"])["kid"]
    rotation = oidc_keys.rotate(ctx, delay=timedelta(hours=1))
    with server.client() as http:
        kids = {k["kid"] for k in http.get("/oidc/jwks").json()["keys"]}
    assert old_kid in kids and set(rotation.added) <= kids, "the new key is published at once"
    token = rp.tokens(_code(rp, user.client))
    assert jwt.get_unverified_header(token["id_token"])["kid"] == old_kid, "not signing yet"
    advance(server, 3601)
    user = new_user(server, clients)  # the first session is idle for too long now
    token = rp.tokens(_code(rp, user.client))
    new_kid = jwt.get_unverified_header(token["id_token"])["kid"]
    assert new_kid in rotation.added
    rp.verify_id_token(token["id_token"])
    with server.client() as http:
        assert old_kid in {k["kid"] for k in http.get("/oidc/jwks").json()["keys"]}, "old tokens still live"
    advance(server, 3601)
    with server.client() as http:
        kids = {k["kid"] for k in http.get("/oidc/jwks").json()["keys"]}
    assert old_kid not in kids and new_kid in kids


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_rp_initiated_logout_with_id_token_hint(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server, post_logout_redirect_uris=["https://rp.example/bye"])
    id_token = rp.tokens(_code(rp, user.client))["id_token"]
    # An unregistered URI: a page of ours, never a redirect; the session stays.
    r = user.client.get(
        "/oidc/logout",
        params={"id_token_hint": id_token, "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert r.status_code == 400 and "location" not in r.headers
    assert user.client.get("/api/v1/session").status_code == 200
    # A hint that is not ours.
    forged = id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")
    r = user.client.get("/oidc/logout", params={"id_token_hint": forged})
    assert r.status_code == 400
    # Ours, for this account: signed out at once, back to the client with the state.
    r = user.client.get(
        "/oidc/logout",
        params={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": "https://rp.example/bye",
            "state": "s1",
        },
        follow_redirects=False,
    )
    assert r.status_code == 302 and r.headers["location"] == "https://rp.example/bye?state=s1"
    assert user.client.get("/api/v1/session").status_code == 401


def test_rp_initiated_logout_without_hint_asks_first(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server, post_logout_redirect_uris=["https://rp.example/bye"])
    params = {"client_id": rp.client_id, "post_logout_redirect_uri": "https://rp.example/bye", "state": "s2"}
    r = user.client.get("/oidc/logout", params=params)
    assert r.status_code == 200 and "oidc-sign-out" in r.text
    assert user.client.get("/api/v1/session").status_code == 200, "a link alone signs nobody out"
    # Without the form's token: refused.
    r = user.client.post("/oidc/logout", data=params, headers={"origin": server.url})
    assert r.status_code == 403
    r = user.client.post(
        "/oidc/logout",
        data={
            **params,
            "csrf": _csrf(r.text) if False else _csrf(user.client.get("/oidc/logout", params=params).text),
        },
        headers={"origin": server.url},
    )
    assert r.status_code == 200
    assert _continue_url(r.text) == "https://rp.example/bye?state=s2"
    assert user.client.get("/api/v1/session").status_code == 401


def test_acr_mfa_leads_through_verify_access_with_the_second_factor(
    server: AppServer, clients: Clients
) -> None:
    """A session that signed in with the password alone and then added an app is acr pwd; acr_values=mfa
    sends it through verify access, and the verification with the app is what the ID token states."""
    user = new_2fa_user(server, clients)
    rp = _confidential(server)
    r = _authorize(user.client, rp.authorize_url(acr_values="mfa"))
    assert r.status_code == 303 and r.headers["location"].startswith("/verify-access?next=")
    back = query_of(r.headers["location"])["next"]
    fresh_step(server, 2)
    assert (
        expect(user.client.post("/api/v1/verify-access", json={"password": user.password}), 200)["status"]
        == "second_factor_required"
    )
    expect(user.client.post("/api/v1/verify-access/totp", json={"code": code_now(server, user.secret)}), 200)
    r = user.client.get(back)
    assert r.status_code == 200
    claims = rp.verify_id_token(rp.tokens(rp.code_from(_continue_url(r.text)))["id_token"])
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp", "mfa"]


def test_the_account_page_lists_applications_and_revokes_one(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server, name="Forgejo")
    token = rp.tokens(_code(rp, user.client))
    page = user.client.get("/settings/applications")
    assert page.status_code == 200 and "Forgejo" in page.text
    other = new_user(server, clients)
    assert "Forgejo" not in other.client.get("/settings/applications").text
    # Another account cannot revoke it (the grant is looked up with this account).
    other.client.post(
        "/settings/applications/revoke",
        data={"client_id": rp.client_id, "csrf": _csrf(other.client.get("/settings/applications").text)},
    )
    expect(rp.userinfo(token["access_token"]), 200)
    r = user.client.post(
        "/settings/applications/revoke", data={"client_id": rp.client_id, "csrf": _csrf(page.text)}
    )
    assert r.status_code == 303
    assert rp.userinfo(token["access_token"]).status_code == 401
    assert rp.refresh(token["refresh_token"]).json()["error"] == "invalid_grant"
    assert "Forgejo" not in user.client.get("/settings/applications").text


def test_repeated_parameters_and_a_changed_redirect_uri(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    r = _authorize(user.client, rp.authorize_url() + "&scope=openid")
    assert query_of(r.headers["location"])["error"] == "invalid_request"
    code = _code(rp, user.client)
    rp.redirect_uri = "https://rp.example/callback2"
    assert rp.token_request(code).json()["error"] == "invalid_grant"


def test_a_locked_account_loses_its_tokens(server: AppServer, clients: Clients) -> None:
    from sqlalchemy import text

    user = new_user(server, clients)
    rp = _confidential(server)
    token = rp.tokens(_code(rp, user.client))
    assert server.app is not None
    with server.app.state.web.ctx.db.transaction() as conn:
        conn.execute(
            text("UPDATE accounts SET locked_at = CURRENT_TIMESTAMP WHERE username = :u"),
            {"u": user.username},
        )
    assert rp.userinfo(token["access_token"]).status_code == 401
    assert rp.refresh(token["refresh_token"]).status_code == 400


def test_two_factor_policy_leads_through_set_up_then_verify_access(
    server: AppServer, clients: Clients
) -> None:
    user = new_user(server, clients)
    rp = _confidential(server, policy="two_factor")
    r = _authorize(user.client, rp.authorize_url())
    assert r.status_code == 403 and "a second factor" in r.text
    back = re.search(r'href="(/oidc/continue\?id=[^"]+)"', r.text)
    assert back
    back_path = html.unescape(back.group(1))
    user.add_totp("Phone")  # access was verified with the password alone: still acr pwd
    r = user.client.get(back_path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/verify-access?next=")
    advance(server, 1)
    fresh_step(server, 2)
    expect(user.client.post("/api/v1/verify-access", json={"password": user.password}), 200)
    expect(user.client.post("/api/v1/verify-access/totp", json={"code": code_now(server, user.secret)}), 200)
    r = user.client.get(back_path)
    assert r.status_code == 200
    claims = rp.verify_id_token(rp.tokens(rp.code_from(_continue_url(r.text)))["id_token"])
    assert claims["acr"] == "mfa"


def test_a_confidential_client_must_authenticate(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    rp = _confidential(server)
    code = _code(rp, user.client)
    with server.client() as http:
        r = http.post(
            "/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": rp.client_id,
                "code_verifier": rp.verifier,
            },
        )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # client_secret_post works.
    code = _code(rp, user.client)
    with server.client() as http:
        r = http.post(
            "/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": rp.client_id,
                "client_secret": rp.secret or "",
                "code_verifier": rp.verifier,
            },
        )
    assert r.status_code == 200, r.text


def test_a_single_page_application_on_another_origin(server: AppServer, clients: Clients) -> None:
    """A public client in a browser: its token and userinfo requests come from another origin (no cookie is
    involved, so no cross-site refusal), and it may read the answers (CORS)."""
    user = new_user(server, clients)
    new = register(server, public=True, redirect_uris=["https://spa.example/cb"])
    rp = RelyingParty(server, new.row.id, None, redirect_uri="https://spa.example/cb")
    code = _code(rp, user.client)
    body = rp.oauth.prepare_request_body(
        code=code, redirect_uri=rp.redirect_uri, code_verifier=rp.verifier, include_client_id=True
    )
    cross = {"origin": "https://spa.example", "sec-fetch-site": "cross-site"}
    with server.client() as http:
        r = http.post(
            "/oidc/token",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded", **cross},
        )
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "*"
        token = r.json()
        pre = http.options("/oidc/userinfo", headers=cross)
        assert pre.status_code == 204 and "authorization" in pre.headers["access-control-allow-headers"]
        r = http.get("/oidc/userinfo", headers={"authorization": f"Bearer {token['access_token']}", **cross})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        # The pages keep refusing cross-site posts.
        assert http.post("/oidc/logout", data={}, headers=cross).status_code == 403


def test_a_recovery_code_sign_in_goes_on_to_the_application(server: AppServer, clients: Clients) -> None:
    """The pages: password, then a recovery code on the recovery page, back to /oidc/continue."""
    user = new_2fa_user(server, clients)
    rp = _confidential(server)
    browser = clients.new()
    r = _authorize(browser, rp.authorize_url())
    next_path = query_of(r.headers["location"])["next"]
    page = browser.get("/login", params={"next": next_path})
    r = browser.post(
        "/login",
        data={
            "username": user.username,
            "password": user.password,
            "next": next_path,
            "csrf": _csrf(page.text),
        },
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/login/second-step")
    page = browser.get("/login/recovery-code", params={"methods": "totp,recovery_code", "next": next_path})
    r = browser.post(
        "/login/recovery-code",
        data={"code": user.recovery_codes[0], "next": next_path, "csrf": _csrf(page.text)},
    )
    assert r.status_code == 303 and r.headers["location"] == next_path
    claims = rp.verify_id_token(
        rp.tokens(rp.code_from(_continue_url(browser.get(next_path).text)))["id_token"]
    )
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"


def test_the_error_pages_of_authorize_and_logout_are_in_the_readers_language(
    server: AppServer, clients: Clients
) -> None:
    """Issue 19: the page about an unregistered redirect_uri names the application in a translated sentence
    (the name put in after translating); the refusals of logout are translated too."""
    rp = _confidential(server)
    bad = rp.authorize_url().replace("callback", "callback/other")
    browser = clients.new()

    def message(url: str, language: str | None) -> str:
        r = browser.get(
            url, headers={"Accept-Language": language} if language else {}, follow_redirects=False
        )
        assert r.status_code == 400 and "location" not in r.headers, r.text
        found = re.search(r"<main[^>]*>(.*?)</main>", r.text, re.S)
        assert found, r.text
        return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())

    english = "The address Test app asked to return to (redirect_uri) is not registered for it."
    assert english in message(bad, None)
    assert english in message(bad, "fr")
    assert (
        "Naslov, na katerega se želi vrniti aplikacija Test app (redirect_uri), zanjo ni registriran."
        in message(bad, "sl")
    )
    assert (
        "Die Adresse, zu der Test app zurückkehren möchte (redirect_uri), ist für diese Anwendung nicht "
        "registriert." in message(bad, "de")
    )
    unknown = f"/oidc/logout?client_id=nope&post_logout_redirect_uri={REDIRECT_URI}"
    assert "This application is not registered here." in message(unknown, None)
    assert "Ta aplikacija tukaj ni registrirana." in message(unknown, "sl")
    assert "Diese Anwendung ist hier nicht registriert." in message(unknown, "de")
