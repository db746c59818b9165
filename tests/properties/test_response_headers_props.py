"""Properties of the check on an application's response headers (``server.wsgi._check_headers``).

The check remembers fields it has found valid, so that the fields an application repeats in every response cost
one lookup. A memory must never change a verdict: whatever headers an application passes, in whatever order and
after whatever it passed before, the head lines and the refusal are those a fresh check gives. Otherwise one
response could vouch for another's CRLF, a second Content-Length, or a value that is not a string.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import example, given
from hypothesis import strategies as st

from server import memo, wsgi
from server.wsgi import ApplicationError, _check_headers

names = st.sampled_from(
    ["Content-Type", "content-type", "Content-Length", "Date", "Server", "X-A", "Set-Cookie", "X Bad", "", "X:Y",
     "Connection", "Transfer-Encoding", "\xe9"]
)  # fmt: skip
values = st.sampled_from(
    ["text/plain", "10", "1_0", "+1", "1\xb2", "", "a\tb \xe9", "a\r\nSet-Cookie: evil=1", "a\x00b", "\x1b[31m",
     "caf\u20ac", "x" * 30, "Tue, 01 Dec 2026 10:00:00 GMT"]
)  # fmt: skip


class Field(NamedTuple):
    name: str
    value: str


class Text(str):
    """A str subclass that says another number than it reads: equal to the plain string it copies."""

    def __int__(self) -> int:
        return 1000


odd_items = st.sampled_from(
    [("X-A",), ("X-A", "1", "2"), ["X-A", "1"], ("X-A", ["1"]), ("X-A", b"1"), (b"X-A", "1"), ("X-A", 1), None, "X-A",
     Field("X-A", "1"), Field("Content-Length", "10"), ("X-A", Text("1")), (Text("X-A"), "1"),
     ("Content-Length", Text("10"))]
)  # fmt: skip
items = st.one_of(st.tuples(names, values), st.tuples(names, values), odd_items)
header_lists = st.lists(items, max_size=6)


def verdict(headers: list[Any]) -> tuple[Any, ...]:
    """What the check makes of ``headers``: its result, or the message it refuses them with."""
    try:
        return ("ok", *_check_headers(headers))
    except ApplicationError as error:
        return ("refused", str(error))


def cold_verdict(headers: list[Any]) -> tuple[Any, ...]:
    saved = dict(wsgi._GOOD_FIELDS)
    wsgi._GOOD_FIELDS.clear()
    try:
        return verdict(headers)
    finally:
        wsgi._GOOD_FIELDS.clear()
        wsgi._GOOD_FIELDS.update(saved)


@given(before=st.lists(header_lists, max_size=4), headers=header_lists)
@example(before=[[("Content-Length", "10")]], headers=[("Content-Length", "10"), ("Content-Length", "10")])
@example(before=[[("Content-Length", "10")]], headers=[("Content-Length", "1_0")])
@example(before=[[("X-A", "1")]], headers=[("X-A", ["1"])])
@example(before=[[("X-A", "1")]], headers=[["X-A", "1"]])
@example(before=[[("X-A", "1")]], headers=[Field("X-A", "1")])  # equal to a remembered field, but not a tuple
@example(before=[[("Content-Length", "10")]], headers=[("Content-Length", Text("10"))])
def test_what_the_check_remembers_never_changes_its_verdict(before, headers):
    for earlier in before:
        verdict(earlier)  # whatever the application sent before fills the memory
    assert verdict(headers) == cold_verdict(headers)
    assert verdict(headers) == cold_verdict(headers)  # and asked twice in a row, from memory the second time


def test_the_memory_is_bounded_by_starting_over():
    wsgi._GOOD_FIELDS.clear()
    for number in range(memo.SIZE * 3):  # distinct lengths and cookies, as a busy application sends
        assert verdict([("Set-Cookie", f"id={number}"), ("Content-Length", str(number))])[0] == "ok"
        assert len(wsgi._GOOD_FIELDS) <= memo.SIZE
    assert verdict([("Content-Type", "text/plain")]) == ("ok", "Content-Type: text/plain\r\n", None, False, False)


def test_only_short_values_are_remembered():
    """An application may copy request data into a field (an echoed Origin): clients then choose how long its values
    are, and a memory of them would hold up to its limit times the longest head."""
    wsgi._GOOD_FIELDS.clear()
    long_value = "https://" + "a" * 60_000
    for number in range(50):
        assert verdict([("Access-Control-Allow-Origin", f"{long_value}{number}")])[0] == "ok"
    assert verdict([("Content-Type", "text/plain")])[0] == "ok"
    assert list(wsgi._GOOD_FIELDS) == [("Content-Type", "text/plain")]


def test_only_short_names_are_remembered():
    """Nor a name an application forwards from upstream or echoes: the pair's own length says nothing, its
    strings' does."""
    wsgi._GOOD_FIELDS.clear()
    for number in range(50):
        assert verdict([(f"X-{'n' * 60_000}{number}", "1")])[0] == "ok"
    assert wsgi._GOOD_FIELDS == {}
