"""Keys for one purpose each, derived from the master key with HKDF-SHA256 (RFC 5869)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(master: bytes, label: str, *, length: int = 32) -> bytes:
    """A key for the purpose ``label`` (distinct labels give independent keys). Raises: nothing."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode("utf-8"))
    return hkdf.derive(master)
