"""Settings from the TWOSTEP_* environment variables (docs/api.md "Running it")."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

import idna
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {"http": 80, "https": 443}
# A label of a host name once in ASCII (underscores occur in real host names, and browsers accept them).
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
ORIGIN_EXAMPLE = "TWOSTEP_ORIGIN must look like https://accounts.example.com"


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
    host = _canonical_host(parts.hostname)
    if port is not None and port != DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def _canonical_host(hostname: str) -> str:
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
        raise ValueError(f"TWOSTEP_ORIGIN has a host that is not a valid domain name: {exc}") from None
    return host


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOSTEP_", extra="ignore")

    database_url: str | None = None
    origin: str = "http://localhost:8000"
    data_dir: Path = Path("twostep-data")
    smtp_url: str | None = None
    mail_from: str = "twostep <twostep@localhost>"
    # Peers whose X-Forwarded-For is believed (SEC-26 b): comma-separated addresses or networks. Behind a
    # reverse proxy it must name the proxy, or every client shares the proxy's address (H17).
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

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        origin = canonical_origin(value)
        host = urlsplit(origin).hostname
        if origin.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            # SEC-41: plain http only for local development.
            raise ValueError("TWOSTEP_ORIGIN must use https except for http://localhost")
        return origin

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()!r} is not an address or a network") from None
        return value

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

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in self.trusted_proxies.split(","):
            item = item.strip()
            if item:
                out.append(ipaddress.ip_network(item, strict=False))
        return out
