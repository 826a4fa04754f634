"""Settings from the TWOSTEP_* environment variables (docs/api.md "Running it")."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOSTEP_", extra="ignore")

    database_url: str | None = None
    origin: str = "http://localhost:8000"
    data_dir: Path = Path("twostep-data")
    smtp_url: str | None = None
    mail_from: str = "twostep <twostep@localhost>"
    # Peers whose X-Forwarded-For is believed (SEC-26 b): comma-separated addresses or networks.
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
    # Test-only: exposes POST /api/v1/_test/clock to move the server clock. Never set in production.
    enable_test_clock: bool = False
    log_level: str = "info"
    # Sign-in ceremony requests allowed per client address and minute (SEC-62); 0 turns the limit off.
    rate_limit_per_minute: int = Field(default=120, ge=0)
    outbox_poll_seconds: float = Field(default=2.0, gt=0)

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("TWOSTEP_ORIGIN must look like https://accounts.example.com")
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            # SEC-41: plain http only for local development.
            raise ValueError("TWOSTEP_ORIGIN must use https except for http://localhost")
        return f"{parts.scheme}://{parts.netloc}"

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
