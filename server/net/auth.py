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
proof was right. The whole handshake runs under one deadline; on any failure the server logs it and closes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import time
from pathlib import Path

from .display import peer_text
from .framing import FramingError, recv_message, send_message

log = logging.getLogger("server.net.auth")

NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size
DEFAULT_TIMEOUT = 5.0
_MAX_HANDSHAKE_MESSAGE = NONCE_SIZE + PROOF_SIZE


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


def server_handshake(sock: socket.socket, key: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Authenticate the client on ``sock``; on failure log it, close the connection, raise AuthenticationFailed."""
    peer = _peer(sock)
    try:
        with _Deadline(sock, timeout) as deadline:
            server_nonce = new_challenge()
            send_message(sock, server_nonce)
            answer = deadline.receive()
            if len(answer) != NONCE_SIZE + PROOF_SIZE:
                raise AuthenticationFailed(f"answer of {len(answer)} bytes, expected {NONCE_SIZE + PROOF_SIZE}")
            client_nonce, proof = answer[:NONCE_SIZE], answer[NONCE_SIZE:]
            if not hmac.compare_digest(proof, client_proof(key, server_nonce, client_nonce)):
                raise AuthenticationFailed("wrong key")
            send_message(sock, server_proof(key, server_nonce, client_nonce))
    except (AuthenticationFailed, OSError) as exc:
        log.warning("%s: authentication failed: %s", peer, exc)
        sock.close()
        if isinstance(exc, AuthenticationFailed):
            raise
        raise AuthenticationFailed(f"handshake broken: {exc}") from exc
    log.info("%s: authenticated", peer)


def client_handshake(sock: socket.socket, key: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Prove our key to the server on ``sock`` and check its proof; raise AuthenticationFailed if refused."""
    with _Deadline(sock, timeout) as deadline:
        server_nonce = deadline.receive()
        if len(server_nonce) != NONCE_SIZE:
            raise AuthenticationFailed(f"challenge of {len(server_nonce)} bytes, expected {NONCE_SIZE}")
        client_nonce = new_challenge()
        send_message(sock, client_nonce + client_proof(key, server_nonce, client_nonce))
        try:
            proof = deadline.receive()
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(f"the server refused our key ({exc})") from None
        if not hmac.compare_digest(proof, server_proof(key, server_nonce, client_nonce)):
            raise AuthenticationFailed("the server does not hold the key")


class _Deadline:
    """One time limit for a whole exchange: each receive gets only what is left of it."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.end = time.monotonic() + timeout
        self._saved: float | None = None

    def __enter__(self) -> _Deadline:
        self._saved = self.sock.gettimeout()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.sock.fileno() != -1:
            self.sock.settimeout(self._saved)

    def receive(self) -> bytes:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise AuthenticationFailed("handshake timed out")
        self.sock.settimeout(remaining)
        try:
            message = recv_message(self.sock, max_size=_MAX_HANDSHAKE_MESSAGE)
        except TimeoutError:
            raise AuthenticationFailed("handshake timed out") from None
        except (FramingError, OSError) as exc:
            raise AuthenticationFailed(f"handshake broken: {exc}") from None
        if message is None:
            raise AuthenticationFailed("connection closed during the handshake")
        return message


def _peer(sock: socket.socket) -> str:
    try:
        return peer_text(sock.getpeername())
    except OSError:
        return "unknown peer"
