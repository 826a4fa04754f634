"""One key per purpose, derived from the master key of the key file with HKDF-SHA-256 (H15).

The master key itself seals the TOTP secrets (the format of every sealed value in existing databases, and
what ``twostep rotate-key`` replaces); every other purpose gets a key of its own, derived under a label that
names the purpose and a version, so that no value a client ever sees is computed with the sealing key.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DERIVED_KEY_BYTES: Final = 32

# The labels in use; a new purpose adds its own (never reuse one for another purpose).
CSRF: Final = "twostep/csrf/v1"
# The HMAC of the device cookie that lets a known browser pass the account-wide password ceiling (H07).
DEVICE_COOKIE: Final = "twostep device cookie v1"


def derive_key(master: bytes, label: str) -> bytes:
    """Return the 32-byte key for ``label`` (e.g. "twostep/csrf/v1"), derived from the master key.

    HKDF (RFC 5869) with SHA-256, no salt (the master key is uniformly random), and the label as info:
    distinct labels give independent keys, and none of them reveals the master key.

    Raises:
        ValueError: the master key is shorter than 32 bytes, or the label is empty.
    """
    if len(master) < 32:
        raise ValueError("the master key must have at least 32 bytes")
    if not label:
        raise ValueError("a derived key needs a label")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=DERIVED_KEY_BYTES, salt=None, info=label.encode())
    return hkdf.derive(master)
