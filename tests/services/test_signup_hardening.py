"""H02 through the service: the per-address limit is inside sign-up, a taken name costs no argon2 work and
the same time as a free one, and two sign-ups of one free name still end with one account."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import argon2
import pytest
from sqlalchemy import func, select

from tests.support import STRONG_PASSWORD, unique_client, unique_username
from twostep.core.clock import SettableClock
from twostep.core.errors import TooManyAttempts, UsernameTaken, WeakPassword
from twostep.core.passwords import PasswordHasher
from twostep.services import account
from twostep.services.context import Context
from twostep.storage.tables import accounts as accounts_table


class CountingArgon2:
    """A counting wrapper around the real argon2-cffi hasher inside a PasswordHasher: every argon2
    computation (hash, verify, the dummy verify, the calibration of a pause) goes through it."""

    def __init__(self, inner: argon2.PasswordHasher) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.calls = 0

    def _count(self) -> None:
        with self.lock:
            self.calls += 1

    def hash(self, password: str) -> str:
        self._count()
        return self.inner.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        self._count()
        return self.inner.verify(stored, password)

    def check_needs_rehash(self, stored: str) -> bool:
        return self.inner.check_needs_rehash(stored)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def counting(ctx: Context, **cost: int) -> tuple[Context, CountingArgon2]:
    hasher = PasswordHasher(**cost) if cost else ctx.hasher
    spy = CountingArgon2(hasher._hasher)  # white-box: the real argon2 hasher, counted
    hasher._hasher = spy  # type: ignore[assignment]
    return replace(ctx, hasher=hasher), spy


def sign_up(ctx: Context, username: str, password: str = STRONG_PASSWORD) -> str:
    return account.sign_up(ctx, username=username, password=password, email=None, client=unique_client())


def count_accounts(ctx: Context, username: str) -> int:
    with ctx.db.transaction() as conn:
        query = select(func.count()).select_from(accounts_table).where(accounts_table.c.username == username)
        return int(conn.execute(query).scalar_one())


def test_H02_a_taken_username_is_refused_without_any_argon2_work(ctx: Context) -> None:
    ctx, spy = counting(ctx)
    name = unique_username()
    sign_up(ctx, name)
    assert spy.calls == 1  # a free name: one hash
    full_width = chr(ord(name[0]) - ord("a") + 0xFF41) + name[1:]  # NFKC makes it the same name
    for variant in (name, name.upper(), full_width):
        before = spy.calls
        with pytest.raises(UsernameTaken):
            sign_up(ctx, variant, "another strong password for a taken name")
        assert spy.calls == before, variant
    assert count_accounts(ctx, name) == 1


def test_H02_a_weak_password_is_refused_before_the_name_is_looked_at(ctx: Context) -> None:
    ctx, spy = counting(ctx)
    name = unique_username()
    sign_up(ctx, name)
    before = spy.calls
    for candidate in (name, unique_username()):  # taken or free: the same answer, no hash
        with pytest.raises(WeakPassword):
            sign_up(ctx, candidate, "short")
    assert spy.calls == before


def test_H02_taken_and_free_names_take_the_same_time(ctx: Context) -> None:
    """A taken name waits as long as a hash takes (measured in this process), so timing does not tell."""
    ctx, spy = counting(ctx, time_cost=2, memory_cost=19456, parallelism=1)
    taken = unique_username()
    sign_up(ctx, taken)  # also teaches the hasher how long a hash takes
    free_times: list[float] = []
    taken_times: list[float] = []
    for _ in range(9):
        started = time.perf_counter()
        sign_up(ctx, unique_username())
        free_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        with pytest.raises(UsernameTaken):
            sign_up(ctx, taken)
        taken_times.append(time.perf_counter() - started)
    assert spy.calls == 1 + 9  # only the free names were hashed
    free, taken_median = statistics.median(free_times), statistics.median(taken_times)
    assert 0.6 * free <= taken_median <= 1.5 * free, (free_times, taken_times)


def test_H02_two_sign_ups_of_one_free_name_make_one_account(ctx: Context) -> None:
    name = unique_username()
    barrier = threading.Barrier(6)

    def attempt(_: int) -> str:
        barrier.wait(10)
        try:
            sign_up(ctx, name)
        except UsernameTaken:
            return "taken"
        return "created"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert sorted(outcomes) == ["created"] + ["taken"] * 5
    assert count_accounts(ctx, name) == 1


def test_H02_sign_up_counts_against_the_per_address_limit(ctx: Context) -> None:
    ctx, spy = counting(replace(ctx, rate_limit_per_minute=3))
    # The window is the clock's minute: start at its first second, so that the four sign-ups (a few seconds
    # of hashing) fall in one window and never across its end.
    assert isinstance(ctx.clock, SettableClock)
    ctx.clock.set(ctx.now().replace(second=1, microsecond=0))
    client = unique_client()
    made = [unique_username() for _ in range(3)]
    for name in made:
        account.sign_up(ctx, username=name, password=STRONG_PASSWORD, email=None, client=client)
    refused = unique_username()
    before = spy.calls
    with pytest.raises(TooManyAttempts) as caught:
        account.sign_up(ctx, username=refused, password=STRONG_PASSWORD, email=None, client=client)
    assert 1 <= caught.value.retry_after <= 60
    assert spy.calls == before  # no hash either
    assert count_accounts(ctx, refused) == 0
    # Another address is not held back.
    account.sign_up(ctx, username=refused, password=STRONG_PASSWORD, email=None, client=unique_client())
    assert count_accounts(ctx, refused) == 1
