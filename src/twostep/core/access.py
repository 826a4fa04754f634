"""Access rules for protected applications, and the decision they give (docs/api.md "Access rules").

Pure: the rules are data (parsed and their regular expressions compiled once, by ``twostep.config``), and
``decide`` is a function of the rules, the request and who is asking. Nothing here reads a header, a cookie
or the database; the caller (forward authentication) brings the host, the path and the subject.

Matching, as Authelia does it:

* Rules are read top to bottom; the first whose domain, resources, users and groups all match decides.
* ``domain`` entries are exact hosts or ``*.`` and a suffix. ``*.example.com`` matches every name that
  ends in ``.example.com`` (``a.example.com``, ``b.a.example.com``) but not ``example.com`` itself.
  The request's host is compared in lower case, without its port and without a trailing dot.
* ``resources`` are regular expressions searched (``re.search``, so anchor them with ``^``) in the request's
  path and query. The path is percent-decoded once and cleaned (``.`` and ``..`` segments resolved, repeated
  slashes collapsed) before matching, so that ``/public/../admin`` is matched as ``/admin``; the query is
  matched as it was sent.
* A rule with ``users`` or ``groups`` matches a subject named in either list. An anonymous request whose
  host and path match such a rule is asked to sign in (its identity decides whether the rule applies); it is
  never skipped to a later rule, which might be more lenient.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import unquote


class Policy(StrEnum):
    """What a rule asks of the request."""

    BYPASS = "bypass"  # no session needed
    ONE_FACTOR = "one_factor"  # a signed-in session (with the second factor where the account has one)
    TWO_FACTOR = "two_factor"  # a signed-in session whose sign-in used a second factor
    DENY = "deny"


class Decision(StrEnum):
    """The answer to one request."""

    ALLOW = "allow"
    # Not signed in (or a pending sign-in): 401, or a redirect to the login page.
    SIGN_IN = "sign_in"
    # A two_factor rule and an account without a second factor: 403 and the page that leads to adding one.
    SET_UP_SECOND_FACTOR = "set_up_second_factor"
    # The account has a second factor but this session's sign-in did not use it: sign in again, with it.
    # Answered like SIGN_IN (401 / the login page); distinct so that it can be logged, and later offered as a
    # step-up instead.
    SECOND_FACTOR_REQUIRED = "second_factor_required"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """One entry of a rule's ``domain``: an exact host, or (``wildcard``) every subdomain of ``host``."""

    host: str  # lower case, A-labels, no port, no trailing dot; for "*.example.com" it is "example.com"
    wildcard: bool = False

    def matches(self, host: str) -> bool:
        """Whether ``host`` (as ``request_host`` gives it) is this host, or one of its subdomains."""
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        return f"*.{self.host}" if self.wildcard else self.host


@dataclass(frozen=True, slots=True)
class AccessRule:
    """``[[access.rules]]`` once parsed: users and groups normalised (``twostep.core.names``), resources
    compiled.

    Raises:
        ValueError: no domain, or a bypass rule that names users or groups.
    """

    domains: tuple[DomainPattern, ...]
    policy: Policy
    resources: tuple[re.Pattern[str], ...] = ()
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("a rule needs at least one domain")
        if self.policy is Policy.BYPASS and self.has_subject:
            # As in Authelia: bypass needs no sign-in, so there is nobody to compare with the lists.
            raise ValueError("a bypass rule cannot name users or groups")

    @property
    def has_subject(self) -> bool:
        return bool(self.users or self.groups)


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: a signed-in session (a pending sign-in is not signed in; pass None for it).

    ``username`` and ``groups`` are normalised as ``twostep.core.names`` does.
    """

    username: str
    groups: frozenset[str] = field(default_factory=frozenset)
    signed_in_with_second_factor: bool = False
    account_has_second_factor: bool = False
    # A trusted browser skipped the second step of this sign-in (issue 17): enough for one_factor, never for
    # two_factor.
    trusted_browser: bool = False


# How many hosts AccessControl remembers the rules of (a deployment has a handful; past this many, as when
# someone sends made-up Host headers, it starts over).
HOSTS_REMEMBERED: Final = 1024


@dataclass(frozen=True, slots=True)
class AccessControl:
    """The ``[access]`` table: the rules in order, and the policy when none matches.

    The rules whose domain matches a host depend on the host alone: they are found once per host and
    remembered (``rules_for``), so that a request looks only at its host's rules (forward authentication is
    asked for every request to every protected application)."""

    rules: tuple[AccessRule, ...] = ()
    default_policy: Policy = Policy.ONE_FACTOR
    _by_host: dict[str, tuple[AccessRule, ...]] = field(default_factory=dict, compare=False, repr=False)

    def rules_for(self, host: str) -> tuple[AccessRule, ...]:
        """The rules, in order, whose ``domain`` matches ``host`` (a Host header, as ``decide`` takes it)."""
        found = self._by_host.get(host)
        if found is None:
            found = _domain_rules(self.rules, request_host(host))
            if len(self._by_host) >= HOSTS_REMEMBERED:
                self._by_host.clear()
            self._by_host[host] = found
        return found

    def decide(self, *, host: str, path: str, method: str, subject: Subject | None) -> Decision:
        """``decide`` with these rules."""
        del method  # no rule has a method condition (docs/api.md "Access rules")
        return _first_match(self.rules_for(host), self.default_policy, request_path(path), subject)


# A host as it reaches forward authentication: labels of letters, digits, "_" and "-".
_HOST: Final = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT: Final = re.compile(r"[0-9]{0,5}")


def request_host(host: str) -> str | None:
    """The host of a request in the form rules compare: lower case, no port, no trailing dot, an IPv6
    address without brackets. None for anything that is not a host name or an address (it matches no rule).

    Raises: nothing.
    """
    value = host.strip().lower()
    if value.startswith("["):
        inner, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and _PORT.fullmatch(port[1:]))):
            return None
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            return None
    if value.count(":") > 1:
        try:
            return ipaddress.IPv6Address(value).compressed
        except ValueError:
            return None
    value, _, port = value.partition(":")
    if not _PORT.fullmatch(port):
        return None
    value = value.removesuffix(".")
    return value if _HOST.fullmatch(value) else None


def request_path(path: str) -> str:
    """The path and query that ``resources`` are matched against: the path percent-decoded once (UTF-8) and
    cleaned of ``.``, ``..`` and empty segments, a trailing slash kept; the query as it was sent.

    Raises: nothing.
    """
    raw_path, question, query = path.partition("?")
    decoded = unquote(raw_path)
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if segments and decoded.endswith("/"):
        cleaned += "/"
    return cleaned + question + query


def _domain_rules(rules: Sequence[AccessRule], host: str | None) -> tuple[AccessRule, ...]:
    """The rules whose domain matches ``host`` (as ``request_host`` gives it), in order."""
    if host is None:
        return ()
    return tuple(rule for rule in rules if any(pattern.matches(host) for pattern in rule.domains))


def _outcome(policy: Policy, subject: Subject | None) -> Decision:
    if policy is Policy.BYPASS:
        return Decision.ALLOW
    if policy is Policy.DENY:
        return Decision.DENY
    if subject is None:
        return Decision.SIGN_IN
    if policy is Policy.TWO_FACTOR and not subject.account_has_second_factor:
        return Decision.SET_UP_SECOND_FACTOR
    if subject.account_has_second_factor and not subject.signed_in_with_second_factor:
        # one_factor means "as before": the second factor where the account has one, or the account's trust
        # in this browser standing in for it; two_factor always wants the second factor itself.
        if policy is Policy.ONE_FACTOR and subject.trusted_browser:
            return Decision.ALLOW
        return Decision.SECOND_FACTOR_REQUIRED
    return Decision.ALLOW


def decide(
    rules: Sequence[AccessRule],
    default_policy: Policy,
    *,
    host: str,
    path: str,
    method: str,
    subject: Subject | None,
) -> Decision:
    """The decision for a request to ``host`` (a Host header: port and case do not matter) at ``path`` (the
    path with its query, as the proxy sent it), by ``subject`` (None: not signed in).

    ``method`` is accepted for the proxies' whole request; no rule condition looks at it in this version.
    First match wins; no rule matching means ``default_policy``.

    Raises: nothing.
    """
    del method  # no rule has a method condition (docs/api.md "Access rules")
    return _first_match(_domain_rules(rules, request_host(host)), default_policy, request_path(path), subject)


def _first_match(
    rules: Sequence[AccessRule], default_policy: Policy, path: str, subject: Subject | None
) -> Decision:
    """The first of ``rules`` (their domains match) whose resources, users and groups match decides."""
    for rule in rules:
        if rule.resources and not any(resource.search(path) for resource in rule.resources):
            continue
        if rule.has_subject:
            if subject is None:
                # Who is asking decides whether this rule applies: sign in first, never fall through.
                return Decision.SIGN_IN
            if subject.username not in rule.users and rule.groups.isdisjoint(subject.groups):
                continue
        return _outcome(rule.policy, subject)
    return _outcome(default_policy, subject)
