"""The error tree of twostep. Each class carries the stable ``code`` of docs/api.md.

TwostepError
├── InvalidRequest            invalid_request (422), may name its field
│   └── MalformedRequest      invalid_request (400: the HTTP request itself, e.g. its Content-Length)
├── InvalidCredentials        invalid_credentials (401)
├── NotSignedIn               not_signed_in (401)
├── NoPendingLogin            no_pending_login (401)
├── InvalidCode               invalid_code (401: sign-in and verify access)
│   └── InvalidEnrollmentCode invalid_code (400: enrolment), may carry clock_skew_seconds
├── PasskeyRejected           passkey_rejected (401: sign-in and verify access)
│   ├── UnknownPasskey        passkey_rejected (401) with unknown_credential: nobody has it
│   └── PasskeyRegistrationRejected passkey_rejected (400: enrolment)
├── TooManyAttempts           too_many_attempts (429), carries retry_after
├── VerifyAccessRequired      verify_access_required (403)
├── CrossSiteRequest          cross_site_request (403)
├── AccessDenied              access_denied (403: forward authentication, a rule refuses this account)
│   └── TwoFactorRequired     two_factor_required (403: a two_factor rule, an account without a factor)
├── UsernameTaken             username_taken (409)
├── NameTaken                 name_taken (409)
├── WeakPassword              weak_password (422), carries the reason
├── TwoFactorNotEnabled       two_factor_not_enabled (409)
├── EnrollmentExpired         enrollment_expired (410)
├── NotFound                  not_found (404)
├── UnsupportedMediaType      unsupported_media_type (415)
├── PayloadTooLarge           payload_too_large (413)
├── Busy                      busy (503), carries retry_after
├── Unavailable               unavailable (503), carries retry_after: the database cannot be reached
├── SignupClosed              signup_closed (403), carries reason: "closed", "invitation_required" or
│                             "invitation_invalid"
├── AccountLocked             account_locked (403)
└── LinkInvalid               link_invalid (410: an e-mail verification link used, expired or unknown)

Services raise these; only ``twostep.web.errors`` turns them into HTTP responses, with its one table of
statuses. An error about one input names it in ``field`` ("username", "email", "password"), so that a form
can show the message beside that input.

A message that names something (a username, an address) is a template with ``%(name)s`` places, marked for
the catalogue where it is raised, and the values travel beside it in ``params``: ``text`` translates the
template first and fills the places after, so that a translation can put them where its grammar wants
(issue 19). A message is never built with an f-string: such a sentence is not in any catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def _as_written(message: str) -> str:
    return message


class TwostepError(Exception):
    """Base of every error a client may see; ``code`` is stable, ``message`` is for a person (a sentence, or
    a template whose ``%(name)s`` places ``params`` fill: read it with ``text``, never directly)."""

    code = "error"
    message = "Something went wrong."
    field: str | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if field is not None:
            self.field = field
        self.params: dict[str, object] = dict(params or {})
        super().__init__(self.text())

    def text(self, translate: Callable[[str], str] = _as_written) -> str:
        """The sentence for a person: ``message`` translated by ``translate`` (English as written without
        one), then ``params`` put in its places. A template without params is used as it is."""
        template = translate(self.message)
        return template % self.params if self.params else template

    def extra(self) -> dict[str, object]:
        """Fields added to the error body besides ``error`` and ``message``."""
        return {}


class InvalidRequest(TwostepError):
    code = "invalid_request"
    message = "The request is not valid."


class MalformedRequest(InvalidRequest):
    """The HTTP request itself cannot be read (400, not 422)."""


class InvalidCredentials(TwostepError):
    code = "invalid_credentials"
    message = "The username or password is not correct."


class NotSignedIn(TwostepError):
    code = "not_signed_in"
    message = "You are not signed in."


class NoPendingLogin(TwostepError):
    code = "no_pending_login"
    message = "There is no sign-in waiting for a second factor. Sign in with your password first."


class InvalidCode(TwostepError):
    code = "invalid_code"
    message = "The code is not valid."


class InvalidEnrollmentCode(InvalidCode):
    """A wrong code while confirming a new authenticator app (400, not 401)."""

    def __init__(self, message: str | None = None, *, clock_skew_seconds: int | None = None) -> None:
        super().__init__(message)
        self.clock_skew_seconds = clock_skew_seconds

    def extra(self) -> dict[str, object]:
        if self.clock_skew_seconds is None:
            return {}
        return {"clock_skew_seconds": self.clock_skew_seconds}


class PasskeyRejected(TwostepError):
    code = "passkey_rejected"
    message = "The passkey could not be verified."


class UnknownPasskey(PasskeyRejected):
    """A passwordless assertion of a credential that no account has (any more): the answer says so, so that
    the page can tell the password manager (``PublicKeyCredential.signalUnknownCredential``)."""

    def extra(self) -> dict[str, object]:
        return {"unknown_credential": True}


class PasskeyRegistrationRejected(PasskeyRejected):
    """A passkey refused while adding it (400, not 401)."""

    message = "The passkey could not be added."


class TooManyAttempts(TwostepError):
    code = "too_many_attempts"
    message = "Too many attempts. Wait a little and try again."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def extra(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


class VerifyAccessRequired(TwostepError):
    code = "verify_access_required"
    message = "Confirm it is you before making this change."


class CrossSiteRequest(TwostepError):
    code = "cross_site_request"
    message = "This request came from another site and was refused."


class AccessDenied(TwostepError):
    """Forward authentication: signed in, but the access rules keep this account from the application."""

    code = "access_denied"
    message = "Your account may not open this application."


class TwoFactorRequired(AccessDenied):
    """Forward authentication: a two_factor rule, and the account has no second factor yet."""

    code = "two_factor_required"
    message = "This application needs two-step verification. Set it up, then open the application again."


class UsernameTaken(TwostepError):
    code = "username_taken"
    message = "That username is taken."
    field = "username"


class NameTaken(TwostepError):
    code = "name_taken"
    message = "You already have a second factor with that name."


class WeakPassword(TwostepError):
    code = "weak_password"
    message = "Choose a stronger password."
    field = "password"


class TwoFactorNotEnabled(TwostepError):
    code = "two_factor_not_enabled"
    message = "Two-step verification is not turned on."


class EnrollmentExpired(TwostepError):
    code = "enrollment_expired"
    message = "This setup has expired. Start again."


class NotFound(TwostepError):
    code = "not_found"
    message = "Not found."


class UnsupportedMediaType(TwostepError):
    code = "unsupported_media_type"
    message = "Send JSON with Content-Type: application/json."


class PayloadTooLarge(TwostepError):
    code = "payload_too_large"
    message = "The request body is larger than 64 KiB."


class Busy(TwostepError):
    """Too many password hashes waiting in this worker (H03): try again shortly; nothing was evaluated."""

    code = "busy"
    message = "The service is busy right now. Try again in a moment."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def extra(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


class Unavailable(TwostepError):
    """The database cannot be reached (stopped, restarting, disk full): try again shortly. Raised by
    ``storage.db`` for a driver error that is about the connection, not about the request."""

    code = "unavailable"
    message = "The service is unavailable right now. Try again in a moment."

    def __init__(self, retry_after: int = 5, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def extra(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


INVITATION_REQUIRED = "Sign-up on this site needs an invitation. Ask its operator for one."
INVITATION_INVALID = (
    "This invitation cannot be used: it was used already, has expired, or does not exist. "
    "Ask the operator of this site for a new one."
)
# The sentences of this module that are not a class's ``message`` (i18n.extract_error_messages takes both).
MESSAGES = (INVITATION_REQUIRED, INVITATION_INVALID)


class SignupClosed(TwostepError):
    """Sign-up is closed, or needs a valid invitation (docs/api.md "Who may have an account")."""

    code = "signup_closed"
    message = "Sign-up is closed on this site."

    def __init__(self, reason: str = "closed", message: str | None = None) -> None:
        if message is None and reason == "invitation_required":
            message = INVITATION_REQUIRED
        elif message is None and reason == "invitation_invalid":
            message = INVITATION_INVALID
        super().__init__(message)
        self.reason = reason

    def extra(self) -> dict[str, object]:
        return {"reason": self.reason}


class AccountLocked(TwostepError):
    """An operator locked the account: no sign-in, passkey sign-in or verify access until unlocked. Said
    only after a correct password or a valid passkey (never an oracle of which accounts are locked)."""

    code = "account_locked"
    message = "This account is locked. Ask the operator of this site to unlock it."


class LinkInvalid(TwostepError):
    """An e-mail verification link that was used, expired or never existed."""

    code = "link_invalid"
    message = "This link cannot be used: it was used already or has expired. Ask for a new one."
