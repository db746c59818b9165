"""Authenticated messages over TCP: the framing and the handshake put to work.

``MessageServer`` accepts connections, authenticates each one with the HMAC handshake and prints every framed
message it then receives; ``send_messages`` is the matching client. A connection that fails the handshake is
logged and closed before a single message is read, so an unauthenticated peer never reaches the printing code.

Connections are served by a thread each: the handshake and the reads block, each under its own time limit, and
one slow peer must not hold up the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import TextIO

from .auth import DEFAULT_TIMEOUT, AuthenticationFailed, client_handshake, server_handshake
from .display import peer_text, show, stamp
from .framing import DEFAULT_MAX_SIZE, FramingError, recv_message, send_message

log = logging.getLogger("server.net.msg")

IDLE_TIMEOUT = 300.0  # seconds an authenticated connection may stay silent


class MessageServer:
    """Prints the messages of authenticated clients to ``out``; ``serve_forever`` until ``shutdown``."""

    def __init__(
        self,
        bind: tuple[str, int],
        key: bytes,
        out: TextIO,
        *,
        handshake_timeout: float = DEFAULT_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.key = key
        self.out = out
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        self._listener = socket.create_server(bind, family=family)
        self._print_lock = threading.Lock()  # one line at a time, whichever connection thread prints it
        self._stopping = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    def serve_forever(self) -> None:
        self._print(f"receiving authenticated messages on {peer_text(self.address)}")
        # accept() is given a short timeout so that shutdown(), from another thread, is noticed promptly.
        self._listener.settimeout(0.2)
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()
        finally:
            self._listener.close()

    def shutdown(self) -> None:
        self._stopping.set()

    def _serve_connection(self, conn: socket.socket) -> None:
        peer = peer_text(conn.getpeername())
        try:
            server_handshake(conn, self.key, self.handshake_timeout)
        except AuthenticationFailed as exc:
            self._print(f"{stamp()} {peer} refused: {exc}")
            return
        count = 0
        with conn:
            conn.settimeout(self.idle_timeout)
            try:
                while (message := recv_message(conn, max_size=self.max_size)) is not None:
                    count += 1
                    self._print(f"{stamp()} {peer} #{count} {len(message)} bytes: {show(message)}")
            except (FramingError, OSError) as exc:
                log.warning("%s: connection dropped: %s", peer, exc)
        self._print(f"{stamp()} {peer} closed after {count} message(s)")

    def _print(self, line: str) -> None:
        with self._print_lock:
            self.out.write(line + "\n")
            self.out.flush()


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
