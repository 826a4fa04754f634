"""WebAuthn core: SEC-38 options, SEC-39 (WA-R*) registration and SEC-40 (WA-A*) assertion checks.

Every negative case is validly signed by the software authenticator, so it exercises the intended check and
not the signature check. ``pytest.raises(PasskeyRegistrationRejected/PasskeyRejected)`` also proves that no
other exception type escapes. Database-level rows (WA-R15, WA-R17, WA-A02..A04, WA-A06 replay/expiry, WA-A16)
are tested at the service level.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.soft_authenticator import (
    EDDSA,
    ES256,
    OMIT,
    RS256,
    SoftAuthenticator,
    b64url,
    b64url_decode,
    flip_bit,
    generate_private_key,
    tamper,
)
from twostep.core import passkeys
from twostep.core.errors import PasskeyRegistrationRejected, PasskeyRejected
from twostep.core.passkeys import (
    CHALLENGE_BYTES,
    MAX_CREDENTIAL_ID_BYTES,
    TIMEOUT_MS,
    USER_HANDLE_BYTES,
    RegisteredPasskey,
    SignCountRegression,
    VerifiedAssertion,
    authentication_options,
    credential_id_of,
    generate_user_handle,
    provider_name,
    registration_options,
    user_handle_of,
    verify_authentication,
    verify_registration,
)

RP_ID = "twostep.example"
ORIGIN = "https://twostep.example"
VECTOR = json.loads((Path(__file__).parents[1] / "data" / "webauthn_es256_none_vector.json").read_text())

# A challenge whose base64url spelling contains "-" and "_", so the standard-base64 spelling differs.
TRICKY_CHALLENGE = bytes([0xFB, 0xFF, 0xBF]) * 10 + b"\xfb\xff"
assert "-" in b64url(TRICKY_CHALLENGE) and "_" in b64url(TRICKY_CHALLENGE)


# ---------------------------------------------------------------------------------------------------- helpers


def new_authenticator(**kwargs: Any) -> SoftAuthenticator:
    return SoftAuthenticator(RP_ID, ORIGIN, **kwargs)


def options_for(
    user_handle: bytes | None = None, exclude: list[bytes] | None = None
) -> passkeys.CeremonyOptions:
    return registration_options(
        rp_id=RP_ID,
        rp_name="twostep",
        user_handle=user_handle or generate_user_handle(),
        username="alice",
        display_name="Alice",
        exclude_credential_ids=exclude or [],
    )


def register(credential: object, challenge: bytes, **kwargs: Any) -> RegisteredPasskey:
    return verify_registration(
        credential=credential,
        expected_challenge=challenge,
        expected_origin=kwargs.pop("origin", ORIGIN),
        expected_rp_id=kwargs.pop("rp_id", RP_ID),
        **kwargs,
    )


def refused_registration(auth: SoftAuthenticator, *, require_uv: bool = False, **overrides: Any) -> None:
    challenge = secrets.token_bytes(32)
    credential = auth.create(challenge, user_handle=b"u" * 64, store=False, **overrides)
    with pytest.raises(PasskeyRegistrationRejected):
        register(credential, challenge, require_user_verification=require_uv)


def enrolled(**kwargs: Any) -> tuple[SoftAuthenticator, RegisteredPasskey]:
    auth = new_authenticator(**kwargs)
    options = options_for()
    passkey = register(auth.create(options.options), options.challenge)
    return auth, passkey


def assert_(
    credential: object,
    challenge: bytes,
    passkey: RegisteredPasskey,
    *,
    stored_sign_count: int | None = None,
    stored_backup_eligible: bool | None = None,
    require_uv: bool = False,
    origin: str = ORIGIN,
    rp_id: str = RP_ID,
) -> VerifiedAssertion:
    return verify_authentication(
        credential=credential,
        expected_challenge=challenge,
        expected_origin=origin,
        expected_rp_id=rp_id,
        public_key=passkey.public_key,
        stored_sign_count=passkey.sign_count if stored_sign_count is None else stored_sign_count,
        stored_backup_eligible=(
            passkey.backup_eligible if stored_backup_eligible is None else stored_backup_eligible
        ),
        require_user_verification=require_uv,
    )


def refused_assertion(
    auth: SoftAuthenticator, passkey: RegisteredPasskey, *, require_uv: bool = False, **overrides: Any
) -> PasskeyRejected:
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge, **overrides)
    with pytest.raises(PasskeyRejected) as caught:
        assert_(credential, challenge, passkey, require_uv=require_uv)
    return caught.value


def vector_registration() -> dict[str, Any]:
    reg = VECTOR["registration"]
    cid = VECTOR["credential_id_b64url"]
    return {
        "id": cid,
        "rawId": cid,
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(bytes.fromhex(reg["clientDataJSON_hex"])),
            "attestationObject": b64url(bytes.fromhex(reg["attestationObject_hex"])),
            "transports": ["internal"],
        },
        "clientExtensionResults": {},
    }


def vector_assertion() -> dict[str, Any]:
    auth = VECTOR["authentication"]
    cid = VECTOR["credential_id_b64url"]
    return {
        "id": cid,
        "rawId": cid,
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(bytes.fromhex(auth["clientDataJSON_hex"])),
            "authenticatorData": b64url(bytes.fromhex(auth["authenticatorData_hex"])),
            "signature": b64url(bytes.fromhex(auth["signature_hex"])),
        },
        "clientExtensionResults": {},
    }


# ---------------------------------------------------------------------------------------- SEC-38 options


def test_SEC_38_registration_options_are_generated_safely() -> None:
    handle = generate_user_handle()
    existing = [b"\x01" * 16, b"\x02" * 40]
    first = options_for(handle, existing)
    second = options_for(handle, existing)
    assert len(handle) == USER_HANDLE_BYTES == 64
    assert len(first.challenge) == len(second.challenge) == CHALLENGE_BYTES == 32
    assert first.challenge != second.challenge
    opts = first.options
    assert opts["challenge"] == b64url(first.challenge)
    assert opts["user"] == {"id": b64url(handle), "name": "alice", "displayName": "Alice"}
    assert opts["rp"] == {"id": RP_ID, "name": "twostep"}
    assert opts["attestation"] == "none"
    assert opts["timeout"] == TIMEOUT_MS == 300_000
    assert [p["alg"] for p in opts["pubKeyCredParams"]] == [-7, -8, -257]  # type: ignore[attr-defined]
    assert {p["type"] for p in opts["pubKeyCredParams"]} == {"public-key"}  # type: ignore[attr-defined]
    assert opts["excludeCredentials"] == [{"id": b64url(c), "type": "public-key"} for c in existing]
    selection = opts["authenticatorSelection"]
    assert selection["residentKey"] == "preferred"  # type: ignore[index]
    assert selection["userVerification"] == "preferred"  # type: ignore[index]
    json.dumps(opts)  # JSON-ready


def test_SEC_38_user_handles_are_random_and_distinct() -> None:
    handles = {generate_user_handle() for _ in range(20)}
    assert len(handles) == 20 and all(len(h) == 64 for h in handles)


def test_SEC_38_authentication_options_second_step_and_passwordless() -> None:
    cid = b"\x05" * 32
    second = authentication_options(
        rp_id=RP_ID, allow_credentials=[(cid, ["internal", "bogus", "hybrid"])], user_verification="preferred"
    )
    assert len(second.challenge) == 32
    assert second.options["challenge"] == b64url(second.challenge)
    assert second.options["rpId"] == RP_ID
    assert second.options["timeout"] == 300_000
    assert second.options["userVerification"] == "preferred"
    assert second.options["allowCredentials"] == [
        {"id": b64url(cid), "type": "public-key", "transports": ["internal", "hybrid"]}
    ]
    passwordless = authentication_options(rp_id=RP_ID, allow_credentials=[], user_verification="required")
    assert passwordless.options["userVerification"] == "required"
    assert passwordless.options.get("allowCredentials", []) == []
    assert passwordless.challenge != second.challenge
    json.dumps(second.options)
    with pytest.raises(ValueError):
        authentication_options(rp_id=RP_ID, allow_credentials=[], user_verification="sometimes")


def test_SEC_38_soft_authenticator_honours_exclude_credentials() -> None:
    auth, passkey = enrolled()
    options = options_for(exclude=[passkey.credential_id])
    with pytest.raises(Exception, match="InvalidStateError"):
        auth.create(options.options)


# ---------------------------------------------------------------------------------- registration happy paths


def test_registration_happy_path_es256() -> None:
    auth = new_authenticator(transports=["internal", "hybrid", "unknown"])
    options = options_for()
    credential = auth.create(options.options)
    passkey = register(credential, options.challenge)
    assert passkey.credential_id == auth.last.credential_id
    assert passkey.algorithm == ES256
    assert passkey.public_key == auth.last.public_key
    assert passkey.sign_count == 0
    assert passkey.aaguid == "00000000-0000-0000-0000-000000000000"
    assert (passkey.backup_eligible, passkey.backup_state, passkey.user_verified) == (False, False, True)
    assert passkey.transports == ["internal", "hybrid"]
    assert auth.last.user_handle == b64url_decode(options.options["user"]["id"])  # type: ignore[index]
    assert credential_id_of(credential) == passkey.credential_id


@pytest.mark.parametrize("algorithm", [EDDSA, RS256])
def test_registration_happy_path_other_algorithms(algorithm: int) -> None:
    auth = new_authenticator(algorithm=algorithm, backup_eligible=True, backup_state=True)
    options = options_for()
    passkey = register(auth.create(options.options), options.challenge)
    assert passkey.algorithm == algorithm
    assert passkey.backup_eligible and passkey.backup_state
    challenge = secrets.token_bytes(32)
    result = assert_(auth.get(challenge), challenge, passkey)
    assert result.new_sign_count == 1


def test_registration_accepts_json_text_and_aaguid_and_bom() -> None:
    aaguid = bytes.fromhex("fbfc3007154e4ecc8c0b6e020557d7bd")
    auth = new_authenticator(aaguid=aaguid)
    challenge = secrets.token_bytes(32)
    passkey = register(json.dumps(auth.create(challenge, user_handle=b"h" * 64)), challenge)
    assert passkey.aaguid == "fbfc3007-154e-4ecc-8c0b-6e020557d7bd"
    assert provider_name(passkey.aaguid) == "Apple Passwords"
    # WA-R02: "decodes as UTF-8 (strip BOM)"
    client_data = json.dumps(
        {"type": "webauthn.create", "challenge": b64url(challenge), "origin": ORIGIN, "crossOrigin": False}
    ).encode()
    bom = auth.create(challenge, user_handle=b"h" * 64, client_data_json=b"\xef\xbb\xbf" + client_data)
    assert register(bom, challenge).credential_id == auth.last.credential_id


def test_registration_w3c_vector() -> None:
    reg = VECTOR["registration"]
    passkey = verify_registration(
        credential=vector_registration(),
        expected_challenge=bytes.fromhex(reg["challenge_hex"]),
        expected_origin="https://example.org",
        expected_rp_id="example.org",
    )
    assert passkey.credential_id == bytes.fromhex(VECTOR["credential_id_hex"])
    assert passkey.aaguid == "8446ccb9-ab1d-b374-750b-2367ff6f3a1f"
    assert passkey.backup_eligible is True and passkey.backup_state is True
    assert passkey.user_verified is False
    assert passkey.algorithm == -7 and passkey.sign_count == 0
    assert passkey.transports == ["internal"]
    key = cbor2.loads(passkey.public_key)
    assert key[-2].hex() == VECTOR["credential_public_key_p256"]["x_hex"]
    assert key[-3].hex() == VECTOR["credential_public_key_p256"]["y_hex"]


def test_WA_R09_w3c_vector_registration_refused_when_uv_required() -> None:
    with pytest.raises(PasskeyRegistrationRejected):
        verify_registration(
            credential=vector_registration(),
            expected_challenge=bytes.fromhex(VECTOR["registration"]["challenge_hex"]),
            expected_origin="https://example.org",
            expected_rp_id="example.org",
            require_user_verification=True,
        )


# ------------------------------------------------------------------------------ SEC-39 registration negatives


def test_WA_R01_an_assertion_posted_for_registration_is_refused() -> None:
    auth, _ = enrolled()
    challenge = secrets.token_bytes(32)
    assertion = auth.get(challenge)
    with pytest.raises(PasskeyRegistrationRejected):
        register(assertion, challenge)
    # the same even with an attestationObject smuggled in next to the signature
    other = auth.create(challenge, user_handle=b"x" * 64, store=False)
    assertion["response"]["attestationObject"] = other["response"]["attestationObject"]
    with pytest.raises(PasskeyRegistrationRejected):
        register(assertion, challenge)


@pytest.mark.parametrize(
    "client_data_json",
    [
        pytest.param(b"\xff\xfe{\x80}", id="invalid-utf8"),
        pytest.param(b'{"type":"webauthn.create","challenge":"\xc3\x28"}', id="invalid-utf8-inside"),
        pytest.param(b"not json at all", id="non-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'["webauthn.create"]', id="json-array"),
        pytest.param(b'"webauthn.create"', id="json-string"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"type":"' + b"a" * (1024 * 1024) + b'"}', id="1MB-blob"),
        pytest.param(b'{"type":"webauthn.create","type":"webauthn.create"}', id="duplicate-keys"),
        pytest.param(b'{"type":1,"challenge":2,"origin":3}', id="wrong-member-types"),
    ],
)
def test_WA_R02_client_data_must_be_utf8_json_object(client_data_json: bytes) -> None:
    refused_registration(new_authenticator(), client_data_json=client_data_json)


@pytest.mark.parametrize(
    "credential",
    [
        None,
        42,
        [],
        "",
        "not json",
        "[1, 2]",
        "{" * 50_000,
        {},
        {"type": "public-key"},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": "x"},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {}},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": 5}},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {"attestationObject": "!!"}},
        {1: 2},
    ],
)
def test_WA_R02_malformed_credentials_are_refused_not_crashing(credential: object) -> None:
    with pytest.raises(PasskeyRegistrationRejected):
        register(credential, b"c" * 32)


def test_WA_R03_client_data_type_must_be_webauthn_create() -> None:
    refused_registration(new_authenticator(), type="webauthn.get")
    refused_registration(new_authenticator(), type="webauthn.create ")
    refused_registration(new_authenticator(), client_data_extra={"type": None})


def test_WA_R04_challenge_must_match_exactly() -> None:
    auth = new_authenticator()
    challenge = TRICKY_CHALLENGE
    good = b64url(challenge)
    variants = {
        "other": b64url(b"x" * 32),
        "padded": good + "=" * (-len(good) % 4),
        "standard-base64": base64.b64encode(challenge).decode(),
        "standard-unpadded": base64.b64encode(challenge).decode().rstrip("="),
        "with-space": good + " ",
        "prefix": good[:-1],
        "empty": "",
    }
    assert variants["padded"] != good and "+" in variants["standard-base64"]
    for name, raw in variants.items():
        credential = auth.create(challenge, user_handle=b"u" * 64, store=False, challenge=raw)
        with pytest.raises(PasskeyRegistrationRejected):
            register(credential, challenge)
        assert name  # (for the failure message)
    # bytes challenge: a different issued challenge (another session's) is refused
    refused_registration(auth, challenge=b"y" * 32)
    # the correct spelling passes
    assert register(auth.create(challenge, user_handle=b"u" * 64, store=False), challenge)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://twostep.example",
        "https://twostep.example:8443",
        "https://sub.twostep.example",
        "https://twostep.example.evil.example",
        "https://twostep.example/",
        "HTTPS://TWOSTEP.EXAMPLE",
        "twostep.example",
        "null",
    ],
)
def test_WA_R05_origin_must_match_exactly(origin: str) -> None:
    refused_registration(new_authenticator(), origin=origin)


@pytest.mark.parametrize(
    "overrides",
    [
        {"cross_origin": True},
        {"cross_origin": "true"},
        {"cross_origin": 1},
        {"top_origin": "https://evil.example"},
        {"top_origin": ORIGIN},
        {"cross_origin": True, "top_origin": "https://evil.example"},
    ],
)
def test_WA_R06_cross_origin_and_top_origin_are_refused(overrides: dict[str, Any]) -> None:
    refused_registration(new_authenticator(), **overrides)


def test_WA_R06_cross_origin_absent_is_accepted() -> None:
    auth = new_authenticator()
    challenge = secrets.token_bytes(32)
    assert register(auth.create(challenge, user_handle=b"u" * 64, cross_origin=OMIT), challenge)


def test_WA_R07_rp_id_hash_must_match() -> None:
    refused_registration(new_authenticator(), rp_id="evil.example")
    refused_registration(new_authenticator(), rp_id="sub.twostep.example")
    refused_registration(new_authenticator(), rp_id="example")


def test_WA_R08_user_presence_is_required() -> None:
    refused_registration(new_authenticator(), up=False)


def test_WA_R09_user_verification_when_required() -> None:
    refused_registration(new_authenticator(), require_uv=True, uv=False)
    # accepted when UV is only preferred, recorded as not verified
    auth = new_authenticator(user_verified=False)
    challenge = secrets.token_bytes(32)
    passkey = register(auth.create(challenge, user_handle=b"u" * 64), challenge)
    assert passkey.user_verified is False


def test_WA_R10_backup_state_without_backup_eligibility_is_refused() -> None:
    refused_registration(new_authenticator(), be=False, bs=True)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"alg_label": -65535}, id="RS1-label"),
        pytest.param({"alg_label": -36}, id="ES512-unrequested"),
        pytest.param({"alg_label": -257}, id="EC2-key-labelled-RS256"),
        pytest.param({"alg_label": -8}, id="EC2-key-labelled-EdDSA"),
        pytest.param({"algorithm": EDDSA, "alg_label": -7}, id="OKP-key-labelled-ES256"),
        pytest.param({"algorithm": RS256, "alg_label": -7}, id="RSA-key-labelled-ES256"),
        pytest.param({"private_key": ec.generate_private_key(ec.SECP384R1())}, id="P-384-key-labelled-ES256"),
        pytest.param({"private_key": ec.generate_private_key(ec.SECP384R1()), "alg_label": -35}, id="ES384"),
        pytest.param(
            {"cose_key": cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32})},
            id="off-curve",
        ),
        pytest.param({"cose_key": cbor2.dumps({1: 2, 3: -7})}, id="incomplete-key"),
        pytest.param({"cose_key": cbor2.dumps({3: -7})}, id="no-kty"),
    ],
)
def test_WA_R11_algorithm_must_be_requested_and_match_the_key(overrides: dict[str, Any]) -> None:
    refused_registration(new_authenticator(), **overrides)


def test_WA_R11_small_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    refused_registration(new_authenticator(), private_key=rsa.generate_private_key(65537, 1024))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"fmt": "unknown-format"}, id="unknown-fmt"),
        pytest.param({"fmt": ""}, id="empty-fmt"),
        pytest.param({"fmt": 7}, id="non-string-fmt"),
        pytest.param({"fmt": "fido-u2f"}, id="u2f-without-statement"),
        pytest.param({"fmt": "packed"}, id="packed-without-statement"),
        pytest.param(
            {"attestation": "packed", "mutate_signature": lambda s: flip_bit(s, -1)}, id="packed-bad-sig"
        ),
        pytest.param(
            {"attestation": "packed", "mutate_signature": lambda s: s[:-3]}, id="packed-truncated-sig"
        ),
        pytest.param(
            {"attestation": "packed", "signing_key": generate_private_key()}, id="packed-signed-by-other-key"
        ),
        pytest.param(
            {"attestation": "packed", "alg_label": -7, "algorithm": EDDSA}, id="packed-alg-mismatch"
        ),
        pytest.param({"fmt": "none", "att_stmt": {"sig": b"\x30\x00"}}, id="none-with-sig"),
        pytest.param({"fmt": "none", "att_stmt": {"foo": 1}}, id="none-with-unknown-member"),
        pytest.param({"fmt": "none", "att_stmt": []}, id="none-with-array-statement"),
    ],
)
def test_WA_R12_attestation_format_and_statement_must_verify(overrides: dict[str, Any]) -> None:
    refused_registration(new_authenticator(), **overrides)


def test_WA_R13_attestation_is_not_required_policy_none() -> None:
    """Policy "none": no trusted attestation chain is required; self attestation and none both pass."""
    assert options_for().options["attestation"] == "none"
    auth = new_authenticator()
    for attestation in ("none", "packed"):
        challenge = secrets.token_bytes(32)
        credential = auth.create(challenge, user_handle=b"u" * 64, attestation=attestation)
        assert register(credential, challenge).credential_id == auth.last.credential_id


def test_WA_R14_credential_id_at_most_1023_bytes() -> None:
    refused_registration(new_authenticator(), credential_id_length=MAX_CREDENTIAL_ID_BYTES + 1)
    refused_registration(new_authenticator(), credential_id_length=65535)
    auth = new_authenticator()
    challenge = secrets.token_bytes(32)
    passkey = register(auth.create(challenge, user_handle=b"u" * 64, credential_id_length=1023), challenge)
    assert len(passkey.credential_id) == 1023


def test_WA_R16_garbage_extensions_are_refused_not_crashing() -> None:
    for garbage in (b"\xff", b"\xa1", b"\x1f\x00\x00", b"\xbf\x01"):
        refused_registration(new_authenticator(), extensions=garbage)
    # ED set with no extension data at all
    refused_registration(new_authenticator(), flags=0x01 | 0x04 | 0x40 | 0x80)


def test_WA_R16_unknown_well_formed_extensions_are_ignored() -> None:
    auth = new_authenticator()
    challenge = secrets.token_bytes(32)
    credential = auth.create(
        challenge, user_handle=b"u" * 64, extensions={"unknownExt": b"\x00", "credProtect": 2}
    )
    assert register(credential, challenge).credential_id == auth.last.credential_id


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"raw_id": b64url(b"z" * 32), "id": b64url(b"z" * 32)}, id="rawId-not-the-attested-id"),
        pytest.param({"id": b64url(b"z" * 32)}, id="id-differs-from-rawId"),
        pytest.param({"credential_extra": {"type": "password"}}, id="wrong-credential-type"),
    ],
)
def test_registration_credential_ids_and_type_must_agree(overrides: dict[str, Any]) -> None:
    refused_registration(new_authenticator(), **overrides)


def test_registration_base64url_must_be_strict() -> None:
    auth = new_authenticator()
    challenge = secrets.token_bytes(32)
    credential = auth.create(challenge, user_handle=b"u" * 64, store=False, credential_id_length=16)
    padded = json.loads(json.dumps(credential))
    padded["response"]["clientDataJSON"] += "=" * (-len(padded["response"]["clientDataJSON"]) % 4 or 4)
    standard = json.loads(json.dumps(credential))
    standard["response"]["attestationObject"] = base64.b64encode(
        b64url_decode(credential["response"]["attestationObject"])
    ).decode()
    for bad in (padded, standard):
        with pytest.raises(PasskeyRegistrationRejected):
            register(bad, challenge)
    assert register(credential, challenge)


def test_registration_random_corruption_never_crashes() -> None:
    rng = random.Random(38)
    auth = new_authenticator()
    challenge = secrets.token_bytes(32)
    credential = auth.create(challenge, user_handle=b"u" * 64, store=False, attestation="packed")
    for _ in range(300):
        field = rng.choice(["attestationObject", "clientDataJSON"])

        def corrupt(original: bytes) -> bytes:
            data = bytearray(original)
            for _ in range(rng.randint(1, 4)):
                action = rng.random()
                position = rng.randrange(len(data))
                if action < 0.6:
                    data[position] = rng.randrange(256)
                elif action < 0.8:
                    del data[position:]
                else:
                    data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
                if not data:
                    break
            return bytes(data)

        mutated = tamper(credential, field, corrupt)
        try:
            register(mutated, challenge)
        except PasskeyRegistrationRejected:
            pass


# -------------------------------------------------------------------------------------- assertion happy paths


def test_assertion_happy_path() -> None:
    auth, passkey = enrolled()
    options = authentication_options(
        rp_id=RP_ID,
        allow_credentials=[(passkey.credential_id, passkey.transports)],
        user_verification="preferred",
    )
    credential = auth.get(options.options)
    result = assert_(credential, options.challenge, passkey)
    assert result == VerifiedAssertion(
        new_sign_count=1, backup_eligible=False, backup_state=False, user_verified=True
    )
    assert credential_id_of(credential) == passkey.credential_id
    assert user_handle_of(credential) == auth.last.user_handle
    # a second assertion, with the stored count updated by the caller
    challenge = secrets.token_bytes(32)
    again = assert_(auth.get(challenge), challenge, passkey, stored_sign_count=1, require_uv=True)
    assert again.new_sign_count == 2 and again.user_verified


def test_assertion_accepts_json_text_and_null_user_handle() -> None:
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge, user_handle=None)
    assert user_handle_of(credential) is None
    assert assert_(json.dumps(credential), challenge, passkey).new_sign_count == 1
    assert user_handle_of(auth.get(challenge, user_handle=OMIT)) is None


def test_assertion_synced_passkey_zero_counter_is_accepted() -> None:
    auth, passkey = enrolled(sign_count_step=0, backup_eligible=True, backup_state=True)
    for _ in range(3):
        challenge = secrets.token_bytes(32)
        result = assert_(auth.get(challenge), challenge, passkey, stored_sign_count=0)
        assert result.new_sign_count == 0 and result.backup_eligible and result.backup_state


def test_assertion_w3c_vector_verifies_when_uv_preferred() -> None:
    passkey = verify_registration(
        credential=vector_registration(),
        expected_challenge=bytes.fromhex(VECTOR["registration"]["challenge_hex"]),
        expected_origin="https://example.org",
        expected_rp_id="example.org",
    )
    result = verify_authentication(
        credential=vector_assertion(),
        expected_challenge=bytes.fromhex(VECTOR["authentication"]["challenge_hex"]),
        expected_origin="https://example.org",
        expected_rp_id="example.org",
        public_key=passkey.public_key,
        stored_sign_count=0,
        stored_backup_eligible=True,
        require_user_verification=False,
    )
    assert result == VerifiedAssertion(
        new_sign_count=0, backup_eligible=True, backup_state=True, user_verified=False
    )


def test_WA_A11_w3c_vector_refused_when_uv_required() -> None:
    passkey = verify_registration(
        credential=vector_registration(),
        expected_challenge=bytes.fromhex(VECTOR["registration"]["challenge_hex"]),
        expected_origin="https://example.org",
        expected_rp_id="example.org",
    )
    with pytest.raises(PasskeyRejected):
        verify_authentication(
            credential=vector_assertion(),
            expected_challenge=bytes.fromhex(VECTOR["authentication"]["challenge_hex"]),
            expected_origin="https://example.org",
            expected_rp_id="example.org",
            public_key=passkey.public_key,
            stored_sign_count=0,
            stored_backup_eligible=True,
            require_user_verification=True,
        )


def test_soft_authenticator_signs_like_the_w3c_vector() -> None:
    """The soft authenticator, given the vector's key, produces assertions the vector's public key accepts."""
    private = ec.derive_private_key(int(VECTOR["credential_private_key_hex"], 16), ec.SECP256R1())
    auth = SoftAuthenticator("example.org", "https://example.org", backup_eligible=True, backup_state=True)
    auth.add_credential(bytes.fromhex(VECTOR["credential_id_hex"]), private)
    passkey = verify_registration(
        credential=vector_registration(),
        expected_challenge=bytes.fromhex(VECTOR["registration"]["challenge_hex"]),
        expected_origin="https://example.org",
        expected_rp_id="example.org",
    )
    challenge = secrets.token_bytes(32)
    result = assert_(
        auth.get(challenge), challenge, passkey, origin="https://example.org", rp_id="example.org"
    )
    assert result.new_sign_count == 1


# -------------------------------------------------------------------------------- SEC-40 assertion negatives


def test_WA_A01_an_attestation_posted_for_sign_in_is_refused() -> None:
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    attestation = auth.create(challenge, user_handle=b"u" * 64, store=False)
    with pytest.raises(PasskeyRejected):
        assert_(attestation, challenge, passkey)
    # even with a signature added next to the attestationObject
    assertion = auth.get(challenge)
    attestation["response"]["signature"] = assertion["response"]["signature"]
    with pytest.raises(PasskeyRejected):
        assert_(attestation, challenge, passkey)


def test_WA_A05_client_data_type_must_be_webauthn_get() -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, type="webauthn.create")
    refused_assertion(auth, passkey, type="payment.get")


def test_WA_A06_challenge_must_match_exactly() -> None:
    auth, passkey = enrolled()
    challenge = TRICKY_CHALLENGE
    good = b64url(challenge)
    for raw in (
        b64url(b"x" * 32),
        good + "=",
        base64.b64encode(challenge).decode(),
        base64.b64encode(challenge).decode().rstrip("="),
        "",
    ):
        with pytest.raises(PasskeyRejected):
            assert_(auth.get(challenge, challenge=raw), challenge, passkey)
    refused_assertion(auth, passkey, challenge=b"another session's challenge....")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://twostep.example",
        "https://twostep.example:8443",
        "https://sub.twostep.example",
        "https://twostep.example.evil.example",
        "https://twostep.example/",
    ],
)
def test_WA_A07_origin_must_match_exactly(origin: str) -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, origin=origin)


@pytest.mark.parametrize(
    "overrides",
    [{"cross_origin": True}, {"cross_origin": "yes"}, {"top_origin": "https://evil.example"}],
)
def test_WA_A08_cross_origin_and_top_origin_are_refused(overrides: dict[str, Any]) -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, **overrides)


def test_WA_A09_rp_id_hash_must_match() -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, rp_id="evil.example")
    refused_assertion(auth, passkey, rp_id="sub.twostep.example")


def test_WA_A10_user_presence_is_required() -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, up=False)


def test_WA_A11_user_verification_when_required() -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, require_uv=True, uv=False)
    challenge = secrets.token_bytes(32)
    result = assert_(auth.get(challenge, uv=False), challenge, passkey, require_uv=False, stored_sign_count=1)
    assert result.user_verified is False


def test_WA_A12_backup_state_without_backup_eligibility_is_refused() -> None:
    auth, passkey = enrolled()
    refused_assertion(auth, passkey, be=False, bs=True)


def test_WA_A13_a_change_of_backup_eligibility_is_reported_not_refused() -> None:
    """docs/security.md WA-A13 (issue 17): a validly signed assertion whose BE differs from the stored value
    is accepted and reported (the service records it and stores the new value), in both directions."""
    auth, passkey = enrolled(backup_eligible=True, backup_state=True)
    challenge = secrets.token_bytes(32)
    got = assert_(auth.get(challenge, be=False, bs=False), challenge, passkey)  # stored BE=1, assertion BE=0
    assert got.backup_eligibility_changed is True and got.backup_eligible is False
    auth2, passkey2 = enrolled()
    challenge = secrets.token_bytes(32)
    got = assert_(auth2.get(challenge, be=True), challenge, passkey2)  # stored BE=0, assertion BE=1
    assert got.backup_eligibility_changed is True and got.backup_eligible is True
    # BE=0 with BS=1 stays refused (WA-A12), whatever is stored.
    refused_assertion(auth2, passkey2, be=False, bs=True)
    challenge = secrets.token_bytes(32)
    # BS may change freely while BE stays (a passkey that becomes backed up)
    got = assert_(auth.get(challenge, bs=False), challenge, passkey)
    assert got.backup_state is False and got.backup_eligibility_changed is False


@pytest.mark.parametrize(
    "case",
    [
        "authData-bit",
        "authData-flags-bit",
        "clientDataJSON-bit",
        "signature-bit",
        "signature-truncated-der",
        "signature-empty",
        "signature-garbage",
        "other-key",
        "other-key-type",
    ],
)
def test_WA_A14_signature_must_verify(case: str) -> None:
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge, client_data_extra={"pad": "aaaa"})
    if case == "authData-bit":
        credential = tamper(credential, "authenticatorData", lambda d: flip_bit(d, 36))
    elif case == "authData-flags-bit":
        credential = tamper(credential, "authenticatorData", lambda d: flip_bit(d, 32, 1))  # RFU1
    elif case == "clientDataJSON-bit":
        credential = tamper(credential, "clientDataJSON", lambda d: d.replace(b'"aaaa"', b'"caaa"'))
    elif case == "signature-bit":
        credential = tamper(credential, "signature", lambda d: flip_bit(d, -1))
    elif case == "signature-truncated-der":
        credential = tamper(credential, "signature", lambda d: d[:-5])
    elif case == "signature-empty":
        credential = tamper(credential, "signature", lambda d: b"")
    elif case == "signature-garbage":
        credential = tamper(credential, "signature", lambda d: b"\x30" + bytes(range(80)))
    elif case == "other-key":
        credential = auth.get(challenge, signing_key=generate_private_key(ES256))
    elif case == "other-key-type":
        credential = auth.get(challenge, signing_key=generate_private_key(EDDSA))
    with pytest.raises(PasskeyRejected) as caught:
        assert_(credential, challenge, passkey)
    assert not isinstance(caught.value, SignCountRegression)


def test_WA_A14_signature_checked_against_the_stored_key() -> None:
    auth, _ = enrolled()
    _, other = enrolled()
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge)
    with pytest.raises(PasskeyRejected):
        verify_authentication(
            credential=credential,
            expected_challenge=challenge,
            expected_origin=ORIGIN,
            expected_rp_id=RP_ID,
            public_key=other.public_key,
            stored_sign_count=0,
            stored_backup_eligible=False,
            require_user_verification=False,
        )
    for bad_key in (b"", b"\x00", b"\x04" + b"\x01" * 64, cbor2.dumps({1: 2, 3: -257}), b"\xa5" * 20):
        with pytest.raises(PasskeyRejected):
            verify_authentication(
                credential=credential,
                expected_challenge=challenge,
                expected_origin=ORIGIN,
                expected_rp_id=RP_ID,
                public_key=bad_key,
                stored_sign_count=0,
                stored_backup_eligible=False,
                require_user_verification=False,
            )


@pytest.mark.parametrize(
    ("stored", "received", "accepted"),
    [(10, 10, False), (10, 5, False), (5, 0, False), (0, 0, True), (0, 5, True), (10, 11, True)],
)
def test_WA_A15_sign_count_must_increase(stored: int, received: int, accepted: bool) -> None:
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge, sign_count=received)
    if accepted:
        assert assert_(credential, challenge, passkey, stored_sign_count=stored).new_sign_count == received
        return
    with pytest.raises(SignCountRegression) as caught:
        assert_(credential, challenge, passkey, stored_sign_count=stored)
    assert isinstance(caught.value, PasskeyRejected)
    assert (caught.value.stored, caught.value.received) == (stored, received)
    assert caught.value.code == "passkey_rejected"


def test_WA_A15_regression_reported_only_for_a_valid_signature() -> None:
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    credential = tamper(auth.get(challenge, sign_count=3), "signature", lambda d: flip_bit(d, -1))
    with pytest.raises(PasskeyRejected) as caught:
        assert_(credential, challenge, passkey, stored_sign_count=10)
    assert not isinstance(caught.value, SignCountRegression)
    assert passkeys.sign_count_ok(stored=0, received=0) and not passkeys.sign_count_ok(stored=1, received=1)


@pytest.mark.parametrize(
    "credential",
    [
        None,
        3.5,
        "garbage",
        "[]",
        {},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {"signature": "AA"}},
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {"clientDataJSON": "AA", "authenticatorData": "AA", "signature": "AA"},
        },
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {
                "clientDataJSON": "e30",
                "authenticatorData": "AA",
                "signature": "AA",
                "userHandle": 5,
            },
        },
    ],
)
def test_malformed_assertions_are_refused_not_crashing(credential: object) -> None:
    _, passkey = enrolled()
    with pytest.raises(PasskeyRejected):
        assert_(credential, b"c" * 32, passkey)


def test_assertion_random_corruption_never_crashes() -> None:
    rng = random.Random(40)
    auth, passkey = enrolled()
    challenge = secrets.token_bytes(32)
    credential = auth.get(challenge)
    for _ in range(300):
        field = rng.choice(["authenticatorData", "clientDataJSON", "signature"])

        def corrupt(original: bytes) -> bytes:
            data = bytearray(original)
            position = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[position] ^= 1 << rng.randrange(8)
            else:
                del data[position:]
            return bytes(data)

        with pytest.raises(PasskeyRejected):
            assert_(tamper(credential, field, corrupt), challenge, passkey)


# --------------------------------------------------------------------------------- helpers for the service


def test_credential_id_of_and_user_handle_of() -> None:
    auth, _ = enrolled()
    credential = auth.get(b"c" * 32)
    assert credential_id_of(credential) == auth.last.credential_id
    assert credential_id_of(json.dumps(credential)) == auth.last.credential_id
    assert user_handle_of(credential) == auth.last.user_handle
    for bad in (
        None,
        {},
        {"rawId": "a=", "id": "a=", "type": "public-key"},
        {"rawId": 1, "type": "public-key"},
    ):
        with pytest.raises(PasskeyRejected):
            credential_id_of(bad)
    mismatch = dict(credential, id=b64url(b"other"))
    with pytest.raises(PasskeyRejected):
        credential_id_of(mismatch)
    for handle in (5, "a+b/", "AA==", b64url(b"x" * 65)):
        bad_handle = json.loads(json.dumps(credential))
        bad_handle["response"]["userHandle"] = handle
        with pytest.raises(PasskeyRejected):
            user_handle_of(bad_handle)


def test_provider_name() -> None:
    assert provider_name("fbfc3007-154e-4ecc-8c0b-6e020557d7bd") == "Apple Passwords"
    assert provider_name("FBFC3007-154E-4ECC-8C0B-6E020557D7BD") == "Apple Passwords"
    assert provider_name("00000000-0000-0000-0000-000000000000") is None
    assert provider_name("12345678-1234-1234-1234-123456789abc") is None
    assert provider_name("") is None
