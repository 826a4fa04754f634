"""The rules every text input obeys, in the JSON API and in the page forms alike (H10).

No text input may carry a control character: names, usernames, codes and e-mail addresses refuse every
character of Unicode category Cc (C0, DEL, C1) and lone surrogates; passwords, which are only ever hashed,
refuse NUL and lone surrogates. A path with a control character leads nowhere (the guard middleware).
"""

from __future__ import annotations

import unicodedata
from typing import Any


def has_control(value: str) -> bool:
    """True when ``value`` holds a control character (Unicode category Cc: C0, DEL, C1) or a lone
    surrogate (Cs), which no text field, name or id of twostep may contain (H10)."""
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def text_without_controls(value: str) -> str:
    if has_control(value):
        raise ValueError("control characters are not allowed")
    return value


def secret_without_nul(value: str) -> str:
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("NUL and unpaired surrogates are not allowed")
    return value


def json_without_controls(value: Any) -> Any:
    """A credential object: no string in it, key or value, at any depth, has a control character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text_without_controls(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value
