"""Unit tests of twostep.core.totp: RFC vectors, window, replay, input normalization, URI, QR."""

from __future__ import annotations

import hmac
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from twostep.core import totp
from twostep.core.errors import InvalidCode

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "rfc_otp_vectors.json").read_text(encoding="utf-8")
)
HOTP = VECTORS["hotp_rfc4226"]
TOTP = VECTORS["totp_rfc6238"]
RFC_SECRET = bytes.fromhex(HOTP["secret_hex"])
SEEDS = {name.lower(): bytes.fromhex(seed["hex"]) for name, seed in TOTP["seeds"].items()}

# A fixed instant in the middle of a step: t = T*30 + 1.
STEP = 56_666_666
NOW = datetime.fromtimestamp(STEP * 30 + 1, tz=UTC)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def code_for_step(secret: bytes, step: int) -> str:
    return totp.hotp(secret, step)


# --- SEC-15: RFC vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", HOTP["vectors"], ids=lambda v: f"counter{v['counter']}")
def test_sec15_hotp_rfc4226_vectors(vector: dict[str, Any]) -> None:
    """SEC-15: every RFC 4226 Appendix D HOTP value."""
    assert totp.hotp(RFC_SECRET, vector["counter"]) == vector["hotp"]


@pytest.mark.parametrize("vector", TOTP["vectors"], ids=lambda v: f"{v['algorithm']}-{v['unix_time']}")
def test_sec15_totp_rfc6238_vectors_8_digits(vector: dict[str, Any]) -> None:
    """SEC-15: all 18 RFC 6238 Appendix B values (8 digits, per-algorithm seeds)."""
    algorithm = vector["algorithm"].lower()
    step = totp.time_step(at(vector["unix_time"]))
    assert step == int(vector["T_hex"], 16)
    assert totp.hotp(SEEDS[algorithm], step, digits=8, algorithm=algorithm) == vector["totp_8"]


@pytest.mark.parametrize("vector", TOTP["vectors"], ids=lambda v: f"{v['algorithm']}-{v['unix_time']}")
def test_sec15_totp_rfc6238_vectors_6_digit_truncation(vector: dict[str, Any]) -> None:
    """SEC-15: the 6-digit truncations of the RFC 6238 values."""
    algorithm = vector["algorithm"].lower()
    step = totp.time_step(at(vector["unix_time"]))
    assert totp.hotp(SEEDS[algorithm], step, algorithm=algorithm) == vector["totp_6_derived"]


def test_sec15_vector_count() -> None:
    """SEC-15: the fixture really has 10 HOTP and 18 TOTP vectors."""
    assert len(HOTP["vectors"]) == 10
    assert len(TOTP["vectors"]) == 18


def test_sec15_leading_zero_kept_and_verified() -> None:
    """SEC-15/SEC-22: the SHA-1 code at t=1111111109 is 081804 and verifies with its leading zero."""
    now = at(1111111109)
    assert totp.hotp(RFC_SECRET, totp.time_step(now)) == "081804"
    step = totp.verify_code(secret=RFC_SECRET, code="081804", now=now, last_used_step=None)
    assert step == 0x23523EC


def test_sec15_time_step_is_64_bit_safe() -> None:
    """SEC-15: T at t=20000000000 is 0x27BC86AA, beyond 32-bit time."""
    assert totp.time_step(at(20_000_000_000)) == 0x27BC86AA
    assert totp.time_step(at(59)) == 1
    assert totp.time_step(at(60)) == 2
    assert totp.time_step(datetime(2286, 11, 20, 17, 46, 40, tzinfo=UTC)) == 333_333_333


def test_time_step_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError):
        totp.time_step(datetime(2024, 1, 1))


def test_hotp_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        totp.hotp(RFC_SECRET, -1)
    with pytest.raises(ValueError):
        totp.hotp(RFC_SECRET, 2**64)
    with pytest.raises(ValueError):
        totp.hotp(RFC_SECRET, 0, algorithm="md5")
    with pytest.raises(ValueError):
        totp.hotp(RFC_SECRET, 0, digits=5)
    assert totp.hotp(RFC_SECRET, 2**64 - 1)


@pytest.mark.parametrize("unix_time", [0, 59, 1_111_111_109, 1_700_000_000, 2_000_000_000, 20_000_000_000])
def test_sec15_cross_check_with_pyotp(unix_time: int) -> None:
    """SEC-15: our codes equal pyotp's for random secrets."""
    secret = totp.generate_secret()
    reference = pyotp.TOTP(totp.encode_secret(secret), digits=6, interval=30)
    assert totp.hotp(secret, totp.time_step(at(unix_time))) == reference.at(unix_time)


# --- SEC-20: window ------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_sec20_window_accepts_t_minus_1_t_t_plus_1(offset: int) -> None:
    """SEC-20: codes for T-1, T and T+1 are accepted and the matched step is returned."""
    secret = totp.generate_secret()
    code = code_for_step(secret, STEP + offset)
    assert totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_sec20_window_refuses_two_or_more_steps_away(offset: int) -> None:
    """SEC-20: codes for T-2 and T+2 (and beyond) are refused."""
    secret = bytes(range(20))
    code = code_for_step(secret, STEP + offset)
    window = {code_for_step(secret, STEP + d) for d in (-1, 0, 1)}
    assert code not in window  # the fixed secret has no accidental collision
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None)


def test_sec20_window_boundaries_of_the_step() -> None:
    """SEC-20: at the first and last second of step T the window is still exactly T-1..T+1."""
    secret = totp.generate_secret()
    for now in (at(STEP * 30), at(STEP * 30 + 29)):
        assert (
            totp.verify_code(
                secret=secret, code=code_for_step(secret, STEP + 1), now=now, last_used_step=None
            )
            == STEP + 1
        )


# --- SEC-18: replay ------------------------------------------------------------------------------


def test_sec18_same_code_refused_at_last_used_step() -> None:
    """SEC-18: a code whose step equals last_used_step is refused."""
    secret = totp.generate_secret()
    code = code_for_step(secret, STEP)
    used = totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None)
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=used)


def test_sec18_earlier_step_refused_after_later_one_used() -> None:
    """SEC-18: after step T is used, the code for T-1 (still in the window) is refused."""
    secret = totp.generate_secret()
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code_for_step(secret, STEP - 1), now=NOW, last_used_step=STEP)


def test_sec18_later_step_accepted_after_earlier_one_used() -> None:
    """SEC-18 (e): after step T is used, the code for T+1 is accepted."""
    secret = totp.generate_secret()
    code = code_for_step(secret, STEP + 1)
    assert totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=STEP) == STEP + 1


def test_sec18_greatest_matching_fresh_step_wins() -> None:
    """SEC-18: if several window steps match, the greatest one above last_used_step is returned."""
    secret = _secret_with_equal_codes()
    code = code_for_step(secret, STEP - 1)
    assert totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None) == STEP
    assert totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=STEP - 2) == STEP
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=STEP)


def _secret_with_equal_codes() -> bytes:
    """A deterministic secret whose codes for T-1 and T are equal (found by search, checked here)."""
    secret = (239_788).to_bytes(20, "big")
    assert code_for_step(secret, STEP - 1) == code_for_step(secret, STEP) != code_for_step(secret, STEP + 1)
    return secret


# --- SEC-23: constant-time comparison of every candidate ------------------------------------------


def test_sec23_every_window_candidate_compared_even_when_first_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SEC-23: hmac.compare_digest is called once per window candidate, with no early exit."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("twostep.core.totp.hmac.compare_digest", spy)
    secret = totp.generate_secret()
    code = code_for_step(secret, STEP - 1)  # the first candidate
    assert totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None) == STEP - 1
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=STEP + 5)
    assert len(calls) == 3


def test_sec23_no_equality_operator_on_codes_in_source() -> None:
    """SEC-23: totp.py compares codes only through hmac.compare_digest (no `==`/`!=` anywhere)."""
    source = Path(totp.__file__).read_text(encoding="utf-8")
    assert "==" not in source
    assert "!=" not in source
    assert "hmac.compare_digest" in source


# --- SEC-22: input normalization -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("081804", "081804"),
        (" 081 804 ", "081804"),
        ("081\u00a0804", "081804"),
        ("\t08 18 04\n", "081804"),
        ("081\u2009804", "081804"),
        ("081\u3000804", "081804"),
    ],
)
def test_sec22_normalize_accepts_six_ascii_digits_with_white_space(raw: str, expected: str) -> None:
    """SEC-22 / §0 item 10: white space anywhere is dropped and leading zeros are kept."""
    assert totp.normalize_code(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "81804",
        "0818040",
        "+81804",
        "-81804",
        "\u0660\u0668\u0661\u0668\u0660\u0664",  # Arabic-Indic
        "\uff10\uff18\uff11\uff18\uff10\uff14",  # full-width
        "08180\u00b2",  # superscript two
        "08180a",
        "",
        "      ",
        "0" * 10_000,
        " " * 60 + "081804",
    ],
    ids=repr,
)
def test_sec22_normalize_rejects(raw: str) -> None:
    """SEC-22: wrong length, signs, non-ASCII digits, letters and oversized input give None."""
    assert totp.normalize_code(raw) is None


def test_sec22_verify_rejects_malformed_code() -> None:
    """SEC-22: a malformed code raises InvalidCode, never another error."""
    for raw in ("81804", "\u0660\u0668\u0661\u0668\u0660\u0664", "x" * 10_000):
        with pytest.raises(InvalidCode):
            totp.verify_code(secret=RFC_SECRET, code=raw, now=at(1111111109), last_used_step=None)


def test_sec22_verify_accepts_spaced_code() -> None:
    """SEC-22: "081 804" as shown by apps verifies."""
    assert totp.verify_code(secret=RFC_SECRET, code="081 804", now=at(1111111109), last_used_step=None)


# --- Clock skew diagnosis ------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [180, -180, 90, -600])
def test_clock_skew_diagnosed_within_ten_minutes(seconds: int) -> None:
    """§0 item 3: a code from a device clock off by up to 10 minutes reports the offset."""
    secret = bytes(range(20))
    code = totp.hotp(secret, totp.time_step(NOW + timedelta(seconds=seconds)))
    with pytest.raises(InvalidCode):
        totp.verify_code(secret=secret, code=code, now=NOW, last_used_step=None)
    assert totp.diagnose_clock_skew(secret=secret, code=code, now=NOW) == seconds


@pytest.mark.parametrize("seconds", [630, -630, 3600])
def test_clock_skew_beyond_ten_minutes_is_none(seconds: int) -> None:
    """§0 item 3: beyond ±10 minutes there is no diagnosis."""
    secret = bytes(range(20))
    code = totp.hotp(secret, totp.time_step(NOW + timedelta(seconds=seconds)))
    assert totp.diagnose_clock_skew(secret=secret, code=code, now=NOW) is None


def test_clock_skew_none_inside_window_and_for_malformed() -> None:
    secret = bytes(range(20))
    assert totp.diagnose_clock_skew(secret=secret, code=code_for_step(secret, STEP), now=NOW) is None
    assert totp.diagnose_clock_skew(secret=secret, code="12345", now=NOW) is None


# --- SEC-16: secrets and provisioning URI ---------------------------------------------------------


def test_sec16_secrets_are_20_bytes_and_unique() -> None:
    """SEC-16: 1000 generated secrets are 20 bytes each and all distinct."""
    secrets_ = [totp.generate_secret() for _ in range(1000)]
    assert all(len(s) == 20 for s in secrets_)
    assert len(set(secrets_)) == 1000


def test_base32_round_trip_and_display() -> None:
    secret = totp.generate_secret()
    text = totp.encode_secret(secret)
    assert len(text) == 32
    assert text.isupper() or text.isdigit()
    assert "=" not in text
    assert totp.decode_secret(text) == secret
    assert totp.decode_secret(text.lower()) == secret
    assert totp.decode_secret(totp.format_secret_for_display(text)) == secret
    assert totp.format_secret_for_display("ABCDEFGHIJ") == "ABCD EFGH IJ"
    assert totp.encode_secret(RFC_SECRET) == HOTP["secret_base32"]
    with pytest.raises(ValueError):
        totp.decode_secret("not base32!")


def test_sec16_otpauth_uri_format_and_secret_length() -> None:
    """SEC-16: the URI has the standard form and its secret decodes to exactly 20 bytes."""
    secret = totp.generate_secret()
    uri = totp.build_otpauth_uri(secret=secret, issuer="Two Step & Co", account="alice@example.com")
    b32 = totp.encode_secret(secret)
    assert uri == (
        "otpauth://totp/Two%20Step%20%26%20Co:alice%40example.com"
        f"?secret={b32}&issuer=Two%20Step%20%26%20Co&algorithm=SHA1&digits=6&period=30"
    )
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    assert len(totp.decode_secret(query["secret"][0])) == 20
    assert unquote(parts.path) == "/Two Step & Co:alice@example.com"
    assert query["issuer"] == ["Two Step & Co"]


def test_sec16_otpauth_uri_accepted_by_pyotp() -> None:
    """SEC-16: pyotp parses the URI back to the same secret and parameters."""
    secret = totp.generate_secret()
    uri = totp.build_otpauth_uri(secret=secret, issuer="twostep", account="bob:1")
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == totp.encode_secret(secret)
    assert parsed.digits == 6
    assert parsed.interval == 30
    assert parsed.issuer == "twostep"
    assert parsed.name == "bob:1"


def test_qr_svg_is_xml_with_svg_root() -> None:
    uri = totp.build_otpauth_uri(secret=totp.generate_secret(), issuer="twostep", account="alice")
    svg = totp.render_qr_svg(uri)
    root = ET.fromstring(svg)
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    assert "<script" not in svg
