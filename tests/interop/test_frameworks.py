"""Flask, Django and Bottle apps served in-process by our server, driven by ``requests`` and raw sockets.

Every test runs once per framework (the ``live`` fixture) and checks what a user of that framework would see
under gunicorn: the same routes, the same answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.interop.common import (
    DOWNLOAD_SIZE,
    GATES,
    SERVER_HEADER,
    STREAMS_CLOSED,
    custom_headers,
    download_file,
    json_answer,
    stream_chunks,
)
from tests.interop.conftest import Live, load_app
from tests.support import TIMEOUT, ServerThread, read_response, wait_for

pytestmark = pytest.mark.timeout(60)

SMALL = b"small file\n\x00\xff binary too\n"
LARGE = random.Random(7).randbytes(3 * 1024 * 1024 + 123)  # a few MiB, not a multiple of any buffer size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_plain_get(live: Live) -> None:
    response = requests.get(f"{live.url}/hello", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == f"Hello from {live.framework.capitalize()}!"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Length"] == str(len(response.content))
    assert "Date" in response.headers


def test_query_string_with_repeated_keys_and_utf8(live: Live) -> None:
    query = "tag=a&tag=b&tag=c&name=%C3%A9l%C3%A8ve+%E2%9C%93&empty=&plus=a+b%20c&amp=%26%3D"
    response = requests.get(f"{live.url}/query?{query}", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {
        "args": {
            "tag": ["a", "b", "c"],
            "name": ["élève ✓"],
            "empty": [""],
            "plus": ["a b c"],
            "amp": ["&="],
        }
    }


def test_percent_encoded_utf8_in_the_path(live: Live) -> None:
    # PEP 3333: PATH_INFO arrives decoded as latin-1; each framework turns it back into UTF-8 text.
    response = requests.get(f"{live.url}/greet/%C3%A9t%C3%A9%20%E2%98%80", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"name": "été ☀"}


def test_urlencoded_form_post(live: Live) -> None:
    form = [("colour", "red"), ("colour", "green"), ("note", "crème brûlée & co = 1+1")]
    response = requests.post(f"{live.url}/form", data=form, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"form": {"colour": ["red", "green"], "note": ["crème brûlée & co = 1+1"]}}


def test_json_body_in_and_out(live: Live) -> None:
    body = {"numbers": [1, 2, 3.5, -4], "text": "grüße", "nested": {"ok": True, "none": None}}
    response = requests.post(f"{live.url}/json", json=body, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == json_answer(body)


def test_multipart_upload_small_and_large_files(live: Live) -> None:
    files = {
        "small": ("notes.txt", SMALL, "text/plain"),
        "large": ("big.bin", LARGE, "application/octet-stream"),
    }
    response = requests.post(f"{live.url}/upload", data={"caption": "deux fichiers"}, files=files, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {
        "fields": {"caption": ["deux fichiers"]},
        "files": {
            "small": {"filename": "notes.txt", "size": len(SMALL), "sha256": sha256(SMALL)},
            "large": {"filename": "big.bin", "size": len(LARGE), "sha256": sha256(LARGE)},
        },
    }


def test_cookies_are_set_and_sent_back(live: Live) -> None:
    with requests.Session() as session:
        response = session.get(f"{live.url}/cookies/set", timeout=TIMEOUT)
        assert response.status_code == 200
        # Two Set-Cookie headers in one response must both survive.
        assert {"flavour": "oatmeal", "count": "1"}.items() <= session.cookies.get_dict().items()
        assert "httponly" in response.headers["Set-Cookie"].lower()
        echoed = session.get(f"{live.url}/cookies", timeout=TIMEOUT)
        assert echoed.json() == {"cookies": {"flavour": "oatmeal", "count": "1"}}
    # Several cookies in one Cookie header, as browsers send them.
    response = requests.get(f"{live.url}/cookies", headers={"Cookie": "a=1; b=two"}, timeout=TIMEOUT)
    assert response.json() == {"cookies": {"a": "1", "b": "two"}}


def test_redirect_is_followed(live: Live) -> None:
    first = requests.get(f"{live.url}/redirect", allow_redirects=False, timeout=TIMEOUT)
    assert first.status_code == 302
    # Relative (Flask, Django) or absolute (Bottle): either way it must resolve to this server's /query.
    assert urljoin(first.url, first.headers["Location"]) == f"{live.url}/query?from=redirect"
    followed = requests.get(f"{live.url}/redirect", timeout=TIMEOUT)
    assert [r.status_code for r in followed.history] == [302]
    assert followed.status_code == 200
    assert followed.url == f"{live.url}/query?from=redirect"
    assert followed.json() == {"args": {"from": ["redirect"]}}


def test_streaming_response_arrives_complete_and_in_order(live: Live) -> None:
    count = 5000
    with requests.get(f"{live.url}/stream?n={count}", stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        # A generator has no known length: HTTP/1.1 must frame it with chunked coding, not buffer it.
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.headers
        received = b"".join(response.iter_content(chunk_size=None))
    assert received == b"".join(stream_chunks(count))


def test_large_file_download(live: Live, download_sha256: str) -> None:
    digest = hashlib.sha256()
    size = 0
    with requests.get(f"{live.url}/download", stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(DOWNLOAD_SIZE)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        for piece in response.iter_content(chunk_size=256 * 1024):
            digest.update(piece)
            size += len(piece)
    assert size == DOWNLOAD_SIZE
    assert digest.hexdigest() == download_sha256


def test_head_requests_have_headers_but_no_body(live: Live) -> None:
    with requests.Session() as session:
        head = session.head(f"{live.url}/hello", timeout=TIMEOUT)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["Content-Length"] == str(len(f"Hello from {live.framework.capitalize()}!"))
        big = session.head(f"{live.url}/download", timeout=TIMEOUT)
        assert big.status_code == 200
        assert big.headers["Content-Length"] == str(DOWNLOAD_SIZE)
        # Had the server sent a body after either head, this next response on the same connection would be
        # garbage.
        after = session.get(f"{live.url}/hello", timeout=TIMEOUT)
        assert after.status_code == 200
        assert after.text == f"Hello from {live.framework.capitalize()}!"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_route_is_404(live: Live, method: str) -> None:
    response = requests.request(method, f"{live.url}/no/such/page", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.content  # each framework renders some error page


def test_chunked_request_upload(live: Live) -> None:
    pieces = [LARGE[i : i + 50_000] for i in range(0, len(LARGE), 50_000)]

    def body() -> Iterator[bytes]:
        yield from pieces  # a generator has no length, so requests sends Transfer-Encoding: chunked

    response = requests.post(f"{live.url}/echo", data=body(), timeout=TIMEOUT)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200
    assert response.json() == {"size": len(LARGE), "sha256": sha256(LARGE)}


def _head_then(sock: socket.socket, head: bytes) -> tuple[bytes, bytearray]:
    """Send a request head and read the first response head; returns (that head, the bytes after it)."""
    sock.sendall(head)
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response head; got {bytes(buffer)!r}")
        buffer += data
    first, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    return first, bytearray(rest)


def test_expect_100_continue(live: Live) -> None:
    body = os.urandom(300_000)
    head = (
        f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        interim, rest = _head_then(sock, head)
        assert interim.split(b"\r\n")[0] == b"HTTP/1.1 100 Continue"
        sock.sendall(body)
        status, _, content = read_response(sock, rest)
    assert status == 200
    assert json.loads(content) == {"size": len(body), "sha256": sha256(body)}


def test_expect_100_continue_then_the_apps_refusal(live: Live) -> None:
    # The server reads the body on its loop before any app thread is spent (a client trickling it must not hold
    # one), so it asks for the body at once; the app's 404 follows the upload, and the connection stays usable.
    body = b"x" * 100_000
    head = (
        f"POST /no/such/page HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        first, rest = _head_then(sock, head)
        assert first == b"HTTP/1.1 100 Continue"
        sock.sendall(body)
        status, _, _ = read_response(sock, rest)
    assert status == 404


def test_many_requests_share_one_keepalive_connection(live: Live) -> None:
    with requests.Session() as session:
        for round_ in range(5):
            assert session.get(f"{live.url}/hello", timeout=TIMEOUT).status_code == 200
            posted = session.post(f"{live.url}/json", json={"numbers": [round_], "text": "x"}, timeout=TIMEOUT)
            assert posted.json()["sum"] == round_
            streamed = session.get(f"{live.url}/stream?n=50", timeout=TIMEOUT)
            assert streamed.content == b"".join(stream_chunks(50))
            assert session.get(f"{live.url}/missing", timeout=TIMEOUT).status_code == 404


def test_the_app_sees_the_client_and_the_url(live: Live) -> None:
    response = requests.get(f"{live.url}/whoami?x=1", timeout=TIMEOUT)
    assert response.json() | {"pid": None} == {
        "framework": live.framework,
        "pid": None,
        "remote_addr": "127.0.0.1",
        "scheme": "http",
        "host": f"127.0.0.1:{live.port}",
        "url": f"{live.url}/whoami?x=1",
    }


def _chunked(data: bytes, size: int = 30_000) -> bytes:
    """``data`` in HTTP/1.1 chunked coding, with a chunk extension and a trailer for good measure."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    coded = b"".join(b"%x;piece=yes\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return coded + b"0\r\nX-Trailer: ok\r\n\r\n"


def test_expect_100_continue_with_a_chunked_body(live: Live) -> None:
    # Django and Bottle read only CONTENT_LENGTH bytes of wsgi.input: a chunked body must be received (and so
    # accepted with a 100 at once) before the app runs, or they would see an empty body and answer 200.
    # What curl sends for `curl -T- URL` with a large upload: no length, and a 100-continue handshake.
    body = os.urandom(200_000)
    head = (
        f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nContent-Type: application/octet-stream\r\n"
        f"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        interim, rest = _head_then(sock, head)
        assert interim.split(b"\r\n")[0] == b"HTTP/1.1 100 Continue", (
            f"answered before the body was sent (so the app read nothing): {interim + rest!r}"
        )
        sock.sendall(_chunked(body))
        status, _, content = read_response(sock, rest)
    assert status == 200
    assert json.loads(content) == {"size": len(body), "sha256": sha256(body)}


def test_range_request_on_the_download(live: Live) -> None:
    expected = download_file().read_bytes()[1000:2000]
    response = requests.get(f"{live.url}/download", headers={"Range": "bytes=1000-1999"}, timeout=TIMEOUT)
    if response.status_code == 200:  # Django's FileResponse ignores Range (as under any server)
        assert live.framework == "django"
        assert len(response.content) == DOWNLOAD_SIZE
        return
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-1999/{DOWNLOAD_SIZE}"
    assert response.headers["Content-Length"] == "1000"
    assert response.content == expected


def test_conditional_get_answers_304_without_a_body(live: Live) -> None:
    with requests.Session() as session:
        first = session.get(f"{live.url}/download", stream=True, timeout=TIMEOUT)
        first.close()  # only the validators are needed
        validators = {}
        if "ETag" in first.headers:
            validators["If-None-Match"] = first.headers["ETag"]
        if "Last-Modified" in first.headers:
            validators["If-Modified-Since"] = first.headers["Last-Modified"]
        if not validators:
            assert live.framework == "django"  # FileResponse sets neither validator
            return
        again = session.get(f"{live.url}/download", headers=validators, timeout=TIMEOUT)
        assert again.status_code == 304
        assert again.content == b""
        # A 304 carries no body even when it repeats Content-Length: the connection must still be in step.
        assert session.get(f"{live.url}/hello", timeout=TIMEOUT).status_code == 200


def test_the_iterable_is_closed_when_the_client_goes_away(live: Live) -> None:
    tag = uuid.uuid4().hex
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /stream?n=10000000&tag={tag} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    # PEP 3333: the server calls close(), which closes the framework's response and so our generator.
    wait_for(lambda: tag in STREAMS_CLOSED, timeout=TIMEOUT)


def test_concurrent_clients(live: Live) -> None:
    def client(index: int) -> None:
        with requests.Session() as session:
            for _ in range(5):
                body = {"numbers": [index, 1], "text": f"client {index}"}
                assert session.post(f"{live.url}/json", json=body, timeout=TIMEOUT).json() == json_answer(body)
                streamed = session.get(f"{live.url}/stream?n=200", timeout=TIMEOUT)
                assert streamed.content == b"".join(stream_chunks(200))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(client, range(16)))


def test_http_1_0_client_gets_a_close_delimited_stream(live: Live) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /stream?n=3000 HTTP/1.0\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
        status, headers, body = read_response(sock)
    assert status == 200
    assert "transfer-encoding" not in headers  # chunked coding does not exist in HTTP/1.0
    assert body == b"".join(stream_chunks(3000))


def test_pipelined_requests_are_answered_in_order(live: Live) -> None:
    host = f"Host: 127.0.0.1:{live.port}\r\n"
    form = b"a=1&a=2"
    requests_ = (
        f"GET /query?n=1 HTTP/1.1\r\n{host}\r\n"
        f"POST /form HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n\r\n{form.decode()}"
        f"GET /stream?n=20 HTTP/1.1\r\n{host}\r\n"
        f"GET /query?n=4 HTTP/1.1\r\n{host}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(requests_)
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2]) == {"args": {"n": ["1"]}}
    assert json.loads(answers[1][2]) == {"form": {"a": ["1", "2"]}}
    assert answers[2][2] == b"".join(stream_chunks(20))
    assert json.loads(answers[3][2]) == {"args": {"n": ["4"]}}


def test_multipart_upload_with_expect_100_continue(live: Live) -> None:
    # What curl -F file=@big sends: a Content-Length, Expect: 100-continue, and a body spooled to disk.
    prepared = requests.Request(
        "POST", f"{live.url}/upload", files={"big": ("big.bin", LARGE)}, data={"note": "curl-like"}
    ).prepare()
    assert isinstance(prepared.body, bytes)
    head = f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nExpect: 100-continue\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in prepared.headers.items()
    )
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        interim, rest = _head_then(sock, (head + "\r\n").encode())
        assert interim.split(b"\r\n")[0] == b"HTTP/1.1 100 Continue"
        sock.sendall(prepared.body)
        status, _, content = read_response(sock, rest)
    assert status == 200
    assert json.loads(content) == {
        "fields": {"note": ["curl-like"]},
        "files": {"big": {"filename": "big.bin", "size": len(LARGE), "sha256": sha256(LARGE)}},
    }


def _open_descriptors_on(path: Path) -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:
            pass  # closed since the listing
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to count open files")
def test_downloads_close_their_file_also_when_abandoned(live: Live) -> None:
    path = download_file()
    assert _open_descriptors_on(path) == 0
    requests.get(f"{live.url}/download", timeout=TIMEOUT).close()  # complete
    requests.head(f"{live.url}/download", timeout=TIMEOUT).close()  # no body at all
    for _ in range(3):  # abandoned after the first bytes
        with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
            sock.sendall(f"GET /download HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    # The file_wrapper's close() (and so the framework's response.close()) must run in every case.
    wait_for(lambda: _open_descriptors_on(path) == 0, timeout=TIMEOUT)


def test_repeated_cookie_headers_are_joined_as_one_cookie_list(live: Live) -> None:
    # HTTP/2-to-1 proxies may split cookies over several Cookie fields; RFC 6265 joins them with "; ", not ",".
    head = f"GET /cookies HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nCookie: a=1\r\nCookie: b=2; c=3\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        status, _, body = read_response(sock)
    assert status == 200
    assert json.loads(body) == {"cookies": {"a": "1", "b": "2", "c": "3"}}


def test_raw_utf8_in_the_target_is_decoded_correctly_or_refused(live: Live) -> None:
    # curl sends what it is given, so "curl 'http://host/greet/été'" puts raw UTF-8 bytes on the wire. Servers
    # differ (gunicorn answers 400); what must never happen is an app seeing mojibake.
    target = "/greet/été?name=été".encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET " + target + f" HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
        status, _, body = read_response(sock)
    assert status in (200, 400)
    if status == 200:
        assert json.loads(body) == {"name": "été"}


def test_an_unread_request_body_does_not_spill_into_the_next_request(live: Live) -> None:
    with requests.Session() as session:
        refused = session.post(f"{live.url}/no/such/page", data=LARGE, timeout=TIMEOUT)
        assert refused.status_code == 404
        after = session.post(f"{live.url}/form", data={"after": "yes"}, timeout=TIMEOUT)
        assert after.status_code == 200
        assert after.json() == {"form": {"after": ["yes"]}}


def _raw_head(live: Live, target: str) -> list[tuple[str, str]]:
    """The response head's fields, in order and with repeats (``requests`` would merge repeated fields)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        head, _ = _head_then(sock, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
    fields = [line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:]]
    return [(name.lower(), value.strip()) for name, _, value in fields]


@pytest.mark.parametrize("count", [2, 30])
def test_the_apps_own_server_header_is_kept_once(live: Live, count: int) -> None:
    fields = _raw_head(live, f"/headers?n={count}")
    names = [name for name, _ in fields]
    assert [value for name, value in fields if name == "server"] == [SERVER_HEADER]
    assert names.count("date") == 1
    sent = [(name.lower(), value) for name, value in custom_headers(count)[1:]]
    assert [field for field in fields if field[0].startswith("x-interop-")] == sent


def test_a_streamed_chunk_is_sent_while_the_app_is_still_running(live: Live) -> None:
    tag = uuid.uuid4().hex
    gate = GATES.setdefault(tag, threading.Event())
    with requests.get(f"{live.url}/wait?tag={tag}", stream=True, timeout=TIMEOUT) as response:
        lines = response.iter_lines()
        assert next(lines) == b"first"  # the app is now blocked on the gate: nothing was buffered
        gate.set()
        assert list(lines) == [b"second"]


def test_a_header_value_outside_latin1_is_an_app_error_answered_with_500(live: Live) -> None:
    # PEP 3333: header values must be latin-1. Django MIME-encodes such a value, Bottle sends its UTF-8 bytes;
    # Flask hands it to the server as is, and then it is an application error: 500, as gunicorn and wsgiref say.
    try:
        response = requests.get(f"{live.url}/unicode-header", timeout=TIMEOUT)
    except requests.ConnectionError as error:
        raise AssertionError(f"no response at all: {error}") from None
    assert response.status_code == (500 if live.framework == "flask" else 200)
    # The connection may close, but the server carries on.
    assert requests.get(f"{live.url}/hello", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize(
    ("request_head", "host"),
    [
        # RFC 9112 3.2.2: an absolute-form target's authority wins over the Host header.
        ("GET http://localhost/whoami HTTP/1.1\r\nHost: other.example\r\n\r\n", "localhost"),
        # HTTP/1.0 needs no Host: the app falls back on SERVER_NAME and SERVER_PORT.
        ("GET /whoami HTTP/1.0\r\n\r\n", None),
    ],
    ids=["absolute-form", "http-1.0-without-host"],
)
def test_the_app_builds_urls_from_the_right_host(live: Live, request_head: str, host: str | None) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_head.encode())
        status, _, body = read_response(sock)
    assert status == 200
    host = host or f"127.0.0.1:{live.port}"
    answer = json.loads(body)
    assert (answer["host"], answer["url"]) == (host, f"http://{host}/whoami")


def test_django_csrf_protection_round_trip() -> None:
    with ServerThread(load_app("django")) as server, requests.Session() as session:
        token = session.get(f"{server.url}/csrf", timeout=TIMEOUT).json()["token"]
        assert "csrftoken" in session.cookies
        refused = session.post(f"{server.url}/protected", data={"x": "1"}, timeout=TIMEOUT)
        assert refused.status_code == 403  # no token: the middleware really is on
        accepted = session.post(
            f"{server.url}/protected", data={"x": "1"}, headers={"X-CSRFToken": token}, timeout=TIMEOUT
        )
        assert accepted.status_code == 200
        assert accepted.json() == {"form": {"x": ["1"]}, "secure": False}


def _access_line(caplog: pytest.LogCaptureFixture, target: str) -> tuple[int, int] | None:
    """(status, bytes) from the access-log line for ``target``, once it has been written."""
    for record in caplog.records:
        if record.name == "server.access" and f" {target} " in record.getMessage():
            match = re.search(r'" (\d{3}) (\d+|-) ', record.getMessage())
            assert match, record.getMessage()
            return int(match[1]), int(match[2].replace("-", "0"))
    return None


def test_the_access_log_counts_the_bytes_really_sent(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.access")
    requests.get(f"{live.url}/download?whole=1", timeout=TIMEOUT).close()
    assert wait_for(lambda: _access_line(caplog, "/download?whole=1")) == (200, DOWNLOAD_SIZE)
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # keep what the kernel buffers for us small
        sock.sendall(f"GET /download?abandoned=1 HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    status, size = wait_for(lambda: _access_line(caplog, "/download?abandoned=1"))
    # The client took a few KiB; claiming the whole 20 MiB would misreport every aborted download.
    assert status == 200
    assert size < DOWNLOAD_SIZE // 2, f"logged {size} bytes for a download abandoned after the first KiB"
