"""From a percent-encoded URL path to an open file under the root, refusing every way out.

Two layers, because each catches what the other cannot:

1. :func:`split_request_path` works on the URL alone. It splits the raw path on "/" *before* percent-decoding,
   so an encoded slash can never become a separator, then decodes each segment as strict UTF-8 and refuses any
   segment that could mean something to the filesystem: "." and "..", empty segments (doubled slashes),
   slashes and backslashes (raw or encoded), NUL bytes, and dotfiles unless the mount allows them. Invalid
   UTF-8 is refused too, with a 404 rather than a 400: a name that cannot be decoded cannot exist under the
   root, and a 404 tells an attacker nothing about why.

2. :func:`open_under_root` works on the filesystem. Unless the mount follows symlinks, it resolves the path
   with ``realpath`` and refuses anything whose real location is outside the root (or is a dotfile once
   resolved), opens the *resolved* path with ``O_NOFOLLOW`` so the last component cannot be swapped for a
   symlink after the check, and finally asks the kernel (``/proc/self/fd``) which file it really opened, which
   closes the remaining race of a directory being swapped for a symlink between the check and the open.

Files are opened with ``O_NONBLOCK`` so that a FIFO in the tree cannot hang the event loop in ``open()``;
anything that is not a regular file or a directory is refused after ``fstat``. The cost is one ``realpath``
(an ``lstat`` per component, all from the kernel's cache), one ``open``, one ``fstat`` and one ``readlink``:
no file contents.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .mount import StaticOptions

# Never allowed in a decoded segment: the path separators of any platform, and the C string terminator.
_FORBIDDEN_IN_SEGMENT = ("/", "\\", "\x00")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Where the kernel says what an open descriptor points at (Linux). Without it, realpath + O_NOFOLLOW remain.
_PROC_FD = "/proc/self/fd"
_HAVE_PROC_FD = os.path.isdir(_PROC_FD)


@dataclass(frozen=True)
class RequestPath:
    """A request path that passed the URL checks: decoded segments, and whether it ended with a slash."""

    segments: tuple[str, ...]
    trailing_slash: bool


def split_request_path(rest: str, *, dotfiles: bool = False) -> RequestPath | None:
    """Split and decode the part of the URL path below a mount; None if any segment is refused.

    ``rest`` is what :meth:`StaticMount.match` returned: "" for the mount itself, else it starts with "/". It
    is the raw request path, whose characters stand for bytes (latin-1), as HTTP carries them.
    """
    if rest == "":
        return RequestPath((), trailing_slash=False)
    if not rest.startswith("/"):
        return None
    raw_segments = rest[1:].split("/")
    trailing_slash = raw_segments[-1] == ""
    if trailing_slash:
        raw_segments.pop()
    segments = []
    for raw in raw_segments:
        segment = _decode_segment(raw)
        if segment is None or not _segment_allowed(segment, dotfiles):
            return None
        segments.append(segment)
    return RequestPath(tuple(segments), trailing_slash)


def _decode_segment(raw: str) -> str | None:
    """Percent-decode one raw segment as UTF-8; None for characters HTTP cannot carry or for invalid UTF-8."""
    if "\\" in raw:  # a raw backslash is refused before decoding; an encoded one (%5c) after
        return None
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def _segment_allowed(segment: str, dotfiles: bool) -> bool:
    # "" comes from a doubled slash: refused, so that "//host" can never reach a Location header.
    if segment in ("", ".", ".."):
        return False
    if any(char in segment for char in _FORBIDDEN_IN_SEGMENT):
        return False
    return dotfiles or not segment.startswith(".")


@dataclass
class Opened:
    """A file or directory opened under the root: its real path, an open descriptor and what fstat said."""

    path: str
    fd: int
    stat: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_under_root(root: str, segments: tuple[str, ...], options: StaticOptions) -> Opened | None:
    """Open ``root/segments...`` if it is a regular file or directory that the options allow; else None.

    The caller owns the returned descriptor (``Opened.close``).
    """
    candidate = os.path.join(root, *segments)
    if options.follow_symlinks:
        path, flags = candidate, _OPEN_FLAGS
    else:
        path = os.path.realpath(candidate)
        if not allowed_real_path(path, root, options.dotfiles):
            return None
        flags = _OPEN_FLAGS | _NOFOLLOW
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):  # missing, unreadable, a symlink swapped in (ELOOP), or a NUL byte
        return None
    opened = Opened(path, fd, os.fstat(fd))
    kind = opened.stat.st_mode
    if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)) or (
        not options.follow_symlinks and not _really_opened(fd, path)
    ):
        opened.close()
        return None
    return opened


def is_within(path: str, root: str) -> bool:
    """True if the real path ``path`` is ``root`` itself or lies below it."""
    if path == root:
        return True
    return path.startswith(root if root.endswith(os.sep) else root + os.sep)


def allowed_real_path(path: str, root: str, dotfiles: bool) -> bool:
    """May the mount serve the file whose real path is ``path``? Under the root; no dotfile unless allowed."""
    if not is_within(path, root):
        return False
    if dotfiles:
        return True
    # A symlink named "style.css" pointing at ".env" must not smuggle a dotfile out: check the real names too.
    relative = os.path.relpath(path, root)
    return relative == "." or not any(part.startswith(".") for part in relative.split(os.sep))


def _really_opened(fd: int, path: str) -> bool:
    """Ask the kernel which file the descriptor refers to; it must be the path we checked."""
    if not _HAVE_PROC_FD:
        return True
    try:
        return os.readlink(f"{_PROC_FD}/{fd}") == path
    except OSError:
        return False
