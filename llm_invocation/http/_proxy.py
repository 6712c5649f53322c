"""Which proxy, if any, a request goes through.

An explicit proxy (the ``proxy`` setting) serves every request of its provider. Otherwise,
when ``trust_env`` is on, the environment decides exactly as httpx's ``trust_env`` does:

* ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY`` (any case; an all-lower-case variable wins
  over the others, and a set but empty lower-case one unsets the scheme) name the proxy of
  ``http://`` URLs, ``https://`` URLs and both; a value without ``://`` is an ``http://``
  proxy. Under CGI (``REQUEST_METHOD`` set) only the lower-case ``http_proxy`` counts.
* ``NO_PROXY`` is a comma-separated list: ``*`` turns every proxy off; an entry with ``://``
  is a URL pattern; an IPv4 or IPv6 address (a ``/bits`` suffix is ignored, so it names that
  address only), or ``localhost``, matches that host exactly; any other name matches the
  host and its subdomains (``example.com``), or only the subdomains when it starts with a dot
  (``.example.com``). An entry with a port matches only URLs that name that port.
* The most specific rule wins: one with a port first, then the longest host, then the
  longest scheme; among equals, the proxies (in the order http, https, all) come before the
  ``NO_PROXY`` entries, in the order written.

Only the environment is read (not the system settings some platforms also keep).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final, final

import httpx

from .._secrets import register_secret
from ..config._sections import proxy_url_problem

__all__ = [
    "PROXY_VARIABLES",
    "ProxyRules",
    "describe_proxy",
    "environment_proxies",
    "proxy_rules",
    "register_proxy_credentials",
]

PROXY_VARIABLES: Final = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``<scheme>_proxy`` variables: scheme (lower case) -> (value, variable name)."""
    found: dict[str, tuple[str, str]] = {}
    # Two passes, so that an all-lower-case variable wins whatever the order.
    for name, value in environ.items():
        lower = name.lower()
        if value and lower[-6:] == "_proxy":
            found[lower[:-6]] = (value, name)
    if "REQUEST_METHOD" in environ:
        # Under CGI, HTTP_PROXY may come from a client's "Proxy:" header: ignore it.
        found.pop("http", None)
    for name, value in environ.items():
        if name[-6:] == "_proxy":
            key = name.lower()[:-6]
            if value:
                found[key] = (value, name)
            else:
                found.pop(key, None)
    return found


def environment_proxies(environ: Mapping[str, str]) -> dict[str, tuple[str | None, str]]:
    """The proxy rules of an environment: URL pattern -> (proxy URL or None, variable).

    The patterns and URLs are those httpx's ``trust_env`` derives; None means "no proxy"
    (a ``NO_PROXY`` entry).
    """
    found = _variables(environ)
    rules: dict[str, tuple[str | None, str]] = {}
    for scheme in ("http", "https", "all"):
        if scheme in found:
            value, variable = found[scheme]
            rules[f"{scheme}://"] = (value if "://" in value else f"http://{value}", variable)
    no_proxy, variable = found.get("no", ("", "NO_PROXY"))
    for entry in (item.strip() for item in no_proxy.split(",")):
        if entry == "*":
            return {}
        if not entry:
            continue
        if "://" in entry:
            key = entry
        elif _is_ip(entry, 4):
            key = f"all://{entry}"
        elif _is_ip(entry, 6):
            key = f"all://[{entry}]"
        elif entry.lower() == "localhost":
            key = f"all://{entry}"
        else:
            key = f"all://*{entry}"
        rules[key] = (None, variable)
    return rules


def _is_ip(text: str, version: int) -> bool:
    address = text.split("/")[0]
    try:
        if version == 4:
            ipaddress.IPv4Address(address)
        else:
            ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


@final
class _Pattern:
    """A URL pattern: scheme (``all`` for any), host (``*`` prefixes for subdomains), port."""

    __slots__ = ("host", "port", "priority", "regex", "scheme")

    def __init__(self, pattern: str) -> None:
        if pattern and ":" not in pattern:
            raise ValueError("a proxy pattern must be a URL such as 'http://' or 'all://host'")
        url = httpx.URL(pattern)
        self.scheme = "" if url.scheme == "all" else url.scheme
        self.host = "" if url.host == "*" else url.host
        self.port = url.port
        host = url.host
        self.regex: re.Pattern[str] | None
        if not host or host == "*":
            self.regex = None
        elif host.startswith("*."):  # subdomains only
            self.regex = re.compile(f"^.+\\.{re.escape(host[2:])}$")
        elif host.startswith("*"):  # the domain and its subdomains
            self.regex = re.compile(f"^(.+\\.)?{re.escape(host[1:])}$")
        else:
            self.regex = re.compile(f"^{re.escape(host)}$")
        self.priority = (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))

    def matches(self, url: httpx.URL) -> bool:
        if self.scheme and self.scheme != url.scheme:
            return False
        if self.host and self.regex is not None and not self.regex.match(url.host):
            return False
        return self.port is None or self.port == url.port


@final
class ProxyRules:
    """Proxy rules in the order they are tried; `proxy_for` gives a URL's proxy."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Mapping[str, str | None]) -> None:
        """
        Raises:
            ValueError: a pattern is not a URL pattern (httpx.InvalidURL included).
        """
        parsed = [(_Pattern(pattern), proxy) for pattern, proxy in rules.items()]
        parsed.sort(key=lambda rule: rule[0].priority)  # stable: equals keep their order
        self._rules = parsed

    def proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy URL for requests to ``url``, or None to connect directly."""
        for pattern, proxy in self._rules:
            if pattern.matches(url):
                return proxy
        return None

    def __bool__(self) -> bool:
        return any(proxy is not None for _, proxy in self._rules)


def _proxy_problem(url: str) -> str | None:
    problem = proxy_url_problem(url)
    if problem is None:
        try:
            httpx.Proxy(url)
        except (ValueError, httpx.InvalidURL):
            problem = "is not a valid proxy URL (expected http://host:port, credentials optional)"
    return problem


def proxy_rules(
    *, proxy: str | None, trust_env: bool, environ: Mapping[str, str]
) -> tuple[ProxyRules, list[tuple[str, str]]]:
    """The rules for one provider, and the problems found: (variable or "proxy", message).

    An explicit ``proxy`` serves every URL; otherwise the environment's rules apply when
    ``trust_env``. A rule whose proxy URL or pattern is invalid is left out and reported.
    """
    if proxy is not None:
        problem = _proxy_problem(proxy)
        if problem is not None:
            return ProxyRules({}), [("proxy", problem)]
        register_proxy_credentials(proxy)
        return ProxyRules({"all://": proxy}), []
    if not trust_env:
        return ProxyRules({}), []
    rules: dict[str, str | None] = {}
    problems: list[tuple[str, str]] = []
    for pattern, (url, variable) in environment_proxies(environ).items():
        if url is not None:
            problem = _proxy_problem(url)
            if problem is not None:
                problems.append((variable, problem))
                continue
            register_proxy_credentials(url)
        try:
            _Pattern(pattern)
        except (ValueError, httpx.InvalidURL):
            problems.append((variable, "has an entry that is not a host name or a URL pattern"))
            continue
        rules[pattern] = url
    return ProxyRules(rules), problems


def register_proxy_credentials(url: str) -> None:
    """Make the user name and password of a proxy URL secrets: masked in every message."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return
    for part in (parsed.username, parsed.password):
        if part:
            register_secret(part)


def describe_proxy(url: str) -> str:
    """``scheme://host:port`` of a proxy URL: never its credentials."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}:{port}"
