"""One way to record what happened: an ``Audit`` is built once per use case and records each event in a line.

It holds what every event of the use case shares (whose account, which client, when, and the site for the
e-mails); ``record`` appends the event to the account's security log and queues its e-mail (SEC-55) in the
caller's transaction, so that an event and its message are written together or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core.events import EventType
from twostep.core.throttle import SECOND_FACTOR
from twostep.services import notifications
from twostep.services.context import Client, Context
from twostep.services.metrics import count_event
from twostep.storage import events

# Each security event is also a log line (docs/operations.md): its type, the account id, the client address
# and the method, never a detail that could hold a secret.
security_log = logging.getLogger("twostep.security")


@dataclass(frozen=True)
class Audit:
    """The account, client and time of one use case's events; independent of any connection."""

    ctx: Context
    account_id: int
    client: Client
    now: datetime

    def about(self, account_id: int) -> Audit:
        """The same client and time, for another account (a passwordless sign-in learns it late)."""
        return dataclasses.replace(self, account_id=account_id)

    def record(self, conn: Connection, event: EventType, /, *, notify: bool = True, **detail: object) -> None:
        """Append ``event`` with ``detail`` (never a secret; keys whose value is None are left out) to the
        security log; queue its e-mail unless ``notify`` is off (another event of the action says it, H13)."""
        detail = {key: value for key, value in detail.items() if value is not None}
        events.insert(
            conn,
            account_id=self.account_id,
            type_=event,
            at=self.now,
            ip=self.client.ip,
            user_agent=self.client.user_agent,
            detail=detail,
        )
        if notify:
            notifications.queue(
                conn,
                self.ctx.origin,
                self.account_id,
                self.client,
                self.now,
                event,
                detail,
                default_language=self.ctx.default_language,
            )
        method = detail.get("method")
        count_event(self.ctx.metrics, event, method)
        security_log.info(
            "security event %s account %d from %s%s",
            event.value,
            self.account_id,
            self.client.ip,
            f" method {method}" if method is not None else "",
            extra={
                "event": event.value,
                "account_id": self.account_id,
                "client_ip": self.client.ip,
                "method": None if method is None else str(method),
            },
        )

    def second_factor_failed(
        self, conn: Connection, event: EventType, /, *, failures: int, notify: bool, **detail: object
    ) -> None:
        """A failed second factor (``failures`` counts it); the one that starts the backoff is also told as
        ``second_factor_locked`` (SEC-55)."""
        self.record(conn, event, notify=notify, **detail)
        if failures == SECOND_FACTOR.free:
            self.record(conn, EventType.SECOND_FACTOR_LOCKED, failures=failures)
