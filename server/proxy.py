"""Trusting a reverse proxy's word about the client: only a listed proxy's, and only in the headers it writes.

Behind nginx, every connection comes from nginx, so REMOTE_ADDR and the scheme describe nginx, not the
visitor. Proxies pass the truth along in one of two header families:

- ``x-forwarded`` (the default, as in gunicorn and uvicorn): ``X-Forwarded-For`` and ``X-Forwarded-Proto``;
- ``forwarded``: RFC 7239's ``Forwarded: for=192.0.2.7;proto=https``.

Any client can send either family too, so three rules decide what is believed:

1. The headers are read only when the connection comes from an address listed in ``--forwarded-allow-ips``.
2. Only the family named by ``--proxy-headers`` is read; the other is ignored even from a trusted proxy. A proxy
   overwrites or appends to the headers it writes itself, but passes the other family on from the client
   untouched (nginx does, unless told to clear it), so believing both would let a client speak in the proxy's name.
3. The client address is the rightmost entry that is *not* one of our proxies: the proxy appends the address it
   saw, so everything left of that entry was written by parties we do not trust.

``X-Forwarded-Host`` is never read, as gunicorn and uvicorn do not read it by default: it is one value with no
chain, which nginx passes on from the client unless told otherwise, and the proxy can pass the client's own
``Host`` instead (nginx: ``proxy_set_header Host $http_host``). RFC 7239's ``host=`` is different: it is taken
from the same element as ``for=`` and ``proto=``, the one the trust walk proves our proxy wrote, so in the
``forwarded`` family it replaces ``HTTP_HOST`` (when it looks like a host at all).

Parsing splits and partitions strings (linear time, no regular expressions), never raises on malformed input,
and takes an address only if it parses as one: junk such as ``for="_hidden"`` or ``unknown`` names no client,
and leaves REMOTE_ADDR as it was.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from server.http import OWS

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The values of ``--proxy-headers`` and what each one reads.
HEADER_FAMILIES = ("x-forwarded", "forwarded")

# An address longer than this is not one (the longest IPv6 text with a zone id is well under it); refusing early
# keeps a huge junk entry from reaching ipaddress at all.
_MAX_ADDRESS = 64
# What a Host value may hold (RFC 3986 reg-name, IP literal and port); a host= with anything else is ignored.
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+=:[]%"
# How many verdicts `trusts` remembers; cleared when full, so memory stays bounded whatever peers appear.
_CACHE_SIZE = 4096


class TrustedProxies:
    """The peers whose forwarding headers are believed (addresses, networks, ``*`` or ``unix``), and which headers.

    ``headers`` is ``"x-forwarded"`` or ``"forwarded"`` (see the module docstring); anything else is a
    ValueError whose message names the option, for the CLI to print as one line.
    """

    def __init__(self, allowed: Iterable[str], headers: str = "x-forwarded") -> None:
        if headers not in HEADER_FAMILIES:
            raise ValueError(
                f"--proxy-headers: {headers!r} is not one of {', '.join(HEADER_FAMILIES)}"
                " (X-Forwarded-For/-Proto, or RFC 7239 Forwarded)"
            )
        self.headers = headers
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
        """Whether the connection's peer ``address`` (an IP string, or "" for a Unix-socket peer) is a proxy."""
        if not address:
            return self.unix
        return self._trusts_ip(address)

    def _trusts_ip(self, address: str) -> bool:
        """Whether ``address`` is a listed proxy's IP. "" is not: in a header it is an empty entry, not a socket."""
        if self.any:
            return True
        known = self._cache.get(address)
        if known is None:
            ip = _ip(address)
            known = ip is not None and any(ip in network for network in self.networks)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[address] = known
        return known

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme (and, from ``Forwarded``, HTTP_HOST) from a trusted
        proxy's headers of the chosen family."""
        if not self.trusts(environ.get("REMOTE_ADDR", "")):
            return
        if self.headers == "forwarded":
            header = environ.get("HTTP_FORWARDED")
            if header:
                self._apply_forwarded(environ, header)
            return
        chain = environ.get("HTTP_X_FORWARDED_FOR")
        if chain:
            _set_client(environ, self._client_from_chain(chain.split(",")))
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            # Rightmost: a proxy that appends (rather than replaces, as nginx's proxy_set_header does) puts its
            # own word last, after whatever the client sent; several header lines arrive joined by commas.
            _set_scheme(environ, proto.rpartition(",")[2])

    def _client_from_chain(self, hops: list[str]) -> str:
        """The rightmost hop that is not one of our proxies; the leftmost if all are (the client is one of them).

        Hops are parsed only as the walk reaches them: behind a proxy that appends, that is one or two, however
        long a list the client sent."""
        for hop in reversed(hops):
            address = _node_address(hop)
            if not self._trusts_ip(address):
                return address
        return _node_address(hops[0])

    def _apply_forwarded(self, environ: dict[str, Any], header: str) -> None:
        # Walk the elements from the right: the first whose ``for`` is not one of our proxies is the one our
        # outermost proxy wrote about the client, and its proto and host are what that client used. An element
        # without a usable ``for`` (missing, "unknown", obfuscated, junk) is not a proxy either: it stops the walk,
        # so a proxy that hides addresses cannot be skipped to reach what the client wrote.
        elements = header.split(",")
        chosen: dict[str, str] = {}
        for element in reversed(elements):
            chosen = parse_forwarded_element(element)
            if not self._trusts_ip(_node_address(chosen.get("for", ""))):
                break
        else:
            # Every element named a proxy of ours: the client is itself one, and the leftmost names it.
            chosen = parse_forwarded_element(elements[0])
        _set_client(environ, _node_address(chosen.get("for", "")))
        _set_scheme(environ, chosen.get("proto", ""))
        host = chosen.get("host", "")
        if host and not host.strip(_HOST_CHARS):
            environ["HTTP_HOST"] = host


def parse_forwarded_element(element: str) -> dict[str, str]:
    """``for=192.0.2.1;proto=https`` → {"for": "192.0.2.1", "proto": "https"} (keys lower-case, quotes removed).

    Splitting on ``,`` and ``;`` ignores quotes on purpose. The values read here (``for``, ``proto``) can never
    contain those characters in a well-formed header (RFC 7239 section 4), and a quote-aware split would let a
    client's unbalanced ``"`` swallow the element the proxy appends after it. A quoted value must be balanced and
    hold no further quote or backslash, else it is dropped: no valid node or scheme needs either.
    """
    pairs: dict[str, str] = {}
    for pair in element.split(";"):
        key, sep, value = pair.partition("=")
        if not sep:
            continue
        value = value.strip(OWS)
        if value.startswith('"'):
            value = value[1:-1] if len(value) >= 2 and value.endswith('"') else '"'
            if '"' in value or "\\" in value:
                continue
        pairs[key.strip(OWS).lower()] = value
    return pairs


def _node_address(node: str) -> str:
    """A hop (``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:4711``, ``2001:db8::1``) → its address text.

    Returns "" for anything that is not an IP address (``unknown``, ``_hidden``, junk), so junk is never trusted
    and never becomes REMOTE_ADDR.
    """
    node = node.strip(OWS)
    if node.startswith("["):
        node, closed, port = node[1:].partition("]")
        if not closed or (port and not port.startswith(":")):
            return ""
    elif node.count(":") == 1:
        node = node.partition(":")[0]  # IPv4 with a port; a bare IPv6 address has several colons
    ip = _ip(node)
    return str(ip) if ip is not None else ""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text or len(text) > _MAX_ADDRESS:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _set_client(environ: dict[str, Any], address: str) -> None:
    if address:
        environ["REMOTE_ADDR"] = address
        environ["REMOTE_PORT"] = ""  # the proxy's port to us says nothing about the client's


def _set_scheme(environ: dict[str, Any], proto: str) -> None:
    proto = proto.strip(OWS).lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
