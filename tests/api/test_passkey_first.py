"""Passkey-first sign-in over HTTP (issue 17): the server side of the Signal API, the automatic passkey
upgrade after a password sign-in, registration hints, and backup-eligibility changes."""

from __future__ import annotations

import pytest

from tests.support.api import expect
from tests.support.inprocess import AppServer
from tests.support.passkeys import Api, with_passkey

pytestmark = pytest.mark.api


def test_an_unknown_passwordless_credential_is_named_so_the_page_can_signal_it(server: AppServer) -> None:
    """A passwordless assertion of a credential no account has answers passkey_rejected with
    unknown_credential (for signalUnknownCredential); a known credential's failure does not say so."""
    account, api = with_passkey(server)
    client = Api(server)
    options = client.options("/login/passkey/options")
    r = client.post("/login/passkey", {"credential": account.auth.get(options, uv=False)})
    assert r.status_code == 401 and r.json()["error"] == "passkey_rejected"
    assert "unknown_credential" not in r.json()
    expect(api.delete(f"/factors/{account.factor_ids[0]}"), 204)
    options = client.options("/login/passkey/options")
    r = client.post("/login/passkey", {"credential": account.auth.get(options)})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "passkey_rejected" and r.json()["unknown_credential"] is True
