"""What the use cases count, for the operator's metrics (docs/operations.md), without a metrics library.

``Metrics`` is what a service calls; the application gives the ``Context`` an implementation (Prometheus,
in ``twostep.web.metrics``). Labels are small fixed sets (a method, an outcome, an event type), never a
username, an address or an id.
"""

from __future__ import annotations

from typing import Protocol

from twostep.core.events import EventType
from twostep.core.kinds import Method


class Metrics(Protocol):
    def sign_in(self, method: str, outcome: str) -> None:
        """A sign-in step ended: ``outcome`` is "succeeded" or "failed"."""

    def second_factor_failed(self, method: str) -> None:
        """A second step of a sign-in or of verify access was refused."""

    def security_event(self, event: str) -> None:
        """An event was written to an account's security log."""

    def delivery(self, outcome: str) -> None:
        """A notification was handed to the mail server ("sent") or not ("failed"; it is retried)."""


class NoMetrics:
    """Counts nothing (tests, tools)."""

    def sign_in(self, method: str, outcome: str) -> None:
        pass

    def second_factor_failed(self, method: str) -> None:
        pass

    def security_event(self, event: str) -> None:
        pass

    def delivery(self, outcome: str) -> None:
        pass


SUCCEEDED = "succeeded"
FAILED = "failed"
SENT = "sent"


def count_event(metrics: Metrics, event: EventType, method: object) -> None:
    """The counters an event of the security log moves."""
    metrics.security_event(event.value)
    if event is EventType.SIGNED_IN:
        metrics.sign_in(str(method or Method.PASSWORD), SUCCEEDED)
    elif event is EventType.PASSWORD_FAILED:
        metrics.sign_in(Method.PASSWORD.value, FAILED)
    elif event is EventType.SECOND_FACTOR_FAILED:
        metrics.sign_in(str(method), FAILED)
        metrics.second_factor_failed(str(method))
    elif event is EventType.VERIFY_ACCESS_FAILED:
        if method is not None and str(method) != Method.PASSWORD:
            metrics.second_factor_failed(str(method))
    elif event is EventType.PASSKEY_SIGN_IN_FAILED:
        metrics.sign_in(Method.PASSKEY_PASSWORDLESS.value, FAILED)
