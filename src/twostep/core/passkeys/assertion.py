"""Verifying an assertion (``navigator.credentials.get()``): SEC-40, the WA-A rows that are pure checks.

The database-level rows (WA-A02..A04, WA-A16) are the service's job; ``credential_id_of`` and
``user_handle_of`` help it look the credential up first.
"""

from __future__ import annotations

from dataclasses import dataclass

from webauthn import verify_authentication_response

from twostep.core.errors import PasskeyRejected
from twostep.core.passkeys import wire
from twostep.core.passkeys.wire import Invalid


class SignCountRegression(PasskeyRejected):
    """A validly signed assertion whose signature counter did not increase (security.md §0.5, WA-A15).

    A possible cloned authenticator: the service refuses the assertion and records a security event.
    """

    def __init__(self, *, stored: int, received: int) -> None:
        super().__init__()
        self.stored = stored
        self.received = received


@dataclass(frozen=True)
class VerifiedAssertion:
    new_sign_count: int
    backup_eligible: bool
    backup_state: bool
    user_verified: bool
    # The BE flag differs from the stored one (WA-A13): not refused, reported (docs/security.md, WA-A13).
    backup_eligibility_changed: bool = False


def sign_count_ok(*, stored: int, received: int) -> bool:
    """security.md §0.5: if either count is non-zero the new one must be greater; 0 and 0 is accepted."""
    if stored == 0 and received == 0:
        return True
    return received > stored


def _assertion(
    credential: object, *, expected_challenge: bytes, expected_origin: str
) -> tuple[dict[str, object], bytes]:
    """The credential's dict and its authenticator data, once its shape and client data are checked."""
    body = wire.credential_dict(credential)
    wire.raw_id(body)
    response = wire.response_dict(body)
    # WA-A01: an attestation response has no signature.
    if "attestationObject" in response or "signature" not in response:
        raise Invalid("not an assertion response")
    wire.user_handle(response)
    wire.check_client_data(  # WA-A05 .. WA-A08
        wire.b64url_field(response, "clientDataJSON", wire.MAX_CLIENT_DATA_BYTES),
        expected_type="webauthn.get",
        expected_challenge=expected_challenge,
        expected_origin=expected_origin,
    )
    auth_data = wire.b64url_field(response, "authenticatorData", wire.MAX_AUTHENTICATOR_DATA_BYTES)
    wire.b64url_field(response, "signature", wire.MAX_SIGNATURE_BYTES)
    return body, auth_data


@wire.refused_as(PasskeyRejected)
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
    :func:`user_handle_of` (WA-A04).

    Raises:
        PasskeyRejected: for every failure, with the reason as ``__cause__``.
        SignCountRegression: a validly signed assertion whose counter did not increase (WA-A15).
    """
    body, auth_data = _assertion(
        credential, expected_challenge=expected_challenge, expected_origin=expected_origin
    )
    flags = wire.check_auth_data_header(  # WA-A09 .. WA-A12
        auth_data, expected_rp_id=expected_rp_id, require_user_verification=require_user_verification
    )
    backup_eligible = bool(flags & wire.FLAG_BE)
    # WA-A13: a change of BE is not refused (some platforms flip it; refusing locks the person out of a
    # validly signed passkey). It is reported, and the caller records it and stores the new value.
    changed = backup_eligible != stored_backup_eligible
    wire.check_public_key(public_key)
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
        backup_state=bool(flags & wire.FLAG_BS),
        user_verified=bool(flags & wire.FLAG_UV),
        backup_eligibility_changed=changed,
    )


@wire.refused_as(PasskeyRejected)
def credential_id_of(credential: object) -> bytes:
    """The credential id (``rawId``, which must agree with ``id``) of a posted credential.

    Raises:
        PasskeyRejected: it is missing or malformed.
    """
    return wire.raw_id(wire.credential_dict(credential))


@wire.refused_as(PasskeyRejected)
def user_handle_of(credential: object) -> bytes | None:
    """The ``response.userHandle`` of a posted assertion, or ``None`` when absent, null or empty.

    Raises:
        PasskeyRejected: it is malformed.
    """
    return wire.user_handle(wire.response_dict(wire.credential_dict(credential)))
