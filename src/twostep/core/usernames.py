"""Usernames: the identity of an account is its username in NFKC, case-folded (SEC-05)."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_USERNAME: Final = re.compile(r"^[\w.@+-]{3,64}$")


def normalize_username(raw: str) -> str | None:
    """NFKC then casefold; None unless 3 to 64 characters of letters, digits and . _ @ + -.

    Raises: nothing.
    """
    if len(raw) > 256:
        return None
    value = unicodedata.normalize("NFKC", raw).casefold()
    value = unicodedata.normalize("NFKC", value)
    if not _USERNAME.fullmatch(value):
        return None
    return value
