"""Validators and the rules that use them: ETag, Last-Modified, conditional requests, byte ranges (RFC 9110).

Pure functions of header values and a file's ``stat``: no I/O, so every rule is tested by calling it.

Preconditions are evaluated in the order RFC 9110 section 13.2.2 prescribes: If-Match, else
If-Unmodified-Since (412 when they fail); then If-None-Match, else If-Modified-Since (304 for GET and HEAD).
If-None-Match takes precedence because an entity tag is a more exact validator than a one-second timestamp.

Ranges: one ``bytes=`` range (``first-last``, ``first-`` or the suffix ``-N``) is answered with 206; a range
that starts beyond the end with 416; a header that does not parse is ignored, as RFC 9110 section 14.2
requires. Several ranges are answered with the whole file (200), which the RFC allows and which keeps the body
one contiguous span that the event loop can ``sendfile`` in one go, instead of a multipart/byteranges body
assembled from pieces.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from functools import lru_cache

from server.http import OWS

# -- validators ----------------------------------------------------------------------------------------------


def make_etag(st: os.stat_result) -> str:
    """A strong entity tag: a change of size, modification time (ns) or inode (file replaced) changes it."""
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"'


# The earliest second an IMF-fixdate can write (its year has four digits): 0001-01-01T00:00:00Z.
_EARLIEST_DATE = -62135596800


def last_modified(mtime: float, now: float) -> int | None:
    """The second to send as a file's Last-Modified, and to judge If-Modified-Since and friends by; None, and so
    no Last-Modified at all (the ETag alone then validates), for a file dated after ``now`` or before the year 1.

    After now: RFC 9110 8.8.2.1 forbids a Last-Modified later than the response's Date, and a cache would take a
    file touched into the future (or a server clock set back) to be fresh until then. Sending "now" instead
    would send a date that moves with every refresh of the file's answer, so that If-Range and If-Modified-Since
    never matched it again: a resumed download restarted from the beginning. This also keeps the date
    writable: a modification time beyond the year 9999 has no HTTP-date, and raised on every request; nor
    has one before the year 1."""
    second = int(mtime)
    return second if _EARLIEST_DATE <= second <= now else None


def http_date(timestamp: float) -> str:
    """Format a POSIX timestamp as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return _http_date_of_second(int(timestamp))


@lru_cache(maxsize=4096)  # a site has few distinct modification times, and formatting one costs microseconds
def _http_date_of_second(second: int) -> str:
    return formatdate(second, usegmt=True)


_MONTHS = {name: index for index, name in enumerate(calendar.month_abbr) if name}
_TIME = r"(\d\d):(\d\d):(\d\d)"
# The three formats a recipient must accept (RFC 9110 section 5.6.7): IMF-fixdate, the obsolete RFC 850 form,
# and asctime. Matched strictly: a list of dates (a repeated header joined by ", ") is refused, not half-read.
_IMF_FIXDATE = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{{2}}) (\d{{4}}) {_TIME} GMT")
_DAY_NAMES = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_RFC850 = re.compile(rf"(?:{_DAY_NAMES}), (\d\d)-([A-Z][a-z]{{2}})-(\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{{2}}) ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(value: str) -> int | None:
    """The POSIX timestamp of an HTTP-date, or None if ``value`` is not exactly one valid HTTP-date."""
    value = value.strip(OWS)
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        # Two-digit years: RFC 9110 says to read a year more than 50 years ahead as the past century.
        year = str(1900 + int(year) if int(year) >= 70 else 2000 + int(year))
    elif match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    if month not in _MONTHS:
        return None
    try:  # datetime refuses the 32nd of a month and the 25th hour; calendar.timegm would roll them over
        moment = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp())


# -- preconditions -------------------------------------------------------------------------------------------

# An entity-tag list (RFC 9110 8.8.3, 5.6.1) is read with plain string scanning, never one regex per element:
# the element pattern used before, ``[ \t]*(?:(W/)?("..."))?[ \t]*(?:,|$)``, had two adjacent unbounded runs of
# the same characters, so a field of blanks backtracked quadratically (44 s for 65,000 spaces, holding the GIL).
# Each pattern below is one character class at one position, and each character is looked at a bounded number
# of times, so the whole list costs time linear in its length.
_OWS = re.compile(r"[ \t]*")
_OPAQUE_TAG = re.compile(r"[\x21\x23-\x7e\x80-\xff]*")  # etagc: visible characters except DQUOTE, and obs-text


def _skip_ows(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not a space or a tab."""
    return _OWS.match(text, position).end()  # type: ignore[union-attr]  # "*" always matches


# Elements of an entity-tag list looked at, at most. Linear is not enough on the event loop: 65,000 empty
# elements cost 28 ms of Python, and pipelined requests multiply it. Real lists hold a handful of tags.
MAX_LIST_ELEMENTS = 128


def _entity_tags(field_value: str) -> list[tuple[bool, str]] | None:
    """Parse a list of entity tags into (is_weak, quoted-opaque-tag) pairs; None if the list is malformed.

    An opaque tag may itself contain commas, so the list is scanned element by element rather than split on
    ",". Empty elements are allowed (RFC 9110 5.6.1). A list of more than ``MAX_LIST_ELEMENTS`` elements is
    treated as malformed (it matches nothing).
    """
    tags = []
    end = len(field_value)
    position = 0
    elements = 0
    while position < end:
        elements += 1
        if elements > MAX_LIST_ELEMENTS:
            return None
        position = _skip_ows(field_value, position)
        weak = field_value.startswith("W/", position)
        start = position + 2 if weak else position
        if field_value.startswith('"', start):
            # The tag ends at the next DQUOTE (etagc excludes it); everything between must be etagc.
            close = field_value.find('"', start + 1)
            if close < 0 or not _OPAQUE_TAG.fullmatch(field_value, start + 1, close):
                return None
            tags.append((weak, field_value[start : close + 1]))
            position = _skip_ows(field_value, close + 1)
        elif weak:
            return None  # "W/" not followed by a quoted tag
        if position < end:
            if field_value[position] != ",":
                return None
            position += 1
    return tags


def etag_matches(field_value: str, etag: str, *, weak: bool) -> bool:
    """Does the If-Match / If-None-Match ``field_value`` match our (strong) ``etag``?

    ``*`` matches any current representation. Weak comparison (If-None-Match) ignores the ``W/`` prefix;
    strong comparison (If-Match, If-Range) never matches a weak tag.
    """
    if field_value.strip(OWS) == "*":
        return True
    if etag not in field_value:
        return False  # our tag is not even in the text (one C-speed scan): no need to parse the list
    tags = _entity_tags(field_value)
    if tags is None:
        return False
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def check_preconditions(headers: Mapping[str, str], etag: str, mtime: float | None) -> int | None:
    """Evaluate the conditional headers of a GET or HEAD: 412 or 304 when one applies, else None (proceed).

    ``headers`` maps lower-case field names to values. ``mtime`` is the Last-Modified that was sent (see
    :func:`last_modified`), so that a client's date is compared with the one it was given; None when none was
    sent, and then the date conditions are ignored (RFC 9110 13.1.3, 13.1.4: no modification date to compare).
    """
    get = headers.get
    modified = None if mtime is None else int(mtime)  # HTTP-dates have one-second resolution
    if_match = get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False):
            return 412
    elif modified is not None and (since := get("if-unmodified-since")) is not None:
        date = parse_http_date(since)
        if date is not None and modified > date:
            return 412
    if_none_match = get("if-none-match")
    if if_none_match is not None:
        return 304 if etag_matches(if_none_match, etag, weak=True) else None
    since = get("if-modified-since")
    if since is not None and modified is not None:
        date = parse_http_date(since)
        if date is not None and modified <= date:
            return 304
    return None


def if_range_allows(value: str, etag: str, mtime: float | None) -> bool:
    """If-Range: may the Range be honoured? Only if its validator matches exactly (strong comparison).

    ``mtime``: the Last-Modified sent, as for :func:`check_preconditions`; None never matches a date."""
    value = value.strip(OWS)
    if value.startswith(('"', "W/")):
        # One validator, not a list (RFC 9110 13.1.5), compared strongly: a weak tag never matches.
        return value == etag and not etag.startswith("W/")
    date = parse_http_date(value)
    return date is not None and mtime is not None and date == int(mtime)


# -- ranges --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    """One satisfiable range: bytes ``start`` to ``end`` inclusive, as Content-Range writes them."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable:
    """The Range header parsed but selects no byte of the file: answer 416."""


UNSATISFIABLE = Unsatisfiable()
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits only: \d would take any script's digits


def parse_range(value: str, size: int) -> ByteRange | Unsatisfiable | None:
    """Interpret a Range header for a file of ``size`` bytes.

    Returns the single ByteRange to send, UNSATISFIABLE for a 416, or None to ignore the header and send the
    whole file: when it does not parse, uses a unit other than bytes, or asks for several ranges (see the
    module docstring).
    """
    unit, sep, ranges = value.partition("=")
    if not sep or unit.strip(OWS).lower() != "bytes":
        return None
    specs = [spec.strip(OWS) for spec in ranges.split(",") if spec.strip(OWS)]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    try:
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if last and end < start:
                return None  # "5-3" is syntactically invalid: ignored, not unsatisfiable
            if start >= size:
                return UNSATISFIABLE
            return ByteRange(start, min(end, size - 1))
        if last:
            suffix = int(last)
            if suffix == 0 or size == 0:
                return UNSATISFIABLE
            return ByteRange(max(size - suffix, 0), size - 1)
    except ValueError:  # more digits than int() accepts: not a range anyone can mean
        return None
    return None  # "-" alone
