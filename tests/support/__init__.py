"""What the tests drive, one module each:

* ``api``: flows of the JSON API over HTTP; ``passkeys``: passkey flows with the software authenticator;
* ``mail``: an SMTP sink and the users whose e-mails it reads; ``pages``: the web pages in Chromium;
* ``services``: the use cases called directly; ``database``: rows read directly, for white-box checks;
* ``totp``: codes from `oathtool`;
* ``server``: a real `twostep serve`; ``inprocess``: the app in this process, with the same surface.

Shared here: the one password of the test accounts, unique names and clients, and the CI rule for skips.
"""

from __future__ import annotations

import os
import secrets

import pytest

from twostep.services.context import Client

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The password of every test account (strong enough for the policy of security.md §0.1).
PASSWORD = "correct horse battery staple"
STRONG_PASSWORD = PASSWORD


def require_or_skip(what: str) -> None:
    """Under CI a missing part is a failure, never a skip."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def unique_client() -> Client:
    return Client(
        ip=f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}",
        user_agent="pytest",
    )
