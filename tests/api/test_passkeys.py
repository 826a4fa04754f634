"""Passkeys over the JSON API (the app in this process), answered by the software authenticator.

security.md F (SEC-38..42, the WA-R and WA-A rows that need the whole service), SEC-06, SEC-43 for
registration and SEC-61. The pure checks of every WA row are also tested at the core level
(tests/core/test_passkeys.py); here each row is refused over HTTP with the documented status, never a 5xx,
with nothing stored or updated, and a positive control in the same test shows that the refusal came from the
check under test.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest

from tests.support.inprocess import AppServer
from tests.support.passkeys import (
    ONEPASSWORD_AAGUID,
    RP_ID,
    Account,
    Api,
    close_all,
    expect_rejected,
    new_authenticator,
    passkey_factor,
    pending_login,
    register,
    second_step,
    sign_in,
    sign_up,
    verified_session,
    with_passkey,
)
from tests.support.server import Target
from tests.support.soft_authenticator import (
    OMIT,
    b64url,
    b64url_decode,
    flip_bit,
    generate_private_key,
    tamper,
)

pytestmark = pytest.mark.api

CHALLENGE_TTL = 300


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def clock(server: AppServer) -> Iterator[Callable[[float], None]]:
    """Moves the server's clock; always put back."""
    yield server.set_clock
    server.set_clock(0)


def _no_passkey_stored(api: Api, account: Account, before: dict[str, Any]) -> None:
    """WA-R17: the factor list is as before; with none, the password alone still signs in."""
    assert api.factors() == before
    if not before["factors"]:
        assert before["two_factor_enabled"] is False
        other = Api(api.server)
        assert other.login(account.username)["status"] == "signed_in"
        other.close()


# ------------------------------------------------------------------------------------------- registration


def test_registration_needs_verified_access_sec43(server: AppServer) -> None:
    """SEC-43: adding a passkey needs access verified in this session; nothing is stored without it."""
    account = sign_up(server)
    api = Api(server)
    assert api.login(account.username)["status"] == "signed_in"

    r = api.post("/factors/passkey/options")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "verify_access_required"
    credential = account.auth.create(b"\x01" * 32)
    r = api.post("/factors/passkey", {"name": "", "credential": credential})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "verify_access_required"
    assert api.factors()["factors"] == []

    assert api.verify_with_password()["status"] == "verified"
    assert register(api, account).status_code == 201

    # A later session signed in with that passkey has not verified access either.
    later = sign_in(server, account)
    r = later.post("/factors/passkey/options")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "verify_access_required"


def test_registration_options_sec38(server: AppServer) -> None:
    """SEC-38: 32-byte distinct challenges, a stable 64-byte user.id without the username, the user's passkeys
    excluded, attestation none, ES256/EdDSA/RS256, resident key and user verification preferred."""
    account = sign_up(server)
    api = verified_session(server, account)
    first = api.options("/factors/passkey/options")
    second = api.options("/factors/passkey/options")

    challenges = {first["challenge"], second["challenge"]}
    assert len(challenges) == 2
    for options in (first, second):
        assert len(b64url_decode(options["challenge"])) == 32
        assert options["rp"]["id"] == RP_ID
        assert options["attestation"] == "none"
        assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
        assert all(p["type"] == "public-key" for p in options["pubKeyCredParams"])
        selection = options["authenticatorSelection"]
        assert selection["residentKey"] == "preferred"
        assert selection["userVerification"] == "preferred"
        assert options.get("excludeCredentials", []) == []
        assert 0 < options["timeout"] <= 600_000

    handle = b64url_decode(first["user"]["id"])
    assert handle == b64url_decode(second["user"]["id"])
    assert len(handle) == 64
    name = account.username.encode()
    assert name not in handle and name.upper() not in handle
    assert handle not in (hashlib.sha512(name).digest(), hashlib.sha512(name.upper()).digest())

    # Another account gets another handle; the handle survives registration; excluded credentials grow.
    other = verified_session(server, sign_up(server))
    assert other.options("/factors/passkey/options")["user"]["id"] != first["user"]["id"]

    assert register(api, account).status_code == 201
    assert account.user_handle == handle
    ids = [b64url(c) for c in account.auth.credentials]
    after = api.options("/factors/passkey/options")
    assert after["user"]["id"] == first["user"]["id"]
    assert [c["id"] for c in after["excludeCredentials"]] == ids
    assert all(c["type"] == "public-key" for c in after["excludeCredentials"])

    second_provider = new_authenticator(server)
    account.auth = second_provider
    assert register(api, account).status_code == 201
    ids.append(b64url(second_provider.last.credential_id))
    final = api.options("/factors/passkey/options")
    assert sorted(c["id"] for c in final["excludeCredentials"]) == sorted(ids)


def test_first_passkey_returns_ten_recovery_codes_once(server: AppServer) -> None:
    account = sign_up(server)
    api = verified_session(server, account)
    r = register(api, account)
    assert r.status_code == 201, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    overview = api.factors()
    assert overview["two_factor_enabled"] is True
    assert overview["recovery_codes_remaining"] == 10
    assert "recovery_codes" not in overview
    assert not any(code in api.get("/factors").text for code in codes)

    account.auth = new_authenticator(server)
    r = register(api, account)
    assert r.status_code == 201, r.text
    assert "recovery_codes" not in r.json()
    assert api.factors()["recovery_codes_remaining"] == 10


def test_empty_name_becomes_provider_name_or_passkey_n(server: AppServer) -> None:
    """An empty name: the provider's name from the AAGUID, else (unknown or taken) "Passkey N"."""
    account = sign_up(server, aaguid=uuid.UUID(ONEPASSWORD_AAGUID).bytes)
    api = verified_session(server, account)

    r = register(api, account, "")
    assert r.status_code == 201, r.text
    factor = r.json()["factor"]
    assert factor["name"] == "1Password"
    assert factor["authenticator"] == "1Password"

    account.auth = new_authenticator(server, aaguid=uuid.UUID(ONEPASSWORD_AAGUID).bytes)
    r = register(api, account, "")  # the provider name is taken now
    assert r.status_code == 201, r.text
    assert r.json()["factor"]["name"] == "Passkey 2"
    assert r.json()["factor"]["authenticator"] == "1Password"

    account.auth = new_authenticator(server, aaguid=uuid.uuid4().bytes)  # unknown provider
    r = register(api, account, "   ")
    assert r.status_code == 201, r.text
    assert r.json()["factor"]["name"] == "Passkey 3"
    assert r.json()["factor"]["authenticator"] is None

    account.auth = new_authenticator(server)
    r = register(api, account, "  Work   laptop ")
    assert r.status_code == 201, r.text
    assert r.json()["factor"]["name"] == "Work laptop"

    names = [f["name"] for f in api.factors()["factors"]]
    assert sorted(names) == sorted(["1Password", "Passkey 2", "Passkey 3", "Work laptop"])


def test_factor_list_shows_authenticator_and_synced(server: AppServer) -> None:
    """GET /factors: `authenticator` from the AAGUID, `synced` from the backup-state flag (also as it
    changes at sign-in); never the credential id or the public key."""
    account = sign_up(
        server, aaguid=uuid.UUID(ONEPASSWORD_AAGUID).bytes, backup_eligible=True, backup_state=True
    )
    api = verified_session(server, account)
    assert register(api, account, "synced one").status_code == 201
    synced = passkey_factor(api, account.factor_ids[0])
    assert synced["type"] == "passkey"
    assert synced["authenticator"] == "1Password"
    assert synced["synced"] is True

    account.auth = new_authenticator(server, backup_eligible=True, backup_state=False)
    assert register(api, account, "device bound").status_code == 201
    bound = passkey_factor(api, account.factor_ids[1])
    assert bound["authenticator"] is None
    assert bound["synced"] is False

    listing = api.get("/factors").text
    for credential in account.auth.credentials.values():
        assert b64url(credential.credential_id) not in listing
        assert b64url(credential.public_key) not in listing

    # The backup state follows the latest assertion (it may change; eligibility may not).
    client = pending_login(server, account)
    assert second_step(client, account, bs=True).status_code == 200
    assert passkey_factor(api, account.factor_ids[1])["synced"] is True


def test_wa_r15_credential_id_of_another_account_is_refused(server: AppServer) -> None:
    """WA-R15: Alice's credential id registered to Bob → 400, nothing stored for Bob, Alice's intact."""
    alice, alice_api = with_passkey(server, "alice")
    taken_id = alice.auth.last.credential_id
    alice_before = alice_api.factors()

    bob = sign_up(server, "bob")
    bob_api = verified_session(server, bob)
    bob_before = bob_api.factors()
    expect_rejected(register(bob_api, bob, "stolen", credential_id=taken_id), 400)
    _no_passkey_stored(bob_api, bob, bob_before)

    # Not even to Alice herself a second time, from another provider that ignores excludeCredentials.
    again = new_authenticator(server)
    options = alice_api.options("/factors/passkey/options")
    credential = again.create(options, credential_id=taken_id)
    expect_rejected(alice_api.post("/factors/passkey", {"name": "dup", "credential": credential}), 400)
    assert alice_api.factors() == alice_before

    assert sign_in(server, alice).session().json()["second_factor"] == "passkey"


def _assertion_instead(api: Api, account: Account, options: dict[str, Any]) -> dict[str, Any]:
    account.auth.create(b"\x00" * 32)  # a key the authenticator holds, never registered
    return account.auth.get(options)


RegistrationCase = Callable[[Api, Account, dict[str, Any]], dict[str, Any]]


def _create(**overrides: Any) -> RegistrationCase:
    def make(api: Api, account: Account, options: dict[str, Any]) -> dict[str, Any]:
        return account.auth.create(options, **overrides)

    return make


def _padded_challenge(api: Api, account: Account, options: dict[str, Any]) -> dict[str, Any]:
    return account.auth.create(options, challenge=options["challenge"] + "=")


def _standard_base64_challenge(api: Api, account: Account, options: dict[str, Any]) -> dict[str, Any]:
    raw = b64url_decode(options["challenge"])
    return account.auth.create(options, challenge=base64.b64encode(raw).decode())


def _port(server: Target) -> int:
    return urlsplit(server.url).port or 80


REGISTRATION_CASES: dict[str, RegistrationCase] = {
    "WA-R01 assertion posted": _assertion_instead,
    "WA-R03 type webauthn.get": _create(type="webauthn.get"),
    "WA-R04 padded challenge": _padded_challenge,
    "WA-R04 standard base64 challenge": _standard_base64_challenge,
    "WA-R04 random challenge": _create(challenge=b"\x07" * 32),
    "WA-R05 evil origin": _create(origin="https://evil.example"),
    "WA-R05 origin without port": _create(origin="http://localhost"),
    "WA-R05 https scheme": lambda api, account, options: account.auth.create(
        options, origin=f"https://localhost:{_port(api.server)}"
    ),
    "WA-R05 subdomain": lambda api, account, options: account.auth.create(
        options, origin=f"http://sub.localhost:{_port(api.server)}"
    ),
    "WA-R05 suffix domain": lambda api, account, options: account.auth.create(
        options, origin=f"http://localhost.evil.example:{_port(api.server)}"
    ),
    "WA-R06 crossOrigin": _create(cross_origin=True),
    "WA-R06 topOrigin": _create(top_origin="https://evil.example"),
    "WA-R07 rpIdHash of evil.example": _create(rp_id="evil.example"),
    "WA-R08 UP=0": _create(up=False),
    "WA-R10 BE=0 BS=1": _create(be=False, bs=True),
    "WA-R11 unrequested alg": _create(alg_label=-65535),
    "WA-R11 EC2 key labelled RS256": _create(alg_label=-257),
    "WA-R12 none with attStmt": _create(att_stmt={"sig": b"\x00"}),
    "WA-R12 packed with bad signature": _create(
        attestation="packed", mutate_signature=lambda s: flip_bit(s, -1)
    ),
    "WA-R14 1024-byte credential id": _create(credential_id_length=1024),
    "WA-R16 garbage extensions": _create(extensions=b"\xff\xfe"),
}


@pytest.mark.parametrize("case", list(REGISTRATION_CASES), ids=list(REGISTRATION_CASES))
def test_wa_r_rows_refused_with_nothing_stored_wa_r17(server: AppServer, case: str) -> None:
    """WA-R01/R03..R08/R10..R12/R14/R16 over HTTP: 400 passkey_rejected, never a 5xx, and (WA-R17) nothing
    stored. A valid registration afterwards in the same session proves the session itself was fine."""
    account = sign_up(server)
    api = verified_session(server, account)
    before = api.factors()
    options = api.options("/factors/passkey/options")
    credential = REGISTRATION_CASES[case](api, account, options)
    expect_rejected(api.post("/factors/passkey", {"name": "bad", "credential": credential}), 400)
    _no_passkey_stored(api, account, before)

    account.auth = new_authenticator(server)
    assert register(api, account, "good").status_code == 201


def test_wa_r17_failed_registration_leaves_existing_factors_unchanged(server: AppServer) -> None:
    """WA-R17 with a passkey already there: a refused second one changes nothing, not even the first."""
    account, api = with_passkey(server)
    registered = account.auth.last.credential_id
    before = api.factors()
    other = new_authenticator(server)  # another provider of the same user
    for name, overrides in (("evil", {"origin": "https://evil.example"}), ("up0", {"up": False})):
        credential = other.create(api.options("/factors/passkey/options"), **overrides)
        expect_rejected(api.post("/factors/passkey", {"name": name, "credential": credential}), 400)
    assert api.factors() == before
    # The refused credentials are not usable for sign-in either.
    refused = list(other.credentials)
    assert len(refused) == 2
    client = pending_login(server, account)
    options = client.options("/login/passkey/options")
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(registered)]
    for credential_id in refused:
        r = client.post("/login/passkey", {"credential": other.get(options, credential_id=credential_id)})
        expect_rejected(r, 401)
        options = client.options("/login/passkey/options")


def test_wa_r04_replayed_registration_is_refused(server: AppServer) -> None:
    """WA-R04: the accepted registration response posted again (with or without new options) → 400."""
    account = sign_up(server)
    api = verified_session(server, account)
    options = api.options("/factors/passkey/options")
    credential = account.auth.create(options)
    assert api.post("/factors/passkey", {"name": "", "credential": credential}).status_code == 201
    before = api.factors()

    expect_rejected(api.post("/factors/passkey", {"name": "again", "credential": credential}), 400)
    api.options("/factors/passkey/options")
    expect_rejected(api.post("/factors/passkey", {"name": "again", "credential": credential}), 400)
    assert api.factors() == before


def test_wa_r04_challenge_of_another_session_or_user_is_refused(server: AppServer) -> None:
    """WA-R04: a challenge issued to another session of the same user, to another user, or replaced by a
    newer one in this session, does not register."""
    account = sign_up(server)
    first = verified_session(server, account)
    second = verified_session(server, account)
    options_first = first.options("/factors/passkey/options")
    second.options("/factors/passkey/options")  # the second session has a challenge of its own
    credential = account.auth.create(options_first, store=False)
    expect_rejected(second.post("/factors/passkey", {"name": "x", "credential": credential}), 400)

    other = sign_up(server, "other")
    other_api = verified_session(server, other)
    options_other = other_api.options("/factors/passkey/options")
    first.options("/factors/passkey/options")
    credential = account.auth.create(options_other, store=False)
    expect_rejected(first.post("/factors/passkey", {"name": "y", "credential": credential}), 400)

    stale = first.options("/factors/passkey/options")
    first.options("/factors/passkey/options")  # replaces the stale one
    credential = account.auth.create(stale, store=False)
    expect_rejected(first.post("/factors/passkey", {"name": "z", "credential": credential}), 400)

    assert first.factors()["factors"] == []
    assert other_api.factors()["factors"] == []
    assert register(first, account).status_code == 201


def test_wa_r04_expired_registration_challenge_sec38(
    server: AppServer, clock: Callable[[float], None]
) -> None:
    """WA-R04 / SEC-38: finishing a registration more than 5 minutes after its options → 400."""
    account = sign_up(server)
    api = verified_session(server, account)
    options = api.options("/factors/passkey/options")
    credential = account.auth.create(options)
    clock(CHALLENGE_TTL + 1)
    expect_rejected(api.post("/factors/passkey", {"name": "late", "credential": credential}), 400)
    assert api.factors()["factors"] == []

    # Within the 5 minutes it is accepted (access verified again, as 10 minutes would pass meanwhile).
    assert api.verify_with_password()["status"] == "verified"
    options = api.options("/factors/passkey/options")
    clock(2 * CHALLENGE_TTL - 10)
    credential = account.auth.create(options)
    assert api.post("/factors/passkey", {"name": "in time", "credential": credential}).status_code == 201


# ------------------------------------------------------------------------------------------- second step


def test_second_step_with_a_passkey_signs_in(server: AppServer) -> None:
    """The happy path: /login lists "passkey"; the options list only this user's credential with user
    verification preferred; the assertion signs in, rotates the cookie and records the use."""
    account, api = with_passkey(server)
    client = pending_login(server, account)
    pending_cookie = client.http.cookies.get("twostep_session")
    assert client.session().status_code == 401  # a pending sign-in is not signed in
    options = client.options("/login/passkey/options")
    assert len(b64url_decode(options["challenge"])) == 32
    assert options["rpId"] == RP_ID
    assert options["userVerification"] == "preferred"
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(account.auth.last.credential_id)]

    r = client.post("/login/passkey", {"credential": account.auth.get(options, uv=False)})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "signed_in"}
    assert client.http.cookies.get("twostep_session") != pending_cookie
    session = client.session().json()
    assert session["username"] == account.username
    assert session["second_factor"] == "passkey"
    assert session["access_verified_until"] is None
    assert passkey_factor(api, account.factor_ids[0])["last_used_at"] is not None


def test_wa_a02_credential_not_in_allow_list_is_refused(server: AppServer) -> None:
    """WA-A02: a validly signed assertion from a credential not in allowCredentials (another account's
    passkey, or one never registered) is refused; the pending sign-in then still works with the right one."""
    alice, _ = with_passkey(server, "alice")
    carol, _ = with_passkey(server, "carol")
    client = pending_login(server, alice)
    options = client.options("/login/passkey/options")
    carol_id = carol.auth.last.credential_id
    assert b64url(carol_id) not in [c["id"] for c in options["allowCredentials"]]

    r = client.post(
        "/login/passkey", {"credential": carol.auth.get(options, credential_id=carol_id, user_handle=OMIT)}
    )
    expect_rejected(r, 401)
    assert client.session().status_code == 401

    unregistered = alice.auth.create(b"\x01" * 32, user_handle=alice.user_handle)
    options = client.options("/login/passkey/options")
    credential = alice.auth.get(options, credential_id=b64url_decode(unregistered["rawId"]))
    expect_rejected(client.post("/login/passkey", {"credential": credential}), 401)
    assert client.session().status_code == 401

    options = client.options("/login/passkey/options")
    alice_id = b64url_decode(options["allowCredentials"][0]["id"])
    r = client.post("/login/passkey", {"credential": alice.auth.get(options, credential_id=alice_id)})
    assert r.status_code == 200, r.text


def test_wa_a02_passkey_added_after_the_options_is_not_in_their_list(server: AppServer) -> None:
    """WA-A02 strictly: the options of a pending sign-in list C1; Alice then adds C2 in another session; an
    assertion from C2 on that challenge is not from a listed credential and is refused."""
    alice, manager = with_passkey(server, "alice")
    client = pending_login(server, alice)
    options = client.options("/login/passkey/options")
    listed = [c["id"] for c in options["allowCredentials"]]

    alice.auth = new_authenticator(server)
    assert register(manager, alice, "added later").status_code == 201
    added = alice.auth.last.credential_id
    assert b64url(added) not in listed
    r = client.post("/login/passkey", {"credential": alice.auth.get(options, credential_id=added)})
    expect_rejected(r, 401)
    assert client.session().status_code == 401


def test_wa_a03_a04_bobs_assertion_or_handle_in_alices_pending_login(server: AppServer) -> None:
    """WA-A03: Bob's credential and assertion inside Alice's pending sign-in; WA-A04: Alice's own credential
    with Bob's user handle (and Bob's credential with Alice's handle). All refused; no session; Alice's
    passkey is not marked used."""
    alice, alice_api = with_passkey(server, "alice")
    bob, bob_api = with_passkey(server, "bob")
    client = pending_login(server, alice)
    alice_id = alice.auth.last.credential_id
    bob_id = bob.auth.last.credential_id

    options = client.options("/login/passkey/options")
    expect_rejected(
        client.post("/login/passkey", {"credential": bob.auth.get(options, credential_id=bob_id)}), 401
    )

    options = client.options("/login/passkey/options")
    wrong_handle = alice.auth.get(options, credential_id=alice_id, user_handle=bob.user_handle)
    expect_rejected(client.post("/login/passkey", {"credential": wrong_handle}), 401)

    options = client.options("/login/passkey/options")
    mixed = bob.auth.get(options, credential_id=bob_id, user_handle=alice.user_handle)
    expect_rejected(client.post("/login/passkey", {"credential": mixed}), 401)

    assert client.session().status_code == 401
    assert passkey_factor(alice_api, alice.factor_ids[0])["last_used_at"] is None
    assert passkey_factor(bob_api, bob.factor_ids[0])["last_used_at"] is None
    r = second_step(client, alice)
    assert r.status_code == 200, r.text
    assert client.session().json()["username"] == alice.username


def test_wa_a06_replayed_assertion_is_refused(server: AppServer) -> None:
    """WA-A06: an accepted assertion posted again, in a new pending sign-in (with and without new options)."""
    account, _ = with_passkey(server)
    first = pending_login(server, account)
    options = first.options("/login/passkey/options")
    accepted = account.auth.get(options)
    assert first.post("/login/passkey", {"credential": accepted}).status_code == 200
    # In the same, now signed-in, client (which has no challenge any more).
    expect_rejected(first.post("/login/passkey", {"credential": accepted}), 401)

    again = pending_login(server, account)
    expect_rejected(again.post("/login/passkey", {"credential": accepted}), 401)
    again.options("/login/passkey/options")
    expect_rejected(again.post("/login/passkey", {"credential": accepted}), 401)
    assert again.session().status_code == 401


def test_wa_a06_challenge_of_another_session_is_refused(server: AppServer) -> None:
    """WA-A06: the answer to one pending sign-in's challenge does not finish another one."""
    account, _ = with_passkey(server)
    one = pending_login(server, account)
    two = pending_login(server, account)
    options_one = one.options("/login/passkey/options")
    two.options("/login/passkey/options")
    answer = account.auth.get(options_one)
    expect_rejected(two.post("/login/passkey", {"credential": answer}), 401)
    assert two.session().status_code == 401
    # Where it belongs it works (its counter is still ahead of the stored one).
    r = one.post("/login/passkey", {"credential": answer})
    assert r.status_code == 200, r.text


def test_wa_a06_expired_challenges_are_refused(server: AppServer, clock: Callable[[float], None]) -> None:
    """WA-A06: more than 5 minutes after the options, the assertion is refused: for the second step, for a
    passwordless sign-in and for verify access (these last two have no pending sign-in that could expire)."""
    account, _ = with_passkey(server)
    signed_in = sign_in(server, account)

    second = pending_login(server, account)
    second_options = second.options("/login/passkey/options")
    passwordless = Api(server)
    passwordless_options = passwordless.options("/login/passkey/options")
    verify_options = signed_in.options("/verify-access/passkey/options")

    clock(CHALLENGE_TTL + 1)
    expect_rejected(second.post("/login/passkey", {"credential": account.auth.get(second_options)}), 401)
    expect_rejected(
        passwordless.post("/login/passkey", {"credential": account.auth.get(passwordless_options)}), 401
    )
    expect_rejected(
        signed_in.post("/verify-access/passkey", {"credential": account.auth.get(verify_options)}), 401
    )
    assert passwordless.session().status_code == 401
    assert signed_in.session().json()["access_verified_until"] is None

    # Fresh challenges at the same (moved) time work.
    r = passwordless.post(
        "/login/passkey", {"credential": account.auth.get(passwordless.options("/login/passkey/options"))}
    )
    assert r.status_code == 200, r.text
    verify = signed_in.options("/verify-access/passkey/options")
    r = signed_in.post("/verify-access/passkey", {"credential": account.auth.get(verify)})
    assert r.status_code == 200, r.text


def test_wa_a15_counter_that_goes_backwards_is_refused_and_recorded(server: AppServer) -> None:
    """WA-A15 / §0.5: stored 10, assertion 5 or 10 → refused with a `passkey_counter_regressed` security
    event; 11 → accepted."""
    account, api = with_passkey(server, sign_count_start=10)
    client = pending_login(server, account)
    expect_rejected(second_step(client, account, sign_count=5), 401)
    expect_rejected(second_step(client, account, sign_count=10), 401)
    assert client.session().status_code == 401

    events = [e for e in api.security_events() if e["type"] == "passkey_counter_regressed"]
    assert len(events) == 2
    assert {(e["detail"]["stored"], e["detail"]["received"]) for e in events} == {(10, 5), (10, 10)}
    assert passkey_factor(api, account.factor_ids[0])["last_used_at"] is None

    r = second_step(client, account, sign_count=11)
    assert r.status_code == 200, r.text


def test_wa_a15_zero_counters_are_accepted_for_synced_passkeys(server: AppServer) -> None:
    """§0.5: 0 and 0 is accepted, again and again (synced passkeys do not count)."""
    account, _ = with_passkey(server, sign_count_step=0, backup_eligible=True, backup_state=True)
    for _ in range(3):
        assert sign_in(server, account).session().json()["second_factor"] == "passkey"


def test_wa_a16_failed_assertion_changes_nothing(server: AppServer) -> None:
    """WA-A16: failed assertions with a high counter (bad signature; validly signed but wrong origin) leave
    last_used_at and the counter as they were: a later assertion with counter 1 is still accepted."""
    account, api = with_passkey(server)
    client = pending_login(server, account)
    bad_signature = {"sign_count": 100, "mutate_signature": lambda s: flip_bit(s, -1)}
    expect_rejected(second_step(client, account, **bad_signature), 401)
    expect_rejected(second_step(client, account, sign_count=100, origin="https://evil.example"), 401)
    expect_rejected(second_step(client, account, sign_count=100, uv=False, up=False), 401)
    assert passkey_factor(api, account.factor_ids[0])["last_used_at"] is None

    assert second_step(client, account, sign_count=1).status_code == 200
    used = passkey_factor(api, account.factor_ids[0])["last_used_at"]
    assert used is not None

    client = pending_login(server, account)
    expect_rejected(second_step(client, account, sign_count=100, rp_id="evil.example"), 401)
    assert passkey_factor(api, account.factor_ids[0])["last_used_at"] == used
    assert second_step(client, account, sign_count=2).status_code == 200


AssertionCase = Callable[[Account, dict[str, Any]], dict[str, Any]]


def _get(**overrides: Any) -> AssertionCase:
    def make(account: Account, options: dict[str, Any]) -> dict[str, Any]:
        return account.auth.get(options, **overrides)

    return make


def _attestation_instead(account: Account, options: dict[str, Any]) -> dict[str, Any]:
    return account.auth.create(
        options["challenge"], credential_id=account.auth.last.credential_id, store=False
    )


def _tampered(field: str, index: int) -> AssertionCase:
    def make(account: Account, options: dict[str, Any]) -> dict[str, Any]:
        return tamper(account.auth.get(options), field, lambda b: flip_bit(b, index))

    return make


ASSERTION_CASES: dict[str, AssertionCase] = {
    "WA-A01 attestation posted": _attestation_instead,
    "WA-A05 type webauthn.create": _get(type="webauthn.create"),
    "WA-A07 evil origin": _get(origin="https://evil.example"),
    "WA-A07 origin without port": _get(origin="http://localhost"),
    "WA-A08 crossOrigin": _get(cross_origin=True),
    "WA-A08 topOrigin": _get(top_origin="https://evil.example"),
    "WA-A09 rpIdHash of evil.example": _get(rp_id="evil.example"),
    "WA-A10 UP=0": _get(up=False),
    "WA-A12 BE=0 BS=1": _get(be=False, bs=True),
    "WA-A14 flipped signature bit": _get(mutate_signature=lambda s: flip_bit(s, -1)),
    "WA-A14 flipped authenticatorData bit": _tampered("authenticatorData", 36),
    "WA-A14 truncated signature": _get(mutate_signature=lambda s: s[:-3]),
    "WA-A14 signed by another key": _get(signing_key=generate_private_key()),
}


@pytest.mark.slow  # a first passkey, with its ten argon2id recovery codes, for each of the rows
@pytest.mark.parametrize("case", list(ASSERTION_CASES), ids=list(ASSERTION_CASES))
def test_wa_a_rows_refused_in_the_second_step(server: AppServer, case: str) -> None:
    """WA-A01/A05/A07..A10/A12..A14 over HTTP: 401 passkey_rejected, never a 5xx, no session, the passkey
    not marked used; the same pending sign-in then finishes with a good assertion."""
    account, api = with_passkey(server)
    client = pending_login(server, account)
    options = client.options("/login/passkey/options")
    credential = ASSERTION_CASES[case](account, options)
    expect_rejected(client.post("/login/passkey", {"credential": credential}), 401)
    assert client.session().status_code == 401
    assert passkey_factor(api, account.factor_ids[0])["last_used_at"] is None
    assert second_step(client, account, sign_count=500).status_code == 200


@pytest.mark.parametrize("stored", [True, False], ids=["synced-now-device-bound", "device-bound-now-synced"])
def test_WA_A13_a_change_of_backup_eligibility_is_recorded_and_stored_not_refused(
    server: AppServer, stored: bool
) -> None:
    """WA-A13 (docs/security.md, issue 17): a passkey whose BE flag flips still signs in; the change is a
    security event (no e-mail) and the new flag is stored, so the next assertion is no change."""
    account, _ = with_passkey(server, backup_eligible=stored, backup_state=stored)
    client = pending_login(server, account)
    r = second_step(client, account, be=not stored, bs=False)
    assert r.status_code == 200, r.text
    changed = [e for e in client.security_events() if e["type"] == "passkey_backup_eligibility_changed"]
    assert len(changed) == 1
    assert changed[0]["detail"] == {"factor_id": account.factor_ids[0], "backup_eligible": not stored}
    again = pending_login(server, account)
    assert second_step(again, account, be=not stored, bs=False).status_code == 200
    events = again.security_events()
    assert sum(e["type"] == "passkey_backup_eligibility_changed" for e in events) == 1


# --------------------------------------------------------------------------------- passwordless, verify


def test_passwordless_sign_in_requires_user_verification_wa_a11(server: AppServer) -> None:
    """Without a pending sign-in the options are a discoverable request with user verification required,
    bound to a `twostep_ceremony` cookie; UV=0 or no user handle → refused; UV=1 → signed in."""
    account, _ = with_passkey(server)
    client = Api(server)
    options = client.options("/login/passkey/options")
    assert options["userVerification"] == "required"
    assert options.get("allowCredentials", []) == []
    assert len(b64url_decode(options["challenge"])) == 32
    assert client.http.cookies.get("twostep_ceremony")

    expect_rejected(client.post("/login/passkey", {"credential": account.auth.get(options, uv=False)}), 401)
    assert client.session().status_code == 401
    options = client.options("/login/passkey/options")
    credential = account.auth.get(options, user_handle=OMIT)
    expect_rejected(client.post("/login/passkey", {"credential": credential}), 401)

    # The answer to this client's challenge, posted by another client (no ceremony cookie, or its own).
    options = client.options("/login/passkey/options")
    answer = account.auth.get(options)
    thief = Api(server)
    expect_rejected(thief.post("/login/passkey", {"credential": answer}), 401)
    thief.options("/login/passkey/options")
    expect_rejected(thief.post("/login/passkey", {"credential": answer}), 401)
    assert thief.session().status_code == 401

    r = client.post("/login/passkey", {"credential": answer})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "signed_in"}
    session = client.session().json()
    assert session["username"] == account.username
    assert session["second_factor"] == "passkey"


def test_passwordless_with_another_users_handle_is_refused(server: AppServer) -> None:
    """WA-A04 for passwordless: Alice's credential with Bob's user handle is nobody's sign-in."""
    alice, _ = with_passkey(server, "alice")
    bob, _ = with_passkey(server, "bob")
    client = Api(server)
    options = client.options("/login/passkey/options")
    credential = alice.auth.get(options, user_handle=bob.user_handle)
    expect_rejected(client.post("/login/passkey", {"credential": credential}), 401)
    assert client.session().status_code == 401


def test_verify_access_with_a_passkey_alone(server: AppServer) -> None:
    """§0.6: a passkey with user verification verifies access without the password; UV=0 does not. Then a
    sensitive call works."""
    account, _ = with_passkey(server)
    client = sign_in(server, account)
    r = client.post("/recovery-codes")
    assert r.status_code == 403 and r.json()["error"] == "verify_access_required", r.text

    options = client.options("/verify-access/passkey/options")
    assert options["userVerification"] == "required"
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(account.auth.last.credential_id)]
    r = client.post("/verify-access/passkey", {"credential": account.auth.get(options, uv=False)})
    expect_rejected(r, 401)
    assert client.post("/recovery-codes").status_code == 403

    before = client.http.cookies.get("twostep_session")
    options = client.options("/verify-access/passkey/options")
    r = client.post("/verify-access/passkey", {"credential": account.auth.get(options)})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verified" and r.json()["verified_until"]
    assert client.http.cookies.get("twostep_session") != before
    assert client.session().json()["access_verified_until"] is not None
    r = client.post("/recovery-codes")
    assert r.status_code == 201, r.text
    assert len(r.json()["recovery_codes"]) == 10


def test_verify_access_with_password_then_passkey_without_uv(server: AppServer) -> None:
    """§0.6: after the password step the passkey is a second factor: user verification preferred."""
    account, _ = with_passkey(server)
    client = sign_in(server, account)
    body = client.verify_with_password()
    assert body["status"] == "second_factor_required" and "passkey" in body["methods"]
    options = client.options("/verify-access/passkey/options")
    assert options["userVerification"] == "preferred"
    r = client.post("/verify-access/passkey", {"credential": account.auth.get(options, uv=False)})
    assert r.status_code == 200, r.text
    assert client.post("/factors/passkey/options").status_code == 200


def test_verify_access_with_another_users_passkey_is_refused(server: AppServer) -> None:
    """WA-A03 for verify access: Bob's passkey does not verify Alice's session."""
    alice, _ = with_passkey(server, "alice")
    bob, _ = with_passkey(server, "bob")
    client = sign_in(server, alice)
    options = client.options("/verify-access/passkey/options")
    r = client.post(
        "/verify-access/passkey",
        {"credential": bob.auth.get(options, credential_id=bob.auth.last.credential_id)},
    )
    expect_rejected(r, 401)
    assert client.session().json()["access_verified_until"] is None


# ---------------------------------------------------------------------------------------------- lifecycle


def test_sec42_alice_cannot_rename_or_delete_bobs_passkey(server: AppServer) -> None:
    """SEC-42 / SEC-60: Bob's factor id in Alice's verified session → 404; Bob's passkey intact and usable."""
    alice, alice_api = with_passkey(server, "alice")
    bob, bob_api = with_passkey(server, "bob", name="Bob's key")
    bob_id = bob.factor_ids[0]
    bob_before = bob_api.factors()

    r = alice_api.patch(f"/factors/{bob_id}", {"name": "mine now"})
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    r = alice_api.delete(f"/factors/{bob_id}")
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text

    assert bob_api.factors() == bob_before
    assert sign_in(server, bob).session().json()["username"] == bob.username
    # Alice can rename her own (a positive control for the 404s above).
    r = alice_api.patch(f"/factors/{alice.factor_ids[0]}", {"name": "Alice's key"})
    assert r.status_code == 200, r.text
    assert r.json()["factor"]["name"] == "Alice's key"


def test_sec42_removed_passkey_stops_working_for_a_pending_login_that_listed_it(server: AppServer) -> None:
    """SEC-42: Alice removes passkey C in another session while a pending sign-in has C in its options →
    C is refused at once; her other passkey still signs that pending sign-in in."""
    alice, manager = with_passkey(server, "alice")
    first_id = alice.auth.last.credential_id
    first_provider = alice.auth
    alice.auth = new_authenticator(server)  # a second passkey, from a second provider
    assert register(manager, alice, "second").status_code == 201
    second_id = alice.auth.last.credential_id
    first_provider.add_credential(second_id, alice.auth.last.private_key, user_handle=alice.user_handle)
    alice.auth = first_provider  # now holds both keys

    client = pending_login(server, alice)
    options = client.options("/login/passkey/options")
    assert {c["id"] for c in options["allowCredentials"]} == {b64url(first_id), b64url(second_id)}
    answer = alice.auth.get(options, credential_id=first_id)

    assert manager.delete(f"/factors/{alice.factor_ids[0]}").status_code == 204
    expect_rejected(client.post("/login/passkey", {"credential": answer}), 401)
    assert client.session().status_code == 401

    options = client.options("/login/passkey/options")
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(second_id)]
    r = client.post("/login/passkey", {"credential": alice.auth.get(options, credential_id=second_id)})
    assert r.status_code == 200, r.text


def test_sec42_removing_the_only_passkey_ends_passwordless_and_pending_use(server: AppServer) -> None:
    """SEC-42 / SEC-46: the last passkey removed → two-step off; its assertions fail everywhere at once."""
    account, manager = with_passkey(server)
    pending = pending_login(server, account)
    pending_options = pending.options("/login/passkey/options")
    passwordless = Api(server)
    passwordless_options = passwordless.options("/login/passkey/options")

    assert manager.delete(f"/factors/{account.factor_ids[0]}").status_code == 204
    assert manager.factors()["two_factor_enabled"] is False

    expect_rejected(pending.post("/login/passkey", {"credential": account.auth.get(pending_options)}), 401)
    expect_rejected(
        passwordless.post("/login/passkey", {"credential": account.auth.get(passwordless_options)}), 401
    )
    assert pending.session().status_code == 401
    assert passwordless.session().status_code == 401


def test_sec06_unknown_credential_and_bad_signature_look_the_same(server: AppServer) -> None:
    """SEC-06: unknown credential, bad signature, another user's handle, another account's passkey and a
    used-up challenge all answer with one status and one body."""
    alice, _ = with_passkey(server, "alice")
    bob, _ = with_passkey(server, "bob")
    client = pending_login(server, alice)
    stranger = new_authenticator(server)
    stranger.create(b"\x02" * 32, user_handle=alice.user_handle)

    def attempt(make: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, bytes]:
        options = client.options("/login/passkey/options")
        r = client.post("/login/passkey", {"credential": make(options)})
        assert r.status_code < 500, r.text
        return r.status_code, r.content

    answers = {
        "unknown credential": attempt(lambda o: stranger.get(o["challenge"])),
        "bad signature": attempt(lambda o: alice.auth.get(o, mutate_signature=lambda s: flip_bit(s, -1))),
        "another user's handle": attempt(lambda o: alice.auth.get(o, user_handle=bob.user_handle)),
        "another account's passkey": attempt(lambda o: bob.auth.get(o["challenge"])),
    }
    used = client.post(
        "/login/passkey", {"credential": alice.auth.get(client.options("/login/passkey/options"))}
    )
    assert used.status_code == 200
    # The challenge is used up and the pending sign-in is gone; a second pending sign-in with no options:
    late = pending_login(server, alice)
    r = late.post("/login/passkey", {"credential": alice.auth.get(b"\x03" * 32)})
    answers["no challenge"] = (r.status_code, r.content)

    assert len(set(answers.values())) == 1, answers
    status, body = next(iter(answers.values()))
    assert status == 401
    assert b"passkey_rejected" in body


def test_sec61_an_authenticator_app_user_can_add_a_passkey(
    server: AppServer, clock: Callable[[float], None]
) -> None:
    """SEC-61: a user with TOTP signs in with it, verifies access (password and TOTP) and adds a passkey
    (no new recovery codes); sign-in then offers and accepts the passkey."""
    account = sign_up(server)
    api = verified_session(server, account)
    r = api.post("/factors/totp")
    assert r.status_code == 201, r.text
    enrollment = r.json()
    totp = pyotp.TOTP(enrollment["secret"])
    r = api.post(
        f"/factors/totp/{enrollment['enrollment_id']}/confirm", {"name": "phone", "code": totp.now()}
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["recovery_codes"]) == 10

    clock(35)  # the next time step: a code is accepted once
    client = Api(server)
    body = client.login(account.username)
    assert body["status"] == "second_factor_required" and "passkey" not in body["methods"]
    r = client.post("/login/totp", {"code": totp.at(time.time() + 35)})
    assert r.status_code == 200, r.text
    assert client.post("/factors/passkey/options").status_code == 403

    clock(70)
    assert client.verify_with_password()["status"] == "second_factor_required"
    r = client.post("/verify-access/totp", {"code": totp.at(time.time() + 70)})
    assert r.status_code == 200, r.text
    r = register(client, account, "")
    assert r.status_code == 201, r.text
    assert "recovery_codes" not in r.json()
    assert {f["type"] for f in client.factors()["factors"]} == {"totp", "passkey"}

    later = Api(server)
    assert set(later.login(account.username)["methods"]) == {"totp", "passkey", "recovery_code"}
    assert second_step(later, account).status_code == 200
