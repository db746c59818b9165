"""Authenticated messages over TCP: the framing and the handshake put to work.

``MessageServer`` accepts connections, authenticates each one with the HMAC handshake and prints every framed
message it then receives; ``send_messages`` is the matching client. A connection that fails the handshake is
closed before a single message is read, so an unauthenticated peer never reaches the printing code.

Why one thread and a selector, not a thread per connection: before the handshake succeeds, anyone can connect,
and whatever a connection costs, a stranger can make us pay many times over. A thread each (with a blocking
read) made a stranger's silence cost a thread and a descriptor for as long as the read timeout was re-armed; a
few hundred slow connections then exhausted the descriptors, and the ``accept`` that failed with ``EMFILE``
ended the server. Here every connection is a non-blocking socket registered with one ``selectors`` loop, with
the sans-IO ``ServerHandshake`` of ``server/net/auth.py`` and then a ``FrameDecoder`` of
``server/net/framing.py`` fed whatever arrives: a connection costs a descriptor and a few hundred bytes, and
the loop never waits on any one peer. The budget is stated and enforced:

- each handshake has one deadline, fixed when the connection is accepted (``handshake_timeout``); bytes that
  arrive do not extend it, so a peer dripping a byte at a time is closed when it is due;
- at most ``max_handshakes`` connections may be in the middle of a handshake: a new one replaces the oldest
  (the one that has had the most time to prove itself; an honest client needs one round trip), so a flood of
  slow strangers can delay an honest client but not lock it out, unless it opens more than ``max_handshakes``
  connections within one of the honest client's round trips;
- at most ``max_connections`` at all, and never more than the descriptor limit allows: only when that many
  have *authenticated* does the server stop accepting, until one of them leaves;
- an ``accept`` that fails for lack of resources (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) pauses
  accepting for ``ACCEPT_PAUSE`` seconds, as the HTTP engine does, instead of ending the server; the waiting
  connections stay in the kernel's listen queue.

What is said, and where: what happens to each connection (a message, a refusal, its end) is the tool's output
and goes to ``out``, one line per event; the server's own health (accepting paused, a limit reached) goes to
``logging``, once when the trouble starts and once when it is over, however many connections it concerns.
Connections dropped to make room are counted in that second line rather than each given its own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import TextIO

from server.oserrors import OUT_OF_RESOURCES, descriptor_limit

from .auth import DEFAULT_TIMEOUT, AuthenticationFailed, ServerHandshake, client_handshake
from .display import peer_text, show, stamp
from .framing import DEFAULT_MAX_SIZE, FrameDecoder, FramingError, send_message

log = logging.getLogger("server.net.msg")

IDLE_TIMEOUT = 300.0  # seconds an authenticated connection may stay silent
MAX_CONNECTIONS = 1024  # connections at once, authenticated or not (capped by the descriptor limit)
MAX_HANDSHAKES = 512  # of which in the middle of a handshake; a new one replaces the oldest
ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed for lack of descriptors or memory
RESERVED_FDS = 32  # descriptors left for everything else: the listener, the selector, the wakeup pair, logs
LISTEN_BACKLOG = 1024  # connections the kernel holds for us while we are busy or paused (Linux caps it at somaxconn)
_ACCEPT_BATCH = 64  # accepts per wakeup, so that a flood of connections cannot starve the reads
_RECV_SIZE = 65536


class _Connection:
    """One accepted socket: its handshake until it succeeds, then the decoder of its messages."""

    __slots__ = ("count", "deadline", "decoder", "handshake", "outgoing", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, handshake: ServerHandshake, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.handshake: ServerHandshake | None = handshake
        self.decoder: FrameDecoder | None = None
        self.deadline = deadline  # the handshake's, then the idle limit's (pushed back by each arrival)
        self.outgoing = bytearray()
        self.count = 0


class MessageServer:
    """Prints the messages of authenticated clients to ``out``; ``serve_forever`` until ``shutdown``.

    Binds in the constructor, so an address in use is an ``OSError`` there. ``max_connections`` is lowered to
    what the descriptor limit (``RLIMIT_NOFILE``) leaves, less ``RESERVED_FDS``; ``max_handshakes`` to
    ``max_connections``. The values in force are the attributes of the same names.
    """

    def __init__(
        self,
        bind: tuple[str, int],
        key: bytes,
        out: TextIO,
        *,
        handshake_timeout: float = DEFAULT_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_size: int = DEFAULT_MAX_SIZE,
        max_connections: int = MAX_CONNECTIONS,
        max_handshakes: int = MAX_HANDSHAKES,
    ) -> None:
        for name, seconds in (("handshake timeout", handshake_timeout), ("idle timeout", idle_timeout)):
            if not seconds > 0:  # NaN too
                raise ValueError(f"the {name} must be more than 0 s (got {seconds:g})")
        for name, count in (("max_connections", max_connections), ("max_handshakes", max_handshakes)):
            if count < 1:
                raise ValueError(f"{name} must be at least 1 (got {count})")
        self.key = key
        self.out = out
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        self.max_connections = min(max_connections, max(1, descriptor_limit() - RESERVED_FDS))
        self.max_handshakes = min(max_handshakes, self.max_connections)
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        self._listener = socket.create_server(bind, family=family, backlog=LISTEN_BACKLOG)
        self._listener.setblocking(False)
        self._stopping = threading.Event()
        # shutdown() may come from another thread: a byte on this pair wakes the loop out of select().
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._connections: dict[int, _Connection] = {}  # by descriptor
        # Connections still in their handshake, oldest first. Every handshake gets the same timeout, so this
        # is also the order of their deadlines: expiry and eviction both take from the front.
        self._handshakes: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._next_idle_check = float("inf")
        self._listening = False
        self._paused_until = 0.0
        # Each kind of trouble is logged when it starts and when it ends: how many times it struck meanwhile.
        self._resource_pauses = 0
        self._evicted = 0
        self._at_connection_limit = False

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    @property
    def connections(self) -> int:
        """Connections open now, authenticated or not."""
        return len(self._connections)

    @property
    def handshakes(self) -> int:
        """Connections open now that have not finished their handshake."""
        return len(self._handshakes)

    def serve_forever(self) -> None:
        self._print(f"receiving authenticated messages on {peer_text(self.address)}")
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                self._update_accepting(time.monotonic())
                ready = self._selector.select(self._select_timeout(time.monotonic()))
                # Connections first, newcomers last: an answer that has arrived is read before another batch of
                # accepts can make a newcomer replace its sender.
                for key, _events in ready:
                    if isinstance(key.data, _Connection):
                        # Skipped if closed earlier in this batch: its descriptor may already belong to a newer
                        # connection, which is why events carry the connection and not the number.
                        if key.data.sock.fileno() != -1:
                            self._on_event(key.data)
                    elif key.fileobj is self._wake_r:
                        self._on_wakeup()
                for key, _events in ready:
                    if key.fileobj is self._listener and self._listening:
                        self._on_acceptable()
                self._expire(time.monotonic())
        finally:
            self.close()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` soon; callable from any thread. Open connections are closed."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # a full pair already holds a wakeup; a closed one has stopped
            self._wake_w.send(b"\0")

    def close(self) -> None:
        """Close every socket: what ``serve_forever`` does on its way out, for a server that never ran."""
        self._stopping.set()
        for conn in list(self._connections.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- accepting

    def _accepting_allowed(self, now: float) -> bool:
        if self._stopping.is_set() or now < self._paused_until:
            return False
        # At the limit, a newcomer may still take the place of a connection that has not authenticated.
        return len(self._connections) < self.max_connections or bool(self._handshakes)

    def _update_accepting(self, now: float) -> None:
        allowed = self._accepting_allowed(now)
        if allowed and not self._listening:
            self._selector.register(self._listener, selectors.EVENT_READ)
        elif self._listening and not allowed:
            self._selector.unregister(self._listener)
        self._listening = allowed
        full = len(self._connections) >= self.max_connections and not self._handshakes
        if full and not self._at_connection_limit:
            self._at_connection_limit = True
            log.warning("%d authenticated connections, the limit: not accepting until some close", self.max_connections)
        elif self._at_connection_limit and len(self._connections) <= self.max_connections * 3 // 4:
            self._at_connection_limit = False  # a quarter of the room back: a limit grazed again is news again
            log.info("accepting again: %d connections", len(self._connections))

    def _on_acceptable(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            if not self._accepting_allowed(time.monotonic()):
                return
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                self._caught_up()
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                    return
                continue  # ECONNABORTED and the like: that client is gone, the next one may not be
            self._adopt(sock, addr)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory: wait a moment rather than spin on an accept that keeps failing."""
        self._paused_until = time.monotonic() + ACCEPT_PAUSE
        if self._resource_pauses == 0:
            log.warning(
                "not accepting for %.1f s at a time: out of resources (%s); connections wait in the listen queue",
                ACCEPT_PAUSE,
                exc.strerror or exc,
            )
        self._resource_pauses += 1

    def _caught_up(self) -> None:
        """The listen queue is empty: a shortage of resources, if there was one, is over."""
        if self._resource_pauses:
            log.info("accepting again, after %d pause(s) for lack of resources", self._resource_pauses)
            self._resource_pauses = 0

    def _adopt(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        sock.setblocking(False)
        now = time.monotonic()
        if self._room() <= 0:
            self._evict_oldest_handshake()
        handshake = ServerHandshake(self.key)
        conn = _Connection(sock, peer_text(addr), handshake, now + self.handshake_timeout)
        self._connections[sock.fileno()] = conn
        self._handshakes[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)
        conn.outgoing += handshake.greeting
        self._flush(conn)

    def _room(self) -> int:
        """How many newcomers fit before one has to replace another."""
        return min(self.max_handshakes - len(self._handshakes), self.max_connections - len(self._connections))

    def _evict_oldest_handshake(self) -> None:
        if self._evicted == 0:
            log.warning(
                "no room for another connection (%d open, %d of them in their handshake; limits %d and %d): "
                "each newcomer now replaces the oldest that has not authenticated",
                len(self._connections),
                len(self._handshakes),
                self.max_connections,
                self.max_handshakes,
            )
        self._evicted += 1
        _, oldest = self._handshakes.popitem(last=False)
        self._close(oldest)

    # -- reading and writing

    def _on_wakeup(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    def _on_event(self, conn: _Connection) -> None:
        if conn.outgoing and not self._flush(conn):
            return
        handshake = conn.handshake
        try:
            data = conn.sock.recv(handshake.needed if handshake is not None else _RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(conn, _broken(conn, exc))
            return
        if handshake is not None:
            self._continue_handshake(conn, handshake, data)
        elif data:
            self._receive_messages(conn, data)
        else:
            assert conn.decoder is not None
            if conn.decoder.idle:
                self._end(conn)
            else:
                self._end(conn, "the connection closed in the middle of a message")

    def _continue_handshake(self, conn: _Connection, handshake: ServerHandshake, data: bytes) -> None:
        try:
            if not data:
                handshake.closed()
            reply = handshake.receive(data)
        except AuthenticationFailed as exc:
            self._end(conn, str(exc))
            return
        if not handshake.authenticated:
            return
        del self._handshakes[conn.sock.fileno()]
        conn.handshake = None
        conn.decoder = FrameDecoder(self.max_size)
        conn.deadline = time.monotonic() + self.idle_timeout
        self._next_idle_check = min(self._next_idle_check, conn.deadline)
        conn.outgoing += reply
        if self._flush(conn) and handshake.leftover:
            self._receive_messages(conn, handshake.leftover)

    def _receive_messages(self, conn: _Connection, data: bytes) -> None:
        assert conn.decoder is not None
        conn.deadline = time.monotonic() + self.idle_timeout
        try:
            messages = conn.decoder.feed(data)
        except FramingError as exc:
            self._end(conn, str(exc))
            return
        for message in messages:
            conn.count += 1
            self._print(f"{stamp()} {conn.peer} #{conn.count} {len(message)} bytes: {show(message)}")
        # The same read may have ended with a bad frame: the messages before it were said, now the end is.
        if conn.decoder.error is not None:
            self._end(conn, str(conn.decoder.error))

    def _flush(self, conn: _Connection) -> bool:
        """Send what is queued; watch for writability while some is left. False if the connection broke."""
        try:
            sent = conn.sock.send(conn.outgoing) if conn.outgoing else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._end(conn, _broken(conn, exc))
            return False
        del conn.outgoing[:sent]
        # Rarely any left (36 bytes seldom fill a send buffer); while there is, writability wakes us too.
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outgoing else 0)
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events, conn)
        return True

    # -- deadlines and endings

    def _select_timeout(self, now: float) -> float | None:
        wakeups = [self._next_idle_check]
        if self._handshakes:
            wakeups.append(next(iter(self._handshakes.values())).deadline)
        if now < self._paused_until:
            wakeups.append(self._paused_until)
        soonest = min(wakeups)
        return None if soonest == float("inf") else max(0.0, soonest - now)

    def _expire(self, now: float) -> None:
        while self._handshakes:
            oldest = next(iter(self._handshakes.values()))
            if oldest.deadline > now:
                break
            self._end(oldest, "handshake timed out")
        if self._evicted and self._room() >= max(1, self.max_handshakes // 2):
            log.info("room for newcomers again, after %d unauthenticated connection(s) replaced", self._evicted)
            self._evicted = 0
        if now >= self._next_idle_check:
            # Arrivals push deadlines back without telling anyone; one pass finds the idle and the next check.
            self._next_idle_check = float("inf")
            for conn in [c for c in self._connections.values() if c.handshake is None]:
                if conn.deadline <= now:
                    self._end(conn, f"silent for {self.idle_timeout:g} s")
                else:
                    self._next_idle_check = min(self._next_idle_check, conn.deadline)

    def _end(self, conn: _Connection, problem: str | None = None) -> None:
        """Close a connection and say how it ended: one line, whatever the reason."""
        if conn.handshake is not None:
            self._print(f"{stamp()} {conn.peer} refused: {problem}")
        elif problem is None:
            self._print(f"{stamp()} {conn.peer} closed after {conn.count} message(s)")
        else:
            self._print(f"{stamp()} {conn.peer} dropped after {conn.count} message(s): {problem}")
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        self._connections.pop(fd, None)
        self._handshakes.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def _broken(conn: _Connection, exc: OSError) -> str:
    """An OSError as the end of a line about a connection: "connection reset by peer", no errno in brackets."""
    what = (exc.strerror or str(exc)).lower()
    return f"handshake broken: {what}" if conn.handshake is not None else what


def send_messages(
    address: tuple[str, int], key: bytes, messages: list[bytes], *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Connect, authenticate, send each message framed, and wait until the server has read them all.

    Raises AuthenticationFailed if the server refuses the key (or cannot prove its own), OSError if it cannot
    be reached.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        client_handshake(sock, key, timeout)
        for message in messages:
            send_message(sock, message)
        # Half-close, then wait for the server's own close: it closes only after reading everything we sent.
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass
