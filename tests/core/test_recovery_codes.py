"""Unit tests of twostep.core.recovery_codes (SEC-30, SEC-31, SEC-37)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from twostep.core import recovery_codes as rc

SHOWN_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}")


@pytest.fixture(scope="module")
def code_set() -> list[rc.NewRecoveryCode]:
    return rc.generate_recovery_codes()


def test_sec30_ten_distinct_codes_in_documented_format(code_set: list[rc.NewRecoveryCode]) -> None:
    """SEC-30: 10 codes, all distinct, 4 groups of 4 Crockford base32 characters."""
    assert rc.COUNT == 10
    assert len(code_set) == 10
    assert len({c.shown for c in code_set}) == 10
    for code in code_set:
        assert SHOWN_RE.fullmatch(code.shown), code.selector


def test_sec30_at_least_64_bits() -> None:
    """SEC-30: length x log2(alphabet) = 16 x 5 = 80 bits >= 64."""
    assert len(set(rc.ALPHABET)) == 32
    assert rc.CODE_LENGTH * math.log2(len(rc.ALPHABET)) == 80
    assert (rc.CODE_LENGTH - rc.SELECTOR_LENGTH) * math.log2(len(rc.ALPHABET)) >= 64


def test_sec30_no_repeat_across_1000_generations() -> None:
    """SEC-30: 1000 sets of 10 (10,000 codes, hashing skipped) contain no repeat and unique selectors."""
    seen: set[str] = set()
    for _ in range(1000):
        codes = rc._new_plain_codes(rc.COUNT)
        assert len({c[: rc.SELECTOR_LENGTH] for c in codes}) == rc.COUNT
        seen.update(codes)
    assert len(seen) == 10_000


def test_canonical_pattern_is_the_alphabet() -> None:
    """The regex used for validation accepts exactly the 32 alphabet characters."""
    accepted = {chr(c) for c in range(128) if rc._CANONICAL_RE.fullmatch(chr(c) * 16)}
    assert accepted == set(rc.ALPHABET)


def test_sec30_random_code_uses_whole_alphabet() -> None:
    """SEC-30: the generator draws from all 32 characters."""
    chars = set("".join(rc._random_code() for _ in range(500)))
    assert chars == set(rc.ALPHABET)


def test_selectors_unique_and_match_shown(code_set: list[rc.NewRecoveryCode]) -> None:
    assert len({c.selector for c in code_set}) == 10
    for code in code_set:
        assert code.shown.startswith(code.selector)
        normalized = rc.normalize_recovery_code(code.shown)
        assert normalized is not None
        assert rc.split_recovery_code(normalized)[0] == code.selector


def test_sec31_hashes_are_salted_argon2id(code_set: list[rc.NewRecoveryCode]) -> None:
    """SEC-31: each hash is an argon2id PHC string with the OWASP-floor parameters and its own salt."""
    salts = set()
    for code in code_set:
        assert code.hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        salts.add(code.hash.split("$")[4])
    assert len(salts) == 10


def test_sec31_hashes_contain_no_part_of_the_code(code_set: list[rc.NewRecoveryCode]) -> None:
    """SEC-31: no hash contains the code, its secret part or its groups joined, ignoring case."""
    for code in code_set:
        normalized = rc.normalize_recovery_code(code.shown)
        assert normalized is not None
        _, secret = rc.split_recovery_code(normalized)
        stored = code.hash.upper().replace("-", "")
        for fragment in (normalized, secret, code.shown.replace("-", "")):
            assert fragment not in stored


def test_sec31_dummy_hash_uses_same_parameters() -> None:
    """SEC-31: the dummy hash costs as much as a real one (same argon2id parameters)."""
    assert not rc._HASHER.check_needs_rehash(rc.DUMMY_HASH)


def test_verify_true_and_false(code_set: list[rc.NewRecoveryCode]) -> None:
    code = code_set[0]
    normalized = rc.normalize_recovery_code(code.shown)
    assert normalized is not None
    _, secret = rc.split_recovery_code(normalized)
    assert rc.verify_recovery_secret(secret=secret, stored_hash=code.hash) is True
    assert rc.verify_recovery_secret(secret=secret, stored_hash=code_set[1].hash) is False
    other = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    assert rc.verify_recovery_secret(secret=other, stored_hash=code.hash) is False


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$xx$yy", "$2b$12$abc"])
def test_verify_malformed_hash_is_false(stored: str) -> None:
    assert rc.verify_recovery_secret(secret="0" * 14, stored_hash=stored) is False


class CountingHasher:
    """The real argon2id hasher, counting its verifications and how each ended (a spy: the crypto runs)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[str, str]] = []

    def verify(self, stored_hash: str, secret: str) -> bool:
        try:
            result: bool = self.real.verify(stored_hash, secret)
        except Exception as exc:
            self.calls.append((stored_hash, type(exc).__name__))
            raise
        self.calls.append((stored_hash, str(result)))
        return result


@pytest.mark.parametrize("secret", ["0" * 14, "x" * 1000])
def test_burn_verification_does_one_real_argon2id_verification(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEC-31: a code whose selector matches nothing still costs one argon2id verification, against the
    dummy hash of the same parameters, which it fails; so a miss takes as long as a wrong code."""
    spy = CountingHasher(rc._HASHER)
    monkeypatch.setattr(rc, "_HASHER", spy)
    rc.burn_verification(secret)
    assert spy.calls == [(rc.DUMMY_HASH, "VerifyMismatchError")]


def test_repr_hides_code_and_hash(code_set: list[rc.NewRecoveryCode]) -> None:
    """SEC-32: the repr of a new code shows neither the code nor its hash."""
    code = code_set[0]
    text = repr(code)
    assert code.shown not in text
    assert code.shown[5:] not in text
    assert code.hash not in text
    assert "hidden" in text


# --- SEC-37: normalization -----------------------------------------------------------------------

CANON = "7K2MQX9D0ABCEFGH"


@pytest.mark.parametrize(
    "raw",
    [
        "7K2M-QX9D-0ABC-EFGH",
        "7k2m-qx9d-0abc-efgh",
        "7K2M QX9D 0ABC EFGH",
        "7k2mqx9d0abcefgh",
        "  7k2m\tqx9d-0abc efgh  ",
        "7K2M\u2013QX9D\u2014OABC\u2212EFGH",
        "7K2M\u2010QX9D\u2011oABC\u2015EFGH",
    ],
)
def test_sec37_separators_case_and_lookalikes_normalize_to_same_value(raw: str) -> None:
    """SEC-37: case, spaces, tabs and hyphens (incl. Unicode dashes) are ignored; O maps to 0."""
    assert rc.normalize_recovery_code(raw) == CANON


def test_sec37_lookalikes_i_l_map_to_one() -> None:
    """SEC-37: Crockford look-alikes I and L read as 1, O as 0."""
    assert rc.normalize_recovery_code("ilIL-oO00-1111-2222") == "1111000011112222"


@pytest.mark.parametrize(
    "raw",
    [
        "7K2M-QX9D-0ABC-EFG",  # 15 characters
        "7K2M-QX9D-0ABC-EFGHJ",  # 17 characters
        "7K2M-QX9D-0ABC-EFGU",  # U is not in the alphabet
        "7K2M_QX9D_0ABC_EFGH",
        "7K2M.QX9D.0ABC.EFGH",
        "7K2M-QX9D-0ABC-EFG\u0131",  # dotless i upper-cases to I: refused as non-ASCII
        "\uff17K2M-QX9D-0ABC-EFGH",  # full-width 7
        "",
        "A" * 10_000,
        " " * 60 + "7K2MQX9D0ABCEFGH",
    ],
    ids=repr,
)
def test_sec37_invalid_or_oversized_input_is_none(raw: str) -> None:
    """SEC-37: wrong length, characters outside the alphabet and inputs over 64 characters give None."""
    assert rc.normalize_recovery_code(raw) is None


def test_split_recovery_code() -> None:
    assert rc.split_recovery_code(CANON) == ("7K", "2MQX9D0ABCEFGH")
    with pytest.raises(ValueError):
        rc.split_recovery_code("7K2M")


@pytest.mark.parametrize("count", [0, -1, 101])
def test_generate_rejects_bad_count(count: int) -> None:
    with pytest.raises(ValueError):
        rc.generate_recovery_codes(count)


def test_no_equality_operator_on_codes_in_source() -> None:
    """SEC-23: recovery_codes.py has no `==`/`!=` (codes are checked by argon2 verify only)."""
    source = open(rc.__file__, encoding="utf-8").read()
    assert "==" not in source
    assert "!=" not in source
