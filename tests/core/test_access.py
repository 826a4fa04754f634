"""Access rules as data and a pure decision (docs/api.md "Access rules"): first match wins, wildcard domains,
resources on the cleaned path with its query, users and groups, anonymous requests and subject rules, the
default policy, bypass without a session, two_factor with and without a second factor."""

from __future__ import annotations

import re

import pytest

from twostep.core.access import (
    AccessControl,
    AccessRule,
    Decision,
    DomainPattern,
    Policy,
    Subject,
    decide,
    request_host,
    request_path,
)
from twostep.core.names import normalize_group, normalize_username

ALICE = Subject(
    "alice", frozenset({"admins"}), signed_in_with_second_factor=True, account_has_second_factor=True
)
BOB = Subject("bob", frozenset(), signed_in_with_second_factor=False, account_has_second_factor=False)
# Signed in with the password only although the account has a factor (no such session exists today).
CAROL_NO_STEP = Subject(
    "carol", frozenset({"staff"}), signed_in_with_second_factor=False, account_has_second_factor=True
)
CAROL = Subject(
    "carol", frozenset({"staff"}), signed_in_with_second_factor=True, account_has_second_factor=True
)


def exact(*hosts: str) -> tuple[DomainPattern, ...]:
    return tuple(DomainPattern(h) for h in hosts)


def under(domain: str) -> tuple[DomainPattern, ...]:
    return (DomainPattern(domain, wildcard=True),)


def rule(
    domains: tuple[DomainPattern, ...],
    policy: Policy,
    *,
    resources: tuple[str, ...] = (),
    users: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
) -> AccessRule:
    return AccessRule(
        domains=domains,
        policy=policy,
        resources=tuple(re.compile(r) for r in resources),
        users=frozenset(users),
        groups=frozenset(groups),
    )


def ask(
    rules: list[AccessRule],
    subject: Subject | None,
    host: str = "app.example.com",
    path: str = "/",
    default: Policy = Policy.DENY,
) -> Decision:
    return decide(rules, default, host=host, path=path, method="GET", subject=subject)


# --- first match wins --------------------------------------------------------------------------------------


def test_the_first_matching_rule_decides_even_when_a_later_one_is_more_lenient() -> None:
    rules = [
        rule(exact("app.example.com"), Policy.DENY),
        rule(exact("app.example.com"), Policy.BYPASS),
    ]
    assert ask(rules, ALICE) is Decision.DENY
    assert ask(rules, None) is Decision.DENY
    assert ask(list(reversed(rules)), None) is Decision.ALLOW


def test_a_rule_that_does_not_match_passes_the_request_to_the_next() -> None:
    rules = [
        rule(exact("other.example.com"), Policy.DENY),
        rule(exact("app.example.com"), Policy.ONE_FACTOR),
    ]
    assert ask(rules, BOB) is Decision.ALLOW
    assert ask(rules, BOB, host="other.example.com") is Decision.DENY


# --- domains -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("a.example.com", True),
        ("b.a.example.com", True),
        ("example.com", False),  # as Authelia: the apex is not a subdomain
        ("badexample.com", False),
        ("example.com.evil.net", False),
        ("a.example.co", False),
    ],
)
def test_a_wildcard_matches_subdomains_at_any_depth_but_not_the_apex(host: str, matches: bool) -> None:
    rules = [rule(under("example.com"), Policy.BYPASS)]
    expected = Decision.ALLOW if matches else Decision.DENY
    assert ask(rules, None, host=host) is expected


@pytest.mark.parametrize(
    "host",
    [
        "app.example.com",
        "APP.Example.COM",
        "app.example.com.",
        "app.example.com:8443",
        "App.Example.com.:443",
    ],
)
def test_the_host_is_compared_without_case_port_or_trailing_dot(host: str) -> None:
    rules = [rule(exact("app.example.com"), Policy.BYPASS)]
    assert ask(rules, None, host=host) is Decision.ALLOW
    assert ask([rule(under("example.com"), Policy.BYPASS)], None, host=host) is Decision.ALLOW


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com:80", "example.com"),
        ("example.com:", "example.com"),
        ("[::1]:8080", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("", None),
        ("exa mple.com", None),
        ("example.com:port", None),
        ("a..example.com", None),
        ("evil.com/.example.com", None),
        ("user@example.com", None),
        ("[::1", None),
        ("[::1]x", None),
        ("bücher.example", None),
    ],
)
def test_request_host(raw: str, normalized: str | None) -> None:
    assert request_host(raw) == normalized


def test_a_host_that_is_not_a_host_matches_no_rule_and_gets_the_default() -> None:
    rules = [rule(under("example.com"), Policy.BYPASS)]
    assert ask(rules, None, host="evil.com/.example.com") is Decision.DENY
    assert ask(rules, None, host="evil.com/.example.com", default=Policy.ONE_FACTOR) is Decision.SIGN_IN


def test_a_rule_with_several_domains_matches_any_of_them() -> None:
    rules = [rule((*exact("a.example.com"), *under("example.org")), Policy.BYPASS)]
    assert ask(rules, None, host="a.example.com") is Decision.ALLOW
    assert ask(rules, None, host="x.example.org") is Decision.ALLOW
    assert ask(rules, None, host="b.example.com") is Decision.DENY


def test_an_ipv6_host_matches_its_rule() -> None:
    rules = [rule(exact("2001:db8::1"), Policy.BYPASS)]
    assert ask(rules, None, host="[2001:DB8:0::1]:443") is Decision.ALLOW


# --- resources ---------------------------------------------------------------------------------------------


def test_resources_are_searched_in_the_path_with_its_query() -> None:
    rules = [
        rule(exact("app.example.com"), Policy.BYPASS, resources=(r"^/api/public/", r"[?&]share=yes(&|$)")),
        rule(exact("app.example.com"), Policy.ONE_FACTOR),
    ]
    assert ask(rules, None, path="/api/public/status") is Decision.ALLOW
    assert ask(rules, None, path="/api/public/status?x=1&y=2") is Decision.ALLOW
    assert ask(rules, None, path="/api/private") is Decision.SIGN_IN
    assert ask(rules, None, path="/doc?a=1&share=yes") is Decision.ALLOW
    assert ask(rules, None, path="/doc?share=yes&b=2") is Decision.ALLOW
    assert ask(rules, None, path="/doc?share=no") is Decision.SIGN_IN
    # Not anchored at the start of the path unless the expression says so.
    assert ask(rules, None, path="/x/api/public/") is Decision.SIGN_IN


def test_an_unanchored_resource_matches_anywhere() -> None:
    rules = [rule(exact("app.example.com"), Policy.DENY, resources=(r"\.git/",))]
    assert ask(rules, BOB, path="/repo/.git/config", default=Policy.ONE_FACTOR) is Decision.DENY
    assert ask(rules, BOB, path="/repo/README", default=Policy.ONE_FACTOR) is Decision.ALLOW


@pytest.mark.parametrize(
    "path",
    [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/public/..%2fadmin",
        "/admin/",
        "/admin?x=1",
    ],
)
def test_a_path_that_resolves_to_admin_is_matched_as_admin(path: str) -> None:
    rules = [
        rule(exact("app.example.com"), Policy.DENY, resources=(r"^/admin(/|\?|$)",)),
        rule(exact("app.example.com"), Policy.BYPASS, resources=(r"^/public/",)),
    ]
    # The default lets through whatever the deny rule does not catch.
    assert ask(rules, ALICE, path=path, default=Policy.BYPASS) is Decision.DENY
    assert ask(rules, None, path=path, default=Policy.BYPASS) is Decision.DENY


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../b", "/b"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("/a/.", "/a"),
        ("/a%20b", "/a b"),
        ("/caf%C3%A9", "/café"),
        ("/%zz", "/%zz"),
        ("/a?b=%2e%2e/../c&d", "/a?b=%2e%2e/../c&d"),
        ("/a/../b?x=/../y", "/b?x=/../y"),
        ("/a?", "/a?"),
    ],
)
def test_request_path_cleans_the_path_and_keeps_the_query(raw: str, cleaned: str) -> None:
    assert request_path(raw) == cleaned


# --- users and groups --------------------------------------------------------------------------------------


def test_a_rule_with_users_or_groups_matches_a_subject_named_in_either() -> None:
    rules = [
        rule(exact("app.example.com"), Policy.ONE_FACTOR, users=("bob",), groups=("admins",)),
        rule(exact("app.example.com"), Policy.DENY),
    ]
    assert ask(rules, ALICE) is Decision.ALLOW  # by group
    assert ask(rules, BOB) is Decision.ALLOW  # by name
    assert ask(rules, CAROL) is Decision.DENY  # neither: the next rule


def test_a_subject_outside_the_rule_falls_through_to_the_next_rule() -> None:
    rules = [
        rule(under("example.com"), Policy.TWO_FACTOR, groups=("admins",)),
        rule(exact("wiki.example.com"), Policy.ONE_FACTOR),
    ]
    assert ask(rules, BOB, host="wiki.example.com") is Decision.ALLOW
    assert ask(rules, BOB, host="grafana.example.com") is Decision.DENY
    assert ask(rules, ALICE, host="grafana.example.com") is Decision.ALLOW


def test_an_anonymous_request_reaching_a_subject_rule_is_asked_to_sign_in_not_passed_on() -> None:
    # Authelia does the same: the identity decides whether the rule applies; a later bypass must not win.
    rules = [
        rule(exact("app.example.com"), Policy.TWO_FACTOR, groups=("admins",)),
        rule(exact("app.example.com"), Policy.BYPASS),
    ]
    assert ask(rules, None) is Decision.SIGN_IN
    assert ask(rules, BOB) is Decision.ALLOW  # signed in, not an admin: the bypass rule


def test_an_anonymous_request_to_a_deny_rule_with_a_subject_signs_in_first() -> None:
    rules = [
        rule(exact("app.example.com"), Policy.DENY, users=("mallory",)),
        rule(exact("app.example.com"), Policy.ONE_FACTOR),
    ]
    assert ask(rules, None) is Decision.SIGN_IN
    assert ask(rules, BOB) is Decision.ALLOW
    assert ask(rules, Subject("mallory", frozenset(), False, False)) is Decision.DENY


def test_a_subject_rule_whose_domain_or_resources_do_not_match_is_skipped_for_anonymous_requests() -> None:
    rules = [
        rule(exact("app.example.com"), Policy.TWO_FACTOR, groups=("admins",), resources=("^/admin",)),
        rule(exact("app.example.com"), Policy.BYPASS),
    ]
    assert ask(rules, None, path="/index") is Decision.ALLOW
    assert ask(rules, None, host="other.example.com") is Decision.DENY
    assert ask(rules, None, path="/admin") is Decision.SIGN_IN


def test_users_and_groups_of_rules_are_compared_normalised() -> None:
    # The configuration normalises the rule's names; the session's come normalised from the database.
    names = normalize_username("ALICE"), normalize_group("Admins")
    assert names == ("alice", "admins")
    rules = [rule(exact("app.example.com"), Policy.ONE_FACTOR, users=("alice",))]
    assert ask(rules, ALICE) is Decision.ALLOW


# --- the default policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "anonymous", "signed_in"),
    [
        (Policy.BYPASS, Decision.ALLOW, Decision.ALLOW),
        (Policy.ONE_FACTOR, Decision.SIGN_IN, Decision.ALLOW),
        (Policy.TWO_FACTOR, Decision.SIGN_IN, Decision.SET_UP_SECOND_FACTOR),
        (Policy.DENY, Decision.DENY, Decision.DENY),
    ],
)
def test_the_default_policy_applies_when_no_rule_matches(
    default: Policy, anonymous: Decision, signed_in: Decision
) -> None:
    rules = [rule(exact("other.example.com"), Policy.BYPASS)]
    assert ask(rules, None, default=default) is anonymous
    assert ask(rules, BOB, default=default) is signed_in
    assert ask([], None, default=default) is anonymous


def test_without_rules_one_factor_is_the_behaviour_of_the_first_round() -> None:
    control = AccessControl()
    assert control.default_policy is Policy.ONE_FACTOR
    assert control.decide(host="anything.test", path="/", method="GET", subject=None) is Decision.SIGN_IN
    assert control.decide(host="anything.test", path="/", method="GET", subject=BOB) is Decision.ALLOW
    assert control.decide(host="anything.test", path="/", method="GET", subject=CAROL) is Decision.ALLOW


# --- policies ----------------------------------------------------------------------------------------------


def test_bypass_allows_without_a_session() -> None:
    rules = [rule(exact("app.example.com"), Policy.BYPASS)]
    assert ask(rules, None) is Decision.ALLOW
    assert ask(rules, BOB) is Decision.ALLOW


def test_deny_refuses_everyone_even_without_a_session() -> None:
    rules = [rule(exact("app.example.com"), Policy.DENY)]
    assert ask(rules, None, default=Policy.BYPASS) is Decision.DENY
    assert ask(rules, ALICE, default=Policy.BYPASS) is Decision.DENY


def test_one_factor_needs_a_session_and_the_second_factor_where_the_account_has_one() -> None:
    rules = [rule(exact("app.example.com"), Policy.ONE_FACTOR)]
    assert ask(rules, None) is Decision.SIGN_IN
    assert ask(rules, BOB) is Decision.ALLOW
    assert ask(rules, CAROL) is Decision.ALLOW
    assert ask(rules, CAROL_NO_STEP) is Decision.SECOND_FACTOR_REQUIRED


def test_two_factor_with_and_without_a_second_factor() -> None:
    rules = [rule(exact("app.example.com"), Policy.TWO_FACTOR)]
    assert ask(rules, None) is Decision.SIGN_IN
    assert ask(rules, CAROL) is Decision.ALLOW
    assert ask(rules, BOB) is Decision.SET_UP_SECOND_FACTOR
    assert ask(rules, CAROL_NO_STEP) is Decision.SECOND_FACTOR_REQUIRED
    # Signed in with a factor that has been removed since: the account has none now.
    gone = Subject("dave", frozenset(), signed_in_with_second_factor=True, account_has_second_factor=False)
    assert ask(rules, gone) is Decision.SET_UP_SECOND_FACTOR


def test_SEC_a_trusted_browser_sign_in_is_one_factor() -> None:
    """Issue 17: a session whose second step a trusted browser skipped passes one_factor (as any signed-in
    session of the account did before) and never two_factor."""
    trusted = Subject(
        "carol",
        frozenset({"staff"}),
        signed_in_with_second_factor=False,
        account_has_second_factor=True,
        trusted_browser=True,
    )
    assert ask([rule(exact("app.example.com"), Policy.ONE_FACTOR)], trusted) is Decision.ALLOW
    assert (
        ask([rule(exact("app.example.com"), Policy.TWO_FACTOR)], trusted) is Decision.SECOND_FACTOR_REQUIRED
    )
    assert ask([rule(exact("app.example.com"), Policy.DENY)], trusted) is Decision.DENY


def test_the_method_does_not_change_the_decision() -> None:
    rules = [rule(exact("app.example.com"), Policy.ONE_FACTOR)]
    for method in ("GET", "POST", "OPTIONS", "DELETE", "get", ""):
        got = decide(rules, Policy.DENY, host="app.example.com", path="/", method=method, subject=None)
        assert got is Decision.SIGN_IN


# --- the data ----------------------------------------------------------------------------------------------


def test_a_rule_needs_a_domain_and_bypass_cannot_name_a_subject() -> None:
    with pytest.raises(ValueError, match="domain"):
        AccessRule(domains=(), policy=Policy.ONE_FACTOR)
    with pytest.raises(ValueError, match="bypass"):
        AccessRule(domains=exact("a.example.com"), policy=Policy.BYPASS, users=frozenset({"bob"}))
    with pytest.raises(ValueError, match="bypass"):
        AccessRule(domains=exact("a.example.com"), policy=Policy.BYPASS, groups=frozenset({"staff"}))


def test_rules_are_frozen() -> None:
    r = rule(exact("a.example.com"), Policy.DENY)
    with pytest.raises(AttributeError):
        r.policy = Policy.BYPASS  # type: ignore[misc]
    assert str(DomainPattern("example.com", wildcard=True)) == "*.example.com"
    assert str(DomainPattern("a.example.com")) == "a.example.com"


@pytest.mark.parametrize(
    ("raw", "username", "group"),
    [
        ("Alice", "alice", "alice"),
        ("ALICE.Smith@Example.com", "alice.smith@example.com", "alice.smith@example.com"),
        ("\uff21\uff4c\uff49\uff43\uff45", "alice", "alice"),  # fullwidth "Alice": NFKC
        ("Straße", "strasse", "strasse"),  # casefold
        ("ab", None, "ab"),
        ("a", None, "a"),
        ("bob smith", None, None),
        ("bob\x00", None, None),
        ("x" * 65, None, None),
        ("x" * 300, None, None),
        ("", None, None),
    ],
)
def test_names_are_normalised_with_nfkc_and_casefold(
    raw: str, username: str | None, group: str | None
) -> None:
    assert normalize_username(raw) == username
    assert normalize_group(raw) == group


def test_the_rules_remembered_per_host_are_bounded_and_give_the_same_decisions() -> None:
    """AccessControl remembers which rules each Host header matches (forward authentication's hot path):
    made-up hosts cannot grow it past HOSTS_REMEMBERED, and the decisions are those of ``decide``."""
    from twostep.core.access import HOSTS_REMEMBERED

    rules = (
        AccessRule(domains=(DomainPattern("example.test", wildcard=True),), policy=Policy.DENY),
        AccessRule(domains=(DomainPattern("open.test"),), policy=Policy.BYPASS),
    )
    control = AccessControl(rules=rules, default_policy=Policy.ONE_FACTOR)
    for i in range(HOSTS_REMEMBERED * 2):
        host = f"h{i}.example.test" if i % 3 else f"OPEN.test:{i % 70000}"
        for subject in (None, BOB):
            expected = decide(rules, Policy.ONE_FACTOR, host=host, path="/", method="GET", subject=subject)
            assert control.decide(host=host, path="/", method="GET", subject=subject) is expected
        assert len(control._by_host) <= HOSTS_REMEMBERED
