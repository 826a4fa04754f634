"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "missing"
    return (
        (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0]
        if (out.stdout or out.stderr)
        else "?"
    )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def describe(pg_version: str | None) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_mib": memory_mib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version or "not used",
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {
            name: _version(name)
            for name in (
                "uvicorn",
                "uvloop",
                "httptools",
                "starlette",
                "fastapi",
                "pydantic",
                "sqlalchemy",
                "psycopg",
                "argon2-cffi",
                "argon2-cffi-bindings",
                "cryptography",
                "webauthn",
            )
        },
    }
