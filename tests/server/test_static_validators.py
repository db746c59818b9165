"""The pure pieces behind the static rules: HTTP dates, entity-tag lists, Range, Accept-Encoding, media types."""

import pytest

from server.static.media import choose_coding, content_type, may_have_siblings, parse_accept_encoding
from server.static.validators import (
    UNSATISFIABLE,
    ByteRange,
    etag_matches,
    http_date,
    if_range_allows,
    parse_http_date,
    parse_range,
)

SUNDAY = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_the_three_http_date_formats(value):
    assert parse_http_date(value) == SUNDAY


def test_rfc850_two_digit_years_use_a_sliding_century():
    assert parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT") == 0
    assert parse_http_date("Monday, 01-Jan-30 00:00:00 GMT") == parse_http_date("Tue, 01 Jan 2030 00:00:00 GMT")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 GMT\xa0",  # NBSP is field content to HTTP, not the whitespace around a value
        "\x85Sun, 06 Nov 1994 08:49:37 GMT",
    ],
)
def test_invalid_http_dates(value):
    assert parse_http_date(value) is None


def test_http_date_round_trips():
    assert http_date(SUNDAY) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(SUNDAY + 0.9) == "Sun, 06 Nov 1994 08:49:37 GMT"  # one-second resolution
    assert parse_http_date(http_date(SUNDAY)) == SUNDAY


@pytest.mark.parametrize(
    ("field", "weak", "expected"),
    [
        ('"v1"', False, True),
        ('W/"v1"', True, True),
        ('W/"v1"', False, False),
        ('"a", "v1"', False, True),
        ('"a,v1", "b"', True, False),  # a comma inside a tag is part of the tag
        ("*", False, True),
        (" *\t", False, True),
        ("*\xa0", False, False),  # only spaces and tabs surround a value (RFC 9110 5.6.3): this is no "*"
        ("v1", True, False),  # unquoted: malformed, matches nothing
        ('"v1" "a"', True, False),  # no comma between tags: malformed
        ("", True, False),
    ],
)
def test_etag_matches(field, weak, expected):
    assert etag_matches(field, '"v1"', weak=weak) is expected


def test_if_range_compares_strongly_and_dates_exactly():
    assert if_range_allows('"v1"', '"v1"', SUNDAY)
    assert not if_range_allows('W/"v1"', '"v1"', SUNDAY)
    assert if_range_allows("Sun, 06 Nov 1994 08:49:37 GMT", '"v1"', SUNDAY + 0.5)
    assert not if_range_allows("Sun, 06 Nov 1994 08:49:38 GMT", '"v1"', SUNDAY)
    assert not if_range_allows("*", '"v1"', SUNDAY)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 1, ByteRange(0, 0)),
        ("bytes=0-", 100, ByteRange(0, 99)),
        ("bytes=-1", 100, ByteRange(99, 99)),
        ("bytes=99-", 100, ByteRange(99, 99)),
        ("bytes=100-", 100, UNSATISFIABLE),
        ("bytes=-0", 100, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),
        ("bytes=0-1, 3-4", 100, None),
        ("bytes=0-1,", 100, ByteRange(0, 1)),  # an empty list element is allowed
        ("bytes=" + "9" * 5000 + "-", 100, None),  # beyond int()'s digit limit: not a range anyone means
        ("bytes=0-" + "9" * 30, 100, ByteRange(0, 99)),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def test_byte_range_length():
    assert ByteRange(5, 9).length == 5


def test_parse_accept_encoding():
    assert parse_accept_encoding("gzip, br;q=0.5, x-gzip;q=0.2 , deflate;q=0, *;q=0.1") == {
        "gzip": 0.2,  # x-gzip is gzip; the later member wins
        "br": 0.5,
        "deflate": 0.0,
        "*": 0.1,
    }
    assert parse_accept_encoding("gzip;q=2, br;q=nope, zstd;q=0.5") == {"zstd": 0.5}
    assert parse_accept_encoding("") == {}


def test_choose_coding_ranks_by_quality_then_preference():
    assert choose_coding("gzip, br", ["br", "gzip"]) == ["br", "gzip"]
    assert choose_coding("gzip, br;q=0.9", ["br", "gzip"]) == ["gzip", "br"]
    assert choose_coding("*;q=0.5, gzip;q=0", ["br", "gzip"]) == ["br"]
    assert choose_coding(None, ["br", "gzip"]) == []
    assert choose_coding("gzip", []) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.css", True), ("a.js", True), ("a.svg", True), ("a.wasm", True), ("a.png", False), ("a.bin", False)],
)
def test_siblings_only_for_compressible_types(name, expected):
    assert may_have_siblings(name, content_type(name)) is expected
    assert may_have_siblings(name + ".gz", content_type(name)) is False


def test_a_huge_entity_tag_list_is_cheap_even_with_our_tag_in_it():
    # Answered on the event loop, so linear is not enough: 65,000 empty elements cost 28 ms, and a pipelining
    # client multiplied that for everyone else. Past MAX_LIST_ELEMENTS a list matches nothing.
    import time

    from server.static.validators import MAX_LIST_ELEMENTS, etag_matches

    etag = '"abc-123"'
    assert etag_matches(", " * (MAX_LIST_ELEMENTS - 2) + etag, etag, weak=True)
    huge = "," * 65_000 + etag
    assert not etag_matches(huge, etag, weak=True)
    assert not etag_matches("," * 65_000 + '"other"', etag, weak=True)  # not even parsed
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        etag_matches(huge, etag, weak=True)
        best = min(best, time.perf_counter() - started)
    assert best < 0.002


def test_accept_encoding_is_split_on_spaces_and_tabs_only():
    # NBSP is no whitespace to HTTP: "gzip\xa0" names some other coding, not gzip.
    assert parse_accept_encoding("gzip\xa0, br ;\tq=0.5") == {"gzip\xa0": 1.0, "br": 0.5}


def test_a_long_accept_encoding_is_answered_but_never_remembered():
    from server.static import media

    media._remembered_codings.cache_clear()
    junk = "x-junk, " * 10_000 + "gzip"
    assert media.preferred_codings(junk, ("gzip",)) == ("gzip",)
    assert media.preferred_codings("gzip, br", ("gzip",)) == ("gzip",)
    assert media._remembered_codings.cache_info().currsize == 1  # the short one only
