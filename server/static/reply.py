"""Decide the response for a static file: status, headers, and which bytes of which open file make the body.

This is the sans-IO core of static serving. :func:`serve_path` and :func:`serve_file` take a method, a path
and the request headers, resolve and open the file once (plus a stat per possible precompressed sibling) and
never read its contents (except a small cached body when the server's loop asks: ``read_up_to``); they return a
:class:`FileReply` that says what to send. The caller does the sending:
the event loop with ``os.sendfile`` on a non-blocking socket (:mod:`server.engine`), or a WSGI server through
``wsgi.file_wrapper`` (:mod:`server.static.wsgi`). Keeping the decision apart from the I/O is what lets one
set of rules serve both, and lets the tests check every rule without a socket.

The order of decisions for a path under a mount:

1. URL checks (:func:`~server.static.paths.split_request_path`) and the safe open
   (:func:`~server.static.paths.open_under_root`): anything refused or missing is 404. A 404 also tells the
   WSGI middleware to pass the request to the application. A process out of descriptors (or memory) cannot
   tell whether the file is there: that is a 503 with Retry-After, at any step, never a 404.
2. Method: only GET and HEAD; anything else that exists gets 405 with ``Allow``.
3. Directories: ``/dir`` redirects to ``/dir/`` (query kept); ``/dir/`` serves ``index.html``, or a listing
   if enabled, else 404 (also when the directory cannot be read: a listing refused is no different from none).
4. Precompressed sibling chosen from Accept-Encoding (:mod:`server.static.media`).
5. Preconditions (412/304), then Range (206/416) (:mod:`server.static.validators`).

Steps 1 to 4 depend on the file system only, step 5 on the request only. So for the server's own requests
(:func:`serve_path`) a regular file found by steps 1 to 4 is remembered in the open-file cache
(:mod:`server.static.cache`) with everything its metadata decides: the validators and the header list, in a
:class:`Prepared`. The next GET or HEAD for that path re-proves the remembered outcome of steps 1 to 4 with a
``stat`` and a ``readlink`` (two syscalls instead of five, and no open; a precompressed sibling re-proves its
file too) and goes straight to step 5.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO
from urllib.parse import quote

from server.accesslog import Occasional
from server.oserrors import OUT_OF_RESOURCES, describe

from . import paths
from .cache import CachedFile, CachedPath, FileView, OpenFileCache, SharedFile
from .listing import render_listing
from .media import PRECOMPRESSED, choose_coding, content_type, may_have_siblings, preferred_codings
from .mount import StaticMount
from .paths import Opened, RequestPath, open_under_root, split_request_path
from .validators import (
    UNSATISFIABLE,
    ByteRange,
    check_preconditions,
    http_date,
    if_range_allows,
    last_modified,
    make_etag,
    parse_range,
)

log = logging.getLogger("server.static")

ALLOWED_METHODS = ("GET", "HEAD")
_ALLOW = ("Allow", ", ".join(ALLOWED_METHODS))
_INDEX = "index.html"
_SUFFIX_OF = dict(PRECOMPRESSED)  # content-coding -> file suffix
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
# Characters left as they are when a request path is echoed in a Location header: the URL's own syntax, and
# "%" so that its existing escapes survive. Anything else (there should be nothing else) is percent-encoded.
_LOCATION_SAFE = "/%:@!$&'()*+,;=-._~"
# A query echoed after it may also hold "?" (RFC 3986 3.4). Everything else is encoded: a CR or LF cannot end the
# header, a "#" cannot start a fragment, and nothing after the "?" can change which host or path is redirected to.
_QUERY_SAFE = _LOCATION_SAFE + "?"
# Sent with every file: browsers must take the Content-Type given, not guess HTML or script from the bytes of an
# uploaded or user-named file (the demo's download route sets it too; for a file served here it is the same rule).
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
# A 503 for a process out of descriptors: one second, since each download that ends gives one back.
_RETRY_AFTER = ("Retry-After", "1")
_out_of_resources_warning = Occasional(log)
_unreadable_directory_warning = Occasional(log)


@dataclass(slots=True)
class FileReply:
    """What to answer; the caller does the I/O.

    ``headers`` are complete (Content-Length, Content-Type, ETag, ...) except the ones every response gets
    from the server (Date, Server, Connection). The body is either ``body`` (small, in memory) or ``length``
    bytes of ``file`` starting at ``offset``. A 304 has no Content-Length: it has no body, and the header
    would have to repeat the full file's size. The caller must :meth:`close` the reply once sent (or if it
    gives up).
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    file: BinaryIO | None = None
    offset: int = 0
    length: int = 0
    _closed: bool = field(default=False, repr=False)
    # ``headers`` as the lines of a head ("Name: value\r\n" each), when they are a cached file's usual ones: the
    # server then sends these, serialised once per file instead of once per request. Empty: serialise headers.
    head_lines: str = ""

    def close(self) -> None:
        """Close the file, if any. Safe to call twice."""
        if self.file is not None and not self._closed:
            self._closed = True
            self.file.close()

    def __enter__(self) -> FileReply:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def header(self, name: str) -> str | None:
        """The value of the response header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)


# -- entry points --------------------------------------------------------------------------------------------

# The server's open-file cache (see server.static.cache): one per process, shared by every mount.
OPEN_FILES = OpenFileCache()


def serve_path(
    mount: StaticMount,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    *,
    read_up_to: int = 0,
    query: str = "",
) -> FileReply:
    """Answer a request for ``raw_path`` (percent-encoded, no query string) from ``mount``.

    ``headers`` maps lower-case request header names to values (repeated headers joined with ", ").
    ``query`` (without its "?") is kept in the Location of a directory's redirect, as nginx keeps it.
    ``read_up_to``: a body of at most this many bytes from a cached file comes read, in ``body``, rather than as a
    ``file`` (the server reads small files into the head's buffer anyway; see :func:`_reply_from_cache`).

    This is the server's entry point, and the only one that uses the open-file cache (:data:`OPEN_FILES`):
    a GET or HEAD for a path that led to a regular file a moment ago is answered from the cached decision
    once two syscalls have proven it still holds; anything else takes the full path and may fill the cache.
    The file of a reply from here is then a :class:`~server.static.cache.FileView` of a shared descriptor:
    send it with ``sendfile`` at ``offset`` (or ``seek`` and ``read`` it), and ``close`` the reply. Callers
    that pass ``read_up_to`` handle both forms: a hit's small body in ``body`` (``file`` None), and a miss's,
    or a bigger body, as a file.
    """
    rest = mount.match(raw_path)
    if rest is None:
        return error_reply(404, method)
    if paths.KERNEL_CHECK and (method == "GET" or method == "HEAD"):
        key = (mount.cache_id, rest)
        entry = OPEN_FILES.get(key)
        if entry is not None:
            reply = _reply_from_cache(entry, method, headers, read_up_to)
            if reply is not None:
                return reply
        return serve_under_root(
            mount, method, rest, raw_path, headers, display_prefix=mount.prefix + "/", key=key, query=query
        )
    return serve_under_root(mount, method, rest, raw_path, headers, display_prefix=mount.prefix + "/", query=query)


def serve_file(
    path: str | os.PathLike,
    method: str,
    headers: Mapping[str, str],
    *,
    max_age: int | None = None,
    content_type: str | None = None,
    download_name: str | None = None,
) -> FileReply:
    """Answer a request for one known file with the same conditional and range rules as a mount.

    No path resolution and no containment check: the caller chose the file. ``download_name`` adds
    ``Content-Disposition: attachment``; ``content_type`` overrides the guess from the name. Never cached:
    the reply's file is a plain file object of its own, which a WSGI server may hand to ``sendfile``.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno in OUT_OF_RESOURCES:
            return out_of_resources_reply(method, error)
        return error_reply(404, method)
    except ValueError:
        return error_reply(404, method)
    opened = Opened(os.fsdecode(path), fd, os.fstat(fd))
    if not stat.S_ISREG(opened.stat.st_mode):
        opened.close()
        return error_reply(404, method)
    if method not in ALLOWED_METHODS:
        opened.close()
        return error_reply(405, method, [_ALLOW])
    extra = [("Content-Disposition", content_disposition(download_name))] if download_name else []
    media_type = content_type or _media_type_of(download_name or opened.path)
    return file_reply(opened, method, headers, media_type=media_type, max_age=max_age, extra_headers=extra)


def serve_under_root(
    mount: StaticMount,
    method: str,
    rest: str,
    request_path: str,
    headers: Mapping[str, str],
    *,
    display_prefix: str,
    key: tuple[int, str] | None = None,
    query: str = "",
) -> FileReply:
    """:func:`serve_path` after the prefix was matched: ``rest`` is the raw path below the mount.

    ``request_path`` is the full raw path the client asked for, echoed (plus "/", plus "?" and ``query`` if
    any) when a directory redirects; ``display_prefix`` is the mount's URL shown in a listing's title. The WSGI
    app passes its own values for both. With a cache ``key`` (from :func:`serve_path` only), a regular file
    found here is remembered.
    """
    try:
        return _serve_under_root(mount, method, rest, request_path, headers, display_prefix, key, query)
    except OSError as error:
        if error.errno not in OUT_OF_RESOURCES:
            raise
        return out_of_resources_reply(method, error)


def _serve_under_root(
    mount: StaticMount,
    method: str,
    rest: str,
    request_path: str,
    headers: Mapping[str, str],
    display_prefix: str,
    key: tuple[int, str] | None,
    query: str,
) -> FileReply:
    """:func:`serve_under_root`, which may raise an ``OSError`` of ``OUT_OF_RESOURCES`` from any step."""
    options = mount.options
    target = split_request_path(rest, dotfiles=options.dotfiles)
    if target is None:
        return error_reply(404, method)
    root = str(mount.root)
    opened = open_under_root(root, target.segments, options)
    if opened is None:
        return error_reply(404, method)
    if method not in ALLOWED_METHODS:
        opened.close()
        return error_reply(405, method, [_ALLOW])
    if opened.is_dir:
        opened.close()
        location = _directory_location(request_path, query)
        return _serve_directory(mount, method, target, location, headers, display_prefix, opened.path, key)
    if target.trailing_slash:  # "/style.css/" names a directory that does not exist
        opened.close()
        return error_reply(404, method)
    return _serve_regular(mount, method, headers, opened, target.segments, key)


# -- the pieces ----------------------------------------------------------------------------------------------


def _directory_location(request_path: str, query: str) -> str:
    """Where ``/dir`` redirects: ``/dir/``, with the request's query (a search form's, a tracking tag's) kept."""
    location = quote(request_path.encode("latin-1", "replace") + b"/", safe=_LOCATION_SAFE)
    if query:
        location += "?" + quote(query.encode("latin-1", "replace"), safe=_QUERY_SAFE)
    return location


def _serve_directory(
    mount: StaticMount,
    method: str,
    target: RequestPath,
    location: str,
    headers: Mapping[str, str],
    display_prefix: str,
    real_dir: str,
    key: tuple[int, str] | None = None,
) -> FileReply:
    if not target.trailing_slash:
        # Relative links inside an index page only resolve correctly from a URL that ends with "/".
        return error_reply(301, method, [("Location", location)])
    root = str(mount.root)
    index_segments = (*target.segments, _INDEX)
    index = open_under_root(root, index_segments, mount.options)
    if index is not None:
        if not index.is_dir:
            # The full check judged the directory too. A cache hit re-proves only the index file's real path,
            # which vouches for the directory only when the path has no symlink at all: then the directory's
            # real path is the index's minus "/index.html", and was allowed when the index's is.
            if (
                key is not None
                and not mount.options.follow_symlinks
                and index.path != os.path.join(root, *index_segments)
            ):
                key = None
            return _serve_regular(mount, method, headers, index, index_segments, key)
        index.close()
    if not mount.options.listing:
        return error_reply(404, method)
    display = display_prefix + "".join(segment + "/" for segment in target.segments)
    try:
        page = render_listing(real_dir, display, root, mount.options, has_parent=bool(target.segments))
    except OSError as error:
        if error.errno in OUT_OF_RESOURCES:
            raise
        # A folder this process may not read (mode 311, say) is answered as one without a listing: 404, not 403,
        # so a refused listing tells a visitor nothing a missing one would not. Whoever runs the server hears why.
        _unreadable_directory_warning.warning("cannot list %s: %s; answering 404", real_dir, describe(error))
        return error_reply(404, method)
    return small_reply(200, method, page, "text/html; charset=utf-8", [_NOSNIFF])


def _serve_regular(
    mount: StaticMount,
    method: str,
    headers: Mapping[str, str],
    opened: Opened,
    segments: tuple[str, ...],
    key: tuple[int, str] | None = None,
) -> FileReply:
    """Serve a regular file found under the mount (at ``segments``), or its best precompressed sibling.

    Siblings are looked for beside the name that was asked for, as the URL has it: for a symlink, beside
    the link, not its target. With a cache ``key``, every sibling is checked now and the whole answer is
    remembered (:func:`_remember`); without one, only the sibling this client accepts is opened.
    """
    name = segments[-1]
    media_type = content_type(name)
    candidate = os.path.join(str(mount.root), *segments)
    available: list[str] = []
    if may_have_siblings(name, media_type):
        # Which siblings exist decides Vary for every response about this file, whatever this client accepts:
        # a cache must know that the answer depends on Accept-Encoding.
        available = [coding for coding, suffix in PRECOMPRESSED if _is_file(candidate + suffix)]
    if key is not None:
        return _remember(key, mount, method, headers, opened, segments, candidate, media_type, available)
    extra: list[tuple[str, str]] = []
    if available:
        extra.append(("Vary", "Accept-Encoding"))
        for coding in choose_coding(headers.get("accept-encoding"), available):
            sibling_segments = (*segments[:-1], name + _SUFFIX_OF[coding])
            # Opened with every check of its own: the sibling may be a symlink leading elsewhere.
            try:
                sibling = open_under_root(str(mount.root), sibling_segments, mount.options)
            except OSError:  # out of descriptors: the file found is given back before the 503
                opened.close()
                raise
            if sibling is not None:
                if not sibling.is_dir:
                    opened.close()
                    opened = sibling
                    extra.append(("Content-Encoding", coding))
                    break
                sibling.close()
    return file_reply(
        opened, method, headers, media_type=media_type, max_age=mount.options.max_age, extra_headers=extra
    )


def _remember(
    key: tuple[int, str],
    mount: StaticMount,
    method: str,
    headers: Mapping[str, str],
    opened: Opened,
    segments: tuple[str, ...],
    candidate: str,
    media_type: str,
    available: list[str],
) -> FileReply:
    """Check every available sibling too, store the lot in :data:`OPEN_FILES`, and answer from it.

    The same decisions as the uncached branch of :func:`_serve_regular`, taken for every Accept-Encoding at
    once: a sibling that fails its own check is left out, as the uncached branch would skip it.
    """
    options = mount.options
    vary = [("Vary", "Accept-Encoding")] if available else []

    root = str(mount.root)

    def cached(file: Opened, path: str, extra: list[tuple[str, str]]) -> CachedFile:
        shared = SharedFile(file.fd)
        file.fd = -1  # the SharedFile owns it now
        prepared = Prepared(file.stat, media_type, options.max_age, extra)
        # A file named directly in the root, reached without a symlink, cannot be moved without a rename, link or
        # unlink of its own, each of which moves its ctime: the stat alone re-proves it (see the cache's docs).
        in_place = path == file.path and os.path.dirname(path) == root
        return CachedFile(shared, path, file.stat, file.path, not options.follow_symlinks and not in_place, prepared)

    plain = cached(opened, candidate, vary)
    encoded: dict[str, CachedFile] = {}
    for coding in available:
        suffix = _SUFFIX_OF[coding]
        try:
            sibling = open_under_root(str(mount.root), (*segments[:-1], segments[-1] + suffix), options)
        except OSError:  # out of descriptors: what was opened so far is given back before the 503
            for file in (plain, *encoded.values()):
                file.shared.release()
            raise
        if sibling is None:
            continue
        if sibling.is_dir:
            sibling.close()
            continue
        encoded[coding] = cached(sibling, candidate + suffix, [*vary, ("Content-Encoding", coding)])
    entry = CachedPath(plain, tuple(available), encoded)
    file = _choose(entry, headers)
    reply = file.prepared.answer(method, headers)
    if reply.length and file.shared.acquire():  # acquire cannot fail: nothing else has seen it yet
        reply.file = FileView(file.shared)
    OPEN_FILES.put(key, entry)  # takes over the references made above
    return reply


def _reply_from_cache(
    entry: CachedPath, method: str, headers: Mapping[str, str], read_up_to: int = 0
) -> FileReply | None:
    """The reply from a cache entry, or None when its file no longer passes (then the full path decides).

    A body of up to ``read_up_to`` bytes is read here, from the descriptor just re-proven, into ``body``: for a
    small file one ``pread`` costs less than the :class:`FileView` a caller would read it through (and close)."""
    file = _choose(entry, headers) if entry.codings else entry.plain
    if file is not entry.plain:
        # A sibling stands for its file and is served only while the file is: the full check starts from the
        # file's own path, and answers 404 (or 301) once it is deleted, moved out of bounds or made a directory.
        if not entry.plain.acquire_if_unchanged():
            return None
        entry.plain.shared.release()
    if not file.acquire_if_unchanged():
        return None
    try:
        reply: FileReply | None = file.prepared.answer(method, headers)
        if reply is not None and 0 < reply.length <= read_up_to:
            try:
                body = os.pread(file.shared.fd, reply.length, reply.offset)
            except OSError:
                body = b""  # (EIO, say) the full path decides, and its own read reports what is wrong
            if len(body) == reply.length:
                reply.body, reply.offset, reply.length = body, 0, 0
            else:
                reply = None  # the file shrank since its stat proved it: the full path decides afresh
    except BaseException:
        file.shared.release()
        raise
    if reply is not None and reply.length:
        reply.file = FileView(file.shared)  # takes over the reference
    else:
        file.shared.release()
    return reply


def _choose(entry: CachedPath, headers: Mapping[str, str]) -> CachedFile:
    """The representation for this client: the best accepted sibling that passed its check, else the file."""
    if entry.codings:
        accept_encoding = headers.get("accept-encoding")
        if accept_encoding:
            for coding in preferred_codings(accept_encoding, entry.codings):
                file = entry.encoded.get(coding)
                if file is not None:
                    return file
    return entry.plain


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _media_type_of(path: str) -> str:
    return content_type(os.path.basename(path))


class Prepared:
    """Everything about a regular file's response that depends on its metadata only, computed once.

    The validators, the full header list of a 200 and the few fields of a 304 follow from ``stat``, the
    media type and the mount's options; only the conditional and Range headers differ between requests.
    So a cached file keeps its ``Prepared`` and each request costs :meth:`answer`, a handful of lookups.
    """

    __slots__ = (
        "cache",
        "etag",
        "extra",
        "full_head_lines",
        "full_headers",
        "media_type",
        "modified",
        "not_modified_headers",
        "size",
        "vary",
    )

    def __init__(
        self,
        st: os.stat_result,
        media_type: str,
        max_age: int | None,
        extra_headers: list[tuple[str, str]],
        *,
        now: float | None = None,
    ) -> None:
        self.etag = make_etag(st)
        # The Last-Modified sent and compared: never later than ``now`` (the clock's, unless a test gives its own),
        # and as fixed as the rest for as long as the cache keeps this.
        self.modified = last_modified(st.st_mtime, time.time() if now is None else now)
        self.size = st.st_size
        self.media_type = media_type
        self.cache = [("Cache-Control", f"public, max-age={max_age}")] if max_age is not None else []
        self.extra = extra_headers
        self.vary = [(name, value) for name, value in extra_headers if name == "Vary"]
        self.full_headers = self._headers(self.size, [])
        self.full_head_lines = "".join(f"{name}: {value}\r\n" for name, value in self.full_headers)
        # RFC 9110 15.4.5: a 304 repeats the fields a cache needs to update its stored response, nothing more.
        self.not_modified_headers = [("ETag", self.etag), *self.cache, *self.vary]

    def _headers(self, length: int, range_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        modified = [] if self.modified is None else [("Last-Modified", http_date(self.modified))]
        return [
            ("Content-Type", self.media_type),
            ("Content-Length", str(length)),
            *modified,
            ("ETag", self.etag),
            ("Accept-Ranges", "bytes"),
            _NOSNIFF,
            *self.cache,
            *self.extra,
            *range_headers,
        ]

    def answer(self, method: str, headers: Mapping[str, str]) -> FileReply:
        """Apply preconditions and Range; the caller attaches the file when the reply's ``length`` is not 0."""
        condition = check_preconditions(headers, self.etag, self.modified)
        if condition == 304:
            return FileReply(304, list(self.not_modified_headers))
        if condition == 412:
            return error_reply(412, method, self.vary)
        size = self.size
        if method == "GET" and "range" in headers:  # Range is defined for GET only (RFC 9110 section 14.2)
            if_range = headers.get("if-range")
            if if_range is None or if_range_allows(if_range, self.etag, self.modified):
                chosen = parse_range(headers["range"], size)
                if chosen is UNSATISFIABLE:
                    return error_reply(
                        416, method, [("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes"), *self.vary]
                    )
                if isinstance(chosen, ByteRange):
                    content_range = [("Content-Range", f"bytes {chosen.start}-{chosen.end}/{size}")]
                    return FileReply(
                        206, self._headers(chosen.length, content_range), b"", None, chosen.start, chosen.length
                    )
        if method == "HEAD" or size == 0:
            return FileReply(200, list(self.full_headers), head_lines=self.full_head_lines)
        return FileReply(200, list(self.full_headers), b"", None, 0, size, head_lines=self.full_head_lines)


def file_reply(
    opened: Opened,
    method: str,
    headers: Mapping[str, str],
    *,
    media_type: str,
    max_age: int | None,
    extra_headers: list[tuple[str, str]],
) -> FileReply:
    """Apply preconditions and Range to an open regular file and build the reply. Takes over ``opened``."""
    reply = Prepared(opened.stat, media_type, max_age, extra_headers).answer(method, headers)
    if reply.length:
        reply.file = open(opened.fd, "rb", buffering=0)  # the reply owns it now; the caller closes it
        opened.fd = -1
    else:
        opened.close()
    return reply


def small_reply(
    status: int, method: str, body: bytes, media_type: str, headers: list[tuple[str, str]] | None = None
) -> FileReply:
    """A reply with an in-memory body; HEAD gets the same headers and no body."""
    reply_headers = [("Content-Type", media_type), ("Content-Length", str(len(body))), *(headers or [])]
    return FileReply(status, reply_headers, b"" if method == "HEAD" else body)


def error_reply(status: int, method: str, headers: list[tuple[str, str]] | None = None) -> FileReply:
    """A short plain-text page for a status that has no file to send (301, 404, 405, 412, 416, 503)."""
    phrase = HTTPStatus(status).phrase
    return small_reply(status, method, f"{status} {phrase}\n".encode(), "text/plain; charset=utf-8", headers)


def out_of_resources_reply(method: str, error: OSError) -> FileReply:
    """503 with Retry-After for a file that could not be opened for want of descriptors or memory.

    The file may be there: a 404 would be a lie that caches keep. One warning line, repeated at most once a
    minute, since under that load every request would log it."""
    what = "descriptors" if error.errno in (errno.EMFILE, errno.ENFILE) else "memory"
    _out_of_resources_warning.warning("static files: out of %s (%s); answering 503", what, describe(error))
    return error_reply(503, method, [_RETRY_AFTER])


def content_disposition(name: str) -> str:
    """``attachment``, with an ASCII ``filename`` and, if needed, a UTF-8 ``filename*`` (RFC 6266).

    Only the last path component is used, and anything a quoted string cannot hold safely becomes "_".
    """
    name = os.path.basename(name)
    fallback = "".join(char if " " <= char < "\x7f" and char not in '"\\' else "_" for char in name)
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value
