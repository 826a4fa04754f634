"""Where a browser may go after signing in: the ``next`` of the login page (docs/api.md "Several domains").

Pure: the allowed hosts are data, built once at start-up from the origin, ``cookie_domain`` and the domains of
the access rules.

* A path on twostep's own origin (``/settings``), never ``//host`` or ``/\\host`` (no open redirect).
* Without ``cookie_domain``: an absolute URL on the origin itself.
* With ``cookie_domain``: an absolute ``https://`` URL (or ``http://`` when the origin is http) whose host is
  that domain, one of its subdomains, or a domain of an access rule.

Anything else falls back to the default page.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from twostep.core.access import DomainPattern, request_host

# A next URL longer than this falls back to the default page (the login URL carries it percent-encoded).
MAX_NEXT: Final = 2048


def _printable(value: str) -> bool:
    # Browsers drop tabs and newlines ("/\t/evil" is "//evil"); a backslash is a slash to them.
    return not any(ord(c) < 33 or ord(c) == 127 or c == "\\" for c in value)


@dataclass(frozen=True, slots=True)
class NextHosts:
    """The hosts a ``next`` URL may lead to besides twostep's own pages."""

    origin: str = ""  # scheme://host[:port], as config canonicalises TWOSTEP_ORIGIN
    cookie_domain: str | None = None
    domains: tuple[DomainPattern, ...] = ()

    @property
    def _schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.origin.startswith("http://") else ("https",)

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (as ``request_host`` gives it) is the cookie domain, under it, or a rule's."""
        if self.cookie_domain is None:
            return False
        if host == self.cookie_domain or host.endswith("." + self.cookie_domain):
            return True
        return any(pattern.matches(host) for pattern in self.domains)

    def safe(self, value: str | None, default: str) -> str:
        """``value`` when a browser may be sent there after signing in, else ``default``. Raises: nothing."""
        if not value or len(value) > MAX_NEXT or not _printable(value):
            return default
        if value.startswith("/"):
            return default if value.startswith("//") else value
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            return default
        if not port_ok or not parts.netloc or "@" in parts.netloc:
            return default
        scheme = parts.scheme.lower()
        if f"{scheme}://{parts.netloc.lower()}" == self.origin:
            return value
        if scheme not in self._schemes:
            return default
        host = request_host(parts.netloc)
        return value if host is not None and self.allows_host(host) else default

    def form_action_sources(self) -> tuple[str, ...]:
        """CSP ``form-action`` sources besides ``'self'``: Chromium applies the directive to the redirect that
        follows a form post, so the return to another subdomain must be listed (any port)."""
        if self.cookie_domain is None:
            return ()
        sources: list[str] = []
        for scheme in self._schemes:
            sources += [f"{scheme}://{self.cookie_domain}:*", f"{scheme}://*.{self.cookie_domain}:*"]
            for pattern in self.domains:
                if pattern.wildcard:
                    sources.append(f"{scheme}://*.{pattern.host}:*")
                elif _is_ipv6(pattern.host):
                    sources.append(f"{scheme}://[{pattern.host}]:*")
                else:
                    sources.append(f"{scheme}://{pattern.host}:*")
        return tuple(dict.fromkeys(sources))


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
