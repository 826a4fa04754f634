"""The `twostep` command: serve, check-config, migrate, rotate-key, backup, and the operators' invite and
user."""

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
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from twostep import config
from twostep.config import ConfigError, Settings
from twostep.core.access import AccessRule, DomainPattern, Policy

if TYPE_CHECKING:
    from twostep.services.context import Context
    from twostep.services.operators import UserView

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
NOT_YET_IN_EFFECT: Final[tuple[str, ...]] = ()


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


# --- the operators' commands: twostep invite, twostep user ... --------------------------------------------


class OperatorError(Exception):
    """A refusal of an operator's command: its message is printed, the exit status is ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _operator_context() -> Context:
    """The services' context for an operator's command, on the database the server uses."""
    from twostep.app import SchemaOutdated, build_context, prepare_database
    from twostep.core.clock import SystemClock
    from twostep.keyfile import load_or_create_key

    settings = load_settings()
    try:
        db = prepare_database(settings)
    except SchemaOutdated as exc:
        raise OperatorError(str(exc), status=2) from None
    load_or_create_key(settings.key_path)
    return build_context(settings, db, SystemClock())


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _user_json(view: UserView) -> dict[str, object]:
    return {
        "username": view.username,
        "email": view.email,
        "email_verified": view.email_verified,
        "groups": list(view.groups),
        "two_step": view.two_step,
        "factors": [{"kind": f.kind, "name": f.name} for f in view.factors],
        "created_at": _iso(view.created_at),
        "last_sign_in_at": _iso(view.last_sign_in),
        "locked": view.locked_at is not None,
        "locked_at": _iso(view.locked_at),
    }


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _one_line(text: str | None) -> str:
    """A value for a terminal: control characters (none should be stored) shown as '?'."""
    return "-" if not text else "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in text)


def _invite(args: argparse.Namespace) -> int:
    from twostep.core.durations import parse_duration
    from twostep.services import operators

    try:
        expires = parse_duration(args.expires)
    except ValueError as exc:
        raise OperatorError(f"--expires: {exc}") from None
    ctx = _operator_context()
    made = operators.invite(ctx, username=args.username, email=args.email, groups=args.group, expires=expires)
    print(made.url)
    fixed = [f"username {made.username}"] if made.username else []
    fixed += [f"e-mail {made.email}"] if made.email else []
    fixed += [f"groups {', '.join(made.groups)}"] if made.groups else []
    print(
        f"twostep: invitation{' for ' + '; '.join(fixed) if fixed else ''}; single use, "
        f"expires {_when(made.expires_at)}",
        file=sys.stderr,
    )
    return 0


def _user_list(args: argparse.Namespace) -> int:
    import json

    from twostep.services import operators

    users = operators.list_users(_operator_context())
    if args.json:
        print(json.dumps([_user_json(u) for u in users], indent=2))
        return 0
    if not users:
        print("no users")
        return 0
    header = ("USERNAME", "E-MAIL", "VERIFIED", "GROUPS", "TWO-STEP", "CREATED", "LAST SIGN-IN", "LOCKED")
    rows = [header] + [
        (
            u.username,
            _one_line(u.email),
            ("yes" if u.email_verified else "no") if u.email else "-",
            ",".join(u.groups) or "-",
            "on" if u.two_step else "off",
            _when(u.created_at),
            _when(u.last_sign_in),
            _when(u.locked_at) if u.locked_at else "no",
        )
        for u in users
    ]
    print(_table(rows))
    return 0


def _user_show(args: argparse.Namespace) -> int:
    import json

    from twostep.services import operators

    u = operators.show_user(_operator_context(), args.name)
    if args.json:
        print(json.dumps(_user_json(u), indent=2))
        return 0
    factor_lines = [f'{f.kind} "{_one_line(f.name)}"' for f in u.factors]
    rows = [
        ("username", u.username),
        (
            "e-mail",
            f"{_one_line(u.email)}"
            + ((" (verified)" if u.email_verified else " (not verified)") if u.email else ""),
        ),
        ("groups", ", ".join(u.groups) or "-"),
        ("two-step", "on" if u.two_step else "off"),
        ("factors", "; ".join(factor_lines) or "-"),
        ("created", _when(u.created_at)),
        ("last sign-in", _when(u.last_sign_in)),
        ("locked", f"yes, since {_when(u.locked_at)}" if u.locked_at else "no"),
    ]
    print(_table([(f"{k}:", v) for k, v in rows]))
    return 0


def _user_lock(args: argparse.Namespace) -> int:
    from twostep.services import operators

    ended = operators.lock(_operator_context(), args.name)
    if ended is None:
        print(f"twostep: {args.name} was already locked; nothing changed")
    else:
        print(f"twostep: locked {args.name}; {ended} session{'s' if ended != 1 else ''} ended")
    return 0


def _user_unlock(args: argparse.Namespace) -> int:
    from twostep.services import operators

    if operators.unlock(_operator_context(), args.name):
        print(f"twostep: unlocked {args.name}")
    else:
        print(f"twostep: {args.name} was not locked; nothing changed")
    return 0


def _user_delete(args: argparse.Namespace) -> int:
    from twostep.services import operators

    ctx = _operator_context()
    view = operators.show_user(ctx, args.name)  # an unknown user is refused before any question
    if not args.yes:
        print(
            f"Delete the account {view.username} with its factors, sessions and security log? This cannot be "
            "undone. Type the username to confirm: ",
            end="",
            flush=True,
        )
        answer = sys.stdin.readline().strip()
        if answer != view.username:
            raise OperatorError(f"not deleted: the answer was not {view.username!r}")
    name = operators.delete(ctx, view.username)
    print(f"twostep: deleted {name}")
    return 0


def _user_groups(args: argparse.Namespace) -> int:
    from twostep.services import operators

    if not args.add and not args.remove:
        u = operators.show_user(_operator_context(), args.name)
        print(f"{u.username}: {', '.join(u.groups) or '(no group)'}")
        return 0
    change = operators.change_groups(_operator_context(), args.name, add=args.add, remove=args.remove)
    parts = []
    if change.added:
        parts.append(f"added to {', '.join(change.added)}")
    if change.removed:
        parts.append(f"removed from {', '.join(change.removed)}")
    done = "; ".join(parts) or "nothing changed"
    print(f"twostep: {change.username}: {done}; groups now: {', '.join(change.groups) or '(none)'}")
    return 0


def _add_operator_commands(sub: Any) -> None:
    inv = sub.add_parser(
        "invite",
        help="make a single-use sign-up link (print its URL)",
        description="Make an invitation and print its URL, <origin>/signup?invite=<token>. It works once and "
        "expires; it may fix the username and the e-mail address, and puts the new account in the groups "
        "named. Only a hash of the token is stored: the URL cannot be shown again.",
    )
    inv.add_argument("--username", help="the username the invited person must take")
    inv.add_argument("--email", help="the e-mail address of the new account")
    inv.add_argument(
        "--group", action="append", default=[], metavar="GROUP", help="a group of the new account (repeat)"
    )
    inv.add_argument("--expires", default="7d", help="how long the link works: 7d, 12h, 30m (default 7d)")
    inv.set_defaults(func=_invite)
    user = sub.add_parser("user", help="list, show, lock, unlock, delete users; change their groups")
    users = user.add_subparsers(dest="user_command", required=True)
    lst = users.add_parser("list", help="every user, in a table (or --json)")
    lst.add_argument("--json", action="store_true", help="JSON for scripts")
    lst.set_defaults(func=_user_list)
    show = users.add_parser("show", help="one user: groups, e-mail, two-step and factors, dates, lock")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="JSON for scripts")
    show.set_defaults(func=_user_show)
    lock = users.add_parser("lock", help="refuse every sign-in of the user and end their sessions now")
    lock.add_argument("name")
    lock.set_defaults(func=_user_lock)
    unlock = users.add_parser("unlock", help="let a locked user sign in again")
    unlock.add_argument("name")
    unlock.set_defaults(func=_user_unlock)
    delete = users.add_parser("delete", help="delete the user and everything of theirs")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=_user_delete)
    groups = users.add_parser("groups", help="add the user to groups, remove them from groups")
    groups.add_argument("name")
    groups.add_argument(
        "--add", action="append", default=[], metavar="GROUP", help="a group to join (repeat)"
    )
    groups.add_argument(
        "--remove", action="append", default=[], metavar="GROUP", help="a group to leave (repeat)"
    )
    groups.set_defaults(func=_user_groups)


def _services_context() -> Any:
    """The services' context for an operator command, or None after saying why (exit status 2)."""
    from twostep.app import SchemaOutdated, build_context, prepare_database
    from twostep.core.clock import SystemClock

    settings = load_settings()
    try:
        db = prepare_database(settings)
    except SchemaOutdated as exc:
        print(f"twostep: {exc}", file=sys.stderr)
        return None
    return build_context(settings, db, SystemClock())


def _client_add(args: argparse.Namespace) -> int:
    from twostep.core.errors import InvalidRequest
    from twostep.services import oidc_clients

    ctx = _services_context()
    if ctx is None:
        return 2
    try:
        new = oidc_clients.add(
            ctx,
            name=args.name,
            redirect_uris=args.redirect_uri,
            public=args.public,
            policy=args.policy,
            groups=args.group,
            users=args.user,
            post_logout_redirect_uris=args.post_logout_redirect_uri,
            signing_alg=args.signing_alg,
        )
    except InvalidRequest as exc:
        print(f"twostep: {exc.text()}", file=sys.stderr)
        return 2
    finally:
        ctx.db.dispose()
    print(f"client_id:     {new.row.id}")
    if new.secret is not None:
        print(f"client_secret: {new.secret}")
        print("The secret is shown once: store it in the application's configuration now.")
    else:
        print("A public client: no secret; it must use PKCE (S256).")
    print(f"issuer:        {ctx.origin}")
    return 0


def _client_list(_args: argparse.Namespace) -> int:
    from twostep.services import oidc_clients

    ctx = _services_context()
    if ctx is None:
        return 2
    rows = oidc_clients.every(ctx)
    ctx.db.dispose()
    if not rows:
        print("No clients. Add one with `twostep client add NAME --redirect-uri URI`.")
    for row in rows:
        kind = "public" if row.secret_hash is None else "confidential"
        print(f"{row.id}  {row.name}  ({kind}, {row.policy}, {row.signing_alg})")
        for uri in row.redirect_uris:
            print(f"    redirect_uri: {uri}")
        for uri in row.post_logout_redirect_uris:
            print(f"    post_logout_redirect_uri: {uri}")
        if row.users:
            print(f"    users: {', '.join(row.users)}")
        if row.groups:
            print(f"    groups: {', '.join(row.groups)}")
    return 0


def _client_remove(args: argparse.Namespace) -> int:
    from twostep.services import oidc_clients

    ctx = _services_context()
    if ctx is None:
        return 2
    removed = oidc_clients.remove(ctx, args.client_id)
    ctx.db.dispose()
    if not removed:
        print(f"twostep: no client {args.client_id!r}", file=sys.stderr)
        return 1
    print(f"twostep: client {args.client_id} removed, with every token issued to it")
    return 0


def _rotate_signing_key(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from twostep.services import oidc_keys

    ctx = _services_context()
    if ctx is None:
        return 2
    oidc_keys.ensure_keys(ctx)
    delay = timedelta(0) if args.now else oidc_keys.ROTATION_DELAY
    rotation = oidc_keys.rotate(ctx, delay=delay)
    ctx.db.dispose()
    print(
        f"twostep: new signing keys {', '.join(rotation.added)}, published now, signing from "
        f"{rotation.active_from.isoformat(timespec='seconds')}"
    )
    if rotation.retiring:
        print(
            f"twostep: the keys they replace ({', '.join(rotation.retiring)}) stay published until the ID "
            "tokens they signed have expired"
        )
    return 0


def _add_client_commands(sub: Any) -> None:
    client = sub.add_parser(
        "client", help="OpenID Connect clients (applications that sign in through twostep)"
    )
    verbs = client.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="register a client; prints its id and, once, its secret")
    add.add_argument("name")
    add.add_argument("--redirect-uri", action="extend", required=True, metavar="URI", nargs="+")
    add.add_argument("--public", action="store_true", help="no secret; PKCE required (apps in a browser)")
    add.add_argument("--policy", choices=["one_factor", "two_factor"], default="one_factor")
    add.add_argument("--group", action="append", default=[], metavar="G", help="allow members of G")
    add.add_argument("--user", action="append", default=[], metavar="U", help="allow the user U")
    add.add_argument("--post-logout-redirect-uri", action="append", default=[], metavar="URI")
    add.add_argument("--signing-alg", choices=["RS256", "ES256"], default="RS256")
    add.set_defaults(func=_client_add)
    lst = verbs.add_parser("list", help="list the registered clients")
    lst.set_defaults(func=_client_list)
    rm = verbs.add_parser("remove", help="remove a client and every token issued to it")
    rm.add_argument("client_id")
    rm.set_defaults(func=_client_remove)
    rsk = sub.add_parser(
        "rotate-signing-key",
        help="add new ID token signing keys (published now, signing in 1 hour, or at once with --now)",
    )
    rsk.add_argument("--now", action="store_true", help="sign with the new keys at once")
    rsk.set_defaults(func=_rotate_signing_key)


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
    _add_client_commands(sub)
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
    _add_operator_commands(sub)
    args = parser.parse_args(argv)
    os.umask(UMASK)
    from twostep.core.errors import TwostepError

    try:
        result: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"twostep: configuration refused: {problem}", file=sys.stderr)
        return 2
    except OperatorError as exc:
        print(f"twostep: {exc}", file=sys.stderr)
        return exc.status
    except TwostepError as exc:
        # An operator's command refused (an unknown user, a bad group name, a taken username).
        print(f"twostep: {exc.text()}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
