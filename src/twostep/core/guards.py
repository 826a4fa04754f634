"""A debug check that no slow hash runs while a write transaction is open (security.md H06).

SQLite has one writer: an argon2id call inside a write transaction holds every other request of every
worker for its duration. ``storage.db.Database.transaction`` marks the code running inside a transaction
(``in_transaction``); the argon2id entry points call ``no_transaction_open``, which raises when the check is
switched on (``TWOSTEP_ASSERT_NO_HASH_IN_TX=1``, as the test suite and its servers have it) and the mark
is set.
The mark is a context variable, so it is per thread and per task; core imports nothing from storage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

ENV_SWITCH: Final = "TWOSTEP_ASSERT_NO_HASH_IN_TX"

_in_transaction: ContextVar[bool] = ContextVar("twostep_in_write_transaction", default=False)
_enforced = os.environ.get(ENV_SWITCH, "") == "1"


class HashInTransaction(AssertionError):
    """A slow hash was about to run inside an open write transaction."""


def enforce(on: bool) -> None:
    """Switch the check on or off for this process (tests)."""
    global _enforced
    _enforced = on


def enforced() -> bool:
    return _enforced


@contextmanager
def in_transaction() -> Iterator[None]:
    """Mark the code in this block as running inside a write transaction."""
    token = _in_transaction.set(True)
    try:
        yield
    finally:
        _in_transaction.reset(token)


def no_transaction_open(what: str) -> None:
    """Raises:
    HashInTransaction: the check is on and a write transaction is open in this thread or task.
    """
    if _enforced and _in_transaction.get():
        raise HashInTransaction(f"{what} ran inside an open write transaction")
