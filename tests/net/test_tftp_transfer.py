"""The transfer state machines, driven without sockets through a simulated network.

The simulation owns a virtual clock and the datagrams in flight. A seeded random generator loses, duplicates
and delays (and so reorders) them: every run is the same run, and a failure can be replayed.
"""

import io
import random

import pytest

from server.net.tftp import options as opts
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
from server.net.tftp.transfer import Receiver, Sender, State

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 69)
SERVER_TID = ("127.0.0.1", 50000)
STRANGER = ("127.0.0.1", 40001)


class Network:
    """Carries datagrams between endpoints on a virtual clock, with seeded loss, duplication and delay."""

    def __init__(self, seed=0, loss=0.0, dup=0.0, jitter=0.0):
        self.rng = random.Random(seed)
        self.loss, self.dup, self.jitter = loss, dup, jitter
        self.now = 0.0
        self.in_flight = []  # (arrival time, sequence number, data, source, destination)
        self.sequence = 0
        self.sent = []  # every datagram handed to the network: (data, source, destination)
        self.endpoints = {}

    def send(self, datagrams, source):
        for data, dest in datagrams:
            self.sent.append((data, source, dest))
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                if self.rng.random() < self.loss:
                    continue
                self.sequence += 1
                arrival = self.now + 0.001 + self.rng.random() * self.jitter
                self.in_flight.append((arrival, self.sequence, data, source, dest))

    def run(self, done, limit=500_000):
        """Deliver datagrams and fire timers until ``done()`` or nothing is left to happen."""
        for _ in range(limit):
            if done():
                return
            deadlines = [m.deadline for m in self.endpoints.values() if m.deadline is not None]
            next_timer = min(deadlines, default=None)
            if self.in_flight and (next_timer is None or min(self.in_flight)[0] <= next_timer):
                self.in_flight.sort()
                arrival, _, data, source, dest = self.in_flight.pop(0)
                self.now = arrival
                if dest in self.endpoints:
                    self.send(self.endpoints[dest].datagram_received(data, source, self.now), dest)
            elif next_timer is not None:
                self.now = next_timer
                for addr, machine in list(self.endpoints.items()):
                    self.send(machine.tick(self.now), addr)
            else:
                return
        raise AssertionError("simulation did not settle")

    def sent_from(self, source, kind):
        return [p for p in (decode(d) for d, s, _ in self.sent if s == source) if isinstance(p, kind)]


class ServerStub:
    """The listening half of TftpServer: a request creates a transfer that answers from its own TID."""

    deadline = None

    def __init__(self, net, files, settings):
        self.net, self.files, self.settings = net, files, settings
        self.limits = opts.ServerLimits()
        self.transfer = None

    def datagram_received(self, data, addr, now):
        if self.transfer is not None:
            return []  # a retransmitted request: the transfer already answers it
        request = decode(data)
        is_read = isinstance(request, ReadRequest)
        size = len(self.files[request.filename]) if is_read else None
        accepted, settings = opts.negotiate(
            request.options, is_read=is_read, file_size=size, limits=self.limits, base=self.settings
        )
        if is_read:
            source = io.BytesIO(self.files[request.filename]).read
            self.transfer = Sender(source, addr, settings, now, oack=accepted)
        else:
            sink = self.files[request.filename] = bytearray()
            self.transfer = Receiver(sink.extend, addr, settings, now, oack=accepted)
        self.net.endpoints[SERVER_TID] = self.transfer
        self.net.send(self.transfer.start(), SERVER_TID)
        return []

    def tick(self, now):
        return []


DEFAULTS = opts.Settings()


def transfer(payload, *, upload=False, settings=DEFAULTS, net=None, server_settings=DEFAULTS):
    """Run one client transfer against the stub server; return (bytes that arrived, client, server, net)."""
    net = net or Network()
    files = {"f": payload}
    stub = ServerStub(net, files, server_settings)
    if upload:
        request = WriteRequest("f", "octet", opts.client_options(settings, tsize=len(payload)))
        client = Sender(io.BytesIO(payload).read, SERVER, settings, net.now, request=request)
    else:
        sink = bytearray()
        request = ReadRequest("f", "octet", opts.client_options(settings, tsize=0))
        client = Receiver(sink.extend, SERVER, settings, net.now, request=request)
    net.endpoints = {CLIENT: client, SERVER: stub}
    net.send(client.start(), CLIENT)
    net.run(lambda: client.finished and stub.transfer is not None and stub.transfer.finished)
    received = bytes(files["f"]) if upload else bytes(sink)
    return received, client, stub.transfer, net


def payload_of(size, seed=1):
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("upload", [False, True], ids=["download", "upload"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
def test_clean_transfer_of_every_boundary_size(upload, size):
    data = payload_of(size)
    received, client, server, net = transfer(data, upload=upload)
    assert received == data
    assert client.state == server.state == State.COMPLETE
    sender = net.sent_from(SERVER_TID if not upload else CLIENT, Data)
    # A size that is a multiple of the block size ends with an empty block.
    assert len(sender) == size // 512 + 1
    assert len(sender[-1].payload) == size % 512


@pytest.mark.parametrize("upload", [False, True], ids=["download", "upload"])
@pytest.mark.parametrize("windowsize", [1, 4, 16])
@pytest.mark.parametrize("seed", range(4))
def test_loss_duplication_and_reordering(upload, windowsize, seed):
    data = payload_of(60_000, seed)
    settings = opts.Settings(blksize=1024, windowsize=windowsize, retries=30)
    net = Network(seed=seed, loss=0.1, dup=0.1, jitter=0.004)
    received, client, server, _ = transfer(data, upload=upload, settings=settings, net=net)
    assert client.state == server.state == State.COMPLETE
    assert received == data
    blocks = len(data) // 1024 + 1
    data_sent = len(net.sent_from(CLIENT if upload else SERVER_TID, Data))
    # Losses were repaired, and go-back-N resends at most a window per repair, never a flood.
    assert blocks < data_sent < (windowsize + 2) * blocks


@pytest.mark.parametrize("windowsize", [1, 8])
def test_duplicated_datagrams_cause_almost_no_extra_traffic(windowsize):
    data = payload_of(100_000)
    settings = opts.Settings(blksize=1024, windowsize=windowsize)
    net = Network(seed=7, dup=0.2)
    received, _client, _server, _ = transfer(data, settings=settings, net=net)
    assert received == data
    blocks = len(data) // 1024 + 1
    data_sent = len(net.sent_from(SERVER_TID, Data))
    if windowsize == 1:
        assert data_sent == blocks  # duplicate ACKs are simply ignored
    else:
        # A repeated window-opening ACK may mean the window's first block was lost, so it earns one resend of
        # the window, and only one: the overhead is bounded by one window per window.
        assert blocks < data_sent < 2 * blocks


def test_options_are_negotiated_and_tsize_reported():
    data = payload_of(3000)
    settings = opts.Settings(blksize=1000, windowsize=3)
    received, client, _server, net = transfer(data, settings=settings)
    assert received == data
    (oack,) = net.sent_from(SERVER_TID, OptionAck)
    assert oack.options == {"blksize": "1000", "windowsize": "3", "tsize": "3000"}
    assert client.settings.blksize == 1000 and client.settings.tsize == 3000
    # Lock-step within each window: 3000 bytes in 1000-byte blocks at windowsize 3 need only two ACKs
    # (one for the OACK, one for the window), and the window ended with a 0-byte block.
    assert [a.block for a in net.sent_from(CLIENT, Ack)] == [0, 3, 4]


def test_empty_file_is_announced_without_tsize_zero():
    """curl 7.88 refuses an OACK with "tsize 0": with tsize as the only option there is no OACK at all."""
    received, client, _server, net = transfer(b"")
    assert received == b"" and client.state == State.COMPLETE
    assert net.sent_from(SERVER_TID, OptionAck) == []


def test_block_numbers_wrap_after_65535():
    data = payload_of(70_000 * 8 + 3)
    received, _client, _server, net = transfer(data, settings=opts.Settings(blksize=8, windowsize=7))
    assert received == data
    blocks = [d.block for d in net.sent_from(SERVER_TID, Data)]
    assert 65535 in blocks and blocks[blocks.index(65535) + 1] == 0


def test_client_falls_back_when_the_server_ignores_options():
    """A plain RFC 1350 server answers RRQ with DATA 1 and WRQ with ACK 0: the client uses the defaults."""
    request = ReadRequest("f", "octet", {"blksize": "1024", "windowsize": "8", "tsize": "0"})
    sink = bytearray()
    settings = opts.Settings(blksize=1024, windowsize=8)
    client = Receiver(sink.extend, SERVER, settings, 0.0, request=request)
    client.start()
    out = client.datagram_received(encode_data(1, b"x" * 512), SERVER_TID, 0.1)
    assert client.settings.blksize == 512 and client.settings.windowsize == 1
    assert out == [(encode_ack(1), SERVER_TID)]
    client.datagram_received(encode_data(2, b"end"), SERVER_TID, 0.2)
    assert client.state == State.COMPLETE and bytes(sink) == b"x" * 512 + b"end"

    request = WriteRequest("f", "octet", {"blksize": "1024"})
    client = Sender(io.BytesIO(b"y" * 600).read, SERVER, settings, 0.0, request=request)
    client.start()
    out = client.datagram_received(encode_ack(0), SERVER_TID, 0.1)
    assert [decode(d) for d, _ in out] == [Data(1, b"y" * 512)]


def test_client_refuses_an_oack_that_raises_blksize_or_adds_options():
    for oack in ({"blksize": "2048"}, {"windowsize": "4"}, {"blksize": "abc"}):
        request = ReadRequest("f", "octet", {"blksize": "1024"})
        client = Receiver(bytearray().extend, SERVER, opts.Settings(blksize=1024), 0.0, request=request)
        client.start()
        out = client.datagram_received(OptionAck(oack).encode(), SERVER_TID, 0.1)
        assert client.state == State.FAILED
        assert decode(out[0].data).code == ErrorCode.OPTION_NEGOTIATION


def test_stranger_gets_error_5_and_the_transfer_goes_on():
    sender = Sender(io.BytesIO(b"a" * 1000).read, CLIENT, opts.Settings(), 0.0)
    assert [decode(d).block for d, _ in sender.start()] == [1]
    out = sender.datagram_received(encode_ack(1), STRANGER, 0.1)
    assert out == [(Error(ErrorCode.UNKNOWN_TID).encode(), STRANGER)]
    # An ERROR from a stranger neither aborts the transfer nor gets an answer.
    assert sender.datagram_received(Error(0, "go away").encode(), STRANGER, 0.1) == []
    assert sender.state == State.RUNNING
    out = sender.datagram_received(encode_ack(1), CLIENT, 0.2)
    assert [decode(d).block for d, _ in out] == [2]


def test_client_locks_the_first_tid_that_answers():
    request = ReadRequest("f", "octet", {})
    client = Receiver(bytearray().extend, SERVER, opts.Settings(), 0.0, request=request)
    client.start()
    client.datagram_received(encode_data(1, b"x" * 512), SERVER_TID, 0.1)
    second_server = ("127.0.0.1", 50001)
    out = client.datagram_received(encode_data(1, b"x" * 512), second_server, 0.1)
    assert decode(out[0].data).code == ErrorCode.UNKNOWN_TID and out[0].addr == second_server
    # An answer from another host is not the server, even before the TID is fixed.
    other = Receiver(bytearray().extend, SERVER, opts.Settings(), 0.0, request=request)
    out = other.datagram_received(encode_data(1, b"x"), ("10.0.0.9", 69), 0.1)
    assert decode(out[0].data).code == ErrorCode.UNKNOWN_TID and other.state == State.REQUESTING


def test_duplicate_acks_do_not_cause_duplicate_sends():
    """The Sorcerer's Apprentice: a delayed ACK and its retransmission must not double every later block."""
    sender = Sender(io.BytesIO(b"a" * 5000).read, CLIENT, opts.Settings(), 0.0)
    sender.start()
    sent = [sender.datagram_received(encode_ack(1), CLIENT, 0.1)]
    for block in (1, 1, 1):
        sent.append(sender.datagram_received(encode_ack(block), CLIENT, 0.2))
    assert [len(s) for s in sent] == [1, 0, 0, 0]


def test_retransmits_on_timeout_then_gives_up():
    settings = opts.Settings(timeout=1.0, retries=3)
    sender = Sender(io.BytesIO(b"a" * 1000).read, CLIENT, settings, 0.0)
    sender.start()
    first = sender.datagram_received(encode_ack(1), CLIENT, 0.0)  # DATA 2, to a peer that has answered
    assert sender.tick(0.5) == []
    retransmissions = [sender.tick(t) for t in (1.0, 2.0, 3.0)]
    assert retransmissions == [first, first, first]
    out = sender.tick(4.0)
    assert sender.state == State.FAILED and "timed out" in sender.error.message
    assert decode(out[0].data).code == ErrorCode.NOT_DEFINED
    assert sender.deadline is None


def test_client_request_without_answer_fails_quietly():
    request = ReadRequest("f", "octet", {})
    client = Receiver(bytearray().extend, SERVER, opts.Settings(retries=1), 0.0, request=request)
    client.start()
    assert client.tick(1.0) == [(request.encode(), SERVER)]
    assert client.tick(2.0) == [] and client.state == State.FAILED
    assert "no answer" in client.error.message


def test_peer_error_ends_the_transfer():
    request = ReadRequest("missing", "octet", {})
    client = Receiver(bytearray().extend, SERVER, opts.Settings(), 0.0, request=request)
    client.start()
    client.datagram_received(Error(ErrorCode.FILE_NOT_FOUND, "no such file").encode(), SERVER_TID, 0.1)
    assert client.state == State.FAILED and client.error.remote
    assert client.error.code == 1 and client.error.message == "no such file"


def test_malformed_packet_from_peer_answers_error_4():
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(), 0.0)
    out = receiver.datagram_received(b"\x00\x03\x00", CLIENT, 0.1)
    assert decode(out[0].data).code == ErrorCode.ILLEGAL_OPERATION and receiver.state == State.FAILED
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(), 0.0)
    out = receiver.datagram_received(encode_ack(1), CLIENT, 0.1)
    assert decode(out[0].data).code == ErrorCode.ILLEGAL_OPERATION


def test_oversized_block_and_upload_limit():
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(), 0.0)
    out = receiver.datagram_received(encode_data(1, b"x" * 513), CLIENT, 0.1)
    assert decode(out[0].data).code == ErrorCode.ILLEGAL_OPERATION
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(), 0.0, limit=1000)
    receiver.datagram_received(encode_data(1, b"x" * 512), CLIENT, 0.1)
    out = receiver.datagram_received(encode_data(2, b"x" * 512), CLIENT, 0.2)
    assert decode(out[0].data).code == ErrorCode.DISK_FULL


def test_disk_full_answers_error_3():
    def full(data):
        raise OSError(28, "No space left on device")

    receiver = Receiver(full, CLIENT, opts.Settings(), 0.0)
    out = receiver.datagram_received(encode_data(1, b"x"), CLIENT, 0.1)
    assert decode(out[0].data) == Error(ErrorCode.DISK_FULL, "Disk full or allocation exceeded")


def test_receiver_acknowledges_a_repeated_final_block():
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(), 0.0)
    assert receiver.datagram_received(encode_data(1, b"end"), CLIENT, 0.1) == [(encode_ack(1), CLIENT)]
    assert receiver.state == State.COMPLETE
    assert receiver.datagram_received(encode_data(1, b"end"), CLIENT, 1.1) == [(encode_ack(1), CLIENT)]


def test_windowed_receiver_acks_once_per_window_of_strays():
    receiver = Receiver(bytearray().extend, CLIENT, opts.Settings(blksize=8, windowsize=4), 0.0)
    # Block 1 is lost: blocks 2..5 are strays, and only the first of them is answered (with ACK 0).
    answers = [receiver.datagram_received(encode_data(n, b"x" * 8), CLIENT, 0.1) for n in (2, 3, 4, 5)]
    assert answers == [[(encode_ack(0), CLIENT)], [], [], []]
    # The sender resends from block 1: a full window in order earns a single ACK for its last block.
    answers = [receiver.datagram_received(encode_data(n, b"x" * 8), CLIENT, 0.2) for n in (1, 2, 3, 4)]
    assert answers == [[], [], [], [(encode_ack(4), CLIENT)]]
