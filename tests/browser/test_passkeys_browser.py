"""Passkeys in a real Chromium with a CDP virtual authenticator (design.md "Testing in a real browser").

The page is same-origin with the server and drives the JSON API with ``fetch``; ceremonies use
``navigator.credentials.create/get`` with ``PublicKeyCredential.parse*OptionsFromJSON`` and
``credential.toJSON()``, exactly as a web client does. Each kind of authenticator of issue 4 is covered: a
platform authenticator (ctap2, internal), a security key (ctap2, usb) and a legacy U2F key (u2f, usb),
which has neither resident keys nor user verification, so passwordless sign-in and verify access by the
passkey alone must fail for it while the second step works.

Every ceremony is bounded (a short ``timeout`` in the options where failure is expected, an ``AbortSignal``
and a JavaScript timer always), so no test hangs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.browser import PLATFORM, SECURITY_KEY, U2F_KEY, VirtualAuthenticator
from tests.support.passkeys import RP_ID, sign_up
from tests.support.server import Server

pytestmark = pytest.mark.browser

SHORT_TIMEOUT_MS = 3000  # for ceremonies expected to fail

KINDS = {"platform": PLATFORM, "security-key": SECURITY_KEY, "u2f": U2F_KEY}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _capable(kind: str) -> bool:
    """Resident keys and user verification: everything but the U2F key."""
    return kind != "u2f"


FETCH_JS = """
async ({method, path, body}) => {
  const init = {method, credentials: "same-origin", headers: {}};
  if (body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api/v1" + path, init);
  const text = await r.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
  return {status: r.status, body: parsed};
}
"""

CEREMONY_JS = """
async ({ceremony, optionsPath, finishPath, name, timeout, publicKey}) => {
  const post = async (path, body) => {
    const r = await fetch("/api/v1" + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    const text = await r.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
    return {status: r.status, body: parsed};
  };
  let options = publicKey;
  if (options === null) {
    const o = await post(optionsPath, {});
    if (o.status !== 200) return {stage: "options", status: o.status, body: o.body};
    options = o.body.publicKey;
  }
  if (timeout !== null) options = {...options, timeout};
  const limit = (options.timeout || 10000) + 2000;
  const started = Date.now();
  let credential;
  try {
    const signal = AbortSignal.timeout(limit);
    const pending = ceremony === "create"
      ? navigator.credentials.create(
          {publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options), signal})
      : navigator.credentials.get(
          {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options), signal});
    const timer = new Promise((_, reject) =>
      setTimeout(() => reject(new DOMException("no answer", "TimeoutError")), limit + 1000));
    credential = await Promise.race([pending, timer]);
  } catch (e) {
    return {stage: "ceremony", error: e.name, message: String(e.message), ms: Date.now() - started};
  }
  const json = credential.toJSON();
  const body = ceremony === "create" ? {name, credential: json} : {credential: json};
  const f = await post(finishPath, body);
  return {stage: "finish", status: f.status, body: f.body, credential: json};
}
"""


@dataclass
class Tab:
    """A page of one browser context (its own cookies) with its own virtual authenticator."""

    page: Any
    authenticator: VirtualAuthenticator

    @classmethod
    def open(cls, page: Any, server: Server, options: dict[str, Any]) -> Tab:
        page.goto(server.url + "/")
        return cls(page, VirtualAuthenticator.attach(page, options))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = {}
        result: dict[str, Any] = self.page.evaluate(FETCH_JS, {"method": method, "path": path, "body": body})
        return result

    def ceremony(
        self,
        ceremony: str,
        options_path: str,
        finish_path: str,
        *,
        name: str = "",
        timeout: int | None = None,
        public_key: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        args = {
            "ceremony": ceremony,
            "optionsPath": options_path,
            "finishPath": finish_path,
            "name": name,
            "timeout": timeout,
            "publicKey": public_key,
        }
        result: dict[str, Any] = self.page.evaluate(CEREMONY_JS, args)
        return result

    # ------------------------------------------------------------------------------------------ flows

    def login(self, username: str) -> dict[str, Any]:
        r = self.call("POST", "/login", {"username": username, "password": PASSWORD})
        assert r["status"] == 200, r
        body: dict[str, Any] = r["body"]
        return body

    def register(self, name: str = "") -> dict[str, Any]:
        return self.ceremony("create", "/factors/passkey/options", "/factors/passkey", name=name)

    def second_step(self, **kwargs: Any) -> dict[str, Any]:
        return self.ceremony("get", "/login/passkey/options", "/login/passkey", **kwargs)

    def verify_access(self, **kwargs: Any) -> dict[str, Any]:
        return self.ceremony("get", "/verify-access/passkey/options", "/verify-access/passkey", **kwargs)

    def session(self) -> dict[str, Any]:
        return self.call("GET", "/session")

    def logout(self) -> None:
        assert self.call("POST", "/logout")["status"] == 204

    def copy_credentials_from(self, other: Tab) -> None:
        """The same passkeys on a second device (e.g. a synced provider or a cloned key)."""
        for credential in other.authenticator.credentials():
            credential.setdefault("rpId", RP_ID)  # not reported for a non-resident (U2F) credential
            self.authenticator.cdp.send(
                "WebAuthn.addCredential",
                {"authenticatorId": self.authenticator.authenticator_id, "credential": credential},
            )


@pytest.fixture
def second_page(browser: Any) -> Iterator[Any]:
    """Another browser (a new context: no cookies shared with `page`)."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def _registered(tab: Tab, server: Server, kind: str) -> tuple[str, str]:
    """A new account with one passkey made by this tab's authenticator; returns (username, factor id). The
    tab stays signed in with access verified."""
    username = sign_up(server, f"br_{kind.replace('-', '_')}").username
    assert tab.login(username)["status"] == "signed_in"
    r = tab.call("POST", "/verify-access", {"password": PASSWORD})
    assert r["status"] == 200 and r["body"]["status"] == "verified", r
    result = tab.register()
    assert result["stage"] == "finish", result
    assert result["status"] == 201, result
    assert len(result["body"]["recovery_codes"]) == 10
    factor = result["body"]["factor"]
    assert factor["type"] == "passkey"
    return username, factor["id"]


def _expect_ceremony_failure(result: dict[str, Any]) -> None:
    """The browser itself refuses (no usable credential, or no user verification) before anything is sent."""
    assert result["stage"] == "ceremony", result
    assert result["error"] == "NotAllowedError", result


def _signed_out(tab: Tab) -> None:
    r = tab.session()
    assert r["status"] == 401, r


# -------------------------------------------------------------------------------------------------- tests


def test_register_a_passkey_and_sign_in_with_it_as_second_step(
    page: Any, web_server: Server, kind: str
) -> None:
    tab = Tab.open(page, web_server, KINDS[kind])
    username, factor_id = _registered(tab, web_server, kind)

    stored = tab.authenticator.credentials()
    assert len(stored) == 1
    assert stored[0]["isResidentCredential"] is _capable(kind)
    factors = tab.call("GET", "/factors")["body"]
    assert factors["two_factor_enabled"] is True
    assert [f["id"] for f in factors["factors"]] == [factor_id]

    tab.logout()
    body = tab.login(username)
    assert body["status"] == "second_factor_required"
    assert "passkey" in body["methods"]
    _signed_out(tab)
    result = tab.second_step()
    assert result["stage"] == "finish", result
    assert result["status"] == 200 and result["body"] == {"status": "signed_in"}, result
    session = tab.session()["body"]
    assert session["username"] == username
    assert session["second_factor"] == "passkey"
    assert tab.authenticator.credentials()[0]["signCount"] >= 1
    listed = tab.call("GET", "/factors")["body"]["factors"]
    assert listed[0]["last_used_at"] is not None


def test_passwordless_sign_in(page: Any, web_server: Server, kind: str) -> None:
    """A discoverable credential with user verification signs in without the password; the U2F key (no
    resident keys, no user verification) cannot, and a platform authenticator whose user is not verified
    cannot either."""
    tab = Tab.open(page, web_server, KINDS[kind])
    username, _ = _registered(tab, web_server, kind)
    tab.logout()

    if not _capable(kind):
        _expect_ceremony_failure(tab.second_step(timeout=SHORT_TIMEOUT_MS))
        _signed_out(tab)
        return

    tab.authenticator.set_user_verified(False)
    result = tab.second_step(timeout=SHORT_TIMEOUT_MS)
    assert result.get("status") != 200, result
    _signed_out(tab)

    tab.authenticator.set_user_verified(True)
    result = tab.second_step()
    assert result["stage"] == "finish", result
    assert result["status"] == 200, result
    session = tab.session()["body"]
    assert session["username"] == username
    assert session["second_factor"] == "passkey"


def test_verify_access_with_a_passkey(page: Any, web_server: Server, kind: str) -> None:
    """A passkey with user verification verifies access alone; without it (the U2F key) only after the
    password. Either way a sensitive call then works."""
    tab = Tab.open(page, web_server, KINDS[kind])
    username, _ = _registered(tab, web_server, kind)
    tab.logout()
    assert tab.login(username)["status"] == "second_factor_required"
    assert tab.second_step()["status"] == 200
    r = tab.call("POST", "/recovery-codes")
    assert r["status"] == 403 and r["body"]["error"] == "verify_access_required", r

    if _capable(kind):
        result = tab.verify_access()
        assert result["stage"] == "finish", result
        assert result["status"] == 200 and result["body"]["status"] == "verified", result
    else:
        _expect_ceremony_failure(tab.verify_access(timeout=SHORT_TIMEOUT_MS))
        assert tab.call("POST", "/recovery-codes")["status"] == 403
        r = tab.call("POST", "/verify-access", {"password": PASSWORD})
        assert r["body"]["status"] == "second_factor_required", r
        result = tab.verify_access()
        assert result["stage"] == "finish", result
        assert result["status"] == 200, result

    assert tab.session()["body"]["access_verified_until"] is not None
    r = tab.call("POST", "/recovery-codes")
    assert r["status"] == 201, r
    assert len(r["body"]["recovery_codes"]) == 10


def test_removed_passkey_is_refused_at_sign_in(
    page: Any, second_page: Any, web_server: Server, kind: str
) -> None:
    """SEC-42 in the browser: a second browser holding the same passkey starts a sign-in; the passkey is
    removed in the first; the second browser's assertion is refused by the server."""
    first = Tab.open(page, web_server, KINDS[kind])
    username, factor_id = _registered(first, web_server, kind)
    second = Tab.open(second_page, web_server, KINDS[kind])
    second.copy_credentials_from(first)

    assert second.login(username)["status"] == "second_factor_required"
    options = second.call("POST", "/login/passkey/options")
    assert options["status"] == 200, options

    assert first.call("DELETE", f"/factors/{factor_id}")["status"] == 204
    factors = first.call("GET", "/factors")["body"]
    assert factors["factors"] == [] and factors["two_factor_enabled"] is False

    result = second.second_step(public_key=options["body"]["publicKey"])
    assert result["stage"] == "finish", result  # the browser still has it: the server must refuse
    assert result["status"] == 401 and result["body"]["error"] == "passkey_rejected", result
    _signed_out(second)

    if _capable(kind):
        second.logout()
        result = second.second_step()  # passwordless
        assert result["stage"] == "finish", result
        assert result["status"] == 401 and result["body"]["error"] == "passkey_rejected", result
        _signed_out(second)


def test_browser_without_the_credential_cannot_sign_in(
    page: Any, second_page: Any, web_server: Server, kind: str
) -> None:
    """Another browser whose authenticator lacks the passkey: the ceremony fails (NotAllowedError) within
    the short timeout, for the second step and passwordless; with the passkey copied in, it works."""
    first = Tab.open(page, web_server, KINDS[kind])
    username, _ = _registered(first, web_server, kind)
    other = Tab.open(second_page, web_server, KINDS[kind])

    assert other.login(username)["status"] == "second_factor_required"
    result = other.second_step(timeout=SHORT_TIMEOUT_MS)
    _expect_ceremony_failure(result)
    assert result["ms"] < SHORT_TIMEOUT_MS + 2000
    _signed_out(other)

    other.logout()
    _expect_ceremony_failure(other.second_step(timeout=SHORT_TIMEOUT_MS))  # passwordless
    _signed_out(other)

    other.copy_credentials_from(first)
    assert other.login(username)["status"] == "second_factor_required"
    result = other.second_step(timeout=SHORT_TIMEOUT_MS)
    assert result["stage"] == "finish", result
    assert result["status"] == 200, result
    assert other.session()["body"]["username"] == username
