"""Account security end to end: the security log, sessions and password change
(SEC-13, SEC-25, SEC-46, SEC-47, SEC-51, SEC-56, SEC-60).

Each browser sends its own User-Agent and (through the trusted test proxy) its own client address, so the
log and the session list can be checked for who did what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.api import get
from tests.support.inprocess import AppServer
from tests.support.mail import API, Browser, Clock, User, leaks, pattern_leaks, sign_up

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}
    with AppServer(tmp_path_factory.mktemp("account-security"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def clock(srv: AppServer) -> Clock:
    return Clock(srv)


@pytest.fixture
def cast() -> Iterator[list[User]]:
    users: list[User] = []
    yield users
    for user in users:
        for b in user.browsers:
            b.close()


def new_user(srv: AppServer, clock: Clock, cast: list[User]) -> tuple[User, Browser]:
    user, b = sign_up(srv, clock, email=False, prefix="sec")
    cast.append(user)
    return user, b


def error_of(r: httpx.Response) -> str:
    return str(r.json().get("error"))


def events_of(b: Browser) -> list[dict[str, Any]]:
    r = b.get("/security-events")
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def session_id_of(viewer: Browser, target: Browser) -> str:
    """The public id of ``target``'s session, as listed to ``viewer`` (told apart by User-Agent)."""
    r = viewer.get("/sessions")
    assert r.status_code == 200, r.text
    found = [s["id"] for s in r.json()["sessions"] if s["user_agent"] == target.user_agent]
    assert len(found) == 1, r.json()
    return str(found[0])


def signed_in(b: Browser) -> bool:
    r = b.get("/session")
    if r.status_code == 401:
        assert error_of(r) == "not_signed_in"
        return False
    assert r.status_code == 200, r.text
    return True


def parse_at(value: str) -> datetime:
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert at.utcoffset() == timedelta(0), value
    return at


# --- the security log (SEC-56, SEC-25) ------------------------------------------------------------------


def test_sec56_security_log_lists_every_event_newest_first_without_secrets(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-56: sign-ins (with the method), failed second steps, factors added/renamed/removed, recovery
    codes used/regenerated, 2FA on/off, access verified and ended sessions are listed newest first, each
    with the client address and browser of whoever acted; no code, secret, password or raw cookie."""
    start = clock.now()
    user, a = new_user(srv, clock, cast)
    expected: list[tuple[str, Browser, str | None]] = [("signed_in", a, "password")]
    user.verify_access(a)
    expected.append(("access_verified", a, "password"))
    user.enrol_totp(a, "Phone")
    expected += [("factor_added", a, None), ("two_factor_enabled", a, None)]
    r = a.patch(f"/factors/{user.factor_ids[0]}", {"name": "Work phone"})
    assert r.status_code == 200, r.text
    expected.append(("factor_renamed", a, None))

    intruder = user.browser()
    user.password_step(intruder)
    r = intruder.post("/login/totp", {"code": user.device.wrong_code()})
    assert r.status_code == 401
    expected.append(("second_factor_failed", intruder, "totp"))

    c = user.signed_in()
    expected.append(("signed_in", c, "totp"))

    rc = user.browser()
    user.password_step(rc)
    r = rc.post("/login/recovery-code", {"code": user.recovery_codes[0].lower()})
    assert r.status_code == 200, r.text
    expected += [("recovery_code_used", rc, None), ("signed_in", rc, "recovery_code")]
    user.regenerate_codes(rc)
    expected.append(("recovery_codes_regenerated", rc, None))
    user.enrol_totp(rc, "Tablet")
    expected.append(("factor_added", rc, None))
    r = rc.delete(f"/factors/{user.factor_ids[1]}")
    assert r.status_code == 204, r.text
    expected.append(("factor_removed", rc, None))

    user.verify_access(a)
    expected.append(("access_verified", a, "totp"))
    r = a.delete(f"/sessions/{session_id_of(a, c)}")
    assert r.status_code == 204, r.text
    expected.append(("session_ended", a, None))
    r = a.delete("/sessions")
    assert r.status_code == 204, r.text
    expected.append(("other_sessions_ended", a, None))
    r = a.delete("/two-factor")
    assert r.status_code == 204, r.text
    expected.append(("two_factor_disabled", a, None))
    end = clock.now()

    r = a.get("/security-events")
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    wanted = {t for t, _, _ in expected}
    ours = [e for e in reversed(events) if e["type"] in wanted]
    assert [e["type"] for e in ours] == [t for t, _, _ in expected]
    for event, (type_, browser, method) in zip(ours, expected, strict=True):
        assert event["ip"] == browser.ip, event
        assert event["user_agent"] == browser.user_agent, event
        if method is not None:
            assert event["detail"].get("method") == method, event
    renamed = next(e for e in events if e["type"] == "factor_renamed")
    assert "Work phone" in json.dumps(renamed["detail"])

    times = [parse_at(e["at"]) for e in events]
    assert times == sorted(times, reverse=True), "not newest first"
    assert all(start - timedelta(seconds=2) <= t <= end + timedelta(seconds=2) for t in times)
    assert {"type", "at", "ip", "user_agent", "detail"} <= set(events[0])

    text = r.text
    assert leaks(text, user.secret_values()) == []
    assert pattern_leaks(text) == []
    for b in user.browsers:
        assert b.cookies_seen, "every browser got a cookie"


SESSION_KEYS = ("session", "session_id", "session_hash", "sid")


def test_sec56_authentication_events_name_the_session_by_a_hash_not_the_cookie(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-56: authentication events carry a hashed session id (so a sign-in can be tied to the session it
    made and to later failures), never the raw cookie value; two sign-ins name two different sessions."""
    user, a = new_user(srv, clock, cast)
    b = user.signed_in()
    user.verify_access(b)
    events = [e for e in events_of(a) if e["type"] in ("signed_in", "access_verified")]
    refs = []
    for event in events:
        ref = next((event["detail"][k] for k in SESSION_KEYS if event["detail"].get(k)), None)
        assert isinstance(ref, str) and len(ref) >= 16, event
        refs.append(ref)
    signed_in_refs = [r for r, e in zip(refs, events, strict=True) if e["type"] == "signed_in"]
    assert len(set(signed_in_refs)) == 2
    assert leaks(json.dumps(events), user.secret_values()) == []


def test_sec25_replayed_totp_is_logged_as_totp_replay(srv: AppServer, clock: Clock, cast: list[User]) -> None:
    """SEC-25: a code used once and presented again (at sign-in and at verify access) is refused like any
    wrong code and logged as `totp_replay` with the replaying client's address, without the code."""
    user, a = new_user(srv, clock, cast)
    user.enrol_totp(a)
    first = user.browser()
    user.password_step(first)
    code = user.device.code()
    assert first.post("/login/totp", {"code": code}).status_code == 200

    replayer = user.browser()
    user.password_step(replayer)
    r = replayer.post("/login/totp", {"code": code})
    assert r.status_code == 401 and error_of(r) == "invalid_code", r.text
    assert not signed_in(replayer)

    # At verify access: the code just used to verify is replayed in the same session.
    assert (
        first.post("/verify-access", {"password": user.password}).json()["status"] == "second_factor_required"
    )
    code2 = user.device.code()
    assert first.post("/verify-access/totp", {"code": code2}).status_code == 200
    assert first.post("/verify-access", {"password": user.password}).status_code == 200
    r = first.post("/verify-access/totp", {"code": code2})
    assert r.status_code == 401 and error_of(r) == "invalid_code", r.text

    events = events_of(a)
    replays = [e for e in events if e["type"] == "totp_replay"]
    assert len(replays) == 2, events
    by_ip = {e["ip"] for e in replays}
    assert by_ip == {replayer.ip, first.ip}
    assert replays[-1]["user_agent"] == replayer.user_agent
    text = json.dumps(events)
    assert code not in text and code2 not in text
    assert leaks(text, user.secret_values()) == []


# --- sessions (SEC-51, SEC-60) ----------------------------------------------------------------------------


def test_sec51_sessions_lists_this_accounts_signed_in_sessions_with_current(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-51: GET /sessions lists exactly the account's signed-in sessions, marks the caller's own as
    current, and shows when, from where and with which browser; pending sign-ins and other accounts'
    sessions are not listed; no cookie value appears."""
    user, a = new_user(srv, clock, cast)
    user.verify_access(a)
    user.enrol_totp(a)
    b = user.signed_in()
    c = user.signed_in()
    pending = user.browser()
    user.password_step(pending)
    other, _ = new_user(srv, clock, cast)

    for viewer in (a, b, c):
        r = viewer.get("/sessions")
        assert r.status_code == 200, r.text
        sessions = r.json()["sessions"]
        assert sorted(s["user_agent"] for s in sessions) == sorted(x.user_agent for x in (a, b, c))
        assert len({s["id"] for s in sessions}) == 3
        current = [s for s in sessions if s["current"]]
        assert len(current) == 1
        assert current[0]["user_agent"] == viewer.user_agent
        assert current[0]["ip"] == viewer.ip
        for s in sessions:
            parse_at(s["created_at"])
            parse_at(s["last_seen_at"])
        assert leaks(r.text, user.secret_values() + other.secret_values()) == []

    r = pending.get("/sessions")
    assert r.status_code == 401 and error_of(r) == "not_signed_in"


def test_sec51_ending_one_session_needs_verify_access_and_takes_effect_at_once(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-51: DELETE /sessions/{id} is refused (403) without verified access; with it the other session's
    very next request is 401 (API and forward auth), the rest keep working, the id is gone (404 again)."""
    user, a = new_user(srv, clock, cast)
    b = user.signed_in()
    c = user.signed_in()
    target = session_id_of(a, b)

    r = a.delete(f"/sessions/{target}")
    assert r.status_code == 403 and error_of(r) == "verify_access_required", r.text
    assert signed_in(b)

    user.verify_access(a)
    r = a.delete(f"/sessions/{target}")
    assert r.status_code == 204, r.text
    assert not signed_in(b)
    assert b.http.get("/api/v1/forward-auth").status_code == 401
    assert signed_in(a) and signed_in(c)
    assert target not in {s["id"] for s in a.get("/sessions").json()["sessions"]}
    r = a.delete(f"/sessions/{target}")
    assert r.status_code == 404 and error_of(r) == "not_found"
    # Signing in again is a new session, not the ended one coming back.
    b2 = user.signed_in(user_agent=b.user_agent + " again")
    assert signed_in(b2) and not signed_in(b)
    ended = [e for e in events_of(a) if e["type"] == "session_ended"]
    assert len(ended) == 1 and ended[0]["ip"] == a.ip


def test_sec51_ending_all_other_sessions(srv: AppServer, clock: Clock, cast: list[User]) -> None:
    """SEC-51: DELETE /sessions is refused (403) without verified access; with it every other session
    (signed in or pending) ends at once and the caller's own keeps working."""
    user, a = new_user(srv, clock, cast)
    others = [user.signed_in() for _ in range(3)]
    r = a.delete("/sessions")
    assert r.status_code == 403 and error_of(r) == "verify_access_required", r.text
    assert all(signed_in(o) for o in others)

    user.verify_access(a)
    r = a.delete("/sessions")
    assert r.status_code == 204, r.text
    assert [signed_in(o) for o in others] == [False, False, False]
    assert signed_in(a)
    sessions = a.get("/sessions").json()["sessions"]
    assert [(s["user_agent"], s["current"]) for s in sessions] == [(a.user_agent, True)]


def test_sec60_another_accounts_session_id_is_not_found(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-60: Alice, with verified access, cannot end Bob's session by its id: 404, and Bob stays in."""
    alice, a = new_user(srv, clock, cast)
    _bob, bob_b = new_user(srv, clock, cast)
    bob_id = session_id_of(bob_b, bob_b)
    alice.verify_access(a)
    r = a.delete(f"/sessions/{bob_id}")
    assert r.status_code == 404 and error_of(r) == "not_found", r.text
    assert signed_in(bob_b)
    assert bob_id in {s["id"] for s in bob_b.get("/sessions").json()["sessions"]}
    assert bob_id not in {s["id"] for s in a.get("/sessions").json()["sessions"]}
    # DELETE /sessions ends Alice's other sessions only.
    assert a.delete("/sessions").status_code == 204
    assert signed_in(bob_b)


def test_sec51_logout_ends_the_session_server_side(srv: AppServer, clock: Clock, cast: list[User]) -> None:
    """SEC-51: after logout the old cookie value, replayed by another client, is 401."""
    _user, a = new_user(srv, clock, cast)
    value = a.http.cookies.get("twostep_session")
    assert value
    assert a.post("/logout").status_code == 204
    with srv.client(cookies={"twostep_session": value}) as replay:
        r = replay.get(f"{API}/session")
        assert r.status_code == 401 and error_of(r) == "not_signed_in"


# --- password change (SEC-13) ------------------------------------------------------------------------------


def login_status(srv: AppServer, user: User, password: str) -> int:
    with srv.client(headers={"X-Forwarded-For": "198.51.100.7"}) as c:
        return c.post(f"{API}/login", json={"username": user.username, "password": password}).status_code


def test_sec13_change_password_ends_other_sessions_and_swaps_the_password(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-13/SEC-51: with verified access and the current password, POST /password answers 204, every
    other session ends (401), the caller stays signed in, the new password works and the old does not."""
    user, a = new_user(srv, clock, cast)
    others = [user.signed_in(), user.signed_in()]
    user.verify_access(a)
    old = user.password
    new = "a completely different passphrase"
    r = a.post("/password", {"current_password": old, "new_password": new})
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert [signed_in(o) for o in others] == [False, False]
    assert signed_in(a)
    assert login_status(srv, user, new) == 200
    assert login_status(srv, user, old) == 401
    changed = [e for e in events_of(a) if e["type"] == "password_changed"]
    assert len(changed) == 1 and changed[0]["ip"] == a.ip
    assert old not in json.dumps(changed) and new not in json.dumps(changed)


def test_sec13_change_password_needs_verify_access(srv: AppServer, clock: Clock, cast: list[User]) -> None:
    """SEC-13: the correct current password alone is not enough: 403 verify_access_required; nothing
    changes and the other sessions stay."""
    user, a = new_user(srv, clock, cast)
    other = user.signed_in()
    r = a.post("/password", {"current_password": user.password, "new_password": "another good passphrase"})
    assert r.status_code == 403 and error_of(r) == "verify_access_required", r.text
    assert signed_in(other)
    assert login_status(srv, user, user.password) == 200


def test_sec13_change_password_with_a_wrong_current_password(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-13: a wrong current password is 401 invalid_credentials and counted as a password failure;
    a missing one is 422; nothing changes."""
    user, a = new_user(srv, clock, cast)
    other = user.signed_in()
    user.verify_access(a)
    r = a.post(
        "/password", {"current_password": user.password + "x", "new_password": "another good passphrase"}
    )
    assert r.status_code == 401 and error_of(r) == "invalid_credentials", r.text
    r = a.post("/password", {"new_password": "another good passphrase"})
    assert r.status_code == 422, r.text
    assert signed_in(other)
    assert login_status(srv, user, user.password) == 200
    assert login_status(srv, user, "another good passphrase") == 401
    failed = [e for e in events_of(a) if e["type"] == "password_failed" and e["ip"] == a.ip]
    assert len(failed) == 1


def test_sec13_change_password_to_a_weak_one_is_refused(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-13 with the password policy: a weak new password is 422 weak_password with a reason; nothing
    changes."""
    user, a = new_user(srv, clock, cast)
    other = user.signed_in()
    user.verify_access(a)
    for weak in ("short", "twostep-twostep", user.username + "123456789"):
        r = a.post("/password", {"current_password": user.password, "new_password": weak})
        assert r.status_code == 422 and error_of(r) == "weak_password", (weak, r.text)
        assert r.json()["message"]
    assert signed_in(other)
    assert login_status(srv, user, user.password) == 200


def _walk_keys(node: object) -> Iterator[str]:
    """Every key of every object in the document, and the name of every parameter."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _walk_keys(value)
        if isinstance(node.get("name"), str):
            yield str(node["name"])
    elif isinstance(node, list):
        for item in node:
            yield from _walk_keys(item)


def test_sec13_no_password_hint_or_security_question_in_the_api(srv: AppServer) -> None:
    """SEC-13 (static): no field for a password hint or a security question anywhere in the OpenAPI
    document; POST /password takes exactly the current and the new password."""
    doc = get(srv, "/api/v1/openapi.json").json()
    names = {k.lower() for k in _walk_keys(doc)}
    assert not {n for n in names if "hint" in n or "question" in n or "answer" in n}
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/api/v1/password"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = schemas[body["$ref"].rsplit("/", 1)[-1]]
    assert set(body["properties"]) == {"current_password", "new_password"}
    assert set(body.get("required", [])) == {"current_password", "new_password"}


# --- termination offered after removing a factor / disabling 2FA (SEC-46, SEC-47) ---------------------------


def test_sec46_after_removing_a_factor_other_sessions_can_be_ended(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-46: after a factor is removed the other sessions can be ended right away (DELETE /sessions
    in the same verified session), and then they are 401."""
    user, a = new_user(srv, clock, cast)
    user.verify_access(a)
    user.enrol_totp(a, "Phone")
    user.enrol_totp(a, "Tablet")
    others = [user.signed_in(), user.signed_in()]
    assert a.delete(f"/factors/{user.factor_ids[1]}").status_code == 204
    r = a.delete("/sessions")
    assert r.status_code == 204, r.text
    assert [signed_in(o) for o in others] == [False, False]
    assert signed_in(a)
    assert [s["current"] for s in a.get("/sessions").json()["sessions"]] == [True]
    ended = [e for e in events_of(a) if e["type"] == "other_sessions_ended"]
    assert len(ended) == 1


def test_sec47_after_disabling_two_factor_other_sessions_can_be_ended(
    srv: AppServer, clock: Clock, cast: list[User]
) -> None:
    """SEC-47: after two-step verification is turned off the other sessions are ended or can be ended at
    once with DELETE /sessions; either way none of them works afterwards and the caller's does."""
    user, a = new_user(srv, clock, cast)
    user.verify_access(a)
    user.enrol_totp(a)
    others = [user.signed_in(), user.signed_in()]
    assert a.delete("/two-factor").status_code == 204
    r = a.delete("/sessions")
    assert r.status_code == 204, r.text
    assert [signed_in(o) for o in others] == [False, False]
    assert signed_in(a)
    types = [e["type"] for e in events_of(a)]
    assert types.index("other_sessions_ended") < types.index("two_factor_disabled")
