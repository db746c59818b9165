"""PEP 3333: turn a parsed request into an environ, call the application, and put its response on the wire.

This module runs on a worker thread, never on the event loop: application code may block as long as it likes.
It talks to the connection through four calls only: ``send`` (bytes), ``park_until_drained`` (backpressure that
frees the thread), ``send_file`` (hand an open file to the loop for ``os.sendfile``) and, through the engine,
``finish``. That keeps the rules of PEP 3333 in one place:

- ``start_response`` may be called again only with ``exc_info``, and re-raises it once headers are out;
- headers go out with the first non-empty body chunk (or at the end, for an empty body), never earlier;
- the body is framed with Content-Length when the length is known (declared, or a one-element list), chunked on
  HTTP/1.1 otherwise, and close-delimited on HTTP/1.0;
- the iterable's ``close()`` is always called, also when the client went away mid-response;
- what the application writes is checked before any of it reaches the wire: a status of three digits (no
  final 1xx) and a reason without control characters, header names that are tokens, values without control
  characters, at most one Content-Length and only digits in it, no hop-by-hop headers. A mistake is a 500
  and one log line naming it (``ApplicationError``), never a malformed response.

An application's response is sent by an ``ApplicationRun`` in pieces: when the client reads slower than the
application produces, the run parks (its thread goes back to the pool) and is resubmitted when the loop has
drained the output, so a slow reader costs memory up to a high-water mark, never a thread.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from server import SERVER_SOFTWARE
from server.accesslog import access_log, log_response, named
from server.http import LAST_CHUNK, Request, chunk, http_date
from server.memo import KEY_LIMIT, remember

if TYPE_CHECKING:
    from server.connection import HTTPConnection

log = logging.getLogger("server.wsgi")

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade")
)  # fmt: skip
# What an application may put on the wire (RFC 9110 5.1, 5.5, 15): each is one character class, so linear.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # HTAB is allowed in values and reasons
_NO_BODY_STATUS = frozenset((204, 304))


class ClientDisconnected(ConnectionError):
    """The client went away (or stopped reading) while the response was being sent."""


class ApplicationError(AssertionError):
    """The application broke PEP 3333 or HTTP (a bad status, header or length): answered with 500.

    An ``AssertionError``, as wsgiref's validator raises for the same mistakes, so code that expects one works."""


# -- the environ ----------------------------------------------------------------------------------------------------

_ENVIRON_KEYS: dict[str, str | None] = {}  # a memo (server/memo.py): header names are chosen by clients
_UNPREFIXED_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}  # PEP 3333's two


def _environ_key(name: str) -> str | None:
    """The environ key for header ``name``, or None for a header that must not reach the app."""
    key = _ENVIRON_KEYS.get(name, "")
    if key == "":
        key = _UNPREFIXED_KEYS.get(name)
        if key is None and "_" not in name:
            # (A name with an underscore would collide with its dashed twin, X_Forwarded_For with
            # X-Forwarded-For, a classic way to smuggle a trusted-looking header past a proxy: it gets None.)
            key = "HTTP_" + name.upper().replace("-", "_")
        remember(_ENVIRON_KEYS, name, key)
    return key


def build_environ(base: dict[str, Any], request: Request, conn: HTTPConnection, body: Any) -> dict[str, Any]:
    """The WSGI environ for ``request``, on top of the per-server constants in ``base``."""
    environ = base.copy()
    path = request.path
    if "%" in path:
        path = unquote_to_bytes(path).decode("latin-1")
    # The connection decides, never the target: "GET https://..." over plain TCP is still plain, and an app that
    # checks for HTTPS (or sets Secure cookies, or builds external URLs) must not take the client's word for it.
    # Only a trusted proxy's headers change the scheme (server.proxy). The target's authority does replace Host.
    scheme = conn.scheme
    host = request.host
    if host:
        # Remembered per scheme: a site's clients send the same few Hosts, and a lookup costs less than a call.
        known = _HTTPS_ADDRESSES if scheme == "https" else _HTTP_ADDRESSES
        address = known.get(host)
        if address is None:
            address = _server_address(host, scheme)
            remember(known, host, address)
        server_name, server_port = address
    else:
        server_name, server_port = conn.server_name, conn.server_port
    # Item by item rather than update(**...): no keyword dict to build for every request.
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = request.query
    environ["SERVER_PROTOCOL"] = request.version
    environ["SERVER_NAME"] = server_name
    environ["SERVER_PORT"] = server_port
    environ["REMOTE_ADDR"] = conn.remote_addr
    environ["REMOTE_PORT"] = conn.remote_port
    environ["REQUEST_URI"] = request.target
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = body
    if conn.tls_environ:
        environ.update(conn.tls_environ)  # HTTPS=on, SSL_PROTOCOL, SSL_CLIENT_S_DN...: see server.tls
    for name, value in request.headers:
        key = _ENVIRON_KEYS.get(name) or _environ_key(name)
        if key is None:
            continue
        if key in environ:
            # RFC 9110 5.3: repeated fields combine with commas; cookies are the one exception (RFC 6265).
            environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            environ[key] = value
    if request.scheme is not None:
        environ["HTTP_HOST"] = host  # RFC 9112 3.2.2: an absolute-form target's authority replaces Host
    if "CONTENT_LENGTH" in environ and not request.chunked:
        # The number the parser framed the body by: "5, 5" or two equal lines arrive as one decimal.
        environ["CONTENT_LENGTH"] = str(request.content_length)
    if request.chunked:
        # The server has already removed the chunked coding, so the app must not see it: frameworks that read
        # HTTP_TRANSFER_ENCODING (Bottle) would try to de-chunk the body a second time. The buffered body's
        # length is known, so frameworks that only read bodies with a CONTENT_LENGTH get one.
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["CONTENT_LENGTH"] = str(conn.body_size)
    return environ


_HTTP_ADDRESSES: dict[str, tuple[str, str]] = {}  # Host -> (SERVER_NAME, SERVER_PORT), for http and https
_HTTPS_ADDRESSES: dict[str, tuple[str, str]] = {}


def _server_address(host: str, scheme: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT for a Host value: its name, and the port it names or else the scheme's default
    (PEP 3333's URL reconstruction then gives back the URL the client used)."""
    if host.rfind(":") > host.rfind("]"):  # a port, not a colon inside an IPv6 literal
        host, _, port = host.rpartition(":")
        if port:
            return host, port
    return host, "443" if scheme == "https" else "80"


def set_server_address(environ: dict[str, Any]) -> None:
    """Recompute SERVER_NAME and SERVER_PORT from HTTP_HOST and wsgi.url_scheme, once a trusted proxy's headers
    have changed either (server.proxy). Without a Host they stay the listener's: nothing says what the client used."""
    host = environ.get("HTTP_HOST")
    if host:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _server_address(host, environ["wsgi.url_scheme"])


class FileWrapper:
    """``wsgi.file_wrapper``: lets the server send a file with ``os.sendfile`` instead of iterating it."""

    def __init__(self, filelike: Any, blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def sendfile_span(self) -> tuple[int, int] | None:
        """(offset, length) to send with sendfile when the wrapped object is a regular file, else None.

        Only a genuine file qualifies (see ``_is_plain_file``): sendfile copies the descriptor's bytes, so
        ``read()`` must return exactly those bytes, from ``tell()`` on."""
        if not _is_plain_file(self.filelike):
            return None
        try:
            fd = self.filelike.fileno()
            stat = os.fstat(fd)
            position = self.filelike.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        if stat.st_mode & 61440 != 32768:  # S_ISREG
            return None
        return position, max(0, stat.st_size - position)


def _is_plain_file(filelike: Any) -> bool:
    """Whether ``filelike`` reads its descriptor's bytes as they are: an ``io.FileIO``, or a buffered reader (what
    ``open(path, "rb")`` returns) over one.

    A wrapper that decodes, decompresses or decrypts (``gzip.open``, a text file) may expose the underlying file's
    ``fileno()`` while its ``read()`` and ``tell()`` count other bytes: it is iterated instead. So is a subclass
    that replaces ``read`` or ``tell``; one that only adds to the class (a ``close`` hook, say) still qualifies."""
    inner = getattr(filelike, "file", None)
    if inner is not None and not isinstance(filelike, io.IOBase):
        # A proxy that hands everything to the file it holds (tempfile.NamedTemporaryFile, Django's File): judged
        # by that file. (Its read, tell and fileno are the file's own, which is what a proxy is for.)
        filelike = inner
    for buffered in (io.BufferedReader, io.BufferedRandom):
        if isinstance(filelike, buffered):
            if not _reads_as(filelike, buffered):
                return False
            filelike = filelike.raw
            break
    return isinstance(filelike, io.FileIO) and _reads_as(filelike, io.FileIO)


def _reads_as(filelike: Any, base: type[io.RawIOBase] | type[io.BufferedIOBase]) -> bool:
    """Whether ``filelike``'s class keeps ``base``'s own ways of reading (``read``, ``readinto``, ``readall``: a
    buffered reader reads through its raw file's ``readinto``) and ``tell``."""
    kind = type(filelike)
    return all(getattr(kind, name, None) is getattr(base, name, None) for name in _READING)


_READING = ("read", "readinto", "readall", "tell")


def base_environ(*, multithread: bool, multiprocess: bool) -> dict[str, Any]:
    """The environ keys that are the same for every request a server handles."""
    return {
        "SCRIPT_NAME": "",
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


# -- the response ---------------------------------------------------------------------------------------------------


class ResponseWriter:
    """One response: start_response, write(), framing, HEAD handling, and the access-log facts."""

    # Slots: one of these is made for every request, so it should be small and quick to fill.
    __slots__ = (
        "body_allowed", "bytes_sent", "chunked", "client_gone", "close_deferred", "conn", "cut_short",
        "declared_length", "ended", "has_date", "has_server", "header_lines", "headers_sent", "is_head", "keep_alive",
        "request", "status", "status_code",
    )  # fmt: skip

    def __init__(self, conn: HTTPConnection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.status: str | None = None
        self.header_lines = ""  # the application's headers, checked and serialised by start_response
        self.headers_sent = False
        self.keep_alive = request.keep_alive
        self.is_head = request.method == "HEAD"
        self.declared_length: int | None = None
        self.has_date = self.has_server = False  # whether the application set its own
        self.chunked = False
        self.body_allowed = True
        self.bytes_sent = 0  # body bytes, for the access log and the Content-Length check
        self.status_code = 0
        self.close_deferred = False  # the body's close() runs once sendfile has sent the last byte
        self.client_gone = False
        # The response on the wire is shorter than it should be (the app failed after its head, or sent less than
        # its Content-Length): the connection must end without HTTPS's close_notify, which would vouch for it.
        self.cut_short = False
        # The response is over: what write() is given now would land after its end, in front of the connection's
        # next response (a write from the body's close(), which PEP 3333 calls afterwards, or from a thread the
        # application left behind with the callable).
        self.ended = False

    # PEP 3333's two callables.

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise ApplicationError("start_response() called a second time without exc_info")
        code = _GOOD_STATUSES.get(status) if type(status) is str else None
        if code is None:
            code = _check_status(status)
        self.status_code = code
        if type(headers) is not list:
            raise ApplicationError("response headers must be a list of (name, value) tuples")
        # Checked and serialised at once: what goes on the wire is what was checked, even if the app changes its
        # list later, and the list is walked once.
        self.header_lines, self.declared_length, self.has_date, self.has_server = _check_headers(headers)
        if code == 204 and self.declared_length is not None:
            # RFC 9110 8.6: a 204 must not carry a Content-Length. Dropped rather than answered with a 500, as
            # other framing mistakes are, because frameworks add one to every response (Django's
            # CommonMiddleware says "Content-Length: 0"), and without it the response is exactly right.
            self.header_lines = _without_content_length(self.header_lines)
            self.declared_length = None
        self.status = status
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write`` callable: send a piece of the body, waiting while a slow client catches up."""
        self.send_body(data, wait=True)

    def send_body(self, data: bytes, *, wait: bool = False) -> None:
        """Send a piece of the body (headers first, if they are not out yet)."""
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ApplicationError(f"response body items must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.status is None:
            raise ApplicationError("write() before start_response()")
        if self.ended:
            # (A thread racing the very end can still slip in between this test and the end: PEP 3333's write()
            # belongs to the application's own call, which is over by then.)
            raise ApplicationError("write() after the response ended (from the body's close(), or a late thread)")
        if not self.headers_sent:
            self._send(self._head(None) + self._frame(data), wait=wait)
        elif data:
            self._send(self._frame(data), wait=wait)

    # Framing.

    def _head(self, known_length: int | None, *, exact: bool = False) -> bytes:
        """Serialise the status line and headers, choosing how the body will be framed. ``exact``: on HEAD too,
        ``known_length`` is the length of the body a GET would get (a file's size), even when it is 0."""
        code = self.status_code
        self.body_allowed = not (self.is_head or code < 200 or code in _NO_BODY_STATUS)
        lines = [f"HTTP/1.1 {self.status}\r\n", self.header_lines]
        if not self.has_date:
            lines.append(f"Date: {http_date()}\r\n")
        if not self.has_server:
            lines.append(_SERVER_LINE)
        # A 204 or 304 never gets a Content-Length from us: a 304's must equal the 200's, which only the app knows.
        if self.declared_length is None and code >= 200 and code not in _NO_BODY_STATUS:
            # On HEAD an empty body says nothing: frameworks (Flask, Bottle) drop the body of a HEAD response
            # themselves, so "0" would be wrong for any page that is not empty. A body they did produce is the
            # GET body, and its length is the one a GET would be sent with.
            if known_length is not None and (known_length or exact or not self.is_head):
                lines.append(f"Content-Length: {known_length}\r\n")
                self.declared_length = known_length
            elif self.is_head:
                pass  # a HEAD response describes no body; without a known length we say nothing about one
            elif self.request.version == "HTTP/1.1":
                lines.append("Transfer-Encoding: chunked\r\n")
                self.chunked = True
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if self.conn.engine.stopping:
            self.keep_alive = False  # shutting down: tell the client not to send another request here
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        elif self.request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.headers_sent = True
        return head

    def _frame(self, data: bytes) -> bytes:
        if not data or not self.body_allowed:
            return b""
        if self.declared_length is not None:
            room = self.declared_length - self.bytes_sent
            if len(data) > room:
                log.error("application sent more than its Content-Length of %d; truncated", self.declared_length)
                data = data[: max(room, 0)]
                self.keep_alive = False
        self.bytes_sent += len(data)
        return chunk(data) if self.chunked else data

    def _send(self, data: bytes, *, wait: bool = False, whole: bool = False) -> None:
        if data:
            self.conn.send(data, wait=wait, whole=whole)

    def finish_body(self) -> None:
        """End the body: headers if none went out yet, the last chunk, and a check of the declared length."""
        self.ended = True  # from here on, a write() would follow the end (also set by ApplicationRun._complete)
        if not self.headers_sent:
            self._send(self._head(0))
        elif self.chunked:
            self._send(LAST_CHUNK)
        if self.body_allowed and self.declared_length is not None and self.bytes_sent < self.declared_length:
            log.error(
                "application sent %d bytes but declared a Content-Length of %d; closing the connection",
                self.bytes_sent,
                self.declared_length,
            )
            self.keep_alive = False
            self.cut_short = True


def _without_content_length(header_lines: str) -> str:
    """Serialised header lines minus the Content-Length (names are tokens, so the prefix test is exact)."""
    lines = header_lines.split("\r\n")[:-1]  # each line ends with CRLF: the last piece is empty
    return "".join(f"{line}\r\n" for line in lines if line[:15].lower() != "content-length:")


_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n"  # the same in every response that has no Server of its own

# Statuses and header names already found valid: applications send the same few over and over, so each is
# checked once. Memos (server/memo.py), since an application could make up new ones without end.
_GOOD_STATUSES: dict[str, int] = {}
_GOOD_NAMES: dict[str, str] = {}  # name -> its lower-case form
_NOTED_RESPONSE_FIELDS = frozenset(("content-length", "date", "server"))


def _check_status(status: Any) -> int:
    """The status code of a valid PEP 3333 status string, else ApplicationError naming what is wrong."""
    if type(status) is not str:
        raise ApplicationError(f"status must be a str like '200 OK', not {type(status).__name__}")
    number = _GOOD_STATUSES.get(status)
    if number is not None:
        return number
    code, space, reason = status.partition(" ")
    if not (space and len(code) == 3 and code.isascii() and code.isdigit()):
        raise ApplicationError(f"invalid status {status!r}: expected three digits, a space and a reason")
    if _CONTROL.search(reason) or not (reason.isascii() or _is_latin1(reason)):
        # A reason may carry obs-text (latin-1), never a control character (RFC 9112 4).
        raise ApplicationError(f"invalid status {status!r}: the reason has a control or non-latin-1 character")
    number = int(code)
    if not 200 <= number <= 599:
        # A final 1xx would make the client read the next response as this one's; 6xx and up mean nothing.
        raise ApplicationError(f"invalid status {status!r}: a final response's code is from 200 to 599")
    remember(_GOOD_STATUSES, status, number)
    return number


def _check_header_name(name: str) -> str:
    """The lower-case form of a valid response header name, else ApplicationError."""
    if not _HEADER_NAME.fullmatch(name):
        raise ApplicationError(f"response header name {name!r} is not a token")
    lower = name.lower()
    if lower in HOP_BY_HOP:
        raise ApplicationError(f"hop-by-hop header {name!r} is not allowed from a WSGI application")
    remember(_GOOD_NAMES, name, lower)
    return lower


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _check_headers(headers: list[Any]) -> tuple[str, int | None, bool, bool]:
    """Check the application's response headers: (their lines for the head, its Content-Length or None, has Date,
    has Server)."""
    declared = None
    has_date = has_server = False
    lines = []
    for item in headers:
        # What is remembered counts only for a tuple of two strs, exactly: a namedtuple or a str subclass equals
        # the plain field it copies, but is checked (and refused) as what it is.
        if type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) is str:
            known = _GOOD_FIELDS.get(item) or _check_field(item)
        else:
            known = _check_field(item)
        line, lower, length = known
        if lower in _NOTED_RESPONSE_FIELDS:
            if lower == "date":
                has_date = True
            elif lower == "server":
                has_server = True
            elif declared is not None:
                raise ApplicationError("more than one Content-Length header")
            else:
                declared = length
        lines.append(line)
    return "".join(lines), declared, has_date, has_server


# Header fields already found valid: (name, value) -> (their line in the head, the name in lower case, and for a
# Content-Length its number). Most of an application's fields repeat from response to response (its
# Content-Type, its cache policy), and a tuple of two strings hashes in a few nanoseconds: a repeated field costs
# one lookup instead of its checks and its formatting. A memo (server/memo.py): fields that vary (lengths, cookies)
# fill it, so it starts over when full; and only short fields are kept, since an application may copy request
# data into a field (an echoed Origin, a Location built from the path, a name forwarded from upstream), and
# clients choose how long that is.
_GOOD_FIELDS: dict[tuple[str, str], tuple[str, str, int | None]] = {}


def _check_field(item: Any) -> tuple[str, str, int | None]:
    """A valid (name, value) response header's head line, lower-case name and (for Content-Length) number, else
    ApplicationError."""
    if type(item) is not tuple or len(item) != 2:
        raise ApplicationError(f"response header {item!r} is not a (name, value) tuple")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise ApplicationError(f"response header {item!r} must have str name and value")
    lower = _GOOD_NAMES.get(name) or _check_header_name(name)
    if not (value.isascii() and value.isprintable()):  # two quick tests most values pass; else the full ones
        if _CONTROL.search(value):
            raise ApplicationError(f"response header {name!r} has a control character in its value {value!r}")
        if not value.isascii() and not _is_latin1(value):
            raise ApplicationError(f"response header {name!r} has characters outside latin-1")
    length = None
    if lower == "content-length":
        if not (value.isascii() and value.isdigit() and len(value) <= 19):
            raise ApplicationError(f"invalid Content-Length {value!r}: digits only")
        length = int(value)
    known = (f"{name}: {value}\r\n", lower, length)
    if len(name) + len(value) <= KEY_LIMIT:  # (the key is a pair, whose own length says nothing: its strings' do)
        remember(_GOOD_FIELDS, item, known)
    return known


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What every ``ApplicationRun`` of a server shares: the application, and what to call as a response goes on.

    Made once per server, so that starting a request stores one reference instead of five."""

    app: Callable
    debug: bool  # a failure's 500 page shows the traceback
    resubmit: Callable[[ApplicationRun], None]  # a parked response's output has drained: continue it on a worker
    on_finished: Callable[[ApplicationRun], None]  # the response is over (the access log)
    on_complete: Callable[[ApplicationRun], None]  # the application is done with its thread for good


class ApplicationRun:
    """One call of a WSGI application and the sending of its response, in pieces (worker threads).

    ``start()`` calls the application and sends what it can. When the client reads slower than the body is
    produced, the run *parks*: its thread returns to the pool, and ``resubmit(self)`` is called (from the loop)
    when the output has drained, so that ``pump()`` runs the next piece on whichever worker is free.
    ``on_finished(self)`` (the access log) runs once the response is really over; ``on_complete(self)`` (the
    engine: keep the connection or close it) runs once the application is done with its thread for good. The
    callbacks take the run rather than closing over the request, so a request allocates no closures.
    """

    __slots__ = ("body", "completed", "conn", "environ", "hooks", "iterator", "request", "result", "started", "writer")

    # Positional parameters, not keywords: a call with keywords costs noticeably more, once per request.
    def __init__(
        self,
        hooks: RunHooks,
        environ: dict[str, Any],
        conn: HTTPConnection,
        request: Request,
        body: Any,
        started: float,
    ) -> None:
        self.hooks = hooks
        self.environ = environ
        self.conn = conn
        self.request = request
        self.body = body  # the server's wsgi.input (middleware may replace the environ's): the engine closes it
        self.started = started  # time.monotonic() when the request's head had arrived
        self.writer = ResponseWriter(conn, request)  # (no reference back to the run: no cycle for the GC)
        self.result: Any = None
        self.iterator: Any = None
        self.completed = False

    def __str__(self) -> str:
        # What the watchdog names when this request runs too long (formatted only then).
        return f"{named(self.request)} from {self.conn.describe()}"

    def start(self) -> None:
        """Call the application and send its response, or as much as the client takes now."""
        writer = self.writer
        try:
            self.result = self.hooks.app(self.environ, writer.start_response)
            sent = _send_at_once(self)
            if not sent:
                self.iterator = iter(self.result)
        except BaseException as error:  # SystemExit from a view too: it is the application's, not the thread's
            self._fail(error)
            return
        if sent:
            self._complete()
        else:
            self.pump()

    def pump(self) -> None:
        """Iterate the body until it ends, or park while the client catches up."""
        writer = self.writer
        conn = self.conn
        try:
            for data in self.iterator:
                if data:
                    writer.send_body(data)
                    if writer.is_head:
                        break  # the head is out; a HEAD response has no body to produce
                    if conn.park_until_drained(self._resume):
                        return  # this thread is free; _resume runs when the loop has drained the output
            if writer.status is None:
                raise ApplicationError("the application returned without calling start_response()")
            writer.finish_body()
        except BaseException as error:
            self._fail(error)
            return
        self._complete()

    def _resume(self) -> None:
        # On the loop thread: never run application code here; hand the next piece to a worker.
        self.hooks.resubmit(self)

    def _fail(self, error: BaseException) -> None:
        writer = self.writer
        request = self.request
        writer.keep_alive = False
        if isinstance(error, ClientDisconnected):
            writer.client_gone = True
        else:
            if isinstance(error, ApplicationError):
                log.error("application error in %s: %s", named(request), error)
            else:
                log.exception("error in application for %s", named(request))
            if writer.headers_sent:
                writer.cut_short = True
            else:
                _send_error_page(writer, self.hooks.debug)
        self._complete()

    def _complete(self) -> None:
        # Exactly once, whatever raised where: the iterable's close(), the access log and the connection's
        # finish must not run twice.
        if self.completed:
            return
        self.completed = True
        writer = self.writer
        writer.ended = True
        try:
            result = self.result
            # A list or tuple, as most responses are, has no close(): no failed attribute search for it.
            close = None if type(result) is list or type(result) is tuple else getattr(result, "close", None)
            if close is not None and not writer.close_deferred:
                close()
        except BaseException:
            log.exception("error in the close() of the response for %s", named(self.request))
            writer.keep_alive = False
        finally:
            if not writer.close_deferred:
                self.hooks.on_finished(self)
            self.hooks.on_complete(self)


def _send_at_once(run: ApplicationRun) -> bool:
    """Send the whole response now when that is cheap (a file for sendfile, a list or tuple of bytes)."""
    writer = run.writer
    result = run.result
    if writer.status is None or writer.headers_sent:
        return False
    if type(result) is not list and type(result) is not tuple:
        return isinstance(result, FileWrapper) and _send_with_sendfile(run, result)
    # The common case of a small body given as a list: one buffer, one send, with a Content-Length. It is in
    # memory already, so queueing all of it costs no more than the application's own list. Filling in the length
    # saves chunked framing (a size line per piece and the last chunk, and the client's parsing of them) and, on
    # HTTP/1.0, keeps the connection open, where an unknown length would have to end it.
    try:
        body = b"".join(result)
    except TypeError:
        return False  # an item that is not bytes: iterating it says which (ApplicationError)
    head = writer._head(len(body) if writer.declared_length is None else None)
    run.conn.send(head + writer._frame(body), whole=True)  # (not writer._send: a head is never empty)
    writer.finish_body()
    return True


def _send_with_sendfile(run: ApplicationRun, wrapper: FileWrapper) -> bool:
    """Send a ``wsgi.file_wrapper`` body with sendfile from the loop; False to fall back to iterating."""
    span = wrapper.sendfile_span()
    if span is None:
        return False
    writer = run.writer
    offset, length = span
    if writer.declared_length is not None:
        if length < writer.declared_length:
            # The file is shorter than the application said: send what there is, then close, so the client
            # cannot read the next response as the rest of this one.
            log.error(
                "application declared a Content-Length of %d for a file of %d bytes; closing the connection",
                writer.declared_length,
                length,
            )
            writer.keep_alive = False
            writer.cut_short = True
        length = min(length, writer.declared_length)
    head = writer._head(length if writer.declared_length is None else None, exact=True)
    if writer.chunked or not writer.body_allowed or length == 0:
        writer._send(head)
        writer.headers_sent = True
        writer.finish_body()
        return True
    writer.close_deferred = True  # the file is closed (and the response logged) after its last byte
    close = getattr(wrapper, "close", None)

    def done(sent: int) -> None:
        writer.bytes_sent = sent
        try:
            if close is not None:
                close()
        finally:
            run.hooks.on_finished(run)

    run.conn.send_file(head, wrapper.filelike, offset, length, on_done=done, app_code=True)
    return True


def _send_error_page(writer: ResponseWriter, debug: bool) -> None:
    body = b"500 Internal Server Error\n"
    content_type = "text/plain; charset=utf-8"
    if debug:
        body = (
            "<!doctype html><title>500 Internal Server Error</title><h1>Internal Server Error</h1><pre>"
            + escape(traceback.format_exc())
            + "</pre>"
        ).encode()
        content_type = "text/html; charset=utf-8"
    writer.status = None
    writer.start_response(
        "500 Internal Server Error", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    writer.keep_alive = False
    try:
        writer._send(writer._head(None) + writer._frame(body))
    except ClientDisconnected:
        pass


def log_access(run: ApplicationRun) -> None:
    """Log a WSGI response (after proxy headers were applied, so the client's address is the real one)."""
    if not access_log.isEnabledFor(logging.INFO):
        return  # the usual case: nothing to gather for a log that is off
    environ = run.environ
    writer = run.writer
    log_response(
        environ.get("REMOTE_ADDR", ""),
        writer.request,
        writer.status_code or 500,
        writer.bytes_sent,
        environ.get("HTTP_REFERER"),
        environ.get("HTTP_USER_AGENT"),
        run.started,
    )


__all__ = [
    "ApplicationError",
    "ApplicationRun",
    "ClientDisconnected",
    "FileWrapper",
    "ResponseWriter",
    "base_environ",
    "build_environ",
    "log_access",
    "set_server_address",
]
