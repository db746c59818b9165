"""What a client can make the server store, what an application can make it send, and framing refused at once.

- Disk and memory: bodies are refused before they are stored when they would pass ``max_body_bytes`` (413) or
  the process's ``max_buffered_bytes`` budget (503 with Retry-After), and what was stored is freed when the
  connection ends. On the old main two trickling clients held 800 MB of spooled disk for an 8 MiB endpoint.
- Applications: a malformed status, header or length is a 500 with nothing of the application's response on
  the wire, and one log line naming the mistake.
- Framing that can never become valid gets its 400 as soon as it is seen, not at a timeout.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import types

import pytest

from server.config import Config
from server.connection import HTTPConnection
from server.engine import Engine
from server.http import Request
from server.listeners import open_listener, parse_bind, resolve_schemes
from server.loop import READ
from tests.support import ROOT, ServerThread, read_response, recv_until_closed, wait_for

TIMEOUT = 10


def length_app(environ, start_response):
    body = environ["wsgi.input"].read()
    data = b"%s %d" % (environ.get("CONTENT_LENGTH", "-").encode(), len(body))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def post_head(length: int, path: str = "/") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n".encode()


def open_temp_files() -> int:
    """How many deleted files this process holds open (spooled bodies are anonymous temporary files)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)"):
                count += 1
        except OSError:
            pass
    return count


# -- the body budget ---------------------------------------------------------------------------------------------


def test_the_default_body_limit_is_fit_for_a_web_site():
    assert Config().max_body_bytes == 16 * 1024 * 1024
    with ServerThread(length_app) as server, server.connect() as sock:
        sock.sendall(post_head(17 * 1024 * 1024))
        status, _, _ = read_response(sock)
    assert status == 413


def test_bodies_past_the_budget_get_503_and_the_budget_comes_back():
    with ServerThread(length_app, max_buffered_bytes=1024 * 1024, body_spool_bytes=64 * 1024) as server:
        before = open_temp_files()
        holder = server.connect()
        holder.sendall(post_head(800_000) + b"x" * 700_000)  # spooled to disk, and then trickling
        wait_for(lambda: server.engine.buffered_bytes >= 700_000)
        held = server.engine.buffered_bytes
        assert held <= 700_000 + 64 * 1024  # what arrived, reserved in 64 KiB steps
        wait_for(lambda: open_temp_files() > before)
        with server.connect() as second:
            second.sendall(post_head(800_000))  # cannot fit: refused before a byte of it is sent or stored
            status, headers, body = read_response(second)
        assert status == 503
        assert headers["retry-after"].isdigit()
        assert server.engine.buffered_bytes == held
        holder.close()  # the trickler leaves: its spooled data is freed at once
        wait_for(lambda: server.engine.buffered_bytes == 0)
        wait_for(lambda: open_temp_files() == before)
        with server.connect() as again:
            again.sendall(post_head(800_000) + b"y" * 800_000)
            status, _, body = read_response(again)
        assert (status, body) == (200, b"800000 800000")
        wait_for(lambda: server.engine.buffered_bytes == 0)


def test_one_client_cannot_hold_the_whole_budget():
    """A client that sends most of several bodies at once and then trickles the rest at the minimum rate holds its
    share of the budget for as long as the trickle lasts (hours, for 16 MiB bodies), and every other client's upload
    got 503 meanwhile. One client (an address; an IPv6 /64; behind a trusted proxy, the client it names) may now
    hold an eighth of the budget, or one largest body if that is more: the others keep their room."""
    settings = {"max_buffered_bytes": 1024 * 1024, "max_body_bytes": 200_000, "body_spool_bytes": 64 * 1024}
    with ServerThread(length_app, **settings) as server:
        # 5 x 190 KB of 200 KB bodies would be the whole budget, had one client the right to it.
        holders = [server.connect() for _ in range(5)]
        try:
            holders[0].sendall(post_head(200_000) + b"h" * 190_000)
            wait_for(lambda: server.engine.buffered_bytes >= 190_000)  # held: the rest of its body never comes
            for sock in holders[1:]:
                sock.sendall(post_head(200_000) + b"h" * 190_000)
                assert read_response(sock)[0] == 503
            address = ("127.0.0.1", server.port)
            with socket.create_connection(address, timeout=TIMEOUT, source_address=("127.0.0.2", 0)) as other:
                other.sendall(post_head(200_000) + b"o" * 200_000)
                status, _, body = read_response(other)
            assert (status, body) == (200, b"200000 200000")
        finally:
            for sock in holders:
                sock.close()
        wait_for(lambda: server.engine.buffered_bytes == 0)


def test_a_budget_holder_is_a_client_not_a_socket_address():
    """IPv4-mapped addresses (a dual-stack socket's IPv4 clients, as under systemd's default ListenStream=PORT) are
    their IPv4 address, each a client of its own: taken as IPv6, all of them were one /64, ::/64, sharing one share.
    An IPv6 client is its /64; a zone id changes nothing."""
    request = Request("POST", "/", "/", "", "HTTP/1.1", [], "h", None, True, 1, False, False)
    with ServerThread(length_app) as server:

        def holder(address: str) -> str:
            return server.engine.budget_holder(types.SimpleNamespace(remote_addr=address), request)  # type: ignore[arg-type]

        assert holder("::ffff:198.51.100.1") == "198.51.100.1" != holder("::ffff:203.0.113.9")
        assert holder("2001:db8::1") == holder("2001:db8::ffff:2") == holder("2001:db8::3%eth0") == "2001:db8::/64"
        assert holder("2001:db8::1") != holder("2001:db8:0:1::1")
        assert holder("") == ""  # a Unix-socket peer


def test_large_unfinished_heads_count_against_the_budget():
    """A head may be 64 KiB and takes the header timeout to arrive: connections holding unfinished heads held
    64 KiB each outside any budget (a gigabyte at the default --max-connections). Past 16 KiB an unfinished head
    takes its bytes from the budget of buffered request data, against its client's share: a client that holds too
    much of it is answered 503 (with Retry-After), and the others keep their room."""
    settings = {"max_buffered_bytes": 1024 * 1024, "max_body_bytes": 100_000}  # one client's share: 160 KiB
    pad = b"X-Pad: " + b"a" * 60_000 + b"\r\n"
    with ServerThread(length_app, **settings) as server:
        holders = [server.connect() for _ in range(4)]
        try:
            for sock in holders[:2]:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + pad)  # and the rest never comes
            wait_for(lambda: server.engine.buffered_bytes >= 120_000)
            refused = []
            for sock in holders[2:]:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + pad)
                status, headers, _ = read_response(sock)
                refused.append((status, "retry-after" in headers))
            assert refused == [(503, True), (503, True)]
            address = ("127.0.0.1", server.port)
            with socket.create_connection(address, timeout=TIMEOUT, source_address=("127.0.0.2", 0)) as other:
                other.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n" + pad + b"\r\n")  # a whole large head: served
                assert read_response(other)[0] == 200
        finally:
            for sock in holders:
                sock.close()
        wait_for(lambda: server.engine.buffered_bytes == 0)


def test_a_large_head_in_pieces_fits_a_small_budget():
    """A head just past 16 KiB takes about its size, in 16 KiB steps: at a body's 64 KiB step, a budget under
    64 KiB answered 503 to a 17 KB head that arrived in two pieces, on an idle server."""
    with ServerThread(length_app, max_buffered_bytes=32 * 1024) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"a" * 17_000 + b"\r\n")
        wait_for(lambda: server.engine.buffered_bytes > 0)  # the first piece is in, and counted
        sock.sendall(b"\r\n")
        assert read_response(sock)[0] == 200
    wait_for(lambda: server.engine.buffered_bytes == 0)


def test_heads_alone_hold_none_of_the_budget():
    # A head declaring a large body reserves nothing until the body arrives: idle heads cannot starve uploads.
    with ServerThread(length_app, max_buffered_bytes=2 * 1024 * 1024) as server:
        idle = [server.connect() for _ in range(10)]
        try:
            for sock in idle:
                sock.sendall(post_head(1024 * 1024))
            wait_for(lambda: sum(c.request is not None for c in list(server.engine.connections.values())) == 10)
            assert server.engine.buffered_bytes == 0
            with server.connect() as sock:
                sock.sendall(post_head(100_000) + b"u" * 100_000)
                assert read_response(sock)[2] == b"100000 100000"
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: server.engine.buffered_bytes == 0)


def test_a_chunked_body_that_outgrows_the_budget_is_refused():
    with ServerThread(length_app, max_buffered_bytes=1024 * 1024) as server, server.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (100_000, b"z" * 100_000)
        status = None
        try:
            for _ in range(30):  # 3 MB offered, 1 MiB allowed
                sock.sendall(chunk)
        except OSError:
            pass  # the server may close while we are still sending
        status, headers, _ = read_response(sock)
        assert status == 503 and "retry-after" in headers
        wait_for(lambda: server.engine.buffered_bytes == 0)


def test_the_budget_is_released_after_every_request():
    with ServerThread(length_app, max_buffered_bytes=100_000) as server, server.connect() as sock:
        buffer = bytearray()
        for _ in range(20):  # 20 x 60 KB through a 100 KB budget: only works if each request gives it back
            sock.sendall(post_head(60_000) + b"q" * 60_000)
            assert read_response(sock, buffer)[2] == b"60000 60000"
        wait_for(lambda: server.engine.buffered_bytes == 0)


# -- applications checked at the edge ----------------------------------------------------------------------------

BAD_RESPONSES = {
    "space in a header name": ("200 OK", [("X Bad", "1")], "not a token"),
    "empty header name": ("200 OK", [("", "1")], "not a token"),
    "colon in a header name": ("200 OK", [("X:Y", "1")], "not a token"),
    "vertical tab in the status": ("200\x0bOK", [], "invalid status"),
    "control in the reason": ("200 O\x0bK", [], "invalid status"),
    "final 100 Continue": ("100 Continue", [], "200 to 599"),
    "final 101": ("101 Switching Protocols", [], "200 to 599"),
    "two-digit status": ("20 OK", [], "invalid status"),
    "no reason separator": ("200", [], "invalid status"),
    "underscore in Content-Length": ("200 OK", [("Content-Length", "1_0")], "digits only"),
    "signed Content-Length": ("200 OK", [("Content-Length", "+10")], "digits only"),
    "superscript digit in Content-Length": ("200 OK", [("Content-Length", "1\xb2")], "digits only"),
    "two equal Content-Lengths": ("200 OK", [("Content-Length", "10"), ("Content-Length", "10")], "more than one"),
    "two different Content-Lengths": ("200 OK", [("Content-Length", "10"), ("content-length", "5")], "more than one"),
    "CRLF in a value": ("200 OK", [("X-A", "a\r\nSet-Cookie: evil=1")], "control character"),
    "NUL in a value": ("200 OK", [("X-A", "a\x00b")], "control character"),
    "escape in a value": ("200 OK", [("X-A", "\x1b[31m")], "control character"),
}


@pytest.mark.parametrize("case", list(BAD_RESPONSES))
def test_an_apps_malformed_response_is_a_500_and_one_log_line(case, caplog):
    status, headers, message = BAD_RESPONSES[case]

    def app(environ, start_response):
        start_response(status, list(headers))
        return [b"0123456789"]

    caplog.set_level(logging.INFO, logger="server")
    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        raw = recv_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert b"0123456789" not in raw and b"X-A" not in raw and b"evil" not in raw  # nothing of the app's
    assert raw.count(b"HTTP/1.1") == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert message in errors[0].getMessage() and "/x" in errors[0].getMessage()
    assert errors[0].exc_info is None  # the mistake is named; no traceback


def test_a_valid_response_with_tabs_and_latin1_still_goes_out():
    def app(environ, start_response):
        start_response("299 Fine\tthanks", [("X-A", "a\tb \xe9"), ("Content-Length", "2")])
        return [b"ok"]

    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (status, headers["x-a"], body) == (299, "a\tb \xe9", b"ok")


# -- protocol: framing that cannot become valid is refused at once ------------------------------------------------

AT_ONCE = {
    "final coding not chunked": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "space after a chunk size": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhel",
    "no CRLF after chunk data": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
    "bare LF after the request line": b"GET / HTTP/1.1\r\n\nHost: h\r\n",
    "two Content-Types": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
    "differing Content-Lengths": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.mark.parametrize("case", list(AT_ONCE))
def test_impossible_framing_gets_400_without_waiting_for_a_timeout(case):
    # Timeouts far longer than the client's patience: only an immediate refusal passes.
    with (
        ServerThread(length_app, header_timeout=60, body_timeout=60) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock,
    ):
        sock.sendall(AT_ONCE[case])
        status, _, _ = read_response(sock)
    assert status == 400


@pytest.mark.parametrize("lengths", [["5, 5"], ["5", "5"], ["5,5", "5"]])
def test_the_app_sees_the_content_length_the_body_was_framed_by(lengths):
    head = "POST / HTTP/1.1\r\nHost: h\r\n" + "".join(f"Content-Length: {v}\r\n" for v in lengths) + "\r\n"
    with ServerThread(length_app) as server, server.connect() as sock:
        sock.sendall(head.encode() + b"hello")
        assert read_response(sock)[2] == b"5 5"


# -- what a review of the hardened paths found -------------------------------------------------------------------


def test_sys_exit_in_a_view_is_a_500_and_the_thread_lives_on(caplog):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/exit":
            raise SystemExit(3)
        return length_app(environ, start_response)

    with ServerThread(app, threads=1) as server:
        for _ in range(3):  # one thread: each of these needs it back
            with server.connect() as sock:
                sock.sendall(b"GET /exit HTTP/1.1\r\nHost: h\r\n\r\n")
                assert read_response(sock)[0] == 500
        with server.connect() as sock:
            sock.sendall(post_head(2) + b"ok")
            assert read_response(sock)[2] == b"2 2"


def test_a_replaced_wsgi_input_without_close_ends_the_request_once():
    closes = []

    class Body:
        def __iter__(self):
            yield b"a"

        def close(self):
            closes.append(1)

    def app(environ, start_response):
        environ["wsgi.input"] = object()  # middleware's stand-in, with no close()
        start_response("200 OK", [("Content-Length", "1")])
        return Body()

    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        buffer = bytearray()
        assert [read_response(sock, buffer)[2] for _ in range(2)] == [b"a", b"a"]  # both answered, in order
    assert closes == [1, 1]


def test_a_file_shorter_than_its_declared_length_closes_the_connection(tmp_path):
    path = tmp_path / "ten"
    path.write_bytes(b"0123456789")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "20")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # the server closes it

    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        raw = recv_until_closed(sock)
    assert raw.endswith(b"0123456789")  # closed after the short body: the next response is not read as its rest
    assert raw.count(b"HTTP/1.1 200") == 1


def test_headers_changed_after_start_response_are_not_sent():
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        start_response("200 OK", headers)
        headers.append(("X-Evil", "a\r\nSet-Cookie: pwn=1"))
        headers.append(("Content-Length", "3"))
        return [b"abc"]

    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (status, body) == (200, b"abc")
    assert "x-evil" not in headers and "set-cookie" not in headers


def test_one_connection_failing_its_deadline_check_stops_no_other_deadline(caplog, monkeypatch):
    with ServerThread(length_app, keepalive_timeout=0.3, header_timeout=0.5) as server:
        victim, other = server.connect(), server.connect()
        victim.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        read_response(victim)
        wait_for(lambda: len(server.engine.connections) == 2)
        check = HTTPConnection.check_deadline

        def broken_for_the_victim(conn: HTTPConnection, now: float) -> None:
            if conn.requests_seen:
                raise RuntimeError("deadline check exploded")
            check(conn, now)

        monkeypatch.setattr(HTTPConnection, "check_deadline", broken_for_the_victim)
        wait_for(lambda: len(server.engine.connections) == 0)  # the victim is closed, the silent one timed out
        assert other.recv(100) == b""  # a connection that never sent anything is closed without a word
        victim.close()
        other.close()


def test_a_file_answering_100_continue_drains_the_unasked_body_before_closing(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"A" * 100)
    with ServerThread(length_app, static=(f"/s={tmp_path}",)) as server, server.connect() as sock:
        sock.sendall(b"PUT /s/a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\nExpect: 100-continue\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 405 and headers["connection"] == "close"
        sock.sendall(b"b" * 200_000)  # a client that did not wait for the 100 sends its body anyway
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # an orderly close, not a reset


def test_the_descriptor_limit_is_raised_to_the_hard_one_once_asked():
    """A shell's soft limit (often 1,024) would cap connections the system allows: the engine raises it."""
    script = (
        "import resource; from server.oserrors import descriptor_limit, UNLIMITED_DESCRIPTORS\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "assert descriptor_limit() == 256\n"
        "expected = UNLIMITED_DESCRIPTORS if hard == resource.RLIM_INFINITY else hard\n"
        "assert descriptor_limit(raise_to_hard=True) == expected, (descriptor_limit(), expected)\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr


class ScriptedListener:
    """A listening socket whose accepts follow a script: an exception to raise, or "real" for the next real one."""

    def __init__(self, sock: socket.socket, script: list) -> None:
        self.sock = sock
        self.script = script

    def _accept(self) -> tuple[int, object]:
        step = self.script.pop(0) if self.script else BlockingIOError(errno.EAGAIN, "nothing left")
        if isinstance(step, BaseException):
            raise step
        return self.sock._accept()


def test_a_failing_accept_skips_a_vanished_client_and_pauses_when_out_of_descriptors():
    """A client that gave up before its connection was accepted (ECONNABORTED) is skipped and the next one
    taken; running out of descriptors (EMFILE) pauses accepting instead of spinning on a listener that stays
    readable or crashing the loop."""
    listener = open_listener(parse_bind("127.0.0.1:0"))
    resolve_schemes([listener], have_certificate=False)
    engine = Engine(Config(threads=1), lambda environ, start_response: [], [listener])
    adopted: list[tuple[socket.socket, object]] = []
    paused: list[str] = []
    engine.adopt = lambda sock, peer, local, tls=False: adopted.append((sock, peer))  # type: ignore[method-assign]
    engine.pause_accepting = lambda reason, seconds=0.5: paused.append(reason)  # type: ignore[method-assign]
    (acceptor,) = engine._acceptors
    try:
        with socket.create_connection(listener.sock.getsockname(), timeout=TIMEOUT) as client:
            acceptor.sock = ScriptedListener(
                listener.sock, [ConnectionAbortedError(errno.ECONNABORTED, "gone"), "real"]
            )
            acceptor.handle_event(READ)
            assert len(adopted) == 1 and not paused
            sock, peer = adopted[0]
            assert peer == client.getsockname() and sock.fileno() >= 0
            sock.close()

            acceptor.sock = ScriptedListener(listener.sock, [OSError(errno.EMFILE, "Too many open files"), "real"])
            acceptor.handle_event(READ)
            assert len(adopted) == 1  # nothing more taken this turn
            assert paused and "Too many open files" in paused[0]
    finally:
        engine.pool.shutdown()
        engine.reactor.close()
        listener.sock.close()
