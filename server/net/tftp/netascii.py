"""Netascii, TFTP's text mode: line ends travel as CR LF and a bare CR travels as CR NUL (RFC 764, RFC 1350).

A transfer in netascii mode converts on both ends: the sender encodes the local file on the way out and the
receiver decodes on the way in. Both converters sit between a transfer and its file, so the transfer state
machines only ever see bytes, and both are streaming: a CR at the end of one block may pair with the LF or NUL
that starts the next, so the decoder holds it back until it knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ENCODE = re.compile(rb"[\r\n]")
_ENCODED = {b"\r": b"\r\0", b"\n": b"\r\n"}
_DECODE = re.compile(rb"\r[\n\0]")
_DECODED = {b"\r\n": b"\n", b"\r\0": b"\r"}


def encode(data: bytes) -> bytes:
    """Local text to netascii. Stateless: each byte maps on its own."""
    return _ENCODE.sub(lambda m: _ENCODED[m[0]], data)


class Decoder:
    """Netascii to local text, fed one block at a time."""

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, data: bytes, final: bool = False) -> bytes:
        if self._pending_cr:
            data = b"\r" + data
        # A CR as the last byte is ambiguous until the next block arrives, unless there is none.
        self._pending_cr = data.endswith(b"\r") and not final
        if self._pending_cr:
            data = data[:-1]
        # A CR followed by anything else is not valid netascii; it is kept as it is rather than refused.
        return _DECODE.sub(lambda m: _DECODED[m[0]], data)


class EncodingReader:
    """Wraps a ``read(n)`` callable so that it returns netascii, in exactly ``n``-byte pieces until the end.

    The sender needs full blocks (a short block means "end of file"), but encoding grows the data by an
    unknown amount, so the encoded surplus is buffered for the next call.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buffer = bytearray()
        self._eof = False

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and not self._eof:
            chunk = self._read(size)
            if chunk:
                self._buffer += encode(chunk)
            else:
                self._eof = True
        piece = bytes(self._buffer[:size])
        del self._buffer[:size]
        return piece


class DecodingWriter:
    """Wraps a ``write(data)`` callable so that netascii written to it reaches the file as local text."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._decoder = Decoder()

    def write(self, data: bytes) -> None:
        self._write(self._decoder.feed(data))

    def close(self) -> None:
        """Flush a CR held back at the very end of the transfer."""
        self._write(self._decoder.feed(b"", final=True))
