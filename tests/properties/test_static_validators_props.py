"""Properties of Range and the conditional headers, against an oracle written from RFC 9110, not from the code.

The inputs are generated as *structures* (a list of range specs, a list of entity tags, a date and the format
to write it in) and then rendered to header text. The oracle decides from the structure, so it never parses a
header itself and cannot share a parsing bug with :mod:`server.static.validators`.

Three levels:

- :func:`parse_range` alone, for any header and any file size: never raises, and its answer is the oracle's.
- ``Prepared.answer`` (what every static reply goes through) with a synthetic ``stat``, for every combination of
  If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, If-Range and Range: the status follows the
  order of evaluation of RFC 9110 section 13.2.2, and a 206 or a 416 carries consistent framing headers.
- :func:`serve_path` on real files of random sizes: the bytes a 206 points at are the bytes asked for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from server.static import StaticMount, serve_path
from server.static.reply import FileReply, Prepared
from server.static.validators import UNSATISFIABLE, ByteRange, make_etag, parse_range
from tests.support import read_reply

# -- Range headers as structures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntRange:
    first: int
    last: int | None  # None: "first-" (open-ended)


@dataclass(frozen=True)
class SuffixRange:
    length: int


@dataclass(frozen=True)
class Garbage:
    """An element that is not a range-spec in RFC 9110's grammar."""

    text: str


@dataclass(frozen=True)
class RangeHeader:
    unit: str
    specs: tuple[IntRange | SuffixRange | Garbage | None, ...]  # None: an empty list element
    text: str  # the rendered header


# Not one of these is a range-spec: signs, inner whitespace, hex, fractions, a bare "-", three parts.
GARBAGE = ["-", "abc", "1-2-3", "1 -2", "1- 2", "- 5", "+1-2", "0x1-", "1.5-2", "=1-2", "1-a", "--1", "5", "bytes"]
OWS = st.sampled_from(["", " ", "\t", "  ", " \t"])  # RFC 9110 5.6.3: SP and HTAB only
# Mostly small numbers, where the interesting edges are; sometimes far beyond any file size.
NUMBERS = st.one_of(st.integers(0, 80), st.integers(0, 10**25))


@st.composite
def numbers_as_text(draw: st.DrawFn, value: int) -> str:
    """Write a number, sometimes with leading zeros (1*DIGIT allows them)."""
    return "0" * draw(st.sampled_from([0, 0, 0, 1, 3])) + str(value)


@st.composite
def range_headers(draw: st.DrawFn) -> RangeHeader:
    # Weighted towards one valid bytes range, the only kind that is answered with 206 or 416.
    unit = draw(st.sampled_from(["bytes"] * 6 + ["BYTES", "Bytes", "byte", "items", "", "none"]))
    specs: list[IntRange | SuffixRange | Garbage | None] = []
    pieces = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2, 3]))):
        kind = draw(st.sampled_from(["int"] * 3 + ["open"] * 2 + ["suffix"] * 2 + ["garbage", "empty"]))
        if kind == "int":
            first = draw(NUMBERS)
            # Half the time a well-ordered pair; otherwise anything, including "last < first".
            last = draw(st.one_of(st.integers(0, 80).map(lambda delta, first=first: first + delta), NUMBERS))
            spec: IntRange | SuffixRange | Garbage | None = IntRange(first, last)
            text = f"{draw(numbers_as_text(first))}-{draw(numbers_as_text(last))}"
        elif kind == "open":
            first = draw(NUMBERS)
            spec, text = IntRange(first, None), f"{draw(numbers_as_text(first))}-"
        elif kind == "suffix":
            length = draw(NUMBERS)
            spec, text = SuffixRange(length), f"-{draw(numbers_as_text(length))}"
        elif kind == "garbage":
            text = draw(st.sampled_from(GARBAGE))
            spec = Garbage(text)
        else:
            spec, text = None, ""
        specs.append(spec)
        pieces.append(draw(OWS) + text + draw(OWS))
    return RangeHeader(unit, tuple(specs), f"{unit}={','.join(pieces)}")


def range_oracle(header: RangeHeader, size: int) -> tuple[int, int] | str:
    """RFC 9110 section 14: (first, last) to send with 206, "416", or "ignore" (send the whole file, 200).

    Several ranges are answered with the whole file: the RFC lets a server ignore Range, and the module says it
    does so for more than one range, to keep the body a single span.
    """
    if header.unit.lower() != "bytes":  # range units are case-insensitive (14.1)
        return "ignore"
    specs = [spec for spec in header.specs if spec is not None]  # empty list elements are ignored (5.6.1)
    if not specs or any(isinstance(spec, Garbage) for spec in specs):
        return "ignore"  # an invalid ranges-specifier is ignored (14.2)
    if any(isinstance(spec, IntRange) and spec.last is not None and spec.last < spec.first for spec in specs):
        return "ignore"  # "last-pos < first-pos" makes the range-set invalid (14.1.1)
    if len(specs) != 1:
        return "ignore"
    (spec,) = specs
    if isinstance(spec, IntRange):
        if spec.first >= size:
            return "416"
        last = size - 1 if spec.last is None else min(spec.last, size - 1)
        return (spec.first, last)
    assert isinstance(spec, SuffixRange)
    if spec.length == 0 or size == 0:  # a suffix of zero bytes, or of an empty file, selects nothing
        return "416"
    return (max(size - spec.length, 0), size - 1)


SIZES = st.one_of(st.integers(0, 100), st.integers(0, 2**63))


@given(header=range_headers(), size=SIZES)
@example(header=RangeHeader("bytes", (SuffixRange(0),), "bytes=-0"), size=10)
@example(header=RangeHeader("bytes", (IntRange(0, None),), "bytes=0-"), size=0)
@example(header=RangeHeader("bytes", (IntRange(5, 3),), "bytes=5-3"), size=10)
@example(header=RangeHeader("bytes", (None, IntRange(2, 4), None), "bytes=,2-4,"), size=10)
def test_parse_range_agrees_with_the_rfc(header: RangeHeader, size: int) -> None:
    expected = range_oracle(header, size)
    event(f"expect {'206' if isinstance(expected, tuple) else expected}")
    result = parse_range(header.text, size)
    if expected == "ignore":
        assert result is None
    elif expected == "416":
        assert result is UNSATISFIABLE
    else:
        assert isinstance(result, ByteRange)
        assert 0 <= result.start <= result.end < size
        assert (result.start, result.end) == expected
        assert result.length == result.end - result.start + 1


@given(
    text=st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40).map(lambda s: "bytes=" + s),
    size=SIZES,
)
@example(text="bytes=" + "9" * 5000 + "-", size=10)  # beyond int()'s digit limit: ignored, not a ValueError
@example(text="bytes=-" + "9" * 5000, size=10)
def test_parse_range_never_raises_on_any_latin1_text(text: str, size: int) -> None:
    # Header values reach us as latin-1 strings; whatever they hold, the answer is one of the three outcomes.
    result = parse_range(text, size)
    assert result is None or result is UNSATISFIABLE or isinstance(result, ByteRange)
    if isinstance(result, ByteRange):
        assert 0 <= result.start <= result.end < size


@pytest.mark.parametrize("space", ["\x1c", "\x1f", "\x85", "\xa0", "\x0b", "\x0c"])
def test_only_sp_and_htab_count_as_whitespace_in_range(space: str) -> None:
    assert parse_range(f"bytes={space}0-5", 10) is None


# -- entity tags and dates as structures --------------------------------------------------------------------

# etagc = %x21 / %x23-7E / obs-text: anything visible but DQUOTE, and a comma is allowed inside a tag.
ETAGC = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters='"\x7f')


@dataclass(frozen=True)
class TagList:
    """An If-Match / If-None-Match value: "*", a list of (is_weak, opaque) tags, or something malformed."""

    star: bool
    tags: tuple[tuple[bool, str], ...]
    malformed: bool
    text: str


@st.composite
def tag_lists(draw: st.DrawFn, ours: str) -> TagList:
    """``ours`` is the quoted opaque tag of the file; lists often hold it, strong or weak, or a near miss."""
    kind = draw(st.sampled_from(["list", "list", "list", "star", "malformed"]))
    if kind == "star":
        return TagList(True, (), False, draw(OWS) + "*" + draw(OWS))
    opaque_choices = st.one_of(
        st.just(ours),
        st.just(ours),
        st.just(ours[:-2] + '"'),  # a prefix of ours
        st.just(ours[:-1] + ',"'),  # ours with a comma tucked inside
        st.text(ETAGC, max_size=8).map(lambda body: f'"{body}"'),
    )
    tags = tuple(draw(st.lists(st.tuples(st.booleans(), opaque_choices), max_size=4)))
    rendered = [("W/" if weak else "") + opaque for weak, opaque in tags]
    if kind == "malformed":
        # One element that is not an entity-tag: unquoted, unterminated, a "*" inside a list, lower-case "w/".
        bad = draw(st.sampled_from([ours[1:-1], ours[:-1], "*", "w/" + ours, "W/ " + ours, ours + ours]))
        if bad == "*" and not rendered:
            bad = ours[1:-1]  # "*" alone is the valid wildcard, not a malformed list
        rendered.insert(draw(st.integers(0, len(rendered))), bad)
    elements = []
    for element in rendered:
        elements.append(draw(OWS) + element + draw(OWS))
        if draw(st.integers(0, 5)) == 0:
            elements.append(draw(OWS))  # an empty list element, which a recipient must accept
    return TagList(False, tags, kind == "malformed", ",".join(elements))


def tags_match(value: TagList, ours: str, *, weak: bool) -> bool:
    """RFC 9110 8.8.3.2: strong comparison needs both tags strong; weak comparison ignores W/."""
    if value.star:
        return True  # the representation exists
    if value.malformed:
        return False  # an invalid field value matches nothing (for If-Match, that means 412)
    return any(opaque == ours and (weak or not is_weak) for is_weak, opaque in value.tags)


_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_LONG_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def format_date(timestamp: int, form: str) -> str:
    """Write a timestamp in one of the three HTTP-date formats (RFC 9110 5.6.7), with our own English names."""
    t = time.gmtime(timestamp)
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    month = _MONTHS[t.tm_mon - 1]
    if form == "imf":
        return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {month} {t.tm_year} {clock} GMT"
    if form == "rfc850":
        return f"{_LONG_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{month}-{t.tm_year % 100:02d} {clock} GMT"
    return f"{_DAYS[t.tm_wday]} {month} {t.tm_mday:2d} {clock} {t.tm_year}"


@dataclass(frozen=True)
class DateValue:
    value: int | None  # None: not a valid HTTP-date, so the header is ignored
    text: str


INVALID_DATES = ["yesterday", "0", "Sun, 06 Nov 1994 08:49:37 UTC", "sun, 06 nov 1994 08:49:37 gmt", "", "*"]


@st.composite
def dates(draw: st.DrawFn, modified: int | None) -> DateValue:
    """A date near the file's modification second (where the comparisons flip), or anywhere, or invalid."""
    if draw(st.integers(0, 7)) == 0:
        return DateValue(None, draw(st.sampled_from(INVALID_DATES)))
    near = NOW if modified is None else modified
    value = draw(st.one_of(st.integers(near - 2, near + 2), st.integers(0, 2**32)))
    value = max(value, 0)
    # RFC 850 has a two-digit year, read within 1970-2069: only write it for dates it can express.
    forms = ["imf", "imf", "asctime"] + (["rfc850"] if value < 3155760000 else [])
    return DateValue(value, draw(OWS) + format_date(value, draw(st.sampled_from(forms))) + draw(OWS))


@dataclass(frozen=True)
class IfRange:
    tag: tuple[bool, str] | None  # (is_weak, opaque)
    date: DateValue | None
    text: str


@st.composite
def if_ranges(draw: st.DrawFn, ours: str, modified: int | None) -> IfRange:
    """If-Range = entity-tag / HTTP-date: exactly one validator (a list is not an If-Range value)."""
    if draw(st.booleans()):
        weak = draw(st.booleans())
        opaque = draw(st.sampled_from([ours, ours, ours[:-2] + '"', '"other"']))
        return IfRange((weak, opaque), None, ("W/" if weak else "") + opaque)
    date = draw(dates(modified))
    return IfRange(None, date, date.text)


def if_range_oracle(value: IfRange, ours: str, modified: int | None) -> bool:
    """RFC 9110 13.1.5: an entity tag must match strongly; a date must equal Last-Modified exactly (and without
    a Last-Modified, no date matches)."""
    if value.tag is not None:
        is_weak, opaque = value.tag
        return not is_weak and opaque == ours
    assert value.date is not None
    return modified is not None and value.date.value is not None and value.date.value == modified


@dataclass(frozen=True)
class Request:
    method: str
    if_match: TagList | None
    if_unmodified_since: DateValue | None
    if_none_match: TagList | None
    if_modified_since: DateValue | None
    if_range: IfRange | None
    range: RangeHeader | None

    def headers(self) -> dict[str, str]:
        fields = {
            "if-match": self.if_match,
            "if-unmodified-since": self.if_unmodified_since,
            "if-none-match": self.if_none_match,
            "if-modified-since": self.if_modified_since,
            "if-range": self.if_range,
            "range": self.range,
        }
        return {name: value.text for name, value in fields.items() if value is not None}


def maybe(strategy: st.SearchStrategy, chance: int) -> st.SearchStrategy:
    """``strategy`` one time in ``chance``, else None (the header is absent)."""
    return st.integers(1, chance).flatmap(lambda roll: strategy if roll == 1 else st.none())


@st.composite
def requests(draw: st.DrawFn, ours: str, modified: int | None) -> Request:
    return Request(
        method=draw(st.sampled_from(["GET", "GET", "HEAD"])),
        # Each precondition is absent most of the time, so that every step of the evaluation gets its turn.
        if_match=draw(maybe(tag_lists(ours), 4)),
        if_unmodified_since=draw(maybe(dates(modified), 4)),
        if_none_match=draw(maybe(tag_lists(ours), 4)),
        if_modified_since=draw(maybe(dates(modified), 4)),
        if_range=draw(maybe(if_ranges(ours, modified), 3)),
        range=draw(maybe(range_headers(), 1)),
    )


def decision_oracle(request: Request, ours: str, modified: int | None, size: int) -> int | tuple[int, int]:
    """RFC 9110 13.2.2, steps 1 to 5, for a GET or HEAD of an existing file; a 206 as (first, last). Without a
    Last-Modified, the date conditions are ignored (13.1.3, 13.1.4)."""
    # 1 and 2: If-Match, or else If-Unmodified-Since (an invalid date is ignored).
    if request.if_match is not None:
        if not tags_match(request.if_match, ours, weak=False):
            return 412
    elif request.if_unmodified_since is not None:
        date = request.if_unmodified_since.value
        if date is not None and modified is not None and modified > date:
            return 412
    # 3 and 4: If-None-Match, or else If-Modified-Since; both lead to 304 for GET and HEAD.
    if request.if_none_match is not None:
        if tags_match(request.if_none_match, ours, weak=True):
            return 304
    elif request.if_modified_since is not None:
        date = request.if_modified_since.value
        if date is not None and modified is not None and modified <= date:
            return 304
    # 5: Range, for GET only, and only if If-Range (when present) matches.
    range_applies = request.if_range is None or if_range_oracle(request.if_range, ours, modified)
    if request.method == "GET" and request.range is not None and range_applies:
        outcome = range_oracle(request.range, size)
        if outcome == "416":
            return 416
        if isinstance(outcome, tuple):
            return outcome
    return 200


def fake_stat(size: int, mtime_ns: int, inode: int) -> os.stat_result:
    seconds = mtime_ns / 1e9
    return os.stat_result((0o100644, inode, 1, 1, 0, 0, size, 0, int(seconds), 0, 0.0, seconds, 0.0, 0, mtime_ns, 0))


# "Now" for Prepared, fixed so that the Last-Modified it sends is known before the request is drawn.
NOW = 1_750_000_000


def sent_modified(meta: os.stat_result) -> int | None:
    """The Last-Modified a file is sent with, and the date every condition is then judged by: its modification
    second, or none at all for a file dated after now (RFC 9110 8.8.2.1)."""
    second = int(meta.st_mtime)
    return second if second <= NOW else None


@st.composite
def files_and_requests(draw: st.DrawFn) -> tuple[os.stat_result, Request]:
    size = draw(st.one_of(st.integers(0, 100), st.integers(0, 2**40)))
    # Past, future, and beyond the year 9999 (which no HTTP-date can write).
    mtime_ns = draw(st.one_of(st.integers(0, 2**32 * 10**9), st.integers(NOW * 10**9, 2**40 * 10**9)))
    meta = fake_stat(size, mtime_ns, draw(st.integers(1, 2**40)))
    ours = make_etag(meta)
    return meta, draw(requests(ours, sent_modified(meta)))


def check_reply(reply: FileReply, method: str, size: int, expected: int | tuple[int, int]) -> None:
    """The status is the oracle's, and the framing headers agree with the status and with each other."""
    if isinstance(expected, tuple):
        first, last = expected
        assert reply.status == 206
        assert 0 <= first <= last < size
        assert reply.header("Content-Range") == f"bytes {first}-{last}/{size}"
        assert reply.header("Content-Length") == str(last - first + 1)
        assert (reply.offset, reply.length) == (first, last - first + 1)
        return
    assert reply.status == expected
    if expected == 200:
        assert reply.header("Content-Length") == str(size)
        assert reply.header("Content-Range") is None
        assert reply.length == (0 if method == "HEAD" else size)
    elif expected == 304:
        # No body, and no Content-Length that would have to repeat the full size (RFC 9110 15.4.5).
        assert reply.header("Content-Length") is None and reply.length == 0 and reply.body == b""
    elif expected == 416:
        assert reply.header("Content-Range") == f"bytes */{size}"
        assert reply.length == 0
    else:
        assert expected == 412
        assert reply.length == 0 and reply.header("Content-Range") is None


@given(case=files_and_requests())
def test_conditional_and_range_decisions_follow_rfc_9110(case: tuple[os.stat_result, Request]) -> None:
    meta, request = case
    ours = make_etag(meta)
    expected = decision_oracle(request, ours, sent_modified(meta), meta.st_size)
    prepared = Prepared(meta, "application/octet-stream", None, [], now=NOW)
    reply = prepared.answer(request.method, request.headers())
    event(f"status {reply.status}")
    check_reply(reply, request.method, meta.st_size, expected)
    if reply.status in (200, 206):
        sent = sent_modified(meta)
        assert reply.header("Last-Modified") == (None if sent is None else format_date(sent, "imf"))


@pytest.mark.parametrize("other", ['"other"', 'W/"x"', '""'])
def test_if_range_is_one_validator_not_a_list(other: str) -> None:
    meta = fake_stat(100, 10**18, 7)
    headers = {"range": "bytes=0-9", "if-range": f"{other}, {make_etag(meta)}"}
    reply = Prepared(meta, "application/octet-stream", None, []).answer("GET", headers)
    assert reply.status == 200


# -- serve_path on real files --------------------------------------------------------------------------------


def content_of_size(size: int) -> bytes:
    # Every byte tells its position modulo a prime, so a wrong offset shows in the bytes themselves.
    return bytes(index % 251 for index in range(size))


@pytest.fixture(scope="module")
def sized_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that gains a file per size on demand; a file, once written, never changes."""
    return tmp_path_factory.mktemp("sized")


@pytest.fixture(scope="module")
def sized_mount(sized_root: Path) -> StaticMount:
    return StaticMount("/files", sized_root)


@given(size=st.integers(0, 3000), header=range_headers(), method=st.sampled_from(["GET", "GET", "HEAD"]))
def test_serve_path_sends_exactly_the_bytes_the_range_names(
    sized_root: Path, sized_mount: StaticMount, size: int, header: RangeHeader, method: str
) -> None:
    path = sized_root / f"{size}.bin"
    if not path.exists():
        path.write_bytes(content_of_size(size))
    reply = serve_path(sized_mount, method, f"/files/{size}.bin", {"range": header.text})
    expected = range_oracle(header, size) if method == "GET" else "ignore"
    body = read_reply(reply)
    if isinstance(expected, tuple):
        first, last = expected
        check_reply(reply, method, size, expected)
        assert body == content_of_size(size)[first : last + 1]
    elif expected == "416":
        check_reply(reply, method, size, 416)
    else:
        check_reply(reply, method, size, 200)
        assert body == (b"" if method == "HEAD" else content_of_size(size))
