"""The closed sets of names that the layers pass to each other and store: factor kinds, sign-in methods,
session kinds and passkey challenge purposes. ``StrEnum``s, stored and sent as their string values."""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class FactorKind(StrEnum):
    """The ``type`` of a second factor (the factors table, GET /factors)."""

    TOTP = "totp"
    PASSKEY = "passkey"


@unique
class Method(StrEnum):
    """How a sign-in or a verification was made: the ``method`` of its event, and what the session's
    ``second_factor`` records (``session_factor``)."""

    PASSWORD = "password"  # noqa: S105 (a method name, not a password)
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    PASSKEY = "passkey"
    PASSKEY_PASSWORDLESS = "passkey_passwordless"
    # The password, in a browser the account trusts (docs/api.md "Trusted browsers"): one factor.
    TRUSTED_BROWSER = "trusted_browser"

    @property
    def session_factor(self) -> Method | None:
        """The session's ``second_factor``: None for the password alone (also in a trusted browser);
        passwordless is a passkey."""
        if self in (Method.PASSWORD, Method.TRUSTED_BROWSER):
            return None
        if self is Method.PASSKEY_PASSWORDLESS:
            return Method.PASSKEY
        return self

    @property
    def is_second_factor(self) -> bool:
        return self not in (Method.PASSWORD, Method.TRUSTED_BROWSER)


@unique
class SessionKind(StrEnum):
    """A row of the sessions table: signed in, or a sign-in that still owes its second factor."""

    ACTIVE = "active"
    PENDING = "pending"


@unique
class ChallengePurpose(StrEnum):
    """What a stored WebAuthn challenge is for; a challenge is taken only for its own purpose."""

    REGISTER = "register"
    LOGIN = "login"
    PASSWORDLESS = "passwordless"
    VERIFY = "verify"
    # The automatic passkey upgrade (conditional create) right after a password sign-in.
    REGISTER_AUTOMATIC = "register_automatic"
