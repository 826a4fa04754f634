"""Passwords: the policy of security.md §0 item 1 (SEC-08..SEC-11) and argon2id storage (SEC-12).

* Length counts Unicode code points after NFKC: at least ``MIN_LENGTH`` (15), at most ``MAX_LENGTH`` (256);
  input longer than ``MAX_INPUT_CHARS`` is refused before normalisation or hashing (hashing DoS, SEC-09).
* No composition rules (SEC-10). The whole password, case-folded, is looked up in the bundled blocklist of
  common passwords; the username and "twostep" are context words (SEC-11).
* Passwords are normalised with NFKC, never trimmed or case-changed, the same way when set and when verified.

The blocklist (``twostep/data/common-passwords.txt.gz``, see ``common-passwords.SOURCE.md``) is read lazily,
once per process, into a single bytes buffer that is binary-searched: no per-entry Python objects.
"""

from __future__ import annotations

import gzip
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from twostep.core.errors import WeakPassword
from twostep.core.guards import no_transaction_open

MIN_LENGTH: Final = 15
MAX_LENGTH: Final = 256
MAX_INPUT_CHARS: Final = 1024
SERVICE_NAME: Final = "twostep"
# A remainder shorter than this, once the context words are removed, is too close to them.
MIN_REMAINDER_LENGTH: Final = 8
BLOCKLIST_RESOURCE: Final = "common-passwords.txt.gz"

# Cheap argon2id parameters for tests only; production uses the defaults (t=3, m=65536 KiB, p=4).
TEST_PROFILE: Final[dict[str, int]] = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
# OWASP Password Storage cheat sheet floor (SEC-12): m >= 19 MiB with t >= 2.
FLOOR_MEMORY_COST: Final = 19456
FLOOR_TIME_COST: Final = 2

TOO_SHORT = f"Your password must be at least {MIN_LENGTH} characters long."
TOO_LONG = f"Your password must be at most {MAX_LENGTH} characters long."
TOO_COMMON = "This password is one of the most common passwords. Choose another one."
TOO_CLOSE = f"This password is too close to your username or to '{SERVICE_NAME}'. Choose another one."


def normalize_password(password: str) -> str:
    """Return ``password`` in NFKC, with no case change and no trimming. Raises: nothing."""
    return unicodedata.normalize("NFKC", password)


def _fold(value: str) -> str:
    """The blocklist key of a value: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", value).casefold()


class _Blocklist:
    """The sorted blocklist file held in one bytes buffer, loaded on first use (thread-safe)."""

    def __init__(self, resource: str) -> None:
        self._resource = resource
        self._lock = threading.Lock()
        self._data: bytes | None = None

    def data(self) -> bytes:
        """The uncompressed file, one entry per line. Raises: OSError when the package data is missing."""
        data = self._data
        if data is None:
            with self._lock:
                data = self._data
                if data is None:
                    source = resources.files("twostep").joinpath("data", self._resource)
                    data = gzip.decompress(source.read_bytes())
                    if data and not data.endswith(b"\n"):
                        data += b"\n"
                    self._data = data
        return data

    def __len__(self) -> int:
        return self.data().count(b"\n")

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not key or "\n" in key:
            return False
        return _bisect_lines(self.data(), key.encode("utf-8"))


def _bisect_lines(data: bytes, key: bytes) -> bool:
    """Whether ``key`` is a whole line of ``data`` (sorted by bytes, every line ending in a newline)."""
    lo, hi = 0, len(data)  # both are always at the start of a line (or the end of the data)
    while lo < hi:
        mid = (lo + hi) // 2
        newline = data.rfind(b"\n", lo, mid)
        start = lo if newline < 0 else newline + 1
        end = data.find(b"\n", start)
        line = data[start:end]
        if line == key:
            return True
        if line < key:
            lo = end + 1
        else:
            hi = start
    return False


_BLOCKLIST = _Blocklist(BLOCKLIST_RESOURCE)


def is_common_password(password: str) -> bool:
    """Whether the whole ``password`` (NFKC, case-folded) is common. Raises: OSError if no list."""
    return _fold(password) in _BLOCKLIST


def blocklist_size() -> int:
    """The number of entries in the bundled blocklist (loads it). Raises: OSError if it is missing."""
    return len(_BLOCKLIST)


def _is_separator(char: str) -> bool:
    """Whether ``char`` is white space, punctuation or a symbol."""
    return char.isspace() or unicodedata.category(char)[0] in "PSZ"


def _without_context(folded: str, words: list[str]) -> tuple[str, bool]:
    """``folded`` with every occurrence of each context word removed, and whether any was."""
    removed = False
    changed = True
    while changed:
        changed = False
        for word in words:
            if word in folded:
                folded = folded.replace(word, "")
                removed = changed = True
    return folded, removed


def check_password_policy(password: str, *, username: str) -> None:
    """Accept ``password`` for the account ``username``. Raises: WeakPassword saying why it is refused."""
    if len(password) > MAX_INPUT_CHARS:
        raise WeakPassword(TOO_LONG)
    normalized = normalize_password(password)
    if len(normalized) < MIN_LENGTH:
        raise WeakPassword(TOO_SHORT)
    if len(normalized) > MAX_LENGTH:
        raise WeakPassword(TOO_LONG)
    if is_common_password(normalized):
        raise WeakPassword(TOO_COMMON)
    words = [word for word in (_fold(username), SERVICE_NAME) if word]
    remainder, removed = _without_context(normalized.casefold(), words)
    if not removed:
        return
    bare = "".join(char for char in remainder if not _is_separator(char))
    if (
        len(remainder) < MIN_REMAINDER_LENGTH
        or all(char.isdigit() or _is_separator(char) for char in remainder)
        or remainder in _BLOCKLIST
        or bare in _BLOCKLIST
    ):
        raise WeakPassword(TOO_CLOSE)


@dataclass(frozen=True)
class HashParameters:
    """The argon2id cost of a ``PasswordHasher``: iterations, memory in KiB, lanes."""

    time_cost: int
    memory_cost: int
    parallelism: int


class PasswordHasher:
    """argon2id PHC hashing of NFKC-normalised passwords (SEC-10, SEC-12)."""

    def __init__(
        self,
        *,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
    ) -> None:
        defaults = argon2.PasswordHasher()
        self._hasher = argon2.PasswordHasher(
            time_cost=defaults.time_cost if time_cost is None else time_cost,
            memory_cost=defaults.memory_cost if memory_cost is None else memory_cost,
            parallelism=defaults.parallelism if parallelism is None else parallelism,
            type=argon2.Type.ID,
        )
        self._dummy_lock = threading.Lock()
        self._dummy_hash: str | None = None

    @property
    def parameters(self) -> HashParameters:
        """The argon2id cost this hasher uses for new hashes."""
        return HashParameters(
            time_cost=self._hasher.time_cost,
            memory_cost=self._hasher.memory_cost,
            parallelism=self._hasher.parallelism,
        )

    def hash(self, password: str) -> str:
        """The argon2id PHC string of the normalised ``password``. Raises: WeakPassword if it is too long."""
        if len(password) > MAX_INPUT_CHARS:
            raise WeakPassword(TOO_LONG)
        no_transaction_open("hashing a password")
        return self._hasher.hash(normalize_password(password))

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (False if not, or if invalid). Raises: nothing."""
        if len(password) > MAX_INPUT_CHARS:
            return False
        no_transaction_open("verifying a password")
        try:
            return self._hasher.verify(stored_hash, normalize_password(password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with other parameters (or is invalid). Raises: nothing."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one ``verify`` for an unknown account (SEC-05). Raises: nothing."""
        if len(password) > MAX_INPUT_CHARS:
            return  # ``verify`` refuses it without hashing too
        no_transaction_open("verifying a password")
        dummy = self._dummy_hash
        if dummy is None:
            with self._dummy_lock:
                dummy = self._dummy_hash
                if dummy is None:
                    dummy = self._hasher.hash(secrets.token_urlsafe(32))
                    self._dummy_hash = dummy
        self.verify(dummy, password)
