"""TOTP (RFC 6238) over HOTP (RFC 4226): secrets, provisioning URI, QR code, and window verification.

Project decisions (docs/security.md §0 item 3): SHA-1, 6 digits, 30 s steps, 20-byte secrets, accepted
steps T-1, T, T+1, replay refused at or below the last used step, clock skew diagnosed within ±10 minutes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import re
import secrets
import struct
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

import segno

from twostep.core.errors import InvalidCode

PERIOD: Final = 30
DIGITS: Final = 6
SECRET_BYTES: Final = 20
WINDOW: Final = 1
SKEW_STEPS: Final = 20
MAX_CODE_INPUT: Final = 64

_ALGORITHMS: Final = frozenset({"sha1", "sha256", "sha512"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CODE_RE: Final = re.compile(r"[0-9]{6}", re.ASCII)


def generate_secret() -> bytes:
    """Return a new 20-byte TOTP secret from the CSPRNG (SEC-16).

    Raises:
        Nothing.
    """
    return secrets.token_bytes(SECRET_BYTES)


def encode_secret(secret: bytes) -> str:
    """Return the secret as upper-case base32 without padding.

    Raises:
        Nothing.
    """
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def decode_secret(text: str) -> bytes:
    """Decode base32 text (any case, spaces and padding optional) back to the secret bytes.

    Raises:
        ValueError: the text is not valid base32.
    """
    cleaned = "".join(text.split()).rstrip("=").upper()
    if not cleaned.isascii():
        raise ValueError("secret is not base32")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded, casefold=False)
    except binascii.Error as exc:
        raise ValueError("secret is not base32") from exc


def format_secret_for_display(secret_b32: str) -> str:
    """Return the base32 secret in groups of four characters separated by spaces.

    Raises:
        Nothing.
    """
    return " ".join(secret_b32[i : i + 4] for i in range(0, len(secret_b32), 4))


def build_otpauth_uri(*, secret: bytes, issuer: str, account: str) -> str:
    """Return the standard otpauth:// provisioning URI for the secret (SEC-16).

    Raises:
        Nothing.
    """
    quoted_issuer = quote(issuer, safe="")
    label = f"{quoted_issuer}:{quote(account, safe='')}"
    return (
        f"otpauth://totp/{label}?secret={encode_secret(secret)}&issuer={quoted_issuer}"
        f"&algorithm=SHA1&digits={DIGITS}&period={PERIOD}"
    )


def render_qr_svg(uri: str) -> str:
    """Return an SVG document (error correction M, quiet zone, scale 4, on white) encoding the URI.

    Raises:
        segno.DataOverflowError: the URI is too long for a QR code.
    """
    qr = segno.make_qr(uri, error="m", boost_error=False)
    buffer = io.BytesIO()
    # A white background: scanners need the light quiet zone even on a dark page.
    qr.save(buffer, kind="svg", scale=4, border=4, xmldecl=False, encoding="utf-8", light="#fff")
    return buffer.getvalue().decode("utf-8")


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "sha1") -> str:
    """Return the RFC 4226 HOTP value for a 64-bit counter as a zero-padded decimal string.

    Raises:
        ValueError: the counter, digit count or algorithm is out of range.
    """
    if not 0 <= counter < 2**64:
        raise ValueError("counter must fit in 64 unsigned bits")
    if not 6 <= digits <= 10:
        raise ValueError("digits must be between 6 and 10")
    if algorithm not in _ALGORITHMS:
        raise ValueError("unsupported algorithm")
    mac = hmac.new(secret, struct.pack(">Q", counter), algorithm).digest()
    offset = mac[-1] & 0x0F
    binary = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(now: datetime) -> int:
    """Return floor(unix seconds / 30) with integer arithmetic (safe beyond 2038).

    Raises:
        ValueError: ``now`` is a naive datetime.
    """
    if now.tzinfo is None:
        raise ValueError("naive datetime")
    delta = now - _EPOCH
    return (delta.days * 86_400 + delta.seconds) // PERIOD


def normalize_code(code: str) -> str | None:
    """Drop all white space and return the code if exactly 6 ASCII digits remain, else None (SEC-22).

    Raises:
        Nothing.
    """
    if len(code) > MAX_CODE_INPUT:
        return None
    compact = "".join(ch for ch in code if not ch.isspace())
    if _CODE_RE.fullmatch(compact) is None:
        return None
    return compact


def _matches(secret: bytes, step: int, candidate: bytes) -> bool:
    """Compare the candidate with the code of one step in constant time (SEC-23)."""
    expected = hotp(secret, step).encode("ascii") if step >= 0 else b""
    return hmac.compare_digest(expected, candidate)


def verify_code(*, secret: bytes, code: str, now: datetime, last_used_step: int | None) -> int:
    """Return the greatest step in T-1..T+1 whose code matches and lies above ``last_used_step``.

    Every window candidate is compared, with no early exit (SEC-23); replays are refused (SEC-18).

    Raises:
        InvalidCode: the code is malformed, matches no step in the window, or only a used step.
    """
    normalized = normalize_code(code)
    if normalized is None:
        raise InvalidCode()
    candidate = normalized.encode("ascii")
    current = time_step(now)
    matched: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        ok = _matches(secret, step, candidate)
        fresh = last_used_step is None or step > last_used_step
        if ok and fresh:
            matched = step
    if matched is None:
        raise InvalidCode()
    return matched


def diagnose_clock_skew(*, secret: bytes, code: str, now: datetime) -> int | None:
    """Return the device clock offset in seconds if the code matches outside the window within ±10 min.

    Raises:
        Nothing.
    """
    normalized = normalize_code(code)
    if normalized is None:
        return None
    candidate = normalized.encode("ascii")
    current = time_step(now)
    in_window = [_matches(secret, current + d, candidate) for d in range(-WINDOW, WINDOW + 1)]
    if any(in_window):
        return None
    for distance in range(WINDOW + 1, SKEW_STEPS + 1):
        for offset in (distance, -distance):
            if _matches(secret, current + offset, candidate):
                return offset * PERIOD
    return None
