"""Properties of the RFC 7239 ``Forwarded`` parser (``server.proxy``): quoting protects, junk is never believed.

A proxy writes ``Forwarded`` itself but may copy client text into a quoted value (nginx's ``host="$http_host"``).
Whatever the client's text, as long as it is quoted the way RFC 7239 says, it must stay one value: it cannot end
the element, add a pair, or add an element. And no input at all may raise, take long, or make a non-address the
client's address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from server.proxy import TrustedProxies, is_valid_host, parse_forwarded_element, split_outside_quotes

NGINX = "10.0.0.10"
CLIENT = "203.0.113.7"

# The characters a Host header may hold (server/http.py's rule): ; , and = among them.
HOST_ALPHABET = "abcxyzABC0189-._~!$&'()*+,;=%:[]"
hosts = st.text(alphabet=HOST_ALPHABET, max_size=40)
# Values with everything that matters to the grammar: separators, quotes, backslashes, spaces.
values = st.lists(st.sampled_from([*'",;=\\ \t:[]_', "a", "for", "6.6.6.6", "https", "é"]), max_size=12).map("".join)
keys = st.sampled_from(["for", "by", "proto", "host", "x-key", "ext"])
# Arbitrary header text: the grammar's characters and words, in any order.
junk = st.lists(st.sampled_from([*'"\\,;=:[]_ \t', "for", "proto", "host", "https", "10.0.0.10", "::1"])).map("".join)


def quoted(value: str) -> str:
    """``value`` as an RFC 7239 quoted-string: a backslash before each quote and backslash."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def environ(header: str) -> dict[str, Any]:
    return {"REMOTE_ADDR": NGINX, "HTTP_HOST": "site.example", "wsgi.url_scheme": "http", "HTTP_FORWARDED": header}


@given(st.lists(st.dictionaries(keys, values, min_size=1, max_size=4), min_size=1, max_size=4))
def test_quoted_values_round_trip_whatever_they_hold(elements: list[dict[str, str]]) -> None:
    header = ", ".join(";".join(f"{key}={quoted(value)}" for key, value in element.items()) for element in elements)
    parts = split_outside_quotes(header, ",")
    assert parts is not None
    assert [parse_forwarded_element(part) for part in parts] == elements


@given(host=hosts, spoof=junk)
@example(host="x;for=6.6.6.6;proto=https;a=", spoof="")
@example(host="x,for=6.6.6.6;proto=https;host=evil.example;a=", spoof="for=6.6.6.6;proto=https")
def test_a_host_copied_into_a_quoted_value_cannot_forge_the_client(host: str, spoof: str) -> None:
    # What nginx writes with host="$http_host" (no escaping: a Host holds no quote or backslash), after whatever
    # Forwarded the client sent, as an appending proxy would.
    header = (
        f'{spoof}, for="{CLIENT}";proto=http;host="{host}"' if spoof else f'for="{CLIENT}";proto=http;host="{host}"'
    )
    env = environ(header)
    TrustedProxies([NGINX], "forwarded").apply(env)
    if split_outside_quotes(spoof, ",") is None:
        # The client left a quote open: no element boundary after it can be told, so nothing is believed.
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["HTTP_HOST"]) == (NGINX, "http", "site.example")
        return
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (CLIENT, "http")
    assert env["HTTP_HOST"] == (host if is_valid_host(host) else "site.example")


@given(text=junk, separator=st.sampled_from([",", ";"]))
def test_splitting_loses_no_character(text: str, separator: str) -> None:
    parts = split_outside_quotes(text, separator)
    if parts is None:
        assert '"' in text  # only a quote can leave a quoted-string open
    else:
        assert separator.join(parts) == text


@given(text=junk, trusted=st.sampled_from([["10.0.0.0/8"], ["*"], ["10.0.0.10", "::1"]]))
def test_junk_never_raises_and_only_an_address_is_believed(text: str, trusted: list[str]) -> None:
    env = environ(text)
    TrustedProxies(trusted, "forwarded").apply(env)
    ipaddress.ip_address(env["REMOTE_ADDR"])
    assert env["wsgi.url_scheme"] in ("http", "https")
    assert is_valid_host(env["HTTP_HOST"])
    assert env["SERVER_PORT"].isdigit()
