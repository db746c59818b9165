"""Helpers for tests that need a live server: in-process (fast) or as a real ``python -m server`` process.

Every wait here has a deadline; nothing sleeps to let something happen.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from server.config import Config
from server.engine import Engine
from server.listeners import open_listener, parse_bind, resolve_schemes
from server.static import FileReply
from server.tls import CertificateStore

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


class ServerThread:
    """An Engine serving ``app`` on 127.0.0.1:<free port>, running in a background thread."""

    def __init__(
        self,
        app: Callable,
        config: Config | None = None,
        *,
        certificates: CertificateStore | None = None,
        **settings: Any,
    ) -> None:
        """With ``certificates``, the server speaks HTTPS (``url`` says https://)."""
        self.config = replace(config or Config(), **settings) if settings else (config or Config())
        self.app = app
        self.listener = open_listener(parse_bind("127.0.0.1:0"))
        resolve_schemes([self.listener], have_certificate=certificates is not None)
        self.port = self.listener.sock.getsockname()[1]
        self.url = f"{self.listener.scheme}://127.0.0.1:{self.port}"
        self.engine = Engine(self.config, app, [self.listener], certificates=certificates)
        self._thread = threading.Thread(target=self.engine.run, name="test-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(graceful=False)

    def stop(self, graceful: bool = False) -> None:
        self.engine.reactor.call_soon_threadsafe(self.engine.shutdown, graceful)
        self._thread.join(TIMEOUT)
        self.listener.sock.close()
        assert not self._thread.is_alive(), "server thread did not stop"

    def connect(self, timeout: float = TIMEOUT) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock


@contextlib.contextmanager
def loop_parked(server: ServerThread) -> Iterator[None]:
    """Keep the server's event loop parked in a callback for the block (at most TIMEOUT): what clients send
    meanwhile waits in the kernel, and the loop finds all of it ready at once when the block ends."""
    parked, release = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        release.wait(TIMEOUT)

    server.engine.reactor.call_soon_threadsafe(park)
    try:
        assert parked.wait(TIMEOUT)
        yield
    finally:
        release.set()


class AnswerOnCue:
    """A WSGI app that waits for the test's cue before it answers, and with its cue ``hold_the_loop`` keeps the
    server's event loop busy while it answers: what a worker thread does on its own then shows on the wire."""

    def __init__(self, server: Callable[[], ServerThread]) -> None:
        self._server = server  # (the app is made before its server)
        self.running = threading.Event()
        self._cue = threading.Event()
        self._loop_held = threading.Event()
        self._release_loop = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        self.running.set()
        assert self._cue.wait(TIMEOUT)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    @contextlib.contextmanager
    def hold_the_loop(self) -> Iterator[None]:
        """Once the app runs: park the loop in a callback, cue the app, and keep the loop parked until the block
        ends (at most twice TIMEOUT, so a socket timeout of TIMEOUT in the block fires first)."""
        assert self.running.wait(TIMEOUT)

        def park() -> None:
            self._loop_held.set()
            self._release_loop.wait(TIMEOUT * 2)

        self._server().engine.reactor.call_soon_threadsafe(park)
        try:
            assert self._loop_held.wait(TIMEOUT)
            self._cue.set()
            yield
        finally:
            self._cue.set()
            self._release_loop.set()


def recv_until_closed(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bytes:
    """Everything the peer sends until it closes (each recv bounded by the socket's timeout)."""
    chunks = []
    total = 0
    while total < limit:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def read_reply(reply: FileReply) -> bytes:
    """The bytes a caller of ``server.static.serve_path`` would send for ``reply`` (and close it, as it must)."""
    with reply:
        if reply.file is None:
            return reply.body
        reply.file.seek(reply.offset)
        return reply.file.read(reply.length)


def read_response(
    sock: socket.socket, buffer: bytearray | None = None, *, to_head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one response (Content-Length, chunked, or close-delimited) from a raw socket.

    ``buffer`` carries bytes already received past the previous response (pipelining); ``to_head``: the response
    answers a HEAD request, so it has no body whatever its headers say."""
    buf = buffer if buffer is not None else bytearray()

    def fill() -> bool:
        data = sock.recv(65536)
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        if not fill():
            raise ConnectionError(f"closed before a full head; got {bytes(buf)!r}")
    head, _, _rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if to_head or status < 200 or status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            if not fill():
                raise ConnectionError("closed mid-body")
        body = bytes(buf[:length])
        del buf[:length]
        return status, headers, body
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not fill():
                    raise ConnectionError("closed mid-chunk")
            line, _, _ = bytes(buf).partition(b"\r\n")
            del buf[: len(line) + 2]
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                if not fill():
                    raise ConnectionError("closed mid-chunk")
            body += buf[:size]
            del buf[: size + 2]
            if size == 0:
                return status, headers, bytes(body)
    while fill():
        pass
    body = bytes(buf)
    buf.clear()
    return status, headers, body


class ServerProcess:
    """``python -m server ARGS`` as a subprocess on a free port, ready once it logs where it listens."""

    _LISTENING = re.compile(r"serving .* on (https?://\S+|unix:\S+)")

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        bind: bool = True,
        session: bool = False,
        pass_fds: tuple[int, ...] = (),
    ):
        argv = [sys.executable, "-m", "server", *args]
        if bind and "--bind" not in args:
            argv += ["--bind", "127.0.0.1:0"]
        self.argv = argv
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.session = session  # its own process group, as a shell gives a foreground job (for Ctrl-C tests)
        self.pass_fds = pass_fds  # descriptors the server inherits (a socket handed over as systemd does)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log: list[str] = []
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=self.session,
            pass_fds=self.pass_fds,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(TIMEOUT):
            self.stop()
            raise AssertionError("server did not start:\n" + "".join(self.log))
        return self

    def _read_log(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.log.append(line)
            match = self._LISTENING.search(line)
            if match and not self._ready.is_set():
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def signal(self, sig: int) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        if self._reader:
            self._reader.join(TIMEOUT)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        return "".join(self.log)


def child_pids(pid: int) -> set[int]:
    """A process's live children (a supervisor's workers), read from /proc: which worker the kernel hands a new
    connection to is its own business, so asking over HTTP cannot tell reliably that all of them are there."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return {int(child) for child in children.read().split()}


def wait_for(predicate: Callable[[], object], timeout: float = TIMEOUT, interval: float = 0.01) -> object:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # wsgiref logs every request to stderr; keep test output readable


@contextlib.contextmanager
def serving_with_wsgiref(app: Callable) -> Iterator[str]:
    """The standard library's reference server on a free port, in a thread: ``with ... as url``."""
    httpd = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    httpd.timeout = TIMEOUT
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)


@contextlib.contextmanager
def serving(app: Callable, **settings) -> Iterator[ServerThread]:
    """``with serving(app, threads=2) as server: requests.get(server.url)``"""
    with ServerThread(app, **settings) as server:
        yield server
