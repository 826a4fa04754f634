"""H07: device cookies name one account and its current password, and cannot be forged or moved."""

from __future__ import annotations

import secrets

from twostep.core.devices import MAX_ENTRIES, is_known_device, remember_device
from twostep.core.keys import derive_key

KEY = derive_key(secrets.token_bytes(32), "twostep device cookie v1")
ALICE = ("alice", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
BOB = ("bob", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$b3RoZXI")


def known(cookie: str | None, account: tuple[str, str], key: bytes = KEY) -> bool:
    return is_known_device(key=key, cookie=cookie, username=account[0], password_hash=account[1])


def remember(cookie: str | None, account: tuple[str, str]) -> str:
    return remember_device(key=KEY, cookie=cookie, username=account[0], password_hash=account[1])


def test_H07_a_device_cookie_is_known_for_its_account_only() -> None:
    cookie = remember(None, ALICE)
    assert known(cookie, ALICE)
    assert not known(cookie, BOB)  # copied to another account: nothing
    assert not known(cookie, (ALICE[0], BOB[1]))  # the password changed: nothing
    assert not known(cookie, ALICE, key=derive_key(secrets.token_bytes(32), "twostep device cookie v1"))


def test_H07_forged_device_cookies_give_nothing() -> None:
    real = remember(None, ALICE)
    device_id, _, tag = real.partition(".")
    forged = [
        None,
        "",
        "~",
        device_id,
        f"{device_id}.",
        f".{tag}",
        f"{secrets.token_urlsafe(16)}.{tag}",  # another id with a real tag
        f"{device_id}.{tag[:-1]}A" if not tag.endswith("A") else f"{device_id}.{tag[:-1]}B",
        real + "~" * 2000,  # too long
        "é.ü",
    ]
    for cookie in forged:
        assert not known(cookie, ALICE), cookie


def test_H07_one_browser_remembers_several_accounts() -> None:
    cookie = remember(None, ALICE)
    cookie = remember(cookie, BOB)
    assert known(cookie, ALICE) and known(cookie, BOB)
    again = remember(cookie, ALICE)
    assert again.count("~") == 1  # Alice's older entry was replaced, not added to
    assert known(again, ALICE) and known(again, BOB)
    for i in range(MAX_ENTRIES + 3):
        cookie = remember(cookie, (f"user{i}", "hash"))
    assert cookie.count("~") == MAX_ENTRIES - 1
    assert known(cookie, (f"user{MAX_ENTRIES + 2}", "hash"))


def test_H07_derived_keys_differ_by_label_and_master() -> None:
    master = secrets.token_bytes(32)
    assert derive_key(master, "a") == derive_key(master, "a")
    assert derive_key(master, "a") != derive_key(master, "b")
    assert derive_key(master, "a") != derive_key(secrets.token_bytes(32), "a")
    assert derive_key(master, "a") != master
    assert len(derive_key(master, "a")) == 32
