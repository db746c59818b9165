"""Small UDP tools: an echo server, a sender, a listener, a two-way chat and a broadcaster.

UDP is where the story of this project starts: no connection, no stream, just datagrams that arrive whole or
not at all, from whoever sent them. These tools show exactly that: every datagram is printed with its sender
and the time, whatever its bytes (text that is not valid UTF-8 is shown escaped, never a crash), and sizes are
bounded by what one datagram can carry. Each function takes the stream to print to, so the CLI and the tests
share them; the CLI turns Ctrl-C into a clean exit.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from typing import TextIO

from .display import peer_text, show, stamp

Address = tuple[str, int]

MAX_PAYLOAD = 65507  # 65535 minus the IPv4 and UDP headers: the largest datagram IPv4 can carry
RECV_SIZE = 65535


def check_size(message: bytes) -> bytes:
    if len(message) > MAX_PAYLOAD:
        raise ValueError(f"message of {len(message)} bytes exceeds the UDP maximum of {MAX_PAYLOAD}")
    return message


def open_socket(bind: Address | None = None, *, peer: Address | None = None, broadcast: bool = False) -> socket.socket:
    """A UDP socket of the address family of ``bind`` (or ``peer``), bound to ``bind`` if given."""
    host = (bind or peer or ("0.0.0.0", 0))[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if broadcast:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if bind:
        sock.bind(bind)
    return sock


def _line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def echo(sock: socket.socket, out: TextIO, count: int | None = None) -> int:
    """Send every datagram back to its sender; log each one and a running count. Returns the count."""
    _line(out, f"echoing on {peer_text(sock.getsockname())}")
    echoed = 0
    while count is None or echoed < count:
        data, addr = sock.recvfrom(RECV_SIZE)
        sock.sendto(data, addr)
        echoed += 1
        _line(out, f"{stamp()} #{echoed} {peer_text(addr)} {len(data)} bytes: {show(data)}")
    return echoed


def collect_replies(sock: socket.socket, out: TextIO, wait: float) -> int:
    """Print replies until ``wait`` seconds pass with nothing more; return how many came."""
    replies = 0
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data, addr = sock.recvfrom(RECV_SIZE)
        except TimeoutError:
            break
        replies += 1
        _line(out, f"{stamp()} reply from {peer_text(addr)} {len(data)} bytes: {show(data)}")
    return replies


def send(target: Address, message: bytes, out: TextIO, wait: float = 0.0) -> int:
    """Send one datagram; with ``wait``, print the replies that arrive within that many seconds."""
    with open_socket(peer=target) as sock:
        sock.sendto(check_size(message), target)
        _line(out, f"sent {len(message)} bytes to {peer_text(target)}")
        return collect_replies(sock, out, wait) if wait > 0 else 0


def listen(sock: socket.socket, out: TextIO, count: int | None = None) -> int:
    """Print each datagram that arrives, with its sender and the time."""
    _line(out, f"listening on {peer_text(sock.getsockname())}")
    received = 0
    while count is None or received < count:
        data, addr = sock.recvfrom(RECV_SIZE)
        received += 1
        _line(out, f"{stamp()} {peer_text(addr)} {len(data)} bytes: {show(data)}")
    return received


def chat(sock: socket.socket, peer: Address, stdin_fd: int, out: TextIO) -> None:
    """Full duplex: each line typed is sent to ``peer`` while whatever arrives is printed, both at once.

    One selector waits on the terminal and the socket together, so neither side blocks the other and no thread
    is needed. The chat ends at end of input (Ctrl-D).
    """
    _line(out, f"chatting on {peer_text(sock.getsockname())} with {peer_text(peer)}; Ctrl-D or Ctrl-C ends")
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ, "socket")
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
        while True:
            for key, _ in selector.select():
                if key.data == "socket":
                    data, addr = sock.recvfrom(RECV_SIZE)
                    _line(out, f"{stamp()} {peer_text(addr)}> {show(data)}")
                    continue
                chunk = os.read(stdin_fd, RECV_SIZE)
                if not chunk:
                    if pending:
                        sock.sendto(check_size(pending), peer)
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    try:
                        sock.sendto(check_size(line), peer)
                    except ValueError as exc:
                        _line(out, f"not sent: {exc}")


def broadcast(port: int, message: bytes, out: TextIO, wait: float = 0.0, address: str = "<broadcast>") -> int:
    """Send one datagram with SO_BROADCAST to every host on the local network (255.255.255.255 by default)."""
    with open_socket(broadcast=True) as sock:
        sock.sendto(check_size(message), (address, port))
        shown = "255.255.255.255" if address == "<broadcast>" else address
        _line(out, f"broadcast {len(message)} bytes to {shown}:{port}")
        return collect_replies(sock, out, wait) if wait > 0 else 0


__all__ = [
    "broadcast",
    "chat",
    "echo",
    "listen",
    "open_socket",
    "send",
    "show",
]
