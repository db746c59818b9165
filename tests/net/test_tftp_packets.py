"""Every TFTP packet type, encoded and decoded, and the malformed datagrams that must be refused clearly."""

import pytest

from server.net.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    OptionAck,
    ReadRequest,
    WriteRequest,
    decode,
)


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (ReadRequest("a.txt", "octet"), b"\x00\x01a.txt\x00octet\x00"),
        (WriteRequest("dir/b", "netascii"), b"\x00\x02dir/b\x00netascii\x00"),
        (
            ReadRequest("f", "octet", {"blksize": "1468", "tsize": "0"}),
            b"\x00\x01f\x00octet\x00blksize\x001468\x00tsize\x000\x00",
        ),
        (Data(1, b"hello"), b"\x00\x03\x00\x01hello"),
        (Data(65535, b""), b"\x00\x03\xff\xff"),
        (Ack(0), b"\x00\x04\x00\x00"),
        (Ack(513), b"\x00\x04\x02\x01"),
        (Error(1, "File not found"), b"\x00\x05\x00\x01File not found\x00"),
        (OptionAck({"blksize": "512", "windowsize": "8"}), b"\x00\x06blksize\x00512\x00windowsize\x008\x00"),
    ],
)
def test_round_trip(packet, wire):
    assert packet.encode() == wire
    assert decode(wire) == packet


def test_error_codes_0_to_8_have_their_standard_messages():
    messages = [ErrorCode(code).default_message for code in range(9)]
    assert messages[1] == "File not found" and messages[5] == "Unknown transfer ID"
    assert messages[8] == "Option negotiation failed"
    for code in range(8):
        assert decode(Error(code).encode()) == Error(code, ErrorCode(code).default_message)


def test_request_mode_and_option_names_are_case_insensitive():
    packet = decode(b"\x00\x01f\x00OcTeT\x00BLKSIZE\x001024\x00")
    assert packet == ReadRequest("f", "octet", {"blksize": "1024"})


def test_error_message_without_trailing_nul_is_accepted():
    assert decode(b"\x00\x05\x00\x02denied") == Error(2, "denied")


def test_filenames_keep_undecodable_bytes():
    packet = decode(b"\x00\x01caf\xe9\x00octet\x00")
    assert packet.encode() == b"\x00\x01caf\xe9\x00octet\x00"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "too short"),
        (b"\x00", "too short"),
        (b"\x00\x09abc", "unknown opcode 9"),
        (b"\x00\x00", "unknown opcode 0"),
        (b"\x00\x03\x00", "DATA of 3 bytes"),
        (b"\x00\x04\x00", "ACK of 3 bytes"),
        (b"\x00\x04\x00\x01\x00", "trailing data"),
        (b"\x00\x05\x00", "ERROR of 3 bytes"),
        (b"\x00\x01file", "does not end with a NUL"),
        (b"\x00\x01file\x00", "needs a filename and a mode"),
        (b"\x00\x01\x00octet\x00", "empty filename"),
        (b"\x00\x02f\x00binary\x00", "unknown mode 'binary'"),
        (b"\x00\x01f\x00octet\x00blksize\x00", "has no value"),
        (b"\x00\x06blksize\x00", "has no value"),
    ],
)
def test_malformed_datagrams_raise_a_clear_error(wire, reason):
    with pytest.raises(MalformedPacket, match=reason):
        decode(wire)


def test_encode_refuses_values_the_wire_cannot_carry():
    with pytest.raises(ValueError, match="block number"):
        Data(65536, b"").encode()
    with pytest.raises(ValueError, match="NUL"):
        ReadRequest("a\0b").encode()
