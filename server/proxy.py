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
   saw, so everything left of that entry was written by parties we do not trust. An entry that names no address
   (``unknown``, an obfuscated ``_hidden``, junk, empty) stops the walk and leaves REMOTE_ADDR as it was, even
   under ``*``: nobody can tell whether it is a proxy, so what lies left of it is not believed.

``*`` trusts every *address*, so the walk runs to the leftmost entry, which the client wrote: it suits only a
server that nothing but the proxy can reach, and even then the proxy's own address is the better setting.

``X-Forwarded-Host`` is never read, as gunicorn and uvicorn do not read it by default: it is one value with no
chain, which nginx passes on from the client unless told otherwise, and the proxy can pass the client's own
``Host`` instead (nginx: ``proxy_set_header Host $http_host``). RFC 7239's ``host=`` is different: it is taken
from the same element as ``for=`` and ``proto=``, the one the trust walk proves our proxy wrote, so in the
``forwarded`` family it replaces ``HTTP_HOST`` when it passes the same check as a Host header.

``Forwarded`` is parsed as RFC 7239 writes it: ``,`` between elements and ``;`` between pairs count only outside
quoted-strings, and a quoted-string may hold ``\\"``. That matters because a proxy may copy client text into a
quoted value (nginx's ``host="$http_host"``, and a Host may hold ``;``, ``,`` and ``=``). An element that breaks
the grammar (an unterminated quote, a pair without ``=``, a key said twice) cannot be told apart from one a client
forged, so it stops the walk with nothing believed. The scanner moves with ``str.find`` from one quote or
separator to the next (linear time, no regular expression on client bytes) and never raises on malformed input.

Addresses are compared and reported in one form: an IPv4-mapped IPv6 address (``::ffff:10.0.0.5``, what a
dual-stack socket or proxy writes for an IPv4 peer) is the IPv4 address it maps, both in the headers and in the
allow-list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from server.http import OWS, valid_host
from server.wsgi import set_server_address

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The values of ``--proxy-headers`` and what each one reads.
HEADER_FAMILIES = ("x-forwarded", "forwarded")

# An address longer than this is not one (the longest IPv6 text with a zone id is well under it); refusing early
# keeps a huge junk entry from reaching ipaddress at all.
_MAX_ADDRESS = 64
# A Forwarded header longer than this is not read (nothing believed): the quote-aware scanner costs a few hundred
# ns a character in Python, 20 ms for a 64 KiB value of quotes, and a chain of proxies writes a few dozen bytes
# each.
MAX_FORWARDED = 8 * 1024
# RFC 9110 5.6.2 token characters: what a Forwarded key, and an unquoted value, are made of.
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# An unquoted value may also hold ``:``, ``[`` and ``]``: RFC 7239 wants ``for="1.2.3.4:80"`` quoted, but proxies
# write it bare, and none of the three can end a value or an element.
_BARE_VALUE_CHARS = _TOKEN_CHARS + ":[]"
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
                self.networks.append(_unmapped_network(ipaddress.ip_network(item, strict=False)))
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
        """Whether ``address`` is a listed proxy's IP. "" (no address: an unknown or junk entry) never is, not
        even under ``*``: in a header it names nobody, so it cannot vouch for what lies left of it."""
        known = self._cache.get(address)
        if known is None:
            ip = _ip(address)
            known = ip is not None and (self.any or any(ip in network for network in self.networks))
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[address] = known
        return known

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme (and, from ``Forwarded``, HTTP_HOST) from a trusted
        proxy's headers of the chosen family; then SERVER_NAME and SERVER_PORT from the new scheme and host."""
        if not self.trusts(environ.get("REMOTE_ADDR", "")):
            return
        if self.headers == "forwarded":
            header = environ.get("HTTP_FORWARDED")
            if header and len(header) <= MAX_FORWARDED:
                self._apply_forwarded(environ, header)
        else:
            self._apply_x_forwarded(environ)
        # PEP 3333's URL reconstruction must give the URL the client used: the port a Host leaves out is the
        # default of the client's scheme, and a host= replaced the Host the server name was taken from.
        set_server_address(environ)

    def client_address(self, peer: str, headers: Iterable[tuple[str, str]]) -> str:
        """The address ``apply`` would leave in REMOTE_ADDR for a request from ``peer`` with ``headers`` (lower-case
        names, as the parser gives them): for what the loop answers without an environ (static files, the redirect
        to HTTPS), so that their access-log lines name the client as the application's do."""
        if not self.trusts(peer):
            return peer
        name = "forwarded" if self.headers == "forwarded" else "x-forwarded-for"
        values = [value for key, value in headers if key == name]
        environ: dict[str, Any] = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http"}
        if values:
            # Joined as build_environ joins repeated fields, so both read the same chain.
            environ["HTTP_FORWARDED" if name == "forwarded" else "HTTP_X_FORWARDED_FOR"] = ",".join(values)
        self.apply(environ)
        return str(environ["REMOTE_ADDR"])

    def _apply_x_forwarded(self, environ: dict[str, Any]) -> None:
        chain = environ.get("HTTP_X_FORWARDED_FOR")
        if chain:
            _set_client(environ, self._client_from_chain(chain.split(",")))
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            # Rightmost: a proxy that appends (rather than replaces, as nginx's proxy_set_header does) puts its
            # own word last, after whatever the client sent; several header lines arrive joined by commas.
            _set_scheme(environ, proto.rpartition(",")[2].strip(OWS))

    def _client_from_chain(self, hops: list[str]) -> str:
        """The rightmost hop that is not one of our proxies; the leftmost if all are (the client is one of them).

        A hop that is not an address is not a proxy, so it ends the walk and names nobody (""). Hops are parsed
        only as the walk reaches them: behind a proxy that appends, that is one or two, however long a list the
        client sent."""
        for hop in reversed(hops):
            address = _node_address(hop)
            if not self._trusts_ip(address):
                return address
        return _node_address(hops[0])

    def _apply_forwarded(self, environ: dict[str, Any], header: str) -> None:
        # Walk the elements from the right: the first whose ``for`` is not one of our proxies is the one our
        # outermost proxy wrote about the client, and its proto and host are what that client used. An element
        # without a usable ``for`` (missing, "unknown", obfuscated, junk) is not a proxy either: it stops the walk,
        # so a proxy that hides addresses cannot be skipped to reach what the client wrote. A malformed element
        # stops it too, with nothing believed: its text may be a client's, spliced in through a quoted value.
        elements = split_outside_quotes(header, ",")
        if elements is None:
            return  # an unterminated quote: no element boundary after it can be trusted
        chosen: dict[str, str] | None = None
        for element in reversed(elements):
            chosen = parse_forwarded_element(element)
            if chosen is None or not self._trusts_ip(_node_address(chosen.get("for", ""))):
                break
        else:
            # Every element named a proxy of ours: the client is itself one, and the leftmost names it.
            chosen = parse_forwarded_element(elements[0])
        if chosen is None:
            return
        _set_client(environ, _node_address(chosen.get("for", "")))
        _set_scheme(environ, chosen.get("proto", ""))
        host = chosen.get("host", "")
        if is_valid_host(host):
            environ["HTTP_HOST"] = host


def split_outside_quotes(text: str, separator: str) -> list[str] | None:
    """``text`` split at each ``separator`` that is not inside a quoted-string; None if a quote is unterminated.

    Jumps with ``str.find`` from one quote or separator to the next, and remembers where the next separator is
    until the scan passes it, so every character is looked at a bounded number of times: linear time."""
    if '"' not in text:
        return text.split(separator)  # the usual header, and the quickest way through it
    parts = []
    start = position = 0
    next_separator = text.find(separator)
    while True:
        quote = text.find('"', position)
        if next_separator != -1 and (quote == -1 or next_separator < quote):
            parts.append(text[start:next_separator])
            start = position = next_separator + 1
            next_separator = text.find(separator, position)
            continue
        if quote == -1:
            parts.append(text[start:])
            return parts
        position = _closing_quote(text, quote + 1)
        if position == -1:
            return None
        if next_separator != -1 and next_separator < position:
            next_separator = text.find(separator, position)


def _closing_quote(text: str, start: int) -> int:
    """The index just past the ``"`` that ends the quoted-string whose content begins at ``start``, or -1.

    A quote preceded by an odd number of backslashes is escaped (RFC 9110 5.6.4 quoted-pair); each run of
    backslashes is counted once, so this is linear too."""
    while True:
        quote = text.find('"', start)
        if quote == -1:
            return -1
        backslashes = quote - len(text[start:quote].rstrip("\\")) - start
        if backslashes % 2 == 0:
            return quote + 1
        start = quote + 1


def parse_forwarded_element(element: str) -> dict[str, str] | None:
    """``for=192.0.2.1;proto="https"`` → {"for": "192.0.2.1", "proto": "https"}: keys lower-case, quoted-strings
    unquoted. None when the element is malformed: a pair without ``=``, a key that is not a token, a value that is
    neither a token nor one whole quoted-string, or a key given twice (which of the two would be the proxy's?).
    Empty pairs (``for=x;;proto=y``) are allowed, as RFC 7239's grammar allows them."""
    pairs = split_outside_quotes(element, ";")
    if pairs is None:
        return None
    parsed: dict[str, str] = {}
    for pair in pairs:
        if not pair.strip(OWS):
            continue
        key, sep, raw_value = pair.partition("=")
        key = key.strip(OWS).lower()
        value = _forwarded_value(raw_value.strip(OWS))
        if not sep or not key or key.strip(_TOKEN_CHARS) or value is None or key in parsed:
            return None
        parsed[key] = value
    return parsed


def _forwarded_value(value: str) -> str | None:
    """A pair's value without its quotes and escapes; None if it is neither a bare value nor a quoted-string."""
    if not value.startswith('"'):
        return None if value.strip(_BARE_VALUE_CHARS) else value
    if len(value) < 2 or _closing_quote(value, 1) != len(value):
        return None  # text after the closing quote, or no closing quote
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    # Each backslash escapes the character after it: split on "\\" pairs first so that "\\\\" keeps one.
    return "\\".join(piece.replace("\\", "") for piece in inner.split("\\\\"))


def is_valid_host(host: str) -> bool:
    """Whether ``host`` passes the check a Host header passes (server.http's rule, not a copy of it)."""
    return bool(host) and valid_host(host)


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


def _ip(text: str) -> _Address | None:
    """The address ``text`` names, an IPv4-mapped IPv6 address as the IPv4 one it maps; None if it is none."""
    if not text or len(text) > _MAX_ADDRESS:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            # A zone ("fe80::1%eth0") means something on one host only, and ipaddress takes almost any text
            # after the "%": "fe80::1%' OR 1=1;--" would reach apps as REMOTE_ADDR.
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _unmapped_network(network: _Network) -> _Network:
    """An allow-list entry inside ``::ffff:0:0/96`` as the IPv4 network it maps (``::ffff:10.0.0.0/104`` is
    ``10.0.0.0/8``), since addresses are compared in their IPv4 form."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _set_client(environ: dict[str, Any], address: str) -> None:
    if address:
        environ["REMOTE_ADDR"] = address
        environ["REMOTE_PORT"] = ""  # the proxy's port to us says nothing about the client's


def _set_scheme(environ: dict[str, Any], proto: str) -> None:
    """Believe ``proto`` if it is http or https (in any case); any other scheme is not one this server speaks."""
    proto = proto.lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
