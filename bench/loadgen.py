"""The load: Debian's wrk with bench/wrk/replay.lua, each pre-built request sent once, on loopback."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "wrk" / "replay.lua"
VALID_OK_SHARE = 0.99


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (Debian package `wrk`; `make debian-packages` installs it)")
    return found


def write_lines(path: Path, lines: list[tuple[str | None, str]]) -> Path:
    """One request per line: the session cookie value (or "-") and the JSON body, tab-separated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for cookie, body in lines:
            assert "\t" not in body and "\n" not in body
            out.write(f"{cookie or '-'}\t{body}\n")
    return path


@dataclass
class LoadResult:
    """One wrk run. ``rps`` counts answered requests over the time from the first send to the last answer."""

    label: str
    lines: int
    sent: int
    ok: int
    bad: int
    active_s: float
    rps: float
    ok_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: dict[str, int]
    bad_samples: str
    server_cpu_s: float = 0.0
    wrk_cpu_s: float = 0.0
    # The whole machine while wrk ran (/proc/stat): every process's CPU, PostgreSQL's backends included,
    # over wrk's wall time.
    machine_busy_s: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_share(self) -> float:
        answered = self.ok + self.bad
        return self.ok / answered if answered else 0.0

    @property
    def valid(self) -> bool:
        return self.ok > 0 and self.ok_share >= VALID_OK_SHARE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok_share"] = round(self.ok_share, 4)
        out["valid"] = self.valid
        if self.ok:
            out["server_cpu_ms_per_request"] = round(1000 * self.server_cpu_s / (self.ok + self.bad), 3)
        if self.active_s:
            out["server_cores_busy"] = round(self.server_cpu_s / self.active_s, 2)
            out["wrk_cores_busy"] = round(self.wrk_cpu_s / self.active_s, 2)
        if self.wall_s:
            out["machine_cores_busy"] = round(self.machine_busy_s / self.wall_s, 2)
        return out


def machine_cpu() -> float:
    """CPU seconds this machine's cores have spent working (user, nice, system, interrupts) since boot (the
    ``cpu`` line of /proc/stat); 0 where there is none."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    *,
    label: str,
    url: str,
    path: str,
    lines_file: Path,
    duration: float,
    connections: int,
    threads: int = 1,
    expect: str = "",
    server_cpu: Any = None,
    addresses: int = 0,
) -> LoadResult:
    """Run wrk for ``duration`` seconds (or until every line was answered); ``server_cpu`` is a callable
    returning the server's CPU seconds, read before and after; ``addresses`` > 0 spreads the requests over
    that many client addresses in X-Forwarded-For (the server must trust 127.0.0.1 as its proxy)."""
    n_lines = sum(1 for _ in lines_file.open())
    threads = max(1, min(threads, connections, n_lines))
    argv = [
        wrk_path(),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "60s",
        "-s",
        str(LUA),
        url,
        "--",
        str(lines_file),
        path,
        str(threads),
        expect,
        str(addresses),
    ]
    cpu0 = server_cpu() if server_cpu else 0.0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_cpu()
    wall0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False)
    wall = time.monotonic() - wall0
    busy1 = machine_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = server_cpu() if server_cpu else 0.0
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    data = json.loads(found[-1][len("BENCHJSON ") :])
    answered = data["ok"] + data["bad"]
    active = float(data["active_s"]) or data["duration_us"] / 1e6
    lat = data["latency_us"]
    return LoadResult(
        label=label,
        lines=data["lines"],
        sent=data["sent"],
        ok=data["ok"],
        bad=data["bad"],
        active_s=round(active, 3),
        rps=round(answered / active, 1) if active else 0.0,
        ok_rps=round(data["ok"] / active, 1) if active else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=round(lat["mean"] / 1000, 3),
        max_ms=lat["max"] / 1000,
        socket_errors=data["errors"],
        bad_samples=data["bad_samples"],
        server_cpu_s=round(cpu1 - cpu0, 3),
        wrk_cpu_s=round(
            (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            3,
        ),
        machine_busy_s=round(busy1 - busy0, 3),
        wall_s=round(wall, 3),
    )
