"""WebAuthn (passkey) ceremonies, in py_webauthn's layout: options, registration, assertion, the wire
formats (wire) and the providers' names (providers). This package re-exports the public names.

Built on py_webauthn (``webauthn``), plus the relying-party checks of WebAuthn L3 that it leaves out, so that
every row of docs/security.md SEC-39 (WA-R*) and SEC-40 (WA-A*) that is a pure check holds here:

* the challenge is compared as the exact base64url string the client put in ``clientDataJSON`` (py_webauthn
  decodes it leniently, so a padded or standard-base64 spelling of the right bytes would match);
* ``crossOrigin: true`` and any ``topOrigin`` are refused (twostep is never used inside an iframe);
* ``BE=0, BS=1`` is refused; for an assertion, a BE that differs from the stored backup eligibility is
  reported (``backup_eligibility_changed``), not refused (security.md WA-A13);
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

from twostep.core.passkeys.assertion import (
    SignCountRegression,
    VerifiedAssertion,
    credential_id_of,
    sign_count_ok,
    user_handle_of,
    verify_authentication,
)
from twostep.core.passkeys.options import (
    CHALLENGE_BYTES,
    TIMEOUT_MS,
    CeremonyOptions,
    authentication_options,
    generate_user_handle,
    registration_options,
)
from twostep.core.passkeys.providers import ZERO_AAGUID, provider_name
from twostep.core.passkeys.registration import RegisteredPasskey, verify_registration
from twostep.core.passkeys.wire import (
    MAX_CREDENTIAL_ID_BYTES,
    SUPPORTED_ALGORITHMS,
    USER_HANDLE_BYTES,
    b64url,
)

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
    "b64url",
    "credential_id_of",
    "generate_user_handle",
    "provider_name",
    "registration_options",
    "sign_count_ok",
    "user_handle_of",
    "verify_authentication",
    "verify_registration",
]
