"""Option negotiation on both sides, and netascii conversion."""

import io
import socket

import pytest

from server.net.tftp import netascii
from server.net.tftp import options as opts
from server.net.tftp.buffers import fit_window
from server.net.tftp.packets import ErrorCode

BASE = opts.Settings()
LIMITS = opts.ServerLimits(max_blksize=1468, max_windowsize=16, max_upload=1000)


def negotiate(requested, is_read=True, file_size=100):
    return opts.negotiate(requested, is_read=is_read, file_size=file_size, limits=LIMITS, base=BASE)


def test_server_accepts_clamps_and_ignores():
    requested = {"blksize": "9000", "windowsize": "64", "timeout": "3", "tsize": "0", "color": "blue"}
    accepted, settings = negotiate(requested)
    assert accepted == {"blksize": "1468", "timeout": "3", "tsize": "100", "windowsize": "16"}
    assert (settings.blksize, settings.windowsize, settings.timeout, settings.tsize) == (1468, 16, 3.0, 100)


def test_server_grants_its_maximum_to_oversized_requests():
    accepted, settings = negotiate({"blksize": "100000", "windowsize": "70000"})
    assert accepted == {"blksize": "1468", "windowsize": "16"}
    assert (settings.blksize, settings.windowsize) == (1468, 16)
    unlimited = opts.ServerLimits(max_blksize=opts.MAX_BLKSIZE, max_windowsize=10**6)
    accepted, _ = opts.negotiate(
        {"blksize": "100000", "windowsize": "70000"}, is_read=True, file_size=1, limits=unlimited, base=BASE
    )
    assert accepted == {"blksize": "65464", "windowsize": "65535"}


@pytest.mark.parametrize(
    "bad", [{"blksize": "7"}, {"blksize": "x"}, {"blksize": "-9"}, {"timeout": "0"}, {"windowsize": "0"}]
)
def test_server_ignores_invalid_values(bad):
    assert negotiate(bad) == ({}, BASE)


def test_tsize_zero_is_never_announced():
    assert negotiate({"tsize": "0"}, file_size=0) == ({}, BASE)
    assert negotiate({"tsize": "0"}, file_size=None) == ({}, BASE)  # netascii: size unknown


def test_upload_tsize_is_checked_against_the_limit():
    accepted, settings = negotiate({"tsize": "1000"}, is_read=False, file_size=None)
    assert accepted == {"tsize": "1000"} and settings.tsize == 1000
    with pytest.raises(opts.NegotiationError) as caught:
        negotiate({"tsize": "1001"}, is_read=False, file_size=None)
    assert caught.value.code == ErrorCode.DISK_FULL


def test_client_asks_only_for_what_differs_from_the_defaults():
    assert opts.client_options(BASE, tsize=None) == {}
    settings = opts.Settings(blksize=1468, windowsize=8)
    assert opts.client_options(settings, tsize=0) == {"blksize": "1468", "windowsize": "8", "tsize": "0"}


def test_client_accepts_a_lowered_oack():
    requested = {"blksize": "1468", "windowsize": "8", "tsize": "0"}
    settings = opts.accept_oack(requested, {"blksize": "1024", "windowsize": "4", "tsize": "77"}, BASE)
    assert (settings.blksize, settings.windowsize, settings.tsize) == (1024, 4, 77)


def test_options_left_out_of_the_oack_fall_back_to_their_defaults():
    """tftpd-hpa, for one, acknowledges blksize and tsize but not windowsize."""
    asked = opts.Settings(blksize=1468, windowsize=16)
    requested = opts.client_options(asked, tsize=0)
    settings = opts.accept_oack(requested, {"tsize": "10"}, asked)
    assert (settings.blksize, settings.windowsize, settings.tsize) == (512, 1, 10)


@pytest.mark.parametrize(
    "oack",
    [{"blksize": "2000"}, {"windowsize": "2"}, {"blksize": "7"}, {"tsize": "-1"}, {"timeout": "300"}],
)
def test_client_refuses_a_bad_oack(oack):
    requested = {"blksize": "1468", "tsize": "0", "timeout": "5"}
    with pytest.raises(opts.NegotiationError) as caught:
        opts.accept_oack(requested, oack, BASE)
    assert caught.value.code == ErrorCode.OPTION_NEGOTIATION


def test_netascii_encoding():
    assert netascii.encode(b"a\nb\rc\r\n") == b"a\r\nb\r\0c\r\0\r\n"


def test_netascii_decoding_across_every_split():
    text = b"one\ntwo\rthree\r\n\r"
    wire = netascii.encode(text)
    for cut in range(len(wire) + 1):
        out = bytearray()
        writer = netascii.DecodingWriter(out.extend)
        writer.write(wire[:cut])
        writer.write(wire[cut:])
        writer.close()
        assert bytes(out) == text, cut


def test_netascii_reader_returns_full_blocks_until_the_end():
    reader = netascii.EncodingReader(io.BytesIO(b"\n" * 5).read)
    assert [reader.read(4), reader.read(4), reader.read(4), reader.read(4)] == [
        b"\r\n" * 2,
        b"\r\n" * 2,
        b"\r\n",
        b"",
    ]


class CappedSocket:
    """A socket whose kernel grants no more than the default buffers (net.core.rmem_max = 212992)."""

    def __init__(self):
        self.requested = {}

    def setsockopt(self, level, option, value):
        self.requested[option] = value

    def getsockopt(self, level, option):
        return 2 * 212992  # Linux reports the doubled size it granted


def test_windows_are_fitted_to_the_socket_buffers():
    small = opts.Settings(blksize=1468, windowsize=16)
    assert fit_window(CappedSocket(), small) == small  # a 23 KiB burst: nothing to do
    sock = CappedSocket()
    fitted = fit_window(sock, opts.Settings(blksize=65464, windowsize=16))
    assert fitted.windowsize == 3 and fitted.blksize == 65464
    assert sock.requested[socket.SO_RCVBUF] == 2 * 65468 * 16  # what was asked before settling
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as real:
        assert fit_window(real, opts.Settings(blksize=8192, windowsize=8)).windowsize >= 1
