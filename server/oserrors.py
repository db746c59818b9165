"""What an ``OSError`` means, in words a person at a terminal can act on.

Python's own text for a failed ``bind`` is ``[Errno 98] Address already in use (while attempting to bind on
address ('127.0.0.1', 9000))``: the errno number in brackets, a tuple's repr, and no hint of what to do. Every
command of this project that reports an operating-system error puts it in one sentence instead: what failed,
on which address or file, why, and what to try. The "why" and "what to try" come from here, by errno, so that
the HTTP server and the networking tools say the same thing for the same failure.

Also here, ``descriptor_limit``: how many descriptors this process may hold, which every server of the project
divides among its connections (and the static-file cache among its open files).
"""

from __future__ import annotations

import contextlib
import errno

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

UNLIMITED_DESCRIPTORS = 1 << 20  # what an unlimited RLIMIT_NOFILE counts as (Linux's default fs.nr_open)

# An accept() that fails with one of these ran out of a resource, not into a bad client: a server pauses accepting
# for a moment (the connections wait in the kernel's queue) instead of spinning on the failure or giving up.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# errno -> (why, what to try). The common failures of binding, connecting and opening files.
_REASONS: dict[int, tuple[str, str]] = {
    errno.EADDRINUSE: ("the address is already in use", "is another server running on it? choose another port"),
    errno.EADDRNOTAVAIL: ("that address is not one of this machine's", "use 127.0.0.1, 0.0.0.0 or a local address"),
    errno.EACCES: ("permission denied", "ports below 1024 need root; files need read or write permission"),
    errno.EPERM: ("operation not permitted", "check the permissions"),
    errno.ECONNREFUSED: ("connection refused: nothing is listening there", "is the server running, on that port?"),
    errno.ECONNRESET: ("the connection was reset by the other side", "try again; check the server's log"),
    errno.ETIMEDOUT: ("the connection timed out", "is the host reachable?"),
    errno.EHOSTUNREACH: ("the host is unreachable", "check the address and the network"),
    errno.ENETUNREACH: ("the network is unreachable", "check the address and the network"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "name a file"),
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EMFILE: ("too many open files in this process", "raise the limit (ulimit -n)"),
    errno.ENFILE: ("too many open files on this machine", "close some programs, or raise the system's limit"),
}


def describe(error: OSError) -> str:
    """``"the address is already in use (is another server running on it? choose another port)"``: why the
    operation failed and what to try, without the errno number; the system's own words for the rare errors
    not listed here."""
    found = _REASONS.get(error.errno or 0)
    if found is None:
        return (error.strerror or str(error)).lower() if error.strerror else str(error)
    why, hint = found
    return f"{why} ({hint})"


def descriptor_limit(*, raise_to_hard: bool = False) -> int:
    """The soft limit on open descriptors (RLIMIT_NOFILE); an unlimited one counts as ``UNLIMITED_DESCRIPTORS``.

    With ``raise_to_hard``, the soft limit is first raised as far as the hard limit allows: each connection costs
    a descriptor, and a server should not stop at a shell's default of 1,024 when the system allows more."""
    if resource is None:  # pragma: no cover - not POSIX
        return UNLIMITED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_DESCRIPTORS
    if raise_to_hard:
        target = UNLIMITED_DESCRIPTORS if hard == resource.RLIM_INFINITY else hard
        if soft < target:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
                soft = target
    return soft
