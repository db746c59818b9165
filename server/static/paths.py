"""From a percent-encoded URL path to an open file under the root, refusing every way out.

Two layers, because each catches what the other cannot:

1. :func:`split_request_path` works on the URL alone. It splits the raw path on "/" *before* decoding, so an
   encoded slash can never become a separator, then decodes each segment as strict UTF-8 and refuses any
   segment that could mean something to the filesystem: "." and "..", empty segments (doubled slashes),
   slashes and backslashes (raw or encoded), NUL bytes, and dotfiles unless the mount allows them. Invalid
   UTF-8 is refused too, with a 404 rather than a 400: a name that cannot be decoded cannot exist under the
   root, and a 404 tells an attacker nothing about why.

2. :func:`open_under_root` works on the filesystem, and judges where a path *really* leads: outside the root is
   refused unless the mount follows symlinks, and to a dotfile once symlinks are resolved is refused unless the
   mount serves dotfiles (the two options are independent: following links never unhides ``.env``). Checking a path
   and then opening it leaves a window in which a directory can be swapped for a symlink, so on Linux the
   kernel resolves and we check its answer: the path is opened with ``O_PATH`` (which resolves it without
   opening the file itself, so no device is touched and no FIFO blocks), ``/proc/self/fd`` says which file
   that is, and only an allowed regular file is then reopened for reading, through that same descriptor.
   Elsewhere, ``realpath`` does the resolving and the resolved path is opened with ``O_NOFOLLOW``, which
   guards the last component; an intermediate directory swapped in the window is the residual risk there.

Either way the cost is a handful of system calls on cached metadata, and no file contents are read. The
server pays it once per file and second, not per request: :mod:`server.static.cache` keeps the descriptor this
module opened, and proves with two cheaper syscalls that a new check would reach the same file at the same place.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from server.oserrors import OUT_OF_RESOURCES

from .mount import StaticOptions

# Never allowed in a decoded segment: the path separators of any platform, and the C string terminator.
_FORBIDDEN_IN_SEGMENT = ("/", "\\", "\x00")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_PATH = getattr(os, "O_PATH", 0)
# Where Linux says what an open descriptor points at. Without it (or O_PATH), realpath + O_NOFOLLOW remain.
_PROC_FD = "/proc/self/fd"
KERNEL_CHECK = bool(_O_PATH) and os.path.isdir(_PROC_FD)


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
    # Most paths are plain ASCII without escapes, and need no decoding at all.
    plain = rest.isascii() and "%" not in rest
    segments = []
    for raw in raw_segments:
        segment = raw if plain else _decode_segment(raw)
        if segment is None or not _segment_allowed(segment, dotfiles):
            return None
        segments.append(segment)
    return RequestPath(tuple(segments), trailing_slash)


def _decode_segment(raw: str) -> str | None:
    """Percent-decode one raw segment as UTF-8; None for characters HTTP cannot carry or for invalid UTF-8."""
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def _segment_allowed(segment: str, dotfiles: bool) -> bool:
    # "" comes from a doubled slash: refused, so that "//host" can never reach a Location header.
    if segment in ("", ".", ".."):
        return False
    # Checked after decoding, so a raw backslash and an encoded one (%5c) are refused alike.
    if any(char in segment for char in _FORBIDDEN_IN_SEGMENT):
        return False
    return dotfiles or not segment.startswith(".")


@dataclass
class Opened:
    """A file or directory found under the root: its real path, what fstat said, and (for files) a descriptor.

    Directories carry no descriptor (``fd == -1``): the caller only needs to know they are there.
    """

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

    ``root`` is a real path (no symlinks). The caller owns the returned descriptor (``Opened.close``).
    Raises the ``OSError`` of a process or system out of descriptors or memory (``OUT_OF_RESOURCES``): the
    file may well be there, and a 404 would tell clients and caches that it is not (the caller answers 503).
    """
    candidate = os.path.join(root, *segments)
    try:
        if KERNEL_CHECK:
            return _open_checked_by_kernel(candidate, root, options)
        return _open_checked_by_realpath(candidate, root, options)
    except OSError as error:
        if error.errno in OUT_OF_RESOURCES:
            raise
        return None  # missing, unreadable, not a directory, a symlink loop
    except ValueError:  # a NUL byte
        return None


def _open_checked_by_kernel(candidate: str, root: str, options: StaticOptions) -> Opened | None:
    handle = os.open(candidate, _O_PATH | _CLOEXEC)  # resolves every symlink; opens nothing
    try:
        real = os.readlink(f"{_PROC_FD}/{handle}")  # where the kernel's resolution really landed
        if not allowed_target(real, root, options):
            return None
        st = os.fstat(handle)
        if stat.S_ISDIR(st.st_mode):
            return Opened(real, -1, st)
        if not stat.S_ISREG(st.st_mode):
            return None
        # Reopening through /proc reads the very inode that was checked, whatever happened to the path since.
        return Opened(real, os.open(f"{_PROC_FD}/{handle}", _READ_FLAGS), st)
    finally:
        os.close(handle)


def _open_checked_by_realpath(candidate: str, root: str, options: StaticOptions) -> Opened | None:
    path = os.path.realpath(candidate)
    if not allowed_target(path, root, options):
        return None
    flags = _READ_FLAGS if options.follow_symlinks else _READ_FLAGS | _NOFOLLOW
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO must not hang the caller here
    opened = Opened(path, fd, os.fstat(fd))
    if stat.S_ISDIR(opened.stat.st_mode):
        opened.close()
        return opened
    if not stat.S_ISREG(opened.stat.st_mode):
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
    # A symlink named "style.css" pointing at ".env" must not smuggle a dotfile out: check the real names too.
    return dotfiles or (os.sep + ".") not in path[len(root.rstrip(os.sep)) :]


def allowed_target(path: str, root: str, options: StaticOptions) -> bool:
    """May the mount serve what a request resolved to, the real path ``path``? Each option lifts one rule only.

    ``follow_symlinks`` lifts containment: a link may lead out of the root. It does not lift the dotfile rule,
    which ``dotfiles`` alone does: a link named ``notdot.txt`` pointing at ``.env`` is still a dotfile. Below the
    root, the names below it are judged, as without links. Outside, the target's own name only: the folders on
    its way are where the link's author chose to publish from, and a package manager's or a virtualenv's are
    dotted (``node_modules/.pnpm/...``, ``.venv/...``, ``~/.local/...``); refusing them made the option useless
    for the sites that need it, with ``--static-dotfiles`` (which publishes ``.git`` in the root) the only way
    round."""
    if not options.follow_symlinks or is_within(path, root):
        return allowed_real_path(path, root, options.dotfiles)
    return options.dotfiles or not os.path.basename(path).startswith(".")
