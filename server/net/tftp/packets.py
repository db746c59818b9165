"""TFTP packets as values: pure functions from bytes to packets and back.

Every datagram of a TFTP conversation is one of six packets (RFC 1350 plus the OACK of RFC 2347). This module
knows their wire layout and nothing else: no sockets, no clocks, no transfer state. ``decode`` turns a
datagram into a packet or raises ``MalformedPacket`` with a message that says what was wrong, so the transfer
layer can answer ERROR 4 instead of crashing; each packet's ``encode`` is the inverse.

Wire layout (all integers are 16-bit big-endian, strings are NUL-terminated)::

    RRQ/WRQ  | 1 or 2 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ...
    DATA     | 3 | block | payload (0..blksize bytes)
    ACK      | 4 | block
    ERROR    | 5 | code | message | 0
    OACK     | 6 | opt1 | 0 | value1 | 0 | ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from ..display import show

_U16 = struct.Struct("!H")
_HEADER = struct.Struct("!HH")  # opcode + block number (DATA, ACK) or error code (ERROR)

MODES = ("netascii", "octet", "mail")
# How much of a peer's string a MalformedPacket message quotes. The message is logged and sent back in an
# ERROR packet, so it must not grow with the peer's input: quoted whole and escaped, 8 bytes of 0xFF made
# 48 characters, and a bad mode of a few hundred bytes drew an error reply six times the request's size.
QUOTED = 32


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    """The error codes of RFC 1350 (0-7) and RFC 2347 (8), with their standard messages."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8

    @property
    def default_message(self) -> str:
        return _DEFAULT_MESSAGES[self]


_DEFAULT_MESSAGES = {
    ErrorCode.NOT_DEFINED: "Not defined",
    ErrorCode.FILE_NOT_FOUND: "File not found",
    ErrorCode.ACCESS_VIOLATION: "Access violation",
    ErrorCode.DISK_FULL: "Disk full or allocation exceeded",
    ErrorCode.ILLEGAL_OPERATION: "Illegal TFTP operation",
    ErrorCode.UNKNOWN_TID: "Unknown transfer ID",
    ErrorCode.FILE_EXISTS: "File already exists",
    ErrorCode.NO_SUCH_USER: "No such user",
    ErrorCode.OPTION_NEGOTIATION: "Option negotiation failed",
}


class MalformedPacket(ValueError):
    """A datagram that is not a well-formed TFTP packet; the message says why."""


@dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ: the first packet of a transfer, with the RFC 2347 options appended.

    Option names are case-insensitive, so they are stored lower-cased; values stay strings because their
    meaning (and validity) belongs to the negotiation, not to the wire format.
    """

    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)

    opcode = Opcode.RRQ  # overridden by WriteRequest

    def encode(self) -> bytes:
        fields = [self.filename, self.mode]
        for name, value in self.options.items():
            fields += [name, str(value)]
        return _U16.pack(self.opcode) + b"".join(_encode_string(f) for f in fields)


@dataclass(frozen=True, slots=True)
class ReadRequest(Request):
    opcode = Opcode.RRQ


@dataclass(frozen=True, slots=True)
class WriteRequest(Request):
    opcode = Opcode.WRQ


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_data(self.block, self.payload)


@dataclass(frozen=True, slots=True)
class Ack:
    block: int

    def encode(self) -> bytes:
        return encode_ack(self.block)


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str = ""

    def encode(self) -> bytes:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"error code out of range: {self.code}")
        message = self.message or _default_message(self.code)
        return _HEADER.pack(Opcode.ERROR, self.code) + _encode_string(message)

    @property
    def text(self) -> str:
        """A one-line description for logs and for the client's exit message."""
        return f"error {self.code}: {self.message or _default_message(self.code)}"


@dataclass(frozen=True, slots=True)
class OptionAck:
    options: dict[str, str]

    def encode(self) -> bytes:
        body = b"".join(_encode_string(s) for kv in self.options.items() for s in (kv[0], str(kv[1])))
        return _U16.pack(Opcode.OACK) + body


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck

_DATA, _ACK = int(Opcode.DATA), int(Opcode.ACK)  # plain ints: packing an IntEnum member is slower


# The two packets of the bulk data path get plain functions: a transfer sends tens of thousands of them, and
# building a dataclass just to serialise it again would be wasted work.
def encode_data(block: int, payload: bytes) -> bytes:
    try:
        return _HEADER.pack(_DATA, block) + payload
    except struct.error:
        raise ValueError(f"block number out of range: {block}") from None


def encode_ack(block: int) -> bytes:
    try:
        return _HEADER.pack(_ACK, block)
    except struct.error:
        raise ValueError(f"block number out of range: {block}") from None


def decode(datagram: bytes) -> Packet:
    """Parse one datagram; raise ``MalformedPacket`` if it is not a valid TFTP packet."""
    if len(datagram) < 2:
        raise MalformedPacket(f"datagram of {len(datagram)} byte(s) is too short for an opcode")
    (opcode,) = _U16.unpack_from(datagram)
    if opcode == Opcode.DATA:
        _need(datagram, 4, "DATA")
        return Data(_U16.unpack_from(datagram, 2)[0], bytes(datagram[4:]))
    if opcode == Opcode.ACK:
        _need(datagram, 4, "ACK")
        if len(datagram) > 4:
            raise MalformedPacket(f"ACK of {len(datagram)} bytes has trailing data")
        return Ack(_U16.unpack_from(datagram, 2)[0])
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        return _decode_request(opcode, datagram)
    if opcode == Opcode.ERROR:
        _need(datagram, 4, "ERROR")
        code = _U16.unpack_from(datagram, 2)[0]
        # Peers differ on the trailing NUL: the message ends at the first NUL or at the end of the datagram.
        message = bytes(datagram[4:]).split(b"\0", 1)[0].decode("utf-8", "replace")
        return Error(code, message)
    if opcode == Opcode.OACK:
        return OptionAck(_decode_options(_split_strings(datagram[2:], "OACK")))
    raise MalformedPacket(f"unknown opcode {opcode}")


def _decode_request(opcode: int, datagram: bytes) -> ReadRequest | WriteRequest:
    kind = Opcode(opcode).name
    strings = _split_strings(datagram[2:], kind)
    if len(strings) < 2:
        raise MalformedPacket(f"{kind} needs a filename and a mode")
    filename, mode = strings[0], strings[1].lower()
    if not filename:
        raise MalformedPacket(f"{kind} has an empty filename")
    if mode not in MODES:
        raise MalformedPacket(f"{kind} has unknown mode {_quoted(mode)}")
    cls = ReadRequest if opcode == Opcode.RRQ else WriteRequest
    return cls(filename, mode, _decode_options(strings[2:]))


def _split_strings(body: bytes, kind: str) -> list[str]:
    if not body:
        return []
    if not body.endswith(b"\0"):
        raise MalformedPacket(f"{kind} does not end with a NUL byte")
    # Filenames are bytes on the wire; surrogateescape lets any byte sequence round-trip to os functions.
    return [part.decode("utf-8", "surrogateescape") for part in bytes(body[:-1]).split(b"\0")]


def _decode_options(strings: list[str]) -> dict[str, str]:
    if len(strings) % 2:
        raise MalformedPacket(f"option {_quoted(strings[-1])} has no value")
    options: dict[str, str] = {}
    for name, value in zip(strings[::2], strings[1::2], strict=True):
        # RFC 2347 does not say what a repeated option means; the first one wins, as in tftp-hpa.
        options.setdefault(name.lower(), value)
    return options


def _quoted(text: str) -> str:
    """A peer's string for a message: quoted, escaped (``display.show``) and cut at ``QUOTED`` characters."""
    return f"'{show(text, QUOTED)}'"


def _encode_string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise ValueError(f"string {text!r} contains a NUL byte")
    return data + b"\0"


def _need(datagram: bytes, size: int, kind: str) -> None:
    if len(datagram) < size:
        raise MalformedPacket(f"{kind} of {len(datagram)} bytes is shorter than its {size}-byte header")


def _default_message(code: int) -> str:
    try:
        return ErrorCode(code).default_message
    except ValueError:
        return f"Error {code}"
