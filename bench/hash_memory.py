"""`python -m bench.hash_memory`: P7 (issue 11, H03), a worker's peak resident memory under 50 concurrent
password requests with argon2id at its production cost (t=3, 64 MiB, p=4).

One `twostep serve --workers 1` as `make serve` runs it (bench/servers.py). Its worker's VmRSS is sampled
every 10 ms while 50 simultaneous sign-ups (POST /api/v1/accounts, fresh usernames) are released by a
barrier, then 50 simultaneous sign-ins (POST /api/v1/login) of the accounts that were made. Every request
is answered 201/200 or 503 busy (the hash gate's queue is full): anything else fails the run. Each request
comes from an address of its own (X-Forwarded-For from loopback, a trusted proxy here), as 50 people would.
Without --no-reference the same is measured once more with the bound lifted (64 hashes at once, a queue of
50), the behaviour before H03, for comparison.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine
from bench.servers import ROOT, RssSampler, rss_kib, twostep_server

REQUESTS = 50
GOAL_MIB = 400
PASSWORD = "bench correct horse battery staple 42"
UNBOUNDED = {"TWOSTEP_PASSWORD_HASH_CONCURRENCY": "64", "TWOSTEP_PASSWORD_HASH_QUEUE": str(REQUESTS)}


def _post(url: str, body: dict[str, str], client_ip: str) -> int:
    headers = {"Content-Type": "application/json", "X-Forwarded-For": client_ip}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def burst(url: str, bodies: list[dict[str, str]]) -> list[int]:
    """One thread per body, all released at once, each from a client address of its own (loopback is a
    trusted proxy), so that the per-address counters do not turn requests away; the statuses in order."""
    barrier = threading.Barrier(len(bodies))
    statuses = [0] * len(bodies)

    def run(i: int) -> None:
        barrier.wait(30)
        statuses[i] = _post(url, bodies[i], f"10.77.{i // 250}.{i % 250 + 1}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return statuses


def measure(work_dir: Path, label: str, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start a server, send the two bursts, return baseline and peak RSS of its worker and the statuses."""
    server = twostep_server(label, data_dir=work_dir / label, workers=1, log_dir=work_dir / "logs")
    server.env["TWOSTEP_TRUSTED_PROXIES"] = "127.0.0.1"
    server.env.update(env or {})
    server.start()
    sampler = RssSampler(interval=0.01)
    try:
        pid = server.worker_pids()[0]
        time.sleep(0.5)
        baseline = rss_kib(pid)
        names = [f"p7_{secrets.token_hex(4)}_{i}" for i in range(REQUESTS)]
        bodies = [{"username": n, "password": PASSWORD} for n in names]
        sampler.watch([pid])
        started = time.perf_counter()
        signups = burst(server.url + "/api/v1/accounts", bodies)
        made = [b for b, s in zip(bodies, signups, strict=True) if s == 201]
        signins = burst(server.url + "/api/v1/login", made) if made else []
        elapsed = time.perf_counter() - started
        peak = sampler.collect()[pid]
        after = rss_kib(pid)
    finally:
        sampler.close()
        server.stop()
    unexpected = [s for s in signups if s not in (201, 503)] + [s for s in signins if s not in (200, 503)]
    if unexpected:
        raise RuntimeError(f"{label}: unexpected statuses {Counter(unexpected)}; see {server.log_path}")
    return {
        "label": label,
        "settings": {k: v for k, v in server.env.items() if k.startswith("TWOSTEP_PASSWORD_HASH")},
        "requests": {"sign_ups": REQUESTS, "sign_ins": len(made)},
        "sign_ups": dict(Counter(str(s) for s in signups)),
        "sign_ins": dict(Counter(str(s) for s in signins)),
        "baseline_mib": round(baseline / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "after_mib": round(after / 1024, 1),
        "elapsed_s": round(elapsed, 2),
    }


def run(work_dir: Path, *, reference: bool) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    bounded = measure(work_dir, "p7_bounded")
    out: dict[str, Any] = {
        "figure": "P7",
        "issue": 11,
        "goal_mib": GOAL_MIB,
        "bounded": bounded,
        "met": bounded["peak_mib"] <= GOAL_MIB,
    }
    if reference:
        out["unbounded"] = measure(work_dir, "p7_unbounded", env=UNBOUNDED)
    return out


def figure_row(p7: dict[str, Any]) -> dict[str, Any]:
    """The P7 row of the figures table (bench/report.py)."""
    b = p7["bounded"]
    ref = p7.get("unbounded")
    return {
        "figure": "P7",
        "name": f"peak resident memory of a worker, {REQUESTS} concurrent sign-ups, then sign-ins "
        "(argon2 defaults)",
        "value": f"{b['peak_mib']:.1f} MiB (from {b['baseline_mib']:.1f})",
        "reference": f"{ref['peak_mib']:.1f} MiB with the bound lifted" if ref else "",
        "value_number": b["peak_mib"],
        "ratio": None,
        "goal": f"≤ {GOAL_MIB} MiB",
        "met": p7["met"],
        "valid": True,
    }


def markdown(data: dict[str, Any]) -> str:
    mach = data["machine"]
    lines = [
        f"# P7 — worker memory under {REQUESTS} concurrent password requests — {data['started_at']}",
        "",
        f"Machine: {mach['cpu_model']}, {mach['cores_usable']} cores, {mach['memory_mib']:,} MiB; "
        f"Python {mach['python']}. One worker, SQLite, argon2id at its defaults (t=3, 64 MiB, p=4).",
        "",
        "| run | hash settings | sign-ups (status: count) | sign-ins (status: count) | worker RSS before "
        "| peak | after | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in ("bounded", "unbounded"):
        r = data["p7"].get(key)
        if r is None:
            continue
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "defaults"
        lines.append(
            f"| {key} | {settings} | {r['sign_ups']} | {r['sign_ins']} | {r['baseline_mib']} MiB | "
            f"**{r['peak_mib']} MiB** | {r['after_mib']} MiB | {r['elapsed_s']} s |"
        )
    met = "met" if data["p7"]["met"] else "NOT met"
    lines += ["", f"Goal: peak ≤ {GOAL_MIB} MiB with the default settings: {met}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hash_memory", description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where hash_memory.* go")
    p.add_argument("--no-reference", action="store_true", help="skip the run with the bound lifted")
    a = p.parse_args(argv)
    work = ROOT / "bench" / "out" / "work-p7"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    data: dict[str, Any] = {
        "started_at": started,
        "machine": machine.describe(None),
        "p7": run(work, reference=not a.no_reference),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "hash_memory.json").write_text(json.dumps(data, indent=1) + "\n")
    text = markdown(data)
    (a.out / "hash_memory.md").write_text(text)
    print(text)
    return 0 if data["p7"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
