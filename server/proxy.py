"""Trusting a reverse proxy's word about the client, and only a listed proxy's.

Behind nginx, every connection comes from nginx, so REMOTE_ADDR and the scheme describe nginx, not the
visitor. Proxies pass the truth along in ``X-Forwarded-For`` / ``X-Forwarded-Proto`` or RFC 7239's
``Forwarded``; but any client can send those headers too. So they are applied only when the connection comes
from an address listed in ``--forwarded-allow-ips``, and the client address is taken as the rightmost entry
that is *not* one of our proxies: everything left of it was written by parties we do not trust.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The set of peers whose forwarding headers are believed: addresses, networks, ``*`` or ``unix``."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = [a.strip() for a in allowed if a.strip()]
        self.any = "*" in allowed
        self.unix = "unix" in allowed or self.any
        self.networks: list[_Network] = []
        for item in allowed:
            if item in ("*", "unix"):
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"--forwarded-allow-ips: {item!r} is not an IP address or network") from None
        self.enabled = bool(allowed)
        self._cache: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (an IP string, or "" for a Unix-socket peer) is one of our proxies."""
        if not address:
            return self.unix
        if self.any:
            return True
        known = self._cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self.networks)
            if len(self._cache) < 4096:
                self._cache[address] = known
        return known

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme (and HTTP_HOST) from a trusted proxy's headers."""
        if not self.trusts(environ.get("REMOTE_ADDR", "")):
            return
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is not None:
            self._apply_forwarded(environ, forwarded)
            return
        chain = environ.get("HTTP_X_FORWARDED_FOR")
        if chain:
            client = self._client_from_chain([part.strip() for part in chain.split(",")])
            if client:
                environ["REMOTE_ADDR"] = client
                environ["REMOTE_PORT"] = ""
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            proto = proto.split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto

    def _client_from_chain(self, chain: list[str]) -> str | None:
        for hop in reversed(chain):
            if not self.trusts(hop):
                return hop
        return chain[0] if chain else None

    def _apply_forwarded(self, environ: dict[str, Any], header: str) -> None:
        elements = [parse_forwarded_element(e) for e in header.split(",")]
        chosen: dict[str, str] | None = None
        for element in reversed(elements):
            chosen = element
            if not self.trusts(_strip_node(element.get("for", ""))):
                break
        if chosen is None:
            return
        client = _strip_node(chosen.get("for", ""))
        if client:
            environ["REMOTE_ADDR"] = client
            environ["REMOTE_PORT"] = ""
        proto = chosen.get("proto", "").lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
        host = chosen.get("host")
        if host:
            environ["HTTP_HOST"] = host


def parse_forwarded_element(element: str) -> dict[str, str]:
    """``for=192.0.2.1;proto=https`` → {"for": "192.0.2.1", "proto": "https"} (quotes removed, keys lower-case)."""
    pairs: dict[str, str] = {}
    for pair in element.split(";"):
        key, sep, value = pair.strip().partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        pairs[key.strip().lower()] = value
    return pairs


def _strip_node(node: str) -> str:
    """An RFC 7239 node (``"[2001:db8::1]:4711"``, ``192.0.2.1:80``, ``unknown``) → its address, or ""."""
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else ""
    if node.count(":") == 1:
        node = node.split(":", 1)[0]
    if node.lower() == "unknown" or node.startswith("_"):
        return ""
    return node
