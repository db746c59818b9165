"""The open-file cache: a checked file stays open for a moment, and each request re-proves it with a syscall or two.

Checking a path from scratch is the expensive part of a small static response: on Linux, :mod:`.paths` opens
it with ``O_PATH``, asks ``/proc`` where the kernel's resolution landed, stats it and reopens it for reading
(five system calls and about as much Python again to build the headers). Like nginx's ``open_file_cache``,
the server keeps the outcome of that work for a short time (:data:`TTL`): for each path under a mount that
named a regular file, the open descriptor of that file (and of its precompressed siblings), the identity the
full check saw, and the headers that follow from it. The loop thread reuses it for the following requests.

A cache that skips the checks would be a way round them, so a hit is only taken when two facts, both
re-established for *this* request, show that the full check would reach the same decision right now:

1. **The path still leads to the same, unchanged file.** ``stat`` on the requested path (it follows symlinks
   and opens nothing, so it cannot block on a FIFO or touch a device) must return the identity recorded
   when the file was checked: ``st_dev``, ``st_ino`` (the same file), ``st_size`` and ``st_mtime_ns`` (the
   same contents) and ``st_ctime_ns``, which the kernel moves on every rename, link, unlink, chmod and
   chown of that file. Replace the file, rewrite it, retarget a symlink on the way or swap a directory
   for a symlink to other files, and the identity differs: the request takes the full path again. A
   precompressed sibling stands for its file, and the full check starts from the file's own path: a hit on a
   sibling re-proves the file as well as the sibling, so that a deleted file takes its ``.gz`` with it.
2. **That file still lives where it was allowed.** The full check judged the file by its real path (under
   the root, no dotfile on the way). A file can move without any change to its own identity when a
   directory above it is renamed, so before a hit the cached descriptor's real path is read back from
   ``/proc/self/fd`` (the kernel keeps it current through renames, and marks it "(deleted)" once the name
   is gone) and must be the very path that was checked. This is what refuses ``sub/b.txt`` after ``sub``
   was moved out of the root and a symlink left in its place, even though ``stat`` still finds the same,
   unchanged file. Mounts that follow symlinks skip this step, because their full check ignores real paths,
   and so do files named directly in the root and reached without a symlink: with no directory between them
   and the root, the only ways to move them (rename, link, unlink) all move their own ``st_ctime_ns``, which
   step 1 already compares. That is the most common static request, and ``readlink`` on ``/proc`` costs
   about as much as the ``stat``.

The bytes sent are always read from the cached descriptor itself, which is the file the full check opened:
whatever happens to the path between those syscalls and the ``sendfile``, nothing but that checked file
can be sent. And since the decision is proven per request instead of trusted for a while, the cache never
serves a stale version: a changed file is noticed by the very next request, exactly like without the cache.

What the cache does keep for up to :data:`TTL` is knowledge that no syscall re-proves per request: which
precompressed siblings exist (the full check stats ``.br`` and ``.gz`` beside compressible files). A sibling
created a moment ago is offered when the entry next expires, at most a second later; a sibling that was
deleted or changed fails its own two checks, and the request takes the full path.

Costs and limits. A hit costs ``stat`` plus ``readlink``, twice for a sibling (against five syscalls, plus an
``fstat`` by ``FileIO``, on a miss); directories, redirects, listings and errors are never cached, and neither are files
on systems without ``/proc`` (the portable check of :mod:`.paths` has no cheap way to re-prove a location).
The cache holds at most :func:`descriptor_budget` descriptors, oldest first out, so it can never starve
the server of connections; a descriptor is closed when its entry is evicted or replaced and no reply still
sends from it (replies share it through :class:`FileView`, which reads with ``pread`` at its own position).
Expired entries are evicted when a new one is stored and by the engine's periodic sweep
(:meth:`OpenFileCache.evict_expired`), so even a quiet server lets go of a deleted file's blocks within about
two seconds (the TTL, then the sweep's interval).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, BinaryIO

from server.oserrors import descriptor_limit

if TYPE_CHECKING:
    from .reply import Prepared

TTL = 1.0  # seconds an entry is reused before the full check runs again (sibling discovery, fd turnover)
MAX_DESCRIPTORS = 256  # at most this many cached descriptors, and at most 1/16 of the process's limit
_PROC_FD = "/proc/self/fd"
log = logging.getLogger("server.static")

# One lock for the whole module: reference counts and the table. It is held for a few dictionary operations
# only, so one lock is enough, and it keeps a reply that closes on a worker thread safe against an eviction
# on the loop thread.
_lock = threading.Lock()
_proc_fd_dir = -1  # a descriptor of /proc/self/fd, opened on first use in each process


def _after_fork_in_child() -> None:
    # A forked worker gets its own /proc/self, and must not inherit a lock another thread held at the fork.
    global _lock, _proc_fd_dir
    _lock = threading.Lock()
    _proc_fd_dir = -1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def location_of(fd: int) -> str:
    """Where the open file ``fd`` lives now, as the kernel says (``readlink /proc/self/fd/N``).

    Read relative to a descriptor of ``/proc/self/fd`` kept open, which saves the lookup of ``/proc/self``
    on each call (about a third of the cost).
    """
    global _proc_fd_dir
    if _proc_fd_dir < 0:
        _proc_fd_dir = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    return os.readlink(str(fd), dir_fd=_proc_fd_dir)


class SharedFile:
    """One open descriptor, shared by the cache entry that owns it and by every reply still sending it.

    Reference counted: created with one reference (its creator's); the descriptor is closed when the last
    one is released, so an evicted file finishes its downloads first.
    """

    __slots__ = ("_references", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._references = 1

    def acquire(self) -> bool:
        """Take a reference; False if the descriptor is already closed (its number may be reused by now)."""
        with _lock:
            if self._references <= 0:
                return False
            self._references += 1
            return True

    def release(self) -> None:
        """Give a reference back; the last one closes the descriptor."""
        with _lock:
            self._references -= 1
            last = self._references == 0
        if last:
            try:
                os.close(self.fd)
            except OSError as error:  # (EIO on a network file system: Linux has let go of the descriptor anyway)
                log.warning("closing a cached file's descriptor: %s", error)


class FileView(io.RawIOBase, BinaryIO):
    """A reply's file when it comes from the cache: a private read position on a :class:`SharedFile`.

    Several replies may send the same cached descriptor at once, so nothing may use the descriptor's own
    file position: ``readinto`` uses ``pread`` at this view's position, ``seek`` moves only this view, and
    the server's ``sendfile`` passes explicit offsets anyway. ``close`` releases the view's reference; the
    descriptor stays open for the cache and for other replies. The caller must have acquired the reference
    that the view takes over.

    Like the ``FileIO`` of an uncached reply, it is a raw binary file, and says so by deriving from
    ``typing.BinaryIO`` as well: the type of :attr:`~server.static.reply.FileReply.file`.
    """

    mode = "rb"

    def __init__(self, shared: SharedFile) -> None:
        self._shared = shared
        self._position = 0

    def fileno(self) -> int:
        self._checkClosed()
        return self._shared.fd

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        if whence == os.SEEK_CUR:
            offset += self._position
        elif whence == os.SEEK_END:
            offset += os.fstat(self._shared.fd).st_size
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence: {whence}")
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        self._position = offset
        return offset

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._checkClosed()
        data = os.pread(self._shared.fd, len(buffer), self._position)
        count = len(data)
        memoryview(buffer).cast("B")[:count] = data
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._shared.release()


class CachedFile:
    """One regular file that passed the full check: its descriptor, what proves it again, and its headers.

    ``path`` is the path as requested (root joined with the URL's segments, symlinks and all): it is what
    ``stat`` re-resolves. ``location`` is the real path the full check judged, compared with what ``/proc``
    says before each use when ``check_location`` is set.
    """

    __slots__ = ("check_location", "fd_name", "identity", "location", "path", "prepared", "shared")

    def __init__(
        self, shared: SharedFile, path: str, st: os.stat_result, location: str, check_location: bool, prepared: Prepared
    ) -> None:
        self.shared = shared
        self.path = path
        self.identity = identity_of(st)
        self.location = location
        self.check_location = check_location
        self.prepared = prepared
        self.fd_name = str(shared.fd)

    def acquire_if_unchanged(self) -> bool:
        """Re-prove this file for one request (see the module docstring) and take a reference to it.

        True: the caller holds a reference and must release it (or hand it to a :class:`FileView`).
        False: the file changed, moved, vanished or was evicted; the caller takes the full path.
        """
        try:
            st = os.stat(self.path)
        except (OSError, ValueError):
            return False
        if (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self.identity:
            return False
        # The reference comes before readlink: a descriptor closed meanwhile could be some other file's.
        if not self.shared.acquire():
            return False
        if self.check_location:
            try:
                moved = location_of(self.shared.fd) != self.location
            except OSError:
                moved = True
            if moved:
                self.shared.release()
                return False
        return True


def identity_of(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must not change for a cached decision to stand: which file, its contents, its names and mode."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CachedPath:
    """What one request path under one mount leads to: the file, and its precompressed siblings if any.

    ``codings`` are the siblings that existed when the entry was made (they decide ``Vary``); ``encoded``
    maps those that passed their own full check to their :class:`CachedFile`.
    """

    __slots__ = ("codings", "encoded", "expires", "plain")

    def __init__(self, plain: CachedFile, codings: tuple[str, ...], encoded: dict[str, CachedFile]) -> None:
        self.plain = plain
        self.codings = codings
        self.encoded = encoded
        self.expires = 0.0  # set by OpenFileCache.put

    def files(self) -> list[CachedFile]:
        return [self.plain, *self.encoded.values()]


def _release(entries: list[CachedPath]) -> None:
    """Give back the cache's references to these entries' files (a descriptor closes with its last one)."""
    for entry in entries:
        for file in entry.files():
            file.shared.release()


def descriptor_budget(limit: int | None = None) -> int:
    """How many descriptors the cache may hold: :data:`MAX_DESCRIPTORS`, or 1/16 of the soft limit if lower.

    Asked when the cache first stores something, that is after the server raised its limit at start-up; the
    server asks too, with the ``limit`` it divides, to keep this many free of connections.
    """
    return max(4, min(MAX_DESCRIPTORS, (descriptor_limit() if limit is None else limit) // 16))


class OpenFileCache:
    """Request paths to :class:`CachedPath` entries: at most ``max_descriptors`` open files, for ``ttl``.

    Entries are kept in the order they were made; an entry is remade when it expires, so the oldest is also
    the least recently proven, and it is the one evicted when the budget is full (LRU-ish, without the cost
    of reordering on every hit). Expired entries are evicted as new ones arrive, and by ``evict_expired``.
    """

    def __init__(
        self,
        *,
        ttl: float = TTL,
        max_descriptors: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_descriptors = max_descriptors
        self.clock = clock
        self._entries: dict[Hashable, CachedPath] = {}
        self._descriptors = 0

    def get(self, key: Hashable) -> CachedPath | None:
        """The entry for ``key`` if it has not expired. Its files must still be proven before use."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self.clock():
            return entry
        return None

    def put(self, key: Hashable, entry: CachedPath) -> None:
        """Store ``entry`` (which hands its files' references over to the cache), evicting as needed."""
        if self.max_descriptors is None:
            self.max_descriptors = descriptor_budget()
        now = self.clock()
        entry.expires = now + self.ttl
        added = len(entry.encoded) + 1
        with _lock:
            if added > self.max_descriptors:
                evicted = [entry]  # a budget too small for even this entry: serve it, keep nothing
            else:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._descriptors -= len(old.encoded) + 1
                evicted = self._take_oldest(now, room=added, budget=self.max_descriptors)
                if old is not None:
                    evicted.append(old)
                self._entries[key] = entry
                self._descriptors += added
        _release(evicted)

    def evict_expired(self) -> None:
        """Close the descriptors of expired entries now (the engine's periodic sweep).

        ``put`` evicts them too, but only when a new file comes: a quiet server would keep a deleted file's
        blocks allocated on disk for as long as nothing else is asked for."""
        if not self._entries:
            return
        with _lock:
            evicted = self._take_oldest(self.clock(), room=0, budget=self._descriptors)
        _release(evicted)

    def _take_oldest(self, now: float, *, room: int, budget: int) -> list[CachedPath]:
        # Lock held. Remove the oldest entries while they have expired or ``room`` more descriptors would not fit
        # in ``budget``; the caller releases them outside the lock (release takes it).
        entries = self._entries
        evicted = []
        while entries:
            oldest_key = next(iter(entries))
            oldest = entries[oldest_key]
            if oldest.expires > now and self._descriptors + room <= budget:
                break
            del entries[oldest_key]
            self._descriptors -= len(oldest.encoded) + 1
            evicted.append(oldest)
        return evicted

    def clear(self) -> None:
        """Forget every entry (descriptors close as soon as no reply is sending them)."""
        with _lock:
            entries, self._entries = self._entries, {}
            self._descriptors = 0
        _release(list(entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def descriptors(self) -> int:
        """How many descriptors the entries hold (replies may hold evicted ones a little longer)."""
        return self._descriptors
