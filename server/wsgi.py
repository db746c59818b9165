"""PEP 3333: turn a parsed request into an environ, call the application, and put its response on the wire.

This module runs on a worker thread, never on the event loop: application code may block as long as it likes.
It talks to the connection through four calls only: ``send`` (bytes, with backpressure), ``send_file``
(hand an open file to the loop for ``os.sendfile``), ``read_continue_body`` (for ``Expect: 100-continue``) and
``finish``. That keeps the rules of PEP 3333 in one place:

- ``start_response`` may be called again only with ``exc_info``, and re-raises it once headers are out;
- headers go out with the first non-empty body chunk (or at the end, for an empty body), never earlier;
- the body is framed with Content-Length when the length is known (declared, or a one-element list), chunked on
  HTTP/1.1 otherwise, and close-delimited on HTTP/1.0;
- the iterable's ``close()`` is always called, also when the client went away mid-response;
- hop-by-hop headers from the application are an application error.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from server import SERVER_SOFTWARE
from server.accesslog import log_response
from server.http import LAST_CHUNK, Request, chunk, http_date

if TYPE_CHECKING:
    from server.connection import HTTPConnection

log = logging.getLogger("server.wsgi")

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade")
)  # fmt: skip
_STATUS = re.compile(r"[1-9][0-9]{2} [^\r\n\x00]*")
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")
_NO_BODY_STATUS = frozenset((204, 304))


class ClientDisconnected(ConnectionError):
    """The client went away (or stopped reading) while the response was being sent."""


# -- the environ ----------------------------------------------------------------------------------------------------

_ENVIRON_KEYS: dict[str, str | None] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _environ_key(name: str) -> str | None:
    """The environ key for header ``name``, or None for a header that must not reach the app."""
    key = _ENVIRON_KEYS.get(name, "")
    if key == "":
        # A name with an underscore would collide with its dashed twin (X_Forwarded_For vs X-Forwarded-For),
        # which is a classic way to smuggle a trusted-looking header past a proxy: drop it.
        key = None if "_" in name else "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 1000:  # bound the cache: header names are chosen by clients
            _ENVIRON_KEYS[name] = key
    return key


def build_environ(base: dict[str, Any], request: Request, conn: HTTPConnection, body: Any) -> dict[str, Any]:
    """The WSGI environ for ``request``, on top of the per-server constants in ``base``."""
    environ = base.copy()
    path = request.path
    if "%" in path:
        path = unquote_to_bytes(path).decode("latin-1")
    scheme = request.scheme or conn.scheme
    host = request.host
    if host:
        server_name, _, server_port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
        if not server_port:
            server_port = "443" if scheme == "https" else "80"
    else:
        server_name, server_port = conn.server_name, conn.server_port
    environ.update(
        REQUEST_METHOD=request.method,
        PATH_INFO=path,
        QUERY_STRING=request.query,
        SERVER_PROTOCOL=request.version,
        SERVER_NAME=server_name,
        SERVER_PORT=server_port,
        REMOTE_ADDR=conn.remote_addr,
        REMOTE_PORT=conn.remote_port,
        REQUEST_URI=request.target,
    )
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = body
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
        if isinstance(body, ContinueInput):
            environ.pop("CONTENT_LENGTH", None)
        else:
            environ["CONTENT_LENGTH"] = str(conn.body_size)
    return environ


class ContinueInput(io.RawIOBase):
    """``wsgi.input`` for ``Expect: 100-continue``: the first read sends the 100 and receives the body."""

    def __init__(self, conn: HTTPConnection) -> None:
        super().__init__()
        self._conn = conn
        self._body: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the application asked for the body (and so it was received)."""
        return self._body is not None

    def _load(self) -> Any:
        if self._body is None:
            self._body = self._conn.read_continue_body()
        return self._body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._load().read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._load().readline(-1 if size is None else size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._load().readlines(hint)

    def __iter__(self):
        return iter(self._load())

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        super().close()


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
        """(offset, length) to send with sendfile when the wrapped object is a regular file, else None."""
        try:
            fd = self.filelike.fileno()
            stat = os.fstat(fd)
            position = self.filelike.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        if stat.st_mode & 61440 != 32768:  # S_ISREG
            return None
        return position, max(0, stat.st_size - position)


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

    def __init__(self, conn: HTTPConnection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.keep_alive = request.keep_alive
        self.is_head = request.method == "HEAD"
        self.declared_length: int | None = None
        self.chunked = False
        self.body_allowed = True
        self.bytes_sent = 0  # body bytes, for the access log and the Content-Length check
        self.status_code = 0
        self.close_deferred = False  # the body's close() runs once sendfile has sent the last byte
        self.client_gone = False
        self.on_finished: Callable[[ResponseWriter], None] | None = None

    # PEP 3333's two callables.

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        if type(status) is not str or not _STATUS.fullmatch(status) or not status.isascii():
            raise AssertionError(f"invalid status {status!r}: expected a str like '200 OK'")
        if type(headers) is not list:
            raise AssertionError("response headers must be a list of (name, value) tuples")
        declared = None
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise AssertionError(f"response header {item!r} is not a (name, value) tuple")
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise AssertionError(f"response header {item!r} must have str name and value")
            if not value.isascii():
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    raise AssertionError(f"response header {name!r} has characters outside latin-1") from None
            lower = name.lower()
            if lower in HOP_BY_HOP:
                raise AssertionError(f"hop-by-hop header {name!r} is not allowed from a WSGI application")
            if _BAD_HEADER_VALUE.search(value) or _BAD_HEADER_VALUE.search(name) or ":" in name:
                raise AssertionError(f"response header {name!r} contains a forbidden character")
            if lower == "content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise AssertionError(f"invalid Content-Length {value!r}") from None
        self.status = status
        self.headers = headers
        self.declared_length = declared
        self.status_code = int(status[:3])
        return self.write

    def write(self, data: bytes) -> None:
        """Send a piece of the body (the PEP 3333 ``write`` callable, also used for iterated chunks)."""
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"response body items must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if not self.headers_sent:
            self._send(self._head(None) + self._frame(data))
        elif data:
            self._send(self._frame(data))

    # Framing.

    def _head(self, known_length: int | None) -> bytes:
        """Serialise the status line and headers, choosing how the body will be framed."""
        code = self.status_code
        headers = self.headers
        self.body_allowed = not (self.is_head or code < 200 or code in _NO_BODY_STATUS)
        lines = [f"HTTP/1.1 {self.status}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        has = {name.lower() for name, _ in headers}
        if "date" not in has:
            lines.append(f"Date: {http_date()}\r\n")
        if "server" not in has:
            lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
        if self.declared_length is None and code >= 200 and code not in _NO_BODY_STATUS:
            if known_length is not None:
                lines.append(f"Content-Length: {known_length}\r\n")
                self.declared_length = known_length
            elif self.is_head:
                pass  # a HEAD response describes no body; without a known length we say nothing about one
            elif self.request.version == "HTTP/1.1":
                lines.append("Transfer-Encoding: chunked\r\n")
                self.chunked = True
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if self.conn.continue_pending and not self.conn.continue_received:
            self.keep_alive = False  # the unread body leaves the next request's start unknown
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

    def _send(self, data: bytes) -> None:
        if data:
            self.conn.send(data)

    def finish_body(self) -> None:
        """End the body: headers if none went out yet, the last chunk, and a check of the declared length."""
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


def _known_length(result: Any) -> int | None:
    """The body's total length when it is cheap to know: a list or tuple of bytes."""
    if type(result) in (list, tuple):
        try:
            return sum(map(len, result))
        except TypeError:
            return None
    return None


def run_application(
    app: Callable,
    environ: dict[str, Any],
    conn: HTTPConnection,
    request: Request,
    debug: bool,
    on_finished: Callable[[ResponseWriter], None],
) -> ResponseWriter:
    """Call ``app`` for one request and send its response. Returns the writer (status, sizes, keep-alive).

    ``on_finished(writer)`` runs once the response is really over: at once for most, but only after the last
    byte for a file handed to the loop, so that the access log can tell what was sent and how long it took."""
    writer = ResponseWriter(conn, request)
    writer.on_finished = on_finished
    try:
        result = app(environ, writer.start_response)
        try:
            _send_result(writer, result, conn)
        finally:
            close = getattr(result, "close", None)
            if close is not None and not writer.close_deferred:
                close()
    except ClientDisconnected:
        writer.keep_alive = False
        writer.client_gone = True
    except Exception:
        log.exception("error in application for %s %s", request.method, request.target)
        writer.keep_alive = False
        if not writer.headers_sent:
            _send_error_page(writer, debug)
    if not writer.close_deferred:
        on_finished(writer)
    return writer


def _send_result(writer: ResponseWriter, result: Iterable[bytes], conn: HTTPConnection) -> None:
    if isinstance(result, FileWrapper) and writer.status is not None and _send_with_sendfile(writer, result, conn):
        return
    known = _known_length(result)
    if known is not None and writer.status is not None and not writer.headers_sent:
        # The common case of a small body given as a list: one buffer, one send, with a Content-Length.
        body = b"".join(result)
        head = writer._head(known if writer.declared_length is None else None)
        writer._send(head + writer._frame(body))
        writer.finish_body()
        return
    for data in result:
        if data:
            writer.write(data)
            if writer.is_head:
                break  # the head is out; a HEAD response has no body to produce
    if writer.status is None:
        raise AssertionError("application returned without calling start_response()")
    writer.finish_body()


def _send_with_sendfile(writer: ResponseWriter, wrapper: FileWrapper, conn: HTTPConnection) -> bool:
    """Send a ``wsgi.file_wrapper`` body with sendfile from the loop; False to fall back to iterating."""
    span = wrapper.sendfile_span()
    if span is None:
        return False
    offset, length = span
    if writer.declared_length is not None:
        length = min(length, writer.declared_length)
    head = writer._head(length if writer.declared_length is None else None)
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
            if writer.on_finished is not None:
                writer.on_finished(writer)

    conn.send_file(head, wrapper.filelike, offset, length, on_done=done, app_code=True)
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


def log_access(writer: ResponseWriter, environ: dict[str, Any], started: float) -> None:
    """Log a WSGI response (after proxy headers were applied, so the client's address is the real one)."""
    log_response(
        environ.get("REMOTE_ADDR", ""),
        writer.request,
        writer.status_code or 500,
        writer.bytes_sent,
        environ.get("HTTP_REFERER"),
        environ.get("HTTP_USER_AGENT"),
        started,
    )


__all__ = [
    "ClientDisconnected",
    "ContinueInput",
    "FileWrapper",
    "ResponseWriter",
    "base_environ",
    "build_environ",
    "log_access",
    "run_application",
]
