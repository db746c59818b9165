"""One client connection: read, parse, dispatch, write, then keep-alive or close.

A connection is always owned by exactly one thread, and ownership moves with the one-shot registrations of
``server.loop``:

    IDLE/READING  (loop)    recv → parser → a complete request (head and whole body, buffered)
        │  static file?  → served right here on the loop: headers, then os.sendfile
        └─ WSGI app      → BUSY (a worker thread): build the environ, call the app, send its response
    SENDING       (loop)    whatever the socket would not take at once, flushed when it becomes writable
    back to IDLE            re-armed for reading (or the next pipelined request is parsed at once)
    LINGERING     (loop)    after an error response: shut down our side, drain the client's, then close

Because a request's body is buffered before the application runs (spooled to a temporary file beyond
``body_spool_bytes``), a slow uploader holds a descriptor and a buffer but never a worker thread; the exception
is ``Expect: 100-continue``, where the application decides whether the body is wanted at all. Output goes
straight to the socket from the worker; what does not fit is queued and flushed by the loop, and a worker whose
queue passes a high-water mark waits for it to drain (backpressure), with the send timeout as a limit.

Every state has a deadline, checked by the engine's periodic sweep: the whole request head (``header_timeout``,
a total, so a slowloris trickle does not extend it), body progress, idle keep-alive, and send progress.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from server.http import (
    NEED_DATA,
    Data,
    EndOfMessage,
    ProtocolError,
    Request,
    RequestParser,
    error_response,
)
from server.loop import READ, WRITE
from server.wsgi import ClientDisconnected

if TYPE_CHECKING:
    from server.engine import Engine

log = logging.getLogger("server.connection")

IDLE, READING, BUSY, LINGERING, CLOSED = "idle", "reading", "busy", "lingering", "closed"
RECV_SIZE = 256 * 1024
HIGH_WATER = 512 * 1024  # queued output above which a worker waits for the loop to drain it
LOW_WATER = 64 * 1024
LINGER_SECONDS = 2.0
NEVER = float("inf")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: more data follows, so do not send a short segment yet


class _FileJob:
    """An open file being sent with os.sendfile, possibly across many writable events."""

    __slots__ = ("app_code", "file", "length", "offset", "on_done", "remaining")

    def __init__(self, file: BinaryIO, offset: int, length: int, on_done: Callable | None, app_code: bool):
        self.file = file
        self.offset = offset
        self.length = length
        self.remaining = length
        self.on_done = on_done
        self.app_code = app_code

    @property
    def sent(self) -> int:
        return self.length - self.remaining


class FileChanged(OSError):
    """A file shrank while it was being sent, so its Content-Length can no longer be honoured."""


class HTTPConnection:
    """The state machine for one accepted socket; see the module docstring for the life cycle."""

    def __init__(self, engine: Engine, sock: socket.socket, peer: Any, local: tuple[str, str, str]) -> None:
        self.engine = engine
        self.reactor = engine.reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.parser = RequestParser(engine.limits)
        self.state = IDLE
        self.deadline = time.monotonic() + engine.config.header_timeout
        self.scheme, self.server_name, self.server_port = local
        if isinstance(peer, tuple):
            self.remote_addr, self.remote_port = peer[0], str(peer[1])
        else:  # a Unix socket has no peer address
            self.remote_addr, self.remote_port = "", ""
        self.request: Request | None = None
        self.requests_seen = 0
        self.static_mount: Any = None
        self.body: Any = None
        self.body_size = 0
        # Output, shared between the owner and the loop's flushing; guarded by `lock`.
        self.lock = threading.Lock()
        self.drained = threading.Condition(self.lock)
        self.out = bytearray()
        self.file_job: _FileJob | None = None
        self.flushing = False
        self.after_flush: Callable[[], None] | None = None
        self.broken = False
        self.response_started = False
        self.continue_pending = False  # Expect: 100-continue, and the app has the say on reading the body
        self.continue_received = False  # ... and it did read it

    def start(self) -> None:
        """Begin watching the socket (loop thread)."""
        self.reactor.add(self.fd, self, READ)

    # -- events from the loop ------------------------------------------------------------------------------------

    def handle_event(self, events: int) -> None:
        if self.flushing:
            self._flush_on_loop()
        elif self.state in (IDLE, READING):
            self._on_readable()
        elif self.state == LINGERING:
            self._linger_read()

    def _receive(self) -> bytes | None:
        """One recv: the bytes, b"" at the end of the stream or on an error, None when nothing came (re-armed)."""
        try:
            return self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            self.reactor.arm(self.fd, READ)
            return None
        except OSError:
            return b""

    def _on_readable(self) -> None:
        data = self._receive()
        if data is None:
            return
        if not data:
            self.close()  # the client closed; an unfinished request cannot be answered anyway
            return
        if self.state == IDLE:
            self.state = READING
            self.deadline = time.monotonic() + self.engine.config.header_timeout
        self.parser.feed(data)
        self.advance()

    # -- parsing and dispatch (whichever thread owns the connection) -----------------------------------------------

    def advance(self) -> None:
        """Consume buffered bytes: collect a request and its body, then dispatch it; or wait for more bytes."""
        parser = self.parser
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    if self.request is not None:  # inside a body: the deadline follows progress
                        self.deadline = time.monotonic() + self.engine.config.body_timeout
                    self.reactor.arm(self.fd, READ)
                    return
                kind = type(event)
                if kind is Data:
                    self._store_body(event.data)
                elif kind is Request:
                    self.request = event
                    self.state = READING
                    self.static_mount = self.engine.static_mount_for(event)
                    self.continue_pending = self.continue_received = False
                    if event.expect_continue:
                        if self.static_mount is not None or not event.chunked:
                            # A file needs no body, and an app decides whether it wants one: wsgi.input sends
                            # the 100 on the app's first read. Either way, answer without waiting for the body.
                            self.continue_pending = self.static_mount is None
                            self._dispatch()
                            return
                        # A chunked body's length is unknown until it has all arrived, and WSGI frameworks only
                        # read bodies with a CONTENT_LENGTH: so accept it at once and buffer it like any other.
                        if not self._send_continue_now():
                            return
                elif kind is EndOfMessage:
                    self._dispatch()
                    return
        except ProtocolError as error:
            self.refuse(error.status, error.detail)

    def _send_continue_now(self) -> bool:
        # Nothing else is queued on a connection that is reading a request, so 25 bytes fit in the socket
        # buffer; if they do not, the client is not reading at all and the connection is not worth keeping.
        try:
            complete = self.sock.send(_CONTINUE) == len(_CONTINUE)
        except OSError:
            complete = False
        if not complete:
            self.close_soon()
        return complete

    def _store_body(self, data: bytes) -> None:
        if self.static_mount is not None:
            return  # static files ignore request bodies
        body = self.body
        if body is None:
            body = self.body = io.BytesIO()
        body.write(data)
        self.body_size += len(data)
        if type(body) is io.BytesIO and self.body_size > self.engine.config.body_spool_bytes:
            # Beyond this size the body goes to disk, so large uploads do not live in memory.
            spool = tempfile.TemporaryFile()
            spool.write(body.getbuffer())
            self.body = spool

    def _dispatch(self) -> None:
        self.requests_seen += 1
        self.state = BUSY
        self.deadline = NEVER
        self.response_started = False
        if self.static_mount is not None:
            self.engine.serve_static(self, self.request, self.static_mount)
            return
        self.engine.pool.submit(self.engine.handle_request, self, self.request)

    def take_body(self) -> Any:
        """The buffered body, rewound, for ``wsgi.input``; the connection forgets it."""
        body = self.body
        self.body = None
        if body is None:
            return io.BytesIO()
        body.seek(0)
        return body

    def read_continue_body(self) -> Any:
        """For ``Expect: 100-continue``: send the 100, then receive the whole body on this (worker) thread."""
        if not self.response_started:
            self.send(_CONTINUE, count_as_response=False)
        parser = self.parser
        deadline = time.monotonic() + self.engine.config.body_timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as error:
                raise ClientDisconnected(f"bad request body: {error.detail}") from error
            if type(event) is Data:
                self._store_body(event.data)
            elif type(event) is EndOfMessage:
                self.continue_received = True
                return self.take_body()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not poller.poll(remaining * 1000):
                    raise ClientDisconnected("timed out waiting for the request body")
                try:
                    data = self.sock.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    raise ClientDisconnected(str(error)) from error
                if not data:
                    raise ClientDisconnected("client closed during the request body")
                parser.feed(data)
                deadline = time.monotonic() + self.engine.config.body_timeout

    # -- output (owner thread; the loop flushes what is left) -----------------------------------------------------

    def send(self, data: bytes, *, count_as_response: bool = True) -> None:
        """Send bytes now, or queue them for the loop; wait when too much is queued. Raises ClientDisconnected."""
        if count_as_response:
            self.response_started = True
        with self.lock:
            if self.broken:
                raise ClientDisconnected("connection is broken")
            if self.flushing:
                self.out += data
            else:
                try:
                    sent = self.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as error:
                    self.broken = True
                    raise ClientDisconnected(str(error)) from error
                if sent == len(data):
                    return
                self.out += memoryview(data)[sent:]
                self._start_flushing()
            if len(self.out) > HIGH_WATER and threading.current_thread() is not self.reactor.thread:
                self._wait_for_drain()

    def _wait_for_drain(self) -> None:
        limit = time.monotonic() + self.engine.config.send_timeout
        while len(self.out) > LOW_WATER and not self.broken:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                self.broken = True
                raise ClientDisconnected("send timed out")
            self.drained.wait(remaining)
        if self.broken:
            raise ClientDisconnected("connection is broken")

    def send_file(
        self,
        head: bytes,
        file: BinaryIO,
        offset: int,
        length: int,
        *,
        on_done: Callable[[int], None] | None = None,
        app_code: bool = False,
    ) -> None:
        """Send ``head`` then ``length`` bytes of ``file`` from ``offset`` with sendfile; the loop finishes it.

        ``on_done(bytes_sent)`` runs exactly once, when the file is sent or abandoned (on a worker thread when
        ``app_code``, since it may run an application's close())."""
        job = _FileJob(file, offset, length, on_done, app_code)
        self.response_started = True
        with self.lock:
            if self.broken:
                self._file_done(job)
                raise ClientDisconnected("connection is broken")
            self.file_job = job
            if self.flushing:
                self.out += head
                return
            # MSG_MORE: hold the head back so that it leaves in one segment with the file's first bytes.
            self.out += head
            try:
                sent = self.sock.send(self.out, _MSG_MORE)
                del self.out[:sent]
                done = self._write_some()
            except (BlockingIOError, InterruptedError):
                done = False
            except OSError as error:
                if isinstance(error, FileChanged):
                    log.warning("%s: closing the connection: %s", self.describe(), error)
                self.broken = True
                self.file_job = None
                self._file_done(job)
                raise ClientDisconnected(str(error)) from error
            if not done:
                self._start_flushing()

    def _start_flushing(self) -> None:
        # Called with the lock held: the loop takes over writing until everything queued is out.
        self.flushing = True
        self.deadline = time.monotonic() + self.engine.config.send_timeout
        self.reactor.arm(self.fd, WRITE)

    def _write_some(self) -> bool:
        """Write queued bytes, then the file; True when everything is out. Lock held. Raises OSError."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                return False
            del out[:sent]
            self.deadline = time.monotonic() + self.engine.config.send_timeout
        job = self.file_job
        if job is not None:
            fileno = job.file.fileno()
            while job.remaining:
                try:
                    sent = os.sendfile(self.sock.fileno(), fileno, job.offset, min(job.remaining, 1 << 20))
                except (BlockingIOError, InterruptedError):
                    return False
                if sent == 0:
                    raise FileChanged(f"file shrank with {job.remaining} bytes still to send")
                job.offset += sent
                job.remaining -= sent
                self.deadline = time.monotonic() + self.engine.config.send_timeout
            self.file_job = None
            self._file_done(job)
        return True

    def _file_done(self, job: _FileJob) -> None:
        if job.on_done is None:
            return
        if job.app_code:
            self.engine.pool.submit(_run_quietly, job.on_done, job.sent)
        else:
            _run_quietly(job.on_done, job.sent)

    def _flush_on_loop(self) -> None:
        with self.lock:
            try:
                done = self._write_some()
            except OSError as error:
                if isinstance(error, FileChanged):
                    log.warning("%s: closing the connection: %s", self.describe(), error)
                self.broken = True
                done = True
            if not done:
                if len(self.out) <= LOW_WATER:
                    self.drained.notify_all()
                self.reactor.arm(self.fd, WRITE)
                return
            self.flushing = False
            self.drained.notify_all()
            action, self.after_flush = self.after_flush, None
        if action is not None:
            action()
        elif self.broken and self.state != BUSY:
            self.close()

    def finish(self, keep_alive: bool) -> None:
        """The response is complete (owner thread): keep the connection or close it once output drains."""
        with self.lock:
            if self.flushing and not self.broken:
                self.after_flush = lambda: self._after_response(keep_alive)
                return
        self._after_response(keep_alive)

    def _after_response(self, keep_alive: bool) -> None:
        if self.broken or not keep_alive or self.engine.stopping:
            self.close_soon()
            return
        if self.body is not None:
            self.body.close()
            self.body = None
            self.body_size = 0
        self.parser.start_next()
        self.request = None
        self.static_mount = None
        if self.parser.buffered:
            self.state = READING  # a pipelined request is already here
            self.deadline = time.monotonic() + self.engine.config.header_timeout
            self.advance()
        else:
            self.state = IDLE
            self.deadline = time.monotonic() + self.engine.config.keepalive_timeout
            self.reactor.arm(self.fd, READ)

    # -- errors, timeouts and closing -----------------------------------------------------------------------------

    def refuse(self, status: int, detail: str) -> None:
        """Answer a request the server will not serve, then close without losing the answer (owner thread)."""
        log.info("%s: %d %s", self.describe(), status, detail)
        self.state = BUSY
        try:
            self.send(error_response(status, detail, self.engine.server_header))
        except ClientDisconnected:
            self.close_soon()
            return
        with self.lock:
            if self.flushing:
                self.after_flush = self._start_lingering
                return
        self._start_lingering()

    def _start_lingering(self) -> None:
        # Closing with unread input makes the kernel send a reset, which can destroy our error response
        # before the client reads it. So: stop sending, read and discard for a moment, then close.
        if threading.current_thread() is not self.reactor.thread:
            self.reactor.call_soon_threadsafe(self._start_lingering)
            return
        if self.state == CLOSED:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = LINGERING
        self.deadline = time.monotonic() + LINGER_SECONDS
        self.reactor.arm(self.fd, READ)

    def _linger_read(self) -> None:
        data = self._receive()
        if data is None:
            return
        if data:
            self.reactor.arm(self.fd, READ)
        else:
            self.close()

    def check_deadline(self, now: float) -> None:
        """Called by the engine's sweep on the loop thread."""
        if now < self.deadline:
            return
        if self.flushing:
            log.info("%s: send timed out", self.describe())
            with self.lock:
                self.broken = True
                self.drained.notify_all()
                action, self.after_flush = self.after_flush, None
                self.flushing = False
            if action is not None:
                action()
            elif self.state != BUSY:
                self.close()
        elif self.state == IDLE or self.state == LINGERING:
            self.close()
        elif self.state == READING:
            what = "request body" if self.request is not None else "request head"
            self.refuse(408, f"timed out reading the {what}")

    def close_soon(self) -> None:
        """Close from any thread: the loop does the closing, so its tables stay consistent."""
        if threading.current_thread() is self.reactor.thread:
            self.close()
        else:
            self.reactor.call_soon_threadsafe(self.close)

    def close(self) -> None:
        """Close the socket and forget the connection (loop thread)."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.reactor.remove(self.fd)
        self.engine.forget(self)
        with self.lock:
            self.broken = True
            self.drained.notify_all()
            job, self.file_job = self.file_job, None
        if job is not None:
            self._file_done(job)
        if self.body is not None:
            self.body.close()
            self.body = None
        with contextlib.suppress(OSError):
            self.sock.close()

    def describe(self) -> str:
        return f"{self.remote_addr or 'unix'}:{self.remote_port or '-'}"


def _run_quietly(callback: Callable[[int], None], sent: int) -> None:
    try:
        callback(sent)
    except Exception:
        log.exception("error while closing a response body")
