"""The sans-IO request parser: every request split at every byte offset, and every refusal with its status."""

from __future__ import annotations

import itertools

import pytest

from server.http import (
    NEED_DATA,
    Data,
    EndOfMessage,
    Limits,
    ProtocolError,
    Request,
    RequestParser,
    chunk,
    error_response,
)


def events_for(raw: bytes, splits: list[int] | None = None, limits: Limits | None = None) -> list:
    """Feed ``raw`` in pieces cut at ``splits`` and collect events across pipelined requests."""
    parser = RequestParser(limits)
    events: list = []
    cuts = [0, *(splits or []), len(raw)]
    for start, end in itertools.pairwise(cuts):
        parser.feed(raw[start:end])
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, EndOfMessage):
                parser.start_next()
    return events


def normalise(events: list) -> list:
    """Merge consecutive Data events, since how a body is cut into pieces depends on how it arrived."""
    merged: list = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


SAMPLES = {
    "get": b"GET /index.html?a=1&b=%20 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "content-length": b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
    "chunked": (
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
    ),
    "pipelined": (
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.0\r\n\r\n"
    ),
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_split_point_gives_the_same_events(name):
    raw = SAMPLES[name]
    whole = normalise(events_for(raw))
    assert whole, "the sample must produce events"
    for cut in range(1, len(raw)):
        assert normalise(events_for(raw, [cut])) == whole, f"split at byte {cut}"


def test_byte_by_byte_feeding():
    raw = SAMPLES["chunked"] + SAMPLES["pipelined"]
    assert normalise(events_for(raw, list(range(1, len(raw))))) == normalise(events_for(raw))


def test_request_fields():
    request, end = events_for(SAMPLES["get"])
    assert isinstance(request, Request)
    assert (request.method, request.path, request.query, request.version) == (
        "GET",
        "/index.html",
        "a=1&b=%20",
        "HTTP/1.1",
    )
    assert request.host == "example.com"
    assert request.keep_alive and not request.chunked and request.content_length == 0
    assert request.headers == [("host", "example.com"), ("accept", "*/*")]
    assert end == EndOfMessage()


def test_chunked_body_extensions_and_trailers():
    events = normalise(events_for(SAMPLES["chunked"]))
    assert events[0].chunked and events[0].content_length is None
    assert events[1] == Data(b"hello world")
    assert events[2] == EndOfMessage([("x-checksum", "abc")])


def test_pipelined_requests_in_order():
    events = normalise(events_for(SAMPLES["pipelined"]))
    paths = [e.path for e in events if isinstance(e, Request)]
    assert paths == ["/1", "/2", "/3"]
    assert Data(b"abc") in events
    http10 = [e for e in events if isinstance(e, Request)][2]
    assert http10.version == "HTTP/1.0" and not http10.keep_alive


def test_header_values_trimmed_and_names_lowercased():
    (request, _) = events_for(b"GET / HTTP/1.1\r\nHOST:  h  \r\nX-Thing:\ta b\t\r\nEmpty:\r\n\r\n")
    assert request.headers == [("host", "h"), ("x-thing", "a b"), ("empty", "")]


@pytest.mark.parametrize(
    ("connection", "version", "keep_alive"),
    [
        ("", "HTTP/1.1", True),
        ("Connection: close\r\n", "HTTP/1.1", False),
        ("Connection: Keep-Alive, Upgrade\r\n", "HTTP/1.1", True),
        ("", "HTTP/1.0", False),
        ("Connection: keep-alive\r\n", "HTTP/1.0", True),
    ],
)
def test_keep_alive_rules(connection, version, keep_alive):
    raw = f"GET / {version}\r\nHost: h\r\n{connection}\r\n".encode()
    assert events_for(raw)[0].keep_alive is keep_alive


def test_absolute_form_target_overrides_host():
    (request, _) = events_for(b"GET http://Other.example:8080/p/q?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert (request.host, request.scheme, request.path, request.query) == (
        "Other.example:8080",
        "http",
        "/p/q",
        "x=1",
    )


def test_absolute_form_without_path():
    (request, _) = events_for(b"GET https://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n")
    assert (request.path, request.scheme) == ("/", "https")


def test_options_asterisk():
    (request, _) = events_for(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "*"


def test_http10_without_host_is_fine():
    (request, _) = events_for(b"GET / HTTP/1.0\r\n\r\n")
    assert request.host == ""


def test_minor_version_above_one_is_answered_as_11():
    assert events_for(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n")[0].version == "HTTP/1.1"


def test_expect_100_continue():
    raw = b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    parser = RequestParser()
    parser.feed(raw)
    request = parser.next_event()
    assert request.expect_continue
    assert parser.next_event() is NEED_DATA


def test_identical_repeated_content_length_is_accepted():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    assert normalise(events_for(raw))[1] == Data(b"abc")


REFUSALS = {
    "content-length with transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "differing content-lengths": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        400,
    ),
    "content-length list": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n", 400),
    "signed content-length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", 400),
    "hex content-length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\n", 400),
    "final coding not chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    "coding before chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    "chunked twice": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    "chunked not last": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "two content-types": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\n",
        400,
    ),
    "space after chunk size": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "control in chunk extension": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "transfer-encoding on 1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    "obsolete line folding": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    "tab before colon": (b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
    "no colon": (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", 400),
    "nul in header value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    "control in header value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
    "bare cr in header": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
    "nul in target": (b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "control in target": (b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "double space in request line": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "lowercase version": (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    "bad method": (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "http/2": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    "http/0.9 style": (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
    "missing host": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "malformed host": (b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),
    "host port out of range": (b"GET / HTTP/1.1\r\nHost: a:99999999\r\n\r\n", 400),
    "host port above 65535": (b"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400),
    "absolute-form port out of range": (b"GET http://a:70000/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "asterisk with get": (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "authority form": (b"GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "userinfo in absolute form": (b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "lf-only line ending": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "unsupported expectation": (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n", 417),
    "invalid chunk size": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "negative chunk size": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    "chunk longer than size": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk size overflow": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
        400,
    ),
    "lf in chunk framing": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
        400,
    ),
}


# Framing that can never become valid is refused as soon as the bytes that break it arrive, not at a timeout:
# each of these is an incomplete stream (nothing more could make it right).
REFUSED_AT_ONCE = {
    "no crlf after chunk data": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
    "lf after chunk data": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n",
    "bare lf after the request line": b"GET / HTTP/1.1\r\n\nHost: h",
    "bare lf in a field": b"GET / HTTP/1.1\r\nHost: h\nX: y",
    "bare cr in a field": b"GET / HTTP/1.1\r\nHost: h\rX: y",
}


@pytest.mark.parametrize("name", list(REFUSED_AT_ONCE))
def test_framing_that_cannot_become_valid_is_refused_at_once(name):
    raw = REFUSED_AT_ONCE[name]
    # Byte by byte, as a trickling client would send it: the refusal comes with the first impossible byte.
    parser = RequestParser()
    with pytest.raises(ProtocolError) as caught:
        for i in range(len(raw)):
            parser.feed(raw[i : i + 1])
            while parser.next_event() is not NEED_DATA:
                pass
    assert caught.value.status == 400


def test_chunk_extension_may_follow_whitespace():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 ;ext=1\r\nhello\r\n0\r\n\r\n"
    events = events_for(raw)
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"hello"


def test_equal_content_lengths_frame_once():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello"
    events = events_for(raw)
    assert events[0].content_length == 5
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"hello"


@pytest.mark.parametrize("name", list(REFUSALS))
def test_ambiguous_or_malformed_requests_are_refused(name):
    raw, status = REFUSALS[name]
    with pytest.raises(ProtocolError) as caught:
        events_for(raw)
    assert caught.value.status == status


def test_refusal_is_the_same_at_every_split():
    raw, status = REFUSALS["content-length with transfer-encoding"]
    for cut in range(1, len(raw)):
        with pytest.raises(ProtocolError) as caught:
            events_for(raw, [cut])
        assert caught.value.status == status


def test_long_target_is_414():
    limits = Limits(max_target_length=100)
    with pytest.raises(ProtocolError) as caught:
        events_for(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits=limits)
    assert caught.value.status == 414


def test_long_target_is_414_before_the_line_ends():
    limits = Limits(max_target_length=100, max_header_bytes=10_000)
    parser = RequestParser(limits)
    parser.feed(b"GET /" + b"a" * 500)
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.status == 414


def test_large_head_is_431():
    limits = Limits(max_header_bytes=1024)
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Big: " + b"a" * 2000 + b"\r\n\r\n"
    with pytest.raises(ProtocolError) as caught:
        events_for(raw, limits=limits)
    assert caught.value.status == 431


def test_incomplete_large_head_is_431_without_waiting_for_its_end():
    parser = RequestParser(Limits(max_header_bytes=1024))
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000)
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.status == 431


def test_too_many_headers_is_431():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n"
    with pytest.raises(ProtocolError) as caught:
        events_for(raw, limits=Limits(max_header_count=10))
    assert caught.value.status == 431


def test_declared_body_too_large_is_413_before_reading_it():
    with pytest.raises(ProtocolError) as caught:
        events_for(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n", limits=Limits(max_body_bytes=1000))
    assert caught.value.status == 413


def test_chunked_body_too_large_is_413():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
    raw += b"400\r\n"
    with pytest.raises(ProtocolError) as caught:
        events_for(raw, limits=Limits(max_body_bytes=1500))
    assert caught.value.status == 413


def test_too_many_trailers_is_431():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    raw += b"".join(b"T%d: v\r\n" % i for i in range(20)) + b"\r\n"
    with pytest.raises(ProtocolError) as caught:
        events_for(raw, limits=Limits(max_header_count=10))
    assert caught.value.status == 431


def test_start_next_before_end_is_an_error():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
    parser.next_event()
    with pytest.raises(RuntimeError):
        parser.start_next()


def test_idle_and_buffered():
    parser = RequestParser()
    assert parser.idle
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next")
    assert not parser.idle
    parser.next_event()
    parser.next_event()
    assert parser.start_next() == parser.buffered == len(b"GET /next")  # what start_next says is what is buffered
    parser.feed(b" HTTP/1.1\r\nHost: h\r\n\r\n")
    parser.next_event()
    parser.next_event()
    assert parser.start_next() == 0  # nothing pipelined behind it


def test_chunk_framing_and_error_response():
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    response = error_response(400, "bad things", "test/1")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert b"bad things" in body


# Every character of latin-1 (the head's decoding) that str.strip() takes for whitespace but HTTP does not (OWS is
# a space or a tab, RFC 9110 5.6.3): line ends and separators, which are control characters, and NEL and NBSP,
# which are field content. The whole class, next to each framing field's value, before or after it.
NOT_OWS = [chr(code) for code in range(256) if not chr(code).strip() and chr(code) not in " \t"]
FRAMING_FIELDS = {
    "Transfer-Encoding": "chunked",
    "Content-Length": "5",
    "Host": "example.com",
    "Expect": "100-continue",
}


@pytest.mark.parametrize("char", NOT_OWS, ids=[f"{ord(c):#04x}" for c in NOT_OWS])
@pytest.mark.parametrize("field", list(FRAMING_FIELDS))
@pytest.mark.parametrize("where", ["before", "after"])
def test_framing_values_are_trimmed_of_spaces_and_tabs_only(field, char, where):
    """ "chunked\\xa0" is no chunked: read as one, a proxy in front that sees an unknown coding and we would frame
    the same bytes two ways (request smuggling). Each such value is refused, never trimmed into a valid one."""
    value = FRAMING_FIELDS[field]
    value = char + value if where == "before" else value + char
    fields = {"Host": "h", "Content-Length": "5"} if field in ("Expect", "Host") else {"Host": "h"}
    fields[field] = value
    head = "POST / HTTP/1.1\r\n" + "".join(f"{name}: {text}\r\n" for name, text in fields.items()) + "\r\n"
    with pytest.raises(ProtocolError) as caught:
        events_for(head.encode("latin-1") + b"hello")
    assert caught.value.status in (400, 417)


@pytest.mark.parametrize("char", ["\x85", "\xa0"])
def test_a_connection_option_is_trimmed_of_spaces_and_tabs_only(char):
    # "close\xa0" is not the token close (it is no token at all): the connection stays open, as for any option
    # the server does not know, whichever path parses the head.
    head = f"GET / HTTP/1.1\r\nHost: h\r\nConnection: close{char}\r\n\r\n".encode("latin-1")
    (request, _end) = events_for(head)
    assert request.keep_alive
    assert not RequestParser().whole_request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, x\r\n\r\n").keep_alive


def test_tiny_chunks_in_one_read_make_few_events_not_one_per_chunk():
    """A 256 KiB read of one-byte chunks (``1\\r\\nx\\r\\n``) made 43,690 Data events, one per byte of body, and
    the connection one call per event: 0.15 s of the event loop per read, for every such client."""
    from server.http import CHUNKS_PER_EVENT

    parser = RequestParser(Limits(max_body_bytes=1 << 30))
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 43_690)
    assert isinstance(parser.next_event(), Request)
    sizes = []
    while (event := parser.next_event()) is not NEED_DATA:
        assert isinstance(event, Data)
        sizes.append(len(event.data))
    assert sum(sizes) == 43_690
    assert len(sizes) == -(-43_690 // CHUNKS_PER_EVENT)  # each event as many chunks as allowed
    parser.feed(b"0\r\n\r\n")
    assert isinstance(parser.next_event(), EndOfMessage)
