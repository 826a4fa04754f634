"""The wire formats of a WebAuthn response, parsed strictly: base64url fields, the credential JSON,
``clientDataJSON``, the authenticator data (with its offsets named), COSE keys and transports.

Every failure raises ``Invalid`` with a reason for logs; the public verifiers turn it into their refusal.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import cbor2
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from webauthn.helpers import decode_credential_public_key, decoded_public_key_to_cryptography
from webauthn.helpers.structs import AuthenticatorTransport

from twostep.core.errors import TwostepError

USER_HANDLE_BYTES: Final = 64
MAX_CREDENTIAL_ID_BYTES: Final = 1023

ES256: Final = -7
EDDSA: Final = -8
RS256: Final = -257
#: Requested in ``pubKeyCredParams`` and accepted in responses, in order of preference.
SUPPORTED_ALGORITHMS: Final[tuple[int, ...]] = (ES256, EDDSA, RS256)

# Size caps for untrusted input (the HTTP layer caps bodies at 64 KiB anyway).
MAX_CREDENTIAL_JSON_CHARS: Final = 256 * 1024
MAX_CLIENT_DATA_BYTES: Final = 16 * 1024
MAX_ATTESTATION_OBJECT_BYTES: Final = 64 * 1024
MAX_AUTHENTICATOR_DATA_BYTES: Final = 16 * 1024
MAX_SIGNATURE_BYTES: Final = 8 * 1024
MIN_RSA_BITS: Final = 2048

# Authenticator data (WebAuthn L3 §6.1): rpIdHash (32 bytes), flags (1), signCount (4), then, with the AT
# flag, the attested credential data: AAGUID (16), credentialIdLength (2, big-endian), credentialId, ...
RP_ID_HASH: Final = slice(0, 32)
FLAGS: Final = 32
SIGN_COUNT: Final = slice(33, 37)
HEADER_BYTES: Final = 37
AAGUID: Final = slice(37, 53)
CREDENTIAL_ID_LENGTH: Final = slice(53, 55)
CREDENTIAL_ID_START: Final = 55

FLAG_UP: Final = 0x01
FLAG_UV: Final = 0x04
FLAG_BE: Final = 0x08
FLAG_BS: Final = 0x10
FLAG_AT: Final = 0x40

# COSE_Key labels (RFC 9052 §7, RFC 9053): 1 kty, 3 alg, -1 crv (or n for RSA), -2 x, -3 y.
COSE_KTY: Final = 1
COSE_ALG: Final = 3
COSE_CRV: Final = -1
COSE_X: Final = -2
COSE_Y: Final = -3
COSE_KTY_OKP: Final = 1
COSE_KTY_EC2: Final = 2
COSE_KTY_RSA: Final = 3
COSE_CRV_P256: Final = 1
COSE_CRV_ED25519: Final = 6

KNOWN_TRANSPORTS: Final = frozenset(t.value for t in AuthenticatorTransport)
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")


class Invalid(ValueError):
    """One failed check, with a reason for logs (it becomes ``__cause__`` of the public error)."""


P = ParamSpec("P")
R = TypeVar("R")


def refused_as(error: type[TwostepError]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The edge of untrusted input: any failure of the decorated function raises ``error`` (with the reason
    as its ``__cause__``), an ``error`` raised inside passes as it is; no other exception type escapes for
    any input, so a malformed credential is a refusal, never a 500."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def refusing(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except error:
                raise
            except Exception as exc:
                raise error() from exc

        return refusing

    return decorate


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: object, max_bytes: int) -> bytes:
    """Strict base64url: the URL-safe alphabet, no padding, canonical, at most ``max_bytes``."""
    if not isinstance(value, str):
        raise Invalid("base64url value is not a string")
    if len(value) > (max_bytes * 4 + 2) // 3:
        raise Invalid("base64url value too long")
    if not _B64URL_RE.fullmatch(value) or len(value) % 4 == 1:
        raise Invalid("not unpadded base64url")
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if b64url(data) != value:
        raise Invalid("non-canonical base64url")
    return data


def b64url_field(response: dict[str, object], name: str, max_bytes: int) -> bytes:
    if name not in response:
        raise Invalid(f"response.{name} missing")
    return b64url_decode(response[name], max_bytes)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise Invalid(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def credential_dict(credential: object) -> dict[str, object]:
    """A posted credential (a dict, or its JSON text) as a dict of type ``public-key``."""
    if isinstance(credential, str):
        if len(credential) > MAX_CREDENTIAL_JSON_CHARS:
            raise Invalid("credential JSON too large")
        credential = json.loads(credential, object_pairs_hook=_reject_duplicate_keys)
    if not isinstance(credential, dict) or not all(isinstance(k, str) for k in credential):
        raise Invalid("credential is not a JSON object")
    if credential.get("type") != "public-key":
        raise Invalid("credential type is not public-key")
    return credential


def response_dict(body: dict[str, object]) -> dict[str, object]:
    response = body.get("response")
    if not isinstance(response, dict) or not all(isinstance(k, str) for k in response):
        raise Invalid("credential.response is not an object")
    return response


def raw_id(body: dict[str, object]) -> bytes:
    value = b64url_decode(body.get("rawId"), MAX_CREDENTIAL_ID_BYTES)
    if not value:
        raise Invalid("empty credential id")
    if body.get("id") != body.get("rawId"):
        raise Invalid("id and rawId differ")
    return value


def user_handle(response: dict[str, object]) -> bytes | None:
    value = response.get("userHandle")
    if value is None or value == "":
        return None
    return b64url_decode(value, USER_HANDLE_BYTES)


def check_client_data(
    raw: bytes,
    *,
    expected_type: str,
    expected_challenge: bytes,
    expected_origin: str,
) -> None:
    """WA-R02..R06 / WA-A05..A08 on the exact bytes the authenticator signed over: the challenge is compared
    as the exact base64url string the client put there (py_webauthn decodes it leniently), and
    ``crossOrigin: true`` and any ``topOrigin`` are refused (twostep is never used inside an iframe)."""
    if len(raw) > MAX_CLIENT_DATA_BYTES:
        raise Invalid("clientDataJSON too large")
    text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # strict UTF-8; a BOM is tolerated
    data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    if not isinstance(data, dict):
        raise Invalid("clientDataJSON is not a JSON object")
    if data.get("type") != expected_type:
        raise Invalid("clientDataJSON type mismatch")
    challenge = data.get("challenge")
    if not isinstance(challenge, str) or not hmac.compare_digest(
        challenge.encode("utf-8"), b64url(expected_challenge).encode("ascii")
    ):
        raise Invalid("clientDataJSON challenge mismatch")
    origin = data.get("origin")
    if not isinstance(origin, str) or origin != expected_origin:
        raise Invalid("clientDataJSON origin mismatch")
    if "crossOrigin" in data and data["crossOrigin"] is not False:
        raise Invalid("cross-origin ceremony")
    if "topOrigin" in data:
        raise Invalid("topOrigin present")


def check_auth_data_header(
    auth_data: bytes,
    *,
    expected_rp_id: str,
    require_user_verification: bool,
    require_user_presence: bool = True,
) -> int:
    """rpIdHash, UP (unless a conditional create, WebAuthn L3 §7.1), UV (when required) and the BE/BS
    combination (``BE=0, BS=1`` is refused); returns the flags byte."""
    if len(auth_data) < HEADER_BYTES:
        raise Invalid(f"authenticatorData shorter than {HEADER_BYTES} bytes")
    expected_hash = hashlib.sha256(expected_rp_id.encode("utf-8")).digest()
    if not hmac.compare_digest(auth_data[RP_ID_HASH], expected_hash):
        raise Invalid("rpIdHash mismatch")
    flags = auth_data[FLAGS]
    if require_user_presence and not flags & FLAG_UP:
        raise Invalid("user not present")
    if require_user_verification and not flags & FLAG_UV:
        raise Invalid("user not verified")
    if flags & FLAG_BS and not flags & FLAG_BE:
        raise Invalid("backup state set without backup eligibility")
    return flags


def attested_credential_id(auth_data: bytes, flags: int) -> bytes:
    """The credential id inside the attested credential data (WA-R14: 1 to 1023 bytes)."""
    if not flags & FLAG_AT:
        raise Invalid("no attested credential data")
    if len(auth_data) < CREDENTIAL_ID_START:
        raise Invalid("attested credential data truncated")
    id_length = int.from_bytes(auth_data[CREDENTIAL_ID_LENGTH], "big")
    if not 1 <= id_length <= MAX_CREDENTIAL_ID_BYTES:
        raise Invalid(f"credential id of {id_length} bytes")
    attested = auth_data[CREDENTIAL_ID_START : CREDENTIAL_ID_START + id_length]
    if len(attested) != id_length:
        raise Invalid("attested credential data truncated")
    return attested


def check_public_key(cose_key: bytes) -> int:
    """The COSE key has a supported alg matching its key type and curve, and loads as a valid key (RSA of at
    least 2048 bits); returns the alg."""
    key = cbor2.loads(cose_key)
    if not isinstance(key, dict):
        raise Invalid("COSE key is not a map")
    kty, alg, crv = key.get(COSE_KTY), key.get(COSE_ALG), key.get(COSE_CRV)
    if type(alg) is not int or alg not in SUPPORTED_ALGORITHMS:
        raise Invalid(f"unsupported COSE alg {alg!r}")
    decoded = decoded_public_key_to_cryptography(decode_credential_public_key(cose_key))
    if alg == ES256:
        ok = kty == COSE_KTY_EC2 and crv == COSE_CRV_P256 and isinstance(decoded, EllipticCurvePublicKey)
        ok = ok and len(key.get(COSE_X, b"")) == 32 and len(key.get(COSE_Y, b"")) == 32
    elif alg == EDDSA:
        ok = kty == COSE_KTY_OKP and crv == COSE_CRV_ED25519 and isinstance(decoded, Ed25519PublicKey)
    else:
        ok = kty == COSE_KTY_RSA and isinstance(decoded, RSAPublicKey) and decoded.key_size >= MIN_RSA_BITS
    if not ok:
        raise Invalid(f"COSE key does not match alg {alg}")
    return alg


def clean_transports(value: object) -> list[str]:
    """The known transport names of ``value``, without repeats, at most 16 looked at."""
    if not isinstance(value, list):
        return []
    seen: list[str] = []
    for item in value[:16]:
        if isinstance(item, str) and item in KNOWN_TRANSPORTS and item not in seen:
            seen.append(item)
    return seen
