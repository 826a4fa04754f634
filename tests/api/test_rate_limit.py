"""SEC-62: a per-address limit on the sign-in ceremonies, in addition to the per-account counters."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.inprocess import AppServer


def test_SEC_62_rapid_requests_from_one_address_get_429_with_retry_after(tmp_path: Path) -> None:
    with (
        AppServer(tmp_path, env={"TWOSTEP_RATE_LIMIT_PER_MINUTE": "40"}) as server,
        server.client() as client,
    ):
        # Put the server clock one second into a minute, so that the burst falls in one window.
        offset = 60 - time.time() % 60 + 1
        server.set_clock(offset)
        responses = [client.post("/api/v1/login/passkey/options", json={}) for _ in range(50)]
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 40 + [429] * 10
        body = responses[-1].json()
        assert body["error"] == "too_many_attempts"
        assert int(responses[-1].headers["Retry-After"]) == body["retry_after"]
        assert 1 <= body["retry_after"] <= 60
        # The password step is a ceremony too, and other routes are not.
        assert client.post("/api/v1/login", json={"username": "x", "password": "y" * 20}).status_code == 429
        assert client.get("/api/v1/openapi.json").status_code == 200
        # The next minute opens a new window.
        server.set_clock(offset + 60)
        assert client.post("/api/v1/login/passkey/options", json={}).status_code == 200
