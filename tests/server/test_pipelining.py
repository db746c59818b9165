"""Pipelining under attack: any number of requests on one connection, answered in order, by iteration.

Before this was hardened, about 200 pipelined static requests in one read raised RecursionError (each response
started the next one from inside itself), and after a 404, a redirect or a listing the connection was left busy
with no deadline and no registration, still counted against --max-connections: 32 such connections against a
limit of 30 gave every later client 503 until a restart.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from server.connection import NEVER, PIPELINE_TURN
from tests.server.test_slow_clients import small_window_client
from tests.support import ServerThread, loop_parked, read_response, wait_for

TIMEOUT = 10


def hello_app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(b"A" * 100)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.txt").write_bytes(b"B")
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "c.txt").write_bytes(b"C")
    return tmp_path


def static_server(site: Path, **settings) -> ServerThread:
    return ServerThread(hello_app, static=(f"/s={site}",), static_listing=True, **settings)


def pipeline(targets: list[str]) -> bytes:
    return b"".join(f"GET {t} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for t in targets)


def read_all(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    buffer = bytearray()
    return [read_response(sock, buffer) for _ in range(count)]


def loop_snapshot(server: ServerThread) -> list[tuple[str, float, bool]]:
    """(state, deadline, flushing) of every open connection, taken on the loop thread."""
    taken: list[tuple[str, float, bool]] = []
    done = threading.Event()

    def snapshot() -> None:
        taken.extend((c.state, c.deadline, c.flushing) for c in server.engine.connections.values())
        done.set()

    server.engine.reactor.call_soon_threadsafe(snapshot)
    assert done.wait(TIMEOUT)
    return taken


# The responses a static mount gives without a file body: each used to leave the connection stranded.
KINDS = {
    "file": ("/s/a.txt", 200),
    "404": ("/s/missing", 404),
    "redirect": ("/s/dir", 301),
    "listing": ("/s/listed/", 200),
    "app": ("/app", 200),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_thousand_pipelined_requests_of_one_kind_are_answered_in_order(site, kind, caplog):
    target, status = KINDS[kind]
    count = 1000
    targets = [f"{target}?n={i}" if kind == "app" else target for i in range(count)]
    with static_server(site) as server, server.connect() as sock:
        sock.sendall(pipeline(targets))  # one write, so the server reads many requests in one recv
        responses = read_all(sock, count)
        assert [r[0] for r in responses] == [status] * count
        if kind == "app":
            assert [r[2] for r in responses] == [b"/app"] * count
        # The connection is still good afterwards, and idle with a deadline.
        sock.sendall(pipeline(["/s/a.txt"]))
        assert read_response(sock)[0] == 200
        assert all(deadline < NEVER for _, deadline, _ in loop_snapshot(server))
    assert "RecursionError" not in caplog.text


def test_mixed_pipeline_keeps_its_order(site):
    kinds = list(KINDS.values())
    targets = [kinds[i % len(kinds)][0] for i in range(500)]
    with static_server(site) as server, server.connect() as sock:
        sock.sendall(pipeline(targets))
        statuses = [r[0] for r in read_all(sock, len(targets))]
    assert statuses == [kinds[i % len(kinds)][1] for i in range(500)]


def test_pipelining_clients_that_leave_do_not_leak_connections(site):
    # The reported attack: 32 connections of pipelined 404s against --max-connections 30, then they leave.
    with static_server(site, max_connections=30) as server:
        clients = [server.connect() for _ in range(30)]
        for sock in clients:
            sock.sendall(pipeline(["/s/missing", "/s/dir", "/s/listed/"] * 100))  # and reads none of it
        connections = lambda: list(server.engine.connections.values())  # noqa: E731
        wait_for(lambda: len(connections()) == 30 and all(c.requests_seen for c in connections()))
        for sock in clients:
            sock.close()
        wait_for(lambda: not server.engine.connections)
        assert requests.get(f"{server.url}/s/a.txt", timeout=TIMEOUT).status_code == 200


def test_a_pipelining_client_does_not_starve_others(site):
    # One client pipelines thousands of requests and reads them slowly; another's request is answered at once.
    with static_server(site) as server, server.connect() as greedy:
        greedy.sendall(pipeline(["/s/listed/", "/s/missing"] * 2500))
        for _ in range(5):
            started = time.monotonic()
            response = requests.get(f"{server.url}/s/a.txt", timeout=TIMEOUT)
            assert response.status_code == 200
            assert time.monotonic() - started < 1.0
        # The greedy client still gets every answer, in order.
        statuses = [r[0] for r in read_all(greedy, 5000)]
        assert statuses == [200, 404] * 2500


def test_the_loop_takes_turns_between_pipelined_requests(site):
    # More than PIPELINE_TURN requests in one read: the loop answers a turn's worth, then comes back for the rest.
    calls: list[int] = []
    with static_server(site) as server:
        real_next_round = server.engine.reactor.next_round

        def counting(callback):
            calls.append(1)
            return real_next_round(callback)

        server.engine.reactor.next_round = counting  # type: ignore[method-assign]
        with server.connect() as sock:
            sock.sendall(pipeline(["/s/missing"] * (PIPELINE_TURN * 4)))
            assert [r[0] for r in read_all(sock, PIPELINE_TURN * 4)] == [404] * (PIPELINE_TURN * 4)
    assert len(calls) >= 3


def test_every_open_connection_has_a_deadline(site):
    # Idle, half-sent head, half-sent body, a running app, a response the client does not read, and lingering.
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/wait":
            release.wait(TIMEOUT)
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (b"x" * 65536 for _ in range(200))
        return hello_app(environ, start_response)

    with ServerThread(app, static=(f"/s={site}",)) as server:
        socks = [server.connect() for _ in range(6)]
        try:
            socks[0].sendall(pipeline(["/s/a.txt"]))
            read_response(socks[0])
            socks[1].sendall(b"GET / HTTP/1.1\r\nHo")
            socks[2].sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
            socks[3].sendall(pipeline(["/wait"]))
            socks[4].sendall(pipeline(["/big"]))
            socks[5].sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # refused, then lingering
            wait_for(lambda: len(server.engine.connections) == 6)
            wait_for(lambda: any(flushing for _, _, flushing in loop_snapshot(server)))
            snapshot = loop_snapshot(server)
            assert {state for state, _, _ in snapshot} >= {"idle", "reading", "busy"}
            assert all(deadline < NEVER for _, deadline, _ in snapshot), snapshot
        finally:
            release.set()
            for sock in socks:
                sock.close()
        wait_for(lambda: not server.engine.connections)


def test_an_error_while_answering_closes_only_that_connection_and_logs_one_line(site, caplog):
    with static_server(site) as server:
        real = server.engine.serve_static

        def broken(conn, request, mount):
            if request.path.endswith("boom"):
                raise RuntimeError("disk on fire")
            return real(conn, request, mount)

        server.engine.serve_static = broken  # type: ignore[method-assign]
        caplog.set_level(logging.INFO, logger="server")
        with server.connect() as bystander, server.connect() as victim:
            victim.sendall(pipeline(["/s/a.txt", "/s/boom", "/s/a.txt"]))
            buffer = bytearray()
            assert read_response(victim, buffer)[0] == 200
            assert victim.recv(65536) == b""  # closed, without a half-answer
            bystander.sendall(pipeline(["/s/a.txt"]))
            assert read_response(bystander)[0] == 200
        records = [r for r in caplog.records if "disk on fire" in r.getMessage()]
        assert len(records) == 1
        assert records[0].exc_info is None  # brief: no traceback
        assert "RuntimeError" in records[0].getMessage()


@pytest.mark.parametrize("threads", [2, 0])
def test_a_graceful_stop_never_resets_a_response_under_a_pipelined_request(threads):
    """The server stops while a keep-alive client waits for a big response and has sent its next request behind
    it. Closing with that request unread makes the kernel answer with a reset, which throws away what of the
    response the client had not read yet (it got 128 KB of 2 MB, then ECONNRESET). The connection is drained
    before it closes: the response arrives whole, then the end of the stream."""
    started = threading.Event()
    big = b"b" * (2 * 1024 * 1024)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set()
            time.sleep(0.5)  # the stop and the next request arrive meanwhile
            body = big
        else:
            body = b"next"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = ServerThread(app, threads=threads).__enter__()  # it stops itself: no stop() on the way out
    with small_window_client(server.port, 16384) as sock:  # most of the response waits on the server's side
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        assert started.wait(TIMEOUT)
        server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        received = bytearray()
        while chunk := sock.recv(1 << 20):  # a reset raises ConnectionResetError here
            received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest[: len(big)] == big  # whole; the next request may have been answered too, or dropped unanswered
    wait_for(lambda: not server._thread.is_alive())
    server.listener.sock.close()


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's SIOCOUTQ is asked")


@pytest.mark.parametrize("kernel", [pytest.param("asked", marks=LINUX_ONLY), "cannot say"])
@pytest.mark.parametrize("threads", [2, 0])
def test_a_stop_lets_a_slow_readers_last_response_arrive_whole(threads, kernel, monkeypatch):
    """An idle connection whose last response is still on its way (in the kernel's send queue: a slow reader) is
    not closed by the stop while its client may still send: a request it pipelines after the close would draw
    a reset, which throws away the rest of that response (24 KB of 1 MiB arrived). Where the kernel cannot say
    what is unacknowledged, the connection lingers its whole time rather than take that for nothing."""
    if kernel == "cannot say":
        from server.connection import HTTPConnection

        monkeypatch.setattr(HTTPConnection, "unacknowledged", lambda self: None)
    big = b"b" * (512 * 1024)  # all of it taken by the kernel at once, so the connection goes idle

    def app(environ, start_response):
        body = big if environ["PATH_INFO"] == "/big" else b"next"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = ServerThread(app, threads=threads).__enter__()  # it stops itself: no stop() on the way out
    with small_window_client(server.port, 16384) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        conn = wait_for(lambda: len(conns := list(server.engine.connections.values())) == 1 and conns[0])
        wait_for(lambda: conn.state == "idle" and not conn.flushing and not conn.corked)  # all with the kernel
        server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)
        wait_for(lambda: conn.state != "idle")  # the stop has dealt with it
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        received = bytearray()
        while chunk := sock.recv(1 << 20):  # a reset raises ConnectionResetError here
            received += chunk
    assert bytes(received).partition(b"\r\n\r\n")[2][: len(big)] == big
    wait_for(lambda: not server._thread.is_alive())
    server.listener.sock.close()


def test_a_stop_does_not_wait_out_the_linger_of_a_client_that_has_everything():
    """A client that keeps its socket without reading (a connection pool) never answers our FIN: once it has
    acknowledged the whole response, nothing is left for a reset to destroy, and the stop goes on."""
    started = threading.Event()

    def app(environ, start_response):
        started.set()
        time.sleep(0.3)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = ServerThread(app, threads=2).__enter__()  # it stops itself: no stop() on the way out
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert started.wait(TIMEOUT)
        stopping = time.monotonic()
        server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)
        status, headers, body = read_response(sock)
        assert (status, headers.get("connection"), body) == (200, "close", b"ok")
        wait_for(lambda: not server._thread.is_alive())  # the socket still open on our side
        took = time.monotonic() - stopping
    server.listener.sock.close()
    assert took < 1.5, f"the stop took {took:.1f} s"  # not the 2 s linger (and up to 1 s of sweep) on top


def on_the_loop(server: ServerThread, call: Callable[[], object]) -> object:
    """``call()`` run on the server's loop thread (where deadlines are checked); what it returned."""
    result: list[object] = []
    done = threading.Event()

    def run() -> None:
        result.append(call())
        done.set()

    server.engine.reactor.call_soon_threadsafe(run)
    assert done.wait(TIMEOUT)
    return result[0]


@LINUX_ONLY
@pytest.mark.parametrize("threads", [2, 0])
def test_a_linger_lasts_while_the_client_takes_in_its_response(threads, monkeypatch):
    """A connection the server ends (here a worker retiring, as for --max-requests) lingers after the response,
    reading what the client still sends, so that closing over it does not draw a reset. A slow reader can still
    be taking in the response when the linger's 2 s are up, and a request it pipelines after the close would draw
    the reset that destroys the rest. So the linger goes on while the client's unacknowledged bytes shrink, up
    to --send-timeout in all. The deadlines are driven by hand: the sweep's own checks would make the test a
    matter of timing."""
    monkeypatch.setattr("server.connection.LINGER_SECONDS", 100.0)  # no deadline comes by itself
    big = b"b" * (256 * 1024)  # more than the client's window, and all of it in the server's send buffer at once

    def app(environ, start_response):
        body = big if environ["PATH_INFO"] == "/big" else b"next"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with ServerThread(app, threads=threads, send_timeout=300.0) as server:
        on_the_loop(server, lambda: setattr(server.engine, "draining", True))  # every response says close
        with small_window_client(server.port, 16384) as sock:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            conn = wait_for(lambda: len(conns := list(server.engine.connections.values())) == 1 and conns[0])
            wait_for(lambda: conn.state == "lingering")
            before = on_the_loop(server, conn.unacknowledged)
            received = bytearray(sock.recv(1 << 16))
            wait_for(lambda: on_the_loop(server, conn.unacknowledged) < before)  # taken in: the client acked more
            on_the_loop(server, lambda: conn.check_deadline(conn.deadline))
            assert conn.state == "lingering"  # still taking its response in: not closed under it

            sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")  # after the first deadline
            while chunk := sock.recv(1 << 20):  # a reset raises ConnectionResetError here
                received += chunk
    assert bytes(received).partition(b"\r\n\r\n")[2] == big


@pytest.mark.parametrize("client", ["stops taking", "takes to the end of --send-timeout"])
def test_a_linger_ends_when_the_client_stops_taking_or_at_the_send_timeout(client, monkeypatch):
    """The other side of the rule above: a client that took nothing in since the last look gets no more time, and
    one that keeps taking gets --send-timeout in all. What the kernel reports unacknowledged is played here, so
    that a delayed acknowledgement cannot pass for the client taking more."""
    from server.connection import HTTPConnection

    monkeypatch.setattr("server.connection.LINGER_SECONDS", 100.0)
    reported = [5000]
    monkeypatch.setattr(HTTPConnection, "unacknowledged", lambda self: reported[0])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with ServerThread(app, threads=2, send_timeout=300.0) as server, server.connect() as sock:
        on_the_loop(server, lambda: setattr(server.engine, "draining", True))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        conn = wait_for(lambda: len(conns := list(server.engine.connections.values())) == 1 and conns[0])
        wait_for(lambda: conn.state == "lingering")
        limit = on_the_loop(server, lambda: conn.linger[0])
        reported[0] = 4000
        if client == "stops taking":
            on_the_loop(server, lambda: conn.check_deadline(conn.deadline))
            assert conn.state == "lingering"  # it took 1000 bytes in
            assert conn.deadline <= limit
            on_the_loop(server, lambda: conn.check_deadline(conn.deadline))  # and nothing since
        else:
            on_the_loop(server, lambda: conn.check_deadline(limit))  # taking, but out of time
        assert conn.state == "closed"


def test_pipelined_small_uploads_share_the_turn_of_pipelined_requests(monkeypatch):
    """Only chunks are counted against a connection's share of the loop (CHUNKS_AT_A_TIME): 64 pipelined POSTs
    with small bodies go on after every PIPELINE_TURN answers, as GETs do, not after every fourth body."""
    from server.connection import HTTPConnection

    breaks: list[int] = []
    original = HTTPConnection._next_turn

    def counted(self):
        breaks.append(self.requests_seen)
        original(self)

    monkeypatch.setattr(HTTPConnection, "_next_turn", counted)
    posts = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" * 64
    with ServerThread(hello_app, threads=0) as server, server.connect() as sock:
        sock.sendall(posts)
        assert [status for status, _, _ in read_all(sock, 64)] == [200] * 64
    assert len(breaks) <= 64 // PIPELINE_TURN


def test_a_pipeline_waits_for_every_ready_connection_between_its_goes():
    """Found in review: once a turn took at most EVENTS_PER_TURN events, a pipeline's next go came at the end of
    the turn, ahead of the connections still waiting to be reported: one pipelining client among 200 got 112
    answers before the last of the others got its one. Its next go waits for the round (Reactor.next_round)."""
    order: list[str] = []

    def app(environ, start_response):
        order.append(environ["PATH_INFO"])
        return hello_app(environ, start_response)

    with ServerThread(app, threads=0) as server:
        singles = [server.connect() for _ in range(200)]
        greedy = server.connect()
        try:
            for sock in [*singles, greedy]:  # accepted and registered before the loop is parked
                sock.sendall(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
                assert read_response(sock, bytearray())[0] == 200
            with loop_parked(server):
                order.clear()  # (the loop, which appends, is parked)
                greedy.sendall(pipeline(["/p"] * 400))  # first in the kernel's ready list
                for sock in singles:
                    sock.sendall(b"GET /single HTTP/1.1\r\nHost: h\r\n\r\n")
            for sock in singles:
                assert read_response(sock, bytearray())[0] == 200
            assert [r[0] for r in read_all(greedy, 400)] == [200] * 400
        finally:
            for sock in [*singles, greedy]:
                sock.close()
    last_single = max(i for i, path in enumerate(order) if path == "/single")
    assert order[:last_single].count("/p") <= 2 * PIPELINE_TURN
