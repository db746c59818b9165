"""Regressions found by the third review of the TFTP hardening commits, one section per finding.

1. A client's repeated request was never answered once the server's timer had spent the budget of two
   packets for a peer that never answered: curl with its first two packets lost failed after 40 s.
2. A transfer whose peer never answered sent an ERROR when dropped to make room or aborted at shutdown: a
   third packet per forged request under a flood.
3. An octet upload ending short of the tsize it announced was stored as complete: curl under loss skipped a
   block, and the server kept the truncated file as whole.
4. ``tftp put`` of a stream: (a) a writer stalling mid-upload hung the client forever; (b) a piped standard
   input slow to start was refused by the 5 s rule meant for named FIFOs with no writer; (c) an empty stream
   emptied the remote file without a word.
5. The walk for leftovers could delete a live upload's temporary file: another server's slow upload (written
   through a 256 KiB buffer, its mtime could stand still for 40 minutes), or this server's own when the wall
   clock was stepped back.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time

import pytest

from server.net.tftp import options as opts
from server.net.tftp import server as server_module
from server.net.tftp import tempfiles
from server.net.tftp.files import StreamReader, StreamStalled, open_local
from server.net.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    decode,
    encode_ack,
    encode_data,
)
from server.net.tftp.server import TftpServer
from server.net.tftp.transfer import Receiver, Sender, State

from .conftest import ROOT, _argv, cli
from .test_tftp_live import RawPeer

PEER = ("127.0.0.1", 40000)


def _queued(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on ``sock``: on loopback one is queued by the time ``sendto`` returns."""
    received = []
    while True:
        try:
            received.append(sock.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return received


# -- 1. a repeated request a timeout after our last send is a new request


def test_a_repeat_after_the_budget_is_spent_is_answered_with_a_fresh_budget():
    """curl's timer is 5 s: our first packet and its retransmission are lost, and curl repeats its request at
    10 s. That repeat gets the packet again, and our timer one more retransmission; a repeat sooner than a
    timeout after our last send still gets nothing. (That a flood of repeats draws at most one packet per
    timeout is test_tftp_regressions.test_repeated_requests_from_a_silent_peer_draw_at_most_one_packet_per_timeout.)"""
    sender = Sender(io.BytesIO(bytes(2000)).read, PEER, opts.Settings(timeout=5.0, retries=5), 0.0)
    (first,) = sender.start()  # lost
    assert sender.tick(5.0) == [first]  # lost too: the budget of two is spent
    assert sender.request_repeated(5.01) == []  # our retransmission may be on its way
    assert sender.tick(sender.deadline) == []  # nothing more from our timer
    assert sender.request_repeated(10.0) == [first]  # a new request: the packet again ...
    assert sender.request_repeated(12.0) == []
    assert sender.tick(15.0) == [first]  # ... with a fresh budget of two
    assert sender.tick(sender.deadline) == [] or sender.finished
    assert sender.datagram_received(encode_ack(1), PEER, 16.0)  # and a late answer continues the transfer
    assert sender.state == State.RUNNING


def _drop_first_sends(server: TftpServer, count: int) -> None:
    """Make ``server`` lose the first ``count`` datagrams it sends from transfer sockets, as a network would."""
    send = server._send
    dropped = []

    def lossy(active, datagrams):
        while datagrams and len(dropped) < count:
            dropped.append(datagrams.pop(0))
        send(active, datagrams)

    server._send = lossy  # type: ignore[method-assign]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian: curl)")
def test_curl_recovers_when_its_first_two_packets_are_lost(tftp_root, tmp_path, start_tftp_server):
    """curl repeats its request on its 5 s timer; the repeat at 10 s must be answered."""
    data = bytes(range(256)) * 20
    (tftp_root / "f.bin").write_bytes(data)
    server = start_tftp_server(tftp_root)
    _drop_first_sends(server, 2)
    started = time.monotonic()
    url = f"tftp://127.0.0.1:{server.address[1]}/f.bin"
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "40", "-o", str(tmp_path / "out"), url], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == data
    assert time.monotonic() - started < 25


# -- 2. no ERROR to a peer that never answered, even when its transfer is dropped or aborted


def test_a_forged_flood_draws_at_most_two_packets_per_request_and_no_error(tmp_path):
    """Ten forged requests on a server with two slots (each newcomer evicts a silent transfer), then a
    shutdown aborting the rest: every victim gets the first packet once and nothing else."""
    (tmp_path / "f").write_bytes(b"z" * 5000)
    server = TftpServer(tmp_path, "127.0.0.1", 0, timeout=5.0, max_transfers=2, max_transfers_per_source=2)
    victims = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(10)]
    try:
        for victim in victims:
            victim.bind(("127.0.0.1", 0))
            server._on_request(ReadRequest("f").encode(), victim.getsockname())  # the loop is not running
        assert server.transfer_count == 2
        server.close()
        for victim in victims:
            received = [decode(d) for d in _queued(victim)]
            assert received == [Data(1, b"z" * 512)], received
    finally:
        server.close()
        for victim in victims:
            victim.close()


def test_an_aborted_transfer_whose_peer_answered_is_still_told():
    sender = Sender(io.BytesIO(bytes(2000)).read, PEER, opts.Settings(timeout=1.0), 0.0)
    sender.start()
    sender.datagram_received(encode_ack(1), PEER, 0.1)
    (error,) = sender.abort("server shutting down")
    assert error.data[:2] == bytes([0, Opcode.ERROR])


# -- 3. an upload that ends short of its announced tsize is not a file


@pytest.mark.parametrize("role", ["server", "client"])
def test_a_transfer_ending_short_of_its_announced_tsize_fails(role):
    """1100 bytes announced, 1000 received in two blocks (the second short): the last block ends the transfer
    with ERROR 0 instead of the final ACK, for an upload (server) as for a download (client)."""
    if role == "server":
        receiver = Receiver(io.BytesIO().write, PEER, opts.Settings(tsize=1100), 0.0, oack={"tsize": "1100"})
    else:
        request = ReadRequest("f", "octet", {"tsize": "0"})
        receiver = Receiver(io.BytesIO().write, PEER, opts.Settings(), 0.0, request=request)
        receiver.start()
        receiver.datagram_received(OptionAck({"tsize": "1100"}).encode(), PEER, 0.05)
    assert receiver.datagram_received(encode_data(1, b"u" * 512), PEER, 0.1) == [(encode_ack(1), PEER)]
    (answer,) = receiver.datagram_received(encode_data(2, b"u" * 488), PEER, 0.2)
    error = decode(answer.data)
    assert isinstance(error, Error) and error.code == ErrorCode.NOT_DEFINED
    assert "1000 bytes, short of its announced tsize of 1100" in error.message
    assert receiver.state == State.FAILED


def test_an_upload_of_exactly_its_tsize_and_a_netascii_one_of_another_size_are_stored():
    exact = Receiver(io.BytesIO().write, PEER, opts.Settings(tsize=1000), 0.0, oack={"tsize": "1000"})
    exact.datagram_received(encode_data(1, b"u" * 512), PEER, 0.1)
    assert exact.datagram_received(encode_data(2, b"u" * 488), PEER, 0.2) == [(encode_ack(2), PEER)]
    assert exact.state == State.COMPLETE
    text = Receiver(io.BytesIO().write, PEER, opts.Settings(tsize=1100), 0.0, oack={"tsize": "1100"}, netascii=True)
    assert text.datagram_received(encode_data(1, b"u" * 100), PEER, 0.1) == [(encode_ack(1), PEER)]
    assert text.state == State.COMPLETE  # in netascii, tsize is the size on disk: no bound on the wire


def test_a_live_upload_short_of_its_tsize_stores_nothing(tftp_root, start_tftp_server):
    server = start_tftp_server(tftp_root, allow_upload=True)
    peer = RawPeer()
    try:
        peer.send(WriteRequest("up.bin", "octet", {"tsize": "2000"}), server.address)
        answer, tid = peer.recv()
        assert answer == OptionAck({"tsize": "2000"})
        peer.send(encode_data(1, b"u" * 512), tid)
        assert peer.recv() == (Ack(1), tid)
        peer.send(encode_data(2, b"u" * 100), tid)  # blocks 2 and 3 (of 4) "lost", the last one sent as block 2
        answer, _ = peer.recv()
        assert isinstance(answer, Error) and "short of its announced tsize" in answer.message
    finally:
        peer.close()
    assert list(tftp_root.iterdir()) == []


# -- 4. streams: a stall ends the upload, an inherited pipe may be slow to start, an empty one is pointed out


def test_a_stream_that_stalls_mid_read_raises_instead_of_hanging():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"x" * 700)  # and then nothing, the writer still there
        reader = StreamReader(read_end, stall=0.3)
        assert reader.read(512) == b"x" * 512
        with pytest.raises(StreamStalled, match=r"nothing came from the stream for 0\.3 s"):
            reader.read(512)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_trickling_stream_cannot_stretch_one_read_past_the_stall_limit():
    """A writer sending a byte every 0.2 s restarted a per-poll wait with each byte: one read(100) took 20 s while
    the server gave up after 6. The whole read shares one deadline."""
    import threading

    read_end, write_end = os.pipe()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            os.write(write_end, b"t")

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    try:
        with pytest.raises(StreamStalled):
            StreamReader(read_end, stall=0.5).read(100)
    finally:
        stop.set()
        writer.join(5)
        os.close(read_end)
        os.close(write_end)


def test_put_of_a_stream_that_stalls_fails_with_one_line_and_status_1(tftp_root, start_tftp_server):
    """600 bytes, then a writer that neither writes nor closes: the client gives up after (1 + 1) x 1 s."""
    server = start_tftp_server(tftp_root, allow_upload=True)
    args = ["tftp", "put", "127.0.0.1", "-", "s.bin", "--port", server.address[1], "--timeout", "1", "--retries", "1"]
    with subprocess.Popen(_argv(args), cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            proc.stdin.write(b"s" * 600)
            proc.stdin.flush()
            proc.wait(timeout=20)  # stdin stays open (communicate would close it): the client used to hang here
        finally:
            proc.kill()  # nothing to do once it has exited
        err = proc.stderr.read()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: nothing came from the stream for 2 s")
    assert list(tftp_root.iterdir()) == []


def test_an_inherited_pipe_is_waited_for_past_the_fifo_rule_with_a_hint():
    """``/dev/fd/N`` always has a writer: no refusal after ``stream_wait``, a hint instead, then the data."""
    read_end, write_end = os.pipe()
    hints = []

    def hint() -> None:  # the writer starts only once the wait has run out: no race to lose
        hints.append("waiting")
        os.write(write_end, b"late")

    try:
        fd, size = open_local(f"/dev/fd/{read_end}", stream_wait=0.1, on_wait=hint)
        try:
            assert size is None and hints == ["waiting"] and os.read(fd, 10) == b"late"
        finally:
            os.close(fd)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_put_of_a_piped_standard_input_that_starts_late_is_sent(tftp_root, start_tftp_server):
    """The example of the review, ``(sleep 6; echo hi) | tftp put HOST - NAME``, without the sleep's race: the
    pipe's writer waits for the client's hint that nothing came in 5 s, then writes."""
    server = start_tftp_server(tftp_root, allow_upload=True)
    args = ["tftp", "put", "127.0.0.1", "-", "late.txt", "--port", server.address[1]]
    with subprocess.Popen(_argv(args), cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        import threading

        deadline = threading.Timer(30, proc.kill)  # the readline below has no timeout of its own
        deadline.start()
        try:
            hint = proc.stderr.readline()  # until the client says it is waiting (or exits, or is killed)
            proc.stdin.write(b"hi\n")
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        finally:
            deadline.cancel()
            proc.kill()
    assert b"waiting for the standard input: nothing yet after 5 s" in hint
    assert (tftp_root / "late.txt").read_bytes() == b"hi\n"


def test_put_of_an_empty_stream_warns_and_succeeds(tftp_root, start_tftp_server):
    server = start_tftp_server(tftp_root, allow_upload=True)
    result = cli("tftp", "put", "127.0.0.1", "-", "e.txt", "--port", server.address[1], input="")
    assert result.returncode == 0, result.stderr
    assert "warning: the standard input was empty: e.txt on the server is now an empty file" in result.stderr
    assert (tftp_root / "e.txt").read_bytes() == b""


# -- 5. the walk for leftovers and live uploads


def _upload_started(server: TftpServer, peer: RawPeer, name: str) -> tuple:
    """A WRQ and one full block, acknowledged: the upload is live, its temporary file in the root. The TID."""
    peer.send(WriteRequest(name), server.address)
    answer, tid = peer.recv()
    assert answer == Ack(0)
    peer.send(encode_data(1, b"u" * 512), tid)
    assert peer.recv() == (Ack(1), tid)
    return tid


def test_the_walk_never_deletes_this_servers_own_temporary_files(tftp_root, start_tftp_server):
    """Its own upload's file made to look two hours old (a wall clock stepped back): the walk keeps it, and
    the upload completes."""
    server = start_tftp_server(tftp_root, allow_upload=True, timeout=2.0)
    peer = RawPeer()
    try:
        tid = _upload_started(server, peer, "up.bin")
        (temp,) = tftp_root.glob(".tftp-upload.*")
        old = time.time() - 2 * 3600
        os.utime(temp, (old, old))
        server._start_cleanup()  # what a server does when it starts
        server.cleanup.join(timeout=10)
        assert temp.exists()
        peer.send(encode_data(2, b"end"), tid)
        assert peer.recv() == (Ack(2), tid)
    finally:
        peer.close()
    assert (tftp_root / "up.bin").read_bytes() == b"u" * 512 + b"end"


def test_a_live_uploads_file_is_written_at_least_every_flush_interval(tftp_root, start_tftp_server, monkeypatch):
    """Its first block sits in the 256 KiB buffer until the periodic flush writes it, and its mtime moves."""
    monkeypatch.setattr(server_module, "_FLUSH_EVERY", 0.2)
    server = start_tftp_server(tftp_root, allow_upload=True, timeout=2.0)  # the upload lives for 12 s
    peer = RawPeer()
    try:
        _upload_started(server, peer, "slow.bin")
        (temp,) = tftp_root.glob(".tftp-upload.*")
        deadline = time.monotonic() + 5.0
        while temp.stat().st_size < 512 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temp.stat().st_size == 512
    finally:
        peer.close()


def test_temporary_names_carry_the_servers_token_and_stay_short(tmp_path):
    marker = tempfiles.new_upload_marker()
    assert marker != tempfiles.new_upload_marker()  # one per server
    fd, temp = tempfiles.temporary_sibling(tmp_path / ("é" * 200), marker)
    os.close(fd)
    name = os.path.basename(temp)
    assert name.startswith(marker) and tempfiles.is_upload_temporary(name) and len(os.fsencode(name)) <= 255
    old = time.time() - 2 * 3600
    other = tmp_path / f"{tempfiles.new_upload_marker()}x.abcdefgh.part"  # another server's, long dead
    other.write_bytes(b"")
    for path in (temp, other):
        os.utime(path, (old, old))
    assert tempfiles.remove_leftovers(tmp_path, keep=marker) == 1
    assert os.path.exists(temp) and not other.exists()
