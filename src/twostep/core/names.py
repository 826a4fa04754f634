"""Usernames and group names as twostep compares them: NFKC, then case-folded, then NFKC again.

The identity of an account is its normalised username; a group is its normalised name. Both are compared
only in this form, wherever they come from (a sign-up form, the database, an access rule of the
configuration file), so that ``Alice`` in a rule and ``alice`` at sign-up are the same person.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# Letters, digits and . _ @ + - (\w is Unicode-aware): no spaces, no control characters, nothing that needs
# quoting in a header or a TOML key.
_USERNAME: Final = re.compile(r"[\w.@+-]{3,64}")
_GROUP: Final = re.compile(r"[\w.@+-]{1,64}")
# Longer input is refused before normalising it (NFKC can expand a character up to 18 times).
_MAX_RAW: Final = 256


def _fold(raw: str) -> str:
    value = unicodedata.normalize("NFKC", raw).casefold()
    return unicodedata.normalize("NFKC", value)


def normalize_username(raw: str) -> str | None:
    """The normalised username, or None unless it is 3 to 64 letters, digits and . _ @ + - once normalised."""
    if len(raw) > _MAX_RAW:
        return None
    value = _fold(raw)
    return value if _USERNAME.fullmatch(value) else None


def normalize_group(raw: str) -> str | None:
    """The normalised group name, or None unless it has 1 to 64 letters, digits and . _ @ + - once
    normalised."""
    if len(raw) > _MAX_RAW:
        return None
    value = _fold(raw)
    return value if _GROUP.fullmatch(value) else None
