"""Durations as an operator writes them on the command line: ``7d``, ``12h``, ``30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_DURATION: Final = re.compile(r"([1-9][0-9]{0,5})([dhm])")
_UNITS: Final = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
MAX_DURATION: Final = timedelta(days=365)


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h`` or ``30m``: a whole number of days, hours or minutes, at most a year.

    Raises:
        ValueError: anything else; the message says what is accepted.
    """
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"{text!r} is not a duration: write a whole number followed by d (days), h (hours) or "
            "m (minutes), such as 7d, 12h or 30m"
        )
    value = int(found.group(1)) * _UNITS[found.group(2)]
    if value > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than a year")
    return value
