"""Recovery codes: 16 Crockford base32 characters (80 bits), a clear 2-character selector, argon2id hashes.

A code such as ``7K2M-QX9D-...`` splits into a selector (first 2 characters, unique within a set, stored in
clear so one attempt costs at most one slow-hash verification) and a 14-character secret (70 bits) stored
only as a salted argon2id PHC string (SEC-30, SEC-31, SEC-37).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from twostep.core.guards import no_transaction_open

COUNT: Final = 10
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH: Final = 16
SELECTOR_LENGTH: Final = 2
GROUP_LENGTH: Final = 4
MAX_INPUT_LENGTH: Final = 64
MAX_COUNT: Final = 100

_HASHER: Final = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
# A hash of a random value nobody knows, with the same parameters as _HASHER (checked by a test).
DUMMY_HASH: Final = (
    "$argon2id$v=19$m=19456,t=2,p=1$BvOJ4GesITdF9OyH3LTm/w$hsrf/orGSGdBRpRDptaRg0MOBcYGSPLvU3a8An9oQGw"
)
_SEPARATORS: Final = frozenset(" \t-\u2010\u2011\u2012\u2013\u2014\u2015\u2212")
_LOOKALIKES: Final = str.maketrans({"I": "1", "L": "1", "O": "0"})
_CANONICAL_RE: Final = re.compile(r"[0-9A-HJKMNP-TV-Z]{16}", re.ASCII)


@dataclass(frozen=True, repr=False)
class NewRecoveryCode:
    """A freshly generated code: ``shown`` goes to the user once, ``selector`` and ``hash`` are stored."""

    shown: str
    selector: str
    hash: str

    def __repr__(self) -> str:
        return f"NewRecoveryCode(shown=<hidden>, selector={self.selector!r}, hash=<hidden>)"


def _random_code() -> str:
    """Return 16 random characters of the alphabet (80 bits), without separators."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def _format_code(code: str) -> str:
    """Return the code as groups of four joined by hyphens."""
    return "-".join(code[i : i + GROUP_LENGTH] for i in range(0, len(code), GROUP_LENGTH))


def _new_plain_codes(count: int) -> list[str]:
    """Return ``count`` random codes whose selectors are unique within the set."""
    codes: list[str] = []
    selectors: set[str] = set()
    while len(codes) < count:
        code = _random_code()
        selector = code[:SELECTOR_LENGTH]
        if selector in selectors:
            continue
        selectors.add(selector)
        codes.append(code)
    return codes


def generate_recovery_codes(count: int = COUNT) -> list[NewRecoveryCode]:
    """Return a new set of recovery codes with unique selectors and argon2id-hashed secrets.

    Raises:
        ValueError: ``count`` is not between 1 and 100.
    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError("count must be between 1 and 100")
    no_transaction_open("hashing recovery codes")
    result: list[NewRecoveryCode] = []
    for code in _new_plain_codes(count):
        selector, secret = split_recovery_code(code)
        result.append(NewRecoveryCode(shown=_format_code(code), selector=selector, hash=_HASHER.hash(secret)))
    return result


def normalize_recovery_code(text: str) -> str | None:
    """Return the canonical 16-character form (case, spaces, hyphens, I/L/O ignored), or None (SEC-37).

    Raises:
        Nothing.
    """
    if len(text) > MAX_INPUT_LENGTH:
        return None
    compact = "".join(ch for ch in text if ch not in _SEPARATORS)
    if not compact.isascii():
        return None
    canonical = compact.upper().translate(_LOOKALIKES)
    if _CANONICAL_RE.fullmatch(canonical) is None:
        return None
    return canonical


def split_recovery_code(normalized: str) -> tuple[str, str]:
    """Return (selector, secret) of a normalized code.

    Raises:
        ValueError: the value is not a normalized code (16 characters of the alphabet).
    """
    if _CANONICAL_RE.fullmatch(normalized) is None:
        raise ValueError("not a normalized recovery code")
    return normalized[:SELECTOR_LENGTH], normalized[SELECTOR_LENGTH:]


def verify_recovery_secret(*, secret: str, stored_hash: str) -> bool:
    """Return True if the secret matches the stored argon2id hash, False on mismatch or malformed hash.

    Raises:
        Nothing.
    """
    no_transaction_open("verifying a recovery code")
    try:
        return _HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def burn_verification(secret: str) -> None:
    """Run one argon2id verification against a dummy hash, so a miss costs as much as a hit.

    Raises:
        Nothing.
    """
    verify_recovery_secret(secret=secret, stored_hash=DUMMY_HASH)
