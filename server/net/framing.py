"""Message framing over TCP: a 4-byte big-endian length, then that many bytes.

TCP carries a stream of bytes, not messages: two ``send`` calls may arrive in one ``recv`` and one ``send``
may arrive in several (the "sticky packets" that puzzle everyone once). A length prefix restores the
boundaries. The receiver reads exactly four bytes, learns the size, checks it against a maximum *before*
allocating anything (so a hostile peer cannot make us reserve 4 GiB by sending four bytes), then reads exactly
that many bytes, however the stream happens to be cut, in bounded chunks (nor 16 MiB by announcing the maximum).

Two interfaces over one format: ``send_message``/``recv_message`` for blocking sockets, and ``FrameDecoder``,
a sans-IO decoder fed whatever bytes arrived, for event loops and for tests that cut the stream anywhere.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct("!I")
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
_CHUNK = 256 * 1024  # the most one recv asks for: memory follows the bytes that came, not those announced


class FramingError(Exception):
    """The stream does not hold a valid frame: it is too large, or the peer stopped in the middle of one."""


class MessageTooLarge(FramingError):
    pass


class IncompleteMessage(FramingError):
    pass


def encode_frame(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds the maximum of {max_size}")
    return HEADER.pack(len(data)) + data


def send_message(sock: socket.socket, data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
    """Send one framed message."""
    # Header and body go in one call: written separately, the small header can sit behind Nagle's algorithm
    # waiting for the peer's delayed ACK, a classic 40 ms stall per message.
    sock.sendall(encode_frame(data, max_size))


def recv_message(sock: socket.socket, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes | None:
    """Receive one framed message; None if the peer closed the connection cleanly between messages.

    Raises ``MessageTooLarge`` (nothing was allocated for it) or ``IncompleteMessage`` (the stream ended
    inside a frame); socket timeouts propagate as ``TimeoutError``.
    """
    header = _recv_exactly(sock, HEADER.size, allow_eof=True)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    _check_announced(size, max_size)
    body = _recv_exactly(sock, size, allow_eof=False)
    assert body is not None
    return body


def _check_announced(size: int, max_size: int) -> None:
    if size > max_size:
        raise MessageTooLarge(f"peer announced {size} bytes, more than the maximum of {max_size}")


def _recv_exactly(sock: socket.socket, size: int, *, allow_eof: bool) -> bytes | None:
    # Read in chunks of at most _CHUNK and keep only what arrived: a peer that announces 16 MiB and sends ten
    # bytes costs ten bytes, not a 16 MiB buffer reserved the moment its four-byte header is in.
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(min(size - len(received), _CHUNK))
        if not chunk:
            if not received and allow_eof:
                return None
            raise IncompleteMessage(f"connection closed after {len(received)} of {size} bytes")
        received += chunk
    return bytes(received)


class FrameDecoder:
    """Sans-IO: feed it bytes as they arrive, get back the complete messages they finish.

    A bad frame (one announcing more than ``max_size``) never costs the messages before it: one read may hold
    several complete frames and then the bad one's header, and raising there lost the good ones with the
    stack frame that held them. So ``feed`` returns the messages complete before the bad frame and keeps the
    error in ``error``, for the caller to act on once it has handled them; the next ``feed`` raises it, so a
    caller that does not look cannot read on past it either. With nothing to hand over, ``feed`` raises at
    once.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._size: int | None = None  # the announced size of the frame being read, once its header is in
        self.error: FramingError | None = None  # the stream went bad after the messages last returned

    def feed(self, data: bytes) -> list[bytes]:
        """The messages ``data`` completes, in order; ``FramingError`` if the stream is bad before any."""
        if self.error is not None:
            raise self.error
        self._buffer += data
        messages: list[bytes] = []
        while True:
            if self._size is None:
                if len(self._buffer) < HEADER.size:
                    break
                (size,) = HEADER.unpack_from(self._buffer)
                try:
                    _check_announced(size, self.max_size)
                except FramingError as exc:
                    self.error = exc
                    self._buffer.clear()  # nothing after a bad header can be framed: keep none of it
                    if not messages:
                        raise
                    break
                self._size = size
                del self._buffer[: HEADER.size]
            if len(self._buffer) < self._size:
                break
            messages.append(bytes(self._buffer[: self._size]))
            del self._buffer[: self._size]
            self._size = None
        return messages

    @property
    def idle(self) -> bool:
        """True between messages: the stream may end here without losing anything (never after an error)."""
        return self._size is None and not self._buffer and self.error is None
