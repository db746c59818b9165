"""The server live on 127.0.0.1, driven with ``requests`` and with raw sockets."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import socket
import threading
import time
import warnings
from wsgiref.validate import WSGIWarning, validator

import pytest
import requests

from tests.support import AnswerOnCue, ServerThread, read_response, recv_until_closed, wait_for

TIMEOUT = 10


def echo_app(environ, start_response):
    """Reports what it was given, as JSON: the environ's interesting keys and the body's hash."""
    body = environ["wsgi.input"].read()
    report = {
        key: value
        for key, value in environ.items()
        if isinstance(value, str) and (key.isupper() or key == "wsgi.url_scheme")
    }
    report["body_length"] = len(body)
    report["body_sha256"] = hashlib.sha256(body).hexdigest()
    report["multithread"] = environ["wsgi.multithread"]
    data = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture(params=["epoll", "poll", "select", "epoll-t0", "poll-t0", "select-t0"])
def server(request):
    """Each event loop, with the app on threads and (-t0: --threads 0) on the loop itself."""
    loop, _, on_the_loop = request.param.partition("-")
    with ServerThread(echo_app, loop=loop, threads=0 if on_the_loop else 8) as running:
        yield running


@pytest.fixture
def epoll_server():
    with ServerThread(echo_app) as running:
        yield running


def test_get_environ(server):
    response = requests.get(server.url + "/caf%C3%A9/x?q=1&q=2", headers={"X-Thing": "a"}, timeout=TIMEOUT)
    assert response.status_code == 200
    env = response.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/café/x".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=1&q=2"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(server.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["HTTP_X_THING"] == "a"
    assert env["wsgi.url_scheme"] == "http"
    assert env["multithread"] is (server.config.threads > 1)  # --threads 0: one thread runs every request
    assert response.headers["Server"].startswith("ladder/")
    assert "Date" in response.headers


def test_keep_alive_reuses_the_connection(server):
    with requests.Session() as session:
        ports = {session.get(server.url, timeout=TIMEOUT).json()["REMOTE_PORT"] for _ in range(5)}
    assert len(ports) == 1


def test_post_bodies(server):
    form = requests.post(server.url, data={"a": "1", "b": "é"}, timeout=TIMEOUT).json()
    assert form["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert int(form["CONTENT_LENGTH"]) == form["body_length"] > 0
    payload = os.urandom(3 * 1024 * 1024)  # beyond the spool threshold: goes through a temporary file
    big = requests.post(server.url, data=payload, timeout=TIMEOUT).json()
    assert big["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_chunked_request_body(server):
    pieces = [os.urandom(1000) for _ in range(50)]
    env = requests.post(server.url, data=iter(pieces), timeout=TIMEOUT).json()
    assert env["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert env["CONTENT_LENGTH"] == str(50_000)
    assert "HTTP_TRANSFER_ENCODING" not in env  # the server removed the coding; the app sees plain bytes


def test_repeated_headers_are_joined_and_underscored_names_dropped(epoll_server):
    with epoll_server.connect() as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\nCookie: x=1\r\nCookie: y=2\r\n"
            b"X-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"
        )
        _status, _, body = read_response(sock)
    env = json.loads(body)
    assert env["HTTP_ACCEPT"] == "a,b"
    assert env["HTTP_COOKIE"] == "x=1; y=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


def test_absolute_form_host_wins(epoll_server):
    with epoll_server.connect() as sock:
        sock.sendall(b"GET http://other.example:81/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n")
        _, _, body = read_response(sock)
    env = json.loads(body)
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "other.example:81",
        "other.example",
        "81",
    )
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/p", "q")


def test_an_absolute_form_target_cannot_make_a_plain_request_https(epoll_server):
    """The connection says how the client reached us, not the client: "GET https://..." over plain TCP made the app
    see wsgi.url_scheme https and port 443, and trust it (require-HTTPS checks, Secure cookies, external URLs).
    Only a trusted proxy's headers may change the scheme. The authority still replaces Host (RFC 9112 3.2.2)."""
    with epoll_server.connect() as sock:
        sock.sendall(b"GET https://other.example/p HTTP/1.1\r\nHost: ignored\r\n\r\n")
        _, _, body = read_response(sock)
    env = json.loads(body)
    assert (env["wsgi.url_scheme"], env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "http",
        "other.example",
        "other.example",
        "80",
    )


def test_options_asterisk(epoll_server):
    with epoll_server.connect() as sock:
        sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200 and json.loads(body)["PATH_INFO"] == "*"


def test_pipelined_requests_answered_in_order(server):
    with server.connect() as sock:
        sock.sendall(
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        buffer = bytearray()
        paths = [json.loads(read_response(sock, buffer)[2])["PATH_INFO"] for _ in range(3)]
        assert recv_until_closed(sock) == b""
    assert paths == ["/1", "/2", "/3"]


def test_http10_keep_alive_and_close(server):
    with server.connect() as sock:
        sock.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200
        assert headers["connection"] == "keep-alive"
        sock.sendall(b"GET /b HTTP/1.0\r\n\r\n")
        _status, headers, body = read_response(sock)
        assert headers["connection"] == "close"
        assert json.loads(body)["PATH_INFO"] == "/b"
        assert recv_until_closed(sock) == b""


REFUSED = [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize(("raw", "status"), REFUSED, ids=[str(s) + "-" + str(i) for i, (_, s) in enumerate(REFUSED)])
def test_refusals_answer_and_close(epoll_server, raw, status):
    with epoll_server.connect() as sock:
        sock.sendall(raw)
        got, headers, _ = read_response(sock)
        assert got == status
        assert headers["connection"] == "close"
        assert recv_until_closed(sock) == b""


def test_body_too_large_is_413_even_while_the_client_keeps_sending():
    with ServerThread(echo_app, max_body_bytes=1000) as server:
        response = requests.post(server.url, data=b"x" * 100_000, timeout=TIMEOUT)
        assert response.status_code == 413
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200


def test_head_never_has_a_body(epoll_server):
    with epoll_server.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        buffer = bytearray()
        # read_response would treat a HEAD's Content-Length as a body: read the head by hand.
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        assert b"Content-Length: " in head
        buffer = bytearray(rest)
        _status, _, body = read_response(sock, buffer)
        assert json.loads(body)["PATH_INFO"] == "/after"


def streaming_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(100):
        yield b"line %d\n" % i


def test_streaming_response_is_chunked_on_11_and_close_delimited_on_10():
    with ServerThread(streaming_app) as server:
        response = requests.get(server.url, timeout=TIMEOUT)
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.text == "".join(f"line {i}\n" for i in range(100))
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = recv_until_closed(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head and b"Connection: close" in head
        assert body == b"".join(b"line %d\n" % i for i in range(100))
        # HEAD on a streaming app: headers only, and the connection stays usable.
        with server.connect() as sock:
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert status == 200 and "transfer-encoding" not in headers


def test_write_callable_and_one_element_list_lengths():
    def write_app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    def list_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"exactly this"]

    with ServerThread(write_app) as server:
        response = requests.get(server.url, timeout=TIMEOUT)
        assert response.text == "written returned"
    with ServerThread(list_app) as server:
        response = requests.get(server.url, timeout=TIMEOUT)
        assert response.headers["Content-Length"] == "12"
        assert "Transfer-Encoding" not in response.headers


def test_hop_by_hop_header_from_app_is_a_500():
    def bad_app(environ, start_response):
        start_response("200 OK", [("Connection", "keep-alive")])
        return [b"x"]

    with ServerThread(bad_app) as server:
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 500


def test_app_exception_before_headers_gives_500_and_server_carries_on():
    calls = []

    def failing_app(environ, start_response):
        calls.append(1)
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    with ServerThread(failing_app) as server:
        response = requests.get(server.url + "/boom", timeout=TIMEOUT)
        assert response.status_code == 500
        assert "boom" not in response.text  # no traceback without --debug
        assert requests.get(server.url, timeout=TIMEOUT).text == "fine"
    with ServerThread(failing_app, debug=True) as server:
        response = requests.get(server.url + "/boom", timeout=TIMEOUT)
        assert response.status_code == 500 and "RuntimeError: boom" in response.text


def test_app_exception_after_headers_closes_the_connection():
    def half_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("too late")

    with ServerThread(half_app) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK") and b"partial" in data
        assert not data.endswith(b"0\r\n\r\n")  # no clean end: the client can tell it was cut short


def test_exc_info_replaces_headers_before_they_are_sent():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            import sys

            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    with ServerThread(app) as server:
        response = requests.get(server.url, timeout=TIMEOUT)
        assert response.status_code == 503 and response.text == "sorry"


def test_close_is_called_when_the_client_disconnects():
    closed = threading.Event()
    started = threading.Event()

    class Body:
        def __iter__(self):
            started.set()
            for _ in range(10_000):
                yield b"x" * 65536

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body()

    with ServerThread(app, send_timeout=5) as server:
        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.recv(1000)
        assert started.wait(TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # abortive close: a reset
        assert closed.wait(TIMEOUT)
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200


def test_expect_100_continue_is_answered_by_the_loop_before_the_app_runs():
    calls = []

    def reader(environ, start_response):
        calls.append(environ["CONTENT_LENGTH"])
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [data]

    with ServerThread(reader) as server:
        with server.connect() as sock:
            sock.sendall(b"PUT /read HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += sock.recv(100)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            assert calls == []  # no thread is spent on a body that has not arrived
            sock.sendall(b"hel")
            sock.sendall(b"lo")
            status, headers, body = read_response(sock)
            assert (status, body) == (200, b"hello")
            assert headers.get("connection") != "close"  # the body was read, so the connection goes on
            sock.sendall(b"GET /again HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok")
            assert read_response(sock)[2] == b"ok"
        assert calls == ["5", "2"]


def test_file_wrapper_uses_sendfile_and_closes(tmp_path):
    payload = os.urandom(5 * 1024 * 1024 + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(payload)
    closed = threading.Event()

    class TrackedFile(io.FileIO):
        def close(self):
            closed.set()
            super().close()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](TrackedFile(path, "r"))

    with ServerThread(app) as server:
        response = requests.get(server.url, timeout=TIMEOUT)
        assert response.headers["Content-Length"] == str(len(payload))
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(payload).digest()
        assert closed.wait(TIMEOUT)


def test_slow_reader_gets_everything_with_backpressure():
    payload = os.urandom(8 * 1024 * 1024)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (payload[i : i + 65536] for i in range(0, len(payload), 65536))

    with ServerThread(app) as server, server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and body == payload


def test_wsgiref_validator_sees_no_errors():
    errors = []

    def plain(environ, start_response):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    validated = validator(plain)

    def guarded(environ, start_response):
        try:
            return validated(environ, start_response)
        except AssertionError as error:
            errors.append(error)
            raise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ServerThread(guarded) as server, requests.Session() as session:
            assert session.get(server.url + "/x?y=1", timeout=TIMEOUT).status_code == 200
            assert session.post(server.url, data=b"body", timeout=TIMEOUT).status_code == 200
            assert session.head(server.url, timeout=TIMEOUT).status_code == 200
    assert errors == []
    assert [w for w in caught if issubclass(w.category, WSGIWarning)] == []


def test_header_deadline_is_total_not_per_read():
    with ServerThread(echo_app, header_timeout=0.6) as server, server.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        response = b""
        # Trickle a byte every 0.1 s: each read is "recent", but the head as a whole takes too long.
        sock.settimeout(0.1)
        for _ in range(50):
            try:
                sock.sendall(b"X")
            except OSError:
                break
            try:
                response += sock.recv(1000)
            except TimeoutError:
                continue
            if response:
                break
        elapsed = time.monotonic() - started
        assert response.startswith(b"HTTP/1.1 408 ")
        assert elapsed < 3.0


def test_idle_keep_alive_connection_is_closed():
    with ServerThread(echo_app, keepalive_timeout=0.3) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        read_response(sock)
        assert recv_until_closed(sock) == b""
        wait_for(lambda: not server.engine.connections)


def test_connection_limit_answers_503():
    with ServerThread(echo_app, max_connections=2) as server:
        held = [server.connect(), server.connect()]
        wait_for(lambda: len(server.engine.connections) == 2)
        with server.connect() as extra:
            status, _, _ = read_response(extra)
            assert status == 503
        for sock in held:
            sock.close()
        wait_for(lambda: not server.engine.connections)
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200


def test_select_descriptor_limit_answers_503():
    with ServerThread(echo_app, loop="select") as server:
        poller = server.engine.reactor.poller
        probe = server.connect()
        wait_for(lambda: len(server.engine.connections) == 1)
        fd = next(iter(server.engine.connections))
        # Pretend FD_SETSIZE is just above the descriptors in use, rather than opening a thousand sockets.
        poller.max_fd = fd + 9
        held = []
        try:
            status = None
            for _ in range(20):
                sock = server.connect()
                held.append(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                status, _, _ = read_response(sock)
                if status == 503:
                    break
            assert status == 503
        finally:
            for sock in [probe, *held]:
                sock.close()


def test_forwarded_headers_trusted_only_from_listed_proxies():
    headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "X-Forwarded-Proto": "https"}
    with ServerThread(echo_app) as server:
        env = requests.get(server.url, headers=headers, timeout=TIMEOUT).json()
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    with ServerThread(echo_app, forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8")) as server:
        env = requests.get(server.url, headers=headers, timeout=TIMEOUT).json()
        assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"
        # By default only the X-Forwarded-* family is read: a Forwarded header changes nothing.
        forwarded = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=site.example'}
        env = requests.get(server.url, headers=forwarded, timeout=TIMEOUT).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
        assert env["HTTP_HOST"] != "site.example"
    with ServerThread(echo_app, forwarded_allow_ips=("127.0.0.1",), proxy_headers="forwarded") as server:
        env = requests.get(server.url, headers=forwarded, timeout=TIMEOUT).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("2001:db8::7", "https")
        env = requests.get(server.url, headers=headers, timeout=TIMEOUT).json()
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_client_closing_mid_request_disturbs_nobody(epoll_server):
    for partial in (b"GET / HTTP/1.1\r\nHo", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc"):
        with epoll_server.connect() as sock:
            sock.sendall(partial)
    assert requests.get(epoll_server.url, timeout=TIMEOUT).status_code == 200
    wait_for(lambda: not epoll_server.engine.connections)


def test_graceful_shutdown_finishes_in_flight_requests():
    release = threading.Event()
    entered = threading.Event()

    def slow_app(environ, start_response):
        entered.set()
        release.wait(TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished"]

    server = ServerThread(slow_app).__enter__()
    result = {}

    def client():
        result["response"] = requests.get(server.url, timeout=TIMEOUT)

    thread = threading.Thread(target=client)
    thread.start()
    assert entered.wait(TIMEOUT)
    server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)
    wait_for(lambda: server.engine.stopping)
    release.set()
    thread.join(TIMEOUT)
    server.stop(graceful=True)
    assert result["response"].text == "finished"
    assert result["response"].headers["Connection"] == "close"


def test_body_deadline_answers_408():
    with ServerThread(echo_app, body_timeout=0.3) as server, server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        status, headers, _ = read_response(sock)
        assert status == 408 and headers["connection"] == "close"


def test_wsgi_input_supports_readline_readlines_and_iteration():
    def lines_app(environ, start_response):
        stream = environ["wsgi.input"]
        first = stream.readline()
        second = stream.readline(3)
        rest = stream.readlines()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([first.decode(), second.decode(), [r.decode() for r in rest]]).encode()]

    with ServerThread(lines_app) as server:
        got = requests.post(server.url, data=b"one\ntwo\nthree\nfour", timeout=TIMEOUT).json()
    assert got == ["one\n", "two", ["\n", "three\n", "four"]]


def test_tcp_connections_send_small_responses_without_delay(epoll_server):
    """Nagle's algorithm would hold a small response back until the client's delayed ACK of the previous one
    (40 ms on Linux): every accepted TCP connection has TCP_NODELAY set."""
    with epoll_server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock)[0] == 200
        (conn,) = epoll_server.engine.connections.values()
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_worker_ends_a_closing_response_with_fin_without_waiting_for_the_loop():
    """Only the loop closes sockets, but a client with its whole response does not wait: it closes first, and the
    TIME_WAIT it keeps then slows its next connect() (half the throughput with Connection: close). So the worker
    says FIN right behind the response: it arrives while the loop is busy elsewhere."""
    app = AnswerOnCue(lambda: server)
    with ServerThread(app, threads=2) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        with app.hold_the_loop():
            assert read_response(sock)[::2] == (200, b"ok")
            assert sock.recv(1) == b""  # the FIN, while the loop is still held (else: a timeout here)


class RecordingSocket:
    """A connection's socket that notes how much each recv asks for."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.asked: list[int] = []

    def recv(self, size: int, *flags: int) -> bytes:
        self.asked.append(size)
        return self.sock.recv(size, *flags)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


@pytest.mark.parametrize(("length", "body_reads"), [(300_000, 256 * 1024), (10, 64 * 1024)])
def test_a_head_and_a_small_body_are_read_in_pieces_small_enough_for_the_heap(length, body_reads):
    """recv allocates what it asks for, and above malloc's mmap threshold (128 KiB) that is an mmap and a munmap
    per call: 45% of hello world's throughput wherever the threshold has not been raised (musl, or glibc early
    on). So a head, and a body that fits, is asked for in pieces below it; a big body in pieces above."""
    body = b"x" * length
    with ServerThread(echo_app) as server, server.connect() as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock)[0] == 200
        (conn,) = server.engine.connections.values()
        recorder = conn.sock = RecordingSocket(conn.sock)
        head = f"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        sock.sendall(head.encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")  # the head is in: now the body
        heads = len(recorder.asked)
        sock.sendall(body)
        status, _, report = read_response(sock)
    assert status == 200 and json.loads(report)["body_length"] == len(body)
    asked = recorder.asked
    assert heads >= 1 and all(size == 64 * 1024 for size in asked[:heads])
    inside_body = list(itertools.takewhile(lambda size: size == body_reads, asked[heads:]))
    assert inside_body  # then, once the response is out, the next head's reads
    assert all(size == 64 * 1024 for size in asked[heads + len(inside_body) :])
