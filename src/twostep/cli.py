"""The `twostep` command: serve, check-config, migrate, rotate-key, backup."""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import ipaddress
import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from twostep import config
from twostep.config import ConfigError, Settings
from twostep.core.access import AccessRule, DomainPattern, Policy

# Files 0600 and directories 0700 (H12): whatever twostep, SQLite or a library creates in the data directory.
UMASK = 0o077

SERVE_HELP = """\
Configuration comes from the TOML file TWOSTEP_CONFIG names (docs/twostep.example.toml), and from TWOSTEP_*
environment variables, which win over the file; a flag, where one exists, wins over both. `twostep
check-config` shows what is in effect and where each value came from.

Behind a reverse proxy, set TWOSTEP_TRUSTED_PROXIES (or --trusted-proxies) to the proxy's address: without it
every client has the proxy's address, so the per-address limits become one limit for everybody. A request
that carries X-Forwarded-For from a peer not in that list is logged as a warning (once per worker).
"""


def load_settings(flags: Mapping[str, object] | None = None) -> Settings:
    """Settings from the flags given, the environment and the configuration file.

    Raises:
        ConfigError: a value is refused; the message has no values of secrets.
    """
    return config.load(flags).settings


def log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging, with twostep's own loggers on the same stream and format; with ``log_format``
    "json", one JSON object a line (twostep.web.observe.JsonFormatter). Every record carries the id of the
    request being served. uvicorn's access log stays off: twostep writes its own line per request."""
    from uvicorn.config import LOGGING_CONFIG

    logging_config = copy.deepcopy(LOGGING_CONFIG)
    logging_config["filters"] = {"request_id": {"()": "twostep.web.observe.RequestIdFilter"}}
    logging_config["handlers"]["default"]["filters"] = ["request_id"]
    if log_format == "json":
        logging_config["formatters"]["json"] = {"()": "twostep.web.observe.JsonFormatter"}
        for handler in logging_config["handlers"].values():
            handler["formatter"] = "json"
    logging_config["loggers"]["twostep"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return logging_config


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    # No defaults here: a flag not given leaves the setting to the environment, the file, or its default.
    parser.add_argument("--host", help="address to listen on (TWOSTEP_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (TWOSTEP_PORT; default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (TWOSTEP_WORKERS; default 1)")
    parser.add_argument(
        "--trusted-proxies",
        metavar="LIST",
        default=None,
        help="addresses or networks of reverse proxies whose X-Forwarded-For is believed, comma-separated "
        "(TWOSTEP_TRUSTED_PROXIES)",
    )


def _serve_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "trusted_proxies": args.trusted_proxies,
    }


def _check_config(args: argparse.Namespace) -> int:
    print(config_report(config.load(_serve_flags(args))))
    return 0


# --- twostep check-config ----------------------------------------------------------------------------------

SECRET_URLS = ("database_url", "smtp_url")
# Settings of the second round that are validated before the parts that use them exist; check-config says so
# when one is set. Remove a name when its part is built.
NOT_YET_IN_EFFECT: Final = ("signup", "cookie_domain", "access")


def masked_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` in its query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "(set; not shown)"
    items = parts.query.split("&") if parts.query else []
    secret_items = [
        i for i, item in enumerate(items) if item.partition("=")[0].lower() in ("password", "pass")
    ]
    if not has_password and not secret_items:
        return url
    netloc = parts.netloc
    if has_password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    for i in secret_items:
        items[i] = f"{items[i].partition('=')[0]}=***"
    query = "&".join(items)
    # Put together by hand: urlunsplit would drop the "//" of a URL with an empty host (sqlite:////path).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _shown(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    if name == "database_url" and not value:
        return f"(unset: SQLite at {settings.resolved_database_url.removeprefix('sqlite:///')})"
    if value is None:
        return "(unset)"
    if name in SECRET_URLS:
        return masked_url(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value) if str(value) else '""'


def _from(loaded: config.LoadedSettings, name: str) -> str:
    source = loaded.sources.get(name, "default")
    if source == "environment":
        return f"environment (TWOSTEP_{name.upper()})"
    if source == "flag":
        return f"flag (--{name.replace('_', '-')})"
    return source


def _rule_line(index: int, rule: AccessRule) -> str:
    parts = [f"domain {', '.join(str(d) for d in rule.domains)}"]
    if rule.resources:
        parts.append(f"resources {', '.join(r.pattern for r in rule.resources)}")
    if rule.users:
        parts.append(f"users {', '.join(sorted(rule.users))}")
    if rule.groups:
        parts.append(f"groups {', '.join(sorted(rule.groups))}")
    parts.append(f"policy {rule.policy}")
    return f"  access.rules[{index}]: " + "; ".join(parts)


def _cookie_reaches(settings: Settings, pattern: DomainPattern) -> bool:
    scope = settings.cookie_domain
    if scope is None:
        return not pattern.wildcard and pattern.host == settings.rp_id
    return pattern.host == scope or pattern.host.endswith("." + scope)


def config_warnings(settings: Settings) -> list[str]:
    """What is valid but probably not meant, or what the server noticed (H17)."""
    warnings: list[str] = []
    control = settings.access_control
    if control.rules and settings.signup == "open":
        warnings.append(
            'signup is "open" while access rules exist: anyone who can reach twostep can create an account '
            'and pass every rule that names no users or groups. Set signup to "invite" or "closed".'
        )
    if control.default_policy is Policy.BYPASS and settings.access.default_policy is not None:
        warnings.append(
            'access.default_policy is "bypass": every host and path that no rule matches is open to anyone.'
        )
    for index, rule in enumerate(control.rules):
        if rule.policy in (Policy.ONE_FACTOR, Policy.TWO_FACTOR):
            for pattern in rule.domains:
                if not _cookie_reaches(settings, pattern):
                    warnings.append(
                        f"access.rules[{index}] protects {pattern}, but the session cookie is only sent to "
                        f"{settings.cookie_domain or settings.rp_id}"
                        f"{' and its subdomains' if settings.cookie_domain else ''}: nobody will be "
                        "signed in there. Set cookie_domain to a domain both belong to."
                    )
    seen = config.read_untrusted_forwarding(settings.data_dir)
    if seen is not None and not _trusted(seen.peer, settings.trusted_proxy_networks()):
        why = "TWOSTEP_TRUSTED_PROXIES is not set" if not settings.trusted_proxies else "it is not listed"
        warnings.append(
            f"the server saw X-Forwarded-For from {seen.peer} (last noted {seen.seen_at:%Y-%m-%d %H:%M} UTC) "
            f"and ignored it because {why}. Behind a reverse proxy, set trusted_proxies to the proxy's "
            "address: otherwise every client has the proxy's address."
        )
    pending = [name for name in NOT_YET_IN_EFFECT if name in settings.model_fields_set]
    if pending:
        warnings.append(
            f"{', '.join(pending)}: accepted and checked, but not yet in effect in this version of twostep."
        )
    if settings.enable_test_clock:
        warnings.append(
            "enable_test_clock is on: anyone who reaches the server can move its clock (tests only)."
        )
    return warnings


def _trusted(peer: str, networks: list[config.Network]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def config_report(loaded: config.LoadedSettings) -> str:
    """What `twostep check-config` prints: the effective settings (no secrets), where each came from, the
    access rules in order, and warnings."""
    settings = loaded.settings
    lines = [f"configuration file: {loaded.config_file or '(none: TWOSTEP_CONFIG is not set)'}", ""]
    names = [name for name in Settings.model_fields if name != "access"]
    rows = [("setting", "value", "from"), *((n, _shown(settings, n), _from(loaded, n)) for n in names)]
    control = settings.access_control
    if settings.access.default_policy is not None:
        policy_from = "file"
    else:
        policy_from = "default (rules are written)" if control.rules else "default (no rule is written)"
    rows.append(("access.default_policy", str(control.default_policy), policy_from))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.append("")
    if control.rules:
        lines.append(f"access rules ({len(control.rules)}; the first that matches decides):")
        lines += [_rule_line(i, rule) for i, rule in enumerate(control.rules)]
    else:
        lines.append(f"access rules: none ({control.default_policy} for every host)")
    warnings = config_warnings(settings)
    lines.append("")
    lines += [f"warning: {w}" for w in warnings] or ["no warnings"]
    lines.append("the configuration is valid")
    return "\n".join(lines)


METRICS_DIR = "metrics"


def _fresh_metrics_dir(settings: Settings) -> None:
    """The workers' metric files (prometheus-client's multiprocess mode), emptied before any worker starts:
    counters of an earlier run must not be summed with this one's. Set before prometheus_client is imported
    (it reads the variable once)."""
    from twostep.keyfile import ensure_data_dir

    ensure_data_dir(settings.data_dir)
    folder = settings.data_dir / METRICS_DIR
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())


def _check_writable(folder: Path) -> None:
    """Write, flush and remove a small file: a read-only directory or file system, or a full disk, stops
    start-up with a clear message (rather than a first request failing).

    Raises:
        OSError: the directory cannot be created or written.
    """
    from twostep.keyfile import ensure_data_dir

    ensure_data_dir(folder)
    probe = folder / f".write-test.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 65536)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def _storage_problem(settings: Settings, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        hint = "free some space on its file system"
    else:
        hint = "make it writable by the user twostep runs as (or set TWOSTEP_DATA_DIR)"
    return (
        f"twostep: cannot write to the data directory {settings.data_dir} ({why}); it holds the database, "
        f"the key and the metrics: {hint}."
    )


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(_serve_flags(args))
    try:
        _check_writable(settings.data_dir)
        _fresh_metrics_dir(settings)
    except OSError as exc:
        print(_storage_problem(settings, exc), file=sys.stderr)
        return 2

    import uvicorn
    from sqlalchemy.exc import DBAPIError

    from twostep.app import SchemaOutdated, prepare_database
    from twostep.keyfile import load_or_create_key

    if args.trusted_proxies is not None:
        # The workers read their settings from the environment (and the file): the flag wins over both.
        os.environ["TWOSTEP_TRUSTED_PROXIES"] = args.trusted_proxies
    try:
        # Migrate (SQLite) or check (PostgreSQL) once, before any worker starts.
        prepare_database(settings).dispose()
        load_or_create_key(settings.key_path)  # once, before the workers start
    except SchemaOutdated as exc:
        print(f"twostep: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(_storage_problem(settings, exc), file=sys.stderr)
        return 2
    except DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        if settings.is_default_sqlite:
            print(_storage_problem(settings, RuntimeError(first)), file=sys.stderr)
        else:
            print(f"twostep: cannot use the database of TWOSTEP_DATABASE_URL: {first}", file=sys.stderr)
        return 2
    uvicorn.run(
        "twostep.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
        proxy_headers=False,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
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


def _backup(args: argparse.Namespace) -> int:
    import sqlite3

    from sqlalchemy.engine import make_url

    from twostep.backup import BackupRefused, backup_sqlite

    settings = load_settings()
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        print(
            "twostep: the database is PostgreSQL: back it up with pg_dump (for example `pg_dump "
            "--format=custom --file=twostep.dump DBNAME`; docs/operations.md); twostep backup copies SQLite "
            "databases only.",
            file=sys.stderr,
        )
        return 2
    database = Path(url.database or "")
    try:
        result = backup_sqlite(database, Path(args.file), force=args.force)
    except BackupRefused as exc:
        print(f"twostep: backup refused: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"twostep: backup failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"twostep: backed up {database} to {result.path} ({result.size} bytes, integrity ok); "
        f"the key ({settings.key_path}) is not in it: keep a copy of it apart"
    )
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
    _add_serve_flags(serve)
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check-config",
        help="validate the configuration and show what is in effect (exit status 2 when it is refused)",
        description="Validate the configuration (the file TWOSTEP_CONFIG names, the TWOSTEP_* variables and "
        "these flags, as `twostep serve` takes them) and print the effective settings, where each came from, "
        "the access rules and warnings. Exit status 0 when valid (warnings included), 2 when refused.",
    )
    _add_serve_flags(check)
    check.set_defaults(func=_check_config)
    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.set_defaults(func=_migrate)
    rot = sub.add_parser("rotate-key", help="re-seal every secret with a new key (stop the servers first)")
    rot.set_defaults(func=_rotate_key)
    bak = sub.add_parser(
        "backup",
        help="copy the SQLite database to FILE while it serves (PostgreSQL: use pg_dump)",
        description="Copy the SQLite database to FILE, consistently, while the server runs (SQLite's online "
        "backup). The key file is not part of the copy: keep it apart. With PostgreSQL, use pg_dump. Exit "
        "status 2 when refused (FILE exists without --force, PostgreSQL), 1 when the copy failed.",
    )
    bak.add_argument("file", metavar="FILE", help="where to write the copy (mode 0600)")
    bak.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    bak.set_defaults(func=_backup)
    args = parser.parse_args(argv)
    os.umask(UMASK)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"twostep: configuration refused: {problem}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
