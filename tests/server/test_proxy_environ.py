"""Behind a trusted proxy, the environ an application gets describes the client's request as the client made it.

Live: a server on 127.0.0.1 that trusts 127.0.0.1, so the test plays the proxy. PEP 3333's URL reconstruction
(``wsgiref.util.request_uri``, which frameworks follow) must give back the URL the client used, so SERVER_NAME
and SERVER_PORT have to follow the scheme and host the proxy reports, not the ones of the hop from the proxy.
"""

from __future__ import annotations

import json
from wsgiref.util import request_uri

import pytest
import requests

from tests.support import TIMEOUT, ServerThread


def url_app(environ, start_response):
    body = json.dumps(
        {
            "url": request_uri(environ),
            "name": environ["SERVER_NAME"],
            "port": environ["SERVER_PORT"],
            "remote": environ["REMOTE_ADDR"],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def seen(server: ServerThread, host: str, **headers: str) -> dict[str, str]:
    response = requests.get(f"{server.url}/p?q=1", headers={"Host": host, **headers}, timeout=TIMEOUT)
    return response.json()


@pytest.mark.parametrize(
    ("host", "proto", "url", "port"),
    [
        ("site.example", "https", "https://site.example/p?q=1", "443"),
        ("site.example", "http", "http://site.example/p?q=1", "80"),
        ("site.example:8443", "https", "https://site.example:8443/p?q=1", "8443"),
        ("[2001:db8::1]", "https", "https://[2001:db8::1]/p?q=1", "443"),
    ],
)
def test_x_forwarded_proto_sets_the_default_port_of_the_clients_scheme(
    host: str, proto: str, url: str, port: str
) -> None:
    with ServerThread(url_app, forwarded_allow_ips=("127.0.0.1",)) as server:
        answer = seen(server, host, **{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": proto})
    assert (answer["url"], answer["port"]) == (url, port)
    assert answer["remote"] == "203.0.113.7"


def test_a_forwarded_host_sets_server_name_and_port_too() -> None:
    with ServerThread(url_app, forwarded_allow_ips=("127.0.0.1",), proxy_headers="forwarded") as server:
        answer = seen(server, "internal:8000", Forwarded='for=203.0.113.7;proto=https;host="public.example:8443"')
        assert answer == {
            "url": "https://public.example:8443/p?q=1",
            "name": "public.example",
            "port": "8443",
            "remote": "203.0.113.7",
        }
        answer = seen(server, "internal:8000", Forwarded="for=203.0.113.7;proto=https;host=public.example")
        assert (answer["url"], answer["name"], answer["port"]) == (
            "https://public.example/p?q=1",
            "public.example",
            "443",
        )


def test_without_a_trusted_proxy_the_connection_decides() -> None:
    with ServerThread(url_app) as server:
        answer = seen(server, "site.example", **{"X-Forwarded-Proto": "https"})
    assert (answer["url"], answer["port"]) == ("http://site.example/p?q=1", "80")
