"""A client that sends a pathological request head cannot stall the other clients (issue 9, item 1).

The event loop parses every head, and static files are answered on the loop thread; a framework view runs in
a worker thread but shares the GIL with the loop. So a parser that takes seconds on one crafted 64 KB head
(the old If-None-Match pattern took 20 s or more on 65,000 spaces) freezes every connection. Here one client
keeps sending such heads while another connection's requests must each be answered within 100 ms.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework import App, FileResponse, Request
from tests.support import ServerThread, read_response, wait_for

SOCKET_TIMEOUT = 10.0
ANSWER_WITHIN = 0.1  # seconds, from sending a request to having its whole response
PROBES = 7
RUN = 65_000  # characters of the pathological value: the head stays under the 64 KiB limit


def head(target: str, field: str, value: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n{field}: {value}\r\n\r\n".encode("latin-1")


# The server strips blanks around a field value, so a run meant to reach a list parser starts after a comma.
ATTACKS = {
    # The header-field pattern that was once a regex; the control character at the end makes it a 400.
    "field-value-spaces": head("/ping", "X", " " * RUN + "\x01"),
    "field-value-tabs": head("/ping", "X", "x" + "\t" * RUN + "x"),
    # The entity-tag list of a static mount, parsed on the loop thread.
    "static-if-none-match-spaces": head("/s/file.txt", "If-None-Match", "," + " " * RUN + "x"),
    "static-if-none-match-tags": head("/s/file.txt", "If-None-Match", '"a",' + " " * RUN + "x"),
    "static-if-none-match-comma-space": head("/s/file.txt", "If-None-Match", ", " * (RUN // 2) + "x"),
    "static-if-match-tabs": head("/s/file.txt", "If-Match", "," + "\t" * RUN + "x"),
    "static-range-commas": head("/s/file.txt", "Range", "bytes=" + "," * RUN + "x"),
    # The same rules in a framework view (FileResponse), in a worker thread that holds the GIL.
    "view-if-none-match-spaces": head("/file", "If-None-Match", "," + " " * RUN + "x"),
    "view-if-range-quote-backslash": head("/file", "If-Range", '"\\' * (RUN // 2)),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow-head-site")
    (root / "file.txt").write_bytes(b"static file\n")
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[ServerThread]:
    app = App(__name__, csrf=False)

    @app.route("/ping")
    def ping(request: Request) -> str:
        return "pong"

    @app.route("/file")
    def file(request: Request) -> FileResponse:
        return FileResponse(site / "file.txt", request)

    with ServerThread(app, static=(f"/s={site}",)) as running:
        yield running


class Attacker:
    """A client that sends ``request`` again and again, each time on a new connection, until stopped."""

    def __init__(self, server: ServerThread, request: bytes) -> None:
        self.server = server
        self.request = request
        self.sent = 0
        self.answered = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="attacker", daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.server.connect(SOCKET_TIMEOUT) as sock:
                    sock.sendall(self.request)
                    self.sent += 1
                    sock.recv(65536)  # the start of the answer is enough: the server has parsed the head
                    self.answered += 1
            except OSError:
                return  # a server too slow to answer within the socket timeout: the probes will say so

    def __enter__(self) -> Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(SOCKET_TIMEOUT * 2)


def answer_time(sock: socket.socket, buffer: bytearray) -> float:
    """Seconds from sending one request on ``sock`` to having read its whole response."""
    started = time.perf_counter()
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(sock, buffer)
    elapsed = time.perf_counter() - started
    assert (status, body) == (200, b"pong")
    return elapsed


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_pathological_head_does_not_stall_other_connections(server: ServerThread, attack: str) -> None:
    with server.connect(SOCKET_TIMEOUT) as probe:
        buffer = bytearray()
        answer_time(probe, buffer)  # the connection and the app are warm before anything is measured
        with Attacker(server, ATTACKS[attack]) as attacker:
            wait_for(lambda: attacker.sent >= 1, timeout=SOCKET_TIMEOUT)
            try:
                times = [answer_time(probe, buffer) for _ in range(PROBES)]
            except OSError as error:  # a timeout, or the server giving up on the connection it left waiting
                pytest.fail(f"no answer on another connection while {attack} was being parsed: {error!r}")
            # The attack was going on all along: heads kept arriving while the probes were answered.
            assert attacker.sent >= 2 or attacker.answered == 0
        # The median: one probe delayed by a busy shared machine is noise; a parser holding the GIL for
        # seconds delays every one of them.
        assert statistics.median(times) < ANSWER_WITHIN, f"answer times {[round(t, 3) for t in times]} s"
        assert attacker.answered >= 1, "the pathological request itself was never answered"
