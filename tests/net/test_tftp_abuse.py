"""The TFTP server against hostile input: absurd options, special files, floods of requests that never finish.

Each test is the regression test of a finding measured on the server: it failed before the fix it names.
Everything runs over real sockets on loopback, port 0. Linux routes the whole of 127.0.0.0/8 to the loopback
interface, so binding 127.0.0.x stands in for many client hosts (or for spoofed source addresses) without a
network. Every socket has a timeout and every wait polls against a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.net.tftp import options as opts
from server.net.tftp.client import TftpClient
from server.net.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    decode,
    encode_ack,
    encode_data,
)
from server.net.tftp.server import TftpServer, source_key
from server.net.tftp.transfer import Receiver, Sender, State

from .conftest import ROOT

HUGE = "9" * 5000  # more digits than Python's int() converts (4,300): it used to escape as an internal error
KNOWN_OPTIONS = ("blksize", "tsize", "timeout", "windowsize")
PEER = ("127.0.0.1", 40000)


@contextlib.contextmanager
def running_server(root: Path, **kwargs: object) -> Iterator[TftpServer]:
    """A TftpServer on 127.0.0.1, port 0, in a thread; for tests that cannot take function-scoped fixtures."""
    server = TftpServer(root, "127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive(), "TFTP server thread did not stop"


class Peer:
    """A bare UDP socket bound to a chosen loopback address, speaking TFTP by hand."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout)

    def send(self, packet: object, addr: tuple) -> None:
        self.sock.sendto(packet if isinstance(packet, bytes) else packet.encode(), addr)  # type: ignore[attr-defined]

    def recv(self) -> tuple[object, tuple]:
        data, addr = self.sock.recvfrom(65536)
        return decode(data), addr

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.close()


class ErrorRecords(logging.Handler):
    """Collects the server's log records that carry a traceback: an internal error, whatever it answered."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture
def tracebacks() -> Iterator[list[logging.LogRecord]]:
    handler = ErrorRecords()
    logger = logging.getLogger("server.net.tftp")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


# -- absurd option values: ignored (RFC 2347), never an internal error


LIMITS = opts.ServerLimits(max_blksize=1468, max_windowsize=16, max_upload=1_000_000)


@pytest.mark.parametrize("name", KNOWN_OPTIONS)
@pytest.mark.parametrize("is_read", [True, False], ids=["RRQ", "WRQ"])
def test_a_5000_digit_option_value_is_ignored(name, is_read):
    accepted, settings = opts.negotiate(
        {name: HUGE}, is_read=is_read, file_size=100, limits=LIMITS, base=opts.Settings()
    )
    # A read's tsize asks for the file's size, whatever value came with it; every other value is ignored.
    assert accepted == ({"tsize": "100"} if name == "tsize" and is_read else {})
    assert settings.blksize == 512 and settings.windowsize == 1 and settings.timeout == 1.0


def test_leading_zeros_still_count_as_the_number():
    accepted, settings = opts.negotiate(
        {"blksize": "0" * 5000 + "1024"}, is_read=True, file_size=1, limits=LIMITS, base=opts.Settings()
    )
    assert accepted == {"blksize": "1024"} and settings.blksize == 1024


def test_the_client_refuses_a_5000_digit_oack_value_with_error_8():
    for name in KNOWN_OPTIONS:
        with pytest.raises(opts.NegotiationError) as caught:
            opts.accept_oack({name: "0" if name == "tsize" else "8"}, {name: HUGE}, opts.Settings())
        assert caught.value.code == ErrorCode.OPTION_NEGOTIATION


@pytest.mark.parametrize("name", KNOWN_OPTIONS)
def test_the_server_answers_a_5000_digit_option_without_an_internal_error(tftp_root, peers, tracebacks, name):
    (tftp_root / "f.bin").write_bytes(b"f" * 600)
    with running_server(tftp_root, allow_upload=True) as server:
        for request in (ReadRequest("f.bin", "octet", {name: HUGE}), WriteRequest("up.bin", "octet", {name: HUGE})):
            peer = Peer()
            peers.append(peer)
            peer.send(request, server.address)
            answer, tid = peer.recv()
            if isinstance(request, ReadRequest) and name == "tsize":
                assert answer == OptionAck({"tsize": "600"}), answer  # a read's tsize asks for the size
            elif isinstance(request, ReadRequest):
                assert answer == Data(1, b"f" * 512), answer  # as from a server without options
            else:
                assert answer == Ack(0), answer
            peer.send(Error(ErrorCode.NOT_DEFINED, "done"), tid)
    assert tracebacks == []


# Option names: the known ones in any case, ones we do not know, and arbitrary text. Values: numbers of every
# size (with leading zeros, signs, spaces), digit strings longer than int() converts, and arbitrary text.
_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
_NAMES = st.one_of(
    st.sampled_from([*KNOWN_OPTIONS, "BLKSIZE", "TimeOut", "utimeout", "rollover", "multicast", ""]), _TEXT
)
_VALUES = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(0, 5000), st.integers(0, 70_000)),
    st.builds(lambda digit, n: digit * n, st.sampled_from("0123456789"), st.integers(4000, 6000)),
    st.sampled_from(["", " 512", "512 ", "+512", "-1", "1e3", "0x200", "٥١٢", "nan", "inf"]),
    _TEXT,
)
_OPTIONS = st.dictionaries(_NAMES, _VALUES, max_size=5)


@settings(deadline=None)  # a loaded machine must not turn a slow example into a failure
@given(requested=_OPTIONS, is_read=st.booleans(), file_size=st.one_of(st.none(), st.integers(0, 2**40)))
@example(requested={"blksize": HUGE}, is_read=True, file_size=1)
def test_negotiation_of_arbitrary_options_accepts_only_sane_values(requested, is_read, file_size):
    try:
        accepted, settings = opts.negotiate(
            requested, is_read=is_read, file_size=file_size, limits=LIMITS, base=opts.Settings()
        )
    except opts.NegotiationError as exc:  # the one refusal: an upload announced beyond max_upload
        assert exc.code == ErrorCode.DISK_FULL and not is_read
        return
    assert set(accepted) <= set(KNOWN_OPTIONS)
    assert opts.MIN_BLKSIZE <= settings.blksize <= LIMITS.max_blksize
    assert 1 <= settings.windowsize <= LIMITS.max_windowsize
    assert opts.MIN_TIMEOUT <= settings.timeout <= LIMITS.max_timeout
    OptionAck(accepted).encode()  # whatever was accepted goes on the wire


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_options=_OPTIONS, is_read=st.booleans(), mode=st.sampled_from(["octet", "netascii", "NetAscii"]))
@example(request_options={"blksize": HUGE, "timeout": HUGE}, is_read=True, mode="octet")
def test_arbitrary_options_over_the_wire_never_make_an_internal_error(tmp_path_factory, request_options, is_read, mode):
    root = tmp_path_factory.mktemp("options")
    (root / "f.bin").write_bytes(b"o" * 3000)
    handler = ErrorRecords()
    logger = logging.getLogger("server.net.tftp")
    logger.addHandler(handler)
    limits = opts.ServerLimits(max_upload=1_000_000)
    try:
        with running_server(root, allow_upload=True, limits=limits) as server:
            peer = Peer()
            try:
                request = ReadRequest if is_read else WriteRequest
                peer.send(request("f.bin" if is_read else "up.bin", mode, request_options), server.address)
                answer, tid = peer.recv()
                if isinstance(answer, Error):
                    assert answer.code == ErrorCode.DISK_FULL and not is_read, answer
                else:
                    assert isinstance(answer, OptionAck | Data | Ack), answer
                    assert answer != Error(ErrorCode.NOT_DEFINED, "internal server error")
                    peer.send(Error(ErrorCode.NOT_DEFINED, "done"), tid)
            finally:
                peer.close()
    finally:
        logger.removeHandler(handler)
    assert handler.records == []


# -- the negotiated timeout is capped


def test_a_timeout_above_the_cap_is_left_out_of_the_oack(tftp_root, peers):
    (tftp_root / "f.bin").write_bytes(b"t" * 100)
    with running_server(tftp_root) as server:
        for asked, granted in (("255", None), (str(opts.DEFAULT_MAX_TIMEOUT + 1), None), ("5", "5")):
            peer = Peer()
            peers.append(peer)
            peer.send(ReadRequest("f.bin", "octet", {"timeout": asked, "tsize": "0"}), server.address)
            answer, tid = peer.recv()
            expected = {"tsize": "100"} if granted is None else {"timeout": granted, "tsize": "100"}
            assert answer == OptionAck(expected)
            peer.send(Error(ErrorCode.NOT_DEFINED, "done"), tid)


# -- only regular files are served or replaced, and nothing blocks the loop


@pytest.fixture
def fifo(tftp_root: Path) -> Iterator[Path]:
    """A FIFO in the root. Afterwards a writer opens it, so that a server stuck in open() (the bug) wakes up."""
    path = tftp_root / "pipe"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO when nobody is reading: nothing stuck


def special_files(root: Path) -> dict[str, str]:
    """Make one of each kind of special file the system lets us make; name -> the kind the error should say."""
    made = {"pipe": "a FIFO", "pipe-link": "a FIFO"}
    (root / "pipe-link").symlink_to(root / "pipe")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(root / "sock"))
        made["sock"] = "a socket"
    except OSError:
        pass
    finally:
        sock.close()
    with contextlib.suppress(OSError):  # needs CAP_MKNOD, which containers often drop
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        made["null"] = "a character device"
    (root / "dir").mkdir()
    made["dir"] = "a directory"
    return made


def test_special_files_are_refused_at_once_and_the_loop_goes_on(tftp_root, tmp_path, fifo, peers, tracebacks):
    (tftp_root / "ok.bin").write_bytes(b"k" * 5000)
    kinds = special_files(tftp_root)
    with running_server(tftp_root) as server:
        for name, kind in kinds.items():
            peer = Peer()
            peers.append(peer)
            peer.send(ReadRequest(name), server.address)
            answer, _ = peer.recv()  # before the fix: the FIFO's open() blocked the loop and this timed out
            assert answer == Error(ErrorCode.ACCESS_VIOLATION, f"not a regular file ({kind})"), name
        started = time.monotonic()
        TftpClient("127.0.0.1", server.address[1], timeout=0.5).download("ok.bin", tmp_path / "ok.bin")
        assert time.monotonic() - started < 2.0
    assert (tmp_path / "ok.bin").read_bytes() == b"k" * 5000
    assert tracebacks == []


def test_an_upload_never_replaces_a_special_file(tftp_root, tmp_path, fifo, peers):
    kinds = special_files(tftp_root)
    (tmp_path / "new.bin").write_bytes(b"n" * 100)
    with running_server(tftp_root, allow_upload=True, overwrite=True) as server:
        for name, kind in kinds.items():
            peer = Peer()
            peers.append(peer)
            peer.send(WriteRequest(name), server.address)
            answer, _ = peer.recv()
            assert answer == Error(ErrorCode.ACCESS_VIOLATION, f"not a regular file ({kind})"), name
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and (tftp_root / "dir").is_dir()
    assert [p.name for p in tftp_root.iterdir() if p.name.startswith(".")] == []


def test_an_upload_does_not_replace_a_fifo_that_took_its_name_meanwhile(tftp_root, peers):
    with running_server(tftp_root, allow_upload=True, overwrite=True) as server:
        peer = Peer()
        peers.append(peer)
        peer.send(WriteRequest("late.bin"), server.address)
        answer, tid = peer.recv()
        assert answer == Ack(0)
        os.mkfifo(tftp_root / "late.bin")
        peer.send(Data(1, b"last block"), tid)
        answer, _ = peer.recv()
        assert answer == Error(ErrorCode.ACCESS_VIOLATION, "not a regular file (a FIFO)")
    assert stat.S_ISFIFO(os.lstat(tftp_root / "late.bin").st_mode)
    assert [p.name for p in tftp_root.iterdir()] == ["late.bin"]  # and no temporary file left behind


# -- a transfer that makes no progress is dropped within a bounded time, whatever its retries


def run_silent(machine, until: float) -> tuple[float, list]:
    """Tick a machine whose peer never answers; return when it gave up and what it sent last."""
    sent = machine.start()
    while not machine.finished:
        now = machine.deadline
        assert now is not None and now <= until, f"still waiting at {now}"
        sent = machine.tick(now)
    return now, sent


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_a_silent_peer_is_dropped_at_the_stall_limit_whatever_its_retries(role):
    settings = opts.Settings(timeout=10.0, retries=1000, stall_limit=25.0)
    # The peer answers once, at 0 (one that never did is dropped sooner, and silently: test_tftp_audit.py).
    if role == "sender":
        machine = Sender(lambda n: b"s" * n, PEER, settings, 0.0)
        assert machine.datagram_received(encode_ack(1), PEER, 0.0)
    else:
        machine = Receiver(lambda data: None, PEER, settings, 0.0)
        assert machine.datagram_received(encode_data(1, b"r" * 512), PEER, 0.0)
    ended, (last,) = run_silent(machine, until=25.0)
    assert ended == 25.0 and machine.state == State.FAILED  # retransmitted at 10 and 20, not at 30
    assert decode(last.data) == Error(ErrorCode.NOT_DEFINED, "peer made no progress for 25 s")


def test_progress_restarts_the_stall_clock_and_duplicates_do_not():
    settings = opts.Settings(timeout=1.0, retries=1000, stall_limit=5.0)
    sender = Sender(lambda n: b"s" * n, PEER, settings, 0.0)
    sender.start()
    assert sender.datagram_received(encode_ack(1), PEER, 0.0)  # answered once: full retries from here on
    for now in (1.0, 2.0, 3.0):
        sender.tick(now)
    assert sender.datagram_received(encode_ack(2), PEER, 3.5)  # progress at 3.5: DATA 3 goes out
    assert sender.progressed_at == 3.5
    assert sender.datagram_received(encode_ack(2), PEER, 4.0) == []  # a duplicate is not progress
    ended, _ = run_silent(sender, until=8.5)
    assert ended == 8.5


# -- slots: a flood of requests that are never acknowledged cannot lock real clients out


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def poll(condition, timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds, polling; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.005)


def legitimate_gets(port: int, tmp_path: Path) -> dict[str, object]:
    """One download per client we have: ours always, curl and tftp-hpa when installed (each a callable)."""
    gets: dict[str, object] = {
        "ours": lambda out: TftpClient("127.0.0.1", port, timeout=0.5).download("f.bin", out),
    }
    if shutil.which("curl"):
        url = f"tftp://127.0.0.1:{port}/f.bin"
        gets["curl"] = lambda out: _run(["curl", "-sS", "--max-time", "2", "-o", str(out), url])
    if shutil.which("tftp"):
        argv = ["tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", "f.bin"]
        gets["tftp-hpa"] = lambda out: _run([*argv, str(out)])
    return gets


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    assert result.returncode == 0 and b"rror" not in result.stdout + result.stderr, result


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_a_flood_of_silent_requests_neither_locks_out_clients_nor_keeps_descriptors(tftp_root, tmp_path, peers):
    """The issue's flood in small: every slot taken by requests asking for timeout 255, from 16 addresses (forged
    ones, for all the server knows), never acknowledged. Before: "server busy" for everyone, for (5 + 1) x 255 s."""
    data = os.urandom(20_000)
    (tftp_root / "f.bin").write_bytes(data)
    slots, stall_limit = 32, 2.0
    flood = [Peer(f"127.0.0.{2 + i % 16}") for i in range(slots + 2)]  # two more: after each legitimate get
    peers.extend(flood)
    config = {"max_transfers": slots, "timeout": 0.5, "retries": 100, "stall_limit": stall_limit}
    with running_server(tftp_root, **config) as server:
        baseline = open_descriptors()
        started = time.monotonic()
        for peer in flood[:slots]:
            peer.send(ReadRequest("f.bin", "octet", {"timeout": "255"}), server.address)
        poll(lambda: server.transfer_count == slots, 2.0, "every slot taken")
        assert open_descriptors() == baseline + 2 * slots  # a socket and a file each
        assert flood[0].recv()[0] == Data(1, data[:512])  # timeout 255 was not granted: no OACK at all
        for index, (name, get) in enumerate(legitimate_gets(server.address[1], tmp_path).items()):
            if index:  # the slot the last client used is free again: the flood takes it back
                flood[slots + index - 1].send(ReadRequest("f.bin", "octet", {"timeout": "255"}), server.address)
            full = lambda: server.transfer_count == slots and not server.transfers_from("127.0.0.1")  # noqa: E731
            poll(full, 2.0, "every slot flooded")
            began = time.monotonic()
            get(tmp_path / name)  # type: ignore[operator]
            assert time.monotonic() - began < 2.0, name
            assert (tmp_path / name).read_bytes() == data, name
        # Nothing the flood holds outlives the stall limit: slots and descriptors all come back.
        poll(lambda: server.transfer_count == 0, started + stall_limit + 1.0 - time.monotonic(), "slots released")
        poll(lambda: open_descriptors() == baseline, 1.0, "descriptors released")


def test_one_source_holds_at_most_its_share(tftp_root, peers):
    (tftp_root / "f.bin").write_bytes(b"s" * 2000)
    share = 8  # the default max_transfers_per_source
    with running_server(tftp_root, timeout=5.0) as server:
        busy = [Peer("127.0.0.5") for _ in range(share + 1)]
        peers.extend(busy)
        for peer in busy[:share]:  # transfers making progress: none of them gives way
            peer.send(ReadRequest("f.bin"), server.address)
            _, tid = peer.recv()
            peer.send(encode_ack(1), tid)
            assert peer.recv()[0].block == 2
        busy[share].send(ReadRequest("f.bin"), server.address)
        refusal = Error(ErrorCode.NOT_DEFINED, "too many transfers from your address, try again later")
        assert busy[share].recv() == (refusal, server.address)
        assert server.transfers_from("127.0.0.5") == share == server.max_transfers_per_source
        other = Peer("127.0.0.6")
        peers.append(other)
        other.send(ReadRequest("f.bin"), server.address)  # another address is not affected
        assert isinstance(other.recv()[0], Data)
        # A source whose transfers never answered: its newest request replaces its oldest silent one.
        silent = [Peer("127.0.0.7") for _ in range(share + 2)]
        peers.extend(silent)
        for peer in silent:
            peer.send(ReadRequest("f.bin"), server.address)
            assert isinstance(peer.recv()[0], Data)
            assert server.transfers_from("127.0.0.7") <= share
        # Dropped in silence: a peer that never answered may be a forged address (test_tftp_review3).
        assert all(_nothing_queued(peer) for peer in silent)


def test_when_full_the_longest_idle_transfer_gives_way_and_a_progressing_one_never(tftp_root, peers):
    (tftp_root / "f.bin").write_bytes(b"i" * 2000)
    with running_server(tftp_root, max_transfers=3, timeout=5.0) as server:
        a, b, c, d, e, f = (Peer(f"127.0.0.{i}") for i in range(10, 16))
        peers.extend((a, b, c, d, e, f))
        tids = {}
        for peer in (a, b, c):
            peer.send(ReadRequest("f.bin"), server.address)
            packet, tids[peer] = peer.recv()
            assert isinstance(packet, Data)
        b.send(encode_ack(1), tids[b])
        assert b.recv()[0].block == 2  # b makes progress: a and c never answered
        for newcomer, victim in ((d, a), (e, c), (f, d)):  # the silent ones go, oldest first; b stays
            newcomer.send(ReadRequest("f.bin"), server.address)
            assert isinstance(newcomer.recv()[0], Data)
            # Gone, in silence: it never answered, so its address may be forged (test_tftp_review3).
            assert server.transfers_from(victim.sock.getsockname()[0]) == 0 and _nothing_queued(victim)
        assert server.transfers_from("127.0.0.11") == 1 and server.transfer_count == 3


def _nothing_queued(peer: Peer) -> bool:
    """Whether nothing waits on ``peer``'s socket. Reliable right after the server's answer to a later datagram
    has arrived: the server sends in order, and on loopback a datagram is queued by the time sendto returns."""
    readable, _, _ = select.select([peer.sock], [], [], 0)  # recv would wait out the socket's timeout first
    return not readable


# A server whose descriptor limit is far below what max_transfers needs, as with a low ulimit.
_LOW_ULIMIT_SERVER = """
import logging, os, resource, sys
from server.net.tftp.server import TftpServer, source_key
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
server = TftpServer(sys.argv[1], "127.0.0.1", 0, max_transfers=100, timeout=5.0)
in_use = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 8, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(server.address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_out_of_descriptors_idle_transfers_give_way_and_nothing_crashes(tftp_root, tmp_path, peers):
    (tftp_root / "f.bin").write_bytes(b"d" * 3000)
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOW_ULIMIT_SERVER, str(tftp_root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "the server did not start"
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        answers = []
        for i in range(20):  # far more silent transfers than descriptors allow
            peer = Peer(f"127.0.0.{20 + i}")
            peers.append(peer)
            peer.send(ReadRequest("f.bin"), ("127.0.0.1", port))
            answers.append(peer.recv()[0])
        assert all(isinstance(answer, Data) for answer in answers), answers  # the oldest silent one gave way
        TftpClient("127.0.0.1", port, timeout=0.5).download("f.bin", tmp_path / "f.bin")
        assert (tmp_path / "f.bin").read_bytes() == b"d" * 3000
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert b"Traceback" not in stderr and b"internal server error" not in stderr, stderr.decode()


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client of a dual-stack socket is its IPv4 address
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # an IPv6 host usually owns a whole /64
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%lo", "fe80::/64"),
    ],
)
def test_what_counts_as_one_source(host, source):
    assert source_key((host, 69)) == source


def test_no_timeout_is_granted_beyond_the_stall_limit(tftp_root):
    for stall_limit, granted in ((30.0, 10), (4.5, 4), (0.5, 0)):
        server = TftpServer(tftp_root, "127.0.0.1", 0, timeout=0.5, stall_limit=stall_limit)
        try:
            assert server.limits.max_timeout == granted
        finally:
            server.close()
    with pytest.raises(ValueError, match="stall_limit"):
        TftpServer(tftp_root, "127.0.0.1", 0, timeout=5.0, stall_limit=2.0)


def test_a_transfer_dropped_to_make_room_is_not_read_after_its_socket_is_closed(tftp_root, peers):
    """Found in review: a request that makes room closes another transfer's socket; if that socket is also in the
    same turn's list of ready sockets, reading it failed with EBADF forever, and the whole server spun at 100%
    CPU. One client could do it: fill its per-source quota, then send a new request and a stray datagram to its
    oldest transfer, both before the loop's next turn."""
    (tftp_root / "f.bin").write_bytes(b"r" * 2000)
    server = TftpServer(tftp_root, "127.0.0.1", 0, max_transfers_per_source=1, busy_poll=False)
    try:
        first, second = Peer(), Peer()
        peers.extend((first, second))
        first.send(ReadRequest("f.bin"), server.address)
        server._run_once()  # the first transfer: its DATA 1 goes out
        packet, tid = first.recv()
        assert isinstance(packet, Data)
        (transfer_socket,) = server._transfers
        second.send(ReadRequest("f.bin"), server.address)  # from the same source: the first gives way
        first.send(encode_ack(0), tid)  # and a stray datagram for the first, in the same turn of the loop
        deadline = time.monotonic() + 5
        while len(select.select([server._sock, transfer_socket], [], [], 0.1)[0]) < 2:
            assert time.monotonic() < deadline, "the two datagrams never arrived"
        turn = threading.Thread(target=server._run_once, daemon=True)
        turn.start()
        turn.join(timeout=5)
        assert not turn.is_alive(), "the loop spins on the closed socket of the transfer it dropped"
        assert isinstance(second.recv()[0], Data)
    finally:
        server.close()
