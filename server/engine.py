"""One process's server: listening sockets, the reactor, connections, the app thread pool, and shutdown.

The engine is the glue between the layers. The reactor tells an ``Acceptor`` that a listening socket is ready;
the acceptor makes an ``HTTPConnection``; the connection parses a request and hands it back here, to be served
either on the loop (a static file: ``serve_static``) or on a worker thread (the WSGI app: ``handle_request``).
A periodic sweep enforces every connection's deadline. ``shutdown`` stops accepting, lets in-flight requests
finish within the graceful timeout, and closes everything else.

With ``--max-requests``, the engine counts the requests it dispatches (static files and app requests alike) and,
at its limit, asks its supervisor to be recycled (``server.workers.request_recycling``); it goes on serving until
the supervisor, having started its successor, tells it to retire (``retire``, on ``RETIRE_SIGNAL``).

On HTTPS listeners each accepted connection starts with a TLS handshake (``HTTPConnection.start_tls``) using the
current context of the ``CertificateStore``, which a timer checks for renewed certificate files; SIGHUP reloads
them at once (``reload_certificates``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from server import SERVER_SOFTWARE
from server.accesslog import access_log, log_response, named
from server.config import Config
from server.connection import BODY_RESERVE_STEP, HANDSHAKE, IDLE, HTTPConnection
from server.http import Request, error_response, http_date, status_line
from server.listeners import Listener
from server.loop import READ, Reactor
from server.net.addr import source_key
from server.oserrors import OUT_OF_RESOURCES, descriptor_limit
from server.proxy import TrustedProxies
from server.redirect import HTTPSRedirect
from server.static import StaticOptions, parse_mount, serve_path
from server.static import reply as static_reply
from server.static.cache import descriptor_budget
from server.tls import CertificateStore
from server.watchdog import Watchdog
from server.workers import OnTheLoop, ThreadPool, request_recycling, request_replacement, supervisor_pid
from server.wsgi import ApplicationRun, RunHooks, base_environ, build_environ, log_access

log = logging.getLogger("server")

_ACCEPT_BATCH = 64
_RESERVED_FDS = 32  # descriptors kept free for the listeners, the poller, logs and the wakeup channel
_SMALL_FILE = 16 * 1024  # static files up to this size leave in the same send() as their head
_FIRST_REQUEST_GRACE = 1.0  # on shutdown, how long a just-accepted connection may take to send its request


class Acceptor:
    """Accepts connections on one listening socket (level-triggered: it stays armed)."""

    def __init__(self, engine: Engine, listener: Listener) -> None:
        self.engine = engine
        self.listener = listener
        self.sock = listener.sock
        self.local = listener.local_facts
        self.tls = listener.tls
        # What every accepted socket is, as plain ints, asked once (see accept).
        self._kind = (int(self.sock.family), int(self.sock.type), self.sock.proto)

    def accept(self) -> tuple[socket.socket, Any]:
        """``socket.accept()`` without its per-call cost: the stdlib's wrapper reads the listener's family and type
        through two enum conversions for every connection; here they are ints known in advance (1.3 us of about
        17 per connection, measured with timeit). ``_accept`` is the C call that the wrapper itself makes, and it
        raises what ``accept`` raises."""
        fd, peer = self.sock._accept()  # type: ignore[attr-defined]
        family, kind, proto = self._kind
        return socket.socket(family, kind, proto, fd), peer

    def handle_event(self, events: int) -> None:
        accept = self.accept
        adopt = self.engine.adopt
        # With --workers N every process waits on the shared socket and each takes one connection per turn, so a
        # burst is dealt out between them. (EPOLLEXCLUSIVE, which wakes one process per connection, with 64 per
        # turn, often let one process take a whole burst: all of wrk's 100 connections in one of two workers, in
        # about one run of three. The price is a wasted wakeup per connection in each other process.)
        for _ in range(1 if self.engine.config.workers > 1 else _ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in OUT_OF_RESOURCES:
                    self.engine.pause_accepting(f"out of resources: {error.strerror}")
                    return
                continue  # ECONNABORTED and friends: that client is gone, the next one may not be
            adopt(sock, peer, self.local, self.tls)


class Engine:
    """Everything one worker process runs; ``run()`` blocks until shutdown."""

    def __init__(
        self,
        config: Config,
        app: Callable,
        listeners: list[Listener],
        *,
        multiprocess: bool = False,
        certificates: CertificateStore | None = None,
    ):
        self.config = config
        self.app = app
        # A pre-forked worker whose supervisor is gone (killed outright) must not serve on alone, unsupervised.
        self._supervisor = (supervisor_pid() or os.getppid()) if multiprocess else None
        self.listeners = listeners
        self.multiprocess = multiprocess
        self.reactor = Reactor(config.loop)
        # --threads 0: the application runs on the loop (see server.workers.OnTheLoop).
        self.inline = config.threads == 0
        self.run_hooks = RunHooks(app, config.debug, self._resume_application, log_access, self._application_done)
        self.pool = OnTheLoop(self.reactor) if self.inline else ThreadPool(config.threads, name="app")
        self.watchdog = Watchdog(config.timeout, config.threads)
        self.limits = config.limits
        self.server_header = SERVER_SOFTWARE
        self.connections: dict[int, HTTPConnection] = {}
        self.stopping = False
        self.draining = False  # retiring for --max-requests: see _drain
        self.proxies = TrustedProxies(config.forwarded_allow_ips, config.proxy_headers)
        self.base_environ = base_environ(multithread=config.threads > 1, multiprocess=multiprocess)
        self.static_mounts = _static_mounts(config)
        limit = descriptor_limit(raise_to_hard=True)
        self.max_connections = min(config.max_connections, connections_within(limit, bool(self.static_mounts)))
        self._acceptors = [Acceptor(self, listener) for listener in listeners]
        self._accepting = False
        self._refused = 0
        self._shutdown_deadline = 0.0
        # Request bodies buffered by this process, in memory and spooled: reserved by the loop as their bytes
        # arrive, released by whichever thread is done with them (see HTTPConnection.release_body).
        self.buffered_bytes = 0
        self._budget_lock = threading.Lock()
        # What one client holds of it (see budget_holder): a client that sends most of several bodies at once and
        # then trickles the rest at --min-body-rate would otherwise hold the whole budget for as long as its
        # trickle lasts (hours, for bodies of several MiB) and every other upload would get 503 meanwhile. One
        # client may hold an eighth of the budget, or one largest body (and its last reservation step) if that is
        # more, so that a client alone can always send what --max-body-bytes allows.
        self.held_by: dict[str, int] = {}
        self.client_share = min(
            config.max_buffered_bytes, max(config.max_buffered_bytes // 8, config.max_body_bytes + BODY_RESERVE_STEP)
        )
        timeouts = [config.keepalive_timeout, config.header_timeout, config.body_timeout, config.send_timeout]
        if config.timeout > 0:
            timeouts.append(config.timeout)  # so the watchdog's reports and heartbeats come well within it
        self._sweep_interval = max(0.05, min(1.0, min(timeouts) / 4))
        # --max-requests: this process's own limit. The jitter is drawn here, in the worker after its fork, so
        # each worker gets its own and workers started together do not all restart together; secrets rather than
        # random, so the draw never depends on a generator state that forked siblings share.
        self.max_requests = 0
        if config.max_requests:
            self.max_requests = config.max_requests + secrets.randbelow(config.max_requests_jitter + 1)
        self._served = itertools.count(1)  # next() on it is one C call: safe from the loop and the app threads
        self.recycling = False  # the limit was reached: a replacement is asked for (or will be, at the next sweep)
        self.certificates = certificates
        if certificates is not None and multiprocess:
            certificates.quiet = True  # this process's copy: the supervisor reports renewals, once
        self.https_redirect = _https_redirect(config, listeners)

    # -- life cycle -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``shutdown`` completes."""
        # The supervisor watches a worker's heartbeats only once it has had one: the first goes out before the
        # first request can, or a request that freezes the loop at once (an app hanging with --threads 0) would
        # leave a worker that never beat, and is never missed.
        self.watchdog.beat(time.monotonic())
        self._start_accepting()
        self.reactor.call_later(self._sweep_interval, self._sweep)
        if self.certificates is not None:
            # A worker forked after a renewal (SIGHUP's fresh workers) starts with what the files hold now.
            self.certificates.check(settled=True)
            if self.config.cert_check_interval:
                self.reactor.call_later(self.config.cert_check_interval, self._check_certificates)
        try:
            self.reactor.run()
        finally:
            for conn in list(self.connections.values()):
                conn.close()
            self.pool.shutdown(timeout=1.0)
            self.reactor.close()

    def _start_accepting(self) -> None:
        if self._accepting or self.stopping or self.draining:
            return
        for acceptor in self._acceptors:
            self.reactor.add(acceptor.sock.fileno(), acceptor, READ, oneshot=False)
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

    def _check_certificates(self) -> None:
        # On the loop: a stat of each certificate file every interval, and, on a renewal, reading a few KiB of
        # PEM and building a context (milliseconds, every 60 to 90 days), which is cheaper than a thread's hand-off.
        assert self.certificates is not None
        try:
            self.certificates.check()
        finally:
            self.reactor.call_later(self.config.cert_check_interval, self._check_certificates)

    def reload_certificates(self) -> None:
        """SIGHUP in a single process: load the certificate files now (loop thread); a bad one is logged, not used."""
        if self.certificates is not None:
            self.certificates.reload()

    def shutdown(self, graceful: bool = True) -> None:
        """Stop accepting; finish in-flight requests (within ``graceful_timeout``) when graceful. Loop thread.
        A draining worker stops too: its idle keep-alive connections are closed now, within the drain's deadline."""
        if not graceful:
            self.reactor.stop()
            return
        if self.stopping:
            return
        self.stopping = True
        self._stop_accepting()
        self._close_listeners()
        self._begin_closing()

    def _close_listeners(self) -> None:
        # Closed, not only unwatched: once no process holds a listening socket, a new client is refused at once
        # and tries elsewhere, instead of being accepted into a backlog nobody reads and reset when the process
        # exits, its request sent. (A supervisor, a --reload parent or systemd may keep a copy for what comes
        # next: closing this process's copy never closes theirs.)
        for acceptor in self._acceptors:
            acceptor.sock.close()

    def retire(self) -> None:
        """The supervisor has started this worker's successor (it asked for one at ``--max-requests``): drain and
        exit (loop thread). Nothing to do when it is stopping or draining already, nor for a worker that never
        asked: a stray SIGUSR2 (sent by hand, by a tool) would make it stop accepting while the supervisor,
        counting it alive, starts no successor."""
        if not self.recycling:
            log.warning("worker %d: a retirement signal it did not ask for (SIGUSR2); ignored", os.getpid())
            return
        if not self.stopping and not self.draining:
            self._drain()

    def _drain(self) -> None:
        """Retire without failing a single request: the graceful stop, minus closing idle keep-alive connections.

        The plain graceful stop closes idle keep-alive connections at once, which is right when the whole server
        goes away but fails requests when a busy client is sending its next one on such a connection at the very
        moment it is closed: the client sees a reset (measured under a keep-alive load recycling every 50 or so:
        4 to 10 failed requests in 1,800; 1 in 40 when the app finishes after its last byte is sent, since then
        the connection closes under a response that said keep-alive). Here nothing is closed under a client:
        every request dispatched from now on is answered with Connection: close (``_last_on_its_connection``), a
        response already under way keeps the keep-alive it promised and its connection is answered once more,
        and an idle one is left to send that last request or to reach its keep-alive timeout. Deliberately not
        ``stopping``: that flag closes a connection after a response that has already told its client to keep it.
        """
        self.draining = True
        self._stop_accepting()
        self._close_listeners()  # (the supervisor keeps its copy for the successor, forked already)
        log.info("worker %d: retiring; answering what its connections still send, with Connection: close", os.getpid())
        self._begin_closing()

    def _begin_closing(self) -> None:
        now = time.monotonic()
        already = self._shutdown_deadline > 0.0  # draining, and now told to stop: the drain's deadline stands
        if not already:
            self._shutdown_deadline = now + self.config.graceful_timeout
        for conn in list(self.connections.values()):
            if (conn.state == IDLE or conn.state == HANDSHAKE) and conn.requests_seen == 0:
                # Accepted but silent: its first request may be on the wire right now. Give it a moment to
                # arrive (it is then answered with Connection: close) rather than resetting the client.
                conn.deadline = min(conn.deadline, now + _FIRST_REQUEST_GRACE)
        if not already:
            self._check_drained()  # runs until the end; a second one would only check twice as often

    def _check_drained(self) -> None:
        # Stopping: idle keep-alive connections are closed (clients retry on a fresh connection, as they must
        # expect of any idle connection); everything else is waited for, up to the graceful deadline.
        if self.stopping:
            for conn in list(self.connections.values()):
                if conn.state == IDLE and conn.requests_seen and not conn.flushing and not conn.corked:
                    conn.close_idle()  # (a response held for the end of the turn, or still flushing, is not done)
                elif conn.linger_done():
                    conn.close()
        if not self.connections or time.monotonic() >= self._shutdown_deadline:
            if self.connections:
                log.warning("graceful timeout: closing %d connection(s) still open", len(self.connections))
            self.reactor.stop()
            return
        self.reactor.call_later(0.05, self._check_drained)

    def _last_on_its_connection(self, request: Request) -> None:
        """Draining: answer ``request`` with Connection: close, so its client takes the next one elsewhere.

        Set on the request before its response exists, so the response's head says so (``ResponseWriter`` starts
        from ``request.keep_alive``) and the connection closes after it, as its client was told."""
        request.keep_alive = False

    # -- connections --------------------------------------------------------------------------------------------------

    def adopt(self, sock: socket.socket, peer: Any, local: tuple[str, str, str], tls: bool = False) -> None:
        """Take a freshly accepted socket: refuse it with 503 at a limit, else start its connection."""
        fd = sock.fileno()
        max_fd = self.reactor.poller.max_fd
        if len(self.connections) >= self.max_connections or (max_fd is not None and fd >= max_fd - 8):
            self._refuse_overload(sock, tls)
            return
        sock.setblocking(False)
        if isinstance(peer, tuple):  # TCP (a Unix socket's peer has no address); not sock.family: an enum per call
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = HTTPConnection(self, sock, peer, local)
        if tls:
            assert self.certificates is not None
            conn.start_tls(self.certificates.context, self.config.tls_handshake_timeout)
        elif self.https_redirect is not None:
            conn.redirect = self.https_redirect
        self.connections[fd] = conn
        conn.start()

    def budget_room(self, holder: str) -> int:
        """How many more bytes of the buffered-body budget ``holder`` could take now."""
        with self._budget_lock:
            spare = self.config.max_buffered_bytes - self.buffered_bytes
            return min(spare, self.client_share - self.held_by.get(holder, 0))

    def reserve_body_bytes(self, size: int, holder: str) -> bool:
        """Take ``size`` bytes of the buffered-body budget for ``holder`` (``budget_holder``); False (and nothing
        taken) when the budget, or the holder's share of it, would overflow."""
        with self._budget_lock:
            held = self.held_by.get(holder, 0)
            if self.buffered_bytes + size > self.config.max_buffered_bytes or held + size > self.client_share:
                return False
            self.buffered_bytes += size
            self.held_by[holder] = held + size
            return True

    def release_body_bytes(self, size: int, holder: str) -> None:
        """Give back what ``reserve_body_bytes`` took for ``holder``."""
        with self._budget_lock:
            self.buffered_bytes -= size
            left = self.held_by.pop(holder, 0) - size
            if left > 0:
                self.held_by[holder] = left
            elif left < 0:  # (a release for a holder that did not reserve it: the accounting is off)
                log.error("body budget: %d bytes released for %s, which held fewer", size, holder)

    def budget_holder(self, conn: HTTPConnection, request: Request) -> str:
        """Whom a request's body counts against: its client's address, or behind a trusted proxy the client the
        proxy names; as the networking layer counts sources (``source_key``): an IPv4-mapped address as its IPv4
        address (on a dual-stack socket every IPv4 client arrives so), an IPv6 address as its /64, which one
        subscriber gets whole (so one client does not become many by changing the last 64 bits)."""
        return source_key(self._client(conn, request))

    def _refuse_overload(self, sock: socket.socket, tls: bool = False) -> None:
        self._refused += 1
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            # A TLS client could not read a plain 503, and a handshake is the very cost being refused: just close.
            if not tls:
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
        """The sweep's process-wide duties: the overload summary, the watchdog, a vanished supervisor, and (last,
        after what keeps the process alive) the open-file cache's expired entries, closed now rather than when
        the next new file is cached."""
        if self._refused:
            log.warning("refused %d connection(s) with 503: at the connection limit", self._refused)
            self._refused = 0
        if self.watchdog.check(now) and not self.stopping:
            request_replacement()  # every app thread is stuck: ask the supervisor (if any) for a fresh worker
        if self.recycling and not self.stopping and not self.draining:
            request_recycling()  # asked already: does nothing; the pipe was full: asks again
        if self._supervisor is not None and os.getppid() != self._supervisor and not self.stopping:
            log.warning("worker %d: the supervisor is gone; finishing in-flight requests and exiting", os.getpid())
            self.shutdown(graceful=True)
        static_reply.OPEN_FILES.evict_expired()

    # -- serving ------------------------------------------------------------------------------------------------------

    def _count_request(self) -> None:
        """One more request dispatched (any thread); at ``--max-requests``, ask the supervisor for a successor."""
        if next(self._served) == self.max_requests:
            log.info("worker %d: served its %d requests; asking to be replaced", os.getpid(), self.max_requests)
            self.recycling = True
            request_recycling()

    def static_mount_for(self, request: Request) -> Any:
        """The static mount that serves this request's path, or None for the application."""
        for mount in self.static_mounts:
            if mount.match(request.path) is not None:
                return mount
        return None

    def serve_static(self, conn: HTTPConnection, request: Request, mount: Any) -> None:
        """Answer from the file system on the current (loop) thread: one stat, one open, then sendfile."""
        started = conn.head_arrived
        if self.max_requests:
            self._count_request()
        if type(mount) is HTTPSRedirect:
            self._redirect(conn, request, mount, started)
            return
        headers: dict[str, str] = {}
        for name, value in request.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            reply = serve_path(
                mount, request.method, request.path, headers, read_up_to=_SMALL_FILE, query=request.query
            )
        except Exception:
            log.exception("error serving static file for %s", named(request))
            conn.refuse(500, "error reading the file")
            return
        # An unread Expect: 100-continue body leaves the start of the next request unknown: close after.
        keep_alive = request.keep_alive and not request.expect_continue and not self.stopping and not self.draining
        # A cached file's usual answer comes with its fields serialised once (reply.head_lines).
        fields = reply.head_lines or "".join([f"{name}: {value}\r\n" for name, value in reply.headers])
        if not keep_alive:
            end = "Connection: close\r\n\r\n"
        elif request.version == "HTTP/1.0":
            end = "Connection: keep-alive\r\n\r\n"  # HTTP/1.0 closes after the response unless told otherwise
        else:
            end = "\r\n"
        text = f"{status_line(reply.status)}{fields}Date: {http_date()}\r\nServer: {self.server_header}\r\n{end}"
        head = text.encode("latin-1")
        try:
            if reply.file is not None and reply.length > _SMALL_FILE:
                finished = functools.partial(self._static_sent, conn, request, reply, headers, started)
                conn.send_file(head, reply.file, reply.offset, reply.length, on_done=finished)
            elif reply.file is not None and reply.length:
                # A small file costs less read into the head's buffer than sent after it: one send, one segment.
                # (A cached file's small body comes read already, in reply.body: see serve_path's read_up_to.)
                data = os.pread(reply.file.fileno(), reply.length, reply.offset)
                if len(data) != reply.length:
                    log.warning(
                        "%s: the file for %s shrank while being served; closing", conn.describe(), named(request)
                    )
                    reply.close()
                    conn.close_soon()
                    return
                conn.send(head + data, whole=True)
                self._static_sent(conn, request, reply, headers, started, len(data))
            else:
                body = b"" if request.method == "HEAD" else reply.body
                conn.send(head + body, whole=True)
                self._static_sent(conn, request, reply, headers, started, len(body))
        except Exception:
            reply.close()
            conn.close_soon()
            return
        conn.finish(keep_alive)

    def _static_sent(
        self, conn: HTTPConnection, request: Request, reply: Any, headers: dict[str, str], started: float, sent: int
    ) -> None:
        """A static response is out (or as much of it as will be): close its file and log it."""
        reply.close()
        if access_log.isEnabledFor(logging.INFO):  # (the usual case is off: then no proxy headers are read)
            log_response(
                self._client(conn, request), request, reply.status, sent, headers.get("referer"),
                headers.get("user-agent"), started,
            )  # fmt: skip

    def _client(self, conn: HTTPConnection, request: Request) -> str:
        """Who the access log names for a response the loop answered: the peer, or the client a trusted proxy
        names (as REMOTE_ADDR does for the application's responses)."""
        if self.proxies.enabled:
            return self.proxies.client_address(conn.remote_addr, request.headers)
        return conn.remote_addr

    def _redirect(self, conn: HTTPConnection, request: Request, redirect: HTTPSRedirect, started: float) -> None:
        """--redirect-to-https: answer a plain request with 308 to its https:// URL, on the loop."""
        location = redirect.location(request, conn.server_name)
        keep_alive = request.keep_alive and not request.expect_continue and not self.stopping and not self.draining
        response = error_response(
            308,
            f"this site is served over HTTPS: {location}",
            self.server_header,
            close=not keep_alive,
            headers=(("Location", location),),
            version=request.version,  # an HTTP/1.0 client kept alive is told so
        )
        try:
            conn.send(response, whole=True)
        except Exception:
            conn.close_soon()
            return
        if access_log.isEnabledFor(logging.INFO):
            log_response(
                self._client(conn, request), request, 308, len(response), request.header("referer"),
                request.header("user-agent"), started,
            )  # fmt: skip
        conn.finish(keep_alive)

    def handle_request(self, conn: HTTPConnection, request: Request) -> None:
        """Run the WSGI application for one request (worker thread); its response may finish on another."""
        started = conn.head_arrived  # the log's duration counts the body's upload and the wait for a thread too
        if self.max_requests:
            self._count_request()
        if self.draining:
            self._last_on_its_connection(request)
        try:
            body = conn.take_body()
            environ = build_environ(self.base_environ, request, conn, body)
            if self.proxies.enabled:
                self.proxies.apply(environ)
        except Exception as error:
            conn.fail(error)
            return
        run = ApplicationRun(self.run_hooks, environ, conn, request, body, started)
        if self.inline:
            run.start()  # on the loop: while it runs nothing could look (a frozen loop stops the heartbeats)
        else:
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
            conn.release_body()  # the body's share of the budget is free now, not once the response is out
        except Exception as error:
            log.error("%s: error while releasing a request body: %s", conn.describe(), error)
        finally:
            conn.finish(writer.keep_alive and not writer.client_gone and not self.stopping, clean=not writer.cut_short)


def _https_redirect(config: Config, listeners: list[Listener]) -> HTTPSRedirect | None:
    """Where --redirect-to-https sends plain requests: the port of the first HTTPS listener."""
    if not config.redirect_to_https:
        return None
    for listener in listeners:
        if listener.tls and listener.address.family != socket.AF_UNIX:
            return HTTPSRedirect(int(listener.local_facts[2]))
    return None


def connections_within(limit: int, serves_files: bool) -> int:
    """How many connections ``limit`` descriptors allow, keeping back what else the process needs to open.

    Always ``_RESERVED_FDS``; with static mounts, also the open-file cache's budget (``descriptor_budget``: 1/16
    of the limit, at most 256), so that connections alone never leave the cache without room. A download of a
    file not in the cache (or evicted meanwhile) holds one more descriptor until it ends, which is not kept back
    per connection: at ``ulimit -n 1024`` that would halve the connections (464), though most connections are
    idle or answered from the cache or the buffer. When downloads do run the process out of descriptors, the
    next file is answered 503 with Retry-After, never a 404 (``server.static.reply``), and accepting pauses."""
    reserved = _RESERVED_FDS + (descriptor_budget(limit) if serves_files else 0)
    return max(1, limit - reserved)


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
