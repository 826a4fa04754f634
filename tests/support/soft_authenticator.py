"""A software WebAuthn authenticator (and the browser's part of the ceremony) for tests.

``SoftAuthenticator.create()`` answers ``navigator.credentials.create()`` with a RegistrationResponseJSON
dict and ``SoftAuthenticator.get()`` answers ``navigator.credentials.get()`` with an
AuthenticationResponseJSON dict, as a browser's ``PublicKeyCredential.toJSON()`` would. Keys are real (P-256
ECDSA by default, Ed25519 and RSA 2048 on request), so every response is validly signed, and keyword
overrides produce validly signed but *wrong* responses for the negative tests of docs/security.md
SEC-39/SEC-40 (see ``CREATE_OVERRIDES`` and ``GET_OVERRIDES``).

Base64url everywhere is unpadded (``b64url``).
Flag bits: UP=0x01, UV=0x04, BE=0x08, BS=0x10, AT=0x40, ED=0x80.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

__all__ = [
    "AT",
    "BE",
    "BS",
    "CREATE_OVERRIDES",
    "ED",
    "EDDSA",
    "ES256",
    "GET_OVERRIDES",
    "OMIT",
    "RS256",
    "UP",
    "UV",
    "PrivateKey",
    "SoftAuthenticator",
    "SoftAuthenticatorError",
    "SoftCredential",
    "b64url",
    "b64url_decode",
    "cose_public_key",
    "flip_bit",
    "generate_private_key",
    "sign",
    "tamper",
]

UP, UV, BE, BS, AT, ED = 0x01, 0x04, 0x08, 0x10, 0x40, 0x80
ES256, EDDSA, RS256 = -7, -8, -257

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: Pass as an override value to leave a field out (``cross_origin=OMIT``, ``user_handle=OMIT``, ...).
OMIT: Any = _Omit()

# Overrides shared by create() and get().
_COMMON_OVERRIDES = frozenset(
    {
        # clientDataJSON
        "type",  # str: C.type
        "challenge",  # bytes (encoded) or str (used verbatim, e.g. a padded spelling)
        "origin",  # str
        "cross_origin",  # bool, any JSON value, or OMIT (default False)
        "top_origin",  # str (default: absent)
        "client_data_extra",  # dict merged into the client data
        "client_data_json",  # bytes: the raw clientDataJSON, replacing all the above
        # authenticatorData
        "rp_id",  # str hashed into rpIdHash
        "up",
        "uv",
        "be",
        "bs",  # bools for the flag bits
        "flags",  # int: the whole flags byte (wins over up/uv/be/bs/ed)
        "extensions",  # bytes appended as the extensions CBOR (sets ED), or a dict to CBOR-encode
        "sign_count",  # int reported (and remembered) by the authenticator
        "authenticator_data",  # bytes: the raw authenticatorData, replacing all the above
        # signing and JSON shape
        "signing_key",  # PrivateKey that signs instead of the credential's own key
        "mutate_signature",  # Callable[[bytes], bytes] applied to the (assertion or packed) signature
        "id",  # str: PublicKeyCredential.id
        "raw_id",  # str: PublicKeyCredential.rawId
        "attachment",  # str or None: authenticatorAttachment
        "response_extra",  # dict merged into "response"
        "credential_extra",  # dict merged into the top-level object
    }
)
CREATE_OVERRIDES = _COMMON_OVERRIDES | {
    "aaguid",  # 16 bytes
    "algorithm",  # COSE alg of the generated key (-7, -8, -257)
    "private_key",  # PrivateKey to use for the new credential
    "alg_label",  # int: the alg written in the COSE key (key/alg mismatch tests)
    "cose_key",  # bytes: the raw COSE key in the attested credential data
    "credential_id",  # bytes
    "credential_id_length",  # int: a random id of this length
    "fmt",  # str: attestation format (default "none")
    "att_stmt",  # dict: attestation statement, verbatim
    "attestation",  # "none" (default) or "packed" (self attestation signed by the credential key)
    "transports",  # list of str
    "store",  # bool: remember the credential (default True)
}
GET_OVERRIDES = _COMMON_OVERRIDES | {
    "user_handle",  # bytes, or OMIT / None for null
    "signature",  # bytes: the raw signature, replacing the computed one
}


class SoftAuthenticatorError(Exception):
    """What a browser reports as InvalidStateError / NotAllowedError (excluded or unknown credential)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    """``data`` with one bit flipped (``index`` may be negative)."""
    mutable = bytearray(data)
    mutable[index] ^= 1 << bit
    return bytes(mutable)


def tamper(credential: Mapping[str, Any], field: str, change: Callable[[bytes], bytes]) -> dict[str, Any]:
    """A deep copy of a response dict with ``response[field]`` (base64url) decoded, changed and re-encoded."""
    result = copy.deepcopy(dict(credential))
    result["response"][field] = b64url(change(b64url_decode(result["response"][field])))
    return result


def generate_private_key(algorithm: int = ES256) -> PrivateKey:
    if algorithm == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported algorithm {algorithm}")


def _algorithm_of(private_key: PrivateKey) -> int:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return ES256
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return EDDSA
    return RS256


def cose_public_key(private_key: PrivateKey, alg_label: int | None = None) -> bytes:
    """The CBOR COSE_Key of ``private_key``'s public key, labelled with ``alg_label`` (default: its own)."""
    alg = _algorithm_of(private_key) if alg_label is None else alg_label
    key: dict[int, Any]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        numbers = private_key.public_key().public_numbers()
        size = (private_key.curve.key_size + 7) // 8
        crv = {256: 1, 384: 2, 521: 3}[private_key.curve.key_size]
        key = {
            1: 2,
            3: alg,
            -1: crv,
            -2: numbers.x.to_bytes(size, "big"),
            -3: numbers.y.to_bytes(size, "big"),
        }
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        key = {1: 1, 3: alg, -1: 6, -2: raw}
    else:
        rsa_numbers = private_key.public_key().public_numbers()
        n, e = rsa_numbers.n, rsa_numbers.e
        key = {
            1: 3,
            3: alg,
            -1: n.to_bytes((n.bit_length() + 7) // 8, "big"),
            -2: e.to_bytes((e.bit_length() + 7) // 8, "big"),
        }
    return bytes(cbor2.dumps(key))


def sign(private_key: PrivateKey, data: bytes) -> bytes:
    """ES256 (DER), EdDSA, or RS256 (PKCS#1 v1.5) signature, as WebAuthn authenticators make them."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@dataclass
class SoftCredential:
    credential_id: bytes
    private_key: PrivateKey
    rp_id: str
    user_handle: bytes | None
    sign_count: int = 0

    @property
    def algorithm(self) -> int:
        return _algorithm_of(self.private_key)

    @property
    def public_key(self) -> bytes:
        """The COSE public key, as the relying party stores it."""
        return cose_public_key(self.private_key)


class SoftAuthenticator:
    """A passkey provider for one RP ID and one origin, holding any number of credentials."""

    def __init__(
        self,
        rp_id: str,
        origin: str,
        *,
        aaguid: bytes = bytes(16),
        algorithm: int = ES256,
        backup_eligible: bool = False,
        backup_state: bool = False,
        user_verified: bool = True,
        user_present: bool = True,
        sign_count_start: int = 0,
        sign_count_step: int = 1,
        transports: Iterable[str] = ("internal", "hybrid"),
        attachment: str | None = "platform",
        credential_id_length: int = 32,
    ) -> None:
        if len(aaguid) != 16:
            raise ValueError("aaguid must be 16 bytes")
        self.rp_id = rp_id
        self.origin = origin
        self.aaguid = aaguid
        self.algorithm = algorithm
        self.backup_eligible = backup_eligible
        self.backup_state = backup_state
        self.user_verified = user_verified
        self.user_present = user_present
        self.sign_count_start = sign_count_start
        self.sign_count_step = sign_count_step
        self.transports = list(transports)
        self.attachment = attachment
        self.credential_id_length = credential_id_length
        self.credentials: dict[bytes, SoftCredential] = {}
        self._order: list[bytes] = []

    # ------------------------------------------------------------------------------------------ credentials

    def add_credential(
        self,
        credential_id: bytes,
        private_key: PrivateKey,
        *,
        user_handle: bytes | None = None,
        sign_count: int = 0,
    ) -> SoftCredential:
        """Import an existing key, e.g. the W3C test vector's."""
        credential = SoftCredential(credential_id, private_key, self.rp_id, user_handle, sign_count)
        self.credentials[credential_id] = credential
        if credential_id in self._order:
            self._order.remove(credential_id)
        self._order.append(credential_id)
        return credential

    def credential(self, credential_id: bytes | None = None) -> SoftCredential:
        """A credential by id, or the most recently created one."""
        if credential_id is None:
            if not self._order:
                raise SoftAuthenticatorError("no credentials")
            credential_id = self._order[-1]
        try:
            return self.credentials[credential_id]
        except KeyError:
            raise SoftAuthenticatorError("unknown credential") from None

    @property
    def last(self) -> SoftCredential:
        return self.credential()

    # ------------------------------------------------------------------------------------------- ceremonies

    def create(
        self,
        options_or_challenge: Mapping[str, Any] | bytes | str,
        *,
        user_handle: bytes | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A RegistrationResponseJSON for creation options (the dict, optionally under "publicKey"), or for a
        bare challenge (bytes, or its base64url string)."""
        _check_overrides(overrides, CREATE_OVERRIDES)
        options = _options(options_or_challenge)
        challenge = _challenge(options_or_challenge, options)
        if user_handle is None and isinstance(options.get("user"), Mapping):
            user_handle = b64url_decode(options["user"]["id"])
        for excluded in options.get("excludeCredentials") or []:
            if b64url_decode(excluded["id"]) in self.credentials:
                raise SoftAuthenticatorError("InvalidStateError: credential excluded")

        private_key = overrides.get("private_key")
        if private_key is None:
            private_key = generate_private_key(overrides.get("algorithm", self._pick_algorithm(options)))
        if "credential_id" in overrides:
            credential_id = bytes(overrides["credential_id"])
        else:
            credential_id = secrets.token_bytes(
                overrides.get("credential_id_length", self.credential_id_length)
            )
        sign_count = overrides.get("sign_count", self.sign_count_start)

        client_data_json = self._client_data(overrides, "webauthn.create", challenge)
        cose_key = overrides.get("cose_key") or cose_public_key(private_key, overrides.get("alg_label"))
        auth_data = overrides.get("authenticator_data")
        if auth_data is None:
            attested = (
                overrides.get("aaguid", self.aaguid)
                + len(credential_id).to_bytes(2, "big")
                + credential_id
                + cose_key
            )
            auth_data = self._auth_data(overrides, sign_count, AT, attested)

        fmt = overrides.get("fmt")
        att_stmt = overrides.get("att_stmt")
        if overrides.get("attestation", "none") == "packed":
            fmt = "packed" if fmt is None else fmt
            if att_stmt is None:
                signature = sign(
                    overrides.get("signing_key", private_key),
                    auth_data + hashlib.sha256(client_data_json).digest(),
                )
                signature = overrides.get("mutate_signature", _same)(signature)
                att_stmt = {"alg": overrides.get("alg_label", _algorithm_of(private_key)), "sig": signature}
        attestation_object = bytes(
            cbor2.dumps(
                {
                    "fmt": "none" if fmt is None else fmt,
                    "attStmt": {} if att_stmt is None else att_stmt,
                    "authData": auth_data,
                }
            )
        )

        if overrides.get("store", True):
            credential = self.add_credential(credential_id, private_key, user_handle=user_handle)
            credential.sign_count = sign_count

        public_key_der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data_json),
            "attestationObject": b64url(attestation_object),
            "transports": list(overrides.get("transports", self.transports)),
            "authenticatorData": b64url(auth_data),
            "publicKey": b64url(public_key_der),
            "publicKeyAlgorithm": _algorithm_of(private_key),
        }
        return self._envelope(overrides, credential_id, response)

    def get(
        self,
        options_or_challenge: Mapping[str, Any] | bytes | str,
        *,
        credential_id: bytes | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """An AuthenticationResponseJSON for request options (the dict, optionally under "publicKey"), or for
        a bare challenge. Uses ``credential_id``, else the newest credential in ``allowCredentials``, else the
        newest credential (a discoverable request)."""
        _check_overrides(overrides, GET_OVERRIDES)
        options = _options(options_or_challenge)
        challenge = _challenge(options_or_challenge, options)
        if credential_id is None:
            allowed = [b64url_decode(c["id"]) for c in options.get("allowCredentials") or []]
            if allowed:
                usable = [cid for cid in reversed(self._order) if cid in allowed]
                if not usable:
                    raise SoftAuthenticatorError("NotAllowedError: no allowed credential here")
                credential_id = usable[0]
        credential = self.credential(credential_id)

        if "sign_count" in overrides:
            sign_count = int(overrides["sign_count"])
        else:
            sign_count = credential.sign_count + self.sign_count_step
        credential.sign_count = sign_count

        client_data_json = self._client_data(overrides, "webauthn.get", challenge)
        auth_data = overrides.get("authenticator_data")
        if auth_data is None:
            auth_data = self._auth_data(overrides, sign_count, 0, b"")
        signature = overrides.get("signature")
        if signature is None:
            signature = sign(
                overrides.get("signing_key", credential.private_key),
                auth_data + hashlib.sha256(client_data_json).digest(),
            )
            signature = overrides.get("mutate_signature", _same)(signature)
        user_handle = overrides.get("user_handle", credential.user_handle)
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data_json),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if user_handle is not OMIT:
            response["userHandle"] = None if user_handle is None else b64url(user_handle)
        return self._envelope(overrides, credential.credential_id, response)

    # ---------------------------------------------------------------------------------------------- helpers

    def _pick_algorithm(self, options: Mapping[str, Any]) -> int:
        params = options.get("pubKeyCredParams")
        if not params:
            return self.algorithm
        offered = [p.get("alg") for p in params if p.get("type") == "public-key"]
        if self.algorithm in offered:
            return self.algorithm
        for alg in offered:
            if alg in (ES256, EDDSA, RS256):
                return int(alg)
        raise SoftAuthenticatorError("NotSupportedError: no supported pubKeyCredParams")

    def _client_data(self, overrides: Mapping[str, Any], default_type: str, challenge: bytes) -> bytes:
        if "client_data_json" in overrides:
            return bytes(overrides["client_data_json"])
        raw_challenge = overrides.get("challenge", challenge)
        data: dict[str, Any] = {
            "type": overrides.get("type", default_type),
            "challenge": raw_challenge if isinstance(raw_challenge, str) else b64url(raw_challenge),
            "origin": overrides.get("origin", self.origin),
        }
        cross_origin = overrides.get("cross_origin", False)
        if cross_origin is not OMIT:
            data["crossOrigin"] = cross_origin
        if "top_origin" in overrides:
            data["topOrigin"] = overrides["top_origin"]
        data.update(overrides.get("client_data_extra", {}))
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    def _auth_data(
        self, overrides: Mapping[str, Any], sign_count: int, extra_flags: int, attested: bytes
    ) -> bytes:
        extensions = overrides.get("extensions", b"")
        if isinstance(extensions, Mapping):
            extensions = bytes(cbor2.dumps(dict(extensions)))
        flags = extra_flags
        flags |= UP if overrides.get("up", self.user_present) else 0
        flags |= UV if overrides.get("uv", self.user_verified) else 0
        flags |= BE if overrides.get("be", self.backup_eligible) else 0
        flags |= BS if overrides.get("bs", self.backup_state) else 0
        flags |= ED if extensions else 0
        flags = int(overrides.get("flags", flags))
        rp_id_hash = hashlib.sha256(overrides.get("rp_id", self.rp_id).encode("utf-8")).digest()
        return rp_id_hash + bytes([flags]) + sign_count.to_bytes(4, "big") + attested + bytes(extensions)

    def _envelope(
        self, overrides: Mapping[str, Any], credential_id: bytes, response: dict[str, Any]
    ) -> dict[str, Any]:
        response.update(overrides.get("response_extra", {}))
        result: dict[str, Any] = {
            "id": overrides.get("id", b64url(credential_id)),
            "rawId": overrides.get("raw_id", b64url(credential_id)),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
        }
        attachment = overrides.get("attachment", self.attachment)
        if attachment is not None:
            result["authenticatorAttachment"] = attachment
        result.update(overrides.get("credential_extra", {}))
        return result


def _same(value: bytes) -> bytes:
    return value


def _check_overrides(overrides: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(overrides) - allowed
    if unknown:
        raise TypeError(f"unknown overrides: {sorted(unknown)}")


def _options(options_or_challenge: Mapping[str, Any] | bytes | str) -> Mapping[str, Any]:
    if isinstance(options_or_challenge, Mapping):
        inner = options_or_challenge.get("publicKey", options_or_challenge)
        return inner if isinstance(inner, Mapping) else {}
    return {}


def _challenge(options_or_challenge: Mapping[str, Any] | bytes | str, options: Mapping[str, Any]) -> bytes:
    if isinstance(options_or_challenge, bytes):
        return options_or_challenge
    if isinstance(options_or_challenge, str):
        return b64url_decode(options_or_challenge)
    return b64url_decode(options["challenge"])
