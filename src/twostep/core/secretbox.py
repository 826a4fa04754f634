"""AES-256-GCM encryption of secrets at rest, bound to their row by associated data (SEC-24)."""

from __future__ import annotations

import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
VERSION: Final = b"\x01"


class SecretBoxError(Exception):
    """A sealed value could not be opened: wrong key, wrong associated data, tampering or bad format."""


def generate_key() -> bytes:
    """Return a new random 32-byte key.

    Raises:
        Nothing.
    """
    return secrets.token_bytes(KEY_BYTES)


def aad_for(table: str, column: str, row_id: str) -> bytes:
    """Return the associated data ``twostep:<table>:<column>:<row_id>`` that binds a value to its row.

    Raises:
        ValueError: the table or column name contains ":".
    """
    if ":" in table or ":" in column:
        raise ValueError("table and column names must not contain ':'")
    return f"twostep:{table}:{column}:{row_id}".encode()


class SecretBox:
    """Seals and opens small secrets with AES-256-GCM; the format is 0x01 ‖ nonce ‖ ciphertext+tag."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        """Keep an AES-GCM cipher for the 32-byte key.

        Raises:
            ValueError: the key is not exactly 32 bytes.
        """
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError("SecretBox key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(key=<hidden>)"

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt and authenticate the plaintext under a fresh random nonce.

        Raises:
            Nothing.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Decrypt a sealed value after checking its version, length and tag.

        Raises:
            SecretBoxError: wrong key, wrong associated data, tampering, unknown version or short input.
        """
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES:
            raise SecretBoxError("sealed value is too short")
        if sealed[:1] != VERSION:
            raise SecretBoxError("unknown sealed value version")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise SecretBoxError("sealed value could not be opened") from None


class KeyRing:
    """Seals with the current key; opens with the current key or, during a key rotation, the next one.

    ``twostep rotate-key`` writes the next key beside the current one before re-sealing, so that a crash
    at any point leaves every secret readable.
    """

    def __init__(self, current: SecretBox, *others: SecretBox) -> None:
        self.current = current
        self._all = (current, *others)

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        return self.current.seal(plaintext, aad=aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Raises:
        SecretBoxError: no key of the ring opens it.
        """
        for box in self._all:
            try:
                return box.open(sealed, aad=aad)
            except SecretBoxError:
                continue
        raise SecretBoxError("no key opens this secret")

    def __repr__(self) -> str:
        return f"KeyRing(keys={len(self._all)})"
