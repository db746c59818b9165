"""The TFTP server: one selectors loop, a socket per transfer, files confined to a root directory.

The loop owns every socket and nothing else. The well-known socket (port 69 by default) only receives
requests; each accepted request gets a new socket on a fresh ephemeral port (its TID, RFC 1350) and a state
machine from ``transfer``. Datagrams and timer ticks go to the machines, whatever they return goes out, and a
slow or vanished client only ever costs its own timer: it cannot stall the others.

Slots. Each transfer holds a slot (two descriptors: its socket and its file) and there are ``max_transfers``
of them. A request costs one datagram and may come from a forged address, so no request may hold a slot for
long without earning it: the negotiated timeout is capped (``ServerLimits.max_timeout``), a transfer that
makes no progress for ``stall_limit`` seconds is dropped whatever retries it has left, one source address
holds at most ``max_transfers_per_source`` slots, and when the server is full the transfer that has waited
longest without progress gives way to the newcomer (``_make_room``): one that never heard from its peer
first, then one slower than ``min_rate`` bytes a second (each of the peer's datagrams counting for at most
512 bytes), then one whose peer is overdue. A transfer that is making progress at that rate and on time is
never dropped for a newcomer; only when every slot is busy that way is a request refused with "server busy".
A request is checked and its file opened before anything gives way to it (``_serve``): one that is refused
costs nobody a transfer. Every answer to a request costs its source a token of its budget (``_budget``),
given back when the client makes progress; refusals are logged per kind at most once per ``log_interval``
(``udp.DropLog``). A lone transfer with a fast peer is busy-polled for a moment after each answer instead of
waiting in epoll, which more than halves the time of a lock-step download on loopback;
``_on_transfer_socket`` explains when, and what it costs.

Files are the server's responsibility, not the machines': paths are resolved inside ``root`` (no ``..``, no
absolute paths, no symlinks leading out), only regular files are read or replaced (``files``: a FIFO or a
device in the root must not block the loop), uploads go to a temporary file that is renamed into place only
when the last block has arrived, so an aborted upload leaves nothing behind, and each transfer is logged with
its peer, file, size, duration and rate.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ..addr import source_key as host_source_key
from ..display import show
from ..ratelimit import BucketTable
from ..udp import DropLog
from . import netascii
from . import options as opts
from .buffers import fit_window
from .files import NotRegularFile, OutsideRoot, check_replaceable, open_regular
from .packets import Error, ErrorCode, MalformedPacket, ReadRequest, Request, decode
from .progress import format_size
from .tempfiles import is_upload_temporary, new_upload_marker, remove_leftovers, temporary_sibling
from .transfer import Address, Datagram, Receiver, Sender, State, error_for_os_error

log = logging.getLogger("server.net.tftp")

MAX_DATAGRAM = 65536  # larger than any TFTP packet: blksize is at most 65464
_FILE_BUFFER = 256 * 1024  # many blocks per read or write system call
_BATCH = 64  # datagrams read from one socket before the loop looks at the others again
_NEVER = float("inf")  # the deadline of a loop with no timer to wait for
# Busy-polling for the peer's reply (see _on_transfer_socket). Measured on loopback with tftp-hpa's client at
# blksize 512, the reply to a DATA block is in our socket 11-20 microseconds after we sent it (95th percentile
# 20); a budget of 100 covers the slow tail of a noisy machine and missed fewer than 1 in 1,000 replies.
_SPIN_SECONDS = 100e-6
_SPIN_PROBE = 64  # a transfer that stopped spinning tries again once every this many answers
# A spin is only free while a CPU would otherwise sit idle. When tasks queue for CPUs, every microsecond we spin
# is taken from someone -- often the very client we wait for -- and measured here under a load average of 4.5
# on 2 cores, spinning made a 40 MiB download 1.4x slower than sleeping in epoll. So the loop looks at the
# CPU pressure twice a second and spins only while it is low.
_PRESSURE_FILE = "/proc/pressure/cpu"  # Linux PSI: "some avg10=P ..." = % of the last 10 s a task waited
_PRESSURE_LIMIT = 20.0  # percent; here, a spinning transfer beside another team's benchmark read 11-17
_PRESSURE_EVERY = 0.5  # seconds between looks
# Seconds between flushes of the uploads' files (see TftpServer._flush_uploads).
_FLUSH_EVERY = 120.0
_BUSY = "server busy, try again later"
# The per-source budget for answers to requests (TftpServer._budget) remembers this many sources at most, about
# 2 MB; past it the least recently heard is forgotten (server.net.ratelimit.BucketTable says what that costs).
_BUDGET_SOURCES = 16384
# What counts as progress when the server is full (_idleness): bytes per second over the last _RATE_WINDOW to
# _RATE_WINDOW x 2 seconds, once a transfer is _RATE_GRACE seconds old, each of the peer's datagrams counting
# for at most _FLOOR_BLOCK bytes (_rate). A lock-step transfer at blksize 512 makes 256 B/s at one block per
# 2 s, which a client on a lossy satellite link (600 ms round trips, 1 s timeouts, one round in three lost:
# 358 B/s) still beats; acknowledging one 8-byte block every 8 s, 1 B/s, does not, and neither does one
# 8192-byte block every 9.9 s (0.1 datagram a second counts as 52 B/s, not 827): a big block buys no slot.
_RATE_WINDOW = 10.0
_RATE_GRACE = 10.0
_FLOOR_BLOCK = 512  # RFC 1350's block size
_SLOW = 2  # the rank of a transfer below min_rate in _idleness
_OVERDUE = 3  # the rank of one whose peer is merely overdue: the last kind to give way


def cpu_contended() -> bool:
    """Whether tasks are waiting for a CPU: Linux's pressure stall information if available, else whether
    the one-minute load average has reached the number of CPUs we may run on."""
    try:
        with open(_PRESSURE_FILE, "rb") as file:
            some = file.readline().split()  # [b"some", b"avg10=1.23", b"avg60=...", ...]
        return float(some[1].partition(b"=")[2]) >= _PRESSURE_LIMIT
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0] >= usable_cpus()
    except OSError:
        return False


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The longest file name a request may carry. realpath() walks a name one component at a time, with a system
# call for each: "a/" * 32000 + "f", one 64 KB datagram, kept the loop -- every transfer -- busy for 0.7 s
# before it was refused. Linux paths stop at 4096 bytes (PATH_MAX) and no boot file's comes near 1024.
MAX_NAME_BYTES = 1024
# How much of a client's file name a log line shows: enough to recognise it, not 64 KB per request.
_LOGGED_NAME = 256


class Refused(Exception):
    """A request the server will not serve; carries the TFTP error to answer with."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.default_message)
        self.code = code


def resolve_inside(root: Path, name: str) -> Path:
    """The path ``name`` names inside ``root``, or ``Refused`` (ERROR 2) if it would lead anywhere else.

    ``root`` must already be resolved. The textual checks refuse the obvious escapes with a clear reason; the
    final check on the resolved path catches what text cannot see, such as a symlink pointing out of the root.
    A name longer than ``MAX_NAME_BYTES`` is refused before any of that (see there).
    """
    if len(name) > MAX_NAME_BYTES or len(os.fsencode(name)) > MAX_NAME_BYTES:
        # Error 2, not 0: like an absolute path, it is a name the server will not serve, whatever is on disk.
        raise Refused(ErrorCode.ACCESS_VIOLATION, f"file name longer than {MAX_NAME_BYTES} bytes")
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise Refused(ErrorCode.ACCESS_VIOLATION, "absolute paths are not allowed")
    if ".." in Path(name).parts:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "'..' is not allowed in paths")
    path = Path(os.path.realpath(root / name))
    if path != root and root not in path.parents:
        raise Refused(ErrorCode.ACCESS_VIOLATION, "path leads outside the served directory")
    return path


class _OutOfDescriptors(Exception):
    """The process ran out of file descriptors (EMFILE, ENFILE) while starting a transfer."""


_DESCRIPTOR_ERRNOS = (errno.EMFILE, errno.ENFILE)


def source_key(addr: Address) -> str:
    """The "source" that ``max_transfers_per_source`` counts: the IPv4 address, or the IPv6 /64 prefix
    (``server.net.addr.source_key``, which the UDP echo server's rate limit counts by too)."""
    return host_source_key(addr[0])


@dataclass
class _Active:
    """One transfer in progress: its socket, its state machine, and the file behind it."""

    sock: socket.socket
    machine: Sender | Receiver
    request: Request
    peer: Address
    file: BinaryIO
    started: float
    path: Path
    temp: Path | None = None  # uploads: where the data lands until it is complete
    writer: netascii.DecodingWriter | None = None
    linger_until: float | None = None  # a finished upload stays to repeat its final ACK if that was lost
    request_bytes: bytes = field(default=b"", repr=False)
    spin: bool = True  # busy-poll for this peer's replies (see TftpServer._on_transfer_socket)
    answered_at: float = 0.0  # when we last sent this peer something, to see whether its reply was quick
    answers: int = 0  # how many times we answered, for the periodic spin probe
    source: str = ""  # source_key(peer): what the per-source limit counts
    heard: bool = False  # the peer has answered: its request's token went back to its source (see _on_heard)
    window_bytes: int = 0  # the memory its window may take, counted in TftpServer._window_memory
    # Its rate of progress over the last window of time (see _rate): two marks of (time, bytes transferred).
    mark_at: float = 0.0
    mark_bytes: int = 0
    mark_datagrams: int = 0
    prev_at: float = 0.0
    prev_bytes: int = 0
    prev_datagrams: int = 0


@dataclass
class _Plan:
    """A request that passed every check, with its file open: all it lacks to become a transfer is a socket."""

    request: Request
    path: Path
    file: BinaryIO
    accepted: dict[str, str]  # the options the OACK will acknowledge
    settings: opts.Settings
    temp: Path | None = None  # uploads: the temporary file the data lands in

    def close(self) -> None:
        """Give up the plan (no slot for it after all): close the file, remove an upload's temporary file."""
        with contextlib.suppress(OSError):
            self.file.close()
        if self.temp is not None:
            with contextlib.suppress(OSError):
                self.temp.unlink()


class TftpServer:
    """Serve the files under ``root`` over TFTP; call ``serve_forever`` and, from any thread, ``shutdown``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 69,
        *,
        allow_upload: bool = False,
        overwrite: bool = False,
        limits: opts.ServerLimits | None = None,
        timeout: float = 1.0,
        retries: int = 5,
        max_transfers: int = 256,
        max_transfers_per_source: int = 8,
        stall_limit: float = 30.0,
        busy_poll: bool = True,
        min_rate: float = 256.0,
        window_budget: int = 64 * 1024 * 1024,
        max_window_bytes: int = 1024 * 1024,
        new_transfer_rate: float = 2.0,
        new_transfer_burst: int = 16,
        log_interval: float = 10.0,
    ) -> None:
        """Serve ``root`` on ``host``:``port``; the keyword arguments are the server's limits.

        ``timeout`` and ``retries`` govern retransmission. ``max_transfers`` is the number of slots.
        ``max_transfers_per_source`` bounds the slots one IPv4 address (or IPv6 /64) holds at once: a boot
        loader fetches one file at a time, a parallel fetcher or a small NAT a few, and 8 covers them while
        keeping one address to 1/32 of the default 256 slots (raise it for a big NAT). ``stall_limit`` is
        the most seconds a transfer may go without progress, whatever retries it has left: the longest a
        silent peer holds a slot and its two descriptors. It must be at least ``timeout``; a client may
        negotiate a timeout up to ``limits.max_timeout`` and no longer than ``stall_limit``.

        ``min_rate`` (bytes per second) is what counts as progress when the server is full: a transfer older
        than 10 s that moved fewer bytes than that per second over the last 10 to 20 s gives way to a newcomer
        (``_make_room``). ``max_window_bytes`` and ``window_budget`` bound the memory of one transfer's window
        and of all of them (``_grant_window``). ``new_transfer_burst`` and ``new_transfer_rate`` are each
        source's budget for answers to requests (``_on_request``): that many at once, then that many a second;
        a request's token comes back when its transfer hears from the client. ``log_interval``: seconds between
        two log lines about refused or dropped requests of one kind.
        """
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a directory: {root}")
        if max_transfers < 1 or max_transfers_per_source < 1:
            raise ValueError("max_transfers and max_transfers_per_source must be at least 1")
        if not math.isfinite(stall_limit):
            raise ValueError(f"stall_limit must be a finite number of seconds, got {stall_limit!r}")
        if not stall_limit >= timeout > 0:
            raise ValueError(f"stall_limit ({stall_limit:g} s) must be at least the timeout ({timeout:g} s)")
        self.allow_upload = allow_upload
        self.overwrite = overwrite
        limits = limits or opts.ServerLimits()
        # A timeout longer than the stall limit would be cut short before its first retransmission (below 1 s,
        # the smallest timeout a client can ask for, none is granted).
        self.limits = replace(limits, max_timeout=min(limits.max_timeout, int(stall_limit)))
        self.settings = opts.Settings(timeout=timeout, retries=retries, stall_limit=stall_limit)
        self.max_transfers = max_transfers
        self.max_transfers_per_source = max_transfers_per_source
        # Spin briefly for a lone fast peer's reply instead of sleeping in epoll (see _on_transfer_socket):
        # lower latency for more CPU. False keeps the loop purely event-driven.
        # On a single CPU a spin only keeps the client from running: never spin there.
        self.busy_poll = busy_poll and usable_cpus() > 1
        self._spin_allowed = False  # busy_poll, and the CPUs are not contended (see cpu_contended)
        self._spin_checked_at = -_NEVER  # when _spin_allowed was last worked out
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._family = family
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind(address)
        self._sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        # Each registration carries the function that handles its socket's readiness.
        self._selector.register(self._sock, selectors.EVENT_READ, self._on_request_socket)
        # shutdown() may come from another thread or a signal handler: a byte written here wakes the loop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
        self._transfers: dict[socket.socket, _Active] = {}
        self._sources: dict[str, int] = {}  # source_key -> transfers it holds, for max_transfers_per_source
        # The earliest deadline of any transfer, or earlier: deadlines move later without telling us, which
        # costs at most one scan that finds nothing due. Never later, or a timeout would be missed.
        self._next_timer = _NEVER
        self._stopping = False
        self.cleanup: threading.Thread | None = None  # the walk for uploads' leftovers (see _start_cleanup)
        # Starts the names of this server's upload temporaries: the walk for leftovers never deletes them.
        self.upload_marker = new_upload_marker()
        self._flush_at = _NEVER  # when the uploads' files are next flushed; never while there are none
        self.min_rate = min_rate
        self.window_budget = window_budget
        self.max_window_bytes = max_window_bytes
        self._window_memory = 0  # the window_bytes of every transfer, against window_budget
        # Every answer to a request goes to an address anyone can forge: a DATA 1 of 516 bytes for an RRQ of
        # 10 is an amplifier. So each source pays a token per answer, and a source that never answers its
        # transfers (a forged one) gets new_transfer_burst answers, then new_transfer_rate a second, whatever
        # it sends (the UDP echo server's rule, server.net.udp.EchoGuard). A real client gets its token back
        # with its first answer (_on_heard), so it is never limited by the rate, only by its share of slots.
        self._budget = BucketTable(new_transfer_rate, new_transfer_burst, _BUDGET_SOURCES)
        self._drops: DropLog[str] = DropLog(log_interval)
        self._levels: dict[str, int] = {}  # the log level of each kind of drop

    @property
    def address(self) -> Address:
        """Where the server listens, with the real port when it was created with port 0."""
        return self._sock.getsockname()

    @property
    def transfer_count(self) -> int:
        """Transfers holding a slot right now (each holds two descriptors: its socket and its file)."""
        return len(self._transfers)

    def transfers_from(self, host: str) -> int:
        """Transfers held by the source ``host`` belongs to (its IPv4 address, or its IPv6 /64)."""
        return self._sources.get(source_key((host, 0)), 0)

    # -- the loop

    def serve_forever(self) -> None:
        log.info("TFTP serving %s on %s port %d", self.root, *self.address[:2])
        if self.allow_upload:
            self._start_cleanup()
        try:
            while not self._stopping:
                self._run_once()
        finally:
            self._abort_all("server shutting down")
            self._close_sockets()
            self._say_drops(time.monotonic(), flush=True)

    def _start_cleanup(self) -> None:
        """Remove the leftovers of uploads a crash interrupted (``tempfiles.remove_leftovers``), in a thread.

        The walk visits the whole served tree, and a large one or one on NFS can take seconds or minutes: run
        in the loop's thread, it kept every request waiting until it was done. A walk bounded in time or in
        entries would not wait, but on a large tree it would never reach the leftovers beyond its bound, start
        after start. So the walk runs to its end beside the loop, sharing nothing with it but the files: it
        deletes only other servers' files unwritten since long before it began, never one named with this
        server's ``upload_marker``, and it stops between two folders when the server shuts down. The thread is
        a daemon: a walk stuck on a dead NFS server must not keep the process alive."""

        def clean() -> None:
            try:
                removed = remove_leftovers(self.root, stop=lambda: self._stopping, keep=self.upload_marker)
            except Exception:  # never expected (os.walk ignores errors): say so, the server is unaffected
                log.exception("removing the leftovers of unfinished uploads failed")
                return
            if removed:
                log.info("removed %d temporary file(s) left by uploads that never finished", removed)

        self.cleanup = threading.Thread(target=clean, name="tftp-leftovers", daemon=True)
        self.cleanup.start()

    def shutdown(self) -> None:
        """Stop ``serve_forever``, from any thread; in-flight transfers are cleaned up, and their peers told if
        they ever answered (``transfer._Transfer.abort``)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run_once(self) -> None:
        drops_due = self._drops.next_due()
        next_timer = min(self._next_timer, self._flush_at, _NEVER if drops_due is None else drops_due)
        wait = None if next_timer == _NEVER else max(0.0, next_timer - time.monotonic())
        for key, _ in self._selector.select(wait):
            key.data()
        now = time.monotonic()
        if now >= self._next_timer:
            self._fire_timers(now)
        if now >= self._flush_at:
            self._flush_uploads(now)
        if drops_due is not None and now >= drops_due:
            self._say_drops(now)

    def _flush_uploads(self, now: float) -> None:
        """Write what the uploads' file buffers hold, so that each file's mtime moves at least this often.

        An upload is written through a buffer of ``_FILE_BUFFER`` bytes (256 KiB): a slow one, at a few bytes a
        second, could leave its temporary file unwritten for 40 minutes and more, and another server starting
        on the same root would take it for a leftover and delete it (``tempfiles.remove_leftovers`` judges
        other servers' files by their age, ``LEFTOVER_AGE``). A failing flush (a full disk) is left for the
        next write or the commit to report."""
        uploads = [active for active in self._transfers.values() if active.temp is not None]
        for active in uploads:
            with contextlib.suppress(OSError, ValueError):  # ValueError: a file already closed
                active.file.flush()
        self._flush_at = now + _FLUSH_EVERY if uploads else _NEVER

    def _on_wakeup(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def _fire_timers(self, now: float) -> None:
        # Deadlines only ever move later when a transfer makes progress, so a full scan happens only when the
        # earliest one we know of has passed: most packets of a busy transfer never pay for it.
        next_timer = _NEVER
        for active in list(self._transfers.values()):
            _roll_rate(active, now)
            machine = active.machine
            if machine.deadline is not None and machine.deadline <= now:
                try:
                    self._step(active, machine.tick(now), now)
                except Exception:
                    self._crashed(active)
                if active.sock not in self._transfers:
                    continue
            if active.linger_until is not None and active.linger_until <= now:
                self._close_transfer(active)
                continue
            for deadline in (machine.deadline, active.linger_until):
                if deadline is not None:
                    next_timer = min(next_timer, deadline)
        self._next_timer = next_timer

    def _on_transfer_socket(self, active: _Active) -> None:
        """Feed the datagrams waiting on a transfer's socket to its machine, and busy-poll for the next one.

        Keep reading while we have nothing to say: a window of blocks arrives as a burst, one wakeup for all.
        Once we have answered, the next datagram is the peer's reply to our answer, which cannot be here yet.
        Normally we go back to the selector (it is level-triggered, so a datagram left queued is reported again
        at once) and sleep in epoll until the reply arrives.

        Busy-polling. A lock-step transfer (windowsize 1) is bound by its round trip, not by anyone's CPU: on
        loopback the peer's reply is back within 11-20 microseconds, and going to sleep in epoll and being
        woken again costs more than that -- the kernel has to wake a thread and, on an idle virtual CPU, the
        hypervisor has to wake the CPU. So when this transfer is the only one, after answering we try the
        socket again without blocking, in a loop, for up to ``_SPIN_SECONDS`` (100 microseconds), and handle
        the reply the moment it lands. That took a 40 MiB download at blksize 512 from about 5 s to about 2 s.

        The price is CPU: up to ``_SPIN_SECONDS`` of one core per datagram we send, even when the reply comes
        later. So the spin is kept where it pays:

        - only while this is the only transfer: with two or more, a spin on one socket would delay datagrams
          waiting on the others, and under load the loop has better things to do than wait;
        - only while CPUs are idle (``cpu_contended``, checked twice a second, and never on a single CPU):
          when tasks queue for a CPU, the time we spin is taken from them, the client among them;
        - only while the peer is fast: a spin that runs out (the peer is on a real network, or slow, or the
          machine is busy) turns spinning off for this transfer, and it comes back on only when a reply
          arrives within the budget while we sleep in epoll, or at the next probe (one spin every
          ``_SPIN_PROBE`` answers, in case the wakeup itself is what made the replies look slow). A peer 1 ms
          away costs one wasted spin per 64 blocks, a sixth of a percent of a core, not 10%;
        - at most ``_BATCH`` datagrams per call, then back to the loop, so that new requests, timers and
          ``shutdown`` are seen even when the fast path never misses.
        """
        sock, machine, transfers = active.sock, active.machine, self._transfers
        if sock not in transfers:
            # Closed earlier in this same turn of the loop (a request made room by dropping it): the selector's
            # list still names its socket, and recvfrom on a closed socket fails forever.
            return
        recvfrom, clock = sock.recvfrom, time.monotonic
        spin_until = 0.0  # while a spin is on, when it ends; 0.0 when we are not spinning
        handled = 0
        while True:
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                if not spin_until:
                    return
                if clock() < spin_until:
                    continue
                active.spin = False  # the peer was not fast enough to make waiting worth it
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on a later recvfrom
                log.debug("transfer socket error for %s: %s", active.peer, exc)
                handled += 1  # An error that repeats (it should not) still ends this turn: never a spin.
                if handled >= _BATCH or sock.fileno() < 0:
                    return
                continue
            now = clock()
            if not active.spin and now - active.answered_at < _SPIN_SECONDS:
                active.spin = True  # a reply came quickly even through epoll: spinning would have caught it
            try:
                datagrams = machine.datagram_received(data, addr, now)
                if not active.heard and machine.progressed_at is not None:
                    self._on_heard(active)
                self._step(active, datagrams, now)
            except Exception:
                self._crashed(active)
                return
            handled += 1
            if handled >= _BATCH or sock not in transfers:
                return
            if not datagrams:
                spin_until = 0.0  # nothing said, nothing to wait for: read on while datagrams are queued
                continue
            if machine.finished:
                return
            active.answered_at = answered_at = clock()
            active.answers += 1
            if len(transfers) > 1 or not (active.spin or active.answers % _SPIN_PROBE == 0):
                return
            if answered_at - self._spin_checked_at > _PRESSURE_EVERY:
                self._spin_checked_at = answered_at
                self._spin_allowed = self.busy_poll and not cpu_contended()
            if not self._spin_allowed:
                return
            spin_until = answered_at + _SPIN_SECONDS

    def _on_heard(self, active: _Active) -> None:
        """The peer answered for the first time: its address is real, and the token its request cost its
        source goes back (so a client that goes on with its transfers is not slowed by the budget that bounds
        what forged requests draw; answers a client never follows up, refusals and aborted probes, are not
        given back: see docs/networking.md)."""
        active.heard = True
        self._budget.give_back(active.source)

    def _crashed(self, active: _Active) -> None:
        """A bug or an unexpected error in one transfer ends that transfer, never the server."""
        log.exception("%s: transfer failed unexpectedly", _peer_text(active.peer))
        with contextlib.suppress(Exception):
            self._send(active, active.machine.abort("internal server error"))
        self._close_transfer(active)

    def _send(self, active: _Active, datagrams: list[Datagram]) -> None:
        for data, addr in datagrams:
            try:
                active.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                pass  # a full socket buffer loses the datagram like the network would; a timeout repairs it
            except OSError as exc:
                log.debug("sendto %s failed: %s", addr, exc)

    def _step(self, active: _Active, datagrams: list[Datagram], now: float) -> None:
        """Send what the machine produced, after the book-keeping its new state calls for."""
        machine = active.machine
        deadline = machine.deadline
        if deadline is not None and deadline < self._next_timer:
            self._next_timer = deadline
        if active.linger_until is not None or not machine.finished:
            self._send(active, datagrams)
            return
        if machine.state == State.COMPLETE and active.temp is not None:
            # The file is renamed into place before the final ACK goes out: when the client hears that the
            # upload succeeded, the file is there, and if the rename fails the client hears that instead.
            failure = self._commit_upload(active)
            if failure is not None:
                code, message = failure
                self._release_file(active)
                self._send(active, machine.fail(code, message))
                self._log_end(active, f"failed: {message}")
                self._close_transfer(active)
                return
            self._send(active, datagrams)
            # Stay a little in case the final ACK is lost and the last block comes again.
            active.linger_until = now + machine.settings.timeout
            self._next_timer = min(self._next_timer, active.linger_until)
            self._log_end(active, "ok")
            return
        # Files first, words second: by the time the peer reads our last packet, a failed upload is gone.
        self._release_file(active)
        self._send(active, datagrams)
        self._log_end(active, "ok" if machine.state == State.COMPLETE else f"failed: {machine.error}")
        self._close_transfer(active)

    # -- requests

    def _on_request_socket(self) -> None:
        for _ in range(_BATCH):
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("request socket error: %s", exc)
                continue
            try:
                self._on_request(data, addr)
            except Exception:  # e.g. out of file descriptors: refuse this request, keep serving the rest
                log.exception("%s: request failed unexpectedly", _peer_text(addr))
                self._answer_error(addr, ErrorCode.NOT_DEFINED, "internal server error")

    def _on_request(self, data: bytes, addr: Address) -> None:
        """Answer one datagram that came to the well-known port: start a transfer, or say why not.

        Everything answered from here goes to an address anyone can forge, so every answer (a transfer's first
        packet, or an ERROR) is paid from the source's budget (``_budget``, see ``__init__``) before anything
        else is done; a source whose budget is spent gets no answer at all, and the drop is counted, not logged
        line by line (``_note``). Only the repeat of a request already being served is outside the budget: it
        draws at most one packet per timeout (``transfer._Transfer.request_repeated``).
        """
        now = time.monotonic()
        try:
            request: object = decode(data)
        except MalformedPacket as exc:
            request = exc
        if isinstance(request, Error):
            return  # never answer an error with an error
        if isinstance(request, Request) and self._repeated(request, data, addr, now):
            return
        source = source_key(addr)
        if not self._budget.take(source, now):
            self._note("unanswered: the source's budget for new transfers is spent", addr, len(data), now)
            return
        if isinstance(request, MalformedPacket):
            detail = f"malformed request: {request}"
            self._note("malformed", addr, len(data), now, detail, level=logging.WARNING)
            self._answer_error(addr, ErrorCode.ILLEGAL_OPERATION, f"malformed packet: {request}", within=len(data))
        elif not isinstance(request, Request):
            self._note("malformed", addr, len(data), now, "not a request", level=logging.WARNING)
            message = "expected a read or write request"
            self._answer_error(addr, ErrorCode.ILLEGAL_OPERATION, message, within=len(data))
        else:
            self._serve(request, data, addr, source, now)

    def _repeated(self, request: Request, data: bytes, addr: Address, now: float) -> bool:
        """Whether ``data`` repeats the request of a transfer already running (and let that transfer answer it).

        The client repeated its request: our answer was lost or is late. That transfer may answer it again if
        the client has not answered yet (``Transfer.request_repeated``), else it is a stray."""
        for existing in self._transfers.values():
            if existing.peer == addr and existing.request_bytes == data:
                self._send(existing, existing.machine.request_repeated(now))
                return True
        return False

    def _serve(self, request: Request, data: bytes, addr: Address, source: str, now: float) -> None:
        """Check the request and open its file; only then make room for it, and start it.

        The order matters: a request that is refused (a missing file, uploads disabled, mail mode) must cost
        nobody their transfer, so the idle transfers that give way to a newcomer (``_make_room``) are chosen
        only once the newcomer is known to be served.
        """
        try:
            plan = self._prepare_making_room(request, now)
        except Refused as exc:
            self._refuse(addr, request, exc.code, str(exc), len(data), now)
            return
        except _OutOfDescriptors:
            self._refuse(addr, request, ErrorCode.NOT_DEFINED, _BUSY, len(data), now, why="out of file descriptors")
            return
        try:
            if self._sources.get(source, 0) >= self.max_transfers_per_source and not self._make_room(now, source):
                message = "too many transfers from your address, try again later"
                self._refuse(addr, request, ErrorCode.NOT_DEFINED, message, len(data), now, why="source at its limit")
                plan.close()
                return
            if len(self._transfers) >= self.max_transfers and not self._make_room(now):
                self._refuse(addr, request, ErrorCode.NOT_DEFINED, _BUSY, len(data), now, why="server busy")
                plan.close()
                return
            sock = self._socket_making_room(now)
        except _OutOfDescriptors:
            plan.close()
            self._refuse(addr, request, ErrorCode.NOT_DEFINED, _BUSY, len(data), now, why="out of file descriptors")
            return
        except BaseException:
            plan.close()
            raise
        try:
            active = self._launch(sock, plan, addr, now)
        except BaseException:
            sock.close()
            plan.close()
            raise
        active.request_bytes = data
        active.source = source
        self._transfers[active.sock] = active
        self._sources[source] = self._sources.get(source, 0) + 1
        self._window_memory += active.window_bytes
        self._selector.register(active.sock, selectors.EVENT_READ, partial(self._on_transfer_socket, active))
        self._step(active, active.machine.start(), active.started)

    def _refuse(
        self, addr: Address, request: Request, code: ErrorCode, message: str, size: int, now: float, why: str = ""
    ) -> None:
        """Answer a request with ERROR ``code`` from the well-known port, and count it for the log."""
        self._note(
            f"refused ({why})" if why else f"refused with ERROR {int(code)}",
            addr,
            size,
            now,
            f"{_kind(request)} {_name(request)} refused: {show(why or message)}",
        )
        self._answer_error(addr, code, message)

    def _note(
        self, kind: str, addr: Address, size: int, now: float, detail: str = "", level: int = logging.INFO
    ) -> None:
        """Count a request refused or dropped; the log says each kind at once, then at most once per
        ``log_interval`` with how many there were (``udp.DropLog``): a flood of requests is no flood of lines."""
        self._drops.note(kind, addr, size, now, detail or kind)
        self._levels[kind] = level
        self._say_drops(now)

    def _say_drops(self, now: float, *, flush: bool = False) -> None:
        for report in self._drops.flush() if flush else self._drops.due(now):
            peer = _peer_text(report.last)
            if report.count == 1:
                line = f"{peer}: {report.detail}"
            else:
                line = (
                    f"{report.count} requests {report.verdict} ({report.size} bytes), the last {peer}: "
                    f"{report.detail}; said at most every {self._drops.interval:g} s"
                )
            log.log(self._levels.get(report.verdict, logging.INFO), "%s", line)

    def _prepare_making_room(self, request: Request, now: float) -> _Plan:
        """``_prepare``, dropping idle transfers while the process is out of descriptors.

        That happens when the ulimit is lower than ``max_transfers`` needs. Each transfer dropped frees two
        descriptors, and preparing one takes up to two for a moment (the file opened through ``O_PATH``, then
        for reading): two drops always make enough room. (The name has passed its textual checks by then; that
        the file exists cannot be known without a descriptor.)
        """
        for _ in range(2):
            try:
                return self._prepare(request, now)
            except _OutOfDescriptors:
                if not self._make_room(now):
                    raise
        return self._prepare(request, now)

    def _socket_making_room(self, now: float) -> socket.socket:
        """A new socket for a transfer, bound beside the well-known one; ``_OutOfDescriptors`` if there is
        none to be had even after an idle transfer gave way."""
        for attempt in range(2):
            try:
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
            except OSError as exc:
                if exc.errno not in _DESCRIPTOR_ERRNOS:
                    raise
                if attempt or not self._make_room(now):
                    raise _OutOfDescriptors from None
                continue
            try:
                sock.bind((self.address[0], 0))
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock
        raise _OutOfDescriptors

    def _make_room(self, now: float, source: str | None = None) -> bool:
        """Drop the transfer (of ``source``, if given) that has waited longest without progress, if one may
        give way; return whether one did.

        Which transfers may: one that is complete and only lingers to repeat its final ACK; then one that has
        never heard from its peer (its request may have come from a forged address, and a real client
        answers within a round trip); then one whose progress is below ``min_rate`` (``_rate``: a peer
        acknowledging one 8-byte block every 8 s is never overdue, and 256 of them held every slot), the
        slowest first; then one whose peer is overdue (no progress for its own timeout) but whose rate is
        unknown yet or meets the floor, the one idle longest first. So a client meeting the floor (a lossy
        link that misses a round now and then) never gives way ahead of one that does not. A transfer making
        progress at ``min_rate`` or more and not overdue never gives way: when all are, the newcomer is
        refused instead.

        The scan is linear, and runs only when the server or a source is full.
        """
        victim: _Active | None = None
        victim_rank: tuple[int, float] | None = None
        for active in self._transfers.values():
            if source is not None and active.source != source:
                continue
            rank = _idleness(active, now, self.min_rate)
            if rank is not None and (victim_rank is None or rank < victim_rank):
                victim, victim_rank = active, rank
        if victim is None or victim_rank is None:
            return False
        why = "too slow" if victim_rank[0] == _SLOW else "no progress"
        self._drop(victim, f"transfer dropped to make room: {why}", f"dropped to make room: {why}")
        return True

    def _prepare(self, request: Request, now: float) -> _Plan:
        """Check a request against the rules and open its file, before any socket or slot is spent on it;
        return the plan, or raise ``Refused``."""
        if request.mode == "mail":
            raise Refused(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported")
        path = resolve_inside(self.root, request.filename)
        if is_upload_temporary(path.name):
            # An upload's temporary file: half a file while it is written, and a leftover after a crash.
            raise Refused(ErrorCode.ACCESS_VIOLATION, "the name of an upload's temporary file")
        if isinstance(request, ReadRequest):
            return self._prepare_read(request, path)
        return self._prepare_write(request, path, now)

    def _prepare_read(self, request: Request, path: Path) -> _Plan:
        try:  # a regular file, checked before it is opened for reading: a FIFO would block the loop in open()
            fd, info = open_regular(path, self.root)
        except NotRegularFile as exc:
            raise Refused(ErrorCode.ACCESS_VIOLATION, str(exc)) from None
        except OutsideRoot:
            raise Refused(ErrorCode.ACCESS_VIOLATION, "path leads outside the served directory") from None
        except OSError as exc:
            if exc.errno in _DESCRIPTOR_ERRNOS:
                raise _OutOfDescriptors from None
            raise Refused(*error_for_os_error(exc)) from None
        file = os.fdopen(fd, "rb", buffering=_FILE_BUFFER)  # closed by _close_transfer, however the transfer ends
        try:
            size = None if request.mode == "netascii" else info.st_size  # netascii changes the size in transit
            accepted, settings = self._negotiate(request, is_read=True, file_size=size)
        except BaseException:
            file.close()
            raise
        return _Plan(request, path, file, accepted, settings)

    def _prepare_write(self, request: Request, path: Path, now: float) -> _Plan:
        if not self.allow_upload:
            raise Refused(ErrorCode.ACCESS_VIOLATION, "uploads are not allowed")
        try:  # a directory, a FIFO, a socket or a device node is never replaced, even with overwrite
            check_replaceable(path)
        except NotRegularFile as exc:
            raise Refused(ErrorCode.ACCESS_VIOLATION, str(exc)) from None
        if path.exists() and not self.overwrite:
            raise Refused(ErrorCode.FILE_EXISTS)
        if not path.parent.is_dir():
            raise Refused(ErrorCode.FILE_NOT_FOUND, "directory does not exist")
        accepted, settings = self._negotiate(request, is_read=False, file_size=None)
        try:
            fd, temp = temporary_sibling(path, self.upload_marker)
        except OSError as exc:
            if exc.errno in _DESCRIPTOR_ERRNOS:
                raise _OutOfDescriptors from None
            raise Refused(*error_for_os_error(exc)) from None
        file = os.fdopen(fd, "wb", buffering=_FILE_BUFFER)
        self._flush_at = min(self._flush_at, now + _FLUSH_EVERY)
        return _Plan(request, path, file, accepted, settings, Path(temp))

    def _launch(self, sock: socket.socket, plan: _Plan, peer: Address, now: float) -> _Active:
        """The transfer for a prepared request, on its own socket, with the window it is granted."""
        request, file, accepted = plan.request, plan.file, plan.accepted
        settings = fit_window(sock, self._grant_window(plan.settings))
        if "windowsize" in accepted:
            accepted["windowsize"] = str(settings.windowsize)
        text = request.mode == "netascii"
        machine: Sender | Receiver
        writer = None
        if plan.temp is None:
            read = netascii.EncodingReader(file.read).read if text else file.read
            machine = Sender(read, peer, settings, now, oack=accepted)
        else:
            writer = netascii.DecodingWriter(file.write) if text else None
            write = writer.write if writer else file.write
            limit = self.limits.max_upload
            machine = Receiver(write, peer, settings, now, oack=accepted, limit=limit, netascii=text)
        active = _Active(sock, machine, request, peer, file, now, plan.path, plan.temp, writer)
        active.window_bytes = settings.windowsize * (settings.blksize + 4)
        active.mark_at = active.prev_at = now
        return active

    def _grant_window(self, settings: opts.Settings) -> opts.Settings:
        """``settings`` with the window cut to what the memory budget allows (RFC 7440 lets an OACK answer a
        smaller windowsize than asked for).

        A window of blocks is kept until acknowledged (a sender's cache) or may sit in the socket buffers (a
        receiver's): blksize 65464 and windowsize 64 is 4 MiB a transfer, and 256 of them took 1.1 GB. So one
        transfer's window holds at most ``max_window_bytes`` and all of them together ``window_budget``; a
        transfer that finds the budget short is granted a smaller window, down to lock-step (one block, always
        granted: at most ``max_transfers`` x 64 KiB beyond the budget, 16 MiB with the defaults).
        """
        block = settings.blksize + 4
        room = min(self.max_window_bytes, self.window_budget - self._window_memory)
        windowsize = max(1, min(settings.windowsize, room // block))
        return settings if windowsize == settings.windowsize else replace(settings, windowsize=windowsize)

    def _negotiate(
        self, request: Request, *, is_read: bool, file_size: int | None
    ) -> tuple[dict[str, str], opts.Settings]:
        """The options to acknowledge and the settings to run with (the window is granted at launch)."""
        try:
            return opts.negotiate(
                request.options, is_read=is_read, file_size=file_size, limits=self.limits, base=self.settings
            )
        except opts.NegotiationError as exc:
            raise Refused(exc.code, str(exc)) from None

    def _commit_upload(self, active: _Active) -> tuple[ErrorCode, str] | None:
        """Move a complete upload into place; None when done, else the TFTP error that says why it could not."""
        assert active.temp is not None
        try:
            if active.writer is not None:
                active.writer.close()
            active.file.close()
            if self.overwrite:
                # Checked again: a FIFO or a device node may have taken the name while the upload ran.
                check_replaceable(active.path)
                os.replace(active.temp, active.path)
            else:
                # A hard link fails if the name appeared while the upload ran: no race can replace anything.
                os.link(active.temp, active.path)
                os.unlink(active.temp)
        except NotRegularFile as exc:
            return ErrorCode.ACCESS_VIOLATION, str(exc)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return ErrorCode.FILE_EXISTS, ErrorCode.FILE_EXISTS.default_message
            return error_for_os_error(exc)
        active.temp = None
        return None

    def _answer_error(self, addr: Address, code: ErrorCode, message: str, *, within: int | None = None) -> None:
        """Send ERROR ``code`` from the well-known port; ``within``: the most bytes the answer may take.

        Junk from a forged address must not draw more bytes than it cost, or the server amplifies an attack on
        the address: an answer to a malformed datagram is cut to the datagram's size, and a datagram too
        short for even a bare ERROR (its 4-byte header and the message's NUL) gets none.
        """
        packet = Error(code, message).encode()
        if within is not None and len(packet) > within:
            if within < 5:
                return
            packet = _cut_utf8(packet, within - 1) + b"\0"  # the message cut short, still NUL-terminated
        with contextlib.suppress(OSError):
            self._sock.sendto(packet, addr)

    # -- endings

    def _close_transfer(self, active: _Active) -> None:
        if self._transfers.pop(active.sock, None) is not None:
            self._window_memory -= active.window_bytes
            held = self._sources.get(active.source, 0) - 1
            if held > 0:
                self._sources[active.source] = held
            else:
                self._sources.pop(active.source, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(active.sock)
        active.sock.close()
        self._release_file(active)

    def _release_file(self, active: _Active) -> None:
        # Closing flushes; for an upload being thrown away, a failing flush (a full disk) changes nothing.
        with contextlib.suppress(OSError):
            active.file.close()
        if active.temp is not None:  # an upload that did not complete leaves nothing behind
            with contextlib.suppress(OSError):
                active.temp.unlink()
            active.temp = None

    def _abort_all(self, reason: str) -> None:
        for active in list(self._transfers.values()):
            self._drop(active, reason, f"aborted: {reason}")

    def _drop(self, active: _Active, reason: str, outcome: str) -> None:
        """End a transfer from our side: its file released first, then the peer told why (ERROR 0), unless it
        never answered: its address may be forged, and nobody may be there (``transfer._Transfer.abort``)."""
        self._release_file(active)
        self._send(active, active.machine.abort(reason))
        if active.linger_until is None:  # a lingering upload was logged when it completed
            self._log_end(active, outcome)
        self._close_transfer(active)

    def _close_sockets(self) -> None:
        if self._sock.fileno() == -1:
            return  # already closed
        self._selector.close()
        for sock in (self._sock, self._wake_r, self._wake_w):
            sock.close()

    def _log_end(self, active: _Active, outcome: str) -> None:
        seconds = max(time.monotonic() - active.started, 1e-6)
        size = active.machine.bytes_transferred
        log.info(
            "%s %s %s %d bytes in %.3f s (%s/s) %s",
            _peer_text(active.peer),
            _kind(active.request),
            _name(active.request),
            size,
            seconds,
            format_size(size / seconds),
            show(outcome),  # may quote the peer's ERROR text
        )

    def close(self) -> None:
        """Release the sockets of a server that is not running (``serve_forever`` does this itself)."""
        self._abort_all("server closing")
        self._close_sockets()

    def __enter__(self) -> TftpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _idleness(active: _Active, now: float, min_rate: float) -> tuple[int, float] | None:
    """How readily a transfer gives way to a newcomer (lower first), or None if it must not (see _make_room)."""
    if active.linger_until is not None:
        return (0, active.started)  # complete: only waiting in case its final ACK was lost
    machine = active.machine
    progressed_at = machine.progressed_at
    if progressed_at is None:
        return (1, machine.started_at)  # never heard from its peer
    rate = _rate(active, now)
    if rate is not None and rate < min_rate:
        return (_SLOW, rate)  # progress too slow to hold a slot others wait for: the slowest goes first
    if now - progressed_at >= machine.settings.timeout:
        return (_OVERDUE, progressed_at)  # its peer is overdue, though fast enough so far
    return None


def _roll_rate(active: _Active, now: float) -> None:
    """Start a new window of time for ``_rate`` once the current one is ``_RATE_WINDOW`` long.

    Called at each scan of the timers (at least once per timeout while transfers run) and before a rate is
    read, so the older mark is between ``_RATE_WINDOW`` and about twice that old: the rate is recent, and a
    transfer cannot live on a fast start."""
    if now - active.mark_at >= _RATE_WINDOW:
        active.prev_at, active.prev_bytes, active.prev_datagrams = (
            active.mark_at,
            active.mark_bytes,
            active.mark_datagrams,
        )
        machine = active.machine
        active.mark_at, active.mark_bytes = now, machine.bytes_transferred
        active.mark_datagrams = machine.progress_datagrams


def _rate(active: _Active, now: float) -> float | None:
    """The transfer's recent rate in bytes per second, or None during its first ``_RATE_GRACE`` seconds.

    Each of the peer's datagrams that made progress counts for at most ``_FLOOR_BLOCK`` bytes: the rate is the
    lower of the bytes moved and ``_FLOOR_BLOCK`` per datagram, so a trickle of ACKs for 8 KiB blocks is as
    slow as a trickle for 512-byte ones."""
    _roll_rate(active, now)
    if now - active.started < _RATE_GRACE or now <= active.prev_at:
        return None
    machine, seconds = active.machine, now - active.prev_at
    datagrams = machine.progress_datagrams - active.prev_datagrams
    return min(machine.bytes_transferred - active.prev_bytes, datagrams * _FLOOR_BLOCK) / seconds


def _cut_utf8(data: bytes, size: int) -> bytes:
    """``data`` cut to at most ``size`` bytes, never inside a UTF-8 character: a client decoding the message
    would otherwise meet half a character at its end. A cut that would fall inside one moves back to where
    that character begins (a continuation byte is 0b10xxxxxx, and a character never begins with one)."""
    while 0 < size < len(data) and data[size] & 0xC0 == 0x80:
        size -= 1
    return data[:size]


def _kind(request: Request) -> str:
    return "RRQ" if isinstance(request, ReadRequest) else "WRQ"


def _name(request: Request) -> str:
    """The client's file name for a log line: escaped, so that a newline in it cannot forge a line, and cut."""
    return show(request.filename, _LOGGED_NAME)


def _peer_text(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"
