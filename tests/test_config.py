"""Configuration: the origin and the relying-party id (SEC-41), the trusted proxies, the configuration file
(TWOSTEP_CONFIG) with its precedence, its errors and the access rules, and what check-config warns about."""

from __future__ import annotations

import os
import re
import secrets
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.support.soft_authenticator import SoftAuthenticator
from twostep import config
from twostep.cli import config_warnings, masked_url
from twostep.config import ConfigError, Settings
from twostep.core import passkeys
from twostep.core.access import AccessControl, Decision, Policy, Subject
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


# --- the configuration file (TWOSTEP_CONFIG) and the second round's settings ------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "twostep.example.toml"
KEEP = ("TWOSTEP_TEST_POSTGRES_URL", "TWOSTEP_ASSERT_NO_HASH_IN_TX")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TWOSTEP_* setting from the environment of the test run."""
    for name in list(os.environ):
        if name.startswith("TWOSTEP_") and name not in KEEP:
            monkeypatch.delenv(name)
    return monkeypatch


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "twostep.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(env: pytest.MonkeyPatch, path: Path, flags: dict[str, object] | None = None) -> list[str]:
    env.setenv("TWOSTEP_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        config.load(flags)
    return caught.value.problems


def test_the_example_file_parses_with_every_rule(env: pytest.MonkeyPatch) -> None:
    env.setenv("TWOSTEP_CONFIG", str(EXAMPLE))
    loaded = config.load()
    settings = loaded.settings
    assert loaded.config_file == EXAMPLE
    assert settings.origin == "https://auth.example.com"
    assert settings.cookie_domain == "example.com"
    assert settings.signup == "invite"
    assert settings.trusted_proxies == "127.0.0.1, 10.0.0.5"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 4)
    control = settings.access_control
    assert control.default_policy is Policy.DENY
    assert [r.policy for r in control.rules] == [
        Policy.BYPASS,
        Policy.DENY,
        Policy.TWO_FACTOR,
        Policy.TWO_FACTOR,
        Policy.TWO_FACTOR,
        Policy.ONE_FACTOR,
    ]
    assert {p.policy for p in control.rules} == set(Policy)
    assert any(r.groups for r in control.rules if r.policy is Policy.TWO_FACTOR)
    assert loaded.sources["origin"] == "file" and loaded.sources["mail_from"] == "default"


def test_the_example_rules_decide_as_their_comments_say(env: pytest.MonkeyPatch) -> None:
    env.setenv("TWOSTEP_CONFIG", str(EXAMPLE))
    control = config.load().settings.access_control
    admin = Subject("root", frozenset({"admins"}), True, True)
    reader = Subject("bob", frozenset(), False, False)

    def ask(host: str, path: str, subject: Subject | None) -> Decision:
        return control.decide(host=host, path=path, method="GET", subject=subject)

    assert ask("status.example.com", "/healthz", None) is Decision.ALLOW
    assert ask("status.example.com", "/admin/users", admin) is Decision.DENY
    assert ask("status.example.com", "/public/../admin", admin) is Decision.DENY
    assert ask("grafana.example.com", "/", None) is Decision.SIGN_IN  # the admins' rule asks who it is
    assert ask("grafana.example.com", "/", admin) is Decision.ALLOW
    assert ask("grafana.example.com", "/", reader) is Decision.ALLOW
    assert ask("grafana.example.com", "/d/abc?from=now&orgId=2", reader) is Decision.SET_UP_SECOND_FACTOR
    assert ask("grafana.example.com", "/d/abc?orgId=21", reader) is Decision.ALLOW
    assert ask("books.example.com", "/", reader) is Decision.SET_UP_SECOND_FACTOR  # bob is named
    assert ask("books.example.com", "/", Subject("eve", frozenset(), True, True)) is Decision.DENY
    assert ask("unlisted.example.com", "/", reader) is Decision.DENY  # the default
    assert ask("example.com", "/", admin) is Decision.DENY  # *.example.com is not the apex


def test_every_setting_is_in_the_example_file() -> None:
    written = set(re.findall(r"^#? ?([a-z_0-9]+) = ", EXAMPLE.read_text(), flags=re.M))
    written |= {"access"} if "[access]" in EXAMPLE.read_text() else set()
    assert set(Settings.model_fields) <= written, set(Settings.model_fields) - written


def test_commented_settings_of_the_example_are_valid_as_written(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each `# key = value` line of the example, uncommented, is accepted: no stale value is shown."""
    lines = [
        line[2:]
        for line in EXAMPLE.read_text().splitlines()
        if re.match(r"^# [a-z_0-9]+ = ", line) and "enable_test_clock" not in line
    ]
    assert len(lines) > 10
    env.setenv("TWOSTEP_CONFIG", str(write(tmp_path, "\n".join(lines) + "\n")))
    loaded = config.load()
    assert all(loaded.sources[line.split(" = ")[0]] == "file" for line in lines)


def test_file_environment_flag_precedence(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nworkers = 3\nissuer = "from file"\nrate_limit_per_minute = 7\n')
    env.setenv("TWOSTEP_CONFIG", str(path))
    env.setenv("TWOSTEP_PORT", "9100")
    env.setenv("TWOSTEP_RATE_LIMIT_PER_MINUTE", "8")
    loaded = config.load({"port": 9200, "host": None})
    s = loaded.settings
    assert (s.port, s.workers, s.issuer, s.rate_limit_per_minute, s.host) == (
        9200,
        3,
        "from file",
        8,
        "127.0.0.1",
    )
    assert loaded.sources["port"] == "flag"
    assert loaded.sources["rate_limit_per_minute"] == "environment"
    assert loaded.sources["workers"] == "file"
    assert loaded.sources["host"] == "default"
    assert config.load().settings.port == 9100
    env.delenv("TWOSTEP_PORT")
    assert config.load().settings.port == 9000
    # Settings() itself (what each uvicorn worker builds) reads the file too.
    assert Settings().issuer == "from file"


def test_lists_may_be_written_as_lists_or_comma_separated(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("TWOSTEP_CONFIG", str(write(tmp_path, 'trusted_proxies = ["10.0.0.5", "10.1.0.0/16"]\n')))
    settings = config.load().settings
    assert [str(n) for n in settings.trusted_proxy_networks()] == ["10.0.0.5/32", "10.1.0.0/16"]
    env.setenv("TWOSTEP_CONFIG", str(write(tmp_path, 'metrics_from = "10.0.0.1/8, 2001:db8::/32"\n')))
    assert [str(n) for n in config.load().settings.metrics_from] == ["10.0.0.0/8", "2001:db8::/32"]
    env.setenv("TWOSTEP_METRICS_FROM", "192.0.2.1")
    assert [str(n) for n in config.load().settings.metrics_from] == ["192.0.2.1/32"]


def test_second_round_defaults() -> None:
    settings = Settings()
    assert settings.signup == "open"
    assert settings.cookie_domain is None
    assert [str(n) for n in settings.metrics_from] == ["127.0.0.0/8", "::1/128"]
    assert settings.log_format == "text"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.access_control == AccessControl()
    assert settings.access_control.default_policy is Policy.ONE_FACTOR


@pytest.mark.parametrize(
    ("access", "default"),
    [
        ("", Policy.ONE_FACTOR),
        ("[access]\n", Policy.ONE_FACTOR),
        ('[access]\ndefault_policy = "two_factor"\n', Policy.TWO_FACTOR),
        ('[[access.rules]]\ndomain = ["a.example.com"]\npolicy = "bypass"\n', Policy.DENY),
        (
            '[access]\ndefault_policy = "one_factor"\n[[access.rules]]\ndomain = ["a.example.com"]\n'
            'policy = "bypass"\n',
            Policy.ONE_FACTOR,
        ),
    ],
)
def test_the_default_policy_is_one_factor_without_rules_and_deny_with_rules(
    env: pytest.MonkeyPatch, tmp_path: Path, access: str, default: Policy
) -> None:
    env.setenv("TWOSTEP_CONFIG", str(write(tmp_path, access)))
    assert config.load().settings.access_control.default_policy is default


def test_rules_are_compiled_normalised_and_in_order(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[access.rules]]
        domain = ["Grafana.Example.COM.", "*.Bücher.example", "[2001:DB8::1]", "192.0.2.1"]
        resources = ["^/api/public/"]
        policy = "bypass"

        [[access.rules]]
        domain = ["*.example.com"]
        users = ["ALICE", "\\uff22\\uff4f\\uff42"]
        groups = ["Admins"]
        policy = "two_factor"
        """,
    )
    env.setenv("TWOSTEP_CONFIG", str(path))
    first, second = config.load().settings.access_control.rules
    assert [str(d) for d in first.domains] == [
        "grafana.example.com",
        "*.xn--bcher-kva.example",
        "2001:db8::1",
        "192.0.2.1",
    ]
    assert [r.pattern for r in first.resources] == ["^/api/public/"]
    assert isinstance(first.resources[0], re.Pattern)
    assert second.users == {"alice", "bob"} and second.groups == {"admins"}
    assert second.policy is Policy.TWO_FACTOR


def test_access_rules_come_from_the_file_only(env: pytest.MonkeyPatch) -> None:
    env.setenv("TWOSTEP_ACCESS", '{"default_policy": "bypass"}')
    loaded = config.load()
    assert loaded.settings.access_control.default_policy is Policy.ONE_FACTOR
    assert loaded.sources["access"] == "default"


# Each class of error names the file and the line (TOML syntax) or the key path, and what is wrong.
BAD_FILES = [
    ('origin = "https://a.example.com"\nport = \n', ["line 2, column 8", "not valid TOML", "Invalid value"]),
    ('name = "x"\nname = "y"\n', ["line 2", "not valid TOML"]),
    ('[access\ndefault_policy = "deny"\n', ["line 1", "not valid TOML"]),
    ('origin = "https://a.example.com', ["at the end", "Unterminated string"]),
    ("prot = 8000\n", ["prot: unknown key", "did you mean port?"]),
    ('TWOSTEP_ORIGIN = "https://a.example.com"\n', ["TWOSTEP_ORIGIN: unknown key", "lower case", "origin"]),
    ('port = "8000"\n', ["port: must be an integer, not a string"]),
    ("port = 70000\n", ["port: Input should be less than or equal to 65535"]),
    ("enable_test_clock = 1\n", ["enable_test_clock: must be true or false, not a number"]),
    ("rate_limit_per_minute = true\n", ["rate_limit_per_minute: must be an integer, not a boolean"]),
    ('outbox_poll_seconds = "2"\n', ["outbox_poll_seconds: must be a number, not a string"]),
    ("trusted_proxies = [1]\n", ["trusted_proxies: must be a list of strings or a string"]),
    ('trusted_proxies = ["nope"]\n', ["trusted_proxies: 'nope' is not an address or a network"]),
    ("when = 1979-05-27T07:32:00Z\n", ["when: unknown key"]),
    ("access = 3\n", ["access: must be a table, not a number"]),
    ('[access]\ndefault = "deny"\n', ["access.default: unknown key (did you mean default_policy?)"]),
    ('[access]\n[[access.rule]]\npolicy = "deny"\n', ["access.rule: unknown key (did you mean rules?)"]),
    ('[access]\ndefault_policy = "allow"\n', ["access.default_policy: Input should be 'bypass'"]),
    ('origin = "http://auth.example.com"\n', ["origin: must use https except for http://localhost"]),
    ('signup = "maybe"\n', ["signup: Input should be 'open', 'invite' or 'closed'"]),
    ('log_format = "xml"\n', ["log_format: Input should be 'text' or 'json'"]),
    ('metrics_from = ["10.0.0.0/8", "nope"]\n', ["metrics_from: 'nope' is not an address or a network"]),
    ('cookie_domain = "other.com"\n', ["cookie_domain: must be the origin's host (localhost)"]),
    (
        'origin = "https://auth.example.com"\ncookie_domain = "com"\n',
        ["cookie_domain: must be a registrable"],
    ),
    ('origin = "https://auth.example.com"\ncookie_domain = "192.0.2.1"\n', ["cookie_domain: must be a reg"]),
]
RULE = '[[access.rules]]\ndomain = ["a.example.com"]\npolicy = "deny"\n'
BAD_RULES = [
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\npolicy = "allow"\n',
        "access.rules[1].policy: Input should",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nresources = ["^/ok", "(x"]\npolicy = "deny"\n',
        "access.rules[1].resources[1]: '(x' is not a valid regular expression: missing ),",
    ),
    (
        '[[access.rules]]\ndomain = "a.example.com"\npolicy = "deny"\n',
        "access.rules[1].domain: Input should be a valid list",
    ),
    (
        '[[access.rules]]\ndomain = []\npolicy = "deny"\n',
        "access.rules[1].domain: List should have at least 1 item",
    ),
    ('[[access.rules]]\npolicy = "deny"\n', "access.rules[1].domain: required, and missing"),
    ('[[access.rules]]\ndomain = ["a.example.com"]\n', "access.rules[1].policy: required, and missing"),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\npolicy = "deny"\ncolor = "red"\n',
        "access.rules[1].color: unknown key",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nusers = ["bob smith"]\npolicy = "deny"\n',
        "access.rules[1].users[0]: 'bob smith' is not a username",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\ngroups = ["a\\u0000"]\npolicy = "deny"\n',
        "access.rules[1].groups[0]: 'a\\x00' is not a group name",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nusers = ["bob"]\npolicy = "bypass"\n',
        "access.rules[1]: a bypass rule cannot name users or groups",
    ),
    (
        '[[access.rules]]\ndomain = ["https://a.example.com/"]\npolicy = "deny"\n',
        "access.rules[1].domain[0]: 'https://a.example.com/' is not a host name",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com:8443"]\npolicy = "deny"\n',
        "access.rules[1].domain[0]: 'a.example.com:8443' is not a host name",
    ),
    (
        '[[access.rules]]\ndomain = ["*"]\npolicy = "deny"\n',
        "access.rules[1].domain[0]: '*' is not a host name",
    ),
    ('[[access.rules]]\ndomain = ["a.*.example.com"]\npolicy = "deny"\n', "access.rules[1].domain[0]"),
    (
        '[[access.rules]]\ndomain = ["*.192.0.2.1"]\npolicy = "deny"\n',
        "access.rules[1].domain[0]: '*.192.0.2.1': a wildcard is for domain names",
    ),
    (
        '[[access.rules]]\ndomain = ["a..example.com"]\npolicy = "deny"\n',
        "access.rules[1].domain[0]: 'a..example.com' has a host that is not a valid domain name",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nusers = "bob"\npolicy = "deny"\n',
        "access.rules[1].users: Input should be a valid list",
    ),
    (
        '[[access.rules]]\ndomain = ["a.example.com"]\nresources = [1]\npolicy = "deny"\n',
        "access.rules[1].resources[0]: Input should be a valid string",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_file_is_refused_naming_the_file_and_the_line_or_key(
    env: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    problems = refused(env, path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}"), problems
    for part in expected:
        assert part in problems[0], problems


@pytest.mark.parametrize(("text", "expected"), BAD_RULES)
def test_a_bad_rule_is_refused_naming_its_key_path(
    env: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, RULE + text)  # the second rule: index 1
    problems = refused(env, path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: {expected}"), problems


def test_a_misspelt_key_of_a_rule_is_named_with_the_key_it_probably_meant(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[[access.rules]]\ndomains = ["a.example.com"]\npolicy = "deny"\n')
    assert refused(env, path) == [
        f"{path}: access.rules[0].domain: required, and missing",
        f"{path}: access.rules[0].domains: unknown key (did you mean domain?)",
    ]


def test_every_problem_is_reported_on_its_own_line(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, 'signup = "maybe"\nlog_format = "xml"\n' + RULE.replace("deny", "nope"))
    problems = refused(env, path)
    assert [p.split(": ")[1] for p in problems] == ["signup", "log_format", "access.rules[0].policy"]


def test_an_unreadable_file_is_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert refused(env, tmp_path / "missing.toml") == [
        f"{tmp_path / 'missing.toml'}: cannot be read: No such file or directory"
    ]
    assert refused(env, tmp_path) == [f"{tmp_path}: cannot be read: Is a directory"]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'origin = "\xff"\n')
    assert refused(env, binary)[0].startswith(f"{binary}: cannot be read:")


def test_values_from_the_environment_and_flags_are_named_by_their_variable_and_flag(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, 'origin = "https://auth.example.com"\n')
    env.setenv("TWOSTEP_SIGNUP", "maybe")
    problems = refused(env, path, {"trusted_proxies": "nope", "port": 0})
    assert problems == [
        "--trusted-proxies (TWOSTEP_TRUSTED_PROXIES): 'nope' is not an address or a network",
        "--port (TWOSTEP_PORT): Input should be greater than or equal to 1",
        "TWOSTEP_SIGNUP: Input should be 'open', 'invite' or 'closed'",
    ]


def test_a_refused_secret_is_never_repeated(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, 'database_url = ["postgresql://u:hunter2@db/x"]\nsmtp_url = 7\n')
    problems = refused(env, path)
    assert problems and not any("hunter2" in p for p in problems)


@pytest.mark.parametrize(
    ("cookie_domain", "origin", "stored"),
    [
        ("example.com", "https://auth.example.com", "example.com"),
        (".Example.COM", "https://auth.example.com", "example.com"),
        ("auth.example.com", "https://auth.example.com", "auth.example.com"),
        ("example.com", "https://a.b.example.com:8443", "example.com"),
        ("bücher.example", "https://auth.xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("", "https://auth.example.com", None),
    ],
)
def test_cookie_domain_is_the_origins_host_or_a_parent(
    cookie_domain: str, origin: str, stored: str | None
) -> None:
    assert Settings(origin=origin, cookie_domain=cookie_domain).cookie_domain == stored


@pytest.mark.parametrize(
    ("cookie_domain", "origin"),
    [
        ("example.org", "https://auth.example.com"),
        ("ample.com", "https://auth.example.com"),
        ("other.auth.example.com", "https://auth.example.com"),
        ("com", "https://auth.example.com"),
        ("localhost", "http://localhost:8000"),
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("exa mple.com", "https://auth.example.com"),
    ],
)
def test_cookie_domain_outside_the_origin_or_not_registrable_is_refused(
    cookie_domain: str, origin: str
) -> None:
    with pytest.raises(ValidationError):
        Settings(origin=origin, cookie_domain=cookie_domain)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://tw:s3cret@db.internal:5432/tw",
            "postgresql+psycopg://tw:***@db.internal:5432/tw",
        ),
        ("smtps://me%40x:p%40ss@mail.example.com:465", "smtps://me%40x:***@mail.example.com:465"),
        (
            "postgresql+psycopg://tw@db/tw?password=s3cret&sslmode=require",
            "postgresql+psycopg://tw@db/tw?password=***&sslmode=require",
        ),
        ("smtp://127.0.0.1:1025", "smtp://127.0.0.1:1025"),
        ("sqlite:////var/lib/twostep/x.sqlite3", "sqlite:////var/lib/twostep/x.sqlite3"),
        ("smtp://u:p@[::1:1025", "(set; not shown)"),
    ],
)
def test_passwords_of_urls_are_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_key_path() -> None:
    assert config.key_path(("access", "rules", 2, "policy")) == "access.rules[2].policy"
    assert config.key_path(("access", "rules", 0, "resources", 1)) == "access.rules[0].resources[1]"
    assert config.key_path(("port",)) == "port"


def test_check_config_warns_about_open_signup_with_rules_and_cookies_that_do_not_reach(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        """
        origin = "https://auth.example.com"
        [access]
        default_policy = "bypass"
        [[access.rules]]
        domain = ["app.example.com"]
        policy = "one_factor"
        [[access.rules]]
        domain = ["auth.example.com", "static.example.com"]
        policy = "bypass"
        """,
    )
    env.setenv("TWOSTEP_CONFIG", str(path))
    env.setenv("TWOSTEP_DATA_DIR", str(tmp_path / "data"))
    warnings = config_warnings(config.load().settings)
    assert len(warnings) == 3, warnings
    assert 'signup is "open" while access rules exist' in warnings[0]
    assert 'access.default_policy is "bypass"' in warnings[1]
    assert "access.rules[0] protects app.example.com" in warnings[2] and "cookie_domain" in warnings[2]
    env.setenv("TWOSTEP_SIGNUP", "invite")
    env.setenv("TWOSTEP_COOKIE_DOMAIN", "example.com")
    warnings = config_warnings(config.load().settings)
    assert len(warnings) == 1, warnings
    assert 'access.default_policy is "bypass"' in warnings[0]


def test_every_second_round_setting_is_in_effect(env: pytest.MonkeyPatch) -> None:
    """signup (issue 12), cookie_domain and access (13), metrics_from and log_format (15): set, none is
    announced as "not yet in effect" any more."""
    assert config_warnings(config.load().settings) == []
    env.setenv("TWOSTEP_SIGNUP", "open")  # set, even to its default
    env.setenv("TWOSTEP_ORIGIN", "https://auth.example.com")
    env.setenv("TWOSTEP_COOKIE_DOMAIN", "example.com")
    env.setenv("TWOSTEP_LOG_FORMAT", "json")
    env.setenv("TWOSTEP_METRICS_FROM", "::1")
    assert config_warnings(config.load().settings) == []


def test_check_config_reports_forwarding_from_an_untrusted_peer_noted_by_the_server(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("TWOSTEP_DATA_DIR", str(tmp_path))
    assert config.read_untrusted_forwarding(tmp_path) is None
    assert config_warnings(config.load().settings) == []
    config.record_untrusted_forwarding(tmp_path, "192.0.2.7")
    seen = config.read_untrusted_forwarding(tmp_path)
    assert seen is not None and seen.peer == "192.0.2.7"
    (warning,) = config_warnings(config.load().settings)
    assert "X-Forwarded-For from 192.0.2.7" in warning and "TWOSTEP_TRUSTED_PROXIES is not set" in warning
    env.setenv("TWOSTEP_TRUSTED_PROXIES", "10.0.0.0/8")
    (warning,) = config_warnings(config.load().settings)
    assert "it is not listed" in warning
    # Trusted since: nothing to say.
    env.setenv("TWOSTEP_TRUSTED_PROXIES", "192.0.2.0/24")
    assert config_warnings(config.load().settings) == []
    # Whatever is in the file is shown harmlessly.
    (tmp_path / config.UNTRUSTED_FORWARDING_FILE).write_text("\x1b[31mevil\n" + "x" * 500)
    env.delenv("TWOSTEP_TRUSTED_PROXIES")
    (warning,) = config_warnings(config.load().settings)
    assert "\x1b" not in warning and "x" * 65 not in warning
