"""Verifying a registration (``navigator.credentials.create()``): the WA-R rows of SEC-39 that are pure
checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import cbor2
from webauthn import verify_registration_response
from webauthn.helpers.cose import COSEAlgorithmIdentifier

from twostep.core.errors import PasskeyRegistrationRejected
from twostep.core.passkeys import wire
from twostep.core.passkeys.providers import ZERO_AAGUID
from twostep.core.passkeys.wire import Invalid


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


def _attestation(response: dict[str, object], *, expected_challenge: bytes, expected_origin: str) -> bytes:
    """The authenticator data of an attestation response, once its shape and client data are checked; a
    ``none`` attestation must carry an empty ``attStmt`` (WA-R12; py_webauthn ignores unknown members)."""
    # WA-R01: an assertion has no attestationObject.
    if "attestationObject" not in response or "signature" in response:
        raise Invalid("not an attestation response")
    wire.check_client_data(  # WA-R02 .. WA-R06
        wire.b64url_field(response, "clientDataJSON", wire.MAX_CLIENT_DATA_BYTES),
        expected_type="webauthn.create",
        expected_challenge=expected_challenge,
        expected_origin=expected_origin,
    )
    att = cbor2.loads(wire.b64url_field(response, "attestationObject", wire.MAX_ATTESTATION_OBJECT_BYTES))
    if not isinstance(att, dict):
        raise Invalid("attestationObject is not a map")
    fmt, att_stmt, auth_data = att.get("fmt"), att.get("attStmt"), att.get("authData")
    if not isinstance(fmt, str) or not isinstance(att_stmt, dict) or not isinstance(auth_data, bytes):
        raise Invalid("attestationObject lacks fmt, attStmt or authData")
    if fmt == "none" and att_stmt:
        raise Invalid("none attestation with a non-empty attStmt")
    return auth_data


@wire.refused_as(PasskeyRegistrationRejected)
def verify_registration(
    *,
    credential: object,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    require_user_verification: bool = False,
    require_user_presence: bool = True,
) -> RegisteredPasskey:
    """Verify a RegistrationResponseJSON (a dict, or its JSON text) against the issued challenge.

    WA-R13 (attestation trust) is policy "none": any supported, correctly formed attestation statement is
    accepted and no trust chain is required. WA-R15/R17 (uniqueness, storing) are the service's job.

    Raises:
        PasskeyRegistrationRejected: for every failure, with the reason as ``__cause__``.
    """
    body = wire.credential_dict(credential)
    raw_id = wire.raw_id(body)
    response = wire.response_dict(body)
    auth_data = _attestation(response, expected_challenge=expected_challenge, expected_origin=expected_origin)
    flags = wire.check_auth_data_header(
        auth_data,
        expected_rp_id=expected_rp_id,
        require_user_verification=require_user_verification,
        require_user_presence=require_user_presence,
    )
    if not hmac.compare_digest(wire.attested_credential_id(auth_data, flags), raw_id):  # WA-R14
        raise Invalid("rawId differs from the credential id in authenticatorData")
    verified = verify_registration_response(
        credential=body,
        expected_challenge=expected_challenge,
        expected_rp_id=expected_rp_id,
        expected_origin=expected_origin,
        require_user_presence=require_user_presence,
        require_user_verification=require_user_verification,
        supported_pub_key_algs=[COSEAlgorithmIdentifier(alg) for alg in wire.SUPPORTED_ALGORITHMS],
    )
    if verified.credential_id != raw_id:
        raise Invalid("verified credential id differs from rawId")
    algorithm = wire.check_public_key(verified.credential_public_key)  # WA-R11
    return RegisteredPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        algorithm=algorithm,
        sign_count=verified.sign_count,
        aaguid=(verified.aaguid or ZERO_AAGUID).lower(),
        backup_eligible=bool(flags & wire.FLAG_BE),
        backup_state=bool(flags & wire.FLAG_BS),
        user_verified=bool(flags & wire.FLAG_UV),
        transports=wire.clean_transports(response.get("transports")),
    )
