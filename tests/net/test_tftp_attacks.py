"""The TFTP server against an attacker's audit (run against ``tftp serve --allow-upload`` with the defaults).

1. A request that is refused never evicts another client's transfer: it is checked, and its file opened, before
   any transfer gives way to it.
2. A source that never answers gets a bounded rate of answers (first packets and ERRORs), however many distinct
   requests it sends: a forged source drew a 516-byte DATA 1 for every 10-byte request, at any rate.
3. A transfer that trickles (one 8-byte block every 8 s) gives way to a newcomer when the server is full.
4. Window memory is bounded per transfer and across the server: the OACK grants a smaller windowsize.
5. A windowed sender answers a forward ACK with the new blocks only, not the whole window again.
7. ERROR 5 to strangers is rate-limited per transfer.
8. Refused and malformed requests are logged per kind at most once per interval, with a count.
"""

from __future__ import annotations

import io
import logging
import select
import socket
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from server.net.ratelimit import BucketTable, TokenBucket
from server.net.tftp import options as opts
from server.net.tftp import server as server_module
from server.net.tftp import transfer as transfer_module
from server.net.tftp.client import TftpClient, TransferFailed
from server.net.tftp.packets import Data, Error, ErrorCode, OptionAck, ReadRequest, WriteRequest, decode, encode_ack
from server.net.tftp.transfer import Sender

from .test_tftp_abuse import Peer, peers, poll, running_server  # noqa: F401  (peers is a fixture)

RRQ = ReadRequest
PEER = ("127.0.0.1", 40000)


def _queued(sock: socket.socket) -> list[object]:
    """Every packet waiting on ``sock``, without waiting for more."""
    packets = []
    while select.select([sock], [], [], 0)[0]:
        packets.append(decode(sock.recv(65536)))
    return packets


def _settled(server, peers) -> None:  # noqa: F811
    """Wait until the server has handled everything sent before: a request from another address is answered
    only after the ones queued before it (one socket, read in order), and on loopback an answer is queued at
    the peer by the time ``sendto`` returns."""
    probe = Peer("127.0.0.254")
    peers.append(probe)
    probe.send(RRQ("no such file"), server.address)
    assert probe.recv()[0] == Error(ErrorCode.FILE_NOT_FOUND, "File not found")


# -- 1. a refused request evicts nobody


@pytest.mark.parametrize(
    "request_",
    [RRQ("missing.bin"), WriteRequest("new.bin"), RRQ("f.bin", "mail"), RRQ("/etc/passwd")],
    ids=["missing file", "upload not allowed", "mail mode", "absolute path"],
)
def test_a_refused_request_evicts_no_transfer(tftp_root, peers, request_):  # noqa: F811
    (tftp_root / "f.bin").write_bytes(b"f" * 2000)
    with running_server(tftp_root, max_transfers=1, timeout=5.0) as server:
        holder, attacker = Peer("127.0.0.20"), Peer("127.0.0.21")
        peers.extend((holder, attacker))
        holder.send(RRQ("f.bin"), server.address)
        assert isinstance(holder.recv()[0], Data)  # its transfer has not heard from it: the first to give way
        attacker.send(request_, server.address)
        packet, _ = attacker.recv()
        assert isinstance(packet, Error) and packet.code != ErrorCode.NOT_DEFINED, packet  # refused for itself
        assert server.transfers_from("127.0.0.20") == 1  # and the holder's transfer is still there
        holder.send(encode_ack(1), server.address)  # (to the wrong port: answered with ERROR 5, nothing else)
        assert server.transfer_count == 1


def test_a_refused_request_at_its_sources_limit_evicts_none_of_its_transfers(tftp_root, peers):  # noqa: F811
    (tftp_root / "f.bin").write_bytes(b"f" * 2000)
    with running_server(tftp_root, max_transfers_per_source=1, timeout=5.0) as server:
        first, second = Peer("127.0.0.22"), Peer("127.0.0.22")
        peers.extend((first, second))
        first.send(RRQ("f.bin"), server.address)
        assert isinstance(first.recv()[0], Data)
        second.send(RRQ("missing.bin"), server.address)
        assert second.recv()[0] == Error(ErrorCode.FILE_NOT_FOUND, "File not found")
        assert server.transfers_from("127.0.0.22") == 1
        assert not _queued(first.sock)  # not dropped (silently, as a peer that never answered would be)


# -- 2. a source that never answers gets a bounded rate of answers


@pytest.mark.parametrize("refused", [False, True], ids=["first packets", "errors"])
def test_a_silent_source_gets_a_bounded_number_of_answers_however_many_requests(tftp_root, peers, refused):  # noqa: F811
    names = [f"f{i}.bin" for i in range(60)]
    for name in names:
        (tftp_root / name).write_bytes(b"a" * 2000)
    burst, rate = 16, 2.0  # the defaults
    with running_server(tftp_root, timeout=5.0) as server:  # no retransmission within the test
        victim = Peer("127.0.0.30")
        peers.append(victim)
        started = time.monotonic()
        for name in names:  # distinct requests: each would be a new transfer
            victim.send(RRQ("/" + name if refused else name), server.address)
        _settled(server, peers)
        elapsed = time.monotonic() - started
        answers = _queued(victim.sock)
    assert answers, "the first requests are answered"
    kind = Error if refused else Data
    assert all(isinstance(answer, kind) for answer in answers), answers
    assert len(answers) <= burst + rate * elapsed + 1, (len(answers), elapsed)  # was 60


def test_a_client_that_answers_gets_its_tokens_back_and_is_never_slowed(tftp_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.net.tftp")
    (tftp_root / "f.bin").write_bytes(b"c" * 700)
    with running_server(tftp_root, timeout=5.0) as server:
        client = TftpClient("127.0.0.1", server.address[1], timeout=5.0)
        for i in range(40):  # far beyond the burst of 16
            client.download("f.bin", tmp_path / f"{i}.bin")
    assert not [r for r in caplog.records if "budget" in r.getMessage()]


@given(
    steps=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 2.0), st.booleans()), max_size=200),
    rate=st.floats(0.1, 10.0),
    burst=st.integers(1, 20),
)
def test_a_key_never_takes_more_than_its_burst_plus_its_rate(steps, rate, burst):
    """Whatever the order and timing of requests, over any stretch of time a key gets at most ``burst`` plus
    ``rate`` per second (the table has room for every key, so none is forgotten early); and a take never fails
    while a key has a token."""
    table = BucketTable(rate, float(burst), max_keys=4)
    now = 0.0
    granted: dict[int, list[float]] = {}
    for key, pause, _ in steps:
        now += pause
        if table.take(key, now):
            granted.setdefault(key, []).append(now)
    for times in granted.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6


@given(st.lists(st.floats(0, 5.0), max_size=100), st.floats(0.1, 10.0), st.integers(1, 10))
def test_a_bucket_refills_to_its_burst_and_no_further(pauses, rate, burst):
    bucket = TokenBucket(rate, float(burst), 0.0)
    now = 0.0
    for pause in pauses:
        now += pause
        bucket.take(now)
        assert 0 <= bucket.tokens <= burst
    bucket.refill(now + burst / rate)
    assert bucket.tokens == pytest.approx(burst)


# -- 8. refusals are logged per kind, at most once per interval


def test_a_flood_of_refused_requests_is_a_few_log_lines_with_a_count(tftp_root, peers, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="server.net.tftp")
    interval = 0.3
    with running_server(tftp_root, log_interval=interval, new_transfer_burst=1000) as server:
        flood = [Peer(f"127.0.0.{40 + i % 10}") for i in range(10)]
        peers.extend(flood)
        started = time.monotonic()
        for i in range(200):
            flood[i % 10].send(RRQ(f"missing{i}"), server.address)
        for peer in flood:
            for _ in range(20):
                assert peer.recv()[0].code == ErrorCode.FILE_NOT_FOUND  # every one still answered
        elapsed = time.monotonic() - started

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]

        def counted() -> int:  # a line for one request, or "N requests ..." for N of them
            return sum(int(line.split()[0]) if " requests " in line else 1 for line in lines())

        poll(lambda: counted() == 200, 5.0, "every refusal counted in the log")
    assert "refused: File not found" in lines()[0]  # the first at once, as it always was
    # Then one line per interval at most, however the flood fell across intervals (was 200 lines).
    assert len(lines()) <= 3 + elapsed / interval, lines()


# -- 3. a trickle is not progress enough to keep a slot others wait for


def _trickle(peer: Peer, server) -> tuple:
    """Start a download with 8-byte blocks and a 10 s timeout, and acknowledge its first block: a transfer
    that is never overdue if it acknowledges a block every 8 s."""
    peer.send(RRQ("f.bin", "octet", {"blksize": "8", "timeout": "10"}), server.address)
    packet, tid = peer.recv()
    assert packet == OptionAck({"blksize": "8", "timeout": "10"})
    peer.send(encode_ack(0), tid)
    assert peer.recv()[0] == Data(1, b"t" * 8)
    peer.send(encode_ack(1), tid)
    assert peer.recv()[0] == Data(2, b"t" * 8)
    return tid


def test_when_full_a_transfer_below_the_minimum_rate_gives_way(tftp_root, tmp_path, peers, monkeypatch):  # noqa: F811
    # The rule's clock shortened from 10 s to nothing, and a floor no transfer meets: both tricklers are "too
    # slow" from the first moment, which is what an 8-byte block every 8 s is after 10 s at the real floor.
    monkeypatch.setattr(server_module, "_RATE_GRACE", 0.0)
    monkeypatch.setattr(server_module, "_RATE_WINDOW", 0.0)
    (tftp_root / "f.bin").write_bytes(b"t" * 2000)
    with running_server(tftp_root, max_transfers=2, timeout=5.0, min_rate=1e12) as server:
        tricklers = [Peer("127.0.0.60"), Peer("127.0.0.61")]
        peers.extend(tricklers)
        for peer in tricklers:
            _trickle(peer, server)
        TftpClient("127.0.0.1", server.address[1], timeout=5.0).download("f.bin", tmp_path / "f.bin")  # was "busy"
        assert (tmp_path / "f.bin").read_bytes() == b"t" * 2000
        told = [packet for peer in tricklers for packet in _queued(peer.sock) if isinstance(packet, Error)]
        assert told == [Error(ErrorCode.NOT_DEFINED, "transfer dropped to make room: too slow")]
        poll(lambda: server.transfer_count == 1, 5.0, "the download's slot released, one trickler left")


def test_a_transfer_at_the_minimum_rate_is_never_dropped_for_a_newcomer(tftp_root, tmp_path, peers, monkeypatch):  # noqa: F811
    monkeypatch.setattr(server_module, "_RATE_GRACE", 0.0)
    monkeypatch.setattr(server_module, "_RATE_WINDOW", 0.0)
    (tftp_root / "f.bin").write_bytes(b"t" * 2000)
    with running_server(tftp_root, max_transfers=1, timeout=5.0, min_rate=0.001) as server:
        holder = Peer("127.0.0.62")
        peers.append(holder)
        _trickle(holder, server)
        with pytest.raises(TransferFailed, match="server busy"):
            TftpClient("127.0.0.1", server.address[1], timeout=5.0).download("f.bin", tmp_path / "f.bin")
        assert server.transfers_from("127.0.0.62") == 1


class _Machine:
    """What ``_idleness`` reads of a transfer's machine."""

    def __init__(self, started: float, timeout: float) -> None:
        self.started_at = started
        self.progressed_at: float | None = started
        self.bytes_transferred = 0
        self.progress_datagrams = 0
        self.settings = opts.Settings(timeout=timeout)


def _steady(rate: float, blksize: int, scans: list[float], timeout: float) -> tuple[server_module._Active, float]:
    """A transfer whose peer moves ``rate`` bytes a second in blocks of ``blksize``, one datagram per block,
    the timers scanned after each gap in ``scans``; it and the time at the end."""
    machine = _Machine(0.0, timeout)
    active = server_module._Active(None, machine, RRQ("f"), ("127.0.0.1", 1), None, 0.0, None)  # type: ignore[arg-type]
    now = 0.0
    for gap in scans:
        now += gap
        machine.bytes_transferred = int(rate * now)
        machine.progress_datagrams = machine.bytes_transferred // blksize
        machine.progressed_at = now  # acknowledged just now: never overdue
        server_module._roll_rate(active, now)
    return active, now


@given(
    rate=st.floats(0.0, 2000.0),
    scans=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=60),  # the gaps between timer scans
    timeout=st.floats(1.0, 10.0),
)
def test_a_transfer_gives_way_for_slowness_exactly_when_its_recent_rate_is_below_the_floor(rate, scans, timeout):
    """A transfer moving ``rate`` bytes a second, acknowledged within its timeout (so never overdue), is ranked
    to give way for slowness if and only if it is past the grace period and ``rate`` is below ``min_rate``,
    however often the timers are scanned: the rate is measured over at least one window, so it is exact for a
    steady transfer (up to the one byte a whole number of bytes can lose)."""
    min_rate = 256.0
    active, now = _steady(rate, 1, scans, timeout)  # 1-byte blocks: the datagrams are no bound
    rank = server_module._idleness(active, now, min_rate)
    if now < server_module._RATE_GRACE:
        assert rank is None
        return
    measured = server_module._rate(active, now)
    assert measured is not None and abs(measured - rate) <= 1.0 / server_module._RATE_WINDOW + 1e-9
    if rate >= min_rate + 1:
        assert rank is None
    elif rate <= min_rate - 1:
        assert rank == (server_module._SLOW, measured)


# One datagram more or fewer over a window of at least _RATE_WINDOW seconds, and the one byte a whole number
# of bytes can lose: how far a measured rate may be from the steady rate it measures.
_ROUNDING = (server_module._FLOOR_BLOCK + 1) / server_module._RATE_WINDOW + 1e-6


@given(
    datagram_rate=st.floats(0.01, 5.0),
    blksize=st.integers(8, 65464),
    scans=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=60),
    timeout=st.floats(1.0, 10.0),
)
@example(datagram_rate=1 / 9.9, blksize=8192, scans=[9.9] * 4, timeout=10.0)  # the review's 827 B/s trickle
def test_a_big_block_size_buys_no_slot(datagram_rate, blksize, scans, timeout):
    """Counted in bytes, one ACK of an 8 KiB block every 9.9 s (timeout 10) made 827 B/s and never gave way:
    32 sources x 8 of them held every slot for 0.1 datagram a second each. Each of the peer's datagrams now
    counts for at most 512 bytes, so whatever its block size, a transfer gives way for slowness when its
    datagrams are too few to make ``min_rate`` at 512 bytes each, and only when it moves too little."""
    min_rate = 256.0
    active, now = _steady(datagram_rate * blksize, blksize, scans, timeout)
    rank = server_module._idleness(active, now, min_rate)
    if now < server_module._RATE_GRACE:
        assert rank is None
        return
    effective = datagram_rate * min(blksize, server_module._FLOOR_BLOCK)
    if effective <= min_rate - _ROUNDING:
        assert rank is not None and rank[0] == server_module._SLOW, (rank, effective)
    elif effective >= min_rate + _ROUNDING:
        assert rank is None, (rank, effective)


@given(
    slow=st.floats(0.0, 256.0 - 52.0),
    slow_blksize=st.integers(8, 65464),
    slow_overdue=st.floats(0.0, 30.0),
    fast=st.floats(256.0 + 52.0, 100_000.0),
    fast_overdue=st.floats(0.0, 30.0),
    timeouts=st.tuples(st.floats(1.0, 10.0), st.floats(1.0, 10.0)),
    scans=st.lists(st.floats(0.5, 10.0), min_size=3, max_size=40).filter(lambda gaps: sum(gaps) >= 10.0),
)
# The review's pair: a lock-step client on a lossy link (358 B/s, one round lost just now, timeout 1) and a
# trickler that negotiated timeout 10 and acknowledges in time. The lossy client used to go first.
@example(
    slow=51.0, slow_blksize=8192, slow_overdue=0.0, fast=358.0, fast_overdue=1.0, timeouts=(10.0, 1.0), scans=[5.0] * 6
)
def test_a_transfer_meeting_the_floor_never_gives_way_ahead_of_one_below_it(
    slow, slow_blksize, slow_overdue, fast, fast_overdue, timeouts, scans
):
    """Whoever is overdue and by how much: a transfer moving at least ``min_rate`` ranks after (gives way
    later than) every transfer below it, and one below it always may give way."""
    min_rate = 256.0
    below, now = _steady(slow, slow_blksize, scans, timeouts[0])
    meeting, _ = _steady(fast, 512, scans, timeouts[1])
    below.machine.progressed_at = now - slow_overdue
    meeting.machine.progressed_at = now - fast_overdue
    below_rank = server_module._idleness(below, now, min_rate)
    meeting_rank = server_module._idleness(meeting, now, min_rate)
    assert below_rank is not None and below_rank[0] == server_module._SLOW
    assert meeting_rank is None or meeting_rank > below_rank, (meeting_rank, below_rank)


# -- 4. window memory has a bound per transfer and one for the server

BIG = 65464 + 4  # one DATA packet of the largest blksize


def _windowed(peer: Peer, server, blksize: int = 65464) -> tuple[int, tuple]:
    """Ask for blocks of ``blksize`` and a window of 64; the windowsize granted, and the TID."""
    peer.send(RRQ("big.bin", "octet", {"blksize": str(blksize), "windowsize": "64"}), server.address)
    packet, tid = peer.recv()
    assert isinstance(packet, OptionAck), packet
    return int(packet.options["windowsize"]), tid


def test_one_transfers_window_is_at_most_a_mebibyte(tftp_root, peers):  # noqa: F811
    (tftp_root / "big.bin").write_bytes(bytes(200_000))
    with running_server(tftp_root, timeout=5.0) as server:
        peer = Peer("127.0.0.70")
        peers.append(peer)
        granted, _ = _windowed(peer, server)
    # At most 16 blocks, 1 MiB; fewer where the system caps socket buffers lower (buffers.fit_window). Before, the
    # socket buffers were the only bound: 63 blocks here (net.core.rmem_max 4 MiB).
    assert granted <= 1024 * 1024 // BIG == 16


def test_the_servers_window_budget_shrinks_later_windows_and_comes_back(tftp_root, peers):  # noqa: F811
    (tftp_root / "big.bin").write_bytes(bytes(200_000))
    # Blocks of 1 KiB: 16 of them fit in any system's default socket buffers, so only the budget decides.
    block = 1024 + 4
    config = {"timeout": 5.0, "window_budget": 40 * block, "max_window_bytes": 16 * block}
    with running_server(tftp_root, **config) as server:
        clients = [Peer(f"127.0.0.{71 + i}") for i in range(4)]
        peers.extend(clients)
        granted = [_windowed(peer, server, 1024) for peer in clients]
        assert [size for size, _ in granted] == [16, 16, 8, 1]  # lock-step is always granted
        for peer, (_, tid) in zip(clients, granted, strict=True):
            peer.send(Error(ErrorCode.NOT_DEFINED, "done"), tid)
        poll(lambda: server.transfer_count == 0, 5.0, "every transfer ended")
        assert server._window_memory == 0
        assert _windowed(clients[0], server, 1024)[0] == 16  # the budget is whole again


@given(
    requests=st.lists(
        st.tuples(st.integers(8, 65464), st.integers(1, 65535), st.booleans()), max_size=40
    ),  # blksize, windowsize, and whether an earlier transfer ends first
    budget=st.integers(0, 8 * 1024 * 1024),
    cap=st.integers(0, 2 * 1024 * 1024),
)
def test_granted_windows_stay_within_the_budget_and_the_cap(budget_server, requests, budget, cap):
    """Whatever windows are asked for: each grant is at least one block and at most the request; beyond one
    block, no window exceeds ``max_window_bytes`` and the windows together never exceed ``window_budget``."""
    server = budget_server
    server.window_budget, server.max_window_bytes, server._window_memory = budget, cap, 0
    held: list[tuple[int, int]] = []  # (bytes held, bytes beyond the always-granted first block)
    for blksize, windowsize, release in requests:
        if release and held:
            server._window_memory -= held.pop(0)[0]
        settings = server._grant_window(opts.Settings(blksize=blksize, windowsize=windowsize))
        assert 1 <= settings.windowsize <= windowsize and settings.blksize == blksize
        size = settings.windowsize * (blksize + 4)
        if settings.windowsize > 1:
            assert size <= cap
        held.append((size, size - (blksize + 4)))
        server._window_memory += size
        assert sum(extra for _, extra in held) <= max(0, budget)


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory):
    """One idle server for every example (its loop never runs): only its window book-keeping is used."""
    server = server_module.TftpServer(tmp_path_factory.mktemp("w"), "127.0.0.1", 0)
    yield server
    server.close()


# -- 5. a forward ACK draws the new blocks, not the whole window again


def _through(peer: Peer, last: int) -> list:
    """The packets that arrive on ``peer`` up to and including DATA ``last``."""
    packets = [peer.recv()[0]]
    while packets[-1].block != last:  # type: ignore[attr-defined]
        packets.append(peer.recv()[0])
    return packets


def test_acknowledging_one_block_at_a_time_draws_no_window_per_ack(tftp_root, peers):  # noqa: F811
    (tftp_root / "big.bin").write_bytes(bytes(512 * 200))
    with running_server(tftp_root, timeout=5.0) as server:
        peer = Peer("127.0.0.80")
        peers.append(peer)
        peer.send(RRQ("big.bin", "octet", {"windowsize": "16"}), server.address)
        packet, tid = peer.recv()
        assert packet == OptionAck({"windowsize": "16"})
        peer.send(encode_ack(0), tid)
        drawn = _through(peer, 16)
        assert [p.block for p in drawn] == list(range(1, 17))
        for block in range(1, 65):  # each ACK one block further than the last
            peer.send(encode_ack(block), tid)
            drawn += _through(peer, block + 16)  # whatever it draws, the window's new end comes last
    resend_credit = transfer_module._RESEND_CREDIT
    assert len(drawn) <= 16 + 64 * (1 + resend_credit) + 16 * resend_credit, len(drawn)  # was 16 + 64 x 16


@given(
    # Each ACK relative to the window: 0 repeats the ACK that opened it, 1..windowsize acknowledge part or all
    # of it, the rest are stale or for blocks never sent: every kind of ACK, in any order.
    acks=st.lists(st.one_of(st.integers(0, 2), st.integers(-3, 35)), max_size=300),
    windowsize=st.integers(2, 32),
)
@example(acks=[1] * 64, windowsize=16)  # the audit's: each ACK one block further than the last
def test_what_acks_can_draw_is_bounded_by_the_blocks_they_acknowledge(acks, windowsize):
    """Whatever ACKs a peer sends, in any order, repeated or stale: the DATA packets they draw (no timeout
    fires) are at most the first window, one per block acknowledged, and the resend credit: the credit saved
    at the start and what each acknowledged block earns."""
    settings = opts.Settings(windowsize=windowsize, timeout=1.0)
    sender = Sender(io.BytesIO(bytes(512 * 400)).read, PEER, settings, 0.0, oack={"windowsize": str(windowsize)})
    sender.start()  # the OACK
    drawn = 0
    for offset in [1, *acks]:  # the first acknowledges the OACK (block 0)
        block = (sender._base - 1 + offset) & 0xFFFF
        drawn += len(sender.datagram_received(encode_ack(block), PEER, 0.5))
    acknowledged = sender._base - 1
    credit = transfer_module._RESEND_CREDIT
    assert drawn <= windowsize + acknowledged + credit * (windowsize + acknowledged)


# -- 7. ERROR 5 to strangers is rate-limited per transfer


def test_a_flood_at_a_transfers_port_draws_a_bounded_number_of_error_5(tftp_root, peers):  # noqa: F811
    (tftp_root / "f.bin").write_bytes(b"s" * 2000)
    with running_server(tftp_root, timeout=5.0) as server:
        client, stranger = Peer("127.0.0.90"), Peer("127.0.0.91")
        peers.extend((client, stranger))
        client.send(RRQ("f.bin"), server.address)
        packet, tid = client.recv()
        assert isinstance(packet, Data)
        started = time.monotonic()
        for _ in range(200):
            stranger.send(encode_ack(1), tid)
        client.send(encode_ack(1), tid)  # read after the flood, from the same socket
        assert client.recv()[0] == Data(2, b"s" * 512)  # the transfer is undisturbed
        elapsed = time.monotonic() - started
        errors = _queued(stranger.sock)
    assert errors and all(e == Error(ErrorCode.UNKNOWN_TID, "Unknown transfer ID") for e in errors)
    bound = transfer_module.STRANGER_ERRORS_BURST + transfer_module.STRANGER_ERRORS_PER_SECOND * elapsed
    assert len(errors) <= bound + 1, (len(errors), elapsed)  # was 200


@given(pauses=st.lists(st.floats(0, 3.0), max_size=100))
def test_error_5_to_strangers_never_exceeds_the_burst_plus_the_rate(pauses):
    sender = Sender(io.BytesIO(bytes(2000)).read, PEER, opts.Settings(timeout=1.0), 0.0)
    sender.start()
    now, answered = 0.0, []
    for pause in pauses:
        now += pause
        if sender.datagram_received(encode_ack(1), ("127.0.0.1", 9), now):
            answered.append(now)
    burst, rate = transfer_module.STRANGER_ERRORS_BURST, transfer_module.STRANGER_ERRORS_PER_SECOND
    for i, first in enumerate(answered):
        for j in range(i, len(answered)):
            assert j - i + 1 <= burst + rate * (answered[j] - first) + 1e-9
    assert not sender.finished  # strangers never disturb the transfer
