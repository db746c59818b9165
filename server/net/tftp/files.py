"""Opening what a TFTP request names: regular files under the root only, and never in a way that can block.

The server's loop serves every transfer from one thread, so one blocking system call stops them all. Opening a
FIFO for reading blocks until some process opens it for writing, possibly forever; opening a device can block
too, or do something to the device (a tape rewinds when opened). So a name is never opened for reading until
we know it is a regular file, and the check cannot be fooled by the name changing in between. The idea is the
one ``server/static/paths.py`` uses for HTTP (its code is tied to URL segments and mount options, so the idea
is reused here, not the code):

- On Linux the path is opened with ``O_PATH``, which resolves it (symlinks included) without opening the file
  itself: no FIFO blocks and no device is touched. ``/proc/self/fd`` says where the resolution landed, which
  must still be under the root, and ``fstat`` on that descriptor says what it is. Only a regular file is then
  reopened for reading, through the same descriptor: the very inode that was checked, whatever happened to
  the path since.
- Elsewhere the resolved path is opened with ``O_NONBLOCK`` (a FIFO opens at once instead of waiting for a
  writer) and ``O_NOFOLLOW``, and ``fstat`` decides before a single byte is read.

The client's ``put`` reads what the user names (``open_local``): a regular file, or a stream (a FIFO, a pipe
such as ``/dev/stdin`` or a shell's ``<(cmd)``, a character device), opened the same non-blocking way.

For uploads, ``check_replaceable`` refuses to put a file in the place of anything but a regular file (a FIFO, a
socket or a device node in the root is not ours to replace, even with ``--overwrite``).
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import time
from collections.abc import Callable
from pathlib import Path

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK changes nothing for a regular file's reads; it only matters if something else slipped through.
_READ_FLAGS = os.O_RDONLY | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_PATH = getattr(os, "O_PATH", 0)
_PROC_FD = "/proc/self/fd"
KERNEL_CHECK = bool(_O_PATH) and os.path.isdir(_PROC_FD)  # Linux: resolve with O_PATH, check, then reopen

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class NotRegularFile(Exception):
    """The name leads to something other than a regular file; the message says what it is."""

    def __init__(self, mode: int) -> None:
        self.kind = next((kind for test, kind in _KINDS if test(mode)), "a special file")
        super().__init__(f"not a regular file ({self.kind})")


class OutsideRoot(Exception):
    """The kernel resolved the name to a place outside the root (a symlink swapped in after the checks)."""


def open_regular(path: Path, root: Path) -> tuple[int, os.stat_result]:
    """Open ``path`` (already resolved inside ``root``) for reading if it is a regular file; never blocks.

    Returns the descriptor (the caller closes it) and its ``fstat``. Raises ``NotRegularFile``, ``OutsideRoot``
    or ``OSError`` (missing, unreadable).
    """
    if KERNEL_CHECK:
        return _open_checked_by_kernel(path, root)
    return _checked_regular(os.open(path, _READ_FLAGS | _NOFOLLOW))


# How long ``open_local`` waits for a named FIFO's first byte (or its end) before refusing it; see there.
STREAM_WAIT = 5.0
# Names of a descriptor this process inherited (``-`` is the standard input): a pipe there always has a writer,
# the process at its other end, however long it takes to write. ``<(cmd)`` is ``/dev/fd/63``.
_INHERITED = re.compile(r"-|/dev/stdin|/dev/fd/\d+|/proc/self/fd/\d+")


class NothingToRead(Exception):
    """A FIFO from which nothing came within the wait: most likely nobody is writing to it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"nothing to read within {seconds:g} s: is anything writing to it?")


def is_inherited(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a descriptor this process inherited (see ``_INHERITED``)."""
    return _INHERITED.fullmatch(os.fspath(path)) is not None


def open_local(
    path: str | os.PathLike[str],
    *,
    stream_wait: float = STREAM_WAIT,
    on_wait: Callable[[], object] | None = None,
) -> tuple[int, int | None]:
    """Open a file the user named (the client's upload) for reading: the descriptor and its size, None for a
    stream. ``-`` is the standard input.

    Unlike ``open_regular`` there is no root to stay in and symlinks are followed: the user may name any file,
    and streams are welcome: ``tftp put HOST /dev/stdin NAME``, ``<(cmd)``, a FIFO, a character device. A
    stream has no size to announce (its ``st_size`` is 0, which would say "empty"), so the caller announces
    none. What is refused (``NotRegularFile``) is what cannot be read as a file: a directory, a socket.

    The open itself is non-blocking: opening a FIFO waits for a writer, possibly forever, and opening a device
    may wait too. Then, before any request is sent, a pipe's first byte (or its end) is waited for: once the
    request is out, the server gives up on a client that sends nothing for its own timeouts.

    - A named FIFO must deliver within ``stream_wait`` seconds, else ``NothingToRead``: it may have no writer
      at all, and a read would then see an end of file at once and send an empty file. Better a clear refusal
      before than a failed transfer after. (On Linux a FIFO opened without a writer is not readable, not even
      hung up, until one comes.)
    - An inherited pipe (``-``, ``/dev/stdin``, ``/dev/fd/N``, ``/proc/self/fd/N``) always has a writer, the
      process at its other end, so it is waited for without limit: ``(sleep 6; echo hi) | tftp put HOST -
      NAME`` was refused by the rule above. ``on_wait`` is called once if nothing came within ``stream_wait``
      seconds, for the caller to say what it waits for.

    Read a stream through ``StreamReader``, which bounds each wait. Raises ``NotRegularFile``,
    ``NothingToRead`` or ``OSError``.
    """
    fd = os.dup(0) if os.fspath(path) == "-" else os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            # From the current offset: standard input may be a file that was read from already.
            return fd, max(0, info.st_size - os.lseek(fd, 0, os.SEEK_CUR))
        if not (stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode)):
            raise NotRegularFile(info.st_mode)
        if stat.S_ISFIFO(info.st_mode) and not _readable_within(fd, stream_wait):
            if not is_inherited(path):
                raise NothingToRead(stream_wait)
            if on_wait is not None:
                on_wait()
            _readable_within(fd, None)
        os.set_blocking(fd, True)  # StreamReader polls before each read: a read then never waits
    except BaseException:
        os.close(fd)
        raise
    return fd, None


class StreamStalled(TimeoutError):
    """Nothing came from the stream being uploaded for longer than the server waits for our next block."""

    def __init__(self, seconds: float) -> None:
        super().__init__(errno.ETIMEDOUT, f"nothing came from the stream for {seconds:g} s")


class StreamReader:
    """Reads a stream the way the ``Sender`` wants: ``read(n)`` returns ``n`` bytes, fewer only at the end, and
    never waits longer than ``stall`` seconds for the next byte.

    The client's loop calls ``read`` between two datagrams: a plain blocking read of a writer that stalls
    mid-upload hung the client forever, long after the server had given up. A wait that runs out raises
    ``StreamStalled`` (an ``OSError``), which the ``Sender`` turns into a failed transfer and an ERROR to the
    server."""

    def __init__(self, fd: int, stall: float) -> None:
        self._fd = fd
        self._stall = stall

    def read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        wanted = size
        # One deadline for the whole block: a writer trickling a byte every few seconds would otherwise restart
        # the wait with each byte, and hold the client in one read for minutes while the server gave up.
        deadline = time.monotonic() + self._stall
        while wanted > 0:
            # Poll, then read: once a pipe or a terminal is readable, a read returns what is there at once.
            # (The descriptor is not made non-blocking: for the standard input that flag would be shared with
            # the shell and whoever else holds it, and outlive us.)
            if not _readable_within(self._fd, max(0.0, deadline - time.monotonic())):
                raise StreamStalled(self._stall)
            chunk = os.read(self._fd, wanted)
            if not chunk:
                break  # the end of the stream
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)


def _readable_within(fd: int, seconds: float | None) -> bool:
    """Whether ``fd`` has data or its end within ``seconds`` (None: however long it takes; a hang-up counts:
    the writer came and went)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # POLLHUP and POLLERR are always reported
    return bool(poller.poll(None if seconds is None else seconds * 1000))


def _checked_regular(fd: int) -> tuple[int, os.stat_result]:
    """``fd`` and its ``fstat`` if it is a regular file; otherwise close it and raise ``NotRegularFile``."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def _open_checked_by_kernel(path: Path, root: Path) -> tuple[int, os.stat_result]:
    handle = os.open(path, _O_PATH | _CLOEXEC)  # resolves every symlink; opens nothing, so nothing blocks
    try:
        real = os.readlink(f"{_PROC_FD}/{handle}")  # where the kernel's resolution really landed
        if not is_within(real, str(root)):
            raise OutsideRoot(real)
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(info.st_mode)
        # Reopening through /proc reads the very inode that was checked, whatever happened to the path since.
        return os.open(f"{_PROC_FD}/{handle}", _READ_FLAGS), info
    finally:
        os.close(handle)


def check_replaceable(path: Path) -> None:
    """Raise ``NotRegularFile`` if something other than a regular file (or nothing) is at ``path``."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(info.st_mode)


def is_within(path: str, root: str) -> bool:
    """True if the real path ``path`` is ``root`` itself or lies below it."""
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)
