"""Ceremony options: what the browser's ``navigator.credentials.create()`` and ``.get()`` are given."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from webauthn import generate_authentication_options, generate_registration_options
from webauthn.helpers import options_to_json_dict
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialHint,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from twostep.core.passkeys.wire import SUPPORTED_ALGORITHMS, USER_HANDLE_BYTES, clean_transports

CHALLENGE_BYTES: Final = 32
TIMEOUT_MS: Final = 300_000

_USER_VERIFICATION: Final = {
    "required": UserVerificationRequirement.REQUIRED,
    "preferred": UserVerificationRequirement.PREFERRED,
    "discouraged": UserVerificationRequirement.DISCOURAGED,
}


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
    hints: list[str] | None = None,
    user_verification: str = "preferred",
) -> CeremonyOptions:
    """Options for ``navigator.credentials.create()`` (SEC-38). ``hints`` (WebAuthn L3): what the person chose
    ("security-key", "client-device", "hybrid"); ``user_verification`` "preferred" or "discouraged" (the
    automatic upgrade asks for none).

    Raises:
        ValueError: the user handle is not 1 to 64 bytes.
    """
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
            user_verification=UserVerificationRequirement(user_verification),
        ),
        hints=[PublicKeyCredentialHint(h) for h in hints] if hints else None,
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

    Raises:
        ValueError: an unknown ``user_verification``.
    """
    try:
        uv = _USER_VERIFICATION[user_verification]
    except KeyError:
        raise ValueError(f"unknown user_verification {user_verification!r}") from None
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    descriptors = [
        PublicKeyCredentialDescriptor(
            id=bytes(cid),
            transports=[AuthenticatorTransport(t) for t in clean_transports(transports)] or None,
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
