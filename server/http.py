"""Sans-IO HTTP/1.1 (RFC 9112): request bytes in, events out; response heads and chunks out as bytes.

Nothing here touches a socket, a clock or a thread, so every rule can be tested by feeding bytes, split at any
point. The connection layer (``server.connection``) owns the socket and drives a ``RequestParser``::

    parser.feed(data)
    while (event := parser.next_event()) is not NEED_DATA:
        ...  # a Request, then Data chunks, then EndOfMessage; then parser.start_next() for the next request

The parser refuses ambiguity instead of guessing, because two parties guessing differently is how request
smuggling happens: Content-Length together with Transfer-Encoding, differing Content-Length values, codings other
than a final ``chunked``, obsolete line folding, whitespace before a header's colon, control characters, and a
missing or repeated Host on HTTP/1.1 all raise ``ProtocolError`` carrying the status to answer with. After a
``ProtocolError`` the connection must be closed: the parser no longer knows where the next request starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from time import time

from server.memo import remember

__all__ = [
    "LAST_CHUNK",
    "NEED_DATA",
    "Data",
    "EndOfMessage",
    "Limits",
    "ProtocolError",
    "Request",
    "RequestParser",
    "chunk",
    "error_response",
    "http_date",
    "reason_phrase",
    "status_line",
]


class ProtocolError(Exception):
    """The request cannot be served; answer with ``status`` and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may make the server hold in memory."""

    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    max_target_length: int = 8 * 1024
    max_body_bytes: int = 16 * 1024**2
    max_chunk_line: int = 4 * 1024  # a chunk-size or trailer line, its CRLF not counted


@dataclass(slots=True)
class Request:
    """A parsed request head. Header names are lower-case ``str``; values are latin-1 decoded ``str``."""

    method: str
    target: str
    path: str  # still percent-encoded, as it arrived
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]
    host: str  # from an absolute-form target, else the Host header ("" when neither)
    scheme: str | None  # from an absolute-form target, else None
    keep_alive: bool
    content_length: int | None  # None for chunked bodies
    chunked: bool
    expect_continue: bool

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (lower-case), or ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of the request body, with transfer coding already removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request body is complete. ``trailers`` holds chunked trailer fields, if any."""

    trailers: list[tuple[str, str]] = field(default_factory=list)


# Every request without a chunked body ends with this one event (nothing may add trailers to it).
_END_WITHOUT_TRAILERS = EndOfMessage(trailers=[])


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by ``next_event`` when more bytes must be fed (or the current request is finished)."""

# RFC 9110 5.6.2: token characters. A method and a header name must be tokens.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request target: visible ASCII plus obs-text (raw UTF-8 that clients send anyway); no controls, no spaces.
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# A control character that may not appear in a field value or a chunk extension (HTAB may).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
# Every pattern above is a single character class (or a fixed sequence of them) that cannot match the same
# characters two ways, so each runs in time linear in its input: request bytes never meet backtracking.

# The quick path (RequestParser._quick_request): field names and hosts found valid are remembered (server/memo.py
# says how they are bounded, since clients choose them); what is not remembered is checked.
_TOKEN_TEXT = re.compile(_TOKEN.pattern.decode("ascii"))  # the same token rule, for the decoded head
_COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
_PLAIN_VERSIONS = frozenset(("HTTP/1.1", "HTTP/1.0"))
_QUICK_NAMES: dict[str, str] = {}
_QUICK_HOSTS: dict[str, bool] = {}

# Fields the parser itself reads; those that decide framing or routing must not be repeated with a doubt.
_NOTED_FIELDS = frozenset(("content-length", "transfer-encoding", "host", "connection", "expect", "content-type"))
_FIELD_NAMES: dict[bytes, str] = {}
_NO_TOKENS: frozenset[str] = frozenset()


# The only whitespace HTTP allows around a field's value and between the elements of a list (OWS, RFC 9110
# 5.6.3): strip field data with ``.strip(OWS)``, never a bare ``.strip()``, which takes more. The head is decoded as
# latin-1, where NBSP (0xA0) and NEL (0x85) are whitespace to Python and field content to HTTP, so "chunked\xa0"
# would pass for chunked here while a proxy in front of us reads an unknown coding: two readings of one message.
OWS = " \t"


def _field_name(raw: bytes) -> str:
    """The lower-case ``str`` for a field name, remembered (clients repeat the same few names endlessly)."""
    name = raw.decode("ascii").lower()
    remember(_FIELD_NAMES, raw, name)
    return name


# Chunks whose data one Data event carries at most (see RequestParser._chunked_body).
CHUNKS_PER_EVENT = 256

# Parser states.
_HEAD, _BODY_LENGTH, _CHUNK_HEAD, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(7)


class RequestParser:
    """Incremental parser for a stream of HTTP/1.x requests on one connection."""

    __slots__ = ("_body_seen", "_buffer", "_remaining", "_scanned", "_state", "_trailer_bytes", "_trailers",
                 "chunks_seen", "limits", "request")  # fmt: skip

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._state = _HEAD
        self._remaining = 0  # bytes left in a Content-Length body or the current chunk
        self._body_seen = 0
        self._trailers: list[tuple[str, str]] = []
        self._trailer_bytes = 0
        self._scanned = 0  # how much of an incomplete head has been checked already (each byte is looked at once)
        self.chunks_seen = 0  # chunk heads parsed on this connection: what a chunked body costs, for fairness
        self.request: Request | None = None

    # -- feeding -------------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet consumed (for example, a pipelined next request)."""
        return len(self._buffer)

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered: the connection may be closed without losing anything."""
        return self._state == _HEAD and not self._buffer

    def start_next(self) -> int:
        """Begin the next request on this connection (after ``EndOfMessage``). Returns ``buffered``: not 0 when
        the next request has begun to arrive (pipelined), which the caller would otherwise ask at once."""
        if self._state != _DONE:
            raise RuntimeError("start_next() before the current request finished")
        self._state = _HEAD
        self.request = None
        self._body_seen = 0
        self._trailers = []
        self._trailer_bytes = 0
        return len(self._buffer)

    # -- events --------------------------------------------------------------------------------------------------

    def next_event(self) -> Request | Data | EndOfMessage | _NeedData:
        """The next event from the buffered bytes, or ``NEED_DATA``. Raises ``ProtocolError``."""
        state = self._state
        if state == _HEAD:
            return self._parse_head()
        if state == _BODY_LENGTH:
            return self._length_body()
        if state == _DONE:
            return NEED_DATA
        return self._chunked_body()

    def whole_request(self, data: bytes) -> Request | None:
        """``data`` as one complete request without a body, when it is exactly that and of the everyday shape
        (see ``_quick_request``) and nothing is buffered before it; else None, and nothing is consumed: then
        ``feed(data)`` and ``next_event()`` decide, and name any fault.

        A keep-alive client's next request nearly always arrives so, alone in one segment. Taking it whole skips
        the buffer (a copy in, a search, a copy out, a delete) and the two events after the head: it costs a
        third of ``feed`` and three ``next_event`` calls. The parser is then where that request's
        ``EndOfMessage`` leaves it, so ``start_next()`` begins the next one."""
        end = len(data) - 4
        if self._state != _HEAD or self._buffer or end <= 0 or end + 4 > self.limits.max_header_bytes:
            return None
        if data.find(b"\r\n\r\n") != end:
            return None  # no end of head, or something after it: a body, or a pipelined request
        request = self._quick_request(data[:end])
        if request is None or request.content_length:
            return None
        self.request = request
        self._state = _DONE
        return request

    # -- the head ------------------------------------------------------------------------------------------------

    def _parse_head(self) -> Request | _NeedData:
        buf = self._buffer
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line received before the request line.
        skip = 0
        while buf.startswith(b"\r\n", skip):
            skip += 2
        if skip:
            del buf[:skip]
            self._scanned = max(0, self._scanned - skip)
        # Search only what arrived since the last look (less the 3 bytes a split CRLFCRLF may straddle): a head
        # trickled in one byte at a time then costs linear time, not quadratic.
        scanned = self._scanned
        end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0)
        if end < 0:
            self._check_partial_head()
            return NEED_DATA
        if end + 4 > self.limits.max_header_bytes:
            self._refuse_long_head(buf.find(b"\r\n"))
        # No _check_line_ends here: in a complete head, a bare CR or LF is inside some line, where the checks of
        # the request line and of every field line refuse it (both are control characters).
        self._scanned = 0
        head = bytes(buf[:end])
        del buf[: end + 4]
        request = self._quick_request(head) or self._build_request(head.split(b"\r\n"))
        self.request = request
        if request.chunked:
            self._state = _CHUNK_HEAD
        else:
            # A request without a body still ends with EndOfMessage, so callers handle one shape of stream.
            self._state = _BODY_LENGTH
            self._remaining = request.content_length or 0
        return request

    def _check_partial_head(self) -> None:
        """Fail early on an incomplete head that can never become valid, rather than waiting for a timeout."""
        buf = self._buffer
        if buf.find(b"\x00", self._scanned) >= 0:
            raise ProtocolError(400, "NUL byte in request head")
        self._check_line_ends(len(buf))
        self._scanned = len(buf)
        line_end = buf.find(b"\n")
        if len(buf) > self.limits.max_header_bytes:
            self._refuse_long_head(line_end)
        if line_end < 0 and len(buf) > self.limits.max_target_length + 64:
            raise ProtocolError(414, "request target too long")

    def _check_line_ends(self, end: int) -> None:
        """Refuse a bare LF or a bare CR in the head's bytes from ``_scanned`` up to ``end``.

        Only CRLF ends a line here: a server that also took a bare LF would read a head differently from a
        proxy that does not, which is how requests get smuggled past it."""
        buf = self._buffer
        start = max(0, self._scanned - 1)
        lf = buf.find(b"\n", start, end)
        while lf >= 0:
            if lf == 0 or buf[lf - 1] != 0x0D:
                raise ProtocolError(400, "bare LF in request head (lines must end with CRLF)")
            lf = buf.find(b"\n", lf + 1, end)
        cr = buf.find(b"\r", start, end)
        while cr >= 0:
            if cr + 1 < len(buf) and buf[cr + 1] != 0x0A:
                raise ProtocolError(400, "bare CR in request head")
            cr = buf.find(b"\r", cr + 1, end)

    def _refuse_long_head(self, line_end: int) -> None:
        if line_end < 0 or line_end > self.limits.max_target_length + 64:
            raise ProtocolError(414, "request target too long")
        raise ProtocolError(431, "request header fields too large")

    def _quick_request(self, head: bytes) -> Request | None:
        """The request for a head of the everyday shape, or None: then ``_build_request`` decides, and names any fault.

        Everyday means a common method, an origin-form target, HTTP/1.1 or 1.0, a Host (on 1.1), no
        Transfer-Encoding or Expect, no repeated framing field, and lines that are all printable (no control
        character, so no bare CR or LF, and no tab or C1 character either): nearly every request a browser or a
        client library sends. Each line is checked with one ``str.isprintable``, and names and hosts seen before
        are looked up rather than matched: 1.1 us instead of 4.3 for wrk's two-line head (timeit, one core of
        the benchmark machine). It never refuses anything
        itself, so every refusal and its message comes from the careful path; a property test checks that
        whatever this accepts, the careful path parses into the same request."""
        lines = head.decode("latin-1").split("\r\n")
        if len(lines) - 1 > self.limits.max_header_count or not lines[0].isprintable():
            return None
        request_line = lines[0].split(" ")
        if len(request_line) != 3:
            return None
        method, target, version = request_line
        if (
            method not in _COMMON_METHODS
            or version not in _PLAIN_VERSIONS
            or target[:1] != "/"
            or len(target) > self.limits.max_target_length
            or "#" in target
        ):
            return None
        headers = []
        host = length = connection = None
        typed = False
        for line in lines[1:]:
            if not line.isprintable():
                return None  # a control character (a bare CR or LF too), a tab, or a C1 or no-break character
            name, colon, value = line.partition(":")
            lower = _QUICK_NAMES.get(name)
            if lower is None or not colon:
                if not colon or not _TOKEN_TEXT.fullmatch(name):
                    return None
                lower = name.lower()
                remember(_QUICK_NAMES, name, lower)
            value = value.strip(" ")  # (no tab: the line is printable)
            headers.append((lower, value))
            if lower in _NOTED_FIELDS:
                if lower == "host" and host is None:
                    host = value
                elif lower == "content-length" and length is None:
                    length = value
                elif lower == "connection" and connection is None:
                    connection = value
                elif lower == "content-type" and not typed:
                    typed = True
                else:
                    return None  # Transfer-Encoding, Expect, or a framing field said twice
        if host is None:
            if version == "HTTP/1.1":
                return None
            host = ""
        elif host not in _QUICK_HOSTS:
            if not _HOST.fullmatch(host) or _port_too_big(host):
                return None
            remember(_QUICK_HOSTS, host, True)
        content_length = 0
        if length is not None:
            if not (length.isdigit() and length.isascii() and len(length) <= 19):
                return None
            content_length = int(length)
            if content_length > self.limits.max_body_bytes:
                return None
        if connection is None:
            keep_alive = version == "HTTP/1.1"
        else:
            tokens = {token.strip(OWS).lower() for token in connection.split(",")}
            keep_alive = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        path, _, query = target.partition("?")
        return Request(method, target, path, query, version, headers, host, None, keep_alive, content_length,
                       False, False)  # fmt: skip

    def _build_request(self, lines: list[bytes]) -> Request:
        method, target, version = self._parse_request_line(lines[0])
        if len(lines) - 1 > self.limits.max_header_count:
            raise ProtocolError(431, "too many header fields")
        headers = []
        framing: dict[str, list[str]] = {}  # the few fields that decide how to read the message
        for line in lines[1:]:
            raw_name, colon, raw_value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(raw_name) or _CONTROL.search(raw_value):
                raise ProtocolError(400, _describe_bad_field(line))
            name = _FIELD_NAMES.get(raw_name) or _field_name(raw_name)
            value = raw_value.strip(b" \t").decode("latin-1")
            headers.append((name, value))
            if name in _NOTED_FIELDS:
                framing.setdefault(name, []).append(value)
        content_lengths = framing.get("content-length", [])
        transfer_encodings = framing.get("transfer-encoding", [])
        hosts = framing.get("host", [])
        connections = framing.get("connection")
        connection_tokens = (
            {t.strip(OWS).lower() for value in connections for t in value.split(",")} if connections else _NO_TOKENS
        )
        expects = framing.get("expect")
        content_types = framing.get("content-type")
        if content_types is not None and len(content_types) > 1:
            raise ProtocolError(400, "more than one Content-Type header")

        host, scheme, path, query = self._parse_target(method, target, hosts, version)
        chunked = self._parse_transfer_encoding(transfer_encodings, content_lengths, version)
        content_length = None if chunked else self._parse_content_length(content_lengths)
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection_tokens
        else:
            keep_alive = "keep-alive" in connection_tokens and "close" not in connection_tokens
        expect_continue = False
        if expects is not None and version == "HTTP/1.1":
            # RFC 9110 10.1.1: 100-continue is the only expectation there is; any other is answered with 417.
            # Every Expect line counts, as one list (5.3): the last line alone let "Expect: foo" then
            # "Expect: 100-continue" go on, an expectation a proxy in front may have read and we did not meet.
            # (Empty list elements, as in "100-continue,", do not count: RFC 9110 5.6.1.)
            expectations = [e for value in expects for e in (p.strip(OWS).lower() for p in value.split(",")) if e]
            if expectations != ["100-continue"]:
                raise ProtocolError(417, f"unsupported expectation {', '.join(expectations)!r}")
            # No body (Content-Length 0), nothing to wait for: no 100 Continue is owed.
            expect_continue = chunked or bool(content_length)
        return Request(
            method=method,
            target=target,
            path=path,
            query=query,
            version=version,
            headers=headers,
            host=host,
            scheme=scheme,
            keep_alive=keep_alive,
            content_length=content_length,
            chunked=chunked,
            expect_continue=expect_continue,
        )

    def _parse_request_line(self, line: bytes) -> tuple[str, str, str]:
        parts = line.split(b" ")
        if len(parts) != 3:
            raise ProtocolError(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            raise ProtocolError(400, "malformed method")
        if len(target) > self.limits.max_target_length:
            raise ProtocolError(414, "request target too long")
        if not _TARGET.fullmatch(target):
            raise ProtocolError(400, "malformed request target")
        match = _VERSION.fullmatch(version)
        if match is None:
            raise ProtocolError(400, "malformed HTTP version")
        if match.group(1) != b"1":
            raise ProtocolError(505, "only HTTP/1.x is supported")
        # RFC 9110 6.2: a 1.x minor version above 1 is answered as 1.1.
        version_str = "HTTP/1.0" if match.group(2) == b"0" else "HTTP/1.1"
        return method.decode("ascii"), target.decode("latin-1"), version_str

    def _parse_target(
        self, method: str, target: str, hosts: list[str], version: str
    ) -> tuple[str, str | None, str, str]:
        """Split the target into (host, scheme, path, query), applying RFC 9112 3.2 and 3.3."""
        if len(hosts) > 1:
            raise ProtocolError(400, "more than one Host header")
        if not hosts and version == "HTTP/1.1":
            raise ProtocolError(400, "missing Host header")
        host = hosts[0].strip(OWS) if hosts else ""
        if host and (not _HOST.fullmatch(host) or (host[-6:-5] == ":" and _port_too_big(host))):
            raise ProtocolError(400, "malformed Host header")
        scheme = None
        if target[0] == "/":
            path = target
        elif target == "*":
            if method != "OPTIONS":
                raise ProtocolError(400, "asterisk-form is only allowed with OPTIONS")
            path = "*"
        else:
            scheme_part, sep, rest = target.partition("://")
            if not sep or scheme_part.lower() not in ("http", "https"):
                raise ProtocolError(400, "unsupported request target form")
            scheme = scheme_part.lower()
            authority, slash, path_rest = rest.partition("/")
            authority = authority.split("?", 1)[0]
            if "@" in authority or not authority or not _HOST.fullmatch(authority) or _port_too_big(authority):
                raise ProtocolError(400, "malformed authority in absolute-form target")
            # RFC 9112 3.2.2: the target's authority replaces any Host header.
            host = authority
            path = "/" + path_rest if slash else "/" + rest[len(authority) :]
            if path.startswith("/?"):
                path = "/" + path[1:]
        path, _, query = path.partition("?")
        if "#" in path or "#" in query:
            raise ProtocolError(400, "fragment in request target")
        return host, scheme, path, query

    @staticmethod
    def _parse_transfer_encoding(encodings: list[str], lengths: list[str], version: str) -> bool:
        if not encodings:
            return False
        if version == "HTTP/1.0":
            # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
            raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if lengths:
            raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
        codings = [c.strip(OWS).lower() for value in encodings for c in value.split(",")]
        if codings[-1] != "chunked":
            # RFC 9112 6.3: without a final chunked the body's length cannot be known, which is a bad request.
            raise ProtocolError(400, "the final transfer coding must be chunked")
        if len(codings) > 1:
            if "chunked" in codings[:-1]:
                raise ProtocolError(400, "chunked applied more than once")
            raise ProtocolError(501, f"unsupported transfer coding {codings[0]!r}")
        return True

    def _parse_content_length(self, lengths: list[str]) -> int:
        if not lengths:
            return 0
        values = {v.strip(OWS) for value in lengths for v in value.split(",")}
        if len(values) != 1:
            raise ProtocolError(400, "conflicting Content-Length values")
        (value,) = values
        if not _CONTENT_LENGTH.fullmatch(value):
            raise ProtocolError(400, "malformed Content-Length")
        length = int(value)
        if length > self.limits.max_body_bytes:
            raise ProtocolError(413, "request body too large")
        return length

    # -- bodies --------------------------------------------------------------------------------------------------

    def _length_body(self) -> Data | EndOfMessage | _NeedData:
        if self._remaining == 0:
            self._state = _DONE
            return _END_WITHOUT_TRAILERS
        if not self._buffer:
            return NEED_DATA
        return Data(self._take())

    def _take(self) -> bytes:
        """Consume up to the rest of the current body (or chunk) from the buffer."""
        buf = self._buffer
        take = min(self._remaining, len(buf))
        data = bytes(buf[:take])
        del buf[:take]
        self._remaining -= take
        return data

    def _chunked_body(self) -> Data | EndOfMessage | _NeedData:
        """The data of every chunk already buffered, up to ``CHUNKS_PER_EVENT`` chunks, as one ``Data`` event;
        at the end, ``EndOfMessage`` with the trailers.

        One event per chunk made a client sending one-byte chunks (``1\\r\\nx\\r\\n``: 43,690 of them in one
        256 KiB read) cost an event and a call per byte of body, 0.15 s of the loop per read. Here the chunks
        are read with an offset into the buffer, which is cut once on the way out, and a capped number of them
        makes one event: the connection can then let other clients in between events (see
        ``HTTPConnection.advance``), as it does between pipelined requests."""
        buf = self._buffer
        pos = 0  # what this call has consumed of the buffer
        pieces: list[bytearray] = []
        chunks = 0
        try:
            while True:
                state = self._state
                if state == _CHUNK_DATA:
                    take = min(self._remaining, len(buf) - pos)
                    if not take:
                        break
                    pieces.append(buf[pos : pos + take])
                    pos += take
                    self._remaining -= take
                    if self._remaining:
                        break  # the rest of this chunk has not arrived
                    self._state = _CHUNK_END
                    continue
                if state == _CHUNK_END:
                    # Chunk data is followed by CRLF and nothing else; anything else is wrong as soon as it is seen.
                    end = buf[pos : pos + 2]
                    if end != b"\r\n"[: len(end)]:
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    if len(end) < 2:
                        break
                    pos += 2
                    self._state = _CHUNK_HEAD
                    if chunks >= CHUNKS_PER_EVENT:
                        break
                    continue
                # As with the head, look only at what arrived since the last look: a trickled line stays linear.
                # A chunk-size or trailer line is at most max_chunk_line bytes, its CRLF not counted, whether it
                # arrives whole or in pieces: a limit that held only for an incomplete line (checked below) let
                # a line of any length through when it came in one read, and the verdict hung on TCP's cuts.
                line_end = buf.find(b"\r\n", pos + max(0, self._scanned - 1))
                if line_end < 0:
                    # The line so far; a final CR may be the start of its CRLF, so it is not counted.
                    if len(buf) - pos - buf.endswith(b"\r") > self.limits.max_chunk_line:
                        raise ProtocolError(400, "chunk line too long")
                    if buf.find(b"\n", pos + self._scanned) >= 0:
                        raise ProtocolError(400, "malformed chunk framing")
                    self._scanned = len(buf) - pos
                    break
                if line_end - pos > self.limits.max_chunk_line:
                    raise ProtocolError(400, "chunk line too long")
                self._scanned = 0
                line = bytes(buf[pos:line_end])
                pos = line_end + 2
                if state == _CHUNK_HEAD:
                    size = _chunk_size(line)
                    chunks += 1
                    self.chunks_seen += 1
                    self._body_seen += size
                    if self._body_seen > self.limits.max_body_bytes:
                        raise ProtocolError(413, "request body too large")
                    if size:
                        self._remaining = size
                        self._state = _CHUNK_DATA
                        continue
                    self._state = _TRAILERS
                    if pieces:
                        break  # the data first; the trailers at the next call
                    continue
                # _TRAILERS: field lines until an empty line
                if not line:
                    self._state = _DONE
                    return EndOfMessage(self._trailers)
                self._trailer_bytes += len(line) + 2
                if (
                    self._trailer_bytes > self.limits.max_header_bytes
                    or len(self._trailers) >= self.limits.max_header_count
                ):
                    raise ProtocolError(431, "trailer fields too large")
                raw_name, colon, raw_value = line.partition(b":")
                if not colon or not _TOKEN.fullmatch(raw_name) or _CONTROL.search(raw_value):
                    raise ProtocolError(400, _describe_bad_field(line))
                self._trailers.append((_field_name(raw_name), raw_value.strip(b" \t").decode("latin-1")))
            return Data(b"".join(pieces)) if pieces else NEED_DATA
        finally:
            del buf[:pos]


def valid_host(host: str) -> bool:
    """Whether ``host`` is a Host value this parser accepts (a registered name, IPv4 or bracketed IPv6 address,
    and a port of at most 65535): for hosts that arrive by other ways, such as a proxy's ``Forwarded: host=``.
    (The parser itself inlines the same two checks.)"""
    return _HOST.fullmatch(host) is not None and not _port_too_big(host)


def _port_too_big(authority: str) -> bool:
    """True for ``a:65536`` to ``a:99999``, which would reach the app as SERVER_PORT.

    ``_HOST`` allows at most five digits after the colon, so only a five-digit port can be out of range, and
    five-digit strings compare as their numbers do. One slice in the common case: this runs for every request."""
    return authority[-6:-5] == ":" and authority[-5:] > "65535" and authority[-5:].isdigit()


def _chunk_size(line: bytes) -> int:
    """The size from a chunk-size line (RFC 9112 7.1): hex digits, then optionally ``;`` and extensions.

    Whitespace may stand only before the ``;`` of an extension (BWS); ``5 `` alone is refused, as is any
    control character, because a proxy that reads such a line differently would frame the body differently."""
    size, semicolon, extensions = line.partition(b";")
    if semicolon:
        size = size.rstrip(b" \t")
        if _CONTROL.search(extensions):
            raise ProtocolError(400, "control character in chunk extension")
    if not _HEX.fullmatch(size):
        raise ProtocolError(400, "invalid chunk size")
    return int(size, 16)


def _describe_bad_field(line: bytes) -> str:
    """Say which rule a rejected field line broke, for the log and the 400 page."""
    if line[:1] in (b" ", b"\t"):
        return "obsolete line folding is not accepted"
    name, colon, _ = line.partition(b":")
    if not colon:
        return "header line without a colon"
    if name != name.rstrip(b" \t"):
        return "whitespace between header name and colon"
    if not _TOKEN.fullmatch(name):
        return "malformed header name"
    return "control character in header value"


# -- responses -----------------------------------------------------------------------------------------------------


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` ("Unknown" when there is none)."""
    return _PHRASES.get(status, "Unknown")


_STATUS_LINES = {status: f"HTTP/1.1 {status} {phrase}\r\n" for status, phrase in _PHRASES.items()}


def status_line(status: int) -> str:
    """``HTTP/1.1 200 OK\\r\\n`` for ``status``: the first line of a response the server writes itself."""
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current time as an IMF-fixdate, recomputed at most once per second."""
    global _date_cache
    now = int(time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of a chunked response body (``data`` must not be empty)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_response(
    status: int,
    detail: str,
    server: str,
    *,
    close: bool = True,
    headers: tuple[tuple[str, str], ...] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """A complete small plain-text response for an error the server answers itself.

    ``version`` is the request's: an HTTP/1.0 request whose connection stays open (``close=False``) is told so
    with ``Connection: keep-alive``, without which a 1.0 client takes the end of the response for the end of the
    connection. The page may echo what the client sent (a target, an expectation), so it says ``nosniff``: no
    browser is to read it as HTML."""
    body = f"{status} {reason_phrase(status)}\n{detail}\n".encode()
    if close:
        connection = "Connection: close\r\n"
    else:
        connection = "Connection: keep-alive\r\n" if version == "HTTP/1.0" else ""
    head = (
        f"{status_line(status)}Date: {http_date()}\r\nServer: {server}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers)
        + connection
        + "\r\n"
    )
    return head.encode("latin-1") + body
