"""H03: argon2 work is bounded per process (HashGate in core/passwords.py); beyond a short queue, Busy."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import argon2
import pytest

from twostep.core.errors import Busy
from twostep.core.passwords import HashGate, PasswordHasher

CHEAP_BUT_REAL = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class InFlight:
    """A counting wrapper around the real argon2-cffi hasher: how many computations run at once."""

    def __init__(self, inner: argon2.PasswordHasher) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def _run(self, fn: Any, *args: Any) -> Any:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(0.02)  # widen the window in which overlapping calls would be seen
            return fn(*args)
        finally:
            with self.lock:
                self.now -= 1

    def hash(self, password: str) -> str:
        return str(self._run(self.inner.hash, password))

    def verify(self, stored: str, password: str) -> bool:
        return bool(self._run(self.inner.verify, stored, password))

    def check_needs_rehash(self, stored: str) -> bool:
        return self.inner.check_needs_rehash(stored)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def spied(hasher: PasswordHasher) -> InFlight:
    spy = InFlight(hasher._hasher)  # white-box: count the real argon2 calls
    hasher._hasher = spy  # type: ignore[assignment]
    return spy


def test_H03_no_more_hashes_at_once_than_the_concurrency() -> None:
    hasher = PasswordHasher(**CHEAP_BUT_REAL, concurrency=2, queue=64)
    spy = spied(hasher)
    stored = hasher.hash("correct horse battery staple")
    password = "correct horse battery staple"

    def work(i: int) -> None:
        if i % 3 == 0:
            hasher.hash(password)
        elif i % 3 == 1:
            assert hasher.verify(stored, password)
        else:
            hasher.dummy_verify(password)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(work, range(48)))
    assert spy.calls >= 48
    assert spy.peak == 2


def test_H03_a_full_queue_is_refused_at_once_and_a_turn_passes_on() -> None:
    gate = HashGate(concurrency=1, queue=1, max_wait=10)
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def holder() -> None:
        with gate.turn():
            holding.set()
            release.wait(10)
            order.append("first")

    def waiter() -> None:
        with gate.turn():
            order.append("second")

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(5)
    second = threading.Thread(target=waiter)
    second.start()
    deadline = time.monotonic() + 5
    while gate._waiting != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(Busy) as refused:
        with gate.turn():
            pytest.fail("a third caller must not get a turn")
    assert time.perf_counter() - started < 0.5  # refused at once, not after waiting
    assert refused.value.retry_after >= 1
    assert refused.value.code == "busy"
    release.set()
    first.join(5)
    second.join(5)
    assert order == ["first", "second"]
    with gate.turn():  # free again
        pass


def test_H03_a_caller_waits_at_most_max_wait() -> None:
    gate = HashGate(concurrency=1, queue=4, max_wait=0.2)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.turn():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(5)
    started = time.perf_counter()
    with pytest.raises(Busy):
        with gate.turn():
            pass
    waited = time.perf_counter() - started
    release.set()
    thread.join(5)
    assert 0.15 <= waited < 2


def test_H03_busy_hasher_refuses_hash_verify_and_dummy_verify() -> None:
    hasher = PasswordHasher(**CHEAP_BUT_REAL, concurrency=1, queue=0)
    stored = hasher.hash("correct horse battery staple")
    hasher.dummy_verify("warm the dummy hash up")
    with hasher.gate.turn():
        with pytest.raises(Busy):
            hasher.hash("correct horse battery staple")
        with pytest.raises(Busy):
            hasher.verify(stored, "correct horse battery staple")
        with pytest.raises(Busy):
            hasher.dummy_verify("correct horse battery staple")
        with pytest.raises(Busy):
            hasher.pause_like_hash()
    assert hasher.verify(stored, "correct horse battery staple")


def test_H03_the_gate_learns_how_long_a_hash_takes() -> None:
    hasher = PasswordHasher(**CHEAP_BUT_REAL, concurrency=1)
    assert hasher.gate.typical_seconds is None
    hasher.hash("correct horse battery staple")
    learned = hasher.gate.typical_seconds
    assert learned is not None and learned > 0
    started = time.perf_counter()
    hasher.pause_like_hash()
    assert time.perf_counter() - started >= learned * 0.9


def test_H03_gate_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        HashGate(concurrency=0, queue=1)
    with pytest.raises(ValueError):
        HashGate(concurrency=1, queue=-1)
