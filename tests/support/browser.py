"""Debian Chromium through Playwright, and the CDP virtual authenticator for passkeys."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

CHROMIUM = os.environ.get("TWOSTEP_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium")


# Authenticator kinds of the issue: a platform authenticator, a security key, a legacy U2F key.
PLATFORM = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}
SECURITY_KEY = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}
U2F_KEY = {
    "protocol": "u2f",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": False,
    "isUserVerified": False,
}


@dataclass
class VirtualAuthenticator:
    """A CDP virtual authenticator attached to one page."""

    cdp: Any
    authenticator_id: str

    @classmethod
    def attach(cls, page: Any, options: dict[str, Any] | None = None) -> VirtualAuthenticator:
        cdp = page.context.new_cdp_session(page)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        result = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {"options": {**PLATFORM, "automaticPresenceSimulation": True, **(options or {})}},
        )
        return cls(cdp, result["authenticatorId"])

    def credentials(self) -> list[dict[str, Any]]:
        creds: list[dict[str, Any]] = self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )["credentials"]
        return creds

    def remove_all(self) -> None:
        self.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": self.authenticator_id})

    def set_user_verified(self, verified: bool) -> None:
        self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.authenticator_id, "isUserVerified": verified}
        )

    def detach(self) -> None:
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator_id})
