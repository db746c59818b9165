"""``--threads 0``: the application runs on the event loop thread (``server.workers.OnTheLoop``).

What must not change when the thread hand-off goes away: responses in order on a pipelined connection (and the
loop still turns to other clients every ``PIPELINE_TURN`` requests), a slow reader of an iterable response parks
it instead of holding the loop, PEP 3333's ``write()`` still pushes back on a slow reader and gives up on one that
reads nothing, an application error is one 500 for one request, and static files, bodies and chunked uploads work
as before. The property at the end sends random pipelined batches, well-formed and not, and checks that the loop
answers them exactly as the threaded server does.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from server.connection import HIGH_WATER, PIPELINE_TURN
from server.engine import Engine
from tests.server.test_slow_clients import ended, small_window_client
from tests.support import ROOT, ServerProcess, ServerThread, child_pids, read_response, wait_for

TIMEOUT = 10


def echo_app(environ, start_response):
    """The method, the path and the body back (and at /thread, which thread ran it)."""
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("this request fails")
    if environ["PATH_INFO"] == "/thread":
        body = threading.current_thread().name.encode()
    else:
        body = environ["wsgi.input"].read()
    data = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}".encode() + b"\n" + body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture(scope="module")
def loop_server():
    with ServerThread(echo_app, threads=0) as server:
        yield server


def test_the_application_runs_on_the_loop_thread(loop_server):
    reply = requests.post(loop_server.url + "/x", data=b"hello", timeout=TIMEOUT)
    assert (reply.status_code, reply.content) == (200, b"POST /x 5\nhello")
    # test-server: the thread that runs the engine's loop.
    assert requests.get(loop_server.url + "/thread", timeout=TIMEOUT).content == b"GET /thread 11\ntest-server"
    assert not [t for t in threading.enumerate() if t.name.startswith("app-")]  # and no pool was started


def test_a_chunked_upload_and_an_error_on_the_loop(loop_server):
    pieces = iter([b"abc", b"defg"])
    assert requests.put(loop_server.url + "/c", data=pieces, timeout=TIMEOUT).content.endswith(b"\nabcdefg")
    assert requests.get(loop_server.url + "/fail", timeout=TIMEOUT).status_code == 500
    assert requests.get(loop_server.url + "/after", timeout=TIMEOUT).content.startswith(b"GET /after 0")


def test_pipelined_requests_are_answered_in_order_with_turns_for_others(loop_server):
    count = PIPELINE_TURN * 3 + 5
    batch = b"".join(f"GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(count))
    with loop_server.connect() as sock, loop_server.connect() as other:
        sock.sendall(batch)
        other.sendall(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
        buffer = bytearray()
        bodies = [read_response(sock, buffer)[2] for _ in range(count)]
        assert read_response(other)[2].startswith(b"GET /other 0")
    assert [body.split(b" ")[1] for body in bodies] == [f"/{i}".encode() for i in range(count)]


def test_a_slow_reader_parks_its_response_and_the_loop_serves_others():
    chunks = [bytes([i]) * 65536 for i in range(64)]

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return iter(chunks)
        return echo_app(environ, start_response)

    with ServerThread(app, threads=0) as server, small_window_client(server.port) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.on_drain for c in list(server.engine.connections.values())))
        started = time.monotonic()
        assert requests.get(server.url + "/meanwhile", timeout=TIMEOUT).status_code == 200
        assert time.monotonic() - started < 1.0
        status, _, body = read_response(sock)
    assert (status, body) == (200, b"".join(chunks))


class WriteApp:
    """Sends ``size`` bytes through PEP 3333's write() and notes the most output ever queued for its client."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.engine: Engine | None = None
        self.most_queued = 0

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/small":
            return echo_app(environ, start_response)
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for i in range(self.size // 65536):
            write(bytes([i % 256]) * 65536)
            if self.engine is not None:  # in this process: note the most output ever queued
                queued = max(len(conn.out) for conn in list(self.engine.connections.values()))
                self.most_queued = max(self.most_queued, queued)
        return []


def test_write_pushes_back_on_a_slow_reader_without_losing_a_byte():
    app = WriteApp(4 * 1024 * 1024)
    with ServerThread(app, threads=0) as server, small_window_client(server.port) as sock:
        app.engine = server.engine
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200
    assert body == b"".join(bytes([i % 256]) * 65536 for i in range(app.size // 65536))
    assert app.most_queued <= HIGH_WATER + 65536  # write() waited instead of queueing the rest


def test_write_gives_up_on_a_reader_that_reads_nothing_and_the_loop_goes_on():
    app = WriteApp(64 * 1024 * 1024)
    with ServerThread(app, threads=0, send_timeout=0.5) as server, small_window_client(server.port) as stuck:
        app.engine = server.engine
        stuck.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.flushing for c in list(server.engine.connections.values())))
        # The loop is held for at most the send timeout, then it serves again; the stuck client is closed.
        assert requests.get(server.url + "/small", timeout=TIMEOUT).status_code == 200
        wait_for(lambda: ended(stuck))
    assert app.most_queued <= HIGH_WATER + 65536  # not 64 MiB in memory for a client that reads nothing


def test_static_files_and_the_application_side_by_side(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"A" * 100_000)
    with ServerThread(echo_app, threads=0, static=(f"/s={tmp_path}",)) as server, server.connect() as sock:
        sock.sendall(b"GET /s/a.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /app HTTP/1.1\r\nHost: h\r\n\r\n")
        buffer = bytearray()
        assert read_response(sock, buffer)[2] == b"A" * 100_000
        assert read_response(sock, buffer)[2].startswith(b"GET /app 0")


def test_the_command_line_takes_threads_0_and_refuses_less():
    refused = subprocess.run(
        [sys.executable, "-m", "server", "apps.hello:app", "--threads", "-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--threads" in refused.stderr and "0 or more" in refused.stderr


# -- the property: the loop answers exactly as the threaded server does -----------------------------------------

REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET /bad HTTP/1.1\r\n\r\n",  # no Host: 400, and the connection ends
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n",  # a bare LF: 400
]


def answers(server: ServerThread, batch: list[bytes]) -> list[tuple[int, bytes]]:
    """Every response to the pipelined ``batch``, until the server closes the connection."""
    found = []
    with server.connect() as sock:
        sock.sendall(b"".join(batch))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        buffer = bytearray()
        for request in batch:
            try:
                status, _, body = read_response(sock, buffer, to_head=request.startswith(b"HEAD "))
            except ConnectionError:
                break
            found.append((status, body))
        assert not buffer and not sock.recv(1)  # nothing more: no response to a request that was not sent
    return found


@pytest.fixture(scope="module")
def threaded_server():
    with ServerThread(echo_app, threads=2) as server:
        yield server


@settings(max_examples=40)
@given(batch=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=PIPELINE_TURN * 2 + 4))
def test_the_loop_answers_any_pipelined_batch_as_the_threads_do(loop_server, threaded_server, batch):
    on_the_loop = answers(loop_server, batch)
    assert on_the_loop == answers(threaded_server, batch)
    assert on_the_loop  # every batch gets at least one answer (its first request's)


@pytest.mark.parametrize("loop", ["epoll", "poll", "select"])
def test_the_loop_rests_when_nothing_happens_whatever_its_connections_went_through(loop):
    """Connections on the loop are registered steady (level-triggered), which keeps reporting a ready socket
    until its handler changes what it waits for: a handler that forgot would spin the loop at 100% CPU. After a
    parked response whose client vanished, a refused request left lingering, a half-closed client and an idle
    keep-alive one, the loop must go back to sleeping between sweeps."""
    chunks = [b"x" * 65536] * 64

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return iter(chunks)
        return echo_app(environ, start_response)

    server = ServerThread(app, threads=0, loop=loop, send_timeout=1.0)
    waits = []
    real_wait = server.engine.reactor.poller.wait
    server.engine.reactor.poller.wait = lambda timeout: waits.append(timeout) or real_wait(timeout)  # type: ignore[method-assign]
    with server:
        vanished = small_window_client(server.port)
        vanished.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.on_drain for c in list(server.engine.connections.values())))
        vanished.close()
        with server.connect() as refused, server.connect() as half, server.connect() as idle:
            refused.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400, then lingering
            half.sendall(b"GET /h HTTP/1.1\r\nHost: h\r\n\r\n")
            half.shutdown(socket.SHUT_WR)
            idle.sendall(b"GET /i HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(refused)[0] == 400
            assert read_response(half)[0] == 200 and read_response(idle)[0] == 200
            wait_for(lambda: len(server.engine.connections) == 2)  # the refused one lingers, the idle one stays
            before = len(waits)
            time.sleep(0.5)  # measuring what the loop does in half a second of quiet
            woke = len(waits) - before
    assert woke < 25, f"the loop woke {woke} times in 0.5 s of quiet"


# -- output held for the end of the loop's turn (HTTPConnection.uncork) ------------------------------------------


class DrippingSocket:
    """A connection's socket that counts the sends reaching the kernel and, given ``most``, is a slow client's: every
    other send is refused (EAGAIN) and the others take at most ``most`` bytes, so output is held back for many
    turns of the loop, deterministically."""

    def __init__(self, sock: socket.socket, most: int | None = None) -> None:
        self.sock = sock
        self.most = most
        self.sends = 0

    def send(self, data, *flags):
        if self.most is not None:
            if self.sends % 2 or not self.most:  # most=0: a client that reads nothing
                self.sends += 1
                raise BlockingIOError
            data = memoryview(data)[: self.most]
        self.sends += 1
        return self.sock.send(data, *flags)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def dripping(server: ServerThread, sock: socket.socket, most: int | None = None) -> DrippingSocket:
    """Put a DrippingSocket under the server's end of ``sock``, after one request has made that connection idle."""
    sock.sendall(b"GET /warm-up HTTP/1.1\r\nHost: h\r\n\r\n")
    read_response(sock)
    conn = wait_for(lambda: len(conns := list(server.engine.connections.values())) == 1 and conns[0])
    wait_for(lambda: conn.state == "idle")  # a worker may still be finishing the response its client has read
    conn.sock = DrippingSocket(conn.sock, most)
    return conn.sock


@pytest.mark.parametrize("threads", [0, 2])
def test_the_responses_of_one_turn_leave_in_one_send(tmp_path: Path, threads):
    """Pipelined requests answered on the loop (any application with --threads 0; small files always) in one turn
    are sent together at the turn's end: one system call, and one wakeup of the client, not one per response."""
    (tmp_path / "f.txt").write_bytes(b"file")
    with ServerThread(echo_app, threads=threads, static=(f"/s={tmp_path}",)) as server, server.connect() as sock:
        counting = dripping(server, sock)
        path = "/s/f.txt" if threads else "/app"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode() * PIPELINE_TURN)  # one segment, one recv
        buffer = bytearray()
        bodies = {read_response(sock, buffer)[2] for _ in range(PIPELINE_TURN)}
    assert bodies == ({b"file"} if threads else {b"GET /app 0\n"})
    assert counting.sends == 1


@pytest.mark.parametrize("threads", [0, 2])
def test_held_output_the_socket_takes_slowly_comes_whole_and_reading_resumes(tmp_path: Path, threads):
    """Held output the socket does not take at the turn's end is flushed by the loop over later turns, while it
    serves others; once it is out the connection reads again (a one-shot registration must be re-armed for it)."""
    (tmp_path / "f.txt").write_bytes(b"F" * 5000)
    with ServerThread(echo_app, threads=threads, static=(f"/s={tmp_path}",)) as server, server.connect() as sock:
        dripping(server, sock, most=500)
        sock.sendall(b"GET /s/f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        assert requests.get(server.url + "/meanwhile", timeout=TIMEOUT).status_code == 200
        assert read_response(sock)[2] == b"F" * 5000
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock)[2].startswith(b"GET /next 0")


def test_a_pipeline_past_its_turn_waits_for_held_output_to_drain():
    """Two turns' worth of pipelined requests and the start of another: the output is still draining when the loop
    comes back to the connection for the rest, which must go on flushing, not switch to reading the next request
    (whose client, waiting for the answers, would wait forever)."""
    with ServerThread(echo_app, threads=0) as server, server.connect() as sock:
        dripping(server, sock, most=100)
        count = PIPELINE_TURN * 2
        sock.sendall(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n" * count + b"GET /last HTTP/1.1\r\n")
        buffer = bytearray()
        assert [read_response(sock, buffer)[2] for _ in range(count)] == [b"GET /p 0\n"] * count
        sock.sendall(b"Host: h\r\n\r\n")
        assert read_response(sock, buffer)[2] == b"GET /last 0\n"


@pytest.mark.parametrize(
    ("last", "status"),
    [
        (b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200),  # the last response: closing follows
        (b"GET /bad HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", 400),  # a refusal: lingering follows
    ],
)
def test_held_output_goes_out_whole_before_the_connection_ends(last, status):
    with ServerThread(echo_app, threads=0) as server, server.connect() as sock:
        dripping(server, sock, most=100)
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" * 3 + last)
        buffer = bytearray()
        assert [read_response(sock, buffer)[0] for _ in range(4)] == [200, 200, 200, status]
        wait_for(lambda: ended(sock))


def test_a_connections_last_response_waits_for_the_end_of_the_turn_like_any_other():
    """A response after which the connection closes is held for the end of the turn too, so that a turn's closing
    responses leave together (each sent at once woke the client per connection); the close follows it there.
    The application looks from a loop callback, which runs after the turn's events and before its end."""
    seen: list[int] = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/bye":
            server.engine.reactor.call_soon_threadsafe(lambda: seen.append(counting.sends))
        return echo_app(environ, start_response)

    with ServerThread(app, threads=0) as server, server.connect() as sock:
        counting = dripping(server, sock)
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert read_response(sock)[2] == b"GET /bye 0\n"
        wait_for(lambda: ended(sock))
        assert seen == [0] and counting.sends == 1
        wait_for(lambda: not server.engine.connections)


class ResettingSocket:
    """A connection's socket whose client is gone: every send fails as a reset would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data, *flags):
        raise ConnectionResetError("reset by the test")

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_last_response_whose_client_is_gone_still_ends_the_connection():
    """The held last response fails at the end of the turn: the connection must close and be forgotten all the
    same (it is still busy with that response then, which on its own would keep it open for good)."""
    with ServerThread(echo_app, threads=0) as server, server.connect() as sock:
        dripping(server, sock)
        conn = next(iter(server.engine.connections.values()))
        conn.sock = ResettingSocket(conn.sock.sock)
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        wait_for(lambda: conn.state == "closed")
        wait_for(lambda: not server.engine.connections)


def test_100_continue_follows_the_responses_held_before_it():
    with ServerThread(echo_app, threads=0) as server, server.connect() as sock:
        dripping(server, sock)
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
        )
        buffer = bytearray()
        answers = [read_response(sock, buffer)[::2] for _ in range(3)]
    assert answers == [(200, b"GET /a 0\n"), (100, b""), (200, b"POST /b 5\nhello")]


def test_a_reader_that_keeps_each_write_waiting_holds_the_loop_for_one_send_timeout_in_all():
    """write() on the loop waits for a slow reader, and all its waits for one response share one --send-timeout.
    A reader just fast enough for each 256 KiB write() to end in time (32 KiB every 50 ms) held every other client
    for as long as the whole 12 MiB response took, 25 s with a timeout of 2.5 s."""

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/small":
            return echo_app(environ, start_response)
        write = start_response("200 OK", [("Content-Length", str(48 * 262144))])
        for _ in range(48):
            write(b"w" * 262144)
        return []

    received = 0
    done = threading.Event()

    def read_slowly(sock: socket.socket) -> None:
        nonlocal received
        with contextlib.suppress(OSError):
            while not done.is_set() and (chunk := sock.recv(32768)):
                received += len(chunk)
                time.sleep(0.05)  # the pace of the slow reader, not a wait for anything

    with ServerThread(app, threads=0, send_timeout=2.5) as server, small_window_client(server.port, 16384) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = threading.Thread(target=read_slowly, args=(slow,), daemon=True)
        reader.start()
        wait_for(lambda: received > 0)
        asked = time.monotonic()
        try:
            assert requests.get(server.url + "/small", timeout=TIMEOUT).status_code == 200
        finally:
            waited = time.monotonic() - asked
            done.set()
            reader.join(TIMEOUT)
    assert waited < 2.5 + 2.0, f"another client waited {waited:.1f} s"


def test_the_applications_own_time_between_writes_is_not_counted_as_waiting():
    """The send timeout bounds how long write() waits for the reader on the loop, not how long the application
    takes between its write() calls: a second write() that must wait a moment is not cut for the time the
    application spent before it."""
    half = b"h" * (8 * 1024 * 1024)  # more than the kernel takes at once: each write() waits for the reader
    second = threading.Event()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", str(2 * len(half)))])
        write(half)
        time.sleep(1.2)  # the application working, longer than the send timeout
        second.set()
        write(half)
        return []

    with ServerThread(app, threads=0, send_timeout=1.0) as server, small_window_client(server.port, 16384) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        # The client reads fast (only lengths are compared on the way), except while the application works.
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            received += receive(sock)
        body_starts = end + 4
        while len(received) < body_starts + len(half):
            received += receive(sock)
        assert second.wait(TIMEOUT)  # not reading meanwhile: the second write() finds the socket full
        while len(received) < body_starts + 2 * len(half):
            received += receive(sock)
    assert received[body_starts:] == half + half


def receive(sock: socket.socket) -> bytes:
    """The next bytes from ``sock``; the end of the stream is a failure, not something to loop on."""
    chunk = sock.recv(1 << 20)
    assert chunk, "the server closed the connection"
    return chunk


def test_each_response_has_its_own_write_budget():
    """Two write() responses on one keep-alive connection, each waiting 0.6 s for its reader with a send timeout
    of 1 s: the second starts with a whole budget, not with what the first left."""
    size = 16 * 1024 * 1024  # more than the kernel's buffers on both sides hold: write() waits for the reader

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", str(size))])
        for _ in range(size // (1024 * 1024)):
            write(b"r" * (1024 * 1024))
        return []

    with ServerThread(app, threads=0, send_timeout=1.0) as server, server.connect() as sock:
        buffered = bytearray()
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.6)  # the reader away: what the response waits for, not a wait for something to happen
            status, _, body = read_response(sock, buffered)
            assert (status, len(body)) == (200, size)


def test_a_socket_that_reports_room_but_takes_nothing_cannot_hold_the_loop(monkeypatch):
    """Writable by poll() yet taking nothing (TCP under memory pressure) is no progress: once the budget is spent,
    write() gives up instead of asking again for ever, with the loop and every other client held."""
    from server.connection import HTTPConnection

    monkeypatch.setattr(HTTPConnection, "_write_some", lambda self: False)  # the socket takes nothing
    app = WriteApp(8 * 1024 * 1024)
    with ServerThread(app, threads=0, send_timeout=0.5) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.flushing for c in list(server.engine.connections.values())))  # write() waits
        # Now the client reads what is on its way, so the socket has room again, and write() finds it does.
        reader = threading.Thread(target=read_to_the_end, args=(sock,), daemon=True)
        reader.start()
        asked = time.monotonic()
        assert requests.get(server.url + "/small", timeout=TIMEOUT).status_code == 200
        assert time.monotonic() - asked < 0.5 + 2.0
        reader.join(TIMEOUT)


def read_to_the_end(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(1 << 20):
            pass


def test_a_graceful_stop_lets_held_output_out_whole():
    """The stop closes idle keep-alive connections at once; one whose last response is still held for the end of
    the turn is not idle yet (its close sent what the socket took at once and dropped the rest)."""

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/stop":
            server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)  # runs before the turn ends
        return echo_app(environ, start_response)

    server = ServerThread(app, threads=0).__enter__()  # it stops itself: no stop() on the way out
    with contextlib.closing(server.listener.sock), server.connect() as sock:
        dripping(server, sock, most=100)
        sock.sendall(b"GET /stop HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock)[2] == b"GET /stop 0\n"
        wait_for(lambda: ended(sock))
        wait_for(lambda: not server._thread.is_alive())


def test_a_streamed_block_is_not_held_while_the_application_makes_the_next():
    """PEP 3333: a block yielded (or passed to write()) may not wait for the next one. Only whole responses wait
    for the end of the turn; a streamed body with --threads 0 sent nothing until the application returned."""
    shown = threading.Event()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/write":
            write(b"first\n")
            shown.wait(TIMEOUT)
            return [b"second\n"]

        def body():
            yield b"first\n"
            shown.wait(TIMEOUT)  # the next block takes until the client has shown the first: a deadlock if held
            yield b"second\n"

        return body()

    with ServerThread(app, threads=0) as server:
        for path in ("/iterable", "/write"):
            shown.clear()
            with server.connect(timeout=2.0) as sock:  # less than the application's wait: a held block times out
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                got = b""
                while b"first" not in got:
                    got += sock.recv(65536)
                shown.set()
                assert read_response(sock, bytearray(got))[2] == b"first\nsecond\n"


def test_a_write_waiting_for_its_reader_lets_the_turns_other_answers_out_first():
    """write() waits for a slow reader on the loop; the answers the turn held for other connections went out only
    after it, so a client reading them first kept the writer's reader waiting into its send timeout."""
    big = 4 * 1024 * 1024

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/hold":
            time.sleep(0.5)  # holds the loop, so that the next two requests are read in one turn
        if environ["PATH_INFO"] == "/write":
            write = start_response("200 OK", [("Content-Length", str(big))])
            for _ in range(big // 65536):
                write(b"w" * 65536)
            return []
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = ServerThread(app, threads=0, send_timeout=3.0)
    with server, server.connect() as hold, server.connect() as a, small_window_client(server.port) as writer:
        hold.sendall(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.state == "busy" for c in list(server.engine.connections.values())))
        a.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        writer.sendall(b"GET /write HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(a)[2] == b"ok"  # first, as a client of both would
        assert len(read_response(writer)[2]) == big


@pytest.mark.parametrize("threads", [0, 2])
def test_after_held_output_drains_the_keepalive_timeout_applies_again(tmp_path: Path, threads):
    """Flushing held output sets the send's deadline (60 s by default); once it is out, the connection is idle
    and its keep-alive timeout (5 s) must apply again, not the send's."""
    (tmp_path / "f.txt").write_bytes(b"F" * 3000)
    with ServerThread(echo_app, threads=threads, static=(f"/s={tmp_path}",)) as server, server.connect() as sock:
        dripping(server, sock, most=100)
        sock.sendall(b"GET /s/f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock)[2] == b"F" * 3000
        conn = next(iter(server.engine.connections.values()))
        wait_for(lambda: conn.state == "idle" and not conn.flushing)
        assert conn.deadline - time.monotonic() <= server.config.keepalive_timeout


def test_after_a_send_timeout_no_buffered_request_runs():
    """A connection whose held output timed out is done: the requests still buffered behind it are not run (the
    drain's follow-up read them as if all was well)."""
    ran = []

    def app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    with ServerThread(app, threads=0, send_timeout=0.5) as server, server.connect() as sock:
        stuck = dripping(server, sock, most=0)  # takes nothing, ever
        ran.clear()
        sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(PIPELINE_TURN * 2 + 1)))
        wait_for(lambda: ended(sock))
        # One go of PIPELINE_TURN: the next waits for the round's end (Reactor.next_round), after the turn's held
        # output went out or began to flush, and a connection whose output is flushing reads no further.
        assert stuck.sends and ran == [f"/{i}" for i in range(PIPELINE_TURN)]


# -- found in review: each of these failed before its fix ---------------------------------------------------------


@pytest.mark.parametrize("loop", ["epoll", "poll", "select"])
def test_a_long_pipeline_then_end_of_stream_gets_every_answer(loop):
    """Past PIPELINE_TURN the connection yields to others; its steady registration must not report the client's
    end of stream meanwhile, or the connection closes under requests already buffered (32 of 40 were answered)."""
    count = PIPELINE_TURN * 2 + 8
    with ServerThread(echo_app, threads=0, loop=loop) as server, server.connect() as sock:
        sock.sendall(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n" * count)
        sock.shutdown(socket.SHUT_WR)
        buffer = bytearray()
        assert [read_response(sock, buffer)[0] for _ in range(count)] == [200] * count


@pytest.mark.parametrize("threads", [0, 4])
def test_a_big_listing_its_client_does_not_read_holds_nobody_else(tmp_path: Path, threads):
    """A static answer larger than the output high-water mark is queued, not waited for: the loop must not wait
    for that client's socket to drain (it did, for the whole send timeout, with any --threads)."""
    for i in range(20_000):
        (tmp_path / (f"{i:05}-" + "x" * 120)).touch()  # a listing of about 6 MB: more than socket buffers take
    settings = dict(threads=threads, static=(f"/s={tmp_path}",), static_listing=True, send_timeout=4.0)
    with ServerThread(echo_app, **settings) as server, small_window_client(server.port) as stuck:
        stuck.sendall(b"GET /s/ HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.flushing for c in list(server.engine.connections.values())))
        started = time.monotonic()
        assert requests.get(server.url + "/other", timeout=TIMEOUT).status_code == 200
        assert time.monotonic() - started < 1.0


def test_a_request_sent_while_the_loop_was_busy_is_answered_not_reset():
    """With --threads 0 a slow request holds the loop; a keep-alive connection whose idle deadline passes meanwhile
    but whose client sent its next request in time must be answered, not closed (a reset) by the sweep."""

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1.5)  # the application holding the loop: what the test is about
        return echo_app(environ, start_response)

    server = ServerThread(app, threads=0, keepalive_timeout=1.0)
    with server, server.connect() as early, server.connect() as slow:
        early.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(early)[0] == 200  # now idle, for at most 1 s
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.state == "busy" for c in list(server.engine.connections.values())))
        early.sendall(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")  # in time: well within its idle second
        assert read_response(early)[2].startswith(b"GET /2 0")
        assert read_response(slow)[0] == 200


def test_a_parked_response_is_closed_when_the_server_stops():
    """The iterable's close() must run even if the server stops while the response is parked: with --threads 0
    it is handed to the loop, which has stopped by then (it was never called)."""
    closed = threading.Event()

    class Body:
        def __iter__(self):
            return iter([b"z" * 65536] * 200)

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body()

    server = ServerThread(app, threads=0).__enter__()
    with small_window_client(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: any(c.on_drain for c in list(server.engine.connections.values())))
        server.stop(graceful=False)  # with the client still there, reading nothing
        assert closed.is_set()


def test_a_slow_write_reader_does_not_get_its_worker_killed():
    """write() waits for its reader on the loop; the supervisor, which kills a worker whose loop stops sending
    heartbeats after --timeout + 1 s, must keep hearing them meanwhile (it killed the worker, and every other
    client of it, after 2 s)."""
    args = ("tests.server.test_on_the_loop:big_write_app", "--threads", "0", "--workers", "2", "--timeout", "1")
    with ServerProcess(*args, "--send-timeout", "4") as server, small_window_client(urlsplit(server.url).port) as slow:
        supervisor = server.proc.pid
        workers = wait_for(lambda: len(pids := child_pids(supervisor)) == 2 and pids)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(3.0)  # longer than --timeout + 1: what the supervisor would have taken for a frozen loop
        assert "has not turned" not in server.output()
        assert child_pids(supervisor) == workers


big_write_app = WriteApp(64 * 1024 * 1024)  # for the subprocess above (its engine is not this process's)
