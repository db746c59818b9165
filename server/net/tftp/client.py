"""The TFTP client: ``get`` and ``put`` over one UDP socket, driven by the same state machines as the server.

The client is a blocking program with a single transfer, so it needs no selectors loop: it waits on its one
socket until the machine's deadline and feeds it whatever arrives. What it adds around the machine:

- Options are asked for. If the server ignores them (it answers DATA or ACK instead of OACK) the machine
  falls back to plain RFC 1350; if it refuses them with ERROR 8, the request is repeated without them.
- A download is written to a temporary file beside the destination and renamed into place only when complete:
  a failed download removes its partial file and never clobbers an existing one.
- A failure raises ``TransferFailed`` with the server's own error message.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import netascii
from . import options as opts
from .buffers import fit_window
from .files import STREAM_WAIT, StreamReader, open_local
from .packets import ErrorCode, ReadRequest, WriteRequest
from .tempfiles import DOWNLOAD_MARKER, temporary_sibling
from .transfer import Address, Receiver, Sender, State, TransferFailed

__all__ = ["TftpClient", "TransferFailed", "TransferResult"]

MAX_DATAGRAM = 65536
_FILE_BUFFER = 1 << 20  # one read or write system call per several hundred blocks


@dataclass(frozen=True)
class TransferResult:
    """What a finished transfer did, for the caller to report."""

    bytes: int
    seconds: float
    settings: opts.Settings

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.bytes / max(self.seconds, 1e-6)


Progress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes if known)
# Builds the machine for one request from the settings, the options to ask for and the current time.
_MachineFactory = Callable[[opts.Settings, dict[str, str], float], "Sender | Receiver"]


class TftpClient:
    """Talks to one TFTP server. ``blksize`` and ``windowsize`` are requested; the server may lower them."""

    def __init__(
        self,
        host: str,
        port: int = 69,
        *,
        blksize: int = opts.DEFAULT_BLKSIZE,
        windowsize: int = 1,
        timeout: float = 1.0,
        retries: int = 5,
        progress: Progress | None = None,
    ) -> None:
        if not opts.MIN_BLKSIZE <= blksize <= opts.MAX_BLKSIZE:
            raise ValueError(f"blksize must be between {opts.MIN_BLKSIZE} and {opts.MAX_BLKSIZE}")
        if not opts.MIN_WINDOWSIZE <= windowsize <= opts.MAX_WINDOWSIZE:
            raise ValueError(f"windowsize must be between {opts.MIN_WINDOWSIZE} and {opts.MAX_WINDOWSIZE}")
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._family = family
        self.server: Address = address
        self.settings = opts.Settings(blksize=blksize, windowsize=windowsize, timeout=timeout, retries=retries)
        self.progress = progress

    def download(self, remote: str, local: str | os.PathLike[str], *, mode: str = "octet") -> TransferResult:
        """Fetch ``remote`` into the file ``local``; on failure ``local`` is left as it was."""
        target = Path(local)
        fd, temp = temporary_sibling(target, DOWNLOAD_MARKER)
        try:
            with os.fdopen(fd, "wb", buffering=_FILE_BUFFER) as file:
                result = self.download_to(remote, file, mode=mode)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return result

    def download_to(self, remote: str, file: BinaryIO, *, mode: str = "octet") -> TransferResult:
        """Fetch ``remote`` and write it to an open binary file."""
        text = mode == "netascii"
        writer = netascii.DecodingWriter(file.write) if text else None
        write = writer.write if writer else file.write

        def receiver(settings: opts.Settings, options: dict[str, str], now: float) -> Receiver:
            request = ReadRequest(remote, mode, options)
            return Receiver(write, self.server, settings, now, request=request, netascii=text)

        # tsize 0 asks the server for the size, which makes the progress bar a bar.
        result = self._transfer(receiver, tsize=0)
        if writer is not None:
            writer.close()
        return result

    def upload(
        self,
        local: str | os.PathLike[str],
        remote: str | None = None,
        *,
        mode: str = "octet",
        stream_wait: float = STREAM_WAIT,
        on_wait: Callable[[], object] | None = None,
    ) -> TransferResult:
        """Send the file ``local`` to the server as ``remote`` (by default, its base name).

        ``local`` may be a stream (a FIFO, ``/dev/stdin``, ``-`` for the standard input, which needs
        ``remote``): see ``files.open_local``, and ``stream_wait`` and ``on_wait`` there. A stream that stalls
        mid-upload for as long as the server waits for our next block ((retries + 1) x timeout, or the stall
        limit) fails the transfer (``files.StreamReader``)."""
        if remote is None and os.fspath(local) == "-":
            raise ValueError("the standard input has no name: give the remote name")
        fd, size = open_local(local, stream_wait=stream_wait, on_wait=on_wait)  # never blocks, even on a FIFO
        remote = remote or Path(local).name
        with os.fdopen(fd, "rb", buffering=_FILE_BUFFER) as file:
            if size is None:
                settings = self.settings
                stall = settings.stall_limit or (settings.retries + 1) * settings.timeout
                return self._upload(StreamReader(file.fileno(), stall).read, remote, mode=mode, size=None)
            # In netascii the size on the wire is not the size on disk, so tsize is not announced.
            return self._upload(file.read, remote, mode=mode, size=None if mode == "netascii" else size)

    def upload_from(
        self, file: BinaryIO, remote: str, *, mode: str = "octet", size: int | None = None
    ) -> TransferResult:
        """Send the contents of an open binary file; ``size``, if known, is announced as tsize."""
        return self._upload(file.read, remote, mode=mode, size=size)

    def _upload(self, read: Callable[[int], bytes], remote: str, *, mode: str, size: int | None) -> TransferResult:
        """Send what ``read(n)`` returns (``n`` bytes, fewer only at the end) as ``remote``."""
        if mode == "netascii":
            read = netascii.EncodingReader(read).read

        def sender(settings: opts.Settings, options: dict[str, str], now: float) -> Sender:
            return Sender(read, self.server, settings, now, request=WriteRequest(remote, mode, options))

        return self._transfer(sender, tsize=size)

    def _transfer(self, make: _MachineFactory, *, tsize: int | None) -> TransferResult:
        started = time.monotonic()
        try:
            machine = self._run(make, tsize, with_options=True)
        except TransferFailed as exc:
            # RFC 2347: a server may refuse options with ERROR 8; then ask once more, without them.
            if not (exc.remote and exc.during_request and exc.code == ErrorCode.OPTION_NEGOTIATION):
                raise
            machine = self._run(make, tsize, with_options=False)
        return TransferResult(machine.bytes_transferred, time.monotonic() - started, machine.settings)

    def _run(self, make: _MachineFactory, tsize: int | None, *, with_options: bool) -> Sender | Receiver:
        """Run one request to its end over a fresh socket (a fresh TID); return its machine or raise."""
        with socket.socket(self._family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            settings = fit_window(sock, self.settings)  # never ask for a window this socket cannot take
            options = opts.client_options(settings, tsize=tsize) if with_options else {}
            machine = make(settings, options, time.monotonic())
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            try:
                self._send(sock, machine.start())
                while not machine.finished:
                    self._step(sock, poller, machine)
            except BaseException:  # Ctrl-C or a local failure: tell the server rather than let it time out
                if machine.state in (State.RUNNING, State.REQUESTING):
                    with contextlib.suppress(OSError):
                        self._send(sock, machine.abort())
                raise
        if self.progress is not None:
            self.progress(machine.bytes_transferred, machine.settings.tsize)
        if machine.error is not None:
            raise machine.error
        return machine

    def _step(self, sock: socket.socket, poller: select.poll, machine: Sender | Receiver) -> None:
        # Read first, wait only when nothing is queued: a window of blocks arrives as a burst, and one wait per
        # burst instead of one per datagram is much of the speed of a windowed transfer. One socket needs no
        # selector; a poll object is the cheapest wait with a timeout.
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except BlockingIOError:
            deadline = machine.deadline
            wait = 0.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                self._send(sock, machine.tick(time.monotonic()))
            return
        except ConnectionRefusedError:
            return  # an ICMP "port unreachable" for an earlier datagram; the timeout deals with a dead server
        self._send(sock, machine.datagram_received(data, addr, time.monotonic()))
        if self.progress is not None:
            self.progress(machine.bytes_transferred, machine.settings.tsize)

    @staticmethod
    def _send(sock: socket.socket, datagrams: list) -> None:
        for data, addr in datagrams:
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                pass  # a full send buffer loses the datagram as the network could; retransmission repairs it


def wait_until_answering(host: str, port: int, seconds: float = 10.0) -> None:
    """Poll a TFTP server with a read request for a missing file until it answers anything (raises TimeoutError).

    Readiness for servers started by other programs (tftpd-hpa, tftpy): any ERROR or DATA back means it listens.
    """
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.1)
        while time.monotonic() < deadline:
            probe.sendto(ReadRequest("readiness-probe").encode(), (host, port))
            try:
                probe.recvfrom(1024)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise TimeoutError(f"no TFTP server answered on {host}:{port} within {seconds:g} s")
