"""The `twostep` command: serve, migrate."""

from __future__ import annotations

import argparse
import sys

from twostep.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from twostep.app import SchemaOutdated, prepare_database

    settings = Settings()
    try:
        # Migrate (SQLite) or check (PostgreSQL) once, before any worker starts.
        prepare_database(settings).dispose()
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
        proxy_headers=False,
        server_header=False,
        access_log=False,
    )
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from twostep.keyfile import ensure_data_dir
    from twostep.storage import migrate
    from twostep.storage.db import make_engine

    settings = Settings()
    ensure_data_dir(settings.data_dir)
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    engine.dispose()
    print(f"twostep: schema at revision {migrate.head_revision()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twostep", description="Two-step verification service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the web pages and the JSON API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.set_defaults(func=_migrate)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
