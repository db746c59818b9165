"""Small UDP tools: an echo server, a sender, a listener, a two-way chat and a broadcaster.

UDP is where the story of this project starts: no connection, no stream, just datagrams that arrive whole or
not at all, from whoever sent them. These tools show exactly that: every datagram is printed with its sender
and the time, whatever its bytes (text that is not valid UTF-8 is shown escaped, never a crash), and sizes are
bounded by what one datagram can carry. Each function takes the stream to print to, so the CLI and the tests
share them; the CLI turns Ctrl-C into a clean exit.

An echo server is also the textbook reflector: whoever forges a datagram's source address chooses where the answer
goes. Pointed at itself (a datagram "from" its own address) or at another echo service, it would answer its own
answers forever. So ``echo`` asks a sans-IO ``EchoGuard`` about every datagram first: never answer our
own address, nor a well-known service port (below 1024: echo, chargen, daytime...), and never answer one peer more
than a token bucket allows (``EchoLimits``). Datagrams it drops are counted by kind and reported at most once
per interval (``DropLog``), so a flood of them cannot turn into a flood of log lines.
"""

from __future__ import annotations

import enum
import math
import os
import selectors
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TextIO, TypeVar

from .addr import host_ip, is_local_address, source_key
from .display import peer_text, show, stamp
from .ratelimit import TokenBucket

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


WELL_KNOWN_PORTS = 1024  # source ports below this belong to services (7 echo, 13 daytime, 19 chargen), not clients


@dataclass(frozen=True)
class EchoLimits:
    """What the echo server answers, and how much: the defaults are safe on an open network.

    ``rate`` and ``byte_rate`` bound what one peer address can get back (a token bucket each, holding one second's
    worth: a burst of ``rate`` datagrams, and at least one datagram of the largest size). A peer's bucket is
    remembered until it would be full again, so forgetting it loses nothing; at most ``max_peers`` are remembered
    at once, and a new peer that finds the table full of active peers is not answered (which keeps the bound
    exact for every peer, at the price of new peers waiting while more than ``max_peers`` addresses are active).
    """

    rate: float = 100.0  # datagrams per second answered to one peer address
    byte_rate: float = 1_048_576.0  # bytes per second answered to one peer address (1 MiB)
    max_peers: int = 4096  # peer addresses whose buckets are remembered at once (about 1 MB at most)
    allow_well_known_ports: bool = False  # answer sources below port 1024 (another service, never a client)
    log_interval: float = 10.0  # seconds between two reports of the same kind of dropped datagram

    def __post_init__(self) -> None:
        for name in ("rate", "byte_rate", "log_interval"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):  # NaN and infinity would stop peers ever being forgotten
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {self.max_peers!r}")

    @property
    def burst(self) -> float:
        """Datagrams a bucket holds: one second's worth, at least one."""
        return max(1.0, self.rate)

    @property
    def byte_burst(self) -> float:
        """Bytes a bucket holds: one second's worth, at least the largest datagram (or it could never pass)."""
        return max(float(RECV_SIZE), self.byte_rate)

    @property
    def refill_seconds(self) -> float:
        """How long an empty bucket takes to fill: a peer silent this long can be forgotten without loss."""
        return max(self.burst / self.rate, self.byte_burst / self.byte_rate)


class Verdict(enum.Enum):
    """What becomes of a datagram: echoed, or dropped for one of these reasons (the value says it in the log)."""

    ECHO = "echoed"
    OWN_ADDRESS = "from our own address"
    NOT_UNICAST = "from a source no answer can go to (unspecified, multicast, broadcast or port 0)"
    WELL_KNOWN_PORT = f"from a well-known port below {WELL_KNOWN_PORTS}"
    RATE_LIMITED = "over the per-peer rate limit"
    TOO_MANY_PEERS = "from a new peer while the table of active peers is full"
    SEND_FAILED = "that could not be sent back"  # decided at the socket, not by the guard


_BROADCAST = host_ip("255.255.255.255")  # the limited broadcast: an answer to it needs SO_BROADCAST, and reaches all


@dataclass
class _Bucket:
    datagrams: TokenBucket  # datagrams that may still be answered
    room: TokenBucket  # bytes that may still be answered


class EchoGuard:
    """Decides, for each datagram, whether the echo server answers it. Sans-IO: no socket, no clock.

    The caller passes the time (seconds on a monotonic clock) with each datagram, and ``is_local``, which tells
    whether a host is one of this machine's addresses (``server/net/addr.py:is_local_address`` in the server;
    a set's membership in tests). The rules, in order:

    1. Never answer our own address: a source with our port and an address of ours (the bound address, any
       loopback or unspecified address, and, when bound to a wildcard, any address of the host). Answering it
       would start an exchange with ourselves that nothing ends.
    2. Never answer a source no reply can reach sensibly: port 0, an unspecified, multicast or broadcast address.
    3. Unless ``allow_well_known_ports``, never answer a port below 1024: that is a service, and if it is another
       echo (7) or chargen (19) it answers back, forever.
    4. Answer each peer address at most as fast as its token buckets allow (see ``EchoLimits``).

    Memory is bounded by ``max_peers`` buckets; the cost of a decision is constant (one ordered-dict lookup, and
    at most one bind for a same-port source when bound to a wildcard).
    """

    def __init__(
        self,
        bound: tuple,
        limits: EchoLimits | None = None,
        is_local: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self.limits = limits or EchoLimits()
        self.port: int = bound[1]
        self._bound_ip = host_ip(bound[0])
        self._wildcard = self._bound_ip is None or self._bound_ip.is_unspecified
        self._is_local = is_local
        self._peers: OrderedDict[str, _Bucket] = OrderedDict()  # least recently heard first

    @property
    def peers(self) -> int:
        """How many peers' buckets are remembered now (never more than ``limits.max_peers``)."""
        return len(self._peers)

    def is_own_address(self, source: tuple) -> bool:
        """Whether ``source`` is (or may be) this very socket: our port, and an address of ours."""
        if source[1] != self.port:
            return False
        ip = host_ip(source[0])
        if ip is None:
            return True  # not a numeric address: we cannot tell, so we do not answer
        if ip.is_loopback or ip.is_unspecified or ip == self._bound_ip:
            return True
        return self._wildcard and self._is_local(str(ip))

    def decide(self, source: tuple, size: int, now: float) -> Verdict:
        """The verdict on a datagram of ``size`` bytes from ``source`` arriving at ``now``; ECHO spends tokens."""
        if self.is_own_address(source):
            return Verdict.OWN_ADDRESS
        ip = host_ip(source[0])
        port = source[1]
        if ip is None or port == 0 or ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
            return Verdict.NOT_UNICAST
        if port < WELL_KNOWN_PORTS and not self.limits.allow_well_known_ports:
            return Verdict.WELL_KNOWN_PORT
        return self._spend(source_key(str(ip)), size, now)  # an IPv6 /64 is one peer, as in TFTP

    def _spend(self, peer: str, size: int, now: float) -> Verdict:
        limits = self.limits
        self._forget_one_idle(now)
        bucket = self._peers.get(peer)
        if bucket is None:
            if len(self._peers) >= limits.max_peers:
                return Verdict.TOO_MANY_PEERS  # forgetting an active peer would hand it a fresh burst
            datagrams = TokenBucket(limits.rate, limits.burst, now)
            bucket = self._peers[peer] = _Bucket(datagrams, TokenBucket(limits.byte_rate, limits.byte_burst, now))
        else:
            self._peers.move_to_end(peer)
        if not (bucket.datagrams.has(now) and bucket.room.has(now, size)):
            return Verdict.RATE_LIMITED
        bucket.datagrams.take(now)
        bucket.room.take(now, size)
        return Verdict.ECHO

    def _forget_one_idle(self, now: float) -> None:
        """Drop the least recently heard peer if its buckets would be full by now (so nothing is lost).

        Peers are kept in the order they were last heard, so if the first one has not been silent long enough,
        none has. One per decision keeps the table near the number of active peers at constant cost.
        """
        if self._peers:
            first = next(iter(self._peers.values()))
            if now - first.datagrams.at >= self.limits.refill_seconds:
                self._peers.popitem(last=False)


Kind = TypeVar("Kind", bound=Hashable)  # what a DropLog tells drops apart by: a Verdict here, a str in TFTP


@dataclass
class DropReport(Generic[Kind]):
    """Datagrams of one kind dropped since the last report of that kind."""

    verdict: Kind
    count: int = 0
    size: int = 0  # their bytes, all together
    last: tuple = ()  # the source of the latest one
    detail: str = ""  # the latest error, for SEND_FAILED


@dataclass
class DropLog(Generic[Kind]):
    """Counts dropped datagrams by kind and says each kind at most once per ``interval`` seconds. Sans-IO.

    The first drop of a kind is reported at once (an operator sees the problem start); later ones are added up
    and reported together when the interval has passed. A flood of N datagrams thus costs at most one line per
    kind per interval instead of N lines.
    """

    interval: float
    _pending: dict[Kind, DropReport[Kind]] = field(default_factory=dict, init=False)
    _quiet_until: dict[Kind, float] = field(default_factory=dict, init=False)  # one entry per kind at most

    def note(self, verdict: Kind, source: tuple, size: int, now: float, detail: str = "") -> None:
        report = self._pending.setdefault(verdict, DropReport(verdict))
        report.count += 1
        report.size += size
        report.last = source
        report.detail = detail or report.detail

    def next_due(self) -> float | None:
        """When the earliest pending report may be said (None when nothing is pending)."""
        return min((self._quiet_until.get(v, float("-inf")) for v in self._pending), default=None)

    def due(self, now: float) -> list[DropReport[Kind]]:
        """The pending reports whose kind has been quiet for an interval; each starts a new quiet interval."""
        ready = [r for v, r in self._pending.items() if now >= self._quiet_until.get(v, float("-inf"))]
        for report in ready:
            del self._pending[report.verdict]
            self._quiet_until[report.verdict] = now + self.interval
        return ready

    def flush(self) -> list[DropReport[Kind]]:
        """Every pending report, due or not: for the end of the server."""
        ready = list(self._pending.values())
        self._pending.clear()
        return ready


def _drop_line(report: DropReport[Verdict], limits: EchoLimits) -> str:
    plural = "" if report.count == 1 else "s"
    reason = report.verdict.value
    if report.verdict is Verdict.RATE_LIMITED:
        reason += f" ({limits.rate:g} datagrams and {limits.byte_rate:.0f} bytes a second)"
    elif report.verdict is Verdict.SEND_FAILED and report.detail:
        reason += f" ({report.detail})"
    return (
        f"{stamp()} dropped {report.count} datagram{plural} ({report.size} bytes) {reason}, "
        f"the last from {peer_text(report.last)}; reported at most every {limits.log_interval:g} s"
    )


def _answer_one(sock: socket.socket, guard: EchoGuard, drops: DropLog[Verdict], out: TextIO, number: int) -> bool:
    """Read one datagram and echo it if the guard agrees (logged as ``#number``); True if it was echoed."""
    try:
        data, addr = sock.recvfrom(RECV_SIZE)
    except (BlockingIOError, TimeoutError, ConnectionResetError, ConnectionRefusedError):
        return False  # nothing after all, or (Windows) an ICMP error about an earlier answer: nothing to do
    now = time.monotonic()
    verdict = guard.decide(addr, len(data), now)
    if verdict is not Verdict.ECHO:
        drops.note(verdict, addr, len(data), now)
        return False
    try:
        sock.sendto(data, addr)
    except OSError as exc:  # an address the guard could not rule out (a subnet broadcast), ENOBUFS...
        drops.note(Verdict.SEND_FAILED, addr, len(data), now, exc.strerror or str(exc))
        return False
    _line(out, f"{stamp()} #{number} {peer_text(addr)} {len(data)} bytes: {show(data)}")
    return True


def echo(sock: socket.socket, out: TextIO, count: int | None = None, *, limits: EchoLimits | None = None) -> int:
    """Send every datagram back to its sender, unless ``EchoGuard`` says no; log each one and a running count.

    Returns how many were echoed; ``count`` stops the server after that many. Dropped datagrams are reported by
    kind, at most once per ``limits.log_interval`` (``DropLog``): the loop waits for the socket or for the
    next report that falls due, whichever comes first, so a summary is not held back until the next datagram.
    """
    limits = limits or EchoLimits()
    bound = sock.getsockname()
    _line(out, f"echoing on {peer_text(bound)}")
    guard = EchoGuard(bound, limits, is_local_address)
    drops: DropLog[Verdict] = DropLog(limits.log_interval)
    echoed = 0
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while count is None or echoed < count:
                due = drops.next_due()
                if selector.select(None if due is None else max(0.0, due - time.monotonic())):
                    echoed += _answer_one(sock, guard, drops, out, echoed + 1)
                for report in drops.due(time.monotonic()):
                    _line(out, _drop_line(report, limits))
    finally:
        for report in drops.flush():
            _line(out, _drop_line(report, limits))
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
    is needed. The chat ends at end of input (Ctrl-D). Input redirected from a regular file or ``/dev/null``
    cannot be waited on (epoll refuses it with EPERM) and never needs to be: it is always readable, so it is
    read at every turn while the socket is only polled, and the chat sends the file's lines and ends.
    """
    _line(out, f"chatting on {peer_text(sock.getsockname())} with {peer_text(peer)}; Ctrl-D or Ctrl-C ends")
    lines = _LineSplitter()
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ, "socket")
        try:
            selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
            always_readable = False
        except PermissionError:
            always_readable = True
        while True:
            ready = [key.data for key, _ in selector.select(0 if always_readable else None)]
            if "socket" in ready:
                data, addr = sock.recvfrom(RECV_SIZE)
                _line(out, f"{stamp()} {peer_text(addr)}> {show(data)}")
            if "stdin" in ready or always_readable:
                chunk = os.read(stdin_fd, RECV_SIZE)
                for line in lines.feed(chunk) if chunk else lines.end():
                    try:
                        sock.sendto(check_size(line), peer)
                    except ValueError as exc:
                        _line(out, f"not sent: {exc}")
                if not chunk:
                    return


class _LineSplitter:
    """Input bytes to complete lines, holding at most ``MAX_PAYLOAD`` bytes of an unfinished line.

    A line longer than that can never be one datagram, so once the unfinished part outgrows it, that part is
    given out at once (for ``check_size`` to refuse, as it refuses any overlong line) and the rest of the line
    is skipped as it arrives: memory stays bounded however long the input goes without a newline.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._skipping = False  # inside a line already refused: drop bytes up to its newline

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if self._skipping and lines:
            lines.pop(0)  # the tail of the overlong line
            self._skipping = False
        if self._skipping:
            self._pending = b""
        elif len(self._pending) > MAX_PAYLOAD:
            lines.append(self._pending)
            self._pending, self._skipping = b"", True
        return lines

    def end(self) -> list[bytes]:
        """The last line, if the input did not end with a newline."""
        return [self._pending] if self._pending else []


def broadcast(port: int, message: bytes, out: TextIO, wait: float = 0.0, address: str = "<broadcast>") -> int:
    """Send one datagram with SO_BROADCAST to every host on the local network (255.255.255.255 by default)."""
    with open_socket(broadcast=True) as sock:
        sock.sendto(check_size(message), (address, port))
        shown = "255.255.255.255" if address == "<broadcast>" else address
        _line(out, f"broadcast {len(message)} bytes to {shown}:{port}")
        return collect_replies(sock, out, wait) if wait > 0 else 0


__all__ = [
    "DropLog",
    "EchoGuard",
    "EchoLimits",
    "Verdict",
    "broadcast",
    "chat",
    "echo",
    "listen",
    "open_socket",
    "send",
    "show",
]
