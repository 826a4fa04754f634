"""Configuration: the origin and the relying-party id (SEC-41), the trusted proxies."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from tests.support.soft_authenticator import SoftAuthenticator
from twostep.config import Settings
from twostep.core import passkeys
from twostep.core.errors import PasskeyRegistrationRejected


def test_SEC_41_plain_http_is_refused_except_for_localhost() -> None:
    with pytest.raises(ValidationError):
        Settings(origin="http://accounts.example.com")
    with pytest.raises(ValidationError):
        Settings(origin="https://accounts.example.com/path")
    assert Settings(origin="http://localhost:8000").rp_id == "localhost"


def test_SEC_41_the_rp_id_is_the_host_of_the_one_configured_origin() -> None:
    settings = Settings(origin="https://a.example/")
    assert settings.origin == "https://a.example"
    assert settings.rp_id == "a.example"
    assert settings.secure_cookies


def test_SEC_41_a_subdomain_origin_is_refused_for_that_rp() -> None:
    settings = Settings(origin="https://a.example")
    challenge = secrets.token_bytes(32)
    response = SoftAuthenticator(settings.rp_id, "https://b.a.example").create(
        challenge, user_handle=b"u" * 64
    )
    with pytest.raises(PasskeyRegistrationRejected):
        passkeys.verify_registration(
            credential=response,
            expected_challenge=challenge,
            expected_origin=settings.origin,
            expected_rp_id=settings.rp_id,
        )


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    nets = Settings(trusted_proxies="127.0.0.1, 10.0.0.0/8 ,::1").trusted_proxy_networks()
    assert [str(n) for n in nets] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
