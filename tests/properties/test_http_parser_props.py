"""Properties of the sans-IO request parser, over random bytes and random splits.

1. Whatever the bytes, the parser yields requests and body events or raises ``ProtocolError``: never another
   exception (an IndexError or a UnicodeDecodeError here would be a 500, or a dead connection, for one client).
2. However the same bytes are split across reads, the parser reaches the same verdict: the same requests, the
   same bodies, the same trailers, and the same refusal status. A parser whose answer depends on how TCP
   happened to segment a stream is one a smuggler can steer.
3. Well-formed requests, built at random (methods, targets, fields, Content-Length or chunked bodies with
   extensions and trailers, several pipelined), parse back into exactly what was built.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given
from hypothesis import strategies as st

from server.http import NEED_DATA, Data, EndOfMessage, Limits, ProtocolError, Request, RequestParser

# Small limits, so that random inputs reach them too.
LIMITS = Limits(max_header_bytes=2048, max_header_count=20, max_target_length=512, max_body_bytes=4096)


@dataclass
class Outcome:
    """What a stream of bytes parsed into: normalised so that Data boundaries do not matter."""

    messages: list[tuple[Request, bytes, list[tuple[str, str]]]]
    refused: int | None  # the ProtocolError status, or None
    partial: bool  # a request head or body was still incomplete at the end


def parse(chunks: list[bytes]) -> Outcome:
    parser = RequestParser(LIMITS)
    messages: list[tuple[Request, bytes, list[tuple[str, str]]]] = []
    request: Request | None = None
    body = bytearray()
    try:
        for piece in chunks:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Request):
                    request, body = event, bytearray()
                elif isinstance(event, Data):
                    body += event.data
                elif isinstance(event, EndOfMessage):
                    assert request is not None
                    messages.append((request, bytes(body), event.trailers))
                    request = None
                    parser.start_next()
    except ProtocolError as error:
        assert 400 <= error.status <= 599, error
        return Outcome(messages, error.status, False)
    return Outcome(messages, None, request is not None or parser.buffered > 0)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [p for p in pieces if p]


def same_verdict(whole: Outcome, pieces: Outcome) -> None:
    assert pieces.messages == whole.messages
    assert pieces.refused == whole.refused


# -- 1 and 2: any bytes ---------------------------------------------------------------------------------------

# Bytes that matter to HTTP framing, so that random inputs are near-misses rather than noise.
ATOMS = [
    b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"Host: h\r\n", b"Host: a\r\n",
    b"Content-Length: 3\r\n", b"Content-Length: 3, 3\r\n", b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n", b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"Content-Type: a/b\r\n",
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b'"', b"\x00", b"\x01", b"\x7f", b"\xff", b"0\r\n",
    b"3\r\n", b"3;ext=1\r\n", b"3 \r\n", b"abc", b"abc\r\n", b"X: y\r\n", b"X : y\r\n", b" folded\r\n", b"f" * 17,
]  # fmt: skip
streams = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(ATOMS), max_size=40).map(b"".join),
)


@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
@example(data=b"GET / HTTP/1.1\r\n\nHost: h\r\n\r\n", cuts=[16, 17])
@example(data=b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX", cuts=[60])
@example(data=b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", cuts=[1, 3])
def test_any_bytes_give_requests_or_a_refusal_and_the_same_verdict_however_split(data, cuts):
    whole = parse([data])
    same_verdict(whole, parse(split(data, cuts)))


@given(data=streams)
def test_byte_by_byte_is_the_same_as_all_at_once(data):
    whole = parse([data])
    same_verdict(whole, parse([data[i : i + 1] for i in range(len(data))]))


# -- 3: well-formed requests round-trip -------------------------------------------------------------------------

token = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                max_size=12)  # fmt: skip
field_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=30).map(lambda v: v.strip(" \t"))  # fmt: skip
path = st.lists(st.text(alphabet="abcXYZ019-._~%!$&'()*+,;=:@", min_size=1, max_size=8), max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)
query = st.one_of(st.just(""), st.text(alphabet="abc=&%+19", max_size=12))
reserved = {"host", "content-length", "transfer-encoding", "expect", "connection", "content-type", "te", "trailer"}
fields = st.lists(st.tuples(token.filter(lambda n: n.lower() not in reserved), field_value), max_size=6)


@st.composite
def requests(draw) -> tuple[bytes, tuple[str, str, str, list[tuple[str, str]], bytes, list[tuple[str, str]]]]:
    """One well-formed request as bytes, and what it should parse into."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM"]))
    target = draw(path) + (("?" + q) if (q := draw(query)) else "")
    headers = [("host", draw(st.sampled_from(["h", "example.com:8080", "[::1]:80"])))]
    headers += [(name.lower(), value) for name, value in draw(fields)]
    body = draw(st.binary(max_size=300))
    chunked = draw(st.booleans())
    trailers: list[tuple[str, str]] = []
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    if chunked:
        trailers = [(name.lower(), value) for name, value in draw(fields)]
        sizes = draw(st.lists(st.integers(min_value=1, max_value=80), max_size=6))
        framed, rest = bytearray(), body
        for size in sizes:
            piece, rest = rest[:size], rest[size:]
            if piece:
                ext = draw(st.sampled_from(["", ";a=b", ' ;name="quoted"', "\t;x"]))
                framed += f"{len(piece):x}{ext}\r\n".encode() + piece + b"\r\n"
        if rest:
            framed += f"{len(rest):X}\r\n".encode() + rest + b"\r\n"
        framed += b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers).encode("latin-1") + b"\r\n"
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1") + bytes(framed)
    else:
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        headers.append(("content-length", str(len(body))))
    if chunked:
        headers.append(("transfer-encoding", "chunked"))
    return raw, (method, target, "HTTP/1.1", headers, body, trailers)


@given(batch=st.lists(requests(), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_well_formed_pipelined_requests_parse_back_exactly(batch, cuts):
    stream = b"".join(raw for raw, _ in batch)
    outcome = parse(split(stream, cuts))
    assert outcome.refused is None and not outcome.partial
    assert len(outcome.messages) == len(batch)
    for (request, body, trailers), (_, (method, target, version, headers, want_body, want_trailers)) in zip(
        outcome.messages, batch, strict=True
    ):
        assert (request.method, request.target, request.version) == (method, target, version)
        assert request.headers == headers
        assert body == want_body
        assert trailers == want_trailers
        assert request.content_length == (None if request.chunked else len(want_body))


# -- 4: the quick path agrees with the careful one ------------------------------------------------------------------

# Request lines and field lines at the edges of what the quick path accepts (RequestParser._quick_request).
REQUEST_LINES = [
    b"GET / HTTP/1.1", b"GET / HTTP/1.0", b"POST /a?b=c HTTP/1.1", b"get / HTTP/1.1", b"X-CUSTOM / HTTP/1.1",
    b"GET / HTTP/1.2", b"GET / HTTP/2.0", b"GET /a#b HTTP/1.1", b"GET http://h/ HTTP/1.1", b"GET * HTTP/1.1",
    b"OPTIONS * HTTP/1.1", b"GET /\t HTTP/1.1", b"GET  HTTP/1.1", b"GET / HTTP/1.1 ", b"GET /\xff\x80 HTTP/1.1",
    b"GET /a\rb HTTP/1.1", b"GET /" + b"a" * 600 + b" HTTP/1.1",
]  # fmt: skip
FIELD_LINES = [
    b"Host: h", b"Host: a:80", b"Host: a:99999", b"Host: [::1]:8080", b"Host:", b"Host: h\xa0", b"host:  h\t",
    b"Host: a b", b"Host", b"Content-Length: 3", b"Content-Length: 3, 3", b"Content-Length: \xb2",
    b"Content-Length: -1", b"Content-Length: " + b"9" * 20, b"Content-Length: 99999", b"Transfer-Encoding: chunked",
    b"Expect: 100-continue", b"Connection: close", b"Connection: keep-alive", b"Connection: Keep-Alive, close",
    b"Connection: upgrade", b"Content-Type: a/b", b"X: y", b"X : y", b" folded", b"X:\x01", b"X: \x7f", b"X: a\rb",
    b"X: a\nb", b"X: a\r", b"NoColon", b"\xe9: v", b"X: caf\xe9", b"Cookie: a=1; b=2",
]  # fmt: skip


def agree(head: bytes) -> bool:
    """Check the quick path against the careful one for ``head``; True when the quick path took it."""
    parser = RequestParser(LIMITS)
    quick = parser._quick_request(head)
    if quick is None:
        return False  # declined: the careful path decides alone, as the tests above check
    assert quick == parser._build_request(head.split(b"\r\n")), head  # raises ProtocolError if it would refuse
    return True


def test_the_quick_path_agrees_on_every_edge_line():
    """Every request line with a Host, and every field line before and after a good Host and twice, on 1.1 and
    1.0: each edge of the quick path met alone, deterministically (the property below combines them)."""
    heads = [line + b"\r\nHost: h" for line in REQUEST_LINES]
    for field in FIELD_LINES:
        for request_line in (b"GET / HTTP/1.1", b"GET / HTTP/1.0", b"POST /p?q HTTP/1.1"):
            heads += [request_line + b"\r\n" + field, request_line + b"\r\nHost: h\r\n" + field]
            heads.append(request_line + b"\r\n" + field + b"\r\nHost: h")
            heads.append(request_line + b"\r\nHost: h\r\n" + field + b"\r\n" + field)  # said twice
    framing = [b"Host: h", b"Host: a:80", b"Content-Length: 3", b"Content-Length: 4", b"Connection: close",
               b"Connection: keep-alive", b"Content-Type: a/b", b"Content-Type: c/d"]  # fmt: skip
    for start in (b"GET / HTTP/1.1\r\nHost: h", b"GET / HTTP/1.0"):
        heads += [b"\r\n".join((start, one, other)) for one in framing for other in framing]  # every ordered pair
        heads += [start + b"\r\nX: y" * (LIMITS.max_header_count - 1 + extra) for extra in (0, 1, 2)]  # the limit
    taken = [head for head in heads if agree(head)]
    assert len(taken) > len(heads) // 8  # and many of them do take the quick path


heads = st.one_of(
    st.tuples(
        st.sampled_from(REQUEST_LINES[:3] * 4 + REQUEST_LINES),  # mostly lines the quick path takes
        st.lists(st.sampled_from(FIELD_LINES), max_size=6),
    ).map(lambda parts: b"\r\n".join([parts[0], *parts[1]])),
    st.binary(max_size=300),
    requests().map(lambda made: made[0].partition(b"\r\n\r\n")[0]),
)


@given(head=heads)
@example(head=b"GET / HTTP/1.0\r\nConnection: Keep-Alive, close")
def test_what_the_quick_path_accepts_the_careful_path_parses_the_same(head):
    agree(head)


def test_everyday_heads_take_the_quick_path():
    """The quick path is only worth having if ordinary requests take it: these are wrk's, curl's, a browser's
    and a form post's."""
    everyday = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000",
        b"GET /index.html HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*",
        b"GET /static/app.css?v=3 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Accept: text/css,*/*;q=0.1\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
        b"Cookie: session=abc; theme=dark",
        b"POST /login HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 27",
        b"GET / HTTP/1.0",
    ]
    for head in everyday:
        assert agree(head), head


# -- 5: a request taken whole is the request the event stream gives -------------------------------------------------

segments = st.one_of(
    streams,
    heads.map(lambda head: head + b"\r\n\r\n"),  # mostly complete heads, the quick path's edges among them
    requests().map(lambda made: made[0]),
    st.lists(requests(), min_size=2, max_size=3).map(lambda batch: b"".join(raw for raw, _ in batch)),
)


@given(data=segments, following=requests())
@example(data=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", following=(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", None))
@example(data=b"\r\n\r\n", following=(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None))
@example(data=b"\r\n\r", following=(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None))
@example(data=b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", following=(b"\r\nGET / HTTP/1.0\r\n\r\n", 0))
def test_a_whole_request_is_what_the_event_stream_makes_of_the_same_bytes(data, following):
    """``whole_request`` (the connection's shortcut for a request alone in one segment) either declines and
    consumes nothing, or returns exactly the one bodiless request that feeding the bytes gives, and leaves the
    parser where that request's EndOfMessage does: the next request on the connection parses the same."""
    parser = RequestParser(LIMITS)
    request = parser.whole_request(data)
    if request is None:
        assert parser.buffered == 0 and parser.idle  # declined: the event stream decides from the same bytes
        return
    assert parse([data]) == Outcome([(request, b"", [])], None, False)
    assert parser.next_event() is NEED_DATA  # nothing of it is left to read
    parser.start_next()
    assert parser.idle
    parser.feed(following[0])
    assert parser.next_event() == parse([following[0]]).messages[0][0]


def test_a_whole_request_is_taken_only_alone_complete_and_without_a_body():
    """What the connection's shortcut must leave to the event stream: a body, even empty of bytes so far; a
    pipelined second request; an unfinished head; bytes already buffered; and anything the quick path declines."""
    plain = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert RequestParser(LIMITS).whole_request(plain) is not None
    declined = [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",  # a body
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",  # a body still to come
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        plain + plain,  # pipelined
        plain[:-2],  # unfinished
        b"\r\n" + plain,  # an empty line first, which the event stream skips
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: the event stream refuses it, with its reason
        b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"y" * LIMITS.max_header_bytes + b"\r\n\r\n",  # too long
    ]
    for data in declined:
        assert RequestParser(LIMITS).whole_request(data) is None, data
    buffered = RequestParser(LIMITS)
    buffered.feed(b"G")
    assert buffered.whole_request(plain) is None  # behind other bytes it is not alone
    mid = RequestParser(LIMITS)
    mid.feed(plain)
    assert isinstance(mid.next_event(), Request)
    assert mid.whole_request(plain) is None  # nor before the previous request has ended


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=250, max_size=700),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
    pipelined=st.booleans(),
)
def test_bodies_of_many_tiny_chunks_parse_back_exactly_however_split(sizes, cuts, pipelined):
    """Tiny chunks are gathered into few events (CHUNKS_PER_EVENT at most per event): the body, the trailers and a
    request pipelined behind them come out exactly, wherever the reads are cut."""
    body = bytes(i % 251 for i in range(sum(sizes)))
    framed, offset = bytearray(), 0
    for size in sizes:
        framed += f"{size:x}\r\n".encode() + body[offset : offset + size] + b"\r\n"
        offset += size
    framed += b"0\r\nx-sum: 1\r\n\r\n"
    stream = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + bytes(framed)
    if pipelined:
        stream += b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    outcome = parse(split(stream, cuts))
    assert outcome.refused is None and not outcome.partial
    assert [(m[0].target, m[1], m[2]) for m in outcome.messages][:1] == [("/", body, [("x-sum", "1")])]
    assert len(outcome.messages) == 1 + pipelined
