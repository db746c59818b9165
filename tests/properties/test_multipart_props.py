"""Properties of the multipart reader: the parts come back byte-exact, or the request is refused with 400/413.

Bodies are encoded here from a list of parts (random boundary, names and file names with quotes, semicolons and
non-ASCII characters, optional Content-Type and charset, data that contains pieces of the boundary), the way a
browser writes them (WHATWG: CR, LF and ``"`` in names percent-encoded). The encoded body is then fed to
:func:`parse_multipart` split into random reads, whole or cut short, or with random bytes changed. Whatever
arrives, the reader either returns exactly what was encoded or raises :class:`HTTPError` with 400 or 413;
nothing else escapes. And ``safe_filename`` never carries a path, whatever the client called its file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from framework.datastructures import MultiDict
from framework.errors import HTTPError
from framework.forms import UploadedFile, parse_multipart

# RFC 2046 5.1.1: bcharsnospace, and space anywhere but at the end.
BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"
BOUNDARIES = st.builds(lambda body, last: body + last, st.text(BCHARS + " ", max_size=69), st.sampled_from(BCHARS))
# Names and file names: the troublesome characters, and any other text. "%" and "\\" are left out here because
# the WHATWG encoding is ambiguous for them (a literal "%22" reads back as a quote); the refusal-only properties
# below send them too.
NAME_CHARS = st.one_of(
    st.sampled_from(list("\";=/ .\r\n\t'ü日\u202e")),
    st.characters(exclude_categories=["Cs"], exclude_characters="%\\\x00"),
)
NAMES = st.text(NAME_CHARS, max_size=12)
CHARSETS = ["utf-8", "UTF-8", "latin-1", "iso-8859-15", "utf-16", "cp1252", "ascii"]
MEDIA_TYPES = ["text/plain", "application/octet-stream", "image/png", "TEXT/HTML", "application/x-thing"]


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None: a text field
    media_type: str | None
    charset: str | None  # text fields: how the value was encoded (and said so in Content-Type)
    value: str  # text fields
    data: bytes  # files
    style: str  # how Content-Disposition is written

    @property
    def encoded(self) -> bytes:
        return self.data if self.filename is not None else self.value.encode(self.charset or "utf-8")


def whatwg_quote(value: str) -> str:
    """What a browser writes in a Content-Disposition parameter (HTML's multipart/form-data encoding)."""
    return '"' + value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22") + '"'


def part_head(part: Part) -> bytes:
    name, filename = whatwg_quote(part.name), None if part.filename is None else whatwg_quote(part.filename)
    if part.style == "browser":
        disposition = f"form-data; name={name}" + ("" if filename is None else f"; filename={filename}")
    elif part.style == "reordered":  # the slow path of the parser: other spacing, another order, more options
        disposition = "form-data;" + ("" if filename is None else f"filename={filename}; ") + f"name={name}"
        disposition += '; x-extra="1"'
    else:
        disposition = "FORM-DATA; name  =  " + name + ("" if filename is None else f";filename={filename}")
    lines = [f"Content-Disposition: {disposition}"]
    if part.media_type is not None or part.charset is not None:
        media_type = part.media_type or "text/plain"
        lines.append(f"Content-Type: {media_type}" + (f"; charset={part.charset}" if part.charset else ""))
    return "".join(line + "\r\n" for line in lines).encode()


# Pieces of a delimiter that a body may hold without ending the part.
def tricky_fragments(boundary: str) -> list[bytes]:
    b = boundary.encode()
    return [b"--" + b, b"\r\n--" + b[:-1], b"\r\n-" + b, b"\n--" + b, b"\r\n--", b"\r\r\n--" + b[:-1], b"\r", b"\r\n"]


@st.composite
def parts(draw: st.DrawFn, boundary: str) -> Part:
    is_file = draw(st.booleans())
    fragments = st.sampled_from(tricky_fragments(boundary))
    if is_file:
        chunks = draw(st.lists(st.one_of(st.binary(max_size=40), fragments), max_size=5))
        big = draw(st.sampled_from([0, 0, 0, 70_000]))  # now and then more than one read block
        data = b"".join(chunks) + bytes(range(256)) * (big // 256)
        return Part(
            name=draw(NAMES),
            filename=draw(NAMES),
            media_type=draw(st.one_of(st.none(), st.sampled_from(MEDIA_TYPES))),
            charset=None,
            value="",
            data=data,
            style=draw(st.sampled_from(["browser", "browser", "reordered", "spaced"])),
        )
    charset = draw(st.one_of(st.none(), st.sampled_from(CHARSETS)))
    codec = charset or "utf-8"
    value = draw(st.text(NAME_CHARS, max_size=30))
    if draw(st.booleans()) and codec != "utf-16":  # in UTF-16 the fragment's bytes would not be the fragment
        value += draw(fragments).decode("latin-1")
    try:
        value.encode(codec)
    except UnicodeEncodeError:  # the charset cannot hold this text: keep what it can
        value = value.encode(codec, "ignore").decode(codec)
    return Part(
        name=draw(NAMES),
        filename=None,
        media_type=None,
        charset=charset,
        value=value,
        data=b"",
        style=draw(st.sampled_from(["browser", "reordered", "spaced"])),
    )


@dataclass(frozen=True)
class Body:
    boundary: str
    parts: tuple[Part, ...]
    data: bytes
    end: int  # the offset just past the closing delimiter: a body cut there or later is still complete


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    boundary = draw(BOUNDARIES)
    items = tuple(draw(st.lists(parts(boundary), max_size=4)))
    delimiter = b"\r\n--" + boundary.encode()
    for item in items:
        # RFC 2046: the boundary must not occur in the encapsulated data; a sender picks another one if it does.
        assume(delimiter not in item.encoded + delimiter[:-1])
    preamble = draw(st.sampled_from([b"", b"", b"This is a preamble.\r\n", b"\r\n"]))
    assume(delimiter[2:] not in preamble)
    out = bytearray(preamble)
    for item in items:
        out += b"--" + boundary.encode() + b"\r\n" + part_head(item) + b"\r\n" + item.encoded + b"\r\n"
    out += b"--" + boundary.encode() + b"--"
    end = len(out)
    out += draw(st.sampled_from([b"\r\n", b"", b"\r\nepilogue\r\n"]))
    return Body(boundary, items, bytes(out), end)


def reader(data: bytes, cuts: list[int]) -> Callable[[int], bytes]:
    """``read(n)`` over ``data``, returning at most n bytes and stopping at every cut: how a socket splits it."""
    position = 0
    stops = sorted({cut for cut in cuts if 0 < cut < len(data)})

    def read(size: int) -> bytes:
        nonlocal position
        stop = min([cut for cut in stops if cut > position] + [len(data), position + size])
        chunk = data[position:stop]
        position = stop
        return chunk

    return read


def parse(data: bytes, boundary: str, cuts: list[int], *, known_length: bool, **limits: int):
    limits = {"spool_size": 1024, "max_field_size": 1 << 20, "max_parts": 1000, **limits}
    length = len(data) if known_length else -1
    return parse_multipart(reader(data, cuts), boundary, length, **limits)  # type: ignore[arg-type]


def grouped(pairs: list[tuple[str, object]]) -> dict[str, list[object]]:
    """Values by name, in order within each name: what a MultiDict keeps (it does not keep the order across)."""
    groups: dict[str, list[object]] = {}
    for name, value in pairs:
        groups.setdefault(name, []).append(value)
    return groups


def check_parts(result: tuple[MultiDict, MultiDict], body: Body) -> None:
    """The fields and the files are exactly what was encoded, in order for each name."""
    fields, files = result
    uploads = [upload for _, upload in files.items_all()]
    try:
        expected_fields = grouped([(p.name, p.value) for p in body.parts if p.filename is None])
        assert {name: fields.getall(name) for name in fields} == expected_fields
        expected_files = grouped([(p.name, p) for p in body.parts if p.filename is not None])
        assert set(files) == set(expected_files)
        for name, expected in expected_files.items():
            got = files.getall(name)
            assert len(got) == len(expected)
            for upload, part in zip(got, expected, strict=True):
                assert isinstance(part, Part)
                assert (upload.field, upload.filename) == (part.name, part.filename)
                assert upload.read() == part.data and upload.size == len(part.data)
                assert upload.content_type == (part.media_type or "application/octet-stream").lower()
                assert_no_path(upload.safe_filename)
    finally:
        for upload in uploads:
            upload.close()


def assert_no_path(name: str) -> None:
    assert name and name not in (".", "..")
    assert not any(char in name for char in "/\\\x00")
    assert not name.startswith(".")
    assert os.path.basename(name) == name


@given(body=bodies(), cuts=st.lists(st.integers(0, 200_000), max_size=8), known_length=st.booleans())
@example(
    body=Body("b", (), b"--b--\r\n", 5),
    cuts=[1, 2, 3],
    known_length=True,
)
@example(  # two files under one name around another: a MultiDict keeps order per name only
    body=Body(
        "0",
        (
            Part("", "", None, None, "", b"1", "browser"),
            Part('"', "", None, None, "", b"2", "browser"),
            Part("", "", None, None, "", b"3", "browser"),
        ),
        b'--0\r\nContent-Disposition: form-data; name=""; filename=""\r\n\r\n1\r\n'
        b'--0\r\nContent-Disposition: form-data; name="%22"; filename=""\r\n\r\n2\r\n'
        b'--0\r\nContent-Disposition: form-data; name=""; filename=""\r\n\r\n3\r\n--0--',
        200,
    ),
    cuts=[],
    known_length=True,
)
def test_whole_bodies_come_back_byte_exact(body: Body, cuts: list[int], known_length: bool) -> None:
    check_parts(parse(body.data, body.boundary, cuts, known_length=known_length), body)


@given(body=bodies(), cut=st.integers(0, 10**6), splits=st.lists(st.integers(0, 10**5), max_size=4))
def test_truncated_bodies_are_refused_or_complete(body: Body, cut: int, splits: list[int]) -> None:
    cut %= len(body.data) + 1
    data = body.data[:cut]
    try:
        # The stream ends early, as when a client closes its connection mid-body.
        result = parse(data, body.boundary, splits, known_length=False)
    except HTTPError as error:
        assert error.code == 400, error
        assert cut < body.end
        return
    assert cut >= body.end
    check_parts(result, body)


@given(
    body=bodies(),
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["flip", "insert", "delete"]), st.binary(max_size=3))
    ),
    splits=st.lists(st.integers(0, 10**5), max_size=4),
    max_parts=st.integers(1, 5),
    max_field_size=st.integers(0, 40),
)
def test_damaged_bodies_never_raise_anything_but_400_or_413(
    body: Body, edits: list[tuple[int, str, bytes]], splits: list[int], max_parts: int, max_field_size: int
) -> None:
    data = bytearray(body.data)
    for position, how, payload in edits:
        position %= len(data) + 1
        if how == "flip" and position < len(data):
            data[position] ^= payload[0] if payload else 0xFF
        elif how == "insert":
            data[position:position] = payload
        else:
            del data[position : position + 1 + len(payload)]
    try:
        _, files = parse(
            bytes(data), body.boundary, splits, known_length=False, max_parts=max_parts, max_field_size=max_field_size
        )
    except HTTPError as error:
        assert error.code in (400, 413), error
        return
    for _, upload in files.items_all():
        assert_no_path(upload.safe_filename)
        upload.close()


CHARSET_NAMES = st.one_of(
    st.sampled_from(["undefined", "utf\x00", "rot13", "base64", "hex", "zlib", "no-such", "utf-7", "idna", "utf-32"]),
    st.sampled_from(["unicode_escape", "raw_unicode_escape", "punycode", "utf_8_sig", "mbcs", "cp65001", "koi8-r"]),
    st.text(st.characters(codec="latin-1", exclude_characters='"\\\r\n'), max_size=12),
)


@given(charset=CHARSET_NAMES, value=st.binary(max_size=12).filter(lambda data: b"\r\n--b" not in data + b"\r\n--"))
def test_any_charset_is_read_or_refused_with_400(charset: str, value: bytes) -> None:
    # A text field is decoded with the charset its part names: any name at all must end in a value or a 400.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="a"\r\n'
        + f'Content-Type: text/plain; charset="{charset}"\r\n\r\n'.encode()
        + value
        + b"\r\n--b--\r\n"
    )
    try:
        fields, _ = parse(body, "b", [], known_length=True)
    except HTTPError as error:
        assert error.code == 400, error
        return
    assert isinstance(fields["a"], str)


@pytest.mark.parametrize("charset", ["undefined", "utf\x00", "utf-8\x00x", "unicode_escape", "Raw-Unicode-Escape"])
def test_a_charset_python_cannot_decode_with_is_400(charset: str) -> None:
    # Found by the property above: "undefined" raises a bare UnicodeError, a NUL in the name a ValueError, and
    # unicode_escape warns about "\\q" (an exception under -W error) while it reads escapes no client meant.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="a"\r\n'
        + f'Content-Type: text/plain; charset="{charset}"\r\n\r\nvalue\r\n--b--\r\n'.encode()
    )
    with pytest.raises(HTTPError) as caught:
        parse(body, "b", [], known_length=True)
    assert caught.value.code == 400


@given(
    body=bodies(),
    max_parts=st.integers(0, 5),
    max_field_size=st.integers(0, 40),
)
def test_limits_answer_413_and_nothing_else(body: Body, max_parts: int, max_field_size: int) -> None:
    over_parts = len(body.parts) > max_parts
    over_field = any(len(p.encoded) > max_field_size for p in body.parts if p.filename is None)
    try:
        result = parse(
            body.data, body.boundary, [], known_length=True, max_parts=max_parts, max_field_size=max_field_size
        )
    except HTTPError as error:
        assert error.code == 413, error
        assert over_parts or over_field
        return
    assert not over_parts and not over_field
    check_parts(result, body)


FILE_NAMES = st.one_of(
    st.text(st.sampled_from(list("./\\:\x00\x1f ab日\uff0f\uff3c\u2024\u2025\ufe52")), max_size=12),
    st.text(max_size=12),
    st.sampled_from(["../../etc/passwd", "C:\\evil.exe", "\\\\server\\share\\x", "..", ".", "", " .. ", "/"]),
)


@given(filename=FILE_NAMES)
@example(filename="\uff0e\uff0e\uff0fetc")  # fullwidth "../" becomes a real one under NFKC
def test_safe_filename_never_carries_a_path(filename: str) -> None:
    upload = UploadedFile("f", filename, "application/octet-stream", [], 1024)
    try:
        assert_no_path(upload.safe_filename)
    finally:
        upload.close()
