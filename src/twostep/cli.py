"""The `twostep` command: serve, migrate, rotate-key."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Any

from pydantic import ValidationError

from twostep.config import Settings

# Files 0600 and directories 0700 (H12): whatever twostep, SQLite or a library creates in the data directory.
UMASK = 0o077

SERVE_HELP = """\
Configuration comes from TWOSTEP_* environment variables (see the README); a flag, where one exists, wins.

Behind a reverse proxy, set TWOSTEP_TRUSTED_PROXIES (or --trusted-proxies) to the proxy's address: without it
every client has the proxy's address, so the per-address limits become one limit for everybody. A request
that carries X-Forwarded-For from a peer not in that list is logged as a warning (once per worker).
"""


class ConfigurationError(Exception):
    """Settings that cannot be served; the message names the TWOSTEP_* variable."""


def load_settings() -> Settings:
    """Settings from the environment.

    Raises:
        ConfigurationError: a value is refused; the message has no input values (they may hold secrets).
    """
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = "TWOSTEP_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigurationError("; ".join(lines)) from None


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with twostep's own loggers on the same stream and format."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["twostep"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from twostep.app import SchemaOutdated, prepare_database
    from twostep.keyfile import load_or_create_key

    if args.trusted_proxies is not None:
        # The workers read their settings from the environment.
        os.environ["TWOSTEP_TRUSTED_PROXIES"] = args.trusted_proxies
    settings = load_settings()
    try:
        # Migrate (SQLite) or check (PostgreSQL) once, before any worker starts.
        prepare_database(settings).dispose()
        load_or_create_key(settings.key_path)  # once, before the workers start
    except SchemaOutdated as exc:
        print(f"twostep: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "twostep.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        proxy_headers=False,
        server_header=False,
        access_log=False,
    )
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from twostep.keyfile import ensure_data_dir
    from twostep.storage import migrate
    from twostep.storage.db import make_engine

    settings = load_settings()
    ensure_data_dir(settings.data_dir)
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    engine.dispose()
    print(f"twostep: schema at revision {migrate.head_revision()}")
    return 0


def _rotate_key(_args: argparse.Namespace) -> int:
    from twostep.app import SchemaOutdated, prepare_database
    from twostep.core.secretbox import KeyRing, SecretBox, generate_key
    from twostep.keyfile import load_keys, next_key_path, write_key
    from twostep.services.keys import reseal_all

    settings = load_settings()
    try:
        db = prepare_database(settings)
    except SchemaOutdated as exc:
        print(f"twostep: {exc}", file=sys.stderr)
        return 2
    keys = load_keys(settings.key_path)
    nxt = next_key_path(settings.key_path)
    if len(keys) == 1:
        # The next key is on disk before any secret is sealed with it: a crash loses nothing.
        write_key(nxt, generate_key())
        keys = load_keys(settings.key_path)
    new_key = keys[-1]
    count = reseal_all(db, old=KeyRing(*(SecretBox(k) for k in keys)), new=SecretBox(new_key))
    db.dispose()
    write_key(settings.key_path, new_key)
    nxt.unlink()
    print(f"twostep: {count} secrets re-sealed with a new key; the old key is no longer needed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twostep", description="Two-step verification service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the web pages and the JSON API",
        description="Serve the web pages and the JSON API.",
        epilog=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--trusted-proxies",
        metavar="LIST",
        default=None,
        help="addresses or networks of reverse proxies whose X-Forwarded-For is believed, comma-separated "
        "(TWOSTEP_TRUSTED_PROXIES)",
    )
    serve.set_defaults(func=_serve)
    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.set_defaults(func=_migrate)
    rot = sub.add_parser("rotate-key", help="re-seal every secret with a new key (stop the servers first)")
    rot.set_defaults(func=_rotate_key)
    args = parser.parse_args(argv)
    os.umask(UMASK)
    try:
        result: int = args.func(args)
    except ConfigurationError as exc:
        print(f"twostep: configuration refused: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
