"""The two halves of a TFTP transfer as sans-IO state machines: a ``Sender`` and a ``Receiver``.

A transfer never touches a socket or a clock. The I/O layer feeds it each datagram with its source address and
the current time (``datagram_received``) and calls ``tick`` when ``deadline`` passes; both return the
datagrams to send, each with its destination. The same two classes serve all four roles:

==============  ============================  =============================================
role            machine                       how it starts
==============  ============================  =============================================
server, RRQ     ``Sender(request=None)``      sends OACK (as "block 0") or DATA 1
server, WRQ     ``Receiver(request=None)``    sends OACK or ACK 0, waits for DATA 1
client, get     ``Receiver(request=RRQ)``     sends RRQ, takes OACK or DATA 1 as the answer
client, put     ``Sender(request=WRQ)``       sends WRQ, takes OACK or ACK 0 as the answer
==============  ============================  =============================================

The rules of the protocol that live here:

- Transfer IDs (RFC 1350 section 4): the first answer to a request fixes the peer's port; from then on a
  datagram from any other address is answered with ERROR 5 and otherwise ignored, so a stranger cannot disturb
  a transfer.
- Retransmission: only on timeout, a bounded number of times (fewer to a peer that never answered, see
  ``UNANSWERED_RETRIES``). A duplicate ACK never causes a retransmission in lock-step mode; that is the cure
  for the Sorcerer's Apprentice bug (RFC 1123 section 4.2.3.1), where every duplicate ACK doubled the traffic
  for the rest of the transfer.
- Progress: ``progressed_at`` is when the peer last moved the transfer forward (a new block acknowledged or
  received in order; the answer to a request). A transfer that has made none for ``settings.stall_limit``
  seconds gives up whatever retries it has left, so no peer holds a transfer longer than that by being
  silent, whatever timeout it negotiated. The server also reads it to choose which idle transfer gives way.
- Windows (RFC 7440): the sender sends up to ``windowsize`` blocks, the receiver acknowledges the last block
  of a window, or the last block it got in order when something is missing, and the sender goes on from there.
  An ACK draws the blocks new to the window; the window is resent before a timeout only when an ACK reveals a
  gap or repeats, and only as far as the peer has paid for it (``_RESEND_CREDIT``).
- Block numbers are 16 bits on the wire and wrap from 65535 to 0; internally blocks are counted without bound
  and an incoming number is mapped onto the window, so files of any size transfer.
- The last block is shorter than ``blksize``, possibly empty: that is how the receiver knows the file ended.
"""

from __future__ import annotations

import errno
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any, NamedTuple

from ..ratelimit import TokenBucket
from . import options as opts
from .packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    Opcode,
    OptionAck,
    Request,
    decode,
    encode_ack,
)

Address = tuple[Any, ...]  # what socket.recvfrom returns: (host, port) or (host, port, flowinfo, scope_id)

_ERROR_OPCODE = b"\x00\x05"
# Retransmissions of a server's first packet before the client has answered once. A request is one datagram
# from an address anyone can forge, and everything we send before an answer goes to that address: with the
# usual 5 retransmissions and an ERROR at the end, a 10-byte RRQ drew 6 DATA packets of 516 bytes, 88 times
# its size. So each request datagram draws at most 1 + UNANSWERED_RETRIES packets to a peer that never
# answered: the first, and the retransmissions of our own timer. A repeat of the request a timeout or more
# after our last send counts as a new request with a budget of its own (request_repeated); no ERROR is ever
# sent to such a peer, not even when its transfer is aborted (abort). One retransmission still repairs a lost
# first packet without the client's help.
#
# Sending less is not giving up sooner. Real clients (curl, tftp-hpa, atftp) retransmit on a timer of about
# 5 s, so a client whose first answer was lost is heard again only then: the transfer keeps its slot, silent,
# for as long as it would have retransmitted ((retries + 1) x timeout, 6 s by default, or the stall limit),
# answers the client's repeated request, and a late answer continues it. Then it gives up without a word:
# there may be nobody to tell.
UNANSWERED_RETRIES = 1
# How many packets a windowed sender may resend early (on a duplicate ACK or one that reveals a gap, before its
# timeout) per block acknowledged (Sender._may_resend_window). Answering every such ACK with the whole window let
# a peer acknowledging one block at a time draw a window of DATA per ACK: 16 times the data at windowsize 16.
# Two repairs a loss of one block in five without waiting for a timeout, and bounds what ACKs can draw to three
# packets per block acknowledged.
_RESEND_CREDIT = 2
# ERROR 5 answers to strangers (datagrams from another address than the peer's), per transfer: a burst, then a
# steady rate (a token bucket, see _Transfer._stranger). Each answer goes to an address anyone can forge.
STRANGER_ERRORS_BURST = 5
STRANGER_ERRORS_PER_SECOND = 1.0
_DATA_OPCODE = int(Opcode.DATA)
_pack_header = struct.Struct("!HH").pack  # opcode and block number, as in packets.encode_data


class Datagram(NamedTuple):
    """One datagram to send: bytes and where to."""

    data: bytes
    addr: Address


class State(Enum):
    REQUESTING = "requesting"  # client: request sent, no answer yet
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


# Building a Datagram through tuple.__new__ skips the Python-level __new__ that NamedTuple generates: half the
# cost, on a path that builds one per block.
_Datagram, _datagram = Datagram, tuple.__new__

# The per-datagram path compares states through these plain names: looking a member up on an Enum class costs
# about 0.1 microsecond in Python 3.11, several times per datagram, and that adds up over 80,000 blocks.
_REQUESTING, _RUNNING, _COMPLETE, _FAILED = State.REQUESTING, State.RUNNING, State.COMPLETE, State.FAILED


class TransferFailed(Exception):
    """Why a transfer ended badly: the TFTP error code, its message, and whether the peer sent it."""

    def __init__(self, code: int, message: str, *, remote: bool, during_request: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.remote = remote
        self.during_request = during_request  # the server refused the request itself, before any transfer

    def __str__(self) -> str:
        # The peer's code is worth showing (it is what its log says); a local failure has no code anyone sent.
        return f"{self.message} (peer error {self.code})" if self.remote else self.message


def error_for_os_error(exc: OSError) -> tuple[ErrorCode, str]:
    """Map a file-system failure to the TFTP error that describes it best."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ErrorCode.DISK_FULL, ErrorCode.DISK_FULL.default_message
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ErrorCode.ACCESS_VIOLATION, ErrorCode.ACCESS_VIOLATION.default_message
    if exc.errno == errno.ENOENT:
        return ErrorCode.FILE_NOT_FOUND, ErrorCode.FILE_NOT_FOUND.default_message
    return ErrorCode.NOT_DEFINED, exc.strerror or str(exc)


class _Transfer:
    """What both halves share: the peer and its TID, the retransmission timer, and failing cleanly."""

    def __init__(self, peer: Address, settings: opts.Settings, now: float, request: Request | None) -> None:
        self.peer = peer
        self.settings = settings
        self.state = State.RUNNING if request is None else State.REQUESTING
        self.error: TransferFailed | None = None
        self.bytes_transferred = 0  # payload bytes delivered (receiver) or acknowledged (sender)
        self.progress_datagrams = 0  # the peer's datagrams that moved it forward: ACKs of new blocks, new DATA
        self._request = request
        self._retries = 0
        self.started_at = now
        # When the peer last moved the transfer forward; None until it first does. A server transfer that is
        # still None has never heard from its peer at all: its request may have come from a forged address.
        self.progressed_at: float | None = None
        self._deadline: float | None = self._next_deadline(now)
        self._last: list[bytes] = []  # what a timeout retransmits
        # Server, until the peer first answers: how many times the first packet went out, and when it last did
        # (see UNANSWERED_RETRIES). start() is the first time.
        self._unheard_sends = 1
        self._sent_at = now
        self._strangers: TokenBucket | None = None  # made at the first stranger: most transfers never meet one

    @property
    def deadline(self) -> float | None:
        """When ``tick`` must next be called; None once the transfer is over."""
        state = self.state
        return self._deadline if state is _RUNNING or state is _REQUESTING else None

    @property
    def finished(self) -> bool:
        state = self.state
        return state is _COMPLETE or state is _FAILED

    def start(self) -> list[Datagram]:
        """The first datagrams of the transfer: the request (client) or the first answer to it (server)."""
        return self._to_peer(self._last)

    def datagram_received(self, data: bytes, addr: Address, now: float) -> list[Datagram]:
        peer = self.peer
        if addr[1] != peer[1] or addr[0] != peer[0]:
            if self.state is _REQUESTING and addr[0] == peer[0]:
                self.peer = addr  # the first answer from the server's host fixes its TID
            else:
                return self._stranger(data, addr, now)
        state = self.state
        if state is _FAILED:
            return []
        if state is _RUNNING and len(data) >= 4 and data[0] == 0 and data[1] == self._bulk_opcode:
            # The fast path for the bulk of a transfer (DATA to a receiver, ACK to a sender): the block number
            # is read in place, because building a packet object per datagram costs more than the rest of the
            # step. Everything else, malformed packets included, takes the general path below.
            return self._on_bulk(data, now)
        try:
            packet = decode(data)
        except MalformedPacket as exc:
            return self._fail(ErrorCode.ILLEGAL_OPERATION, f"malformed packet: {exc}")
        if isinstance(packet, Error):
            if not self.finished:
                requesting = self.state == State.REQUESTING
                self.state = State.FAILED
                message = packet.message or packet.text
                self.error = TransferFailed(packet.code, message, remote=True, during_request=requesting)
            return []
        return self._handle(packet, now)

    def tick(self, now: float) -> list[Datagram]:
        """Retransmit after a timeout, or give up when the retries are spent or the transfer has stalled."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        if self._unheard():
            return self._tick_unheard(now)
        stall_limit = self.settings.stall_limit
        stalled = stall_limit is not None and now - self._progress_mark() >= stall_limit
        if stalled or self._retries >= self.settings.retries:
            if stalled:
                gone = f"made no progress for {stall_limit:g} s"
            else:
                gone = f"timed out after {self._retries} retransmissions"
            if self.state == State.REQUESTING:  # nobody answered, so there is nobody to tell
                return self._give_up_silently(f"no answer from the server: {gone}")
            return self._fail(ErrorCode.NOT_DEFINED, f"peer {gone}")
        self._retries += 1
        self._deadline = self._next_deadline(now)
        return self._to_peer(self._retransmission())

    def request_repeated(self, now: float) -> list[Datagram]:
        """Server: the client sent its request again, so our first packet may have been lost.

        Until the client has answered once, a repeat that comes at least one timeout after we last sent is
        treated like a new request: the first packet goes out again with a fresh budget
        (``UNANSWERED_RETRIES``). A repeat sooner than that is ignored, as our packet may still be on its way.
        So a flood of copies draws at most one packet per timeout, and each copy at most 1 + UNANSWERED_RETRIES
        (copies of a request are as easy to forge as the request, and answering each one was an amplifier:
        200 copies of a 10-byte RRQ drew 167 DATA packets, 86 KB). Refusing a repeat once the first budget was
        spent was worse: a real client whose first two packets were lost was never answered again, and curl
        failed after 40 s instead of recovering at its next retransmission. Once the client has answered, our
        own timer repairs losses and repeats are strays."""
        if not (self._unheard() and self.state is _RUNNING):
            return []
        if now - self._sent_at < self.settings.timeout:
            return []
        self._unheard_sends = 0  # a new request: _resend_first counts this send as its first
        return self._resend_first(now)

    def abort(self, message: str = "transfer cancelled") -> list[Datagram]:
        """Stop locally (Ctrl-C, shutdown, room made for a newcomer) and tell the peer; a finished transfer has
        nothing to abort. A server transfer whose peer never answered ends without a word, like one that gives
        up on it (``_tick_unheard``): its request may have been forged, and an ERROR to that address was one
        packet more per forged request when a flood evicts transfers to make room."""
        if self.finished:
            return []
        if self._unheard():
            return self._give_up_silently(message)
        return self._fail(ErrorCode.NOT_DEFINED, message)

    def fail(self, code: int, message: str) -> list[Datagram]:
        """End the transfer with an error even if the protocol completed: the server uses it when a complete
        upload cannot be stored, so that the client hears about it instead of a final ACK."""
        return self._fail(code, message)

    # -- what each half defines

    _bulk_opcode = -1  # the opcode of the packets a running transfer mostly receives, for the fast path

    def _on_bulk(self, data: bytes, now: float) -> list[Datagram]:
        """Handle a well-framed packet with the bulk opcode while running (DATA or ACK)."""
        raise NotImplementedError

    def _handle(self, packet: Any, now: float) -> list[Datagram]:
        """Handle any other decoded packet, errors excepted."""
        raise NotImplementedError

    def _retransmission(self) -> list[bytes]:
        """What a timeout sends again."""
        return self._last

    # -- helpers for both halves

    def _unheard(self) -> bool:
        """A server transfer whose peer has never answered: its request may have come from a forged address."""
        return self._request is None and self.progressed_at is None

    def _unheard_budget(self) -> int:
        """How many times the first packet may go to a peer that has never answered (see UNANSWERED_RETRIES)."""
        return 1 + min(self.settings.retries, UNANSWERED_RETRIES)

    def _give_up_at(self) -> float:
        """When a transfer whose peer never answered gives up: when it would have, had it kept retransmitting
        ((retries + 1) x timeout), or at the stall limit if that comes first."""
        settings = self.settings
        give_up_at = self.started_at + (settings.retries + 1) * settings.timeout
        stall_limit = settings.stall_limit
        return give_up_at if stall_limit is None else min(give_up_at, self.started_at + stall_limit)

    def _tick_unheard(self, now: float) -> list[Datagram]:
        """The timer of a transfer whose peer never answered: retransmit while the budget lasts, then wait in
        silence for a late answer, then give up without a word."""
        give_up_at = self._give_up_at()
        if now >= give_up_at:
            return self._give_up_silently(f"no answer from the client in {now - self.started_at:g} s")
        if self._unheard_sends < self._unheard_budget():
            return self._resend_first(now)
        self._deadline = give_up_at
        return []

    def _resend_first(self, now: float) -> list[Datagram]:
        """Send the first packet again to a peer that has not answered it, and count it against the budget."""
        self._unheard_sends += 1
        self._sent_at = now
        self._deadline = min(now + self.settings.timeout, self._give_up_at())
        return self._to_peer(self._last)

    def _give_up_silently(self, message: str) -> list[Datagram]:
        self.state = State.FAILED
        self.error = TransferFailed(ErrorCode.NOT_DEFINED, message, remote=False)
        return []

    def _progress_mark(self) -> float:
        """When the stall clock started: the last progress, or the start of the transfer."""
        progressed_at = self.progressed_at
        return self.started_at if progressed_at is None else progressed_at

    def _next_deadline(self, now: float) -> float:
        """The next retransmission, or the end of the stall limit if that comes first (off the per-block path:
        after progress the retransmission always comes first, since the server keeps timeouts within it)."""
        deadline = now + self.settings.timeout
        stall_limit = self.settings.stall_limit
        if stall_limit is not None:
            deadline = min(deadline, self._progress_mark() + stall_limit)
        return deadline

    def _stranger(self, data: bytes, addr: Address, now: float) -> list[Datagram]:
        """RFC 1350: "If a source TID does not match, the packet should be discarded as erroneously sent from
        somewhere else. An error packet should be sent to the source of the incorrect packet, while not
        disturbing the transfer." Errors are never answered with errors: two strangers could loop forever.

        And never more than ``STRANGER_ERRORS_BURST`` at once and ``STRANGER_ERRORS_PER_SECOND`` after: each
        answer goes wherever the stranger's forged source says, so a flood of datagrams at a transfer's port
        was a flood of ERRORs at someone else. One bucket per transfer, whoever the strangers are: a real
        misdirected client needs one answer, not one per datagram."""
        if data[:2] == _ERROR_OPCODE:
            return []
        strangers = self._strangers
        if strangers is None:
            strangers = self._strangers = TokenBucket(STRANGER_ERRORS_PER_SECOND, STRANGER_ERRORS_BURST, now)
        if not strangers.take(now):
            return []
        return [Datagram(Error(ErrorCode.UNKNOWN_TID).encode(), addr)]

    def _to_peer(self, packets: list[bytes]) -> list[Datagram]:
        peer = self.peer
        return [_datagram(_Datagram, (p, peer)) for p in packets]

    def _fail(self, code: int, message: str) -> list[Datagram]:
        self.state = State.FAILED
        self.error = TransferFailed(code, message, remote=False)
        return [Datagram(Error(code, message).encode(), self.peer)]

    def _fail_os(self, exc: OSError) -> list[Datagram]:
        return self._fail(*error_for_os_error(exc))

    def _illegal(self, packet: Any) -> list[Datagram]:
        return self._fail(ErrorCode.ILLEGAL_OPERATION, f"unexpected {type(packet).__name__} packet")

    def _negotiated(self, oack: OptionAck) -> list[Datagram] | None:
        """Client: adopt the server's OACK, or fail with ERROR 8 (returning what to send) if it is invalid."""
        assert self._request is not None
        try:
            self.settings = opts.accept_oack(self._request.options, oack.options, self.settings)
        except opts.NegotiationError as exc:
            return self._fail(exc.code, str(exc))
        return None

    def _fall_back(self) -> None:
        """Client: an answer without OACK means the server ignored every option: RFC 1350 defaults apply."""
        self.settings = replace(self.settings, blksize=opts.DEFAULT_BLKSIZE, windowsize=1, tsize=None)


class Sender(_Transfer):
    """Sends a file: DATA out, ACKs in. ``read(n)`` returns ``n`` bytes, fewer only at the end of the file."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        peer: Address,
        settings: opts.Settings,
        now: float,
        *,
        request: Request | None = None,
        oack: dict[str, str] | None = None,
    ) -> None:
        super().__init__(peer, settings, now, request)
        self._read = read
        # The window holds the blocks sent but not yet acknowledged, as (block, payload length, packet).
        self._window: deque[tuple[int, int, bytes]] = deque()
        self._base = 1  # the oldest unacknowledged block, counted without wrapping
        self._next = 1  # the next block to read from the file
        self._eof = False  # the last block has been read
        # Packets we may still resend before a timeout: earned by blocks acknowledged (see _may_resend_window).
        self._credit = settings.windowsize * _RESEND_CREDIT
        if request is not None:
            self._last = [request.encode()]
        elif oack:
            # The OACK is acknowledged by ACK 0, exactly like a block 0: treating it as one reuses the window
            # logic, its retransmission included.
            self._base = 0
            self._window.append((0, 0, OptionAck(oack).encode()))
            self._last = [self._window[0][2]]
        else:
            self._last = self._fill()

    def _handle(self, packet: Any, now: float) -> list[Datagram]:
        if self.state == State.COMPLETE:
            return []  # a duplicate of the final ACK
        if self.state == State.REQUESTING:
            if isinstance(packet, OptionAck):
                failed = self._negotiated(packet)
                if failed is not None:
                    return failed
            elif isinstance(packet, Ack) and packet.block == 0:
                self._fall_back()
            else:
                return self._illegal(packet)
            self.state = State.RUNNING  # the answer acknowledged the request as "block 0": send block 1 on
            self.progressed_at = now
            return self._advance(now)
        if isinstance(packet, Ack):
            return self._on_ack(packet.block, now)
        if isinstance(packet, OptionAck):
            return []  # a retransmitted OACK: our DATA will be retransmitted on our own timeout
        return self._illegal(packet)

    _bulk_opcode = int(Opcode.ACK)

    def _on_bulk(self, data: bytes, now: float) -> list[Datagram]:
        if len(data) != 4:
            return self._fail(ErrorCode.ILLEGAL_OPERATION, f"malformed packet: ACK of {len(data)} bytes")
        return self._on_ack(data[2] << 8 | data[3], now)

    def _on_ack(self, block: int, now: float) -> list[Datagram]:
        # Map the 16-bit number onto [base - 1, base - 1 + len(window)], the only ACKs that make sense.
        offset = (block - (self._base - 1)) & 0xFFFF
        if offset > len(self._window):
            return []  # older than the window, or for a block never sent: stale, ignore it
        if offset == 0:
            # A repeat of the ACK that opened this window. In lock-step mode it is a duplicate and answering
            # it would be the Sorcerer's Apprentice bug. With a window it means "the first block went
            # missing", so it earns one retransmission of the window, at most once per window of progress.
            if self.settings.windowsize == 1 or not self._may_resend_window():
                return []  # (a window's worth of duplicates answered in full was the old amplifier)
            self._deadline = self._next_deadline(now)
            return self._to_peer(self._resend_window())
        window = self._window
        sent_through = self._base + len(window) - 1  # the last block sent so far
        if offset == 1:  # the common case, and the only one in lock-step mode
            self.bytes_transferred += window.popleft()[1]
        else:
            for _ in range(offset):
                self.bytes_transferred += window.popleft()[1]
        self._base += offset
        self._credit = min(self._credit + _RESEND_CREDIT * offset, _RESEND_CREDIT * self.settings.windowsize)
        self._retries = 0
        self.progressed_at = now
        self.progress_datagrams += 1
        if not window and self._eof:
            self.state = _COMPLETE
            return []
        # An ACK short of the last block sent says the receiver saw a gap after it (RFC 7440: it acknowledges
        # the last block it got in order and starts a new window there), so the window restarts from it.
        gap = self._base <= sent_through
        return self._advance(now, restart=gap)

    def _advance(self, now: float, *, restart: bool = False) -> list[Datagram]:
        """Send the blocks new to the window after an ACK (or, to restart it after a gap, the whole window).

        Only the new ones: the others are in flight already. Resending the whole window on every ACK let a peer
        acknowledging one block at a time draw a window of DATA per ACK (64 ACKs, 1,024 DATA packets for 64 new
        blocks at windowsize 16)."""
        try:
            packets = self._fill()
        except OSError as exc:
            return self._fail_os(exc)
        if restart and self._may_resend_window():
            packets = self._resend_window()
        self._deadline = now + self.settings.timeout
        peer = self.peer
        return [_datagram(_Datagram, (packet, peer)) for packet in packets]

    def _may_resend_window(self) -> bool:
        """Whether an ACK may make us resend the window before our timeout: only while the peer has paid for
        it. Each block acknowledged earns ``_RESEND_CREDIT`` packets of credit (at most that many windows are
        saved up), and an early resend spends one per packet. So what a peer can draw by its ACKs, however it
        orders them, is at most 1 + ``_RESEND_CREDIT`` packets per block it acknowledges, plus the credit saved
        up; the resends of our own timeouts come on our clock, not the peer's."""
        return self._credit >= len(self._window)

    def _resend_window(self) -> list[bytes]:
        """Every packet in the window, paid from the credit (see _may_resend_window)."""
        window = self._window
        self._credit -= len(window)
        return [packet for _, _, packet in window]

    def _retransmission(self) -> list[bytes]:
        # After a timeout, the whole window: which of its blocks got through is unknown. Before the peer's first
        # answer (the request or the first packet, see UNANSWERED_RETRIES) the window may still be empty.
        window = self._window
        return [packet for _, _, packet in window] if window else self._last

    def _fill(self) -> list[bytes]:
        """Top the window up from the file; return the packets it added (the ones to send)."""
        # Runs once per block: names are bound locally and the header is packed here rather than through
        # encode_data, which saves a few tenths of a microsecond of a step that takes a few microseconds.
        window, read, block = self._window, self._read, self._next
        settings = self.settings
        windowsize, blksize = settings.windowsize, settings.blksize
        added = []
        while len(window) < windowsize and not self._eof:
            payload = read(blksize)
            size = len(payload)
            self._eof = size < blksize  # a short block, even an empty one, ends the file
            packet = _pack_header(_DATA_OPCODE, block & 0xFFFF) + payload
            window.append((block, size, packet))
            added.append(packet)
            block += 1
            self._next = block  # kept current: a failing read must not leave a block counted twice
        return added


class Receiver(_Transfer):
    """Receives a file: DATA in, ACKs out, payloads handed to ``write`` in order.

    ``limit`` caps the bytes accepted (ERROR 3 beyond it): an upload cannot fill the disk by lying in tsize.

    The negotiated tsize (RFC 2349) bounds the data too, and a transfer that ends short of it fails, but only
    where it is a size on the wire: when it is above 0 and the mode is octet. On a write request ``tsize 0``
    means "size unknown" (curl sends it for ``-T -``, a stream), and in ``netascii`` the size announced is the
    one on disk (atftp announces it), while the wire carries more, since every LF travels as CR LF.
    ``netascii`` says which mode this transfer is in.
    """

    def __init__(
        self,
        write: Callable[[bytes], object],
        peer: Address,
        settings: opts.Settings,
        now: float,
        *,
        request: Request | None = None,
        oack: dict[str, str] | None = None,
        limit: int | None = None,
        netascii: bool = False,
    ) -> None:
        super().__init__(peer, settings, now, request)
        self._write = write
        self._limit = limit
        self._netascii = netascii
        self._expected = 1  # the next block wanted, counted without wrapping
        self._unacked = 0  # blocks received in order since the last ACK we sent
        self._strays = 0  # blocks received out of order since the last in-order one
        if request is not None:
            self._last = [request.encode()]
        else:
            self._last = [OptionAck(oack).encode() if oack else encode_ack(0)]

    def _handle(self, packet: Any, now: float) -> list[Datagram]:
        if self.state == State.COMPLETE:
            # Our final ACK may have been lost: if the sender repeats its last block, acknowledge it again.
            if isinstance(packet, Data) and packet.block == (self._expected - 1) & 0xFFFF:
                return self._to_peer(self._last)
            return []
        if self.state == State.REQUESTING:
            if isinstance(packet, OptionAck):
                failed = self._negotiated(packet)
                if failed is not None:
                    return failed
                self.state = State.RUNNING
                self.progressed_at = now
                self._last = [encode_ack(0)]
                self._deadline = now + self.settings.timeout
                return self._to_peer(self._last)
            if not isinstance(packet, Data):
                return self._illegal(packet)
            self._fall_back()
            self.state = State.RUNNING
        if isinstance(packet, Data):
            return self._on_data(packet.block, packet.payload, now)
        if isinstance(packet, OptionAck) and self._expected == 1 and self._request is not None:
            return self._to_peer(self._last)  # the server did not get our ACK 0 and repeated its OACK
        return self._illegal(packet)

    _bulk_opcode = int(Opcode.DATA)

    def _on_bulk(self, data: bytes, now: float) -> list[Datagram]:
        return self._on_data(data[2] << 8 | data[3], data[4:], now)

    def _on_data(self, block: int, payload: bytes, now: float) -> list[Datagram]:
        settings = self.settings
        size = len(payload)
        if size > settings.blksize:
            message = f"block of {size} bytes exceeds blksize {settings.blksize}"
            return self._fail(ErrorCode.ILLEGAL_OPERATION, message)
        if block != self._expected & 0xFFFF:
            return self._on_stray(block)
        if self._limit is not None and self.bytes_transferred + size > self._limit:
            return self._fail(ErrorCode.DISK_FULL, f"transfer exceeds the limit of {self._limit} bytes")
        tsize = settings.tsize  # a bound only when above 0 and in octet mode (see the class docstring)
        if tsize and not self._netascii:
            received = self.bytes_transferred + size
            if received > tsize:
                return self._beyond_tsize(tsize)
            if size < settings.blksize and received != tsize:
                return self._short_of_tsize(tsize, received)
        try:
            self._write(payload)
        except OSError as exc:
            return self._fail_os(exc)
        self.bytes_transferred += size
        self._expected += 1
        self._strays = 0
        self._retries = 0
        self.progressed_at = now
        self.progress_datagrams += 1
        self._deadline = now + settings.timeout
        self._unacked += 1
        if size < settings.blksize:
            self.state = _COMPLETE
        elif self._unacked < settings.windowsize:
            return []
        self._unacked = 0
        self._last = [encode_ack(block)]
        return self._to_peer(self._last)

    def _beyond_tsize(self, tsize: int) -> list[Datagram]:
        """More data than the size announced in the negotiation (RFC 2349 tsize): the peer lied or its file
        changed under it. A server refuses the excess as the allocation exceeded (ERROR 3), so an upload cannot
        fill the disk past what it announced; a client stops rather than keep a file that is not what was
        announced (its download is then removed, as any failed one)."""
        if self._request is None:
            return self._fail(ErrorCode.DISK_FULL, f"upload exceeds its announced tsize of {tsize} bytes")
        return self._fail(ErrorCode.ILLEGAL_OPERATION, f"server sent more than its announced tsize of {tsize} bytes")

    def _short_of_tsize(self, tsize: int, received: int) -> list[Datagram]:
        """The last block came before the size announced in the negotiation (RFC 2349 tsize): blocks went
        missing on the way (curl, under loss, went on past a lost block) or the file shrank while it was sent.
        Either way what arrived is not the file that was announced, and storing it as complete would keep a
        truncated file as if it were whole: fail (nothing is stored, as for any failed transfer) and say why."""
        message = f"transfer ended after {received} bytes, short of its announced tsize of {tsize} bytes"
        return self._fail(ErrorCode.NOT_DEFINED, message)

    def _retransmission(self) -> list[bytes]:
        # After a silence, acknowledge the last block received in order, acknowledged yet or not (RFC 7440):
        # the sender resumes right after it.
        if self.state == State.RUNNING and self._expected > 1:
            return [encode_ack((self._expected - 1) & 0xFFFF)]
        return self._last

    def _on_stray(self, block: int) -> list[Datagram]:
        """A block that is not the next one: an old duplicate, or a jump ahead because one went missing."""
        windowsize = self.settings.windowsize
        behind = (self._expected - 1 - block) & 0xFFFF < 0x8000
        if behind:
            # In lock-step mode a repeated block means our ACK was lost: repeat it (RFC 1350). In a window a
            # duplicate says nothing new, and answering each one would make the sender resend its window for
            # blocks already in flight; a lost ACK is repaired by our own timeout instead.
            return self._to_peer(self._last) if windowsize == 1 else []
        # A gap: acknowledge the last block we have so the sender resumes right after it (RFC 7440), but only
        # once per window's worth of strays, so that the rest of a broken window does not become a burst of
        # ACKs.
        first_stray = self._strays % windowsize == 0
        self._strays += 1
        if not first_stray:
            return []
        # A new window starts after the block acknowledged (RFC 7440), as the sender restarts its window there:
        # counting on from the old one would put our next ACK in the middle of the sender's window, where it
        # reads as another gap.
        self._unacked = 0
        return self._to_peer([encode_ack((self._expected - 1) & 0xFFFF)])
