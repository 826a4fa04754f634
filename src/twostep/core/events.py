"""The security events of an account's log (GET /security-events): one name for each kind of event.

A ``StrEnum``: stored and sent as its string value, and a typo is an AttributeError, not an event that no
table knows (the e-mails of services/notifications.py and the labels of the security-log page are keyed by
it).
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class EventType(StrEnum):
    ACCOUNT_CREATED = "account_created"
    SIGNED_IN = "signed_in"
    PASSWORD_FAILED = "password_failed"  # noqa: S105 (an event name, not a password)
    SECOND_FACTOR_FAILED = "second_factor_failed"
    SECOND_FACTOR_ABANDONED = "second_factor_abandoned"
    SECOND_FACTOR_LOCKED = "second_factor_locked"
    TOTP_REPLAY = "totp_replay"
    PASSKEY_COUNTER_REGRESSED = "passkey_counter_regressed"
    PASSKEY_SIGN_IN_FAILED = "passkey_sign_in_failed"
    FACTOR_ADDED = "factor_added"
    FACTOR_RENAMED = "factor_renamed"
    FACTOR_REMOVED = "factor_removed"
    TWO_FACTOR_ENABLED = "two_factor_enabled"
    TWO_FACTOR_DISABLED = "two_factor_disabled"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    ACCESS_VERIFIED = "access_verified"
    VERIFY_ACCESS_FAILED = "verify_access_failed"
    SESSION_ENDED = "session_ended"
    OTHER_SESSIONS_ENDED = "other_sessions_ended"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an event name)
    # Trusted browsers (docs/api.md "Trusted browsers"): one trusted after a second step, and trust ended.
    BROWSER_TRUSTED = "browser_trusted"
    TRUSTED_BROWSERS_REVOKED = "trusted_browsers_revoked"
    # The password manager made a passkey by itself right after a password sign-in (conditional create).
    PASSKEY_ADDED_AUTOMATICALLY = "passkey_added_automatically"
    # A passkey's backup eligibility (the BE flag) differs from the stored one; the new value is stored.
    PASSKEY_BACKUP_ELIGIBILITY_CHANGED = "passkey_backup_eligibility_changed"
    # Operators (docs/api.md "Who may have an account").
    OPERATOR_LOCKED = "operator_locked"
    OPERATOR_UNLOCKED = "operator_unlocked"
    OPERATOR_GROUPS_CHANGED = "operator_groups_changed"
    OPERATOR_DELETED = "operator_deleted"
    # The e-mail address.
    EMAIL_CHANGED = "email_changed"
    EMAIL_VERIFIED = "email_verified"
    # An application signed the account holder in through twostep (OpenID Connect); detail: the client.
    OIDC_SIGN_IN = "oidc_sign_in"
