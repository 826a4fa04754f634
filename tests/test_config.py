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


@pytest.mark.parametrize(
    ("configured", "canonical", "rp_id"),
    [
        ("https://Accounts.Example.com", "https://accounts.example.com", "accounts.example.com"),
        ("https://accounts.example.com:443", "https://accounts.example.com", "accounts.example.com"),
        ("HTTPS://ACCOUNTS.EXAMPLE.COM:443/", "https://accounts.example.com", "accounts.example.com"),
        ("https://accounts.example.com:8443", "https://accounts.example.com:8443", "accounts.example.com"),
        ("https://Bücher.Example", "https://xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("https://auth_1.example.org", "https://auth_1.example.org", "auth_1.example.org"),
        ("http://LOCALHOST:8000", "http://localhost:8000", "localhost"),
        ("http://localhost:80", "http://localhost", "localhost"),
        ("http://[::1]:8000", "http://[::1]:8000", "::1"),
        (" https://a.example ", "https://a.example", "a.example"),
    ],
)
def test_H16_the_origin_is_canonicalised_as_a_browser_sends_it(
    configured: str, canonical: str, rp_id: str
) -> None:
    settings = Settings(origin=configured)
    assert settings.origin == canonical
    assert settings.rp_id == rp_id


@pytest.mark.parametrize(
    "configured",
    [
        "https://user@accounts.example.com",
        "https://accounts.example.com/?x=1",
        "https://accounts.example.com/#top",
        "https://accounts.example.com:99999",
        "https://accounts.example.com:port",
        "https://xn--.example",
        "https://a..example",
        "http://Accounts.Example.com",
    ],
)
def test_H16_an_origin_that_cannot_be_canonical_is_refused(configured: str) -> None:
    with pytest.raises(ValidationError):
        Settings(origin=configured)


def test_H16_a_passkey_made_on_the_canonical_origin_verifies_with_a_non_canonical_setting() -> None:
    settings = Settings(origin="HTTPS://Accounts.Example.com:443/")
    challenge = secrets.token_bytes(32)
    response = SoftAuthenticator("accounts.example.com", "https://accounts.example.com").create(
        challenge, user_handle=b"u" * 64
    )
    verified = passkeys.verify_registration(
        credential=response,
        expected_challenge=challenge,
        expected_origin=settings.origin,
        expected_rp_id=settings.rp_id,
    )
    assert verified is not None
