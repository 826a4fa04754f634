"""The operator's side: the `twostep` command run as an operator runs it (a subprocess, against the database
of a running server), and the services' context of an in-process app for quick set-up."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from tests.support.server import CHEAP_ARGON2, Target
from twostep.services.context import Context
from twostep.web.deps import WebState


def cli_env(server: Target, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell on the server's machine: its data directory and database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TWOSTEP_") or k == "TWOSTEP_TEST_POSTGRES_URL"
    }
    env.update(TWOSTEP_DATA_DIR=str(server.data_dir), TWOSTEP_ORIGIN=server.url, **CHEAP_ARGON2)
    if server.database_url:
        env["TWOSTEP_DATABASE_URL"] = server.database_url
    env.update(extra)
    return env


def twostep(
    server: Target, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``twostep ARGS...`` in a subprocess; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "twostep", *args],
        env=cli_env(server, **env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def invite_url(server: Target, *args: str) -> str:
    """``twostep invite ARGS...``: the one URL it prints."""
    done = twostep(server, "invite", *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


def token_of(url: str) -> str:
    return url.split("?invite=", 1)[1]


def app_ctx(server: Any) -> Context:
    """The services' context of an in-process app (tests.support.inprocess.AppServer)."""
    web = server.app.state.web
    assert isinstance(web, WebState)
    return web.ctx
