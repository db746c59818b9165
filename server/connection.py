"""One client connection: read, parse, dispatch, write, then keep-alive or close.

A connection is always owned by exactly one thread, and ownership moves with the one-shot registrations of
``server.loop``:

    HANDSHAKE     (loop)    HTTPS only: the TLS handshake, under its own deadline (``server.tls``)
    IDLE/READING  (loop)    recv → parser → a complete request (head and whole body, buffered)
        │  static file?  → served right here on the loop: headers, then os.sendfile
        └─ WSGI app      → BUSY (a worker thread): build the environ, call the app, send its response
    SENDING       (loop)    whatever the socket would not take at once, flushed when it becomes writable
    back to IDLE            re-armed for reading (or the next pipelined request is parsed at once)
    LINGERING     (loop)    a connection the server ends (an error, a stop) whose client may still be sending:
                            shut down our side, drain the client's, then close (a close over unread input
                            would make the kernel reset it, destroying the response's unread end)

No client holds a worker thread by being slow. The loop reads a request's whole body before the application
runs (in memory, spooled to a temporary file beyond ``body_spool_bytes``, and within the process's
``max_buffered_bytes`` budget), also for ``Expect: 100-continue``, which the loop answers at once. Output goes
straight to the socket from the worker; what does not fit is queued and flushed by the loop. When more than
``HIGH_WATER`` bytes are queued, a response being iterated is *parked* (``park_until_drained``): its worker
thread goes back to the pool and the rest of the iteration is resubmitted once the loop has drained the queue.
Only an application that uses PEP 3333's ``write()`` callable makes its thread wait for a slow reader.

Every state has a deadline, checked by the engine's periodic sweep: the whole request head (``header_timeout``,
a total, so a slowloris trickle does not extend it), the body (``min_body_rate`` bytes per second owed in every
window of ``body_timeout`` seconds), idle keep-alive, send progress, and a running
application (``timeout``, reported by the watchdog), and on HTTPS connections the handshake. Pipelined requests
are answered by iteration, never by recursion, and at most ``PIPELINE_TURN`` of them per turn of the loop, so one
client cannot starve the others.

On an HTTPS connection, ``tls`` (a ``server.tls.TLSSession``) sits between the socket and everything above:
what ``recv`` returns is decrypted before the parser sees it, and everything sent is encrypted, under the same
lock that orders the output, so records leave in the order their plaintext was written. The send queue, the
parking and every deadline work on the ciphertext exactly as on plain bytes. Files cannot go out with
``sendfile`` (the kernel would send them unencrypted), so they are read and encrypted in ``TLS_FILE_CHUNK``
pieces as the socket drains, by the loop, which holds at most one piece per connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import select
import socket
import ssl
import struct
import tempfile
import termios
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
from server.net.addr import source_key
from server.redirect import HTTPSRedirect
from server.tls import HANDSHAKE_RECORD, TLSFailure, TLSSession
from server.wsgi import ClientDisconnected

if TYPE_CHECKING:
    from server.engine import Engine

log = logging.getLogger("server.connection")

HANDSHAKE, IDLE, READING, BUSY, LINGERING, CLOSED = "handshake", "idle", "reading", "busy", "lingering", "closed"
# How much one recv asks for. recv allocates that much and then shrinks it to what came, so the size decides how
# the allocator serves it: above malloc's mmap threshold (128 KiB in glibc until something raises it, and in
# musl), each recv is an mmap and a munmap. For a request head that was 45% of hello world's throughput (38k
# against 70k req/s, measured with MALLOC_MMAP_THRESHOLD_=131072); for a body's big reads, a few percent.
HEAD_RECV_SIZE = 64 * 1024  # a head (64 KiB by default at most), or a small body: clear of the threshold
BODY_RECV_SIZE = 256 * 1024  # inside a big body: fewer, bigger reads (a 16 MB upload: 10% faster than 64 KiB)
HIGH_WATER = 512 * 1024  # queued output above which a response is parked until the loop drains it
LOW_WATER = 64 * 1024
CORK_LIMIT = 64 * 1024  # output sent from the loop thread waits for the end of its turn up to this size (uncork)
PIPELINE_TURN = 16  # pipelined requests answered in one go before the loop serves other connections
# Chunks of chunked bodies parsed in one go before the loop serves other connections (their cost is per chunk:
# a 256 KiB read of one-byte chunks is 43,690 of them, 0.15 s of the loop in one go before this limit). A body
# with a length costs nothing here; a chunked one in chunks of a sensible size, a few per read. Counted in whole
# events of up to CHUNKS_PER_EVENT chunks (server/http.py): about 1 ms of work at a time.
CHUNKS_AT_A_TIME = 1024
BODY_RESERVE_STEP = 64 * 1024  # a body's share of the budget is reserved in steps of this size, as it arrives
# An unfinished head larger than this takes its bytes from the same budget. Real heads are a few KiB (a browser's
# with its cookies), so this costs them nothing; but a head may be --max-header-bytes (64 KiB) and take the
# header timeout to arrive, and connections holding such heads held that much each, outside any limit but the
# number of connections (a gigabyte at the default 16,384).
HEAD_FREE_BYTES = 16 * 1024
_BUDGET_SPENT = "too much request data is buffered right now; try again shortly"
_RETRY_AFTER = (("Retry-After", "5"),)
LINGER_SECONDS = 2.0
_DRAIN_SLICE = 0.25  # --threads 0, write(): how long the loop waits for a slow reader between heartbeats
NEVER = float("inf")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() discards unsent data with RST
_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: more data follows, so do not send a short segment yet
# A file sent over TLS is read and encrypted this much at a time: three full TLS records. Measured for a 1 MiB file
# (bench_tls): 48 KiB 1,550 req/s, 32 KiB 1,500, 16 KiB 1,280, 256 KiB 900. Large pieces lose to malloc: from
# 128 KiB up each buffer is an mmap of its own, and OpenSSL's memory buffer grows by reallocating.
TLS_FILE_CHUNK = 48 * 1024
_PLAIN_HTTP_ON_TLS = "this port speaks HTTPS: use an https:// URL"
_NO_TLS: dict[str, str] = {}  # shared by every plain connection (never written to: a handshake assigns its own)


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

    # Slots, not a __dict__: ten thousand idle keep-alive connections are ten thousand of these (see _NO_TLS).
    __slots__ = (
        "_advancing", "_drained", "_resume_queued", "after_flush", "body", "body_received", "body_size", "broken",
        "budget_holder", "corked", "deadline", "engine", "fd", "file_job", "flushing", "head_arrived", "linger", "lock",
        "loop_wait",
        "on_drain", "out", "parser", "rate_mark", "rate_mark_bytes", "reactor", "redirect", "remote_addr",
        "remote_port", "request", "requests_seen", "reserved", "response_started", "scheme", "server_name",
        "server_port", "sock", "state", "static_mount", "tls", "tls_context", "tls_environ",
    )  # fmt: skip

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
        self.body_size = 0  # bytes stored for the application
        self.body_received = 0  # bytes of body received (also those a static file ignores), for the rate rule
        self.head_arrived = 0.0  # time.monotonic() when the current request's head was complete
        # The body-rate rule's window: when it began and how much body had arrived by then.
        self.rate_mark = 0.0
        self.rate_mark_bytes = 0
        self.reserved = 0  # bytes of the engine's buffered-body budget this request holds
        self.budget_holder = ""  # whom they count against (Engine.budget_holder), set when a body is announced
        self._advancing = False  # advance() is on the stack: a response finished under it must not recurse
        self._resume_queued = False  # an advance() is queued to go on with what is buffered (see _next_turn)
        # Output, shared between the owner and the loop's flushing; guarded by `lock`.
        self.lock = threading.Lock()
        self._drained: threading.Condition | None = None  # made by the first writer that waits (see _wait_for_drain)
        self.out = bytearray()
        self.file_job: _FileJob | None = None
        self.corked = False  # `out` holds output the loop sends at the end of its turn (see uncork)
        self.flushing = False
        self.after_flush: Callable[[], None] | None = None
        self.on_drain: Callable[[], None] | None = None  # a parked response's continuation
        # --threads 0, write(): (the request it is for, the seconds) its response has waited on the loop so far
        self.loop_wait: tuple[int, float] | None = None
        self.broken = False
        # LINGERING: (when it must end at the latest, the bytes the client had not acknowledged at the last look)
        self.linger: tuple[float, int | None] = (0.0, None)
        self.response_started = False
        self.tls: TLSSession | None = None
        self.tls_context: ssl.SSLContext | None = None  # until the session exists: what it will be made from
        self.tls_environ: dict[str, str] = _NO_TLS  # what the handshake established, for every request's environ
        self.redirect: HTTPSRedirect | None = None  # a plain connection whose every request goes to HTTPS

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Make this an HTTPS connection: it begins with the handshake, which must finish within ``timeout``.

        The session itself (about 13 KiB of OpenSSL state) is made when the client's first bytes arrive, so a
        client that connects and says nothing costs what a plain connection does."""
        self.tls_context = context
        self.scheme = "https"
        self.state = HANDSHAKE
        self.deadline = time.monotonic() + timeout

    def start(self) -> None:
        """Begin watching the socket (loop thread). With ``--threads 0`` nothing of a connection ever leaves the
        loop thread, so it is registered steady: no re-arming system call after every request."""
        self.reactor.add(self.fd, self, READ, oneshot=not self.engine.inline)

    # -- events from the loop ------------------------------------------------------------------------------------

    def handle_event(self, events: int) -> None:
        try:
            if self.flushing:
                self._flush_on_loop()
            elif self.state in (IDLE, READING):
                self._on_readable()
            elif self.state == HANDSHAKE:
                self._on_handshake_data()
            elif self.state == LINGERING:
                self._linger_read()
        except Exception as error:
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        """An unexpected error while answering: log it once, in one line, and close this connection only."""
        log.error("%s: closing the connection after an internal error: %s: %s", self.describe(),
                  type(error).__name__, error)  # fmt: skip
        self.close_soon()

    def _receive(self) -> bytes | None:
        """One recv: the bytes, b"" at the end of the stream or on an error, None when nothing came (re-armed)."""
        request = self.request
        big = request is not None and (request.chunked or (request.content_length or 0) > HEAD_RECV_SIZE)
        try:
            return self.sock.recv(BODY_RECV_SIZE if big else HEAD_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            self.reactor.arm(self.fd, READ)
            return None
        except OSError:
            return b""

    def _receive_plaintext(self) -> bytes | None:
        """``_receive`` on HTTPS, decrypted; None also when no whole record has arrived yet."""
        data = self._receive()
        if not data or self.tls is None:
            return data
        failure = None
        with self.lock:
            try:
                plaintext: bytes | None = self.tls.decrypt(data)
            except TLSFailure as error:
                failure, plaintext = error, None
            answer = self.tls.outgoing()  # a KeyUpdate's reply, say (tiny, and rare); or the alert of a failure
        if failure is not None:
            log.info("%s: closing: TLS error: %s", self.describe(), failure)
            if answer:
                self._send_small(answer)
            return b""
        if answer and not self._send_small(answer):
            return None  # closed
        if plaintext is None:
            return b""  # close_notify: the client is done
        self._end_reading_after_close_notify()
        if not plaintext:
            self.reactor.arm(self.fd, READ)
            return None
        return plaintext

    def _end_reading_after_close_notify(self) -> None:
        """close_notify behind a request, in the same read: the client is done after it, but may keep its TCP side
        open, so no event would ever tell the loop. Shutting our reading side makes the socket read as ended: once
        the request is answered, the connection closes as after a request and a FIN."""
        if self.tls is not None and self.tls.peer_closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)

    def _on_handshake_data(self) -> None:
        """The TLS handshake, one flight at a time, on the loop; the connection is IDLE once it is done."""
        data = self._receive()
        if data is None:
            return
        if not data:
            self.close()
            return
        tls = self.tls
        if tls is None:  # the client's first bytes
            if data[0] != HANDSHAKE_RECORD and 0x41 <= data[0] <= 0x5A:
                # An uppercase letter where a TLS record should start: plain HTTP ("GET /..."), as from a URL
                # typed with http://. Answer it the way it came, in plain text, as nginx does, and close.
                self.scheme = "http"
                self.state = READING
                self.refuse(400, _PLAIN_HTTP_ON_TLS)
                return
            assert self.tls_context is not None
            tls = self.tls = TLSSession(self.tls_context)
            self.tls_context = None
        failure = None
        with self.lock:
            try:
                done = tls.handshake(data)
            except TLSFailure as error:
                failure = error
                done = False
            answer = tls.outgoing()  # on failure: the alert that tells the client why
        if failure is not None:
            log.info("%s: TLS handshake failed: %s", self.describe(), failure)
            self._send_small(answer)
            self.close()
            return
        if answer and not self._send_small(answer):
            return
        if not done:
            self.reactor.arm(self.fd, READ)
            return
        self.tls_environ = tls.environ()
        self.state = IDLE
        deadline = time.monotonic() + self.engine.config.header_timeout
        # Stopping: the grace the stop gave this silent connection stands (it would not wait a whole head timeout).
        self.deadline = min(self.deadline, deadline) if self.engine.stopping or self.engine.draining else deadline
        failure = None
        with self.lock:
            try:
                early = tls.decrypt(b"")  # a request sent right behind the client's Finished
            except TLSFailure as error:
                failure, early = error, None
                answer = tls.outgoing()  # the alert that says why
        if failure is not None:
            log.info("%s: closing: TLS error: %s", self.describe(), failure)
            self._send_small(answer)
            self.close()
        elif early is None:
            self.close()  # close_notify right after the handshake
        elif early:
            self._end_reading_after_close_notify()
            self.state = READING
            self.parser.feed(early)
            self.advance()
        else:
            self.reactor.arm(self.fd, READ)

    def _send_small(self, data: bytes) -> bool:
        """Send a few bytes that must go out at once (a handshake flight, 100 Continue), else close. True: sent.

        Nothing else is queued when these are sent, so they fit in the socket's buffer; when they do not, the
        client is not reading at all and the connection is not worth keeping."""
        if self.corked:
            self.out += data  # behind the output held for the end of the turn, which it must follow
            return True
        try:
            complete = self.sock.send(data) == len(data)
        except OSError:
            complete = False
        if not complete:
            self.close_soon()
        return complete

    def _on_readable(self) -> None:
        data = self._receive() if self.tls is None else self._receive_plaintext()
        if data is None:
            return
        if not data:
            self.close()  # the client closed; an unfinished request cannot be answered anyway
            return
        if self.state == IDLE:
            self.state = READING
            request = self.parser.whole_request(data)
            if request is not None:
                # The usual keep-alive request, alone and whole: answered without the buffer and the event loop
                # of advance(), which have nothing to add (no body, nothing pipelined behind it).
                if self._begin_request(request):
                    self._dispatch()
                return
            self.deadline = time.monotonic() + self.engine.config.header_timeout
        self.parser.feed(data)
        self.advance()

    # -- parsing and dispatch (whichever thread owns the connection) -----------------------------------------------

    def advance(self) -> None:
        """Consume buffered bytes: collect requests and their bodies and answer them, in order, by iteration.

        A static file is answered right here, so after it the loop goes on with the next pipelined request; an
        application's request ends this call (its worker resumes the connection when the response is done)."""
        if self.state is not READING and self.state is not IDLE:
            return  # closed or refused meanwhile: nothing more is read from this connection
        if self.flushing:
            return  # output held past its response is draining; _after_held_output comes back here
        parser = self.parser
        answered = 0
        chunk_budget = parser.chunks_seen + CHUNKS_AT_A_TIME
        self._advancing = True
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    if self.request is not None:  # inside a body: the deadline follows progress and rate
                        self.deadline = self._body_deadline(time.monotonic())
                    elif parser.buffered > HEAD_FREE_BYTES and not self._hold_head(parser.buffered):
                        return  # refused: the client holds too much of the budget already
                    self.reactor.arm(self.fd, READ)
                    return
                if type(event) is Data:
                    if not self._store_body(event.data):
                        return
                    if parser.chunks_seen >= chunk_budget:
                        self._next_turn()
                        return
                elif type(event) is Request:
                    if self.reserved:
                        # What the head held while it arrived (_hold_head): the body reserves its own. (Here, not
                        # in _begin_request: a head taken whole by _on_readable never held anything.)
                        self.release_body()
                    if not self._begin_request(event):
                        return
                elif type(event) is EndOfMessage:
                    if not self._dispatch() or self.state != READING:
                        return  # a worker has it, or its output is flushing, or it is idle, closed or lingering
                    answered += 1
                    if answered == PIPELINE_TURN:
                        self._next_turn()
                        return
        except ProtocolError as error:
            self.refuse(error.status, error.detail)
        except Exception as error:
            self.fail(error)
        finally:
            self._advancing = False

    def _next_turn(self) -> None:
        """Fairness: let the loop serve the other connections that are ready before this one goes on with what it
        has buffered (the next pipelined request, more of a body). A steady registration must stop reporting
        reads meanwhile: the client's end of stream would be read (and the connection closed) under what is
        still buffered, and reading more would only buffer more. One continuation at a time: another path back
        into advance() (held output drained) must not start a second chain with a budget of its own."""
        self.reactor.hold(self.fd)
        if not self._resume_queued:
            self._resume_queued = True
            self.reactor.next_round(self._resume)

    def _resume(self) -> None:
        self._resume_queued = False
        self.advance()

    def _hold_head(self, size: int) -> bool:
        """Count an unfinished head of ``size`` bytes against the budget (see HEAD_FREE_BYTES), as its peer's: the
        head's own headers, which may name another client through a proxy, are not read yet. False: refused."""
        if size <= self.reserved:
            return True
        if not self.reserved:
            self.budget_holder = source_key(self.remote_addr)
        # In steps of HEAD_FREE_BYTES, not a body's 64 KiB: a head just past the threshold takes about its size,
        # and a budget smaller than 64 KiB still has room for one.
        return self._reserve(max(size - self.reserved, HEAD_FREE_BYTES))

    def _begin_request(self, request: Request) -> bool:
        """A request head has arrived: reserve room for its body, answer 100-continue. False: refused."""
        self.request = request
        self.state = READING
        # A request answered on the loop: a file, or the redirect of a plain request to HTTPS.
        # (The look at static_mounts first saves a call per request where there are none, the usual case.)
        engine = self.engine
        mount = self.redirect or (engine.static_mount_for(request) if engine.static_mounts else None)
        self.static_mount = mount
        self.body_received = self.rate_mark_bytes = 0
        self.head_arrived = self.rate_mark = time.monotonic()
        length = request.content_length
        if mount is None and (length or request.chunked):
            self.budget_holder = engine.budget_holder(self, request)
            if length and length > engine.budget_room(self.budget_holder):
                # It cannot fit now: say so before the client sends it. (Nothing is reserved for a body that has
                # not arrived, so a head holds none of it for its body; _store_body reserves as bytes come in.)
                self.refuse(503, _BUDGET_SPENT, headers=_RETRY_AFTER)
                return False
        if request.expect_continue:
            if mount is not None:
                # A file needs no body: answer without waiting for it (the connection then closes, since the
                # unread body leaves the start of the next request unknown).
                self._dispatch()
                return False
            # The loop reads the body before the application runs, so it asks for it at once; an application
            # that would have refused the body costs the client an upload, never a worker thread.
            return self._send_continue_now()
        return True

    def _body_deadline(self, now: float) -> float:
        """When the body must have progressed next.

        Every window of ``body_timeout`` seconds must bring ``min_body_rate * body_timeout`` bytes (30 KiB in
        30 s by default); a window that does starts the next one. A rate averaged over the whole body would let
        a client that sent most of it at once trickle the rest for hours, holding its share of the budget."""
        config = self.engine.config
        if not config.min_body_rate:
            return now + config.body_timeout  # only progress: some piece every body_timeout
        if self.body_received - self.rate_mark_bytes >= config.min_body_rate * config.body_timeout:
            self.rate_mark = now
            self.rate_mark_bytes = self.body_received
        return self.rate_mark + config.body_timeout

    def _send_continue_now(self) -> bool:
        if self.tls is None:
            return self._send_small(_CONTINUE)
        with self.lock:
            record = self.tls.encrypt(_CONTINUE)
        return self._send_small(record)  # outside the lock: a failed send closes, which takes it

    def _reserve(self, size: int) -> bool:
        """Take ``size`` bytes of the process's budget for buffered bodies, or refuse the request with 503."""
        if self.engine.reserve_body_bytes(size, self.budget_holder):
            self.reserved += size
            return True
        self.refuse(503, _BUDGET_SPENT, headers=_RETRY_AFTER)
        return False

    def release_body(self) -> None:
        """Forget the current body and give its budget back (any thread: the loop closing, a worker finishing)."""
        if not self.reserved and self.body is None:
            return  # nothing to give back (only the loop adds to either, while reading): no lock taken
        with self.lock:  # the loop (closing) and a worker (finishing) may both get here
            body, self.body = self.body, None
            reserved, self.reserved = self.reserved, 0
        self.body_size = 0
        if body is not None:
            body.close()
        if reserved:
            self.engine.release_body_bytes(reserved, self.budget_holder)

    def _store_body(self, data: bytes) -> bool:
        self.body_received += len(data)
        if self.static_mount is not None:
            return True  # static files ignore request bodies
        size = self.body_size + len(data)
        if size > self.reserved and not self._reserve(max(size - self.reserved, BODY_RESERVE_STEP)):
            return False  # the budget is spent: 503, and what this body held is released as the connection ends
        body = self.body
        if body is None:
            body = self.body = io.BytesIO()
        body.write(data)
        self.body_size = size
        if type(body) is io.BytesIO and size > self.engine.config.body_spool_bytes:
            # Beyond this size the body goes to disk, so large uploads do not live in memory.
            spool = tempfile.TemporaryFile()
            spool.write(body.getbuffer())
            self.body = spool
        return True

    def _dispatch(self) -> bool:
        """Answer the complete request. True when it was answered here and now (a static file, or the application
        with ``--threads 0``) and the next pipelined request is buffered already."""
        self.requests_seen += 1
        self.state = BUSY
        self.response_started = False
        request = self.request
        assert request is not None
        if self.static_mount is not None:
            self.deadline = NEVER  # answered synchronously: the response itself sets the next deadline
            self.engine.serve_static(self, request, self.static_mount)
            return True
        # A worker owns the connection now. The deadline only keeps the sweep looking at it: the watchdog
        # reports an application that runs past the timeout.
        timeout = self.engine.config.timeout
        self.deadline = self.head_arrived + timeout if timeout else NEVER
        if self.engine.inline:
            # --threads 0: the application runs right here. When it returns, its response is out (or queued, or
            # parked) and the connection is IDLE again, or READING when the next pipelined request is buffered,
            # which the advance() below goes on with.
            self.engine.handle_request(self, request)
            return self.state == READING
        self.engine.pool.submit(self.engine.handle_request, self, request)
        return False

    def take_body(self) -> Any:
        """The buffered body, rewound, for ``wsgi.input``. Its budget stays reserved until the app is done."""
        body = self.body
        self.body = None
        if body is None:
            return io.BytesIO()
        body.seek(0)
        return body

    # -- output (owner thread; the loop flushes what is left) -----------------------------------------------------

    def send(self, data: bytes, *, wait: bool = False, whole: bool = False) -> None:
        """Send bytes now, or queue them for the loop. Raises ClientDisconnected.

        With ``wait``, the caller waits while too much is queued (for PEP 3333's ``write()``, which must block,
        and only for it: on the loop thread, waiting holds every other client); without, the caller checks
        ``park_until_drained`` and lets its thread go instead, or has nothing more to send. ``whole``: ``data``
        is a complete response, which on the loop thread may wait for the end of the turn (see ``uncork``); a
        piece of a streamed body never waits (PEP 3333: no block may be delayed while the next is made)."""
        self.response_started = True
        with self.lock:
            if self.broken:
                raise ClientDisconnected("connection is broken")
            if self.tls is not None:
                data = self.tls.encrypt(data)
            if self.flushing:
                self.out += data
            elif (
                whole
                and len(self.out) + len(data) <= CORK_LIMIT
                and (self.engine.inline or threading.current_thread() is self.reactor.thread)
            ):
                # On the loop thread a response waits for the end of the loop's turn (uncork): the kernel then
                # takes a turn's responses in a row, which wakes a client busy reading the last one once, not
                # per response; pipelined responses leave in one send.
                self.out += data
                if not self.corked:
                    self.corked = True
                    self.reactor.at_turn_end(self.uncork)
                return
            elif self.corked:
                self.out += data
                self._push_held_output()
                if self.broken:
                    raise ClientDisconnected("connection is broken")
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
            if not wait or len(self.out) <= HIGH_WATER:
                return
            if threading.current_thread() is not self.reactor.thread:
                self._wait_for_drain()
                return
        # --threads 0: the loop is running this write() and cannot flush for it, so it waits for the reader here,
        # for up to the send timeout. What the turn holds for other connections goes out before that wait.
        self.reactor.end_turn_early()
        with self.lock:
            self._drain_here()

    def uncork(self) -> None:
        """The loop's turn is over: send the output held for it (loop thread).

        What is left when the socket is full is flushed by the loop; reading resumes once it is out."""
        with self.lock:
            if not self.corked:
                return  # sent already: the connection closed, or more output followed
            self._push_held_output()
            if self.flushing and not self.broken:
                if self.after_flush is None:
                    self.after_flush = self._after_held_output
                return  # a closing response's own continuation (see finish) waits for the flush too
            action, self.after_flush = self.after_flush, None
        if action is not None:
            action()  # the held response was the connection's last: it ends now that the response is out
        elif self.broken and self.state != BUSY:
            self.close()  # the client is gone (a worker that has the connection finds it broken and closes it)

    def _after_held_output(self) -> None:
        """Output held past its response is out, or never will be (a send timeout): close, or take up the
        connection's own deadline again (the flushing replaced it with the send's) and read on."""
        if self.broken:
            if self.state != BUSY:
                self.close()
            return
        config = self.engine.config
        if self.state == IDLE:
            self.deadline = time.monotonic() + config.keepalive_timeout
        elif self.state == READING:
            self.deadline = time.monotonic() + config.header_timeout
        self.advance()

    def _push_held_output(self) -> None:
        # Lock held. Send the output held for the end of the turn now (what follows must come after it): the loop
        # flushes what the socket does not take, and a failed send marks the connection broken.
        if not self.corked:
            return
        self.corked = False
        out = self.out
        try:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            del out[:sent]
            if out:
                self._start_flushing()
        except OSError:
            self.broken = True

    def park_until_drained(self, resume: Callable[[], None]) -> bool:
        """If too much output is queued, arrange for ``resume()`` to run on the loop thread once the loop has
        drained it (or the connection broke) and return True: the caller's thread is free to go. Else False."""
        with self.lock:
            if self.broken:
                raise ClientDisconnected("connection is broken")
            if len(self.out) <= HIGH_WATER:
                return False
            self.on_drain = resume
            return True

    def _take_on_drain(self) -> Callable[[], None] | None:
        # Lock held. A parked response resumes when its queue is low again or will never drain (broken).
        resume = self.on_drain
        if resume is not None and (self.broken or len(self.out) <= LOW_WATER):
            self.on_drain = None
            return resume
        return None

    def _notify_drained(self) -> None:
        # Lock held. Wake a PEP 3333 write() waiting for the queue to drain, if one ever waited here.
        if self._drained is not None:
            self._drained.notify_all()

    def _wait_for_drain(self) -> None:
        limit = time.monotonic() + self.engine.config.send_timeout
        while len(self.out) > LOW_WATER and not self.broken:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                self.broken = True
                raise ClientDisconnected("send timed out")
            if self._drained is None:
                self._drained = threading.Condition(self.lock)
            self._drained.wait(remaining)
        if self.broken:
            raise ClientDisconnected("connection is broken")

    def _drain_here(self) -> None:
        """PEP 3333's ``write()`` with ``--threads 0``: flush from this (the loop) thread, waiting for the socket,
        until the queue is low again. Lock held.

        This is the one place where a slow reader holds the loop, and only for an application that pushes a large
        body through ``write()``: an iterable response parks instead, as on the threaded path. All the waits of
        one response share one ``send_timeout``: a reader just fast enough for each ``write()`` to end in time
        would otherwise hold the loop, and every other client, for as long as the response lasts."""
        waited = self.loop_wait[1] if self.loop_wait is not None and self.loop_wait[0] == self.requests_seen else 0.0
        started = time.monotonic()
        limit = started + self.engine.config.send_timeout - waited  # (the application's own time is not counted)
        writable = select.poll()
        writable.register(self.fd, select.POLLOUT)
        try:
            while len(self.out) > LOW_WATER and not self.broken:
                now = time.monotonic()
                remaining = max(0.0, limit - now)
                # In slices, telling the supervisor the process is alive (it kills a worker whose loop stops
                # beating, and this wait may last the whole send timeout): a slow reader costs its own wait.
                self.engine.watchdog.beat(now)
                if writable.poll(min(remaining, _DRAIN_SLICE) * 1000):
                    queued = len(self.out)
                    try:
                        self._write_some()
                    except OSError as error:
                        self.broken = True
                        raise ClientDisconnected(str(error)) from error
                    if remaining > 0 or len(self.out) < queued:
                        continue  # (with the budget spent, only while bytes still leave: never a spin)
                elif remaining > 0:
                    continue
                self.broken = True
                raise ClientDisconnected("send timed out")
        finally:
            self.loop_wait = (self.requests_seen, waited + time.monotonic() - started)
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
            self.out += head if self.tls is None else self.tls.encrypt(head)
            self.corked = False  # output held for the end of the turn leaves first, with the head
            if self.flushing:
                return
            try:
                if self.tls is None:
                    # MSG_MORE: hold the head back so that it leaves in one segment with the file's first bytes.
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
            if self.tls is not None:
                return self._write_file_encrypted(job)
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

    def _write_file_encrypted(self, job: _FileJob) -> bool:
        """``_write_some`` for a file on an HTTPS connection: a chunk is read and encrypted only once the last
        one is out, so a slow reader costs one chunk of memory, not the file. Lock held. Raises OSError."""
        assert self.tls is not None
        fileno = job.file.fileno()
        while job.remaining:
            chunk = os.pread(fileno, min(job.remaining, TLS_FILE_CHUNK), job.offset)
            if not chunk:
                raise FileChanged(f"file shrank with {job.remaining} bytes still to send")
            job.offset += len(chunk)
            job.remaining -= len(chunk)
            records = self.tls.encrypt(chunk)
            # Sent from the encrypted bytes themselves; only what the socket does not take is copied to the queue
            # (whose own flushing, at the top of _write_some, goes first next time).
            try:
                sent = self.sock.send(records)
            except (BlockingIOError, InterruptedError):
                sent = 0
            self.deadline = time.monotonic() + self.engine.config.send_timeout
            if sent < len(records):
                self.out += memoryview(records)[sent:]
                return False
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
            resume = self._take_on_drain()
            if not done:
                if len(self.out) <= LOW_WATER:
                    self._notify_drained()
                self.reactor.arm(self.fd, WRITE)
            else:
                self.flushing = False
                self._notify_drained()
                action, self.after_flush = self.after_flush, None
        if resume is not None:
            resume()
        if not done:
            return
        if action is not None:
            action()
        elif self.broken and self.state != BUSY:
            self.close()

    def finish(self, keep_alive: bool, *, clean: bool = True) -> None:
        """The response is over (owner thread): keep the connection or close it once output drains.

        ``clean``: the response went out whole; False when it was cut short, so HTTPS ends without close_notify."""
        with self.lock:
            # The connection goes on once its output is out: after the flush, or for a last response held for the
            # end of the turn, after uncork (it leaves there with the turn's others: a busy client is woken once
            # for all of them, not once per connection).
            if (self.flushing and not self.broken) or (self.corked and (not keep_alive or self.engine.stopping)):
                self.after_flush = lambda: self._after_response(keep_alive, clean)
                return
        self._after_response(keep_alive, clean)

    def _after_response(self, keep_alive: bool, clean: bool = True) -> None:
        self.release_body()
        if self.broken or not keep_alive or self.engine.stopping:
            request = self.request
            if (
                not self.broken
                and request is not None
                and (
                    # A file answered an Expect: 100-continue without asking for the body, which may be on its way all
                    # the same;
                    (request.expect_continue and self.static_mount is not None)
                    # or the server ends a connection its client meant to keep (stopping, draining, an error), so the
                    # client may have sent its next request already. Closing over unread input makes the kernel
                    # answer with a reset, which destroys what of our response the client has not read yet: drain
                    # first, close after. (A client that said close itself may send nothing more, RFC 9112 9.6: its
                    # connection closes at once, as the close benchmark's do.)
                    or (clean and (request.keep_alive or self.engine.draining or self.engine.stopping))
                )
            ):
                self._start_lingering()
            else:
                if not self.broken and clean:
                    self._say_close_notify()  # the response is complete: end the TLS session cleanly
                if threading.current_thread() is not self.reactor.thread:
                    self._send_fin_now()  # the loop closes the socket, later
                self.close_soon()
            return
        pipelined = self.parser.start_next()
        self.request = None
        self.static_mount = None
        if pipelined:
            # The deadline before the state: the loop's sweep may look at any moment, and must never see the
            # new state with the old deadline.
            self.deadline = time.monotonic() + self.engine.config.header_timeout
            self.state = READING  # a pipelined request is already here
            if threading.current_thread() is not self.reactor.thread:
                self.reactor.call_soon_threadsafe(self.advance)  # parsing and static files belong to the loop
            elif not self._advancing:
                self.advance()
            # else: the advance() below us on this stack goes on with it, so a pipeline never recurses.
        else:
            self.deadline = time.monotonic() + self.engine.config.keepalive_timeout
            self.state = IDLE
            self.reactor.arm(self.fd, READ)

    # -- errors, timeouts and closing -----------------------------------------------------------------------------

    def refuse(self, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer a request the server will not serve, then close without losing the answer (owner thread)."""
        log.info("%s: %d %s", self.describe(), status, detail)
        self.release_body()
        self.state = BUSY
        self.deadline = time.monotonic() + self.engine.config.send_timeout
        try:
            self.send(error_response(status, detail, self.engine.server_header, headers=headers))
        except ClientDisconnected:
            self.close_soon()
            return
        with self.lock:
            self._push_held_output()  # lingering shuts our side: the answer must be out first
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
        if self.state == CLOSED or self.state == LINGERING:
            return  # (lingering already: its limit stands)
        self._say_close_notify()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        now = time.monotonic()
        # The deadline and the limit before the state: the sweep, and a test, may look at any moment.
        self.deadline = now + LINGER_SECONDS
        self.linger = (now + max(LINGER_SECONDS, self.engine.config.send_timeout), self.unacknowledged())
        self.state = LINGERING
        self.reactor.arm(self.fd, READ)

    def _linger_longer(self, now: float) -> bool:
        """A lingering connection whose client is still taking in its last response lingers on, up to
        --send-timeout in all: closed while its output is on its way, a request the client sends after the close
        draws a reset, which destroys the rest of that response. Taking in means its unacknowledged bytes
        shrank since the last look; a client that takes nothing for LINGER_SECONDS gets no more time."""
        limit, before = self.linger
        left = self.unacknowledged()
        if not left or before is None or left >= before or now >= limit:
            return False
        self.linger = (limit, left)
        self.deadline = min(now + LINGER_SECONDS, limit)
        return True

    def _linger_read(self) -> None:
        data = self._receive()
        if data is None:
            return
        if data:
            self.reactor.arm(self.fd, READ)
        else:
            self.close()

    def _send_fin_now(self) -> None:
        """A worker is done with a connection that ends: end our side of the stream now (FIN), if all output is out.

        Only the loop closes sockets (its tables), so from a worker the close waits for the loop to get to it. A
        client that has its whole response (Content-Length, Connection: close) does not wait: it closes first,
        and the side that closes first keeps the connection in TIME_WAIT. On the client that costs every later
        connect() a longer search for a free port: with wrk, 100 connections, Connection: close, its kernel time
        per connection doubled and our throughput halved (18k against 37k req/s with the app on the loop, whose
        close follows the response at once). So the worker says FIN itself, right behind the response; the loop
        still closes the socket, whose descriptor stays valid until then."""
        with self.lock:
            if self.out or self.flushing or self.corked or self.file_job is not None or self.broken:
                return  # output still queued: the FIN must follow it, and the loop's close does that
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the client is gone already

    def _say_close_notify(self) -> None:
        """On HTTPS, end the session with close_notify, so the client can tell our close from a connection cut
        short (RFC 8446 6.1). Only after complete responses: said after half a response, it would vouch for it.
        Best effort: nothing else is queued at these points, and a client that does not read loses nothing."""
        if self.tls is None or not self.tls.established:
            return
        with self.lock:
            if self.flushing or self.broken:
                return
            notify = self.tls.close_notify()
            with contextlib.suppress(OSError):
                self.sock.send(notify)

    def check_deadline(self, now: float) -> None:
        """Called by the engine's sweep on the loop thread."""
        if now < self.deadline:
            return
        if self.flushing:
            log.info("%s: send timed out", self.describe())
            # Close with a reset: a client that reads nothing would otherwise keep what the kernel still holds
            # for it (megabytes) queued on an orphaned socket.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            with self.lock:
                self.broken = True
                self._notify_drained()
                action, self.after_flush = self.after_flush, None
                resume = self._take_on_drain()
                self.flushing = False
            if resume is not None:
                resume()
            if action is not None:
                action()
            elif self.state != BUSY:
                self.close()
        elif self.state == IDLE and self._input_waiting():
            # Its next request arrived while the loop was busy (an application running on it with --threads 0):
            # closing now would reset the client under a request it sent in time. The loop reads it next turn.
            self.deadline = now + self.engine.config.header_timeout
        elif self.state == LINGERING:
            if not self._linger_longer(now):
                self.close()
        elif self.state == IDLE:
            self.close()
        elif self.state == HANDSHAKE:
            log.info("%s: TLS handshake timed out", self.describe())
            self.close()
        elif self.state == READING and self._resume_queued:
            # What the client sent is here, waiting for its turn (see _next_turn): judged once it has been read.
            self.deadline = now + 1.0
        elif self.state == READING:
            if self.request is None:
                self.refuse(408, "timed out reading the request head")
            elif not self.engine.config.min_body_rate or self.body_received == 0:
                self.refuse(408, "timed out reading the request body")
            else:
                config = self.engine.config
                self.refuse(
                    408,
                    f"the request body arrived too slowly (under {config.min_body_rate} bytes per second "
                    f"over {config.body_timeout:g} s)",
                )
        elif self.state == BUSY:
            # An application is running (the watchdog reports it when overdue) or a refusal is on its way out.
            timeout = self.engine.config.timeout or self.engine.config.send_timeout
            self.deadline = now + timeout

    def _input_waiting(self) -> bool:
        """True when the client has sent something this connection has not read yet (loop thread)."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except OSError:  # nothing there (BlockingIOError), or the connection is gone
            return False

    def close_idle(self) -> None:
        """Close an idle keep-alive connection (the engine stopping, loop thread) without a reset destroying what
        of the last response the client has not read yet: the kernel resets a connection closed over unread
        input, so while the client may still send (it has, or our output is still on its way to it) the
        connection lingers instead."""
        if self._input_waiting() or self.unacknowledged() != 0:  # (None, unknown: linger to be safe)
            self._start_lingering()
        else:
            self.close()

    def unacknowledged(self) -> int | None:
        """Bytes written that the client has not acknowledged yet, sent or not, our FIN included (Linux's SIOCOUTQ;
        on a Unix socket, what the client has not read, in the kernel's own accounting); None where the kernel
        cannot be asked."""
        try:
            return int(struct.unpack("i", fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
        except (OSError, AttributeError):
            return None

    def linger_done(self) -> bool:
        """A lingering connection may close now (a graceful stop need not wait out the linger of a client that
        keeps its socket without reading): the client has acknowledged everything, our FIN included, and sent
        nothing unread. What it holds unread survives a reset on Linux, which delivers it first; a stack that
        discards it (RFC 9112 9.6) could lose the end of a response it has not read, during a stop only."""
        return self.state == LINGERING and self.unacknowledged() == 0 and not self._input_waiting()

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
        with self.lock:
            if self.corked:  # a response held for the end of the turn still goes out, as far as the socket takes it
                self.corked = False
                try:
                    cut_short = self.sock.send(self.out) < len(self.out)
                except OSError:
                    cut_short = True
                if cut_short:
                    self.broken = True  # so no TLS close_notify vouches for what was cut
        if self.state == IDLE:
            self._say_close_notify()  # between requests: nothing is cut short
        self.state = CLOSED
        self.reactor.remove(self.fd)
        self.engine.forget(self)
        with self.lock:
            self.broken = True
            self._notify_drained()
            job, self.file_job = self.file_job, None
            resume = self._take_on_drain()
        if job is not None:
            self._file_done(job)
        if resume is not None:
            resume()  # a parked response learns that its client is gone, and closes its iterable
        self.release_body()
        try:  # (not contextlib.suppress, which costs two Python calls for every connection)
            self.sock.close()
        except OSError:
            pass

    def describe(self) -> str:
        return f"{self.remote_addr or 'unix'}:{self.remote_port or '-'}"


def _run_quietly(callback: Callable[[int], None], sent: int) -> None:
    try:
        callback(sent)
    except Exception:
        log.exception("error while closing a response body")
