"""The `twostep` command: serve, check-config, migrate, rotate-key."""

from __future__ import annotations

import argparse
import copy
import ipaddress
import os
import sys
from collections.abc import Mapping
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


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with twostep's own loggers on the same stream and format."""
    from uvicorn.config import LOGGING_CONFIG

    logging_config = copy.deepcopy(LOGGING_CONFIG)
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
NOT_YET_IN_EFFECT: Final = ("signup", "cookie_domain", "metrics_from", "log_format", "access")


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


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from twostep.app import SchemaOutdated, prepare_database
    from twostep.keyfile import load_or_create_key

    settings = load_settings(_serve_flags(args))
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
    uvicorn.run(
        "twostep.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
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
        print(f"twostep: {exc.message}", file=sys.stderr)
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
