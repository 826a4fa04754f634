"""H15: one key per purpose, derived from the master key with HKDF-SHA-256 under distinct labels."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from twostep.core import keys
from twostep.core.secretbox import generate_key


def hkdf_by_hand(master: bytes, info: bytes) -> bytes:
    """RFC 5869 with SHA-256 and no salt (a string of zeros), one block: an independent computation."""
    prk = hmac.new(b"\x00" * 32, master, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_H15_a_derived_key_is_hkdf_sha256_of_the_master_key_under_its_label() -> None:
    master = generate_key()
    derived = keys.derive_key(master, keys.CSRF)
    assert derived == hkdf_by_hand(master, b"twostep/csrf/v1")
    assert len(derived) == 32
    assert derived != master
    assert keys.derive_key(master, keys.CSRF) == derived  # the same on every worker and every start


def test_H15_distinct_labels_and_distinct_masters_give_distinct_keys() -> None:
    master = generate_key()
    labels = [keys.CSRF, "twostep/seal/v1", "twostep/device/v1", "twostep/csrf/v2"]
    derived = {keys.derive_key(master, label) for label in labels}
    assert len(derived) == len(labels)
    assert master not in derived
    assert keys.derive_key(generate_key(), keys.CSRF) != keys.derive_key(master, keys.CSRF)


def test_H15_a_short_master_key_or_an_empty_label_is_refused() -> None:
    with pytest.raises(ValueError):
        keys.derive_key(b"short", keys.CSRF)
    with pytest.raises(ValueError):
        keys.derive_key(generate_key(), "")
