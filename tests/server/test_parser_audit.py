"""What an audit of the sans-IO parser and the server's own error pages found, each pinned by a test.

1. The chunk-line limit (``Limits.max_chunk_line``) held only while a line was incomplete: a 60 KB chunk
   extension arriving in one read was accepted, the same bytes over two reads got 400. It now holds however the
   bytes arrive, for chunk-size lines and trailer lines alike (they are read by the same code).
2. Several ``Expect`` lines: the last one won, so ``Expect: foo`` then ``Expect: 100-continue`` went on instead of
   answering 417. Only a single ``100-continue``, all Expect lines taken as one list, is an expectation the server
   meets (RFC 9110 10.1.1).
3. The server's own error pages echo client text as text/plain: they now say ``X-Content-Type-Options: nosniff``.
   And a page for an HTTP/1.0 request whose connection stays open can say ``Connection: keep-alive``
   (``error_response(..., close=False, version=request.version)``), without which a 1.0 client takes the end of
   the response for the end of the connection.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from server.http import NEED_DATA, Data, EndOfMessage, Limits, ProtocolError, Request, RequestParser, error_response
from tests.support import ServerThread, read_response

CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def outcome(pieces: list[bytes], limits: Limits | None = None) -> tuple[list, int | None]:
    """Feed ``pieces`` one read at a time: the requests with their whole bodies and trailers, and the refusal's
    status (None when there was none). Data boundaries are merged away: they depend on how the bytes arrived."""
    parser = RequestParser(limits)
    messages: list = []
    body = bytearray()
    try:
        for piece in pieces:
            parser.feed(piece)
            while (event := parser.next_event()) is not NEED_DATA:
                if isinstance(event, Request):
                    messages.append([event, b"", []])
                    body = bytearray()
                elif isinstance(event, Data):
                    body += event.data
                else:
                    assert isinstance(event, EndOfMessage)
                    messages[-1][1:] = [bytes(body), event.trailers]
                    parser.start_next()
    except ProtocolError as error:
        return messages, error.status
    return messages, None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length, so any integers will do)."""
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- 1: the chunk-line limit holds however the bytes arrive -------------------------------------------------------


def chunk_line_request(line_length: int, *, trailer: bool = False) -> bytes:
    """A chunked request carrying ``hello`` whose chunk-size line (or, with ``trailer``, a trailer field line) is
    exactly ``line_length`` bytes long, its CRLF not counted."""
    if trailer:
        line = b"x-pad: " + b"a" * (line_length - 7)
        return CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n" + line + b"\r\n\r\n"
    line = b"5;" + b"a" * (line_length - 2)
    return CHUNKED_HEAD + line + b"\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("trailer", [False, True], ids=["chunk-size line", "trailer line"])
def test_an_over_long_chunk_line_in_one_read_is_refused(trailer):
    messages, status = outcome([chunk_line_request(60_000, trailer=trailer)])
    assert status == 400
    assert not messages or messages[0][1:] == [b"", []]  # the head, and none of the body


@pytest.mark.parametrize("trailer", [False, True], ids=["chunk-size line", "trailer line"])
def test_the_chunk_line_limit_is_the_same_in_one_read_and_in_two(trailer):
    limit = Limits().max_chunk_line
    for length in (limit - 1, limit, limit + 1, limit + 2, 60_000):
        raw = chunk_line_request(length, trailer=trailer)
        whole = outcome([raw])
        assert whole[1] == (400 if length > limit else None), length
        start = len(CHUNKED_HEAD) if not trailer else raw.index(b"x-pad")
        for point in (start + limit - 1, start + limit, start + limit + 1, start + length, start + length + 1):
            assert outcome(cut(raw, [point])) == whole, (length, point)


def test_the_chunk_line_limit_bounds_what_is_held_before_the_line_ends():
    """The limit still refuses a line as soon as it has outgrown it, without waiting for its CRLF."""
    limit = Limits().max_chunk_line
    parser = RequestParser()
    parser.feed(CHUNKED_HEAD + b"5;" + b"a" * (limit - 2))
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() is NEED_DATA  # the limit's worth of line and no CRLF yet: not over the limit
    parser.feed(b"\r")
    assert parser.next_event() is NEED_DATA  # ... and a CR that may begin its CRLF is not part of the line
    parser.feed(b"a")
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.status == 400


SMALL = Limits(max_chunk_line=48)


@st.composite
def chunked_requests(draw) -> tuple[bytes, int]:
    """A chunked request whose chunk-size or trailer line is near the limit (or far past it), and that line's
    length. Everything else in it is well formed."""
    length = draw(st.one_of(st.integers(SMALL.max_chunk_line - 3, SMALL.max_chunk_line + 3), st.integers(8, 400)))
    ext = draw(st.text(alphabet="abc=;\t \"'!", min_size=length, max_size=length)).encode()
    body = draw(st.binary(min_size=1, max_size=20))
    where = draw(st.sampled_from(["first", "second", "last", "trailer"]))
    size = b"%x" % len(body)
    long_size_line = size + b";" + ext[: length - len(size) - 1]
    if where == "trailer":
        raw = b"%b\r\n%b\r\n0\r\nx:%b\r\n\r\n" % (size, body, ext[: length - 2])
    elif where == "first":
        raw = b"%b\r\n%b\r\n0\r\n\r\n" % (long_size_line, body)
    elif where == "second":
        raw = b"%b\r\n%b\r\n%b\r\n%b\r\n0\r\n\r\n" % (size, body, long_size_line, body)
    else:
        raw = b"%b\r\n%b\r\n0;%b\r\n\r\n" % (size, body, ext[: length - 2])
    pipelined = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n" if draw(st.booleans()) else b""
    return CHUNKED_HEAD + raw + pipelined, length


@given(made=chunked_requests(), points=st.lists(st.integers(0, 10_000), max_size=8))
@example(made=(chunk_line_request(49), 49), points=[len(CHUNKED_HEAD) + 20])
@example(made=(chunk_line_request(48), 48), points=[len(CHUNKED_HEAD) + 49])
@example(made=(chunk_line_request(49, trailer=True), 49), points=[])
def test_any_split_of_a_chunked_request_gives_the_verdict_of_one_read(made, points):
    """However the reads are cut, a request with a chunk line longer than the limit is refused with 400, and one
    within it parses into the same requests, bodies and trailers as when it arrives in one read."""
    raw, length = made
    whole = outcome([raw], SMALL)
    assert whole[1] == (400 if length > SMALL.max_chunk_line else None)
    assert outcome(cut(raw, points), SMALL) == whole
    assert outcome([raw[i : i + 1] for i in range(len(raw))], SMALL) == whole


def test_a_live_server_refuses_an_over_long_chunk_line_sent_at_once():
    with ServerThread(echo_app) as server, server.connect() as sock:
        sock.sendall(chunk_line_request(60_000))
        status, _, _ = read_response(sock)
    assert status == 400
    with ServerThread(echo_app) as server, server.connect() as sock:
        sock.sendall(chunk_line_request(Limits().max_chunk_line))
        assert read_response(sock)[::2] == (200, b"hello")  # and one at the limit is served


# -- 2: only a single 100-continue is an expectation the server meets ---------------------------------------------


def expect_request(*values: str, version: str = "HTTP/1.1", length: int = 2) -> bytes:
    fields = "".join(f"Expect: {value}\r\n" for value in values)
    return f"PUT /x {version}\r\nHost: h\r\n{fields}Content-Length: {length}\r\n\r\n".encode("latin-1") + b"ab"[:length]


def expect_verdict(*values: str, version: str = "HTTP/1.1") -> bool | ProtocolError:
    """``expect_continue`` of the parsed request, or the ProtocolError refusing it."""
    parser = RequestParser()
    parser.feed(expect_request(*values, version=version))
    try:
        request = parser.next_event()
    except ProtocolError as error:
        return error
    assert isinstance(request, Request)
    return request.expect_continue


@pytest.mark.parametrize(
    "values",
    [
        ("foo", "100-continue"),  # the last one used to win
        ("100-continue", "foo"),
        ("100-continue, foo",),
        ("foo,100-continue",),
        ("100-continue", "100-continue"),
    ],
)
def test_any_expectation_besides_a_single_100_continue_is_417(values):
    verdict = expect_verdict(*values)
    assert isinstance(verdict, ProtocolError) and verdict.status == 417, values


@pytest.mark.parametrize("value", ["100-continue", "100-Continue", " 100-CONTINUE\t"])
def test_a_single_100_continue_is_met(value):
    assert expect_verdict(value) is True


@pytest.mark.parametrize(("value", "detail"), [("teapot", "'teapot'"), (" Foo\t", "'foo'"), ("", "''")])
def test_a_single_unsupported_expectation_keeps_its_message(value, detail):
    verdict = expect_verdict(value)
    assert isinstance(verdict, ProtocolError) and verdict.status == 417
    assert verdict.detail == f"unsupported expectation {detail}"


def test_an_http10_request_s_expectations_are_ignored():
    """RFC 9110 10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request (1.0 has no 1xx
    responses), and this one ignores the field altogether there, as before."""
    assert expect_verdict("foo", "100-continue", version="HTTP/1.0") is False
    assert expect_verdict("100-continue", version="HTTP/1.0") is False


def test_no_head_with_expect_takes_the_quick_path():
    """The quick path leaves Expect to the careful one, which decides alone: nothing there can say 100-continue."""
    for values in (("100-continue",), ("foo", "100-continue"), ("100-continue", "foo")):
        raw = expect_request(*values, length=0)
        parser = RequestParser()
        assert parser._quick_request(raw[: raw.index(b"\r\n\r\n")]) is None
        assert parser.whole_request(raw) is None and parser.idle


@pytest.mark.parametrize("values", [("100-continue,",), (",100-continue",), ("100-continue", ""), (" , 100-continue",)])
def test_empty_list_elements_do_not_count_as_expectations(values):
    """RFC 9110 5.6.1: a recipient ignores empty elements of a list ("100-continue," is one expectation)."""
    assert expect_verdict(*values) is True


def test_100_continue_with_an_empty_body_asks_for_nothing():
    """With Content-Length 0 there is no body to wait for: no 100 Continue is owed, and the request ends at once."""
    parser = RequestParser()
    parser.feed(expect_request("100-continue", length=0))
    request = parser.next_event()
    assert isinstance(request, Request) and not request.expect_continue and request.content_length == 0
    assert parser.next_event() == EndOfMessage()


EXPECTATIONS = ["100-continue", "100-Continue", " 100-continue ", "\t100-CONTINUE", "foo", "", "100", "continue",
                "100-continue;q=1", "100-continue, foo", "foo , 100-continue", "100-continue,100-continue"]  # fmt: skip


@given(values=st.lists(st.sampled_from(EXPECTATIONS), max_size=4), chunked=st.booleans())
@example(values=["foo", "100-continue"], chunked=False)
def test_the_expectations_are_met_only_when_they_are_one_100_continue(values, chunked):
    """Whatever the Expect lines and their order, the request goes on only when, taken together as one list
    (RFC 9110 5.3) and without empty elements (5.6.1), they are exactly one 100-continue; anything else (no
    expectation at all in an Expect line too) is refused with 417."""
    framing = "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: 2\r\n"
    raw = ("PUT / HTTP/1.1\r\nHost: h\r\n" + "".join(f"Expect: {v}\r\n" for v in values) + framing + "\r\n").encode()
    parser = RequestParser()
    parser.feed(raw)
    elements = [e.strip(" \t").lower() for v in values for e in v.split(",") if e.strip(" \t")]  # (empty ones: none)
    try:
        request = parser.next_event()
    except ProtocolError as error:
        assert error.status == 417
        assert values and elements != ["100-continue"]
        return
    assert isinstance(request, Request)
    assert request.expect_continue is bool(values)
    assert not values or elements == ["100-continue"]


def test_a_live_server_answers_417_to_a_second_expectation_before_the_app_runs():
    ran = []

    def app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    with ServerThread(app) as server, server.connect() as sock:
        sock.sendall(expect_request("foo", "100-continue")[:-2])  # the head only: the client waits for a 100
        status, _, body = read_response(sock)
    assert (status, ran) == (417, [])
    assert b"unsupported expectation" in body


# -- 3: the server's own pages: nosniff, and keep-alive said to an HTTP/1.0 client --------------------------------


def response_head(response: bytes) -> tuple[list[str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


@given(
    status=st.sampled_from([308, 400, 404, 408, 413, 414, 417, 431, 500, 501, 503, 505]),
    detail=st.text(max_size=60),
    close=st.booleans(),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
)
@example(status=417, detail="unsupported expectation '<html><script>alert(1)</script>'", close=True, version="HTTP/1.1")
def test_every_error_page_says_nosniff_and_how_the_connection_goes_on(status, detail, close, version):
    """Error pages echo what the client sent (a target, an expectation) as text/plain: no browser may sniff them
    into HTML. A 1.0 request kept open is told so (without it, a 1.0 client takes the response's end for the
    connection's); a 1.1 one needs no word, and a closing connection always says close."""
    lines, body = response_head(error_response(status, detail, "test/1", close=close, version=version))
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    assert lines.count("X-Content-Type-Options: nosniff") == 1
    assert lines.count("Content-Type: text/plain; charset=utf-8") == 1
    assert f"Content-Length: {len(body)}" in lines
    connection = [line for line in lines if line.lower().startswith("connection:")]
    if close:
        assert connection == ["Connection: close"]
    elif version == "HTTP/1.0":
        assert connection == ["Connection: keep-alive"]
    else:
        assert connection == []


def test_error_pages_are_as_before_when_no_version_is_given():
    """The new ``version`` defaults to what every caller had: a 1.1 response that closes, or says nothing."""
    closing, _ = response_head(error_response(400, "bad", "test/1"))
    assert closing[-1] == "Connection: close"
    kept, _ = response_head(error_response(308, "moved", "test/1", close=False, headers=(("Location", "/a"),)))
    assert kept[-1] == "Location: /a"
    assert not any(line.lower().startswith("connection:") for line in kept)


def test_a_live_server_s_refusal_says_nosniff():
    with ServerThread(echo_app) as server, server.connect() as sock:
        sock.sendall(b"GET /<b>x</b> HTTP/1.1\r\nHost: h\r\nExpect: <b>x</b>\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (status, headers["x-content-type-options"]) == (417, "nosniff")
    assert b"<b>x</b>" in body
