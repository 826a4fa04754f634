"""Composition root: Settings → engine, key, services, and the ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from twostep.config import Settings, record_untrusted_forwarding
from twostep.core import keys
from twostep.core.clock import Clock, SystemClock
from twostep.core.errors import Unavailable
from twostep.core.next import NextHosts
from twostep.core.passwords import PasswordHasher
from twostep.core.secretbox import KeyRing, SecretBox
from twostep.keyfile import ensure_data_dir, load_keys, load_or_create_key
from twostep.services import maintenance, outbox, sign_in
from twostep.services.context import Context
from twostep.storage import migrate
from twostep.storage.db import Database, make_engine
from twostep.web import metrics
from twostep.web.app import build_app
from twostep.web.deps import WebState
from twostep.web.metrics import PrometheusMetrics
from twostep.web.sessions import CookiePolicy

log = logging.getLogger("twostep")


class SchemaOutdated(RuntimeError):
    pass


# H11: the test clock moves at most ten years either way, so that every date stays representable.
MAX_TEST_CLOCK_OFFSET: Final = 10 * 366 * 24 * 3600


class FileOffsetClock:
    """Test-only clock: the system time plus an offset kept in a file, shared by every worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> float:
        try:
            value = float(self.path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0.0
        if not math.isfinite(value) or abs(value) > MAX_TEST_CLOCK_OFFSET:
            return 0.0  # not written by set_offset: ignored, rather than a 500 on every request
        return value

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def set_offset(self, seconds: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(float(seconds)))
        tmp.replace(self.path)


def prepare_database(settings: Settings, *, migrate_sqlite: bool = True) -> Database:
    """The engine, with the schema migrated (default SQLite) or checked.

    Raises:
        SchemaOutdated: the database needs `twostep migrate`.
    """
    ensure_data_dir(settings.data_dir)
    engine = make_engine(settings.resolved_database_url)
    if settings.is_default_sqlite and migrate_sqlite:
        migrate.upgrade(engine)
    elif not migrate.is_up_to_date(engine):
        engine.dispose()
        raise SchemaOutdated(
            "The database schema is not up to date. Run `twostep migrate` with the same TWOSTEP_DATABASE_URL."
        )
    return Database(engine)


def build_context(settings: Settings, db: Database, clock: Clock) -> Context:
    sealing_keys = load_keys(settings.key_path)
    # H07: the device cookies' HMAC key is a key of its own, never the sealing key itself.
    device_key = keys.derive_key(sealing_keys[0], keys.DEVICE_COOKIE)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        concurrency=settings.password_hash_concurrency,
        queue=settings.password_hash_queue,
    )
    return Context(
        db=db,
        clock=clock,
        hasher=hasher,
        box=KeyRing(*(SecretBox(k) for k in sealing_keys)),
        issuer=settings.issuer,
        origin=settings.origin,
        rp_id=settings.rp_id,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        device_key=device_key,
        trusted_browser_days=settings.trusted_browser_days,
        signup=settings.signup,
        operator_contact=settings.operator_contact,
        default_language=settings.default_language,
    )


class ClockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset_seconds: Annotated[
        float, Field(strict=True, allow_inf_nan=False, ge=-MAX_TEST_CLOCK_OFFSET, le=MAX_TEST_CLOCK_OFFSET)
    ]


def _test_clock_router(clock: FileOffsetClock) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/_test/clock")
    def set_clock(body: ClockIn) -> dict[str, object]:
        clock.set_offset(float(body.offset_seconds))
        return {"now": clock.now().isoformat()}

    @router.get("/_test/clock")
    def get_clock() -> dict[str, object]:
        return {"now": clock.now().isoformat(), "offset_seconds": clock.offset()}

    return router


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate_sqlite: bool = True
) -> FastAPI:
    """The whole application for these settings."""
    settings = settings or Settings()
    db = prepare_database(settings, migrate_sqlite=migrate_sqlite)
    extra: list[APIRouter] = []
    if settings.enable_test_clock:
        log.warning(
            "TWOSTEP_ENABLE_TEST_CLOCK is on: anyone who reaches %s/api/v1/_test/clock can move this "
            "server's clock. It is for tests only; never use it in production.",
            settings.origin,
        )
    if clock is None:
        if settings.enable_test_clock:
            file_clock = FileOffsetClock(settings.data_dir / "test-clock-offset")
            extra.append(_test_clock_router(file_clock))
            clock = file_clock
        else:
            clock = SystemClock()
    ctx = build_context(settings, db, clock)
    ctx.metrics = PrometheusMetrics()
    master = load_or_create_key(settings.key_path)
    web_state = WebState(
        ctx=ctx,
        cookies=CookiePolicy(secure=settings.secure_cookies, domain=settings.cookie_domain),
        trusted_proxies=list(settings.trusted_proxy_networks()),
        # H15: the form tokens have a key of their own; the master key only seals secrets.
        csrf_key=keys.derive_key(master, keys.CSRF),
        untrusted_forwarding_noted=functools.partial(record_untrusted_forwarding, settings.data_dir),
        metrics_from=list(settings.metrics_from),
        access=settings.access_control,
        next_hosts=NextHosts(
            origin=settings.origin,
            cookie_domain=settings.cookie_domain,
            domains=tuple(p for rule in settings.access_control.rules for p in rule.domains),
        ),
    )

    async def background() -> AsyncIterator[None]:
        stopping = Stopping()
        task = asyncio.create_task(_maintenance(ctx, settings, stopping))
        try:
            yield
        finally:
            # Graceful: the round in progress ends between two messages (none lost or sent twice), then
            # the database is closed; a round stuck longer than SHUTDOWN_ROUND is abandoned.
            stopping.set()
            try:
                await asyncio.wait_for(task, SHUTDOWN_ROUND)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            db.dispose()
            metrics.worker_exited()

    return build_app(web_state, extra_routers=extra, background=background)


# The sweep of expired state (H08) runs at most this often in a worker, whatever the outbox poll interval.
SWEEP_EVERY = 30.0


# At shutdown, how long the maintenance round in progress may take to end (one SMTP exchange, 10 s at most,
# then the claimed messages not tried are given back).
SHUTDOWN_ROUND = 30.0


class Stopping:
    """The shutdown signal of the maintenance loop: a thread event for the delivery round running in a
    thread, an asyncio event for the loop's sleep."""

    def __init__(self) -> None:
        self.thread = threading.Event()
        self.loop = asyncio.Event()

    def set(self) -> None:
        self.thread.set()
        self.loop.set()

    def is_set(self) -> bool:
        return self.thread.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, or return at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loop.wait(), seconds)


async def _maintenance(ctx: Context, settings: Settings, stopping: Stopping | None = None) -> None:
    """Periodic work every worker may do; the database makes each item happen once (deletes and claims are
    conditional, so workers that run the same round at once only find less to do)."""
    stopping = stopping or Stopping()
    mailer = outbox.Mailer(settings.smtp_url, settings.mail_from, settings.data_dir / "outbox")
    sweep_every = min(SWEEP_EVERY, settings.outbox_poll_seconds * 5)
    last_sweep: float | None = None
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        try:
            await asyncio.to_thread(sign_in.sweep_abandoned, ctx)
            await asyncio.to_thread(outbox.deliver_due, ctx, mailer, stopping.thread)
            if last_sweep is None or loop.time() - last_sweep >= sweep_every:
                last_sweep = loop.time()
                await asyncio.to_thread(maintenance.sweep, ctx)
        except Unavailable:
            log.warning("maintenance round skipped: the database cannot be reached")
        except Exception:  # keep serving; the next round retries
            log.exception("maintenance round failed")
        await stopping.sleep(settings.outbox_poll_seconds)


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: `twostep serve` migrated before starting them, so they only check."""
    os.umask(0o077)  # H12, also when uvicorn is started without `twostep serve`
    app = create_app(Settings(), migrate_sqlite=False)
    # What the worker has made so far (modules, the application, compiled statements: about 160,000 objects)
    # lives as long as the worker: out of the collector's sight, a full collection under load no longer walks
    # it (measured under the P1·pg load: 100 ms before, 14 ms after; every request in flight waits for it).
    gc.collect()
    gc.freeze()
    return app


__all__ = ["create_app", "create_app_from_env"]
