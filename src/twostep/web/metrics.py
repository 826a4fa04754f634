"""The operator's metrics in Prometheus's text format (GET /metrics; docs/operations.md lists each one).

``twostep serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a directory of the data directory, emptied at start-up
before any worker starts: each worker writes its counters there (prometheus-client's multiprocess mode) and
a scrape, answered by any worker, sums them. Without the variable (the app in a test process) the counters
live in this process. The outbox's backlog is computed at each scrape, by one query, so that it needs no
gauge to be kept up to date across workers.

Labels are small fixed sets: a route template (never a path), an HTTP method, a status class, a method of
signing in, an outcome, an event type.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from twostep.services.outbox import Backlog

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# prometheus-client's multiprocess values ask the operating system for the process id at every increment, to
# notice a fork; a system call per counter, several per request. The id is kept here instead, and renewed in
# a forked child (prometheus-client's own hook: it only needs distinct values in running processes).
_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    return _pid


os.register_at_fork(after_in_child=_renew_pid)
if MULTIPROC_ENV in os.environ:
    # (MultiProcessValue is untyped in prometheus-client.)
    values.ValueClass = cast(Callable[..., Any], values.MultiProcessValue)(process_identifier=_process_id)

REGISTRY = CollectorRegistry(auto_describe=True)

SIGN_INS = Counter(
    "twostep_sign_ins",
    "Sign-in steps by method (password, totp, recovery_code, passkey, passkey_passwordless) and outcome "
    "(succeeded: a session was created; failed: the password or second factor was refused).",
    ["method", "outcome"],
    registry=REGISTRY,
)
SECOND_FACTOR_FAILURES = Counter(
    "twostep_second_factor_failures",
    "Second factors refused, at sign-in and at verify access, by method.",
    ["method"],
    registry=REGISTRY,
)
SECURITY_EVENTS = Counter(
    "twostep_security_events",
    "Events written to the accounts' security logs, by type.",
    ["type"],
    registry=REGISTRY,
)
THROTTLED = Counter(
    "twostep_throttled_requests",
    "Requests answered 429 too_many_attempts, by route template.",
    ["route"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "twostep_notification_deliveries",
    "Notification e-mails handed to the mail server (outcome sent) or not (outcome failed; retried later).",
    ["outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "twostep_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template (unmatched: no route), "
    "HTTP method and status class (2xx, 3xx, 4xx, 5xx).",
    ["route", "method", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class PrometheusMetrics:
    """``twostep.services.metrics.Metrics`` on the counters above."""

    def sign_in(self, method: str, outcome: str) -> None:
        _labelled(SIGN_INS, method, outcome).inc()

    def second_factor_failed(self, method: str) -> None:
        _labelled(SECOND_FACTOR_FAILURES, method).inc()

    def security_event(self, event: str) -> None:
        _labelled(SECURITY_EVENTS, event).inc()

    def delivery(self, outcome: str) -> None:
        DELIVERIES.labels(outcome=outcome).inc()


@functools.lru_cache(maxsize=1024)
def _labelled(metric: Any, *values: str) -> Any:
    """The child of ``metric`` for ``values`` (its labels in order), looked up once: the values are few."""
    return metric.labels(*values)


@functools.lru_cache(maxsize=1024)
def _latency(route: str, method: str, status_class: str) -> Histogram:
    # The labelled child, looked up once: route templates, methods and status classes are few.
    return REQUEST_SECONDS.labels(route=route, method=method, status=status_class)


def request_done(route: str, method: str, status: int, seconds: float) -> None:
    """One finished request (the observe middleware calls it)."""
    method = method if method in HTTP_METHODS else "other"
    _latency(route, method, f"{status // 100}xx").observe(seconds)
    if status == 429:
        THROTTLED.labels(route=route).inc()


class _BacklogCollector(Collector):
    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "twostep_outbox_depth", "Notification e-mails not sent yet (due or waiting).", self.backlog.depth
        )
        yield GaugeMetricFamily(
            "twostep_outbox_overdue_seconds",
            "How long the most overdue unsent notification has waited past its time (0: none is due).",
            self.backlog.overdue_seconds,
        )


def exposition(backlog: Callable[[], Backlog | None]) -> bytes:
    """The text of a scrape: every worker's counters (summed in multiprocess mode) and the outbox backlog
    (left out when the database cannot be reached)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in 0.2x
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    current = backlog()
    if current is not None:
        extra = CollectorRegistry()
        extra.register(_BacklogCollector(current))
        text += generate_latest(extra)
    return text


def worker_exited() -> None:
    """Multiprocess mode: this worker's live gauges (none today) stop counting; its counters stay summed."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
