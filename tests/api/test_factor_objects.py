"""The factor object of docs/api.md: exactly its fields, the passkey's two more only for passkeys."""

from __future__ import annotations

from tests.support.api import API, Clients, expect, factors_of, new_2fa_user
from tests.support.inprocess import AppServer

TOTP_KEYS = {"id", "type", "name", "created_at", "last_used_at"}


def test_a_totp_factor_object_has_exactly_the_documented_fields(server: AppServer) -> None:
    with Clients(server) as clients:
        user = new_2fa_user(server, clients)
        listed = factors_of(user.client)
        assert set(listed) == {"two_factor_enabled", "factors", "recovery_codes_remaining"}
        (factor,) = listed["factors"]
        assert set(factor) == TOTP_KEYS
        assert factor["type"] == "totp" and factor["last_used_at"] is None
        renamed = expect(user.client.patch(f"{API}/factors/{factor['id']}", json={"name": "Work phone"}), 200)
        assert set(renamed["factor"]) == TOTP_KEYS
        assert renamed["factor"]["name"] == "Work phone"
