"""``--max-requests N --max-requests-jitter J``: workers recycled under load without a single failed request.

The load is several client threads for as long as it takes to see workers replaced a few times: keep-alive
clients (``requests`` sessions and raw sockets that reuse their connection until told to close it) and clients
that open a connection per request. Any exception a client sees (refused, reset, closed without a response, a
timeout) is a failure. The app answers with its process id, so the clients see which worker served them.
"""

from __future__ import annotations

import collections
import re
import signal
import socket
import threading
import time

import pytest
import requests

from server.config import Config
from server.engine import Engine
from tests.server.test_cli import _stat, assert_one_line, exited, run_cli
from tests.support import ROOT, TIMEOUT, ServerProcess, child_pids, read_response, wait_for

LIMIT, JITTER = 50, 10
RECYCLED = 6  # how many workers must have been replaced before the load stops
LOAD_SECONDS = 2.0  # and for how long the load lasts at least
LOAD_DEADLINE = 60.0  # generous: on a busy machine a few hundred requests can take a while


class Load:
    """Client threads hammering ``url`` until ``stop()``; counts answers per pid and keeps every error."""

    def __init__(self, url: str, port: int) -> None:
        self.url = url
        self.port = port
        self.served: collections.Counter[int] = collections.Counter()  # pid -> requests it answered
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        clients = [self._session, self._session, self._raw_keep_alive, self._fresh_connections, self._raw_close]
        self._threads = [threading.Thread(target=self._run, args=(client,), daemon=True) for client in clients]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread is stuck"

    def _record(self, pid: str) -> None:
        assert pid.isdigit(), pid
        with self._lock:
            self.served[int(pid)] += 1  # an int, as child_pids gives them

    def _run(self, client) -> None:
        while not self._stop.is_set():
            try:
                client()
            except Exception as error:  # every kind of failure counts; the test prints them all
                with self._lock:
                    self.errors.append(f"{client.__name__}: {error!r}")

    def _session(self) -> None:
        with requests.Session() as session:
            for _ in range(200):
                if self._stop.is_set():
                    return
                response = session.get(self.url, timeout=TIMEOUT)
                assert response.status_code == 200, response.status_code
                self._record(response.text)

    def _fresh_connections(self) -> None:
        response = requests.get(self.url, headers={"Connection": "close"}, timeout=TIMEOUT)
        assert response.status_code == 200, response.status_code
        self._record(response.text)

    def _raw_keep_alive(self) -> None:
        """One connection reused until the server says Connection: close, as HTTP/1.1 lets a client expect."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            buffer = bytearray()
            while not self._stop.is_set():
                sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                status, headers, body = read_response(sock, buffer)
                assert status == 200, status
                self._record(body.decode())
                if headers.get("connection", "").lower() == "close":
                    return

    def _raw_close(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            status, _, body = read_response(sock)
            assert status == 200, status
            self._record(body.decode())


def recycled(server: ServerProcess) -> list[int]:
    """The limits the workers reported as they asked to be replaced ("served its N requests")."""
    return [int(n) for n in re.findall(r"served its (\d+) requests", server.output())]


# A response that is whole on the wire (its Content-Length sent) while the app is still busy with it: its client
# sends the next request at once, while the worker may be told to stop. Closing that connection after a response
# that promised keep-alive would reset the request (the plain graceful stop does: this app fails it every time).
TAIL_APP = """\
import os, time

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])

    def chunks():
        yield body
        time.sleep(0.005)  # cleanup after the last byte, as a database session's close() might take
        yield b""

    return chunks()
"""


@pytest.mark.parametrize(
    ("workers", "app"), [(2, "tests.server.factory_app:pid_app"), (1, "tests.server.factory_app:pid_app"), (2, "tail")]
)
def test_workers_are_recycled_under_load_without_a_failed_request(tmp_path, workers, app):
    args = ("--workers", str(workers), "--max-requests", str(LIMIT), "--max-requests-jitter", str(JITTER))
    if app == "tail":
        (tmp_path / "tail_app.py").write_text(TAIL_APP)
        app = "tail_app:app"
    with ServerProcess(app, *args, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}) as server:
        with Load(server.url, server.port) as load:
            enough = time.monotonic() + LOAD_SECONDS
            wait_for(
                lambda: (len(recycled(server)) >= RECYCLED and time.monotonic() > enough) or load.errors,
                timeout=LOAD_DEADLINE,
                interval=0.05,
            )
        assert not load.errors, "\n".join(load.errors[:20])
        current = wait_for(lambda: (pids := child_pids(server.proc.pid)) and len(pids) == workers and pids)
        assert len(load.served) > workers  # the pids changed
        # Each worker asked at its own limit, between N and N + J; a replaced worker served at least N (it goes on
        # serving until its successor is forked, so there is no upper bound to check).
        limits = recycled(server)
        assert all(LIMIT <= limit <= LIMIT + JITTER for limit in limits), limits
        for pid, count in load.served.items():
            if pid not in current:
                assert count >= LIMIT, (pid, count)
    assert "Traceback" not in server.output(), server.output()


def test_the_jitter_is_drawn_per_worker_within_its_range():
    def limit(**settings) -> int:
        engine = Engine(Config(threads=1, **settings), lambda environ, start_response: [], [])
        try:
            return engine.max_requests
        finally:
            engine.pool.shutdown()
            engine.reactor.close()

    assert limit() == 0  # never
    assert limit(max_requests=7) == 7
    drawn = {limit(max_requests=100, max_requests_jitter=5) for _ in range(60)}
    assert drawn <= set(range(100, 106)) and len(drawn) > 1
    assert limit(max_requests=0, max_requests_jitter=5) == 0  # jitter alone changes nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-requests", "-1"], "--max-requests: '-1' must be 0 or more"),
        (["--max-requests", "many"], "--max-requests: 'many' is not a whole number"),
        (["--max-requests", "10", "--max-requests-jitter", "x"], "--max-requests-jitter"),
        (["--max-requests", "10", "--reload"], "cannot be combined with --max-requests 10"),
    ],
)
def test_bad_max_requests_settings_are_one_line(args, message):
    assert_one_line(run_cli("tests.server.factory_app:pid_app", "--bind", "127.0.0.1:0", *args), message)


def test_a_stop_ends_a_draining_worker_too_and_waits_for_it():
    # A worker draining after its --max-requests waits for its idle keep-alive connections (up to the keep-alive
    # timeout, long here). SIGTERM to the server must stop it too, closing them, and exit only after it has.
    args = ("--workers", "1", "--max-requests", "2", "--keepalive-timeout", "60")
    server = ServerProcess("tests.server.factory_app:pid_app", *args)
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        _, _, body = read_response(idle)
        first = int(body.decode())

        def replaced() -> bool:
            requests.get(server.url, headers={"Connection": "close"}, timeout=TIMEOUT)
            return f"worker {first}: retiring" in server.output()

        wait_for(replaced)
        started = {first: _stat(first)[19]}
        assert not exited(started)  # still draining: our idle connection keeps it
        server.signal(signal.SIGTERM)
        assert server.wait(TIMEOUT) == 0
        assert exited(started)  # the supervisor waited for it
        assert idle.recv(1) == b""  # closed by the stop, not left to its keep-alive timeout


def test_a_draining_worker_closes_its_copy_of_the_listening_sockets():
    """A worker retiring for --max-requests closes its own listening sockets as a stopping one does (the supervisor
    keeps its copy for the successor): a new client is refused at once and tries again, to be accepted by the
    successor, instead of waiting in a backlog nobody reads."""
    from tests.support import ServerThread

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    # In this process the only copy is the engine's. It ends by itself once drained: no stop() on the way out.
    server = ServerThread(app, max_requests=1).__enter__()
    with requests.Session() as session:  # a keep-alive connection: the drain waits for it
        assert session.get(server.url, timeout=TIMEOUT).status_code == 200
        wait_for(lambda: server.engine.recycling)
        server.engine.reactor.call_soon_threadsafe(server.engine.retire)  # the successor is up: RETIRE_SIGNAL
        wait_for(lambda: server.engine.draining)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    wait_for(lambda: not server._thread.is_alive())
    server.listener.sock.close()


def test_a_worker_that_asked_to_be_recycled_still_stops_on_sigterm():
    """A worker at its --max-requests waits for the supervisor's RETIRE_SIGNAL to drain. A SIGTERM that comes
    first (the supervisor's stop, in the same tick as the recycling; or two SIGTERMs arriving as one) is a stop:
    idle keep-alive connections are closed at once, not left to their --keepalive-timeout. It used to be taken
    for the retirement, and the stop waited for the idle clients."""
    from tests.support import ServerThread

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = ServerThread(app, max_requests=1, keepalive_timeout=60.0).__enter__()  # it stops itself
    with server.connect() as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(idle)[0] == 200
        wait_for(lambda: server.engine.recycling)
        server.engine.reactor.call_soon_threadsafe(server.engine.shutdown, True)  # what SIGTERM does
        server.engine.reactor.call_soon_threadsafe(server.engine.retire)  # and a retirement right behind it
        wait_for(lambda: server.engine.stopping)
        assert not server.engine.draining
        assert idle.recv(1) == b""  # closed by the stop (the socket's timeout would raise first)
        wait_for(lambda: not server._thread.is_alive())
    assert not server.engine.draining
    server.listener.sock.close()


def test_a_retirement_signal_the_worker_did_not_ask_for_is_ignored(caplog):
    """SIGUSR2 is the supervisor's word to a worker at its --max-requests. Sent to any other worker (by hand, by a
    tool), it made it drain and close its listening sockets while the supervisor, counting it alive, started no
    successor: with one worker, new clients waited in a backlog nobody read."""
    from tests.support import ServerThread

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with ServerThread(app) as server, caplog.at_level("WARNING"):
        done = threading.Event()
        server.engine.reactor.call_soon_threadsafe(lambda: (server.engine.retire(), done.set()))
        assert done.wait(TIMEOUT)
        assert not server.engine.draining
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 200  # still accepting
    assert any("did not ask for" in r.getMessage() for r in caplog.records)
