"""The API's conventions over HTTP (docs/api.md "Conventions"; SEC-52, SEC-53, SEC-54, SEC-59).

Every test talks to the app in this process (the module-scoped ``server`` fixture of tests/api/conftest.py).
Nothing here fails a password, so the per-address sign-in counter is never touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import get
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

API = "/api/v1"
MAX_BODY = 64 * 1024
EVIL = "https://evil.example"
DOCUMENTED_CODES = {
    "invalid_request",
    "invalid_credentials",
    "not_signed_in",
    "no_pending_login",
    "invalid_code",
    "passkey_rejected",
    "too_many_attempts",
    "verify_access_required",
    "cross_site_request",
    "username_taken",
    "weak_password",
    "two_factor_not_enabled",
    "enrollment_expired",
    "not_found",
    "unsupported_media_type",
    "payload_too_large",
}
# Every endpoint of docs/api.md: the OpenAPI document must describe each one.
CONTRACT_ENDPOINTS = [
    ("post", "/accounts"),
    ("post", "/login"),
    ("post", "/login/totp"),
    ("post", "/login/recovery-code"),
    ("post", "/login/passkey/options"),
    ("post", "/login/passkey"),
    ("post", "/logout"),
    ("get", "/session"),
    ("post", "/verify-access"),
    ("post", "/verify-access/totp"),
    ("post", "/verify-access/recovery-code"),
    ("post", "/verify-access/passkey/options"),
    ("post", "/verify-access/passkey"),
    ("get", "/factors"),
    ("post", "/factors/totp"),
    ("post", "/factors/totp/{enrollment_id}/confirm"),
    ("post", "/factors/passkey/options"),
    ("post", "/factors/passkey"),
    ("patch", "/factors/{factor_id}"),
    ("delete", "/factors/{factor_id}"),
    ("post", "/recovery-codes"),
    ("delete", "/two-factor"),
    ("get", "/security-events"),
    ("post", "/password"),
    ("get", "/sessions"),
    ("delete", "/sessions/{session_id}"),
    ("delete", "/sessions"),
    ("get", "/forward-auth"),
]
MUTATING = ("post", "put", "patch", "delete")


# --------------------------------------------------------------------------------------------- helpers


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error shape: JSON ``{"error": code, "message": sentence}`` with this status."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


def assert_error_shape_4xx(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return assert_error(response, response.status_code)


def fill(path: str) -> str:
    """A concrete URL for an OpenAPI path template (ids that match nothing)."""
    return API + re.sub(r"\{[^}]+\}", "no-such-id", path)


@pytest.fixture(scope="module")
def openapi(server: AppServer) -> dict[str, Any]:
    r = get(server, f"{API}/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


@pytest.fixture(scope="module")
def operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path-template) of every documented operation, generated from the router's OpenAPI."""
    ops = [
        (method, path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert ops
    return ops


@pytest.fixture
def client(server: AppServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def new_account(client: httpx.Client) -> str:
    username = unique_username()
    r = client.post(f"{API}/accounts", json={"username": username, "password": STRONG_PASSWORD})
    assert r.status_code == 201, r.text
    return username


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    sent = 0
    first = b'{"username": "abc", "password": "'
    yield first
    sent += len(first)
    while sent < total:
        piece = b"a" * min(size, total - sent)
        sent += len(piece)
        yield piece
    yield b'"}'


# ---------------------------------------------------------------------------------- the error shape


def _trigger(status: int, server: AppServer, client: httpx.Client) -> httpx.Response:
    if status == 401:
        return client.get(f"{API}/session")
    if status == 403:
        return client.post(f"{API}/logout", json={}, headers={"Origin": EVIL})
    if status == 404:
        return client.get(f"{API}/no-such-endpoint")
    if status == 405:
        return client.get(f"{API}/login")
    if status == 409:
        username = new_account(client)
        return client.post(f"{API}/accounts", json={"username": username, "password": STRONG_PASSWORD})
    if status == 413:
        return client.post(f"{API}/login", content=b" " * (MAX_BODY + 1), headers=JSON)
    if status == 415:
        return client.post(f"{API}/login", content=b"username=a&password=b", headers=FORM)
    if status == 422:
        return client.post(f"{API}/login", json={"username": "abc"})
    raise AssertionError(status)


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
EXPECTED_CODE = {
    401: "not_signed_in",
    403: "cross_site_request",
    404: "not_found",
    405: None,
    409: "username_taken",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


@pytest.mark.parametrize("status", sorted(EXPECTED_CODE))
def test_sec59_every_error_has_the_contract_shape(
    status: int, server: AppServer, client: httpx.Client
) -> None:
    """SEC-59: every error is {"error", "message"} JSON, with the documented code, never a stack trace."""
    response = _trigger(status, server, client)
    assert_error(response, status, EXPECTED_CODE[status])


def test_unknown_route_is_404_with_the_error_shape(client: httpx.Client) -> None:
    for method in ("GET", "POST", "DELETE"):
        kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
        r = client.request(method, f"{API}/definitely/not/here", **kwargs)
        assert_error(r, 404, "not_found")
    assert_error(client.get(f"{API}/factors/some-id/nothing"), 404, "not_found")


def test_openapi_document_describes_every_contract_endpoint(openapi: dict[str, Any]) -> None:
    """docs/api.md: /api/v1/openapi.json describes every endpoint of the contract."""
    described = {
        (method, path.removeprefix(API)) for path, item in openapi["paths"].items() for method in item
    }
    missing = [f"{m.upper()} {p}" for m, p in CONTRACT_ENDPOINTS if (m, p) not in described]
    assert not missing, missing


# ------------------------------------------------------------------------------------- 415 and 413


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},
    ],
    ids=["text-plain", "form", "multipart", "no-content-type"],
)
def test_sec52_d_write_without_json_content_type_is_415(
    headers: dict[str, str], server: AppServer, operations: list[tuple[str, str]]
) -> None:
    """SEC-52 (d): every POST/PUT/PATCH of the API refuses a non-JSON body with 415 unsupported_media_type."""
    writes = [(m, p) for m, p in operations if m in ("post", "put", "patch")]
    assert len(writes) >= 15
    body = b'{"username": "abc", "password": "x"}'
    with server.client() as c:
        for method, path in writes:
            r = c.request(method.upper(), fill(path), content=body, headers=headers)
            assert_error(r, 415, "unsupported_media_type")


def test_json_content_type_with_charset_is_accepted(client: httpx.Client) -> None:
    body = json.dumps({"username": unique_username(), "password": STRONG_PASSWORD}).encode()
    r = client.post(
        f"{API}/accounts", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 201, r.text


def test_sec59_body_over_64_kib_with_content_length_is_413(client: httpx.Client) -> None:
    """SEC-59: a body over 64 KiB (declared by Content-Length) gets 413 payload_too_large; 1 MiB too."""
    for size in (MAX_BODY + 1, 1024 * 1024):
        body = b'{"username": "abc", "password": "' + b"a" * size + b'"}'
        r = client.post(f"{API}/accounts", content=body, headers=JSON)
        assert_error(r, 413, "payload_too_large")
        assert r.headers.get("cache-control") == "no-store"


def test_sec59_body_of_exactly_64_kib_is_not_refused_for_size(client: httpx.Client) -> None:
    prefix = b'{"username": "ab", "password": "x"}'
    body = prefix + b" " * (MAX_BODY - len(prefix))
    assert len(body) == MAX_BODY
    r = client.post(f"{API}/accounts", content=body, headers=JSON)
    assert_error(r, 422, "invalid_request")


def test_sec59_chunked_body_over_64_kib_is_413(client: httpx.Client) -> None:
    """SEC-59: a body over 64 KiB without Content-Length (Transfer-Encoding: chunked) also gets 413."""
    r = client.post(f"{API}/accounts", content=chunks(MAX_BODY + 1024), headers=JSON)
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


def test_sec59_chunked_body_over_64_kib_is_refused_without_a_server_error(client: httpx.Client) -> None:
    """SEC-59: whatever the code, a chunked oversize body is a 4xx with the error shape, never a 5xx."""
    r = client.post(f"{API}/accounts", content=chunks(MAX_BODY + 1024), headers=JSON)
    assert_error_shape_4xx(r)


def test_sec59_small_chunked_body_is_accepted(client: httpx.Client) -> None:
    body = json.dumps({"username": unique_username(), "password": STRONG_PASSWORD}).encode()
    r = client.post(f"{API}/accounts", content=iter([body[:10], body[10:]]), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------- cross-site writes


def test_sec52_c_origin_of_another_site_is_403_on_every_mutating_endpoint(
    server: AppServer, operations: list[tuple[str, str]]
) -> None:
    """SEC-52 (c): Origin: https://evil.example → 403 cross_site_request on every state-changing route."""
    mutating = [(m, p) for m, p in operations if m in MUTATING]
    assert len(mutating) >= 20
    with server.client() as c:
        for method, path in mutating:
            kwargs: dict[str, Any] = {} if method == "delete" else {"json": {}}
            for origin in (EVIL, "null", server.url.replace("localhost", "127.0.0.1")):
                r = c.request(method.upper(), fill(path), headers={"Origin": origin}, **kwargs)
                assert_error(r, 403, "cross_site_request")


def test_sec52_c_sec_fetch_site_cross_site_is_403_on_every_mutating_endpoint(
    server: AppServer, operations: list[tuple[str, str]]
) -> None:
    """SEC-52 (c): Sec-Fetch-Site: cross-site → 403, with no Origin and even with our own Origin."""
    mutating = [(m, p) for m, p in operations if m in MUTATING]
    with server.client() as c:
        for method, path in mutating:
            kwargs: dict[str, Any] = {} if method == "delete" else {"json": {}}
            for headers in (
                {"Sec-Fetch-Site": "cross-site"},
                {"Sec-Fetch-Site": "cross-site", "Origin": server.url},
            ):
                r = c.request(method.upper(), fill(path), headers=headers, **kwargs)
                assert_error(r, 403, "cross_site_request")


def test_sec52_cross_site_sign_up_and_sign_in_change_nothing(server: AppServer, client: httpx.Client) -> None:
    """SEC-52: a refused cross-site sign-up creates no account, and a cross-site sign-in sets no cookie."""
    username = unique_username()
    body = {"username": username, "password": STRONG_PASSWORD}
    r = client.post(f"{API}/accounts", json=body, headers={"Origin": EVIL})
    assert_error(r, 403, "cross_site_request")
    assert client.post(f"{API}/accounts", json=body).status_code == 201  # the name was still free
    r = client.post(f"{API}/login", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert_error(r, 403, "cross_site_request")
    assert "set-cookie" not in r.headers
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "SERVER"},
        {"Origin": "SERVER", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ],
    ids=["no-headers", "own-origin", "own-origin-same-origin", "same-origin-only", "fetch-site-none"],
)
def test_sec52_same_origin_or_non_browser_writes_pass(headers: dict[str, str], server: AppServer) -> None:
    """SEC-52: the configured origin, or neither header (a non-browser client), passes the guard."""
    sent = {k: (server.url if v == "SERVER" else v) for k, v in headers.items()}
    with server.client() as c:
        username = unique_username()
        body = {"username": username, "password": STRONG_PASSWORD}
        assert c.post(f"{API}/accounts", json=body, headers=sent).status_code == 201
        r = c.post(f"{API}/login", json=body, headers=sent)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "signed_in"}
        assert c.get(f"{API}/session").json()["username"] == username
        assert c.post(f"{API}/logout", json={}, headers=sent).status_code == 204


def test_sec52_cross_site_reads_are_not_blocked(client: httpx.Client) -> None:
    """No GET changes state, so a cross-site GET is answered normally (and is not a write)."""
    r = client.get(f"{API}/openapi.json", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
    assert_error(client.get(f"{API}/session", headers={"Origin": EVIL}), 401, "not_signed_in")


def test_sec52_e_get_on_every_mutating_url_is_405(server: AppServer, openapi: dict[str, Any]) -> None:
    """SEC-52 (e): a GET on a URL that only changes state is 405 with the error shape (no GET side effect)."""
    write_only = [path for path, item in openapi["paths"].items() if "get" not in item]
    assert f"{API}/logout" in write_only and f"{API}/accounts" in write_only
    with server.client() as c:
        for path in write_only:
            url = re.sub(r"\{[^}]+\}", "no-such-id", path)
            r = c.get(url)
            assert_error(r, 405)
            assert "GET" not in r.headers.get("allow", "").upper().split(", ")


def test_sec52_e_get_on_logout_does_not_sign_out(server: AppServer) -> None:
    with server.client() as c:
        username = new_account(c)
        assert (
            c.post(f"{API}/login", json={"username": username, "password": STRONG_PASSWORD}).status_code
            == 200
        )
        assert_error(c.get(f"{API}/logout"), 405)
        assert c.get(f"{API}/session").status_code == 200


# ----------------------------------------------------------------------------- caching and headers


def _battery(server: AppServer) -> Iterator[httpx.Response]:
    """Responses of every kind under /api/v1: 2xx, 204, errors from handlers and from the guard."""
    with server.client() as c:
        username = unique_username()
        creds = {"username": username, "password": STRONG_PASSWORD}
        yield c.get(f"{API}/openapi.json")
        yield c.post(f"{API}/accounts", json=creds)  # 201
        yield c.post(f"{API}/accounts", json=creds)  # 409
        yield c.get(f"{API}/session")  # 401
        yield c.get(f"{API}/forward-auth")  # 401
        yield c.post(f"{API}/login", json=creds)  # 200 + cookie
        yield c.get(f"{API}/session")  # 200
        yield c.get(f"{API}/forward-auth")  # 200
        yield c.get(f"{API}/factors")
        yield c.get(f"{API}/sessions")
        yield c.get(f"{API}/security-events")
        yield c.post(f"{API}/factors/totp", json={})  # 403 verify_access_required
        yield c.post(f"{API}/verify-access", json={"password": STRONG_PASSWORD})  # 200
        yield c.post(f"{API}/login/passkey/options", json={})
        yield c.get(f"{API}/nope")  # 404
        yield c.get(f"{API}/login")  # 405
        yield c.post(f"{API}/login", content=b"x", headers={"Content-Type": "text/plain"})  # 415
        yield c.post(f"{API}/login", content=b" " * (MAX_BODY + 1), headers=JSON)  # 413
        yield c.post(f"{API}/logout", json={}, headers={"Origin": EVIL})  # 403
        yield c.post(f"{API}/login", json={"username": 1})  # 422
        yield c.post(f"{API}/logout", json={})  # 204


def test_sec53_every_api_response_has_cache_control_no_store(server: AppServer) -> None:
    """SEC-53 / api.md: every response under /api/v1 carries Cache-Control: no-store."""
    statuses = set()
    for r in _battery(server):
        statuses.add(r.status_code)
        cache = r.headers.get_list("cache-control")
        assert cache == ["no-store"], (r.request.method, r.request.url, r.status_code, cache)
        assert r.headers.get("referrer-policy"), r.request.url
    assert {200, 201, 204, 401, 403, 404, 405, 409, 413, 415, 422} <= statuses


def _assert_security_headers(r: httpx.Response) -> None:
    where = (r.request.method, str(r.request.url), r.status_code)
    hsts = r.headers.get("strict-transport-security", "")
    match = re.search(r"max-age=(\d+)", hsts, re.IGNORECASE)
    assert match and int(match.group(1)) >= 31536000, (where, hsts)
    csp = r.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0].lower(): d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("frame-ancestors", "").lower() == "frame-ancestors 'none'", (where, csp)
    assert r.headers.get("x-content-type-options", "").lower() == "nosniff", where


def test_sec54_security_headers_on_html_pages(server: AppServer) -> None:
    """SEC-54: HSTS ≥ 1 year, CSP frame-ancestors 'none' and nosniff on the HTML pages."""
    with server.client() as c:
        for path in ("/", f"{API}/docs"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            _assert_security_headers(r)
        _assert_security_headers(c.get("/no-such-page"))


def test_sec54_security_headers_on_api_responses(server: AppServer) -> None:
    """SEC-54: the same headers on every kind of API response, including the guard's own refusals."""
    for r in _battery(server):
        _assert_security_headers(r)


# ----------------------------------------------------------------------- strict input validation

TYPE_CONFUSED: list[Any] = [
    {"password": ["x"]},
    {"username": "abc", "password": ["x"]},
    {"username": ["abc"], "password": "correct horse battery staple"},
    {"code": {"$ne": ""}},
    {"username": {"$gt": ""}, "password": {"$gt": ""}},
    {"username": None},
    {"username": None, "password": None},
    {"username": 12345, "password": 12345},
    {"username": True, "password": False},
    {"username": 1.5e300, "password": "x"},
    {"code": 123456},
    {"code": None},
    {"code": ["123456"]},
    {"credential": 5},
    {"credential": None},
    {"credential": [1, 2, 3]},
    {"username": "abc", "password": "x" * 5000},
    {"username": "u" * 300, "password": "x"},
    [],
    [{"username": "abc", "password": "x"}],
    42,
    -1,
    3.14,
    "a string",
    None,
    True,
]
RAW_BODIES: dict[str, bytes] = {
    "empty": b"",
    "invalid-json": b"{not json",
    "truncated": b'{"username": "abc", "password": ',
    "trailing-garbage": b'{"username": "abc", "password": "x"} xyz',
    "nan": b'{"username": NaN, "password": "x"}',
    "invalid-utf8": b"\xc3\x28\xa0\xa1",
    "invalid-utf8-in-string": b'{"username": "ab\xffc", "password": "x"}',
    "lone-surrogate": b'{"username": "abc", "password": "\\ud800 correct horse battery"}',
    "nul-bytes": b'{"username": "a\x00bc", "password": "x"}',
    "deep-nesting": b"[" * 20000 + b"]" * 20000,
    "deep-object": b'{"a":' * 10000 + b"1" + b"}" * 10000,
    "utf16": '{"username": "abc", "password": "x"}'.encode("utf-16"),
}
# Endpoints whose body has required fields: a confused payload must be refused there (4xx).
STRICT_ENDPOINTS = [
    "/accounts",
    "/login",
    "/login/totp",
    "/login/recovery-code",
    "/login/passkey",
    "/verify-access",
    "/verify-access/totp",
    "/verify-access/recovery-code",
    "/verify-access/passkey",
    "/password",
    "/factors/passkey",
    "/factors/totp/no-such-id/confirm",
]


@pytest.mark.parametrize("path", STRICT_ENDPOINTS)
def test_sec59_type_confused_payloads_are_4xx_never_5xx(path: str, server: AppServer) -> None:
    """SEC-59: type-confused JSON (arrays, objects, null, numbers) → 4xx with the error shape, no 500."""
    with server.client() as c:
        for payload in TYPE_CONFUSED:
            r = c.post(f"{API}{path}", content=json.dumps(payload).encode(), headers=JSON)
            body = assert_error_shape_4xx(r)
            assert r.status_code != 200, (path, payload)
            assert body["error"] != "internal_error", (path, payload)


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_sec59_malformed_bodies_are_4xx_never_5xx(name: str, server: AppServer) -> None:
    """SEC-59: invalid JSON, invalid UTF-8, NUL bytes, deep nesting → 4xx with the error shape."""
    with server.client() as c:
        for path in ("/accounts", "/login", "/login/totp", "/verify-access", "/factors/passkey"):
            r = c.post(f"{API}{path}", content=RAW_BODIES[name], headers=JSON)
            assert_error_shape_4xx(r)


@pytest.mark.parametrize("name", ["invalid-utf8", "invalid-utf8-in-string", "deep-nesting"])
def test_sec59_unparseable_bodies_answer_invalid_request(name: str, client: httpx.Client) -> None:
    """SEC-59: a stable error format: an unparseable body is 422 invalid_request, a documented code."""
    r = client.post(f"{API}/login", content=RAW_BODIES[name], headers=JSON)
    body = assert_error(r, 422, "invalid_request")
    assert body["error"] in DOCUMENTED_CODES


def test_sec59_every_write_endpoint_survives_confused_payloads(
    server: AppServer, operations: list[tuple[str, str]]
) -> None:
    """SEC-59: no write endpoint (signed out) answers a 5xx to any confused payload; errors keep the shape."""
    writes = [(m, p) for m, p in operations if m in ("post", "put", "patch")]
    with server.client() as c:
        for method, path in writes:
            for payload in [*TYPE_CONFUSED[:12], [], None, 7]:
                r = c.request(method.upper(), fill(path), content=json.dumps(payload).encode(), headers=JSON)
                assert r.status_code < 500, (method, path, payload, r.text)
                if r.status_code >= 400:
                    assert_error(r, r.status_code)


def test_sec59_unknown_fields_switch_nothing_on(client: httpx.Client) -> None:
    """SEC-59 / SEC-03 (d): extra fields are ignored; they cannot sign anyone in."""
    username = new_account(client)
    r = client.post(
        f"{API}/login",
        json={
            "username": username,
            "mfa_verified": True,
            "trusted": True,
            "remember": True,
            "skip_2fa": True,
        },
    )
    assert_error(r, 422, "invalid_request")  # the password is still required
    assert "set-cookie" not in r.headers
    assert_error(client.get(f"{API}/session"), 401, "not_signed_in")
