"""Slow clients cost a descriptor and bounded memory for a bounded time, never an application thread.

The attack this guards against, measured on the old main: with --threads 8, eight clients sending
``Expect: 100-continue`` bodies at one byte per 20 s pinned all eight threads for as long as they liked; eight
clients that stopped reading a streamed response pinned threads for the 60 s send timeout, again and again; a
body trickled at one byte per 0.2 s was never ended. Now the loop reads bodies (also after 100-continue) with a
minimum rate, and a response whose client does not read is parked off its thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import requests

from server.config import Config
from server.connection import HTTPConnection
from tests.support import ServerThread, loop_parked, read_response, wait_for

TIMEOUT = 10
ATTACKERS = 8


class Closes:
    """Counts the response iterables whose close() the server called."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1


def make_app(closes: Closes):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/stream":

            def endless():
                try:
                    for _ in range(10_000):  # 640 MB: far more than any socket buffer holds
                        yield b"x" * 65536
                finally:
                    closes.add()

            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return endless()
        body = environ["wsgi.input"].read()
        data = b"hello %d" % len(body)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
        return [data]

    return app


def trickle(socks: list[socket.socket], stop: threading.Event, interval: float = 0.2) -> None:
    """Send one body byte on each socket every ``interval`` seconds, as a slowloris would."""
    live = list(socks)
    while live and not stop.wait(interval):
        for sock in list(live):
            try:
                sock.send(b"x")
            except OSError:
                live.remove(sock)


def small_window_client(port: int, window: int = 4096) -> socket.socket:
    """A client socket with a small receive buffer, so that a response fills it (and the server's) quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


def ended(sock: socket.socket) -> bool:
    """True once the server has closed this connection (whatever it said before)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_clients_never_hold_the_app_threads():
    closes = Closes()
    settings = dict(threads=ATTACKERS, body_timeout=1.0, min_body_rate=100, send_timeout=2.0, header_timeout=5.0)
    with ServerThread(make_app(closes), **settings) as server:
        continuing, trickling, not_reading = [], [], []
        for _ in range(ATTACKERS):
            sock = server.connect()
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
            assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # from the loop, without an app thread
            continuing.append(sock)
        for _ in range(ATTACKERS):
            sock = server.connect()
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
            trickling.append(sock)
        for _ in range(ATTACKERS):
            sock = small_window_client(server.port)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
            not_reading.append(sock)
        stop = threading.Event()
        trickler = threading.Thread(target=trickle, args=(continuing + trickling, stop), daemon=True)
        trickler.start()
        attackers = continuing + trickling + not_reading
        try:
            # Every streamed response has filled its buffers and is parked: no thread waits on its client.
            wait_for(lambda: sum(c.on_drain is not None for c in list(server.engine.connections.values())) >= 8)
            for _ in range(5):
                started = time.monotonic()
                response = requests.post(server.url + "/normal", data=b"abc", timeout=TIMEOUT)
                assert response.text == "hello 3"
                assert time.monotonic() - started < 1.0
            # Each attacker is ended within its bound: a body under 100 B/s after 1 s of grace (then 2 s of
            # lingering so the 408 is not lost), a reader that takes nothing for the 2 s send timeout.
            wait_for(lambda: not server.engine.connections, timeout=8.0)
            wait_for(lambda: closes.count == ATTACKERS)  # and every abandoned iterable was closed
            assert all(ended(sock) for sock in continuing + trickling)
            assert server.engine.buffered_bytes == 0
        finally:
            stop.set()
            trickler.join(TIMEOUT)
            for sock in attackers:
                sock.close()


def response_while_trickling(sock: socket.socket, interval: float) -> tuple[int, bytes]:
    """Trickle body bytes on ``sock`` every ``interval`` seconds until the server answers; (status, body)."""
    stop = threading.Event()
    trickler = threading.Thread(target=trickle, args=([sock], stop, interval), daemon=True)
    trickler.start()
    try:
        status, _, body = read_response(sock)
    finally:
        stop.set()
        trickler.join(TIMEOUT)
    return status, body


def test_a_trickled_body_gets_408_naming_the_rate():
    with ServerThread(make_app(Closes()), body_timeout=0.5, min_body_rate=50) as server, server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
        status, body = response_while_trickling(sock, 0.1)
    assert status == 408
    assert b"too slowly" in body


def test_a_parked_response_finishes_when_its_client_reads_again():
    # Parking must not lose or reorder anything: a slow but honest reader gets every byte.
    chunks = [bytes([i]) * 65536 for i in range(256)]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter(chunks)

    with ServerThread(app, threads=1) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.on_drain for c in list(server.engine.connections.values())))
        # Parked, so the only app thread is free for someone else.
        assert requests.get(server.url, timeout=TIMEOUT).content == b"".join(chunks)
        status, _, body = read_response(sock)
    assert status == 200
    assert body == b"".join(chunks)


def cut_off_after(rate_of: Callable[[int], int], config: Config, horizon: int = 20_000) -> int | None:
    """Feed a body second by second (``rate_of(second)`` bytes in that second) through the rate rule; the
    second at which the connection would be refused, or None if it never is within ``horizon``."""
    conn = SimpleNamespace(engine=SimpleNamespace(config=config), body_received=0, rate_mark=0.0, rate_mark_bytes=0)
    deadline = HTTPConnection._body_deadline(conn, 0.0)  # type: ignore[arg-type]
    for second in range(1, horizon):
        if second >= deadline:
            return second
        sent = rate_of(second)
        if sent:
            conn.body_received += sent
            deadline = HTTPConnection._body_deadline(conn, float(second))  # type: ignore[arg-type]
    return None


def test_the_body_rate_rule_with_the_defaults():
    config = Config()
    # A byte per 0.2 s (5 B/s) is ended within 60 s of its start (at 30 s: its first window never fills).
    assert cut_off_after(lambda s: 5, config) == 30
    # Most of a body at once, then a byte every 25 s: ended 30 s after the burst, not hours later holding its
    # share of the budget (the rate is owed in every window, not averaged over the whole body).
    assert cut_off_after(lambda s: 15 * 1024 * 1024 if s == 1 else (1 if s % 25 == 0 else 0), config) == 31
    # Honest uploads are never cut off: 100 KiB/s, or just above the minimum rate.
    assert cut_off_after(lambda s: 100 * 1024, config) is None
    assert cut_off_after(lambda s: 1100, config) is None
    # With the rate rule off, only progress counts: a piece every body_timeout.
    assert cut_off_after(lambda s: 1 if s % 25 == 0 else 0, replace(config, min_body_rate=0)) is None


def test_a_front_loaded_body_cannot_trickle_the_rest_forever():
    with ServerThread(make_app(Closes()), body_timeout=1.0, min_body_rate=10_000) as server, server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 900_000)
        started = time.monotonic()
        status, body = response_while_trickling(sock, 0.3)
    assert status == 408 and b"too slowly" in body
    assert time.monotonic() - started < 3.0  # the old rule (averaged) would have allowed 90 s


def test_no_thread_waits_for_a_continue_body():
    # The reported case exactly: threads are all "in use" by 100-continue uploaders on the old main.
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    with ServerThread(app, threads=1) as server, server.connect() as slow:
        slow.sendall(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert slow.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        slow.sendall(b"12345")
        assert not entered.is_set()  # half a body: the app has not been called
        started = time.monotonic()
        assert requests.put(server.url, data=b"abc", timeout=TIMEOUT).content == b"abc"
        assert time.monotonic() - started < 1.0
        slow.sendall(b"67890")
        assert read_response(slow)[2] == b"1234567890"
        with contextlib.suppress(OSError):
            slow.shutdown(socket.SHUT_WR)


def test_a_reader_that_takes_nothing_is_reset_so_its_queue_is_freed():
    # After the send timeout the connection is closed with a reset: a graceful close would leave what the kernel
    # still holds for the client (megabytes) queued on an orphaned socket.
    closes = Closes()
    with ServerThread(make_app(closes), send_timeout=0.5) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: closes.count == 1)
        wait_for(lambda: not server.engine.connections)
        sock.settimeout(TIMEOUT)
        try:
            while sock.recv(1 << 20):
                pass
            reset = False
        except ConnectionResetError:
            reset = True
    assert reset


def test_a_body_of_tiny_chunks_lets_other_clients_in_between():
    """A chunked body of one-byte chunks costs the loop per chunk: 43,690 of them in one 256 KiB read took 0.15 s,
    during which no other client was served (200 such connections: a 30 s turn, past --timeout's watchdog).
    The loop now parses at most CHUNKS_AT_A_TIME chunks of a connection before serving the others that are ready.
    Here both clients' bytes are waiting when the loop wakes, the tiny chunks first: the other request is
    answered before the tiny-chunk body is complete. The body still arrives whole."""
    calls: list[str] = []

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    tiny = bytes(i % 251 for i in range(9_000))
    framed = b"".join(b"1\r\n" + tiny[i : i + 1] + b"\r\n" for i in range(len(tiny))) + b"0\r\n\r\n"
    with ServerThread(app, threads=0) as server, server.connect() as first, server.connect() as second:
        wait_for(lambda: len(server.engine.connections) == 2)
        with loop_parked(server):
            first.sendall(b"POST /tiny HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + framed)
            second.sendall(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(second)[0] == 200
        status, _, body = read_response(first)
    assert (status, body) == (200, tiny)
    assert calls == ["/other", "/tiny"]
