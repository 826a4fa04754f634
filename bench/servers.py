"""Start and stop the servers under test, and read their processes' CPU time and resident memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out += [int(p) for p in text.split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Server:
    """One server process (uvicorn, with ``workers`` worker processes) on 127.0.0.1:``port``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        workers: int,
        env: dict[str, str],
        log_path: Path,
        ready_method: str,
        ready_path: str,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.workers = workers
        self.env = env
        self.log_path = log_path
        self.ready_method = ready_method
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()}")
            if self._answers() and len(self.worker_pids()) >= self.workers:
                if self.workers > 1:
                    time.sleep(1.0)  # let every worker finish its start-up
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def _answers(self) -> bool:
        data = b"{}" if self.ready_method == "POST" else None
        req = urllib.request.Request(
            self.url + self.ready_path,
            data=data,
            method=self.ready_method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself with one worker, else its spawned workers."""
        if self.proc is None:
            return []
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in _descendants(self.proc.pid) if "spawn_main" in _cmdline(p)]

    def all_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid, *_descendants(self.proc.pid)]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.all_pids())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def twostep_server(
    name: str,
    *,
    data_dir: Path,
    workers: int,
    log_dir: Path,
    database_url: str | None = None,
) -> Server:
    """``twostep serve`` as `make serve` runs it: production settings, no test clock, real argon2."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOSTEP_")}
    env.update(
        TWOSTEP_DATA_DIR=str(data_dir),
        TWOSTEP_ORIGIN=f"http://localhost:{port}",
        TWOSTEP_LOG_LEVEL="warning",
        # The per-address limit of sign-in requests (SEC-62) stays on, so its upsert is done and measured on
        # every request, but high: all of the load comes from one address, 127.0.0.1.
        TWOSTEP_RATE_LIMIT_PER_MINUTE=str(10**9),
    )
    if database_url:
        env["TWOSTEP_DATABASE_URL"] = database_url
    argv = [
        sys.executable,
        "-m",
        "twostep",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return Server(
        name,
        argv,
        port=port,
        workers=workers,
        env=env,
        log_path=log_dir / f"{name}.log",
        ready_method="GET",
        ready_path="/api/v1/openapi.json",
    )


def reference_server(name: str, *, workers: int, log_dir: Path) -> Server:
    """The bare Starlette app under uvicorn with the options ``twostep serve`` passes."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.ref_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return Server(
        name,
        argv,
        port=port,
        workers=workers,
        env=env,
        log_path=log_dir / f"{name}.log",
        ready_method="POST",
        ready_path="/",
    )


class RssSampler:
    """Samples VmRSS of the worker processes of some servers every ``interval`` s while ``active``."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._targets: list[int] = []
        self._max: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pids: list[int]) -> None:
        with self._lock:
            self._targets = list(pids)
            self._max = dict.fromkeys(pids, 0)

    def collect(self) -> dict[int, int]:
        """Max KiB per watched pid since watch(); stops watching."""
        with self._lock:
            result = dict(self._max)
            self._targets = []
        return result

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for pid in self._targets:
                    self._max[pid] = max(self._max.get(pid, 0), rss_kib(pid))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def floor_server(
    name: str,
    *,
    mode: str,
    data_dir: Path,
    log_dir: Path,
    database_url: str | None = None,
    workers: int = 1,
    connections: int = 16,
) -> Server:
    """bench/floor_app.py in ``mode`` under uvicorn, with the options ``twostep serve`` passes (no proxy
    headers, no server header, no access log); one worker unless told. On PostgreSQL the workers keep
    ``connections`` in all, opened at start."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.floor_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
        "--no-proxy-headers",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWOSTEP_", "FLOOR_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        FLOOR_MODE=mode,
        FLOOR_DATA_DIR=str(data_dir),
        FLOOR_RATE_LIMIT=str(10**9),
        FLOOR_PG_POOL=str(connections // workers),
    )
    if database_url:
        env["FLOOR_DATABASE_URL"] = database_url
    return Server(
        name,
        argv,
        port=port,
        workers=workers,
        env=env,
        log_path=log_dir / f"{name}.log",
        ready_method="GET",
        ready_path="/_floor/stats",
    )
