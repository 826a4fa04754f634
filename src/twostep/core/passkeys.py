"""WebAuthn (passkey) ceremonies: options, registration and assertion verification.

Built on py_webauthn (``webauthn``), plus the relying-party checks of WebAuthn L3 that it leaves out, so that
every row of docs/security.md SEC-39 (WA-R*) and SEC-40 (WA-A*) that is a pure check holds here:

* the challenge is compared as the exact base64url string the client put in ``clientDataJSON`` (py_webauthn
  decodes it leniently, so a padded or standard-base64 spelling of the right bytes would match);
* ``crossOrigin: true`` and any ``topOrigin`` are refused (twostep is never used inside an iframe);
* ``BE=0, BS=1`` is refused and, for an assertion, BE must equal the stored backup eligibility;
* the credential public key is checked for a supported ``alg`` that matches its key type and curve, and must
  load as a valid key;
* the credential id is at most 1023 bytes and ``rawId`` equals the id inside ``authenticatorData``;
* a ``none`` attestation must carry an empty ``attStmt`` (py_webauthn ignores unknown members);
* every base64url field is strict (no padding, no standard-alphabet characters, canonical);
* the sign counter rule of §0.5 raises :class:`SignCountRegression`, and only for a validly signed assertion.

Every failure raises :class:`PasskeyRejected` (assertions) or :class:`PasskeyRegistrationRejected`
(registration), with the underlying reason as ``__cause__``; no other exception type escapes for any input.
Database-level rows (WA-R15, WA-R17, WA-A02..A04, WA-A16) are the service's job; :func:`credential_id_of` and
:func:`user_handle_of` help it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Final

import cbor2
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    options_to_json_dict,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from twostep.core.errors import PasskeyRegistrationRejected, PasskeyRejected

__all__ = [
    "CHALLENGE_BYTES",
    "MAX_CREDENTIAL_ID_BYTES",
    "SUPPORTED_ALGORITHMS",
    "TIMEOUT_MS",
    "USER_HANDLE_BYTES",
    "ZERO_AAGUID",
    "CeremonyOptions",
    "RegisteredPasskey",
    "SignCountRegression",
    "VerifiedAssertion",
    "authentication_options",
    "credential_id_of",
    "generate_user_handle",
    "provider_name",
    "registration_options",
    "sign_count_ok",
    "user_handle_of",
    "verify_authentication",
    "verify_registration",
]

CHALLENGE_BYTES: Final = 32
USER_HANDLE_BYTES: Final = 64
TIMEOUT_MS: Final = 300_000
MAX_CREDENTIAL_ID_BYTES: Final = 1023

ES256: Final = -7
EDDSA: Final = -8
RS256: Final = -257
#: Requested in ``pubKeyCredParams`` and accepted in responses, in order of preference.
SUPPORTED_ALGORITHMS: Final[tuple[int, ...]] = (ES256, EDDSA, RS256)

ZERO_AAGUID: Final = "00000000-0000-0000-0000-000000000000"

# Size caps for untrusted input (the HTTP layer caps bodies at 64 KiB anyway).
_MAX_CREDENTIAL_JSON_CHARS: Final = 256 * 1024
_MAX_CLIENT_DATA_BYTES: Final = 16 * 1024
_MAX_ATTESTATION_OBJECT_BYTES: Final = 64 * 1024
_MAX_AUTHENTICATOR_DATA_BYTES: Final = 16 * 1024
_MAX_SIGNATURE_BYTES: Final = 8 * 1024
_MIN_RSA_BITS: Final = 2048

_FLAG_UP: Final = 0x01
_FLAG_UV: Final = 0x04
_FLAG_BE: Final = 0x08
_FLAG_BS: Final = 0x10
_FLAG_AT: Final = 0x40

_COSE_KTY_OKP: Final = 1
_COSE_KTY_EC2: Final = 2
_COSE_KTY_RSA: Final = 3
_COSE_CRV_P256: Final = 1
_COSE_CRV_ED25519: Final = 6

_KNOWN_TRANSPORTS: Final = frozenset(t.value for t in AuthenticatorTransport)
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_USER_VERIFICATION: Final = {
    "required": UserVerificationRequirement.REQUIRED,
    "preferred": UserVerificationRequirement.PREFERRED,
    "discouraged": UserVerificationRequirement.DISCOURAGED,
}


class SignCountRegression(PasskeyRejected):
    """A validly signed assertion whose signature counter did not increase (security.md §0.5, WA-A15).

    A possible cloned authenticator: the service refuses the assertion and records a security event.
    """

    def __init__(self, *, stored: int, received: int) -> None:
        super().__init__()
        self.stored = stored
        self.received = received


class _Invalid(ValueError):
    """Internal: one failed check, with a reason for logs (it becomes ``__cause__`` of the public error)."""


# --------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class CeremonyOptions:
    """``options`` is a PublicKeyCredentialCreationOptionsJSON or PublicKeyCredentialRequestOptionsJSON dict,
    ready for ``json.dumps``; ``challenge`` is the raw challenge to store server-side for this ceremony."""

    options: dict[str, object]
    challenge: bytes


def generate_user_handle() -> bytes:
    """A WebAuthn user handle (``user.id``): 64 random bytes, no personal data (SEC-38)."""
    return secrets.token_bytes(USER_HANDLE_BYTES)


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_handle: bytes,
    username: str,
    display_name: str,
    exclude_credential_ids: list[bytes],
) -> CeremonyOptions:
    """Options for ``navigator.credentials.create()`` (SEC-38)."""
    if not 1 <= len(user_handle) <= USER_HANDLE_BYTES:
        raise ValueError("user_handle must be 1 to 64 bytes")
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_name=username,
        user_id=user_handle,
        user_display_name=display_name or username,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            require_resident_key=False,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=bytes(cid)) for cid in exclude_credential_ids],
        supported_pub_key_algs=[COSEAlgorithmIdentifier(alg) for alg in SUPPORTED_ALGORITHMS],
    )
    as_json: dict[str, object] = dict(options_to_json_dict(options))
    return CeremonyOptions(options=as_json, challenge=challenge)


def authentication_options(
    *,
    rp_id: str,
    allow_credentials: list[tuple[bytes, list[str]]],
    user_verification: str,
) -> CeremonyOptions:
    """Options for ``navigator.credentials.get()``.

    ``allow_credentials`` is ``[(credential_id, transports), ...]``: the pending user's passkeys for the
    second step (with ``user_verification="preferred"``), or empty for a discoverable, passwordless request
    (with ``"required"``), security.md §0.6. Unknown transport names are dropped.
    """
    try:
        uv = _USER_VERIFICATION[user_verification]
    except KeyError:
        raise ValueError(f"unknown user_verification {user_verification!r}") from None
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    descriptors = [
        PublicKeyCredentialDescriptor(
            id=bytes(cid),
            transports=[AuthenticatorTransport(t) for t in _clean_transports(transports)] or None,
        )
        for cid, transports in allow_credentials
    ]
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=descriptors,
        user_verification=uv,
    )
    as_json: dict[str, object] = dict(options_to_json_dict(options))
    return CeremonyOptions(options=as_json, challenge=challenge)


# ----------------------------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class RegisteredPasskey:
    credential_id: bytes
    public_key: bytes  # COSE_Key, CBOR-encoded
    algorithm: int  # COSE algorithm identifier: -7, -8 or -257
    sign_count: int
    aaguid: str  # lowercase UUID string; ZERO_AAGUID when the authenticator gives none
    backup_eligible: bool
    backup_state: bool
    user_verified: bool
    transports: list[str]


def verify_registration(
    *,
    credential: object,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    require_user_verification: bool = False,
) -> RegisteredPasskey:
    """Verify a RegistrationResponseJSON (a dict, or its JSON text) against the issued challenge.

    Raises :class:`PasskeyRegistrationRejected` for every failure, with the reason as ``__cause__``.
    WA-R13 (attestation trust) is policy "none": any supported, correctly formed attestation statement is
    accepted and no trust chain is required. WA-R15/R17 (uniqueness, storing) are the service's job.
    """
    try:
        return _verify_registration(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_origin=expected_origin,
            expected_rp_id=expected_rp_id,
            require_user_verification=require_user_verification,
        )
    except PasskeyRegistrationRejected:
        raise
    except Exception as exc:  # the edge: any failure on untrusted input is a refusal, never a 500
        raise PasskeyRegistrationRejected() from exc


def _verify_registration(
    *,
    credential: object,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    require_user_verification: bool,
) -> RegisteredPasskey:
    body = _credential_dict(credential)
    raw_id = _raw_id(body)
    response = _response_dict(body)
    # WA-R01: an assertion has no attestationObject.
    if "attestationObject" not in response or "signature" in response:
        raise _Invalid("not an attestation response")

    client_data_json = _b64url_field(response, "clientDataJSON", _MAX_CLIENT_DATA_BYTES)
    _check_client_data(  # WA-R02 .. WA-R06
        client_data_json,
        expected_type="webauthn.create",
        expected_challenge=expected_challenge,
        expected_origin=expected_origin,
    )

    attestation_object = _b64url_field(response, "attestationObject", _MAX_ATTESTATION_OBJECT_BYTES)
    att = cbor2.loads(attestation_object)
    if not isinstance(att, dict):
        raise _Invalid("attestationObject is not a map")
    fmt, att_stmt, auth_data = att.get("fmt"), att.get("attStmt"), att.get("authData")
    if not isinstance(fmt, str) or not isinstance(att_stmt, dict) or not isinstance(auth_data, bytes):
        raise _Invalid("attestationObject lacks fmt, attStmt or authData")
    if fmt == "none" and att_stmt:  # WA-R12
        raise _Invalid("none attestation with a non-empty attStmt")

    flags = _check_auth_data_header(
        auth_data,
        expected_rp_id=expected_rp_id,
        require_user_verification=require_user_verification,
    )
    if not flags & _FLAG_AT:
        raise _Invalid("no attested credential data")
    if len(auth_data) < 55:
        raise _Invalid("attested credential data truncated")
    id_length = int.from_bytes(auth_data[53:55], "big")
    if not 1 <= id_length <= MAX_CREDENTIAL_ID_BYTES:  # WA-R14
        raise _Invalid(f"credential id of {id_length} bytes")
    attested_id = auth_data[55 : 55 + id_length]
    if len(attested_id) != id_length or not hmac.compare_digest(attested_id, raw_id):
        raise _Invalid("rawId differs from the credential id in authenticatorData")

    verified = verify_registration_response(
        credential=body,
        expected_challenge=expected_challenge,
        expected_rp_id=expected_rp_id,
        expected_origin=expected_origin,
        require_user_presence=True,
        require_user_verification=require_user_verification,
        supported_pub_key_algs=[COSEAlgorithmIdentifier(alg) for alg in SUPPORTED_ALGORITHMS],
    )
    if verified.credential_id != raw_id:
        raise _Invalid("verified credential id differs from rawId")
    algorithm = _check_public_key(verified.credential_public_key)  # WA-R11

    return RegisteredPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        algorithm=algorithm,
        sign_count=verified.sign_count,
        aaguid=(verified.aaguid or ZERO_AAGUID).lower(),
        backup_eligible=bool(flags & _FLAG_BE),
        backup_state=bool(flags & _FLAG_BS),
        user_verified=bool(flags & _FLAG_UV),
        transports=_clean_transports(response.get("transports")),
    )


# ------------------------------------------------------------------------------------------------- assertions


@dataclass(frozen=True)
class VerifiedAssertion:
    new_sign_count: int
    backup_eligible: bool
    backup_state: bool
    user_verified: bool


def sign_count_ok(*, stored: int, received: int) -> bool:
    """security.md §0.5: if either count is non-zero the new one must be greater; 0 and 0 is accepted."""
    if stored == 0 and received == 0:
        return True
    return received > stored


def verify_authentication(
    *,
    credential: object,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    public_key: bytes,
    stored_sign_count: int,
    stored_backup_eligible: bool,
    require_user_verification: bool,
) -> VerifiedAssertion:
    """Verify an AuthenticationResponseJSON (a dict, or its JSON text) for a stored credential.

    The caller has already looked the credential up by :func:`credential_id_of` (WA-A02/A03) and checked
    :func:`user_handle_of` (WA-A04). Raises :class:`PasskeyRejected` for every failure, and its subclass
    :class:`SignCountRegression` for a validly signed assertion whose counter did not increase (WA-A15).
    """
    try:
        return _verify_authentication(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_origin=expected_origin,
            expected_rp_id=expected_rp_id,
            public_key=public_key,
            stored_sign_count=stored_sign_count,
            stored_backup_eligible=stored_backup_eligible,
            require_user_verification=require_user_verification,
        )
    except PasskeyRejected:
        raise
    except Exception as exc:  # the edge: any failure on untrusted input is a refusal, never a 500
        raise PasskeyRejected() from exc


def _verify_authentication(
    *,
    credential: object,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    public_key: bytes,
    stored_sign_count: int,
    stored_backup_eligible: bool,
    require_user_verification: bool,
) -> VerifiedAssertion:
    body = _credential_dict(credential)
    _raw_id(body)
    response = _response_dict(body)
    # WA-A01: an attestation response has no signature.
    if "attestationObject" in response or "signature" not in response:
        raise _Invalid("not an assertion response")
    _user_handle(response)

    client_data_json = _b64url_field(response, "clientDataJSON", _MAX_CLIENT_DATA_BYTES)
    _check_client_data(  # WA-A05 .. WA-A08
        client_data_json,
        expected_type="webauthn.get",
        expected_challenge=expected_challenge,
        expected_origin=expected_origin,
    )
    auth_data = _b64url_field(response, "authenticatorData", _MAX_AUTHENTICATOR_DATA_BYTES)
    _b64url_field(response, "signature", _MAX_SIGNATURE_BYTES)
    flags = _check_auth_data_header(  # WA-A09 .. WA-A12
        auth_data,
        expected_rp_id=expected_rp_id,
        require_user_verification=require_user_verification,
    )
    backup_eligible = bool(flags & _FLAG_BE)
    if backup_eligible != stored_backup_eligible:  # WA-A13
        raise _Invalid("backup eligibility differs from the stored value")
    _check_public_key(public_key)

    # WA-A14 (signature) and the rest, by py_webauthn. Its own counter check is switched off (current count
    # 0 never fails) so that a regression is reported below, and only for a validly signed assertion.
    verified = verify_authentication_response(
        credential=body,
        expected_challenge=expected_challenge,
        expected_rp_id=expected_rp_id,
        expected_origin=expected_origin,
        credential_public_key=public_key,
        credential_current_sign_count=0,
        require_user_verification=require_user_verification,
    )
    received = verified.new_sign_count
    if not sign_count_ok(stored=stored_sign_count, received=received):  # WA-A15
        raise SignCountRegression(stored=stored_sign_count, received=received)
    return VerifiedAssertion(
        new_sign_count=received,
        backup_eligible=backup_eligible,
        backup_state=bool(flags & _FLAG_BS),
        user_verified=bool(flags & _FLAG_UV),
    )


# ---------------------------------------------------------------------------------------- lookups and names


def credential_id_of(credential: object) -> bytes:
    """The credential id (``rawId``, which must agree with ``id``) of a posted credential.

    Raises :class:`PasskeyRejected` when it is missing or malformed.
    """
    try:
        return _raw_id(_credential_dict(credential))
    except Exception as exc:
        raise PasskeyRejected() from exc


def user_handle_of(credential: object) -> bytes | None:
    """The ``response.userHandle`` of a posted assertion, or ``None`` when absent, null or empty.

    Raises :class:`PasskeyRejected` when it is malformed.
    """
    try:
        return _user_handle(_response_dict(_credential_dict(credential)))
    except Exception as exc:
        raise PasskeyRejected() from exc


def provider_name(aaguid: str) -> str | None:
    """The passkey provider's name for an AAGUID (e.g. "iCloud Keychain"), from the shipped list."""
    if not isinstance(aaguid, str):
        return None
    return _aaguid_names().get(aaguid.strip().lower())


@functools.cache
def _aaguid_names() -> dict[str, str]:
    text = resources.files("twostep").joinpath("data/passkey-aaguid-names.json").read_text(encoding="utf-8")
    data = json.loads(text)
    names = data.get("aaguids", {}) if isinstance(data, dict) else {}
    return {
        str(key).lower(): value
        for key, value in names.items()
        if isinstance(value, str) and value and str(key).lower() != ZERO_AAGUID
    }


# --------------------------------------------------------------------------------------------------- helpers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: object, max_bytes: int) -> bytes:
    """Strict base64url: the URL-safe alphabet, no padding, canonical, at most ``max_bytes``."""
    if not isinstance(value, str):
        raise _Invalid("base64url value is not a string")
    if len(value) > (max_bytes * 4 + 2) // 3:
        raise _Invalid("base64url value too long")
    if not _B64URL_RE.fullmatch(value) or len(value) % 4 == 1:
        raise _Invalid("not unpadded base64url")
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if _b64url(data) != value:
        raise _Invalid("non-canonical base64url")
    return data


def _b64url_field(response: dict[str, object], name: str, max_bytes: int) -> bytes:
    if name not in response:
        raise _Invalid(f"response.{name} missing")
    return _b64url_decode(response[name], max_bytes)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Invalid(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _credential_dict(credential: object) -> dict[str, object]:
    if isinstance(credential, str):
        if len(credential) > _MAX_CREDENTIAL_JSON_CHARS:
            raise _Invalid("credential JSON too large")
        credential = json.loads(credential, object_pairs_hook=_reject_duplicate_keys)
    if not isinstance(credential, dict) or not all(isinstance(k, str) for k in credential):
        raise _Invalid("credential is not a JSON object")
    if credential.get("type") != "public-key":
        raise _Invalid("credential type is not public-key")
    return credential


def _response_dict(body: dict[str, object]) -> dict[str, object]:
    response = body.get("response")
    if not isinstance(response, dict) or not all(isinstance(k, str) for k in response):
        raise _Invalid("credential.response is not an object")
    return response


def _raw_id(body: dict[str, object]) -> bytes:
    raw_id = _b64url_decode(body.get("rawId"), MAX_CREDENTIAL_ID_BYTES)
    if not raw_id:
        raise _Invalid("empty credential id")
    if body.get("id") != body.get("rawId"):
        raise _Invalid("id and rawId differ")
    return raw_id


def _user_handle(response: dict[str, object]) -> bytes | None:
    value = response.get("userHandle")
    if value is None or value == "":
        return None
    return _b64url_decode(value, USER_HANDLE_BYTES)


def _check_client_data(
    raw: bytes,
    *,
    expected_type: str,
    expected_challenge: bytes,
    expected_origin: str,
) -> None:
    """WA-R02..R06 / WA-A05..A08 on the exact bytes the authenticator signed over."""
    if len(raw) > _MAX_CLIENT_DATA_BYTES:
        raise _Invalid("clientDataJSON too large")
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # strict UTF-8; a BOM is tolerated
    data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    if not isinstance(data, dict):
        raise _Invalid("clientDataJSON is not a JSON object")
    if data.get("type") != expected_type:
        raise _Invalid("clientDataJSON type mismatch")
    challenge = data.get("challenge")
    if not isinstance(challenge, str) or not hmac.compare_digest(
        challenge.encode("utf-8"), _b64url(expected_challenge).encode("ascii")
    ):
        raise _Invalid("clientDataJSON challenge mismatch")
    origin = data.get("origin")
    if not isinstance(origin, str) or origin != expected_origin:
        raise _Invalid("clientDataJSON origin mismatch")
    if "crossOrigin" in data and data["crossOrigin"] is not False:
        raise _Invalid("cross-origin ceremony")
    if "topOrigin" in data:
        raise _Invalid("topOrigin present")


def _check_auth_data_header(auth_data: bytes, *, expected_rp_id: str, require_user_verification: bool) -> int:
    """rpIdHash, UP, UV (when required) and the BE/BS combination; returns the flags byte."""
    if len(auth_data) < 37:
        raise _Invalid("authenticatorData shorter than 37 bytes")
    expected_hash = hashlib.sha256(expected_rp_id.encode("utf-8")).digest()
    if not hmac.compare_digest(auth_data[:32], expected_hash):
        raise _Invalid("rpIdHash mismatch")
    flags = auth_data[32]
    if not flags & _FLAG_UP:
        raise _Invalid("user not present")
    if require_user_verification and not flags & _FLAG_UV:
        raise _Invalid("user not verified")
    if flags & _FLAG_BS and not flags & _FLAG_BE:
        raise _Invalid("backup state set without backup eligibility")
    return flags


def _check_public_key(cose_key: bytes) -> int:
    """The COSE key has a supported alg matching its key type and curve, and loads as a valid key."""
    key = cbor2.loads(cose_key)
    if not isinstance(key, dict):
        raise _Invalid("COSE key is not a map")
    kty, alg, crv = key.get(1), key.get(3), key.get(-1)
    if type(alg) is not int or alg not in SUPPORTED_ALGORITHMS:
        raise _Invalid(f"unsupported COSE alg {alg!r}")
    decoded = decoded_public_key_to_cryptography(decode_credential_public_key(cose_key))
    if alg == ES256:
        ok = kty == _COSE_KTY_EC2 and crv == _COSE_CRV_P256 and isinstance(decoded, EllipticCurvePublicKey)
        ok = ok and len(key.get(-2, b"")) == 32 and len(key.get(-3, b"")) == 32
    elif alg == EDDSA:
        ok = kty == _COSE_KTY_OKP and crv == _COSE_CRV_ED25519 and isinstance(decoded, Ed25519PublicKey)
    else:
        ok = kty == _COSE_KTY_RSA and isinstance(decoded, RSAPublicKey) and decoded.key_size >= _MIN_RSA_BITS
    if not ok:
        raise _Invalid(f"COSE key does not match alg {alg}")
    return alg


def _clean_transports(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    seen: list[str] = []
    for item in value[:16]:
        if isinstance(item, str) and item in _KNOWN_TRANSPORTS and item not in seen:
            seen.append(item)
    return seen
