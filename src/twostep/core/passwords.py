"""Passwords: the policy of security.md §0 item 1 (SEC-08..SEC-11) and argon2id storage (SEC-12).

* Length counts Unicode code points after NFKC: at least ``MIN_LENGTH`` (15), at most ``MAX_LENGTH`` (256);
  input longer than ``MAX_INPUT_CHARS`` is refused before normalisation or hashing (hashing DoS, SEC-09).
* No composition rules (SEC-10). The whole password, case-folded, is looked up in the bundled blocklist of
  common passwords; the username and "twostep" are context words (SEC-11).
* Passwords are normalised with NFKC, never trimmed or case-changed, the same way when set and when verified.
* Every argon2 computation of a ``PasswordHasher`` takes a turn at its ``HashGate``: at most a few at once per
  process (each holds ``memory_cost`` KiB), a short queue, and ``Busy`` beyond it (H03).

The blocklist (``twostep/data/common-passwords.txt.gz``, see ``common-passwords.SOURCE.md``) is read lazily,
once per process, into a single bytes buffer that is binary-searched: no per-entry Python objects.
"""

from __future__ import annotations

import gzip
import math
import os
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from twostep.core.errors import Busy, WeakPassword
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
# The sentences above, for the message catalogues (twostep.i18n reads this tuple; the web layer translates).
MESSAGES = (TOO_SHORT, TOO_LONG, TOO_COMMON, TOO_CLOSE)


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


def default_hash_concurrency() -> int:
    """Concurrent argon2 computations per process when none is configured: the number of cores (or 2)."""
    return os.cpu_count() or 2


class HashGate:
    """Bounds the argon2 work of one process (H03): at most ``concurrency`` computations at once, at most
    ``queue`` callers waiting for a turn, each for at most ``max_wait`` seconds; anyone else gets ``Busy``.

    It also keeps a moving average of how long one computation takes, for ``Retry-After`` and for callers
    that must take as long as a hash without computing one (H02).
    """

    def __init__(self, *, concurrency: int, queue: int, max_wait: float = 5.0) -> None:
        if concurrency < 1 or queue < 0 or max_wait < 0:
            raise ValueError("concurrency must be at least 1, queue and max_wait at least 0")
        self.concurrency = concurrency
        self.queue = queue
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._active = 0
        self._waiting = 0
        self._seconds: float | None = None

    @property
    def typical_seconds(self) -> float | None:
        """The moving average of one computation's duration; None before the first one."""
        return self._seconds

    def retry_after(self) -> int:
        """Seconds after which a refused caller may expect a turn: the queue drained once."""
        per_hash = self._seconds if self._seconds is not None else 0.5
        return max(1, math.ceil(per_hash * (self.queue + self.concurrency) / self.concurrency))

    @contextmanager
    def turn(self, *, measure: bool = True) -> Iterator[None]:
        """Hold one of the ``concurrency`` turns for the duration of the block.

        Raises:
            Busy: the queue is full, or no turn came within ``max_wait`` seconds.
        """
        self._enter()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._leave(time.perf_counter() - start if measure else None)

    def _enter(self) -> None:
        with self._cond:
            # Nobody overtakes those already waiting.
            if self._active < self.concurrency and self._waiting == 0:
                self._active += 1
                return
            if self._waiting >= self.queue:
                raise Busy(self.retry_after())
            self._waiting += 1
            try:
                admitted = self._cond.wait_for(lambda: self._active < self.concurrency, self.max_wait)
            finally:
                self._waiting -= 1
            if not admitted:
                raise Busy(self.retry_after())
            self._active += 1

    def _leave(self, elapsed: float | None) -> None:
        with self._cond:
            self._active -= 1
            if elapsed is not None:
                self._seconds = elapsed if self._seconds is None else 0.8 * self._seconds + 0.2 * elapsed
            self._cond.notify()


@dataclass(frozen=True)
class HashParameters:
    """The argon2id cost of a ``PasswordHasher``: iterations, memory in KiB, lanes."""

    time_cost: int
    memory_cost: int
    parallelism: int


class PasswordHasher:
    """argon2id PHC hashing of NFKC-normalised passwords (SEC-10, SEC-12), bounded by a ``HashGate`` (H03).

    ``concurrency`` defaults to the number of cores, ``queue`` to 8 callers per turn.
    """

    def __init__(
        self,
        *,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
        concurrency: int | None = None,
        queue: int | None = None,
        max_wait: float = 5.0,
    ) -> None:
        turns = concurrency or default_hash_concurrency()
        waiting = 8 * turns if queue is None else queue
        self.gate = HashGate(concurrency=turns, queue=waiting, max_wait=max_wait)
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
        """The argon2id PHC string of the normalised ``password``.

        Raises:
            WeakPassword: it is too long.
            Busy: too many hashes waiting in this process.
        """
        if len(password) > MAX_INPUT_CHARS:
            raise WeakPassword(TOO_LONG)
        no_transaction_open("hashing a password")
        normalized = normalize_password(password)
        with self.gate.turn():
            return self._hasher.hash(normalized)

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (False if not, or if invalid).

        Raises:
            Busy: too many hashes waiting in this process.
        """
        if len(password) > MAX_INPUT_CHARS:
            return False
        no_transaction_open("verifying a password")
        normalized = normalize_password(password)
        with self.gate.turn():
            try:
                return self._hasher.verify(stored_hash, normalized)
            except (VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with other parameters (or is invalid). Raises: nothing."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one ``verify`` for an unknown account (SEC-05).

        Raises:
            Busy: too many hashes waiting in this process.
        """
        if len(password) > MAX_INPUT_CHARS:
            return  # ``verify`` refuses it without hashing too
        no_transaction_open("verifying a password")
        dummy = self._dummy_hash
        if dummy is None:
            with self._dummy_lock:
                dummy = self._dummy_hash
                if dummy is None:
                    with self.gate.turn():
                        dummy = self._hasher.hash(secrets.token_urlsafe(32))
                    self._dummy_hash = dummy
        self.verify(dummy, password)

    def pause_like_hash(self) -> None:
        """Take as long as one ``hash`` takes in this process, without computing one (H02: a taken username).

        It waits for a turn like a hash, so that queueing and ``Busy`` are alike too. Only the first call
        in a process that has not hashed yet computes one hash, to learn the duration.

        Raises:
            Busy: too many hashes waiting in this process.
        """
        seconds = self.gate.typical_seconds
        if seconds is None:
            with self.gate.turn():
                self._hasher.hash(secrets.token_urlsafe(32))
            return
        with self.gate.turn(measure=False):
            time.sleep(seconds)
