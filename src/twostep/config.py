"""Settings: defaults < the configuration file (TWOSTEP_CONFIG) < TWOSTEP_* variables < command-line flags.

docs/api.md "Running it" and "Configuration file". The file is TOML, read with ``tomllib``; every setting is
written there in lower case without the ``TWOSTEP_`` prefix, and the access rules (``[access]``) are written
only there. ``load`` reads all of it and refuses what cannot be served with a ``ConfigError`` whose lines name
the file and the line (TOML syntax) or the key (``access.rules[2].policy``), or the variable or flag.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Final, Literal, Self, Union, get_args, get_origin
from urllib.parse import urlsplit

import idna
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from twostep.core.access import AccessControl, AccessRule, DomainPattern, Policy
from twostep.core.names import normalize_group, normalize_username

CONFIG_ENV: Final = "TWOSTEP_CONFIG"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A label of a host name once in ASCII (underscores occur in real host names, and browsers accept them).
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
ORIGIN_EXAMPLE = "TWOSTEP_ORIGIN must look like https://accounts.example.com"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PolicyName = Literal["bypass", "one_factor", "two_factor", "deny"]
Source = Literal["default", "file", "environment", "flag"]


class ConfigError(Exception):
    """Settings that cannot be served. ``problems`` has one line each, naming where the value came from
    (the file and its line or key, the variable, the flag) and what is wrong, never the value of a setting
    that may hold a secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def canonical_origin(value: str) -> str:
    """The origin as a browser serialises it (H16): scheme and host in lower case, a non-ASCII host as its
    IDNA A-label, no default port, no trailing slash. ``HTTPS://Accounts.Example.com:443/`` gives
    ``https://accounts.example.com``.

    Raises:
        ValueError: not an http(s) origin (a path, query, fragment or user name), or an invalid host or port.
    """
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(ORIGIN_EXAMPLE)
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise ValueError(ORIGIN_EXAMPLE)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"TWOSTEP_ORIGIN has an invalid port: {exc}") from None
    host = canonical_host(parts.hostname, "TWOSTEP_ORIGIN has a host")
    if port is not None and port != DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def canonical_host(hostname: str, what: str = "the host") -> str:
    """A host name in lower case with non-ASCII labels as IDNA A-labels, or an IP address (IPv6 in brackets).

    Raises:
        ValueError: not a valid domain name; the message starts with ``what``.
    """
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        pass
    else:
        return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    try:
        if hostname.isascii():
            host = hostname.lower()
        else:
            # UTS 46 non-transitional processing, as browsers do: "Bücher.example" -> "xn--bcher-kva.example".
            host = idna.encode(hostname, uts46=True, transitional=False).decode("ascii")
        for label in host.split("."):
            if not _LABEL.fullmatch(label):
                raise idna.IDNAError(f"{label!r} is not a label of a domain name")
            if label.startswith("xn--"):
                idna.decode(label)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{what} that is not a valid domain name: {exc}") from None
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_networks(value: object) -> tuple[Network, ...]:
    """Addresses or networks, as a list or comma-separated (``"127.0.0.1/8, ::1"``); host bits are allowed.

    Raises:
        ValueError: an item is not an address or a network.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("must be a list of addresses or networks")
    out: list[Network] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError("must be a list of addresses or networks")
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{item.strip()!r} is not an address or a network") from None
    return tuple(out)


# --- [access]: the rules of docs/api.md "Access rules", parsed into twostep.core.access --------------------


def _domain_pattern(value: str) -> str:
    """An entry of a rule's ``domain``: a host name, an IP address, or ``*.`` and a domain."""
    text = value.strip().lower().removesuffix(".")
    wildcard = text.startswith("*.")
    host = text[2:] if wildcard else text
    if not wildcard and _is_ip(host):
        return ipaddress.ip_address(host.strip("[]")).compressed
    if not host or any(c in host for c in "*/\\:@?#[] "):
        raise ValueError(f"{value!r} is not a host name or *. and a domain (no scheme, port or path)")
    host = canonical_host(host, f"{value!r} has a host")
    if wildcard and _is_ip(host):
        raise ValueError(f"{value!r}: a wildcard is for domain names, not addresses")
    return f"*.{host}" if wildcard else host


def _regular_expression(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


def _username(value: str) -> str:
    normalized = normalize_username(value)
    if normalized is None:
        raise ValueError(f"{value!r} is not a username: 3 to 64 letters, digits and . _ @ + -")
    return normalized


def _group(value: str) -> str:
    normalized = normalize_group(value)
    if normalized is None:
        raise ValueError(f"{value!r} is not a group name: 1 to 64 letters, digits and . _ @ + -")
    return normalized


class AccessRuleSettings(BaseModel):
    """One ``[[access.rules]]`` table as written (strict: a TOML value of another type is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    domain: list[Annotated[str, AfterValidator(_domain_pattern)]] = Field(min_length=1)
    resources: list[Annotated[str, AfterValidator(_regular_expression)]] = Field(default_factory=list)
    users: list[Annotated[str, AfterValidator(_username)]] = Field(default_factory=list)
    groups: list[Annotated[str, AfterValidator(_group)]] = Field(default_factory=list)
    policy: PolicyName

    @model_validator(mode="after")
    def _bypass_has_no_subject(self) -> Self:
        if self.policy == "bypass" and (self.users or self.groups):
            raise ValueError(
                "a bypass rule cannot name users or groups: bypass asks nobody to sign in, so there is "
                "nobody to compare (use one_factor or two_factor)"
            )
        return self

    def to_rule(self) -> AccessRule:
        return AccessRule(
            domains=tuple(
                DomainPattern(d[2:], wildcard=True) if d.startswith("*.") else DomainPattern(d)
                for d in self.domain
            ),
            policy=Policy(self.policy),
            resources=tuple(re.compile(r) for r in self.resources),
            users=frozenset(self.users),
            groups=frozenset(self.groups),
        )


class AccessSettings(BaseModel):
    """The ``[access]`` table; ``control`` is it compiled, once, into ``twostep.core.access`` data."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # None: "one_factor" when no rule is written (docs/api.md, "Running it" unchanged), "deny" when rules are
    # written (fail closed: a host the rules forgot is not open to every account).
    default_policy: PolicyName | None = None
    rules: list[AccessRuleSettings] = Field(default_factory=list)
    _control: AccessControl = PrivateAttr(default_factory=AccessControl)

    @model_validator(mode="after")
    def _compile(self) -> Self:
        if self.default_policy is not None:
            default = Policy(self.default_policy)
        else:
            default = Policy.DENY if self.rules else Policy.ONE_FACTOR
        self._control = AccessControl(rules=tuple(r.to_rule() for r in self.rules), default_policy=default)
        return self

    @property
    def control(self) -> AccessControl:
        return self._control


# --- the settings ------------------------------------------------------------------------------------------


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOSTEP_", extra="ignore")

    database_url: str | None = None
    origin: str = "http://localhost:8000"
    data_dir: Path = Path("twostep-data")
    smtp_url: str | None = None
    mail_from: str = "twostep <twostep@localhost>"
    # Peers whose X-Forwarded-For is believed (SEC-26 b): comma-separated addresses or networks (a list in
    # the file). Behind a reverse proxy it must name the proxy, or every client shares the proxy's address.
    trusted_proxies: str = ""
    issuer: str = "twostep"
    # argon2id cost for passwords; None = argon2-cffi defaults (RFC 9106 second recommendation).
    argon2_time_cost: int | None = None
    argon2_memory_cost: int | None = None
    argon2_parallelism: int | None = None
    # Password hashes computed at once per worker (H03); None = the number of cores. Each holds
    # argon2_memory_cost KiB while it runs. Up to password_hash_queue more wait for a turn (None = 8 per
    # turn); beyond that a request answers 503 busy with Retry-After.
    password_hash_concurrency: int | None = Field(default=None, ge=1)
    password_hash_queue: int | None = Field(default=None, ge=0)
    # Test-only: exposes POST /api/v1/_test/clock to move the server clock. Never set in production: refused
    # with an https origin, and a warning at start-up (H11).
    enable_test_clock: bool = False
    log_level: str = "info"
    # Sign-in ceremony requests allowed per client address and minute (SEC-62); 0 turns the limit off.
    rate_limit_per_minute: int = Field(default=120, ge=0)
    outbox_poll_seconds: float = Field(default=2.0, gt=0)
    # Where `twostep serve` listens (its --host, --port and --workers win).
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    # Second round (docs/api.md), validated now and put to use by the issues that build them:
    # who may create an account (issue 12),
    signup: Literal["open", "invite", "closed"] = "open"
    # whom the pages tell a person whose account is locked to ask (issue 12),
    operator_contact: str = Field(default="the administrator of this site", min_length=1, max_length=200)
    # the domain the session cookie is valid for, the origin's host or a parent of it (issue 13),
    cookie_domain: str | None = None
    # who may read GET /metrics, and the log line format (issue 15).
    metrics_from: Annotated[tuple[Network, ...], NoDecode] = parse_networks("127.0.0.1/8, ::1")
    log_format: Literal["text", "json"] = "text"
    # Seconds `twostep serve` lets requests in flight finish after SIGTERM (issue 15).
    shutdown_timeout: float = Field(default=10.0, gt=0, le=3600)
    # "Don't ask again on this browser for N days" at the second step (issue 17); 0 turns it off.
    trusted_browser_days: int = Field(default=30, ge=0, le=400)
    # The language of the pages and e-mails when neither the account's choice nor the browser's
    # Accept-Language names one of twostep's languages (issue 19).
    default_language: Literal["en", "sl", "de"] = "en"
    # [access]: only in the configuration file.
    access: AccessSettings = Field(default_factory=AccessSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: arguments (the CLI's flags), then TWOSTEP_* variables, then the file.
        return init_settings, _EnvironmentSource(settings_cls), _FileSource(settings_cls)

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        origin = canonical_origin(value)
        host = urlsplit(origin).hostname
        if origin.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            # SEC-41: plain http only for local development.
            raise ValueError("TWOSTEP_ORIGIN must use https except for http://localhost")
        return origin

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies_as_text(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("metrics_from", mode="before")
    @classmethod
    def _check_metrics_from(cls, value: object) -> tuple[Network, ...]:
        return parse_networks(value)

    @field_validator("cookie_domain")
    @classmethod
    def _check_cookie_domain(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        # A leading dot is what RFC 6265 ignores too.
        domain = canonical_host(value.strip().removeprefix("."), "TWOSTEP_COOKIE_DOMAIN is a name")
        if _is_ip(domain) or "." not in domain:
            raise ValueError("TWOSTEP_COOKIE_DOMAIN must be a registrable domain such as example.com")
        origin = info.data.get("origin")
        host = urlsplit(origin).hostname if isinstance(origin, str) else None
        if host is not None and host != domain and not host.endswith("." + domain):
            raise ValueError(
                f"TWOSTEP_COOKIE_DOMAIN must be the origin's host ({host}) or a domain it belongs to, "
                f"not {domain}"
            )
        return domain

    @model_validator(mode="after")
    def _test_clock_only_in_development(self) -> Self:
        if self.enable_test_clock and self.secure_cookies:
            # H11: whoever reaches the test clock moves time for every code, session and limit.
            raise ValueError(
                "TWOSTEP_ENABLE_TEST_CLOCK lets anyone move the server's clock; it is for tests only and "
                "cannot be used with an https TWOSTEP_ORIGIN. Unset it."
            )
        return self

    @property
    def rp_id(self) -> str:
        host = urlsplit(self.origin).hostname
        assert host is not None
        return host

    @property
    def secure_cookies(self) -> bool:
        return self.origin.startswith("https://")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'twostep.sqlite3').resolve()}"

    @property
    def is_default_sqlite(self) -> bool:
        return not self.database_url

    @property
    def key_path(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def access_control(self) -> AccessControl:
        """The access rules, compiled at start-up (``twostep.core.access.decide`` takes them)."""
        return self.access.control

    def trusted_proxy_networks(self) -> list[Network]:
        return list(parse_networks(self.trusted_proxies))


# --- the configuration file --------------------------------------------------------------------------------

_KIND_NAMES: Final = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
    dict: "a table",
}


def _file_kinds(annotation: Any) -> tuple[type, ...]:
    """The TOML value types a setting of this annotation accepts in the file."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    kinds: list[type] = []
    for arg in args:
        if arg is NoneType:
            continue
        if arg in (bool, int, str, dict):
            kinds.append(arg)
        elif arg is float:
            kinds += [float, int]
        elif arg is Path or get_origin(arg) is Literal:
            kinds.append(str)
        elif get_origin(arg) in (tuple, list):
            kinds += [list, str]
        elif isinstance(arg, type) and issubclass(arg, BaseModel):
            kinds.append(dict)
        else:  # pragma: no cover - a new setting of a kind this table does not know yet
            raise TypeError(f"no TOML kind for {arg!r}")
    return tuple(kinds)


# Settings written as a comma-separated text in the environment, and as a list or a text in the file.
_LIST_OR_TEXT: Final = ("trusted_proxies",)


def _check_kind(name: str, value: object, where: str) -> str | None:
    field = Settings.model_fields[name]
    kinds = (list, str) if name in _LIST_OR_TEXT else _file_kinds(field.annotation)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if ok and isinstance(value, list) and not all(isinstance(item, str) for item in value):
        ok = False
    if ok:
        return None
    wanted = " or ".join(_KIND_NAMES[k] for k in kinds if not (k is int and float in kinds))
    return f"{where}: {name}: must be {wanted}, not {_toml_kind(value)}"


def _toml_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        strings = all(isinstance(v, str) for v in value)
        return "a list" if strings else "a list with a value that is not a string"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings written in the TOML file at ``path``, their kinds checked (the values are validated by
    ``Settings``).

    Raises:
        ConfigError: unreadable, not TOML (naming the line and column), an unknown key, a value of a kind
            the setting cannot take.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot be read: {reason}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        where = f"{path}"
        if found and found.group(1):
            where = f"{path}, line {found.group(1)}, column {found.group(2)}"
        elif found:
            where = f"{path}, at the end"
        reason = message[: found.start()] if found else message
        raise ConfigError([f"{where}: not valid TOML: {reason}"]) from None
    problems: list[str] = []
    for key, value in data.items():
        if key not in Settings.model_fields:
            problems.append(f"{path}: {key}: unknown key{_suggestion(key)}")
            continue
        problem = _check_kind(key, value, str(path))
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return data


def _suggestion(key: str) -> str:
    lowered = key.lower().removeprefix("twostep_")
    if lowered in Settings.model_fields:
        return f" (settings are written in lower case without TWOSTEP_: {lowered})"
    close = difflib.get_close_matches(lowered, list(Settings.model_fields), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def config_path() -> Path | None:
    """The file TWOSTEP_CONFIG names, if it is set."""
    value = os.environ.get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file TWOSTEP_CONFIG names (also read by each uvicorn worker, through ``Settings()``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        return read_config_file(path) if path else {}


class _EnvironmentSource(EnvSettingsSource):
    """TWOSTEP_* variables, except the access rules: those are written in the file only."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "access":
            return None, field_name, False
        return super().get_field_value(field, field_name)


# --- loading, with where each value came from --------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSettings:
    """The settings, the file they were read from, and where each setting's value came from."""

    settings: Settings
    config_file: Path | None
    sources: Mapping[str, Source]


def load(flags: Mapping[str, object] | None = None) -> LoadedSettings:
    """The settings from the flags given (names of settings; None values are left out), the environment and
    the file TWOSTEP_CONFIG names.

    Raises:
        ConfigError: something cannot be served; one problem a line, no value of a secret.
    """
    given: dict[str, Any] = {name: value for name, value in (flags or {}).items() if value is not None}
    path = config_path()
    file_values = read_config_file(path) if path else {}
    try:
        env_values = _EnvironmentSource(Settings)()
    except SettingsError as exc:
        raise ConfigError([str(exc)]) from None
    sources: dict[str, Source] = {}
    for name in Settings.model_fields:
        if name in given:
            sources[name] = "flag"
        elif name in env_values:
            sources[name] = "environment"
        elif name in file_values:
            sources[name] = "file"
        else:
            sources[name] = "default"
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, sources, path)) from None
    except SettingsError as exc:
        raise ConfigError([str(exc)]) from None
    return LoadedSettings(settings=settings, config_file=path, sources=sources)


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("access", "rules", 2, "policy")`` as ``access.rules[2].policy``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _nested_suggestion(loc: tuple[int | str, ...]) -> str:
    """The key of ``[access]`` or of a rule that an unknown key probably meant (``domains``: ``domain``)."""
    if loc[:1] != ("access",):
        return ""
    fields = AccessSettings.model_fields if len(loc) == 2 else AccessRuleSettings.model_fields
    close = difflib.get_close_matches(str(loc[-1]).lower(), list(fields), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _problems(exc: ValidationError, sources: Mapping[str, Source], path: Path | None) -> list[str]:
    problems = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            message = "unknown key" + _nested_suggestion(tuple(err["loc"]))
        elif err["type"] == "missing":
            message = "required, and missing"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        loc = tuple(err["loc"])
        if not loc:
            problems.append(message)
            continue
        name = str(loc[0])
        # "TWOSTEP_ORIGIN must use https" once the problem is put under the variable's or the key's name.
        message = message.removeprefix(f"TWOSTEP_{name.upper()} ")
        source = sources.get(name, "default")
        if source == "file" and path is not None:
            where = f"{path}: {key_path(loc)}"
        elif source == "flag":
            where = f"--{name.replace('_', '-')} (TWOSTEP_{name.upper()})"
        else:
            where = f"TWOSTEP_{name.upper()}"
        problems.append(f"{where}: {message}")
    return problems


# --- what the server noticed, for `twostep check-config` ---------------------------------------------------

UNTRUSTED_FORWARDING_FILE: Final = "seen-untrusted-forwarded-for"


@dataclass(frozen=True)
class UntrustedForwarding:
    """A request carried X-Forwarded-For from ``peer``, which was not a trusted proxy (H17)."""

    peer: str
    seen_at: datetime


def record_untrusted_forwarding(data_dir: Path, peer: str) -> None:
    """Note in the data directory that ``peer`` sent X-Forwarded-For without being a trusted proxy (the server
    does it once per worker, when it logs its warning). Raises: nothing (a note, not a duty)."""
    target = data_dir / UNTRUSTED_FORWARDING_FILE
    try:
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(peer[:64] + "\n", encoding="utf-8")
        tmp.replace(target)
    except OSError:
        pass


def read_untrusted_forwarding(data_dir: Path) -> UntrustedForwarding | None:
    """What ``record_untrusted_forwarding`` noted last, if anything. Raises: nothing."""
    target = data_dir / UNTRUSTED_FORWARDING_FILE
    try:
        text = target.read_text(encoding="utf-8", errors="replace")
        seen_at = datetime.fromtimestamp(target.stat().st_mtime, UTC)
    except OSError:
        return None
    peer = re.sub(r"[^0-9A-Za-z.:_%-]", "?", text.strip())[:64]
    return UntrustedForwarding(peer=peer or "?", seen_at=seen_at)
