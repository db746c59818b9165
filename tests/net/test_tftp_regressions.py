"""Regressions found by the review of the TFTP hardening commits, one section per finding.

1. An upload announcing ``tsize 0`` (curl's "size unknown", ``curl -T -``) was refused with ERROR 3.
2. A netascii upload announcing its size on disk (atftp does) was refused: the wire carries CR LF for each LF.
"""

from __future__ import annotations

import io

import pytest

from server.net.tftp import options as opts
from server.net.tftp.packets import (
    Ack,
    ErrorCode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    decode,
    encode_ack,
    encode_data,
)
from server.net.tftp.transfer import Receiver, State

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
