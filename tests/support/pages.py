"""Helpers for the browser tests of the web pages: accounts, codes from oathtool, axe-core, screenshots."""

from __future__ import annotations

import functools
import itertools
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support import PASSWORD
from tests.support.server import Target

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# Every run writes its screenshots to test-artifacts/ (ignored by git); TWOSTEP_SCREENSHOTS=docs writes the
# ones the README shows, TWOSTEP_SCREENSHOTS=0 none.
SCREENSHOTS = (
    ROOT / ("docs" if os.environ.get("TWOSTEP_SCREENSHOTS") == "docs" else "test-artifacts") / "screenshots"
)
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 375, "height": 740}

_counter = itertools.count(1)


def username(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}{secrets.token_hex(3)}"


class TotpClock:
    """Codes from `oathtool` at a server clock moved 30 s forward each time, so no code is a replay."""

    def __init__(self, server: Target) -> None:
        self.server = server
        self.offset = 0

    def code(self, secret: str, *, skew: int = 0) -> str:
        """A fresh code; ``skew`` seconds is how far the device's clock is off (for the drift message)."""
        self.offset += 30
        self.server.set_clock(self.offset)
        into_step = time.time() % 30
        if into_step > 24:  # the server would check it in the next time step: wait for that one
            time.sleep(30.5 - into_step)
        when = int(time.time()) + self.offset + skew
        out = subprocess.run(
            ["oathtool", "--totp", "-b", f"--now=@{when}", secret.replace(" ", "")],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@functools.cache
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8") + "\n;typeof window.axe"


def check_a11y(page: Any, *, label: str = "") -> None:
    """Inject axe-core and fail on any violation of impact serious or critical."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # add_script_tag() inserts an inline <script>, which the pages' CSP (rightly) blocks; evaluating
        # the source through the DevTools protocol is not subject to CSP.
        page.evaluate(_axe_source())
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
    assert not bad, f"axe on {label or page.url}: " + "; ".join(bad)


def screenshot(page: Any, name: str, *, phone: bool = False) -> None:
    """Save <name>.png at desktop or phone width under SCREENSHOTS (not when TWOSTEP_SCREENSHOTS=0)."""
    if os.environ.get("TWOSTEP_SCREENSHOTS", "1") == "0":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.set_viewport_size(PHONE if phone else DESKTOP)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if size:
        page.set_viewport_size(size)


def sign_up(page: Any, url: str, name: str, password: str = PASSWORD, email: str = "") -> None:
    page.goto(f"{url}/signup")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    if email:
        page.get_by_label("E-mail address (optional)").fill(email)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/settings/two-step"))


def sign_in(page: Any, url: str, name: str, password: str = PASSWORD, next: str = "") -> None:
    page.goto(f"{url}/login" + (f"?next={next}" if next else ""))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_load_state()


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.wait_for_url(re.compile(r"/login"))


def verify_with_password(page: Any, password: str = PASSWORD) -> None:
    """On the verify-access page: the password (then the caller gives a second factor if asked)."""
    page.wait_for_url(re.compile(r"/verify-access"))
    page.get_by_label("Your password").fill(password)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state()


def read_key(page: Any) -> str:
    """The authenticator-app key as shown in groups of four on the setup page."""
    text: str = page.locator("#totp-key").inner_text()
    return "".join(text.split())


def add_app(page: Any, url: str, clock: TotpClock, name: str = "Phone") -> str:
    """Add an authenticator app from the two-step page (access already verified); returns its key."""
    page.goto(f"{url}/settings/two-step/app")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Continue").click()
    key = read_key(page)
    page.get_by_label("Six-digit code").fill(clock.code(key))
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_load_state()
    return key


def read_codes(page: Any) -> list[str]:
    codes: list[str] = page.locator("#recovery-codes code").all_inner_texts()
    return codes
