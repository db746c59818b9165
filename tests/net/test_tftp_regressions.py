"""Regressions found by the review of the TFTP hardening commits, one section per finding.

1. An upload announcing ``tsize 0`` (curl's "size unknown", ``curl -T -``) was refused with ERROR 3.
2. A netascii upload announcing its size on disk (atftp does) was refused: the wire carries CR LF for each LF.
4. Every copy of a request from a peer that never answered drew the first packet again: 200 copies of a
   10-byte RRQ drew 167 DATA packets. Repeats are now answered at most once per timeout.
5. A transfer whose peer never answered gave up at 2 x timeout, before real clients (5 s timers) repeat
   their lost first answer. It now stops sending after its budget but waits for (retries + 1) x timeout.
3. ``tftp put`` refused streams (``/dev/stdin``, ``<(cmd)``, FIFOs) since it stopped blocking on FIFOs.
6. Start-up cleanup deleted old user files that looked like upload temporaries (``.boot.firmware.part``), and
   its walk of the whole root delayed the first requests.
7. The ERROR answering a malformed datagram, cut to the datagram's size, could end inside a UTF-8 character.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.net.tftp import options as opts
from server.net.tftp import tempfiles
from server.net.tftp.client import TftpClient
from server.net.tftp.files import NothingToRead, NotRegularFile, open_local
from server.net.tftp.packets import (
    Ack,
    Data,
    ErrorCode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    decode,
    encode_ack,
    encode_data,
)
from server.net.tftp.server import _cut_utf8
from server.net.tftp.transfer import UNANSWERED_RETRIES, Receiver, Sender, State

from .test_tftp_live import RawPeer, client_for

PEER = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 6969)


@pytest.fixture
def peer():
    """A raw UDP peer (5 s timeout on every receive), closed afterwards."""
    raw = RawPeer()
    yield raw
    raw.close()


# -- 1. tsize 0 on a write request means "size unknown"


def test_an_upload_announcing_tsize_0_is_echoed_and_not_bounded(tftp_root, start_tftp_server, peer):
    """What curl does for ``-T -``: the OACK echoes tsize 0 (curl expects its option back) and 3000 bytes go in."""
    server = start_tftp_server(tftp_root, allow_upload=True)
    peer.send(WriteRequest("x.bin", "octet", {"tsize": "0"}), server.address)
    answer, tid = peer.recv()
    assert answer == OptionAck({"tsize": "0"})
    data = bytes(range(256)) * 11 + b"tail"  # 2820 bytes: five full blocks and a short one
    for block, start in enumerate(range(0, len(data) + 1, 512), start=1):
        peer.send(encode_data(block, data[start : start + 512]), tid)
        assert peer.recv() == (Ack(block), tid)
    assert (tftp_root / "x.bin").read_bytes() == data


def test_an_upload_tsize_of_0_bounds_nothing_and_a_positive_one_still_does():
    accepted, settings = opts.negotiate(
        {"tsize": "0"}, is_read=False, file_size=None, limits=opts.ServerLimits(), base=opts.Settings()
    )
    assert accepted == {"tsize": "0"}
    receiver = Receiver(io.BytesIO().write, PEER, settings, 0.0, oack=accepted)
    receiver.start()
    assert receiver.datagram_received(encode_data(1, b"u" * 512), PEER, 0.1) == [(encode_ack(1), PEER)]
    bounded = Receiver(io.BytesIO().write, PEER, opts.Settings(tsize=100), 0.0, oack={"tsize": "100"})
    bounded.start()
    (refusal,) = bounded.datagram_received(encode_data(1, b"u" * 512), PEER, 0.1)
    assert decode(refusal.data).code == ErrorCode.DISK_FULL


# -- 2. in netascii, tsize is a size on disk, not on the wire


def test_a_netascii_upload_announcing_its_size_on_disk_is_accepted(tftp_root, start_tftp_server):
    text = b"line\n" * 300  # 1500 bytes on disk, 1800 on the wire
    server = start_tftp_server(tftp_root, allow_upload=True)
    client_for(server).upload_from(io.BytesIO(text), "t.txt", mode="netascii", size=len(text))
    assert (tftp_root / "t.txt").read_bytes() == text


def test_a_netascii_download_from_a_server_announcing_the_size_on_disk_is_accepted():
    """The client side of the same rule: a server may announce the disk size of a netascii file."""
    written = io.BytesIO()
    request = ReadRequest("t.txt", "netascii", {"tsize": "0"})
    client = Receiver(written.write, SERVER, opts.Settings(), 0.0, request=request, netascii=True)
    client.start()
    assert client.datagram_received(OptionAck({"tsize": "4"}).encode(), SERVER, 0.1)  # "a\nb\n" on disk
    assert client.datagram_received(encode_data(1, b"a\r\nb\r\n"), SERVER, 0.2)  # 6 bytes on the wire
    assert client.state == State.COMPLETE and written.getvalue() == b"a\r\nb\r\n"  # decoded by the caller


# -- 3. streams: opened without blocking, sent without a size


def test_a_fifo_with_a_writer_is_uploaded_without_announcing_a_size(tmp_path):
    """A fake server records the WRQ: no tsize, where a stream's st_size of 0 would have said "empty"."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))
    fake.settimeout(5)
    requests = []

    def fake_server() -> None:
        request, client = fake.recvfrom(65536)
        requests.append(decode(request))
        fake.sendto(encode_ack(0), client)
        data = decode(fake.recvfrom(65536)[0])
        requests.append(data)
        fake.sendto(encode_ack(data.block), client)

    def writer() -> None:
        with open(fifo, "wb") as pipe:  # blocks until the upload opens the FIFO for reading
            pipe.write(b"streamed")

    threads = [threading.Thread(target=fake_server, daemon=True), threading.Thread(target=writer, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        TftpClient("127.0.0.1", fake.getsockname()[1]).upload(fifo, "s.bin", stream_wait=5.0)
    finally:
        for thread in threads:
            thread.join(timeout=5)
        fake.close()
    assert requests == [WriteRequest("s.bin", "octet", {}), Data(1, b"streamed")]


def test_a_fifo_nobody_writes_to_is_refused_after_the_wait_and_does_not_block(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(NothingToRead, match=r"nothing to read within 0\.2 s"):
        open_local(fifo, stream_wait=0.2)
    assert time.monotonic() - started < 3.0


def test_streams_have_no_size_and_a_directory_is_still_refused(tmp_path):
    fd, size = open_local("/dev/null")
    os.close(fd)
    assert size is None
    with pytest.raises(NotRegularFile, match="a directory"):
        open_local(tmp_path)
    (tmp_path / "f").write_bytes(b"12345")
    fd, size = open_local(tmp_path / "f")
    os.close(fd)
    assert size == 5


# -- 4 and 5. a peer that has not answered yet: few packets, and a long enough wait


def first_packet_machine(role: str, settings: opts.Settings) -> Sender | Receiver:
    """A server transfer that has just been requested: a download (Sender) or an upload (Receiver)."""
    if role == "sender":
        return Sender(io.BytesIO(bytes(5000)).read, PEER, settings, 0.0)
    return Receiver(io.BytesIO().write, PEER, settings, 0.0)


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_repeated_requests_from_a_silent_peer_draw_at_most_one_packet_per_timeout(role):
    """The request repeated every 2 ms for the transfer's whole life (3,500 copies), the timer run as due: a
    repeat a timeout after our last send is a new request (see test_tftp_review3), so the bound is a rate."""
    settings = opts.Settings(timeout=1.0, retries=5, stall_limit=30.0)
    machine = first_packet_machine(role, settings)
    sent_at = [0.0] * len(machine.start())
    for step in range(1, 3500):
        now = step * 0.002
        if machine.deadline is not None and machine.deadline <= now:
            sent_at += [now] * len(machine.tick(now))
        sent_at += [now] * len(machine.request_repeated(now))
    assert len(sent_at) <= 1 + 7 / settings.timeout
    assert all(later - earlier >= settings.timeout - 1e-9 for earlier, later in itertools.pairwise(sent_at))


def test_a_burst_of_repeated_requests_draws_no_more_than_the_budget(tftp_root, start_tftp_server):
    (tftp_root / "f").write_bytes(b"z" * 5000)
    server = start_tftp_server(tftp_root, timeout=0.1, retries=5)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        victim.bind(("127.0.0.1", 0))
        request = ReadRequest("f").encode()
        for _ in range(200):
            victim.sendto(request, server.address)
        deadline = time.monotonic() + 5.0  # the transfer gives up after (5 + 1) x 0.1 s
        while (server.transfer_count or not _queued(victim)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.transfer_count == 0
        received = _drain(victim)
    finally:
        victim.close()
    assert [decode(d) for d in received] == [Data(1, b"z" * 512)] * (1 + UNANSWERED_RETRIES)


@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_a_late_first_answer_continues_the_transfer(role):
    """The client's first answer (ACK 1, or DATA 1 of an upload) lost twice: it comes at 2.5 s, on the
    client's own timer. The server sent twice, went quiet, and was still there to hear it."""
    machine = first_packet_machine(role, opts.Settings(timeout=1.0, retries=5, stall_limit=30.0))
    assert len(machine.start() + machine.tick(1.0)) == 2  # both ignored by the client
    assert machine.tick(2.0) == [] and not machine.finished  # quiet, not gone
    if role == "sender":
        answer = machine.datagram_received(encode_ack(1), PEER, 2.5)
        assert [decode(d.data) for d in answer] == [Data(2, bytes(512))]
    else:
        answer = machine.datagram_received(encode_data(1, b"u" * 512), PEER, 2.5)
        assert answer == [(encode_ack(1), PEER)]
    assert machine.state == State.RUNNING


@pytest.mark.parametrize(
    ("retries", "timeout", "stall_limit", "gives_up_at"), [(5, 1.0, 30.0, 6.0), (5, 10.0, 30.0, 30.0)]
)
def test_a_silent_peer_is_given_up_on_at_retries_plus_one_timeouts_or_the_stall_limit(
    retries, timeout, stall_limit, gives_up_at
):
    machine = first_packet_machine("sender", opts.Settings(timeout=timeout, retries=retries, stall_limit=stall_limit))
    machine.start()
    while not machine.finished:
        assert machine.deadline is not None
        last = machine.deadline
        assert machine.tick(last) == [] or last < gives_up_at
    assert last == gives_up_at and "no answer from the client" in machine.error.message


def test_a_live_server_waits_for_a_late_first_answer(tftp_root, start_tftp_server, peer):
    """A raw client that ignores DATA 1 and its retransmission and answers at about 2.5 timeouts, on a server
    whose timeout is 1 s: it gives up only at (5 + 1) x 1 s, so the answer continues the transfer. (Every
    window is 1.5 s or more wide, and the answer has 3.5 s to spare: a loaded machine does not break it.)"""
    (tftp_root / "f").write_bytes(bytes(range(256)) * 4)
    server = start_tftp_server(tftp_root, timeout=1.0, retries=5)
    peer.send(ReadRequest("f"), server.address)
    first, tid = peer.recv()
    assert first == Data(1, bytes(range(256)) * 2)
    assert peer.recv() == (first, tid)  # the one retransmission, at 1 s
    peer.sock.settimeout(1.5)  # until 2.5 s: the server has nothing more to say, and is still there
    with pytest.raises(TimeoutError):
        peer.recv()
    assert server.transfer_count == 1
    peer.sock.settimeout(5)
    peer.send(encode_ack(1), tid)
    assert peer.recv() == (Data(2, bytes(range(256)) * 2), tid)


# -- 6. the leftovers of uploads: an unmistakable name, and a walk off the serving path


def test_old_user_files_that_look_like_temporaries_are_kept_and_served(tftp_root, tmp_path, start_tftp_server):
    an_hour_ago = time.time() - 3600
    names = [".boot.firmware.part", ".image.20261203.part", ".tftp-upload.part", ".tftp-upload.x.part"]
    for name in names:
        (tftp_root / name).write_bytes(name.encode())
        os.utime(tftp_root / name, (an_hour_ago, an_hour_ago))
    stale = tftp_root / ".tftp-upload.fw.bin.a1b2c3d4.part"  # a real leftover, to know when the walk is done
    stale.write_bytes(b"half a firmware")
    os.utime(stale, (an_hour_ago, an_hour_ago))
    server = start_tftp_server(tftp_root, allow_upload=True)
    assert _gone(stale, within=10.0)
    for name in names:
        client_for(server).download(name, tmp_path / "got")
        assert (tmp_path / "got").read_bytes() == name.encode()


def test_the_walk_for_leftovers_does_not_delay_requests(tftp_root, tmp_path, start_tftp_server, monkeypatch):
    """A walk that takes as long as the test wants (an NFS root, a huge tree): a download is served meanwhile."""
    release = threading.Event()
    real_walk = os.walk

    def slow_walk(top, *args, **kwargs):
        release.wait(timeout=10)
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(tempfiles.os, "walk", slow_walk)
    (tftp_root / "f").write_bytes(b"boot me")
    stale = tftp_root / ".tftp-upload.fw.bin.a1b2c3d4.part"
    stale.write_bytes(b"half a firmware")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    server = start_tftp_server(tftp_root, allow_upload=True)
    try:
        client_for(server, timeout=0.5, retries=1).download("f", tmp_path / "f")
        assert (tmp_path / "f").read_bytes() == b"boot me"
        assert stale.exists()  # the walk is still waiting ...
    finally:
        release.set()
    assert _gone(stale, within=10.0)  # ... and goes on to its end


def _gone(path, within: float) -> bool:
    """Whether ``path`` disappears within ``within`` seconds (the walk runs in the server's own thread)."""
    deadline = time.monotonic() + within
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not path.exists()


# -- 7. a cut ERROR message is still UTF-8


@pytest.mark.parametrize("name", ["f", "fg"])
def test_a_cut_error_message_never_ends_inside_a_character(tftp_root, start_tftp_server, peer, name):
    """A request with an unknown mode of 30 "é": its ERROR quotes the mode and is cut to the request's size,
    which with a 2-byte file name fell in the middle of an "é"."""
    server = start_tftp_server(tftp_root)
    datagram = b"\x00\x01" + name.encode() + b"\x00" + "\xe9".encode() * 30 + b"\x00"
    peer.send(datagram, server.address)
    data, _ = peer.sock.recvfrom(65536)
    assert len(data) <= len(datagram) and data[:2] == b"\x00\x05" and data.endswith(b"\x00")
    message = data[4:-1].decode("utf-8")  # strict: half a character raises
    assert message.startswith("malformed packet: RRQ has unknown mode '\xe9\xe9")


@given(text=st.text(), size=st.integers(0, 200))
def test_cutting_utf8_keeps_whole_characters(text, size):
    data = text.encode("utf-8")
    cut = _cut_utf8(data, size)
    assert data.startswith(cut) and len(cut) <= size
    assert text.startswith(cut.decode("utf-8"))  # strict: whole characters only
    assert len(cut) > size - 4 or len(cut) == len(data)  # and no more than one character is dropped


def _queued(sock: socket.socket) -> bool:
    """Whether a datagram waits on ``sock``, without taking it."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def _drain(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on ``sock``: on loopback one is queued by the time ``sendto`` returns."""
    received = []
    while True:
        try:
            received.append(sock.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return received
