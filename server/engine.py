"""One process's server: listening sockets, the reactor, connections, the app thread pool, and shutdown.

The engine is the glue between the layers. The reactor tells an ``Acceptor`` that a listening socket is ready;
the acceptor makes an ``HTTPConnection``; the connection parses a request and hands it back here, to be served
either on the loop (a static file: ``serve_static``) or on a worker thread (the WSGI app: ``handle_request``).
A periodic sweep enforces every connection's deadline. ``shutdown`` stops accepting, lets in-flight requests
finish within the graceful timeout, and closes everything else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from server import SERVER_SOFTWARE
from server.accesslog import log_response
from server.config import Config
from server.connection import IDLE, HTTPConnection
from server.http import Request, error_response, http_date, status_line
from server.listeners import Listener
from server.loop import READ, Reactor
from server.proxy import TrustedProxies
from server.static import StaticOptions, parse_mount, serve_path
from server.watchdog import Watchdog
from server.workers import ThreadPool, request_replacement, supervisor_pid
from server.wsgi import ApplicationRun, base_environ, build_environ, log_access

log = logging.getLogger("server")

_ACCEPT_BATCH = 64
_RESERVED_FDS = 32  # descriptors kept free for files, logs and the wakeup channel
_SMALL_FILE = 16 * 1024  # static files up to this size leave in the same send() as their head
_FIRST_REQUEST_GRACE = 1.0  # on shutdown, how long a just-accepted connection may take to send its request


class Acceptor:
    """Accepts connections on one listening socket (level-triggered: it stays armed)."""

    def __init__(self, engine: Engine, listener: Listener) -> None:
        self.engine = engine
        self.listener = listener
        self.sock = listener.sock
        self.local = listener.local_facts

    def handle_event(self, events: int) -> None:
        accept = self.sock.accept
        adopt = self.engine.adopt
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.engine.pause_accepting(f"out of resources: {error.strerror}")
                    return
                continue  # ECONNABORTED and friends: that client is gone, the next one may not be
            adopt(sock, peer, self.local)


class Engine:
    """Everything one worker process runs; ``run()`` blocks until shutdown."""

    def __init__(self, config: Config, app: Callable, listeners: list[Listener], *, multiprocess: bool = False):
        self.config = config
        self.app = app
        # A pre-forked worker whose supervisor is gone (killed outright) must not serve on alone, unsupervised.
        self._supervisor = (supervisor_pid() or os.getppid()) if multiprocess else None
        self.listeners = listeners
        self.multiprocess = multiprocess
        self.reactor = Reactor(config.loop)
        self.pool = ThreadPool(config.threads, name="app")
        self.watchdog = Watchdog(config.timeout, config.threads)
        self.limits = config.limits
        self.server_header = SERVER_SOFTWARE
        self.connections: dict[int, HTTPConnection] = {}
        self.stopping = False
        self.proxies = TrustedProxies(config.forwarded_allow_ips, config.proxy_headers)
        self.base_environ = base_environ(multithread=config.threads > 1, multiprocess=multiprocess)
        self.static_mounts = _static_mounts(config)
        self.max_connections = min(config.max_connections, _raise_fd_limit() - _RESERVED_FDS)
        self._acceptors = [Acceptor(self, listener) for listener in listeners]
        self._accepting = False
        self._refused = 0
        self._shutdown_deadline = 0.0
        # Request bodies buffered by this process, in memory and spooled: reserved by the loop as their bytes
        # arrive, released by whichever thread is done with them (see HTTPConnection.release_body).
        self.buffered_bytes = 0
        self._budget_lock = threading.Lock()
        timeouts = [config.keepalive_timeout, config.header_timeout, config.body_timeout, config.send_timeout]
        if config.timeout > 0:
            timeouts.append(config.timeout)  # so the watchdog's reports and heartbeats come well within it
        self._sweep_interval = max(0.05, min(1.0, min(timeouts) / 4))

    # -- life cycle -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``shutdown`` completes."""
        self._start_accepting()
        self.reactor.call_later(self._sweep_interval, self._sweep)
        try:
            self.reactor.run()
        finally:
            for conn in list(self.connections.values()):
                conn.close()
            self.pool.shutdown(timeout=1.0)
            self.reactor.close()

    def _start_accepting(self) -> None:
        if self._accepting or self.stopping:
            return
        for acceptor in self._acceptors:
            self.reactor.add(acceptor.sock.fileno(), acceptor, READ, oneshot=False, exclusive=self.multiprocess)
        self._accepting = True

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        for acceptor in self._acceptors:
            self.reactor.remove(acceptor.sock.fileno())
        self._accepting = False

    def pause_accepting(self, reason: str, seconds: float = 0.5) -> None:
        """Stop accepting for a moment (out of descriptors), so the loop does not spin on a failing accept."""
        log.warning("not accepting for %.1fs: %s", seconds, reason)
        self._stop_accepting()
        self.reactor.call_later(seconds, self._start_accepting)

    def shutdown(self, graceful: bool = True) -> None:
        """Stop accepting; finish in-flight requests (within ``graceful_timeout``) when graceful. Loop thread."""
        if not graceful:
            self.reactor.stop()
            return
        if self.stopping:
            return
        self.stopping = True
        self._stop_accepting()
        now = time.monotonic()
        self._shutdown_deadline = now + self.config.graceful_timeout
        for conn in list(self.connections.values()):
            if conn.state == IDLE and conn.requests_seen == 0:
                # Accepted but silent: its first request may be on the wire right now. Give it a moment to
                # arrive (it is then answered with Connection: close) rather than resetting the client.
                conn.deadline = min(conn.deadline, now + _FIRST_REQUEST_GRACE)
        self._check_drained()

    def _check_drained(self) -> None:
        # Idle keep-alive connections are closed (clients retry on a fresh connection, as they must expect
        # of any idle connection); everything else is waited for, up to the graceful deadline.
        for conn in list(self.connections.values()):
            if conn.state == IDLE and conn.requests_seen and not conn.flushing:
                conn.close()
        if not self.connections or time.monotonic() >= self._shutdown_deadline:
            if self.connections:
                log.warning("graceful timeout: closing %d connection(s) still open", len(self.connections))
            self.reactor.stop()
            return
        self.reactor.call_later(0.05, self._check_drained)

    # -- connections --------------------------------------------------------------------------------------------------

    def adopt(self, sock: socket.socket, peer: Any, local: tuple[str, str, str]) -> None:
        """Take a freshly accepted socket: refuse it with 503 at a limit, else start its connection."""
        fd = sock.fileno()
        max_fd = self.reactor.poller.max_fd
        if len(self.connections) >= self.max_connections or (max_fd is not None and fd >= max_fd - 8):
            self._refuse_overload(sock)
            return
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = HTTPConnection(self, sock, peer, local)
        self.connections[fd] = conn
        conn.start()

    def reserve_body_bytes(self, size: int) -> bool:
        """Take ``size`` bytes of the buffered-body budget; False (and nothing taken) when it would overflow."""
        with self._budget_lock:
            if self.buffered_bytes + size > self.config.max_buffered_bytes:
                return False
            self.buffered_bytes += size
            return True

    def release_body_bytes(self, size: int) -> None:
        """Give back what ``reserve_body_bytes`` took."""
        with self._budget_lock:
            self.buffered_bytes -= size

    def _refuse_overload(self, sock: socket.socket) -> None:
        self._refused += 1
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(error_response(503, "the server is at its connection limit", self.server_header))
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def forget(self, conn: HTTPConnection) -> None:
        """Called by a connection as it closes."""
        if self.connections.get(conn.fd) is conn:
            del self.connections[conn.fd]

    def _sweep(self) -> None:
        now = time.monotonic()
        try:
            for conn in list(self.connections.values()):
                if conn.deadline <= now:
                    try:
                        conn.check_deadline(now)
                    except Exception as error:  # one broken connection must not stop every deadline
                        conn.fail(error)
            self._sweep_others(now)
        finally:
            self.reactor.call_later(self._sweep_interval, self._sweep)

    def _sweep_others(self, now: float) -> None:
        """The sweep's process-wide duties: the overload summary, the watchdog, a vanished supervisor."""
        if self._refused:
            log.warning("refused %d connection(s) with 503: at the connection limit", self._refused)
            self._refused = 0
        if self.watchdog.check(now) and not self.stopping:
            request_replacement()  # every app thread is stuck: ask the supervisor (if any) for a fresh worker
        if self._supervisor is not None and os.getppid() != self._supervisor and not self.stopping:
            log.warning("worker %d: the supervisor is gone; finishing in-flight requests and exiting", os.getpid())
            self.shutdown(graceful=True)

    # -- serving ------------------------------------------------------------------------------------------------------

    def static_mount_for(self, request: Request) -> Any:
        """The static mount that serves this request's path, or None for the application."""
        for mount in self.static_mounts:
            if mount.match(request.path) is not None:
                return mount
        return None

    def serve_static(self, conn: HTTPConnection, request: Request, mount: Any) -> None:
        """Answer from the file system on the current (loop) thread: one stat, one open, then sendfile."""
        started = time.monotonic()
        headers: dict[str, str] = {}
        for name, value in request.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            reply = serve_path(mount, request.method, request.path, headers)
        except Exception:
            log.exception("error serving static file %s", request.path)
            conn.refuse(500, "error reading the file")
            return
        # An unread Expect: 100-continue body leaves the start of the next request unknown: close after.
        keep_alive = request.keep_alive and not request.expect_continue and not self.stopping
        lines = [f"{name}: {value}\r\n" for name, value in reply.headers]
        lines.append(f"Date: {http_date()}\r\nServer: {self.server_header}\r\n")
        lines.append("\r\n" if keep_alive else "Connection: close\r\n\r\n")
        head = (status_line(reply.status) + "".join(lines)).encode("latin-1")

        def finished(sent: int) -> None:
            reply.close()
            log_response(
                conn.remote_addr,
                request,
                reply.status,
                sent,
                headers.get("referer"),
                headers.get("user-agent"),
                started,
            )

        try:
            if reply.file is not None and reply.length > _SMALL_FILE:
                conn.send_file(head, reply.file, reply.offset, reply.length, on_done=finished)
            elif reply.file is not None and reply.length:
                # A small file costs less read into the head's buffer than sent after it: one send, one segment.
                data = os.pread(reply.file.fileno(), reply.length, reply.offset)
                if len(data) != reply.length:
                    log.warning("%s: %s shrank while being served; closing", conn.describe(), request.path)
                    reply.close()
                    conn.close_soon()
                    return
                conn.send(head + data)
                finished(len(data))
            else:
                body = b"" if request.method == "HEAD" else reply.body
                conn.send(head + body)
                finished(len(body))
        except Exception:
            reply.close()
            conn.close_soon()
            return
        conn.finish(keep_alive)

    def handle_request(self, conn: HTTPConnection, request: Request) -> None:
        """Run the WSGI application for one request (worker thread); its response may finish on another."""
        started = time.monotonic()
        try:
            body = conn.take_body()
            environ = build_environ(self.base_environ, request, conn, body)
            if self.proxies.enabled:
                self.proxies.apply(environ)
        except Exception as error:
            conn.fail(error)
            return
        run = ApplicationRun(
            self.app,
            environ,
            conn,
            request,
            body=body,
            started=started,
            debug=self.config.debug,
            resubmit=self._resume_application,
            on_finished=log_access,
            on_complete=self._application_done,
        )
        self.watchdog.watch(run, run.start)  # the watchdog times every piece of application work

    def _resume_application(self, run: ApplicationRun) -> None:
        """A parked response's output has drained (loop thread): its next piece goes to a worker."""
        self.pool.submit(self.watchdog.watch, run, run.pump)

    def _application_done(self, run: ApplicationRun) -> None:
        """The application is done with its thread: close the body, keep the connection or close it."""
        writer = run.writer
        conn = run.conn
        try:
            run.body.close()
            if conn.reserved:
                conn.release_body()  # the body's share of the budget is free now, not once the response is out
        except Exception as error:
            log.error("%s: error while releasing a request body: %s", conn.describe(), error)
        finally:
            conn.finish(writer.keep_alive and not writer.client_gone and not self.stopping)


def _static_mounts(config: Config) -> list[Any]:
    if not config.static:
        return []
    options = StaticOptions(
        max_age=config.static_max_age,
        follow_symlinks=config.follow_symlinks,
        dotfiles=config.static_dotfiles,
        listing=config.static_listing,
    )
    mounts = [parse_mount(spec, options) for spec in config.static]
    # The longest prefix wins, so /static/img can be mounted apart from /static.
    return sorted(mounts, key=lambda m: len(m.prefix), reverse=True)


def _raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one: each connection costs one. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft
