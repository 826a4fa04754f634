"""docs/deployment.md shows the nginx and Caddy configurations the tests run (tests/e2e/proxies) verbatim, so
that the documented ones cannot drift from the tested ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.proxies import CONFIG_FILES, PROXIES_DIR

DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_deployment_guide_contains_the_tested_proxy_configuration_verbatim(name: str) -> None:
    text = (PROXIES_DIR / name).read_text()
    assert text.strip(), name
    fence = "```caddyfile\n" if name.startswith("Caddyfile") else "```nginx\n"
    assert fence + text + "```" in DEPLOYMENT.read_text(), f"docs/deployment.md does not show {name} verbatim"


def test_every_proxy_configuration_file_is_listed() -> None:
    assert sorted(p.name for p in PROXIES_DIR.iterdir()) == sorted(CONFIG_FILES)
