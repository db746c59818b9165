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
first, then one whose peer is overdue. A transfer that is making progress is never dropped for a newcomer;
only when every slot is busy that way is a request refused with "server busy". A lone transfer with a fast
peer is busy-polled for a moment after each answer instead of waiting in epoll, which more than halves the
time of a lock-step download on loopback; ``_on_transfer_socket`` explains when, and what it costs.

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
    ) -> None:
        """Serve ``root`` on ``host``:``port``; the keyword arguments are the server's limits.

        ``timeout`` and ``retries`` govern retransmission. ``max_transfers`` is the number of slots.
        ``max_transfers_per_source`` bounds the slots one IPv4 address (or IPv6 /64) holds at once: a boot
        loader fetches one file at a time, a parallel fetcher or a small NAT a few, and 8 covers them while
        keeping one address to 1/32 of the default 256 slots (raise it for a big NAT). ``stall_limit`` is
        the most seconds a transfer may go without progress, whatever retries it has left: the longest a
        silent peer holds a slot and its two descriptors. It must be at least ``timeout``; a client may
        negotiate a timeout up to ``limits.max_timeout`` and no longer than ``stall_limit``.
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
        next_timer = min(self._next_timer, self._flush_at)
        wait = None if next_timer == _NEVER else max(0.0, next_timer - time.monotonic())
        for key, _ in self._selector.select(wait):
            key.data()
        now = time.monotonic()
        if now >= self._next_timer:
            self._fire_timers(now)
        if now >= self._flush_at:
            self._flush_uploads(now)

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
        try:
            request = decode(data)
        except MalformedPacket as exc:
            log.warning("%s: malformed request: %s", _peer_text(addr), exc)
            self._answer_error(addr, ErrorCode.ILLEGAL_OPERATION, f"malformed packet: {exc}", within=len(data))
            return
        if not isinstance(request, Request):
            if not isinstance(request, Error):  # never answer an error with an error
                message = "expected a read or write request"
                self._answer_error(addr, ErrorCode.ILLEGAL_OPERATION, message, within=len(data))
            return
        for existing in self._transfers.values():
            if existing.peer == addr and existing.request_bytes == data:
                # The client repeated its request: our answer was lost or is late. That transfer may answer
                # it again if the client has not answered yet (Transfer.request_repeated), else it is a stray.
                self._send(existing, existing.machine.request_repeated(time.monotonic()))
                return
        now = time.monotonic()
        source = source_key(addr)
        if self._sources.get(source, 0) >= self.max_transfers_per_source and not self._make_room(now, source):
            log.info("%s: %s %s refused: source at its limit", _peer_text(addr), _kind(request), _name(request))
            self._answer_error(addr, ErrorCode.NOT_DEFINED, "too many transfers from your address, try again later")
            return
        if len(self._transfers) >= self.max_transfers and not self._make_room(now):
            self._answer_error(addr, ErrorCode.NOT_DEFINED, "server busy, try again later")
            return
        try:
            active = self._open_transfer_making_room(request, addr, now)
        except _OutOfDescriptors:
            log.warning("%s: %s refused: out of file descriptors", _peer_text(addr), _kind(request))
            self._answer_error(addr, ErrorCode.NOT_DEFINED, "server busy, try again later")
            return
        if active is None:
            return  # refused, and told so
        active.request_bytes = data
        active.source = source
        self._transfers[active.sock] = active
        self._sources[source] = self._sources.get(source, 0) + 1
        self._selector.register(active.sock, selectors.EVENT_READ, partial(self._on_transfer_socket, active))
        self._step(active, active.machine.start(), active.started)

    def _open_transfer_making_room(self, request: Request, addr: Address, now: float) -> _Active | None:
        """``_open_transfer``, dropping idle transfers while the process is out of descriptors.

        That happens when the ulimit is lower than ``max_transfers`` needs. Each transfer dropped frees two
        descriptors, and starting one takes up to three for a moment (its socket, and the file opened through
        ``O_PATH``): two drops always make enough room.
        """
        for _ in range(2):
            try:
                return self._open_transfer(request, addr, now)
            except _OutOfDescriptors:
                if not self._make_room(now):
                    raise
        return self._open_transfer(request, addr, now)

    def _open_transfer(self, request: Request, addr: Address, now: float) -> _Active | None:
        """A new socket and the transfer for ``request``; None if it was refused (the refusal has been sent
        from that socket); raise ``_OutOfDescriptors`` if the process has no descriptor left."""
        try:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
        except OSError as exc:
            if exc.errno in _DESCRIPTOR_ERRNOS:
                raise _OutOfDescriptors from None
            raise
        try:
            sock.bind((self.address[0], 0))
            sock.setblocking(False)
            return self._start(sock, request, addr, now)
        except Refused as exc:
            log.info("%s: %s %s refused: %s", _peer_text(addr), _kind(request), _name(request), show(str(exc)))
            with contextlib.suppress(OSError):
                sock.sendto(Error(exc.code, str(exc)).encode(), addr)
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise

    def _make_room(self, now: float, source: str | None = None) -> bool:
        """Drop the transfer (of ``source``, if given) that has waited longest without progress, if one may
        give way; return whether one did.

        Which transfers may: one that is complete and only lingers to repeat its final ACK; then one that has
        never heard from its peer (its request may have come from a forged address, and a real client
        answers within a round trip); then one whose peer is overdue (no progress for its own timeout). Within
        each kind the one idle longest goes first. A transfer that is making progress never gives way: when
        all are, the newcomer is refused instead.

        The scan is linear, and runs only when the server or a source is full.
        """
        victim: _Active | None = None
        victim_rank: tuple[int, float] | None = None
        for active in self._transfers.values():
            if source is not None and active.source != source:
                continue
            rank = _idleness(active, now)
            if rank is not None and (victim_rank is None or rank < victim_rank):
                victim, victim_rank = active, rank
        if victim is None:
            return False
        self._drop(victim, "transfer dropped to make room: no progress", "dropped to make room")
        return True

    def _start(self, sock: socket.socket, request: Request, peer: Address, now: float) -> _Active:
        """Check a request against the rules and open its file; return the transfer, or raise ``Refused``."""
        if request.mode == "mail":
            raise Refused(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported")
        path = resolve_inside(self.root, request.filename)
        if is_upload_temporary(path.name):
            # An upload's temporary file: half a file while it is written, and a leftover after a crash.
            raise Refused(ErrorCode.ACCESS_VIOLATION, "the name of an upload's temporary file")
        if isinstance(request, ReadRequest):
            return self._start_read(sock, request, peer, path, now)
        return self._start_write(sock, request, peer, path, now)

    def _start_read(self, sock: socket.socket, request: Request, peer: Address, path: Path, now: float) -> _Active:
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
            text = request.mode == "netascii"
            size = None if text else info.st_size  # netascii changes the size in transit
            accepted, settings = self._negotiate(sock, request, is_read=True, file_size=size)
            read = netascii.EncodingReader(file.read).read if text else file.read
            machine = Sender(read, peer, settings, now, oack=accepted)
        except BaseException:
            file.close()
            raise
        return _Active(sock, machine, request, peer, file, now, path)

    def _start_write(self, sock: socket.socket, request: Request, peer: Address, path: Path, now: float) -> _Active:
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
        accepted, settings = self._negotiate(sock, request, is_read=False, file_size=None)
        try:
            fd, temp = temporary_sibling(path, self.upload_marker)
        except OSError as exc:
            if exc.errno in _DESCRIPTOR_ERRNOS:
                raise _OutOfDescriptors from None
            raise Refused(*error_for_os_error(exc)) from None
        file = os.fdopen(fd, "wb", buffering=_FILE_BUFFER)
        self._flush_at = min(self._flush_at, now + _FLUSH_EVERY)
        text = request.mode == "netascii"
        writer = netascii.DecodingWriter(file.write) if text else None
        write = writer.write if writer else file.write
        machine = Receiver(write, peer, settings, now, oack=accepted, limit=self.limits.max_upload, netascii=text)
        return _Active(sock, machine, request, peer, file, now, path, Path(temp), writer)

    def _negotiate(
        self, sock: socket.socket, request: Request, *, is_read: bool, file_size: int | None
    ) -> tuple[dict[str, str], opts.Settings]:
        """The options to acknowledge and the settings to run with, the window fitted to the socket buffers."""
        try:
            accepted, settings = opts.negotiate(
                request.options, is_read=is_read, file_size=file_size, limits=self.limits, base=self.settings
            )
        except opts.NegotiationError as exc:
            raise Refused(exc.code, str(exc)) from None
        settings = fit_window(sock, settings)
        if "windowsize" in accepted:
            accepted["windowsize"] = str(settings.windowsize)
        return accepted, settings

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


def _idleness(active: _Active, now: float) -> tuple[int, float] | None:
    """How readily a transfer gives way to a newcomer (lower first), or None if it must not (see _make_room)."""
    if active.linger_until is not None:
        return (0, active.started)  # complete: only waiting in case its final ACK was lost
    machine = active.machine
    progressed_at = machine.progressed_at
    if progressed_at is None:
        return (1, machine.started_at)  # never heard from its peer
    if now - progressed_at >= machine.settings.timeout:
        return (2, progressed_at)  # its peer is overdue
    return None


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
