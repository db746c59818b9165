"""The TFTP server against what one datagram from anyone can carry (audit of ``server/net``).

- A 64 KB file name is refused before any file-system call: it used to make ``realpath`` walk 32,000
  components, 0.7 s during which no transfer moved.
- The answer to a malformed datagram is never larger than the datagram: a peer's string is quoted at most 32
  characters into the message, and the message is cut to fit.
- What a client sends (its file name, the text of its ERROR packets) reaches the log escaped, on one line.
- A request from a forged address draws at most two copies of the first packet, and no ERROR: a 10-byte RRQ
  used to draw six 516-byte DATA packets and an ERROR, 88 times its size.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.net.tftp import options as opts
from server.net.tftp import server as server_module
from server.net.tftp.client import TftpClient, TransferFailed
from server.net.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    Opcode,
    OptionAck,
    ReadRequest,
    Request,
    decode,
    encode_ack,
    encode_data,
)
from server.net.tftp.server import MAX_NAME_BYTES, Refused, TftpServer, resolve_inside
from server.net.tftp.transfer import UNANSWERED_RETRIES, Receiver, Sender, State

from .test_tftp_live import RawPeer, client_for

LONG_NAME = "a/" * 32000 + "f"  # the audit's datagram: 64 KB of name, 32,000 components


# -- 1. a long name costs nothing


def test_a_name_over_the_limit_is_refused_before_any_file_system_call(tmp_path, monkeypatch):
    def walked(path):
        raise AssertionError("realpath was called for a name over the limit")

    monkeypatch.setattr(server_module.os.path, "realpath", walked)
    for name in (LONG_NAME, "x" * (MAX_NAME_BYTES + 1), "\xe9" * (MAX_NAME_BYTES // 2 + 1)):  # bytes, not characters
        with pytest.raises(Refused) as refused:
            resolve_inside(tmp_path, name)
        assert refused.value.code == ErrorCode.ACCESS_VIOLATION
        assert str(refused.value) == f"file name longer than {MAX_NAME_BYTES} bytes"


def test_a_64_kb_name_is_answered_with_error_2_and_the_server_carries_on(tftp_root, tmp_path, start_tftp_server):
    (tftp_root / "f").write_bytes(b"ok")
    server = start_tftp_server(tftp_root)
    peer = RawPeer()
    try:
        peer.send(ReadRequest(LONG_NAME), server.address)
        packet, _ = peer.recv()
    finally:
        peer.close()
    assert packet == Error(ErrorCode.ACCESS_VIOLATION, f"file name longer than {MAX_NAME_BYTES} bytes")
    client_for(server).download("f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"ok"


# -- 3. no answer larger than the question


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory):
    """A server whose loop is not running: the test calls its request handler itself, one datagram at a time."""
    # One peer sends hundreds of requests here: a budget without bound keeps every one of them answered (the
    # budget per source has tests of its own in test_tftp_attacks.py).
    server = TftpServer(tmp_path_factory.mktemp("root"), "127.0.0.1", 0, new_transfer_burst=10**9)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    yield server, peer
    peer.close()
    server.close()


def _answers(peer: socket.socket) -> list[bytes]:
    """What has arrived on ``peer``: on loopback a datagram is queued by the time ``sendto`` returns."""
    answers = []
    while True:
        try:
            answers.append(peer.recv(65536))
        except BlockingIOError:
            return answers


def _not_a_request(data: bytes) -> bool:
    try:
        return not isinstance(decode(data), Request)
    except MalformedPacket:
        return True


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.builds(lambda op, body: op + body, st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x06"]), st.binary()),
    )
)
@example(data=b"\x00\x01f\x00" + b"\xff" * 300 + b"\x00")  # the audit's: an unknown mode of 0xFF bytes
@example(data=b"\x00\x01f\x00octet\x00" + b"\xff" * 300 + b"\x00")  # an option without a value
@example(data=b"\x00\x04\x00\x01")  # an ACK to the well-known port: 4 bytes, too short for any ERROR
@example(data=b"")
def test_a_datagram_that_is_no_request_is_answered_with_at_most_its_own_size(idle_server, data):
    server, peer = idle_server
    if not _not_a_request(data):
        return  # a real request starts a transfer, answered from the transfer's own port
    server._on_request(data, peer.getsockname())
    answers = _answers(peer)
    assert len(answers) <= 1
    for answer in answers:
        assert len(answer) <= len(data)
        assert decode(answer).code == ErrorCode.ILLEGAL_OPERATION


def test_a_malformed_request_quotes_at_most_32_characters_of_the_peer(idle_server):
    server, peer = idle_server
    request = b"\x00\x01f\x00" + b"\xff" * 300 + b"\x00"
    with pytest.raises(MalformedPacket) as malformed:
        decode(request)
    assert str(malformed.value) == "RRQ has unknown mode '" + "\\xff" * 8 + "...'"
    server._on_request(request, peer.getsockname())
    (answer,) = _answers(peer)
    assert decode(answer) == Error(ErrorCode.ILLEGAL_OPERATION, f"malformed packet: {malformed.value}")


# -- 4. what a client says reaches the log on one line


@pytest.fixture
def server_log(caplog):
    caplog.set_level(logging.INFO, logger="server.net.tftp")
    return caplog


def _logged(caplog, text: str, timeout: float = 2.0) -> str:
    """The first server log message containing ``text``, polled for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        time.sleep(0.005)
    raise AssertionError(f"{text!r} not logged: {[r.getMessage() for r in caplog.records]}")


def test_a_file_name_with_a_newline_cannot_forge_a_log_line(tftp_root, start_tftp_server, server_log):
    server = start_tftp_server(tftp_root)
    peer = RawPeer()
    try:
        peer.send(ReadRequest("missing\n1.2.3.4:69 RRQ admin.cfg 9 bytes ok\x1b[2J"), server.address)
        assert peer.recv()[0].code == ErrorCode.FILE_NOT_FOUND
        peer.send(ReadRequest(LONG_NAME), server.address)
        assert peer.recv()[0].code == ErrorCode.ACCESS_VIOLATION
    finally:
        peer.close()
    line = _logged(server_log, "missing")
    assert "\n" not in line and "\x1b" not in line
    assert "missing\\n1.2.3.4:69 RRQ admin.cfg 9 bytes ok\\x1b[2J refused" in line
    long_line = _logged(server_log, "a/a/a/")
    assert len(long_line) < 400 and "..." in long_line  # the name is cut, not 64 KB of log


def test_a_peers_error_text_cannot_forge_a_log_line(tftp_root, start_tftp_server, server_log):
    (tftp_root / "f").write_bytes(b"x" * 2000)
    server = start_tftp_server(tftp_root)
    peer = RawPeer()
    try:
        peer.send(ReadRequest("f"), server.address)
        packet, tid = peer.recv()
        assert isinstance(packet, Data)
        peer.send(Error(ErrorCode.NOT_DEFINED, "bye\n1.2.3.4:69 RRQ f 2000 bytes in 0.001 s ok"), tid)
        line = _logged(server_log, "failed: bye")
    finally:
        peer.close()
    assert "\n" not in line and "failed: bye\\n1.2.3.4:69 RRQ f 2000 bytes in 0.001 s ok (peer error 0)" in line


# -- 2. no amplification towards a peer that never answered

PEER = ("127.0.0.1", 40000)


@given(
    role=st.sampled_from(["sender", "receiver"]),
    retries=st.integers(0, 50),
    timeout=st.floats(0.1, 10.0),
    stall_limit=st.one_of(st.none(), st.floats(10.0, 100.0)),
    windowsize=st.integers(1, 16),
    oack=st.booleans(),
    size=st.integers(0, 20_000),
)
def test_a_peer_that_never_answers_gets_the_first_packet_at_most_twice_and_no_error(
    role, retries, timeout, stall_limit, windowsize, oack, size
):
    settings = opts.Settings(windowsize=windowsize, timeout=timeout, retries=retries, stall_limit=stall_limit)
    accepted = {"windowsize": str(windowsize)} if oack else None
    if role == "sender":
        machine: Sender | Receiver = Sender(io.BytesIO(bytes(size)).read, PEER, settings, 0.0, oack=accepted)
    else:
        machine = Receiver(lambda data: None, PEER, settings, 0.0, oack=accepted)
    first = machine.start()
    sent = list(first)
    while not machine.finished:
        assert machine.deadline is not None
        sent += machine.tick(machine.deadline)
    assert machine.state == State.FAILED and "no answer from the client" in machine.error.message
    assert len(sent) <= (1 + min(retries, UNANSWERED_RETRIES)) * len(first)
    assert all(data[:2] != bytes([0, Opcode.ERROR]) for data, _ in sent)  # nobody to tell: maybe nobody there
    assert machine.request_repeated(1e9) == []  # and a transfer that gave up is over


def test_a_lost_first_packet_is_sent_again_for_a_repeated_request_with_a_budget_of_its_own():
    settings = opts.Settings(timeout=1.0, retries=5)
    sender = Sender(io.BytesIO(bytes(2000)).read, PEER, settings, 0.0)
    (first,) = sender.start()  # lost
    assert sender.request_repeated(0.5) == []  # a repeat within the timeout: our packet may be on its way
    assert sender.request_repeated(1.0) == [first]  # a repeat a timeout later is a new request ...
    assert sender.tick(2.0) == [first]  # ... with a budget of two: one retransmission of our own
    assert sender.tick(3.0) == []  # and no more
    assert sender.request_repeated(2.5) == []  # nor for a repeat within a timeout of our last send
    assert sender.datagram_received(encode_ack(1), PEER, 3.5)  # the peer answers late: DATA 2 goes out
    assert sender.request_repeated(4.5) == []  # from now on the transfer's own timer repairs losses ...
    assert all(sender.tick(t) for t in (4.5, 5.5, 6.5, 7.5, 8.5)) and not sender.finished  # ... 5 times


def test_a_forged_request_draws_two_data_packets_and_no_error(tftp_root, start_tftp_server):
    (tftp_root / "f").write_bytes(b"z" * 5000)
    server = start_tftp_server(tftp_root, timeout=0.1, retries=5)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        victim.bind(("127.0.0.1", 0))
        victim.settimeout(2.0)
        victim.sendto(ReadRequest("f").encode(), server.address)  # "from" the victim, who never answers
        received = [victim.recv(65536)]
        deadline = time.monotonic() + 2.0
        while server.transfer_count and time.monotonic() < deadline:  # the server gives up after 2 timeouts
            time.sleep(0.01)
        assert server.transfer_count == 0
        victim.setblocking(False)
        received += _answers(victim)
    finally:
        victim.close()
    assert [decode(d) for d in received] == [Data(1, b"z" * 512)] * (1 + UNANSWERED_RETRIES)


# -- 10 (c, d). no more data than the announced tsize


def test_an_upload_beyond_its_announced_tsize_is_refused_with_error_3():
    written = bytearray()
    receiver = Receiver(written.extend, PEER, opts.Settings(tsize=1000), 0.0, oack={"tsize": "1000"})
    receiver.start()
    assert receiver.datagram_received(encode_data(1, b"u" * 512), PEER, 0.1) == [(encode_ack(1), PEER)]
    (refusal,) = receiver.datagram_received(encode_data(2, b"u" * 512), PEER, 0.2)
    assert decode(refusal.data) == Error(ErrorCode.DISK_FULL, "upload exceeds its announced tsize of 1000 bytes")
    assert receiver.state == State.FAILED and len(written) == 512  # the excess block was never written


def test_a_download_beyond_the_servers_tsize_fails_and_leaves_no_file(tmp_path):
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))
    fake.settimeout(5)

    def lying_server() -> None:
        request, client = fake.recvfrom(65536)
        assert decode(request).options.get("tsize") == "0"
        fake.sendto(OptionAck({"tsize": "10"}).encode(), client)  # from the same port: its TID
        assert decode(fake.recvfrom(65536)[0]) == Ack(0)
        fake.sendto(encode_data(1, b"more than ten bytes"), client)

    serving = threading.Thread(target=lying_server)
    serving.start()
    try:
        client = TftpClient("127.0.0.1", fake.getsockname()[1], timeout=1.0, retries=1)
        with pytest.raises(TransferFailed, match="more than its announced tsize of 10 bytes"):
            client.download("f", tmp_path / "f")
    finally:
        serving.join(timeout=5)
        fake.close()
    assert os.listdir(tmp_path) == []


def test_an_uploads_temporary_file_is_never_served_and_a_crashs_leftovers_go_at_the_next_start(
    tftp_root, tmp_path, start_tftp_server
):
    """A server killed during an upload (a crash, SIGKILL) left its ``.tftp-upload.NAME.XXXXXXXX.part`` file in
    the served root for good, and a request for that name was served: half a file, to anyone who guessed the
    name. Such names are refused both ways now, and a server that takes uploads removes stale ones when it
    starts, never a fresh one (another server may be writing it) nor a file of another pattern."""
    (tftp_root / "sub").mkdir()
    stale = tftp_root / "sub" / ".tftp-upload.fw.bin.a1b2c3d4.part"
    stale.write_bytes(b"half a firmware")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = tftp_root / ".tftp-upload.fw.bin.zz99yy88.part"
    fresh.write_bytes(b"being written")
    other = tftp_root / ".notes.part"
    other.write_bytes(b"a user's file")
    source = tmp_path / "up.bin"
    source.write_bytes(b"data")

    read_only = start_tftp_server(tftp_root)
    with pytest.raises(TransferFailed, match="temporary file") as caught:
        client_for(read_only).download("sub/.tftp-upload.fw.bin.a1b2c3d4.part", tmp_path / "got")
    assert caught.value.code == ErrorCode.ACCESS_VIOLATION
    assert stale.exists()  # a server that takes no uploads deletes nothing

    uploads = start_tftp_server(tftp_root, allow_upload=True)
    deadline = time.monotonic() + 10
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not stale.exists() and fresh.exists() and other.exists()
    with pytest.raises(TransferFailed, match="temporary file"):
        client_for(uploads).upload(source, ".tftp-upload.up.bin.abcdefgh.part")
    client_for(uploads).upload(source, ".notes2.part")  # not the pattern: a name like any other
    assert (tftp_root / ".notes2.part").read_bytes() == b"data"


@given(
    name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=300)
)
def test_every_name_an_upload_writes_to_is_recognised_as_temporary_and_no_download(name):
    import tempfile
    from pathlib import Path

    from server.net.tftp.tempfiles import DOWNLOAD_MARKER, UPLOAD_MARKER, is_upload_temporary, temporary_sibling

    if name in (".", ".."):
        return
    with tempfile.TemporaryDirectory() as folder:
        for marker, recognised in ((UPLOAD_MARKER, True), (DOWNLOAD_MARKER, False)):
            fd, temp = temporary_sibling(Path(folder) / name, marker)  # any name fits: it is cut to 50 characters
            os.close(fd)
            assert is_upload_temporary(os.path.basename(temp)) is recognised
