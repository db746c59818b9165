"""Multipart uploads: streamed into spooled temporary files, with limits, and 400/413 for bad input."""

import io
import tracemalloc
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App

kept = []


def make_app(**options) -> App:
    options = {"max_body_size": 64 * 2**20, "upload_spool_size": 2**20, **options}
    app = App(__name__, **options)

    @app.post("/upload")
    def upload(request):
        kept.extend(upload for _, upload in request.files.items_all())
        return {
            "fields": {name: request.form.getall(name) for name in request.form},
            "files": [
                {
                    "field": item.field,
                    "filename": item.filename,
                    "safe": item.safe_filename,
                    "type": item.content_type,
                    "size": item.size,
                    "head": item.read(8).decode("latin-1"),
                    "on_disk": item.stream._rolled,  # SpooledTemporaryFile: True once moved to a real file
                }
                for _, item in request.files.items_all()
            ],
        }

    @app.post("/save")
    def save(request):
        target = request.app.save_to / "saved.bin"
        return {"written": request.files["file"].save(target)}

    return app


@pytest.fixture(autouse=True)
def clear_kept():
    kept.clear()
    yield
    kept.clear()


def multipart(parts, boundary="testboundary"):
    """Build a multipart/form-data body from (name, filename or None, content type or None, bytes)."""
    out = io.BytesIO()
    for name, filename, content_type, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if content_type:
            out.write(f"Content-Type: {content_type}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def post(client, body, content_type="multipart/form-data; boundary=testboundary", status=200):
    # client.post() would re-encode a multipart body itself; request() sends these bytes as they are.
    return client.request("/upload", method="POST", body=body, content_type=content_type, status=status)


def test_small_upload_with_fields():
    client = TestApp(make_app())
    response = client.post(
        "/upload", {"title": "Hello", "tags": "a"}, upload_files=[("doc", "notes.txt", b"some notes")]
    )
    data = response.json
    assert data["fields"] == {"title": ["Hello"], "tags": ["a"]}
    (item,) = data["files"]
    assert item["field"] == "doc" and item["filename"] == "notes.txt" and item["size"] == 10
    assert item["head"] == "some not" and item["on_disk"] is False
    assert item["type"] == "text/plain"


def test_large_upload_is_spooled_to_disk():
    body = multipart([("big", "big.bin", "application/octet-stream", b"\xab" * (3 * 2**20))])
    item = post(TestApp(make_app()), body).json["files"][0]
    assert item["size"] == 3 * 2**20 and item["on_disk"] is True


def test_large_upload_is_not_held_in_memory(tmp_path):
    # 24 MiB of upload, read from a file like a server's socket: Python's allocations must stay far below it.
    size = 24 * 2**20
    path = tmp_path / "body"
    with path.open("wb") as out:
        out.write(b'--b\r\nContent-Disposition: form-data; name="f"; filename="x.bin"\r\n\r\n')
        block = bytes(range(256)) * 4096
        for _ in range(size // len(block)):
            out.write(block)
        out.write(b"\r\n--b--\r\n")
    app = make_app()
    statuses = []
    with path.open("rb") as body:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/upload",
            "CONTENT_TYPE": "multipart/form-data; boundary=b",
            "CONTENT_LENGTH": str(path.stat().st_size),
            "wsgi.input": body,
        }
        tracemalloc.start()
        try:
            result = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert statuses == ["200 OK"], result
    assert b'"size":25165824' in result
    assert peak < 4 * 2**20, f"peak Python memory {peak} bytes while parsing a {size}-byte upload"


def test_many_files():
    files = [("files", f"f{i}.txt", b"x" * i) for i in range(60)]
    data = TestApp(make_app()).post("/upload", upload_files=files).json
    assert [item["size"] for item in data["files"]] == list(range(60))


def test_uploads_are_closed_when_the_request_ends():
    TestApp(make_app()).post("/upload", upload_files=[("a", "a.txt", b"1"), ("b", "b.txt", b"2")])
    assert len(kept) == 2 and all(upload.stream.closed for upload in kept)


def test_save_writes_the_whole_file_atomically(tmp_path):
    app = make_app()
    app.save_to = tmp_path
    payload = bytes(range(256)) * 9000
    assert TestApp(app).post("/save", upload_files=[("file", "data.bin", payload)]).json == {"written": len(payload)}
    assert (tmp_path / "saved.bin").read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["saved.bin"]


def test_safe_filename_strips_paths_and_dots():
    body = multipart(
        [
            ("a", "../../etc/passwd", None, b"1"),
            ("b", "C:\\Users\\x\\evil.exe", None, b"2"),
            ("c", "..", None, b"3"),
            ("d", "", None, b""),
        ]
    )
    files = post(TestApp(make_app()), body).json["files"]
    assert [item["safe"] for item in files] == ["passwd", "evil.exe", "upload", "upload"]
    assert files[0]["filename"] == "../../etc/passwd"  # The raw name is still there, for display.


def test_non_utf8_filename_and_fields_use_the_part_charset():
    body = multipart([("name", None, "text/plain; charset=latin-1", "Zoë".encode("latin-1"))])
    assert post(TestApp(make_app()), body).json["fields"] == {"name": ["Zoë"]}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"no boundary at all", "multipart/form-data"),
        (b"garbage without delimiters", "multipart/form-data; boundary=testboundary"),
        (b'--testboundary\r\nContent-Disposition: form-data; name="a"\r\n\r\ntruncated', None),
        (b"--testboundary\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--testboundary--\r\n", None),
        (b'--testboundary\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\xfe\r\n--testboundary--\r\n', None),
        (multipart([("a", None, "text/plain; charset=no-such-charset", b"x")]), None),
        # UTF-7 decodes this to a lone surrogate, which a CSRF check or a database cannot encode: a 500 before.
        (multipart([("a", None, "text/plain; charset=utf-7", b"+2AA-")]), None),
        (b"--testboundary\r\nBroken header line\r\n\r\nx\r\n--testboundary--\r\n", None),
    ],
)
def test_malformed_multipart_is_400(body, content_type):
    content_type = content_type or "multipart/form-data; boundary=testboundary"
    response = post(TestApp(make_app()), body, content_type, status=400)
    assert "ultipart" in response.text
    assert all(upload.stream.closed for upload in kept)


def test_a_malformed_body_is_explained_without_the_parsers_internals(caplog):
    """A part header that is not UTF-8 was a 400 whose page read "('Segment header failed to decode',
    UnicodeDecodeError('utf-8', b'...', ...))": the parser's exception, nested exception and all. The page says
    what is wrong in plain words; the parser's detail goes to the debug log."""
    body = b'--testboundary\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nx\r\n--testboundary--\r\n'
    with caplog.at_level("DEBUG", logger="framework"):
        response = post(TestApp(make_app()), body, status=400)
    assert "not valid multipart/form-data" in response.text
    assert "UnicodeDecodeError" not in response.text and "Segment" not in response.text
    assert "Segment header failed to decode" in caplog.text


def test_too_many_parts_is_413():
    body = multipart([(f"f{i}", None, None, b"x") for i in range(6)])
    post(TestApp(make_app(max_form_parts=5)), body, status=413)


def test_oversized_text_field_is_413():
    body = multipart([("essay", None, None, b"w" * 2048)])
    response = post(TestApp(make_app(max_form_field_size=1024)), body, status=413)
    assert "essay" in response.text


def test_body_over_max_body_size_is_413():
    body = multipart([("f", "f.bin", None, b"z" * 5000)])
    post(TestApp(make_app(max_body_size=4096)), body, status=413)


def test_form_can_be_parsed_after_the_body_was_read():
    app = App(__name__)

    @app.post("/both")
    def both(request):
        raw = request.body
        return {"raw": len(raw), "title": request.form["title"], "file": request.files["f"].read().decode()}

    body = multipart([("title", None, None, b"T"), ("f", "f.txt", None, b"content")])
    response = TestApp(app).request(
        "/both", method="POST", body=body, content_type="multipart/form-data; boundary=testboundary"
    )
    assert response.json == {"raw": len(body), "title": "T", "file": "content"}


def test_safe_filename_drops_format_characters_and_fits_a_file_system(tmp_path):
    """A right-to-left override made "invoice\\u202egpj.exe" read as "invoiceexe.jpg" in a listing, and a 300-byte
    name passed through whole, so saving it failed with ENAMETOOLONG: a 500 for any client who sent one."""
    long_name = "x" * 300 + ".txt"
    body = multipart(
        [
            ("a", "invoice\u202egpj.exe", None, b"1"),
            ("b", "\x85\x9fnext\u2028line\u200b.txt", None, b"2"),
            ("c", "é" * 150 + ".png", None, b"3"),
            ("d", long_name, None, b"4"),
        ]
    )
    files = post(TestApp(make_app()), body).json["files"]
    safe = [item["safe"] for item in files]
    assert safe[:2] == ["invoicegpj.exe", "nextline.txt"]
    assert safe[2].endswith(".png") and safe[3].endswith(".txt")
    for name in safe:
        assert len(name.encode()) <= 200
        (tmp_path / name).write_bytes(b"")  # the file system takes it


@given(st.text(max_size=400))
def test_any_client_file_name_becomes_a_name_that_can_be_saved(name):
    from framework.forms import UploadedFile

    safe = UploadedFile("f", name, "text/plain", [], 1024).safe_filename
    assert safe and len(safe.encode()) <= 200
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".")
    assert all(c in "\u200c\u200d" or unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in safe)
    assert safe == safe.strip()


def test_safe_filename_keeps_the_joiners_words_and_emoji_are_made_of():
    from framework.forms import UploadedFile

    for name in [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467.png",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt",
    ]:
        assert UploadedFile("f", name, "text/plain", [], 1024).safe_filename == name
    assert UploadedFile("f", ". .bashrc", "text/plain", [], 1024).safe_filename == "bashrc"


def part(disposition: str, data: bytes = b"data", boundary: str = "testboundary") -> bytes:
    """A multipart body of one part with this Content-Disposition, as a client that writes its own would send."""
    return (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize(
    ("disposition", "filename", "safe"),
    [
        ("form-data; name=\"doc\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt", "€.txt"),
        # Both: filename* is preferred, as RFC 6266 says (filename is there for clients that cannot read it).
        ('form-data; name="doc"; filename="EUR.txt"; filename*=utf-8\'\'%E2%82%AC.txt', "€.txt", "€.txt"),
        ("form-data; name=\"doc\"; FILENAME*=ISO-8859-1'fr'caf%E9.txt", "café.txt", "café.txt"),
        ("form-data; name=\"doc\"; filename*=UTF-8''..%2F..%2Fetc%2F.passwd", "../../etc/.passwd", "passwd"),
        # Text inside a quoted value is not a parameter: this part's name merely mentions one.
        ('form-data; name="a\\"; filename*=UTF-8\'\'x"; filename="real.txt"', "real.txt", "real.txt"),
    ],
)
def test_an_extended_filename_makes_a_file_part(disposition, filename, safe):
    """``filename*=UTF-8''%E2%82%AC.txt`` (RFC 8187, how non-browser clients send a name beyond ASCII) was not
    read at all: the file arrived as a text field holding its bytes."""
    data = post(TestApp(make_app()), part(disposition)).json
    assert data["fields"] == {}
    assert [(item["filename"], item["safe"], item["head"]) for item in data["files"]] == [(filename, safe, "data")]


@pytest.mark.parametrize("value", ["UTF-8%E2%82%AC.txt", "''a.txt", "no-such-charset''a.txt", "unicode-escape''a"])
def test_an_extended_filename_that_cannot_be_read_is_400(value):
    response = post(TestApp(make_app()), part(f'form-data; name="doc"; filename*={value}'), status=400)
    assert "ultipart" in response.text
    assert all(upload.stream.closed for upload in kept)


@given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_any_name_sent_as_an_extended_filename_arrives_as_sent(name):
    from urllib.parse import quote

    data = post(TestApp(make_app()), part(f"form-data; name=\"f\"; filename*=UTF-8''{quote(name, safe='')}")).json
    (item,) = data["files"]
    assert item["filename"] == name and "/" not in item["safe"] and not item["safe"].startswith(".")


# -- filename* beside filename: RFC 6266 makes filename the fallback ----------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        # filename* in quotes, as some clients write it (RFC 8187 has it bare): one pair of quotes is stripped.
        ('form-data; name="doc"; filename="euro.txt"; filename*="UTF-8\'\'%E2%82%AC.txt"', "€.txt"),
        ('form-data; name="doc"; filename*="UTF-8\'\'%E2%82%AC.txt"', "€.txt"),
        ('form-data; name="doc"; filename*="UTF-8\'\'%E2%82%AC.txt"; filename="euro.txt"', "€.txt"),
        # A filename* that cannot be read, beside a filename: the filename, as RFC 6266 4.3 intends it.
        ('form-data; name="doc"; filename="euro.txt"; filename*=bogus', "euro.txt"),
        ('form-data; name="doc"; filename*=no-such-charset\'\'a.txt; filename="euro.txt"', "euro.txt"),
        ('form-data; name="doc"; filename="euro.txt"; filename*="UTF-8\'\'%FF.txt"', "euro.txt"),
        ('form-data; name="doc"; filename="euro.txt"; filename*=', "euro.txt"),
    ],
)
def test_filename_is_the_fallback_for_an_extended_filename(disposition, filename):
    """``filename="euro.txt"; filename*="UTF-8''%E2%82%AC.txt"`` (quoted) and ``filename="euro.txt";
    filename*=bogus`` were 400, though the plain filename is there for exactly such a case."""
    data = post(TestApp(make_app()), part(disposition)).json
    assert data["fields"] == {}
    assert [item["filename"] for item in data["files"]] == [filename]


def test_an_unreadable_extended_filename_names_what_cannot_be_read():
    disposition = "form-data; name=\"doc\"; filename*=no-such-charset''a.txt"
    response = post(TestApp(make_app()), part(disposition), status=400)
    assert "filename*" in response.text and "field" not in response.text


@given(
    st.text("abcXYZ019._-~ ", min_size=1, max_size=20),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\;'), max_size=20),
    st.booleans(),
)
def test_any_extended_filename_beside_a_filename_gives_a_file(fallback, extended, quoted):
    """With a plain filename beside it, no filename* (readable or not, quoted or not) is a 400: the part is a file
    named by one or the other."""
    value = f'"{extended}"' if quoted else extended
    disposition = f'form-data; name="f"; filename="{fallback}"; filename*={value}'
    data = post(TestApp(make_app()), part(disposition)).json
    assert data["fields"] == {} and len(data["files"]) == 1
    if "'" not in extended:  # not charset'language'name: never readable, so the fallback names the file
        assert data["files"][0]["filename"] == fallback


# Timed as tests/test_linear_time.py times its parsers (that file is outside the framework's paths): the minimum of
# several batches at 4 KiB and at 64 KiB, compared by their growth (linear is 16x, quadratic 256x), since an
# absolute bound on one call fails on a busy machine and passes a quadratic parser on a fast one.
LINEAR_RUNS = ['\\"', "; a", '"; filename*=', "\\\\", "'", "=;", '"', 'filename*="', "%"]


@pytest.mark.parametrize("run", LINEAR_RUNS)
def test_reading_filename_star_is_linear(run):
    from framework.forms import _extended_filename
    from tests.test_linear_time import LARGE, MAX_GROWTH, MAX_SECONDS, MEASURABLE, SMALL, cost

    def read(disposition: str) -> None:
        try:
            _extended_filename(disposition)
        except ValueError:  # a malformed filename* is refused; only the time matters here
            pass

    def disposition(size: int) -> str:
        return "form-data; name=x; filename*=" + run * (size // len(run)) + "x"

    small, large = cost(read, disposition(SMALL)), cost(read, disposition(LARGE))
    assert large < MAX_SECONDS, f"{large:.3f} s for {LARGE} bytes of {run!r}"
    if large >= MEASURABLE:
        growth = large / small
        assert growth < MAX_GROWTH, f"{growth:.0f}x the time for 16x the input ({small:.6f} s -> {large:.6f} s)"
