"""Knowing who is on the other end: a challenge-response handshake over framed TCP, keyed with HMAC-SHA256.

Both ends hold the same secret key; neither ever sends it. Each side proves it knows the key by signing the
other side's fresh random challenge, so a recorded handshake is useless later (the challenges will differ) and
the authentication is mutual: the client also learns it is talking to a holder of the key, not an impostor.

::

    server -> client   server_nonce                                     (32 random bytes)
    client -> server   client_nonce + HMAC(key, "client" + server_nonce + client_nonce)
    server -> client   HMAC(key, "server" + server_nonce + client_nonce)

The role labels keep one side's proof from being replayed as the other's (a reflection attack). Proofs are
compared with ``hmac.compare_digest``, in constant time, so timing reveals nothing about how much of a forged
proof was right.

Each side is a sans-IO state machine (``ServerHandshake``, ``ClientHandshake``): bytes in, bytes to send out,
no socket, no clock. Every message of the handshake has a fixed size, so a machine rejects a wrong one as soon
as its 4-byte length arrives, and it says how many bytes it still ``needs``: a reader that never asks the
socket for more never reads past the handshake into the messages behind it. ``server/net/msg.py`` drives
``ServerHandshake`` from its event loop; ``server_handshake`` and ``client_handshake`` drive them on a blocking
socket under one deadline for the whole exchange. That deadline is a point in time, not a timeout handed to
each ``recv``: a peer that drips one byte just inside every per-read timeout would otherwise hold the
handshake open for as long as it liked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import time
from pathlib import Path
from typing import NoReturn

from .display import peer_text
from .framing import HEADER, encode_frame

log = logging.getLogger("server.net.auth")

NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size
DEFAULT_TIMEOUT = 5.0
ANSWER_SIZE = NONCE_SIZE + PROOF_SIZE  # what the client sends: its nonce and its proof


class AuthenticationFailed(Exception):
    """The peer did not prove it holds the key, or did not answer in time."""


def new_challenge() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def client_proof(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.digest(key, b"client" + server_nonce + client_nonce, "sha256")


def server_proof(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.digest(key, b"server" + server_nonce + client_nonce, "sha256")


def load_key(path: str | Path) -> bytes:
    """Read a shared secret from a file; surrounding whitespace (a trailing newline) is not part of it."""
    key = Path(path).read_bytes().strip()
    if not key:
        raise ValueError(f"secret file {path} is empty")
    return key


class _FixedFrame:
    """Collects one frame whose body must be exactly ``size`` bytes; the length is checked as soon as it is in.

    Takes whatever bytes it is given: those past the frame are kept as ``rest``.
    """

    def __init__(self, size: int, what: str) -> None:
        self.size = size
        self.what = what
        self._buffer = bytearray()

    @property
    def needed(self) -> int:
        return max(0, HEADER.size + self.size - len(self._buffer))

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """(body, bytes past the frame) once the frame is complete, else None; AuthenticationFailed if misfit."""
        self._buffer += data
        if len(self._buffer) >= HEADER.size:
            (announced,) = HEADER.unpack_from(self._buffer)
            if announced != self.size:
                raise AuthenticationFailed(f"{self.what} of {announced} bytes, expected {self.size}")
        end = HEADER.size + self.size
        if len(self._buffer) < end:
            return None
        return bytes(self._buffer[HEADER.size : end]), bytes(self._buffer[end:])


class ServerHandshake:
    """The server's half, sans-IO: send ``greeting``, then ``receive`` what arrives until ``authenticated``.

    ``receive`` returns the bytes to send back (the server's proof, once the client's answer checks out) and
    raises AuthenticationFailed as soon as the answer cannot be right. Bytes after the answer (a client that
    sends its first messages without waiting for our proof) are kept in ``leftover``.
    """

    def __init__(self, key: bytes, nonce: bytes | None = None) -> None:
        self.key = key
        self.nonce = nonce if nonce is not None else new_challenge()
        self.greeting = encode_frame(self.nonce)
        self.authenticated = False
        self.failed = False
        self.leftover = b""
        self._answer = _FixedFrame(ANSWER_SIZE, "answer")

    @property
    def needed(self) -> int:
        """Bytes still missing from the client's answer: reading no more than this never reads past it."""
        return 0 if self.authenticated or self.failed else self._answer.needed

    def receive(self, data: bytes) -> bytes:
        if self.authenticated or self.failed:
            raise ValueError("the handshake is over")
        try:
            complete = self._answer.feed(data)
            if complete is None:
                return b""
            answer, self.leftover = complete
            client_nonce, proof = answer[:NONCE_SIZE], answer[NONCE_SIZE:]
            if not hmac.compare_digest(proof, client_proof(self.key, self.nonce, client_nonce)):
                raise AuthenticationFailed("wrong key")
        except AuthenticationFailed:
            self.failed = True
            raise
        self.authenticated = True
        return encode_frame(server_proof(self.key, self.nonce, client_nonce))

    def closed(self) -> NoReturn:
        """The client closed its side before finishing."""
        self.failed = True
        raise AuthenticationFailed("connection closed during the handshake")


class ClientHandshake:
    """The client's half, sans-IO: ``receive`` the challenge (returns our answer), then the server's proof."""

    def __init__(self, key: bytes, nonce: bytes | None = None) -> None:
        self.key = key
        self.nonce = nonce if nonce is not None else new_challenge()
        self.authenticated = False
        self.failed = False
        self.leftover = b""
        self._server_nonce: bytes | None = None
        self._frame = _FixedFrame(NONCE_SIZE, "challenge")

    @property
    def answered(self) -> bool:
        """Our answer is out: from now on a closed connection means the server refused it."""
        return self._server_nonce is not None

    @property
    def needed(self) -> int:
        return 0 if self.authenticated or self.failed else self._frame.needed

    def receive(self, data: bytes) -> bytes:
        if self.authenticated or self.failed:
            raise ValueError("the handshake is over")
        try:
            return self._receive(data)
        except AuthenticationFailed:
            self.failed = True
            raise

    def _receive(self, data: bytes) -> bytes:
        reply = b""
        while (complete := self._frame.feed(data)) is not None:
            body, data = complete
            if self._server_nonce is None:
                self._server_nonce = body
                self._frame = _FixedFrame(PROOF_SIZE, "the server's proof")
                reply = encode_frame(self.nonce + client_proof(self.key, body, self.nonce))
                continue
            if not hmac.compare_digest(body, server_proof(self.key, self._server_nonce, self.nonce)):
                raise AuthenticationFailed("the server does not hold the key")
            self.authenticated = True
            self.leftover = data
            break
        return reply

    def closed(self, reason: str = "connection closed during the handshake") -> NoReturn:
        """The server closed (or broke) the connection before finishing: after our answer, that is a refusal."""
        self.failed = True
        if self.answered:
            raise AuthenticationFailed(f"the server refused our key ({reason})")
        raise AuthenticationFailed(reason)


def server_handshake(sock: socket.socket, key: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Authenticate the client on ``sock``; on failure log it, close the connection, raise AuthenticationFailed.

    ``timeout`` bounds the whole handshake, however the client's bytes are spread over it.
    """
    peer = _peer(sock)
    machine = ServerHandshake(key)
    try:
        _drive(sock, machine, machine.greeting, time.monotonic() + timeout)
    except (AuthenticationFailed, OSError) as exc:
        log.warning("%s: authentication failed: %s", peer, exc)
        sock.close()
        if isinstance(exc, AuthenticationFailed):
            raise
        raise AuthenticationFailed(f"handshake broken: {exc}") from exc
    log.info("%s: authenticated", peer)


def client_handshake(sock: socket.socket, key: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Prove our key to the server on ``sock`` and check its proof; raise AuthenticationFailed if refused.

    ``timeout`` bounds the whole handshake. OSError escapes only from sending (the server is gone).
    """
    _drive(sock, ClientHandshake(key), b"", time.monotonic() + timeout)


def _drive(sock: socket.socket, machine: ServerHandshake | ClientHandshake, greeting: bytes, deadline: float) -> None:
    """Run a handshake machine on a blocking socket until it is authenticated, all of it before ``deadline``.

    Each socket call gets only what is left of the time, and reads ask for no more than the machine needs.
    """
    saved = sock.gettimeout()
    try:
        if greeting:
            _send_before(sock, greeting, deadline)
        while not machine.authenticated:
            _set_remaining(sock, deadline)
            try:
                data = sock.recv(machine.needed)
            except TimeoutError:
                raise AuthenticationFailed("handshake timed out") from None
            except OSError as exc:
                if isinstance(machine, ClientHandshake):
                    machine.closed(f"handshake broken: {exc}")
                raise
            if not data:
                machine.closed()
            reply = machine.receive(data)
            if reply:
                _send_before(sock, reply, deadline)
    finally:
        if sock.fileno() != -1:
            sock.settimeout(saved)


def _set_remaining(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AuthenticationFailed("handshake timed out")
    sock.settimeout(remaining)


def _send_before(sock: socket.socket, data: bytes, deadline: float) -> None:
    _set_remaining(sock, deadline)
    try:
        sock.sendall(data)
    except TimeoutError:
        raise AuthenticationFailed("handshake timed out") from None


def _peer(sock: socket.socket) -> str:
    try:
        return peer_text(sock.getpeername())
    except OSError:
        return "unknown peer"
