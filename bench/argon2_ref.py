"""P2's reference: argon2-cffi verifying one stored hash in N processes at once, verifies per second.

The hash is the one the bench accounts carry, made by twostep's hasher with the server's defaults (argon2-cffi
defaults: argon2id, t=3, m=65536 KiB, p=4), so the parameters are the server's by construction.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import argon2


def _worker(stored: str, password: str, ready: Any, go: Any, results: Any) -> None:
    hasher = argon2.PasswordHasher()
    hasher.verify(stored, password)  # warm (allocation, first call)
    ready.put(True)
    start_at, end_at = go.get()
    while time.time() < start_at:
        time.sleep(0.001)
    count = 0
    last = start_at
    # Until the end, and at least twice (a verify can take seconds on a busy machine).
    while time.time() < end_at or count < 2:
        hasher.verify(stored, password)
        count += 1
        last = time.time()
    results.put((count, last - start_at))


def measure(stored: str, password: str, *, processes: int, duration: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(stored, password, ready, go, results)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    start_at = time.time() + 0.05
    for _ in procs:
        go.put((start_at, start_at + duration))
    got = [results.get(timeout=duration + 300) for _ in procs]
    for p in procs:
        p.join()
    rates = [count / elapsed for count, elapsed in got if elapsed > 0]
    params = argon2.extract_parameters(stored)
    return {
        "verifies_per_s": round(sum(rates), 3),
        "processes": processes,
        "verifies": sum(c for c, _ in got),
        "per_process": [round(r, 3) for r in rates],
        "parameters": {
            "type": params.type.name,
            "time_cost": params.time_cost,
            "memory_cost": params.memory_cost,
            "parallelism": params.parallelism,
        },
    }
