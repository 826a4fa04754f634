"""Unit tests of twostep.core.secretbox (AES-256-GCM at rest, SEC-24)."""

from __future__ import annotations

import pytest

from twostep.core.errors import TwostepError
from twostep.core.secretbox import KEY_BYTES, SecretBox, SecretBoxError, aad_for, generate_key

SECRET = bytes(range(20))
AAD = aad_for("totp_factor", "secret", "row-1")


def test_round_trip() -> None:
    box = SecretBox(generate_key())
    sealed = box.seal(SECRET, aad=AAD)
    assert box.open(sealed, aad=AAD) == SECRET
    assert SECRET not in sealed


def test_sealed_format_version_nonce_tag() -> None:
    sealed = SecretBox(generate_key()).seal(SECRET, aad=AAD)
    assert sealed[0] == 0x01
    assert len(sealed) == 1 + 12 + len(SECRET) + 16


def test_generate_key_is_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == KEY_BYTES == 32 for k in keys)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        SecretBox(bytes(size))


def test_sec24_wrong_key_fails() -> None:
    """SEC-24: decrypting with a wrong key fails."""
    sealed = SecretBox(generate_key()).seal(SECRET, aad=AAD)
    with pytest.raises(SecretBoxError):
        SecretBox(generate_key()).open(sealed, aad=AAD)


def test_sec24_wrong_aad_another_row_fails() -> None:
    """SEC-24: a value sealed for one row cannot be opened as another row's (or column's)."""
    box = SecretBox(generate_key())
    sealed = box.seal(SECRET, aad=AAD)
    with pytest.raises(SecretBoxError):
        box.open(sealed, aad=aad_for("totp_factor", "secret", "row-2"))
    with pytest.raises(SecretBoxError):
        box.open(sealed, aad=aad_for("totp_factor", "pending_secret", "row-1"))


def test_sec24_every_flipped_bit_fails() -> None:
    """SEC-24: flipping any single bit of the sealed value is detected."""
    box = SecretBox(generate_key())
    sealed = box.seal(SECRET, aad=AAD)
    for index in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= bit
            with pytest.raises(SecretBoxError):
                box.open(bytes(tampered), aad=AAD)


@pytest.mark.parametrize("cut", [0, 1, 13, 28, 29, 30])
def test_sec24_truncated_fails(cut: int) -> None:
    """SEC-24: truncated or empty input raises SecretBoxError."""
    box = SecretBox(generate_key())
    sealed = box.seal(SECRET, aad=AAD)
    with pytest.raises(SecretBoxError):
        box.open(sealed[:cut], aad=AAD)
    with pytest.raises(SecretBoxError):
        box.open(sealed[:-1], aad=AAD)


def test_sec24_unknown_version_fails() -> None:
    """SEC-24: a version byte other than 0x01 is refused."""
    box = SecretBox(generate_key())
    sealed = box.seal(SECRET, aad=AAD)
    with pytest.raises(SecretBoxError):
        box.open(b"\x02" + sealed[1:], aad=AAD)


def test_nonces_differ_between_seals() -> None:
    box = SecretBox(generate_key())
    sealed = [box.seal(SECRET, aad=AAD) for _ in range(200)]
    assert len({s[1:13] for s in sealed}) == 200
    assert len(set(sealed)) == 200


def test_sec24_repr_hides_key() -> None:
    """SEC-24: repr/str of a SecretBox show no key material."""
    key = generate_key()
    box = SecretBox(key)
    for text in (repr(box), str(box)):
        assert key.hex() not in text
        assert repr(key) not in text
        assert "hidden" in text


def test_error_is_not_a_client_error() -> None:
    assert not issubclass(SecretBoxError, TwostepError)


def test_aad_format() -> None:
    assert aad_for("totp_factor", "secret", "42") == b"twostep:totp_factor:secret:42"
    with pytest.raises(ValueError):
        aad_for("a:b", "secret", "1")
