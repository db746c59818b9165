"""TrustedProxies: which peers and which forwarding headers are believed, and how a client address is chosen.

Sans-IO: ``apply`` takes a WSGI environ, so each rule is checked on a dictionary. The live behaviour behind a real
nginx is in tests/interop/test_nginx.py.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.proxy import TrustedProxies, parse_forwarded_element

NGINX = "10.0.0.10"  # our proxy
CLIENT = "203.0.113.7"
SPOOF = "6.6.6.6"


def environ(peer: str = NGINX, **headers: str) -> dict[str, Any]:
    """A minimal environ from ``peer`` with ``headers`` given as environ keys (``HTTP_X_FORWARDED_FOR=...``)."""
    return {
        "REMOTE_ADDR": peer,
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "site.example",
        "wsgi.url_scheme": "http",
        **headers,
    }


def seen(proxies: TrustedProxies, env: dict[str, Any]) -> tuple[str, str, str]:
    """What the application would see after the proxy headers were applied: address, scheme, host."""
    proxies.apply(env)
    return env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]


UNCHANGED = (NGINX, "http", "site.example")

# -- choosing the family --------------------------------------------------------------------------------------------


def test_the_default_family_is_x_forwarded() -> None:
    assert TrustedProxies([NGINX]).headers == "x-forwarded"


@pytest.mark.parametrize("family", ["", "X-Forwarded", "x_forwarded", "both", "forwarded-for"])
def test_an_unknown_family_is_a_clear_value_error(family: str) -> None:
    with pytest.raises(ValueError, match=r"^--proxy-headers: .* is not one of x-forwarded, forwarded"):
        TrustedProxies([NGINX], family)


def test_x_forwarded_family_reads_for_and_proto() -> None:
    env = environ(HTTP_X_FORWARDED_FOR=CLIENT, HTTP_X_FORWARDED_PROTO="https")
    assert seen(TrustedProxies([NGINX]), env) == (CLIENT, "https", "site.example")
    assert env["REMOTE_PORT"] == ""


def test_x_forwarded_family_ignores_forwarded_even_from_a_trusted_proxy() -> None:
    # The headline bug: nginx appends to X-Forwarded-For but passed a client's Forwarded on untouched.
    env = environ(
        HTTP_FORWARDED=f"for={SPOOF};proto=https;host=evil.example",
        HTTP_X_FORWARDED_FOR=CLIENT,
        HTTP_X_FORWARDED_PROTO="http",
    )
    assert seen(TrustedProxies([NGINX]), env) == (CLIENT, "http", "site.example")
    assert seen(TrustedProxies([NGINX]), environ(HTTP_FORWARDED=f"for={SPOOF};proto=https")) == UNCHANGED


def test_forwarded_family_reads_for_and_proto() -> None:
    env = environ(HTTP_FORWARDED=f'for="{CLIENT}:4711";proto=https')
    assert seen(TrustedProxies([NGINX], "forwarded"), env) == (CLIENT, "https", "site.example")
    assert env["REMOTE_PORT"] == ""
    env = environ(HTTP_FORWARDED='For="[2001:db8::7]:4711";Proto=HTTPS')
    assert seen(TrustedProxies([NGINX], "forwarded"), env) == ("2001:db8::7", "https", "site.example")


def test_forwarded_family_ignores_x_forwarded_even_from_a_trusted_proxy() -> None:
    env = environ(HTTP_FORWARDED=f"for={CLIENT};proto=http", HTTP_X_FORWARDED_FOR=SPOOF, HTTP_X_FORWARDED_PROTO="https")
    assert seen(TrustedProxies([NGINX], "forwarded"), env) == (CLIENT, "http", "site.example")
    env = environ(HTTP_X_FORWARDED_FOR=SPOOF, HTTP_X_FORWARDED_PROTO="https")
    assert seen(TrustedProxies([NGINX], "forwarded"), env) == UNCHANGED


@pytest.mark.parametrize("family", ["x-forwarded", "forwarded"])
def test_x_forwarded_host_is_never_read(family: str) -> None:
    # One value with no chain, passed on by nginx from the client unless cleared: the proxy sets Host instead.
    env = environ(HTTP_FORWARDED=f"for={CLIENT}", HTTP_X_FORWARDED_FOR=CLIENT, HTTP_X_FORWARDED_HOST="evil.example")
    assert seen(TrustedProxies([NGINX], family), env)[2] == "site.example"


def test_forwarded_host_comes_from_the_chosen_element_only() -> None:
    proxies = TrustedProxies([NGINX], "forwarded")
    header = f"for={SPOOF};host=evil.example, for={CLIENT};proto=https;host=public.example:8443"
    assert seen(proxies, environ(HTTP_FORWARDED=header)) == (CLIENT, "https", "public.example:8443")
    # The proxy's element names no host: the client's, to its left, is not reached.
    header = f"for={SPOOF};host=evil.example, for={CLIENT}"
    assert seen(proxies, environ(HTTP_FORWARDED=header))[2] == "site.example"
    # Something that is not a host is ignored.
    for junk in ('"a b"', "evil/x", "evil@x", '"a\\"b"', "é.example", '""', '"x:65536"'):
        assert seen(proxies, environ(HTTP_FORWARDED=f"for={CLIENT};host={junk}"))[2] == "site.example", junk
    # The x-forwarded family never reads host=, even in a Forwarded header from a trusted proxy.
    assert seen(TrustedProxies([NGINX]), environ(HTTP_FORWARDED=f"for={CLIENT};host=evil.example")) == UNCHANGED


@pytest.mark.parametrize("family", ["x-forwarded", "forwarded"])
def test_nothing_is_believed_from_a_peer_that_is_not_listed(family: str) -> None:
    env = environ(
        peer="192.0.2.1",
        HTTP_FORWARDED=f"for={SPOOF};proto=https",
        HTTP_X_FORWARDED_FOR=SPOOF,
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert seen(TrustedProxies(["10.0.0.0/8", "unix"], family), env) == ("192.0.2.1", "http", "site.example")


def test_a_unix_socket_peer_is_trusted_only_with_unix() -> None:
    headers = {"HTTP_X_FORWARDED_FOR": CLIENT, "HTTP_X_FORWARDED_PROTO": "https"}
    assert seen(TrustedProxies(["unix"]), environ(peer="", **headers))[:2] == (CLIENT, "https")
    assert seen(TrustedProxies(["127.0.0.1"]), environ(peer="", **headers))[:2] == ("", "http")


# -- the client address: rightmost entry that is not a trusted proxy -----------------------------------------------


def test_what_nginx_sends_for_a_spoofing_client() -> None:
    # Measured: for a client at CLIENT sending two X-Forwarded-For lines and two "X-Forwarded-Proto: https" lines,
    # nginx ($proxy_add_x_forwarded_for, proxy_set_header X-Forwarded-Proto $scheme) sends exactly these two.
    env = environ(HTTP_X_FORWARDED_FOR=f"{SPOOF}, 7.7.7.7, {CLIENT}", HTTP_X_FORWARDED_PROTO="http")
    assert seen(TrustedProxies([NGINX]), env) == (CLIENT, "http", "site.example")


def test_trusted_hops_are_skipped_from_the_right() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    env = environ(HTTP_X_FORWARDED_FOR=f"{SPOOF}, {CLIENT}, 10.1.1.1, 10.2.2.2")
    assert seen(proxies, env)[0] == CLIENT
    # Every hop a proxy of ours: the client is one of them, and the leftmost names it.
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR="10.9.9.9, 10.1.1.1"))[0] == "10.9.9.9"


def test_hops_with_ports_and_brackets_name_their_address() -> None:
    proxies = TrustedProxies([NGINX])
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR=f"{CLIENT}:4711"))[0] == CLIENT
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR="[2001:db8::7]:4711"))[0] == "2001:db8::7"
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR="2001:DB8:0::7"))[0] == "2001:db8::7"


@pytest.mark.parametrize(
    "chain", ["unknown", "_hidden", "", " , ", "not-an-ip", "1.2.3.4.5", "[::1", "[::1]x", "x" * 10_000]
)
def test_a_hop_that_is_not_an_address_names_no_client(chain: str) -> None:
    # The junk is the rightmost untrusted entry, so it is the client; it names nobody, and REMOTE_ADDR stays.
    assert seen(TrustedProxies([NGINX]), environ(HTTP_X_FORWARDED_FOR=chain))[0] == NGINX


@pytest.mark.parametrize("char", ["\xa0", "\x85"])
def test_values_are_trimmed_of_spaces_and_tabs_only(char: str) -> None:
    # NBSP and NEL are field content to HTTP (only spaces and tabs surround a value): a value carrying one is
    # junk, never trimmed into an address or a scheme.
    proxies = TrustedProxies([NGINX])
    assert (
        seen(proxies, environ(HTTP_X_FORWARDED_FOR=f"{CLIENT}{char}", HTTP_X_FORWARDED_PROTO=f"https{char}"))
        == UNCHANGED
    )
    forwarded = TrustedProxies([NGINX], "forwarded")
    assert seen(forwarded, environ(HTTP_FORWARDED=f"for={CLIENT}{char};proto=https{char}")) == UNCHANGED
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR=f" {CLIENT}\t", HTTP_X_FORWARDED_PROTO="\thttps ")) == (
        CLIENT, "https", "site.example")  # fmt: skip


def test_an_empty_hop_is_not_mistaken_for_a_unix_socket_proxy() -> None:
    # "" means "a Unix-socket peer" only for the connection itself, never for an entry in a header.
    env = environ(peer="", HTTP_X_FORWARDED_FOR=f"{SPOOF}, , {CLIENT}, ")
    assert seen(TrustedProxies(["unix"]), env)[0] == ""
    env = environ(peer="", HTTP_FORWARDED=f'for={SPOOF}, for="_hidden"')
    assert seen(TrustedProxies(["unix"], "forwarded"), env)[0] == ""


def test_the_rightmost_proto_is_the_proxys() -> None:
    proxies = TrustedProxies([NGINX])
    # A proxy that appends, or a second header line (joined with a comma): the proxy's word comes last.
    assert seen(proxies, environ(HTTP_X_FORWARDED_PROTO="https, http"))[1] == "http"
    assert seen(proxies, environ(HTTP_X_FORWARDED_PROTO="http,https"))[1] == "https"
    for junk in ("ftp", "https;x", "", ",", "javascript"):
        assert seen(proxies, environ(HTTP_X_FORWARDED_PROTO=junk))[1] == "http", junk


def test_forwarded_elements_are_chosen_from_the_right() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], "forwarded")
    header = f"for={SPOOF};proto=http, for={CLIENT};proto=https, for=10.1.1.1;proto=http"
    assert seen(proxies, environ(HTTP_FORWARDED=header))[:2] == (CLIENT, "https")
    # The proto belongs to the chosen element, not to whichever element mentions one last.
    header = f"for={CLIENT};proto=http, for=10.1.1.1;proto=https"
    assert seen(proxies, environ(HTTP_FORWARDED=header))[:2] == (CLIENT, "http")


def test_a_proxy_element_that_hides_the_client_stops_the_walk() -> None:
    # The proxy wrote "unknown" (or an obfuscated name, or no for= at all): what the client wrote to its left is
    # not reached, and the proxy's proto still counts.
    proxies = TrustedProxies([NGINX], "forwarded")
    for element in ("for=unknown;proto=https", 'for="_hidden";proto=https', "proto=https", "for=;proto=https"):
        env = environ(HTTP_FORWARDED=f"for={SPOOF};proto=http, {element}")
        assert seen(proxies, env)[:2] == (NGINX, "https"), element


def test_a_clients_unbalanced_quote_cannot_swallow_the_proxys_element() -> None:
    proxies = TrustedProxies([NGINX], "forwarded")
    env = environ(HTTP_FORWARDED=f'for="{SPOOF};proto="https, for={CLIENT};proto=http')
    assert seen(proxies, env)[:2] == (CLIENT, "http")


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ("for=192.0.2.1;proto=https", {"for": "192.0.2.1", "proto": "https"}),
        (' For = "[2001:db8::1]:80" ; PROTO=http ', {"for": "[2001:db8::1]:80", "proto": "http"}),
        ('for="a\\"b"', {"for": 'a"b'}),  # quoted-pair: \" is a quote, \\ a backslash
        ('for="a\\\\";proto=http', {"for": "a\\", "proto": "http"}),
        ('host="x;for=6.6.6.6,proto=https"', {"host": "x;for=6.6.6.6,proto=https"}),  # ; and , inside quotes
        ('for=""', {"for": ""}),
        ("for=a;;proto=b;", {"for": "a", "proto": "b"}),  # empty pairs are allowed by RFC 7239
        ("by=10.0.0.1;for=192.0.2.1;host=x", {"by": "10.0.0.1", "for": "192.0.2.1", "host": "x"}),
        # Malformed: None, so the walk stops there.
        ('for="unbalanced', None),
        ('for="a"b', None),  # text after the closing quote
        ('for=a"b"', None),  # a quote inside a bare value
        ("for", None),
        (";;==;", None),  # an empty key
        ("f r=1", None),  # a key that is not a token
        ("for=a b", None),
        ("for=1.2.3.4;for=6.6.6.6", None),  # a key given twice
        ("For=1.2.3.4;fOR=6.6.6.6", None),  # keys are case-insensitive, so this too
    ],
)
def test_parse_forwarded_element(element: str, expected: dict[str, str] | None) -> None:
    assert parse_forwarded_element(element) == expected


# -- junk and size ----------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from(["x-forwarded", "forwarded"]),
    value=st.lists(st.sampled_from([*'"\\,;=:[]_ .\t', "for", "proto", "https", "10.0.0.10", "::1"])).map("".join),
)
def test_junk_never_raises_and_never_becomes_the_address(family: str, value: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "::1"], family)
    env = environ(HTTP_FORWARDED=value, HTTP_X_FORWARDED_FOR=value, HTTP_X_FORWARDED_PROTO=value)
    address, scheme, host = seen(proxies, env)
    ipaddress.ip_address(address)  # whatever was chosen is an address, never the junk itself
    assert scheme in ("http", "https")
    assert host == "site.example"


@pytest.mark.parametrize("family", ["x-forwarded", "forwarded"])
def test_a_huge_header_costs_linear_time(family: str) -> None:
    # A 2 MB list is far beyond any header limit; it still takes well under a second (a quadratic walk, or a
    # backtracking pattern, would take minutes). Behind an appending proxy only the rightmost hops are parsed.
    # (A Forwarded this long is not read at all: see the next test.)
    proxies = TrustedProxies([NGINX], family)
    expected = CLIENT if family == "x-forwarded" else NGINX
    hops = 100_000
    for filler in ("1.1.1.1", 'for="[::1', "for=1.1.1.1;proto=https;" * 2, ","):
        header = ", ".join([filler] * hops) + (f", for={CLIENT}" if family == "forwarded" else f", {CLIENT}")
        env = environ(HTTP_FORWARDED=header, HTTP_X_FORWARDED_FOR=header)
        started = time.monotonic()
        assert seen(proxies, env)[0] == expected
        assert time.monotonic() - started < 1.0


def test_the_verdict_cache_stays_bounded() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    for i in range(10_000):
        proxies.trusts(f"192.0.{i // 256 % 256}.{i % 256}")
    assert len(proxies._cache) <= 4096
    assert proxies.trusts("10.0.0.1") and not proxies.trusts("192.0.2.1")


def test_star_trusts_everyone_and_the_leftmost_address_is_the_client() -> None:
    # Documented (docs/nginx.md): "*" believes every hop, so the client's own first entry wins. Use the proxy's
    # address instead.
    env = environ(HTTP_X_FORWARDED_FOR=f"{SPOOF}, {CLIENT}", HTTP_X_FORWARDED_PROTO="https")
    assert seen(TrustedProxies(["*"]), env)[:2] == (SPOOF, "https")


# -- audit findings: a forged Host inside Forwarded, "*" and hidden hops, IPv4-mapped addresses ----------------------

# What the client sends as Host, and so what nginx put into host="$http_host" (the recipe docs/nginx.md used to
# give): Host allows ; , and =, and nginx passes them on.
FORGED_HOSTS = [
    f"x;for={SPOOF};proto=https;a=",
    f"x,for={SPOOF};proto=https;host=evil.example;a=",
    f"x;for={SPOOF},for={SPOOF};proto=https;a=",
]


@pytest.mark.parametrize("forged", FORGED_HOSTS)
def test_a_forged_host_inside_a_quoted_host_value_changes_nothing(forged: str) -> None:
    proxies = TrustedProxies([NGINX], "forwarded")
    env = environ(HTTP_FORWARDED=f'for="{CLIENT}";proto=http;host="{forged}"')
    assert seen(proxies, env) == (CLIENT, "http", forged)  # (the Host is the client's own, as it sent it)
    # Behind a proxy that appends to what the client sent, too.
    env = environ(HTTP_FORWARDED=f'for={SPOOF};proto=https, for="{CLIENT}";proto=http;host="{forged}"')
    assert seen(proxies, env) == (CLIENT, "http", forged)


@pytest.mark.parametrize(
    "element",
    [
        f"for={CLIENT};for={SPOOF}",  # which one did the proxy write?
        f"for={CLIENT};proto=http;proto=https",
        f"for={CLIENT};proto=https;junk",
        f'for="{CLIENT}"x;proto=https',
        f'for="{CLIENT};proto=https',  # unterminated
    ],
)
def test_a_malformed_element_stops_the_walk_and_nothing_is_believed(element: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], "forwarded")
    assert seen(proxies, environ(HTTP_FORWARDED=element)) == UNCHANGED
    # Reached after a trusted hop, it still stops the walk: the address stays the connection's.
    assert seen(proxies, environ(HTTP_FORWARDED=f"{element}, for=10.1.1.1;proto=http")) == UNCHANGED


@pytest.mark.parametrize("proto", ["ftp", '"https "', "javascript", "https:", '"https\\\\"', "", '""'])
def test_forwarded_proto_is_http_or_https_only(proto: str) -> None:
    env = environ(HTTP_FORWARDED=f"for={CLIENT};proto={proto}")
    assert seen(TrustedProxies([NGINX], "forwarded"), env) == (CLIENT, "http", "site.example")


@pytest.mark.parametrize("hidden", ["unknown", '"_hidden"', "_x", '""', '"[::1"', "junk"])
def test_a_hop_without_an_address_stops_the_walk_even_under_star(hidden: str) -> None:
    # The client wrote what lies left of the proxy's "unknown": not reached, not even when every address is trusted.
    forwarded = TrustedProxies(["*"], "forwarded")
    env = environ(HTTP_FORWARDED=f"for={SPOOF};proto=https, for={hidden};proto=http")
    assert seen(forwarded, env) == UNCHANGED
    x_forwarded = TrustedProxies(["*"])
    assert seen(x_forwarded, environ(HTTP_X_FORWARDED_FOR=f"{SPOOF}, {hidden}"))[0] == NGINX


def test_ipv4_mapped_hops_are_ipv4_addresses() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    # Shown to the app in the usual dotted form.
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR=f"::ffff:{CLIENT}"))[0] == CLIENT
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR=f"[::ffff:{CLIENT}]:4711"))[0] == CLIENT
    # A mapped hop inside a listed IPv4 network is one of our proxies, and skipped.
    assert seen(proxies, environ(HTTP_X_FORWARDED_FOR=f"{CLIENT}, ::ffff:10.0.0.5"))[0] == CLIENT
    forwarded = TrustedProxies(["10.0.0.0/8"], "forwarded")
    env = environ(HTTP_FORWARDED=f'for="[::ffff:{CLIENT}]";proto=https, for="[::ffff:10.0.0.5]"')
    assert seen(forwarded, env)[:2] == (CLIENT, "https")


@pytest.mark.parametrize("entry", ["::ffff:127.0.0.1", "::ffff:127.0.0.0/104", "127.0.0.1"])
@pytest.mark.parametrize("peer", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_ipv4_mapped_allow_list_entries_and_peers_match_their_ipv4_form(entry: str, peer: str) -> None:
    proxies = TrustedProxies([entry])
    assert proxies.trusts(peer)
    assert seen(proxies, environ(peer=peer, HTTP_X_FORWARDED_FOR=CLIENT))[0] == CLIENT
    assert not proxies.trusts("127.0.0.2" if "/" not in entry else "128.0.0.1")


@pytest.mark.parametrize("family", ["forwarded", "x-forwarded"])
@pytest.mark.parametrize("zone", ["' OR 1=1;--", "eth0", "<x>"])
def test_an_ipv6_address_with_a_zone_is_no_address(family: str, zone: str) -> None:
    """ipaddress takes almost any text after "%" as a zone: "fe80::1%' OR 1=1;--" reached apps as REMOTE_ADDR,
    and a zone was ignored by the allow-list (fe80::/10 trusted "fe80::1%evil"). A zone means something on one
    host only: such a hop is no address, and stops the walk like "unknown"."""
    hop = f"fe80::1%{zone}"
    headers = (
        {"HTTP_FORWARDED": f'for="[{hop}]";proto=https'} if family == "forwarded" else {"HTTP_X_FORWARDED_FOR": hop}
    )
    proxies = TrustedProxies(["*"], family)
    assert seen(proxies, environ(**headers))[0] == NGINX
    assert not TrustedProxies(["fe80::/10"], family).trusts(hop)


def test_a_forwarded_header_beyond_its_limit_is_not_read() -> None:
    """The quote-aware scanner costs a few hundred ns a character: 20 ms for 64 KiB of quotes, per request."""
    from server.proxy import MAX_FORWARDED

    proxies = TrustedProxies([NGINX], "forwarded")
    padding = "for=unknown, " * ((MAX_FORWARDED // 13) + 1)
    env = environ(HTTP_FORWARDED=f"{padding}for={CLIENT};proto=https")
    assert seen(proxies, env) == UNCHANGED
    assert seen(proxies, environ(HTTP_FORWARDED=f"for={CLIENT};proto=https"))[:2] == (CLIENT, "https")
