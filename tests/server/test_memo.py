"""Bounded memos (server/memo.py) and the parser's and the environ's use of them: whatever clients send, a memo
keeps no long key and never stays full of what came first."""

from __future__ import annotations

import pytest

from server import http, memo, wsgi
from server.http import RequestParser
from server.memo import KEY_LIMIT, SIZE, remember


@pytest.fixture
def fresh_memos():
    """Empty the process's memos for one test, and give their contents back after it."""
    memos = [http._QUICK_NAMES, http._QUICK_HOSTS, http._FIELD_NAMES, wsgi._ENVIRON_KEYS, wsgi._HTTP_ADDRESSES,
             wsgi._HTTPS_ADDRESSES]  # fmt: skip
    saved = [dict(m) for m in memos]
    for m in memos:
        m.clear()
    yield
    for m, contents in zip(memos, saved, strict=True):
        m.clear()
        m.update(contents)


def test_a_short_key_is_kept_and_a_long_one_is_not():
    kept: dict[str, int] = {}
    remember(kept, "a" * KEY_LIMIT, 1)
    remember(kept, "b" * (KEY_LIMIT + 1), 2)
    assert kept == {"a" * KEY_LIMIT: 1}


def test_a_full_memo_starts_over_with_the_new_key():
    kept = {f"junk{n}": n for n in range(SIZE)}
    remember(kept, "host", 7)
    assert kept == {"host": 7}


def parse_whole(head: bytes) -> http.Request:
    request = RequestParser().whole_request(head)
    assert request is not None, "the quick path declined"
    return request


def parse_careful(head: bytes) -> http.Request:
    parser = RequestParser()
    parser.feed(head)
    request = parser.next_event()
    assert isinstance(request, http.Request)
    return request


def test_long_names_and_hosts_are_checked_but_never_kept(fresh_memos):
    # Before the memos were bounded by key length, a thousand such requests (all answered 200) held ~190 MiB.
    name = "X-" + "n" * 10_000
    host = "h" * 10_000
    request = parse_whole(f"GET / HTTP/1.1\r\nHost: {host}\r\n{name}: 1\r\n\r\n".encode())
    assert request.host == host and (name.lower(), "1") in request.headers
    # The careful path too (a tab in a value sends a head there), and the environ key made for the name.
    request = parse_careful(f"GET / HTTP/1.1\r\nHost: h\r\n{name}: 1\t2\r\n\r\n".encode())
    assert (name.lower(), "1\t2") in request.headers
    assert wsgi._environ_key(name.lower()) == "HTTP_" + name.upper().replace("-", "_")
    for kept in (http._QUICK_NAMES, http._QUICK_HOSTS, http._FIELD_NAMES, wsgi._ENVIRON_KEYS):
        assert all(len(key) <= KEY_LIMIT for key in kept), "a long key was kept"


def test_names_sent_first_cannot_keep_the_usual_ones_out(fresh_memos):
    # A client that fills the memo with junk only makes it start over: the usual names get in again.
    for batch in range(SIZE // 50 + 1):
        junk = "".join(f"X-{batch}-{n}: 1\r\n" for n in range(50))
        parse_whole(f"GET / HTTP/1.1\r\nHost: h{batch}\r\n{junk}\r\n".encode())
    parse_whole(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n")
    assert http._QUICK_NAMES.get("User-Agent") == "user-agent"
    assert "example.com" in http._QUICK_HOSTS
    assert len(http._QUICK_NAMES) <= memo.SIZE and len(http._QUICK_HOSTS) <= memo.SIZE


def test_the_environ_keys_pep_3333_names_survive_a_start_over(fresh_memos):
    for n in range(SIZE + 10):  # more names than the memo holds: it starts over at least once
        wsgi._environ_key(f"x-{n}")
    assert wsgi._environ_key("content-type") == "CONTENT_TYPE"
    assert wsgi._environ_key("content-length") == "CONTENT_LENGTH"
    assert wsgi._environ_key("x_forwarded_for") is None  # an underscore twin of a dashed name never gets in


def test_server_name_and_port_are_remembered_per_scheme_and_never_for_a_long_host(fresh_memos, tmp_path):
    """SERVER_NAME and SERVER_PORT come from a memo of Hosts: the same Host is port 443 on an HTTPS connection and
    80 on a plain one, and a long Host is answered right but not kept."""
    from server.tls import CertificateStore, TLSFiles
    from tests.support import ServerThread, read_response
    from tests.tls_certs import make_certificates

    def app(environ, start_response):
        body = f"{environ['SERVER_NAME']} {environ['SERVER_PORT']}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    certs = make_certificates(tmp_path)
    long_host = "h" * (KEY_LIMIT + 1)
    tls = CertificateStore(TLSFiles(str(certs.cert), str(certs.key)))
    with (
        ServerThread(app, certificates=tls) as server,
        certs.client_context().wrap_socket(server.connect(), server_hostname="localhost") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert read_response(sock)[2] == b"example.com 443"
    with ServerThread(app) as server, server.connect() as sock:
        buffer = bytearray()
        cases = [("http://example.com/", b"example.com 80")]
        cases += [(f"http://{long_host}:81/", f"{long_host} 81".encode())] * 2
        for target, expected in cases:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert read_response(sock, buffer)[2] == expected
    assert wsgi._HTTPS_ADDRESSES == {"example.com": ("example.com", "443")}
    assert wsgi._HTTP_ADDRESSES == {"example.com": ("example.com", "80")}
