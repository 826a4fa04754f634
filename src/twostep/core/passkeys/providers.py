"""Passkey providers' names by AAGUID (e.g. "iCloud Keychain"), from the list shipped in twostep/data."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Final

ZERO_AAGUID: Final = "00000000-0000-0000-0000-000000000000"


def provider_name(aaguid: str) -> str | None:
    """The passkey provider's name for an AAGUID, or None when unknown. Raises: nothing."""
    if not isinstance(aaguid, str):
        return None
    return _aaguid_names().get(aaguid.strip().lower())


@functools.cache
def _aaguid_names() -> dict[str, str]:
    text = resources.files("twostep").joinpath("data/passkey-aaguid-names.json").read_text(encoding="utf-8")
    data = json.loads(text)
    names = data.get("aaguids", {}) if isinstance(data, dict) else {}
    return {
        str(key).lower(): value
        for key, value in names.items()
        if isinstance(value, str) and value and str(key).lower() != ZERO_AAGUID
    }
