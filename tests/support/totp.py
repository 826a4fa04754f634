"""TOTP codes for the tests, from Debian's `oathtool`: an independent RFC 6238 implementation, never the code
under test. Secrets are base32 (as the API hands them out); times are Unix seconds."""

from __future__ import annotations

import base64
import secrets
import subprocess

PERIOD = 30


def step_of(at: float) -> int:
    return int(at // PERIOD)


def totp_code(secret: str, at: float) -> str:
    """The 6-digit code of ``secret`` at Unix time ``at``."""
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret, "--now", f"@{int(at)}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == 1 and len(out[0]) == 6 and out[0].isdigit(), out
    return out[0]


def totp_codes(secret: str, start: float, count: int) -> list[str]:
    """``count`` consecutive codes starting with the step of ``start`` (one `oathtool -w` call)."""
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret, "--now", f"@{int(start)}", "-w", str(count - 1)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == count, out
    return out


def wrong_code(secret: str, at: float, *, steps: int = 21) -> str:
    """A well-formed code that matches no step of ``secret`` within ``steps`` steps of ``at`` (±10 min)."""
    near = set(totp_codes(secret, at - steps * PERIOD, 2 * steps + 1))
    while True:
        candidate = f"{secrets.randbelow(10**6):06d}"
        if candidate not in near:
            return candidate


def secret_bytes(secret: str) -> bytes:
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def secret_text(secret: bytes) -> str:
    """The base32 text of a secret held as bytes (as `oathtool -b` wants it)."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")
