"""Device cookies (H07): proof that a browser has signed in to an account with its current password before.

A cookie holds up to ``MAX_ENTRIES`` entries ``<random id>.<tag>``, one per account. The tag is an
HMAC-SHA256 under a key of its own over the random id, the account's normalised username and its current
password hash, so an entry names one account without saying which, cannot be forged or moved to another
account, and stops working when the password changes. The server keeps no state for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

MAX_ENTRIES: Final = 5
MAX_COOKIE_CHARS: Final = 1024
_SEPARATOR: Final = "~"
_LABEL: Final = b"twostep device v1\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _tag(key: bytes, device_id: str, username: str, password_hash: str) -> str:
    message = b"\x00".join((_LABEL, device_id.encode(), username.encode(), password_hash.encode()))
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def _entries(cookie: str | None) -> list[str]:
    if not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return []
    return [entry for entry in cookie.split(_SEPARATOR) if entry][:MAX_ENTRIES]


def _matches(key: bytes, entry: str, username: str, password_hash: str) -> bool:
    device_id, _, tag = entry.partition(".")
    if not device_id or not tag:
        return False
    return hmac.compare_digest(_tag(key, device_id, username, password_hash).encode(), tag.encode())


def is_known_device(*, key: bytes, cookie: str | None, username: str, password_hash: str) -> bool:
    """Whether ``cookie`` holds an entry for this account and password. Raises: nothing."""
    return any(_matches(key, entry, username, password_hash) for entry in _entries(cookie))


def remember_device(*, key: bytes, cookie: str | None, username: str, password_hash: str) -> str:
    """The cookie value after a sign-in: a new entry for this account first, then up to
    ``MAX_ENTRIES - 1`` entries of other accounts (an older entry of this account is dropped).

    Raises: nothing.
    """
    device_id = secrets.token_urlsafe(16)
    fresh = f"{device_id}.{_tag(key, device_id, username, password_hash)}"
    others = [e for e in _entries(cookie) if not _matches(key, e, username, password_hash)]
    return _SEPARATOR.join([fresh, *others[: MAX_ENTRIES - 1]])
