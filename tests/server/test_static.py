"""The static-file rules, called directly: headers, methods, conditions, ranges, directories, encodings.

Every test builds a small tree under tmp_path and calls ``serve_path`` / ``serve_file``: no sockets, no
threads. The escape attempts live in test_static_security.py, the WSGI face in test_static_wsgi.py.
"""

import os
import re
from pathlib import Path

import pytest

from server.static import FileReply, StaticMount, StaticOptions, parse_mount, serve_file, serve_path
from server.static.validators import http_date
from tests.support import read_reply

TEXT = b"0123456789abcdefghij"  # 20 bytes: easy to reason about ranges


def build_site(root: Path) -> Path:
    """A small site: text, CSS with precompressed siblings, a directory with and without index.html."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_bytes(TEXT)
    (root / "empty.txt").write_bytes(b"")
    (root / "app.css").write_bytes(b"body { color: red }\n" * 10)
    (root / "app.css.gz").write_bytes(b"GZIP-BYTES")
    (root / "app.css.br").write_bytes(b"BROTLI")
    (root / "only-gz.js").write_bytes(b"console.log(1)\n")
    (root / "only-gz.js.gz").write_bytes(b"GZ-JS")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "docs" / "guide.txt").write_bytes(b"guide")
    (root / "assets").mkdir()
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG")
    (root / "assets" / ".hidden").write_bytes(b"hidden")
    return root


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return build_site(tmp_path / "site")


@pytest.fixture
def mount(site: Path) -> StaticMount:
    return StaticMount("/", site)


def get(mount: StaticMount, path: str, method: str = "GET", **headers: str) -> FileReply:
    """serve_path with headers given as keyword arguments (if_none_match -> if-none-match)."""
    return serve_path(mount, method, path, {name.replace("_", "-"): value for name, value in headers.items()})


# -- the plain GET -------------------------------------------------------------------------------------------


def test_get_sends_the_file_with_its_metadata(mount, site):
    reply = get(mount, "/a.txt")
    st = os.stat(site / "a.txt")
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/plain; charset=utf-8"
    assert reply.header("Content-Length") == "20"
    assert reply.header("Last-Modified") == http_date(st.st_mtime)
    assert reply.header("Accept-Ranges") == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', reply.header("ETag"))
    assert reply.header("Cache-Control") is None
    assert (reply.offset, reply.length) == (0, 20)
    assert read_reply(reply) == TEXT


def test_the_body_is_an_open_binary_file_the_caller_closes(mount):
    reply = get(mount, "/a.txt")
    assert reply.file is not None and "b" in reply.file.mode
    reply.close()
    assert reply.file.closed
    reply.close()  # twice is fine


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("page.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
        ("photo.png", "image/png"),
        ("font.woff2", "font/woff2"),
        ("archive.tar.gz", "application/gzip"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_content_type_comes_from_the_name_with_a_charset_for_text(mount, site, name, expected):
    (site / name).write_bytes(b"x")
    reply = get(mount, f"/{name}")
    reply.close()
    assert reply.header("Content-Type") == expected


def test_head_sends_the_same_headers_and_no_body(mount):
    head = get(mount, "/a.txt", "HEAD")
    with get(mount, "/a.txt") as full:
        assert head.status == 200
        assert head.headers == full.headers
    assert head.header("Content-Length") == "20"
    assert head.file is None and head.length == 0 and head.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(mount, method):
    reply = get(mount, "/a.txt", method)
    assert reply.status == 405
    assert reply.header("Allow") == "GET, HEAD"
    assert reply.file is None


def test_other_methods_on_a_missing_file_get_404(mount):
    assert get(mount, "/missing.txt", "POST").status == 404


def test_missing_file_is_a_short_plain_text_404(mount):
    reply = get(mount, "/missing.txt")
    assert reply.status == 404
    assert reply.header("Content-Type") == "text/plain; charset=utf-8"
    assert reply.body == b"404 Not Found\n"
    assert reply.header("Content-Length") == str(len(reply.body))
    head = get(mount, "/missing.txt", "HEAD")
    assert head.body == b"" and head.header("Content-Length") == str(len(reply.body))


def test_empty_file(mount):
    reply = get(mount, "/empty.txt")
    assert reply.status == 200
    assert reply.header("Content-Length") == "0"
    assert reply.file is None and read_reply(reply) == b""


def test_max_age_sets_cache_control(site):
    reply = get(StaticMount("/", site, StaticOptions(max_age=3600)), "/a.txt")
    reply.close()
    assert reply.header("Cache-Control") == "public, max-age=3600"


def test_etag_changes_with_size_mtime_and_inode(mount, site):
    path = site / "a.txt"

    def etag() -> str:
        with get(mount, "/a.txt") as reply:
            return reply.header("ETag")

    first = etag()
    assert etag() == first  # stable while nothing changes
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    touched = etag()
    assert touched != first
    path.write_bytes(TEXT + b"!")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    grown = etag()
    assert grown not in (first, touched)
    replacement = site / "a.txt.new"
    replacement.write_bytes(TEXT + b"!")
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    os.replace(replacement, path)  # same size and mtime, new inode
    assert etag() not in (first, touched, grown)


# -- conditional requests ------------------------------------------------------------------------------------


@pytest.fixture
def validators(mount) -> tuple[str, str]:
    with get(mount, "/a.txt") as reply:
        return reply.header("ETag"), reply.header("Last-Modified")


def test_if_none_match_with_the_current_etag_answers_304(site, validators):
    etag, _ = validators
    mount = StaticMount("/", site, StaticOptions(max_age=60))
    reply = get(mount, "/a.txt", if_none_match=etag)
    assert reply.status == 304
    assert reply.file is None and reply.body == b""
    assert reply.header("ETag") == etag
    assert reply.header("Cache-Control") == "public, max-age=60"
    assert reply.header("Content-Length") is None  # no body, and no misleading size


@pytest.mark.parametrize(
    "template",
    ['"nope", {etag}', '{etag},"other"', "W/{etag}", "*", ' ,{etag} , "x"'],
    ids=["list", "first-in-list", "weak-comparison", "star", "empty-elements"],
)
def test_if_none_match_forms_that_match(mount, validators, template):
    etag, _ = validators
    assert get(mount, "/a.txt", if_none_match=template.format(etag=etag)).status == 304


@pytest.mark.parametrize("value", ['"nope"', 'W/"nope", "other"', "not-a-tag", '"unterminated'])
def test_if_none_match_forms_that_do_not_match(mount, value):
    reply = get(mount, "/a.txt", if_none_match=value)
    assert reply.status == 200
    reply.close()


def test_head_gets_304_too(mount, validators):
    etag, _ = validators
    assert get(mount, "/a.txt", "HEAD", if_none_match=etag).status == 304


def test_if_modified_since(mount, site, validators):
    _, last_modified = validators
    mtime = int(os.stat(site / "a.txt").st_mtime)
    assert get(mount, "/a.txt", if_modified_since=last_modified).status == 304
    assert get(mount, "/a.txt", if_modified_since=http_date(mtime + 3600)).status == 304
    earlier = get(mount, "/a.txt", if_modified_since=http_date(mtime - 1))
    assert earlier.status == 200
    earlier.close()


@pytest.mark.parametrize("value", ["yesterday", "", "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT"])
def test_an_invalid_if_modified_since_is_ignored(mount, value):
    reply = get(mount, "/a.txt", if_modified_since=value)
    assert reply.status == 200
    reply.close()


def test_if_none_match_takes_precedence_over_if_modified_since(mount, validators):
    _, last_modified = validators
    # The date alone would say "not modified"; the tag says the client's copy is another one.
    reply = get(mount, "/a.txt", if_none_match='"stale"', if_modified_since=last_modified)
    assert reply.status == 200
    reply.close()


def test_if_match_failing_answers_412(mount, validators):
    etag, _ = validators
    assert get(mount, "/a.txt", if_match='"other"').status == 412
    assert get(mount, "/a.txt", if_match=f"W/{etag}").status == 412  # If-Match compares strongly
    ok = get(mount, "/a.txt", if_match=etag)
    assert ok.status == 200
    ok.close()


def test_if_unmodified_since_in_the_past_answers_412(mount, site):
    mtime = int(os.stat(site / "a.txt").st_mtime)
    assert get(mount, "/a.txt", if_unmodified_since=http_date(mtime - 10)).status == 412
    ok = get(mount, "/a.txt", if_unmodified_since=http_date(mtime))
    assert ok.status == 200
    ok.close()


# -- ranges --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-4", 0, 4),
        ("bytes=5-9", 5, 9),
        ("bytes=15-", 15, 19),  # open-ended
        ("bytes=-5", 15, 19),  # suffix
        ("bytes=-500", 0, 19),  # suffix longer than the file: all of it
        ("bytes=10-999", 10, 19),  # end beyond the file: clamped
        ("bytes=19-19", 19, 19),
        ("BYTES = 2-3", 2, 3),  # unit case and spaces
    ],
)
def test_single_range_answers_206(mount, header, start, end):
    reply = get(mount, "/a.txt", range=header)
    assert reply.status == 206
    assert reply.header("Content-Range") == f"bytes {start}-{end}/20"
    assert reply.header("Content-Length") == str(end - start + 1)
    assert (reply.offset, reply.length) == (start, end - start + 1)
    assert read_reply(reply) == TEXT[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=20-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_range_answers_416(mount, header):
    reply = get(mount, "/a.txt", range=header)
    assert reply.status == 416
    assert reply.header("Content-Range") == "bytes */20"
    assert reply.file is None and reply.body


@pytest.mark.parametrize(
    "header",
    [
        "bytes=abc",
        "bytes=5-3",
        "items=0-4",
        "bytes=",
        "bytes=-",
        "bytes=1-2-3",
        "0-4",
        "bytes=0x1-2",
        "bytes=+1-2",
    ],
)
def test_an_invalid_range_is_ignored(mount, header):
    reply = get(mount, "/a.txt", range=header)
    assert reply.status == 200
    assert reply.header("Content-Range") is None
    assert read_reply(reply) == TEXT


def test_several_ranges_answer_the_whole_file(mount):
    reply = get(mount, "/a.txt", range="bytes=0-1,5-6")
    assert reply.status == 200
    assert read_reply(reply) == TEXT


def test_range_on_an_empty_file_is_unsatisfiable(mount):
    assert get(mount, "/empty.txt", range="bytes=0-").status == 416
    assert get(mount, "/empty.txt", range="bytes=-5").status == 416


def test_head_ignores_range(mount):
    reply = get(mount, "/a.txt", "HEAD", range="bytes=0-4")
    assert reply.status == 200
    assert reply.header("Content-Length") == "20"


def test_if_range_with_the_current_etag_or_date_honours_the_range(mount, validators):
    etag, last_modified = validators
    for if_range in (etag, last_modified):
        reply = get(mount, "/a.txt", range="bytes=0-4", if_range=if_range)
        assert reply.status == 206
        assert read_reply(reply) == TEXT[:5]


@pytest.mark.parametrize("if_range", ['"old"', "W/{etag}", "Sun, 06 Nov 1994 08:49:37 GMT", "garbage"])
def test_if_range_that_does_not_match_sends_the_whole_file(mount, validators, if_range):
    etag, _ = validators
    reply = get(mount, "/a.txt", range="bytes=0-4", if_range=if_range.format(etag=etag))
    assert reply.status == 200
    assert read_reply(reply) == TEXT


def test_conditions_come_before_ranges(mount, validators):
    etag, _ = validators
    assert get(mount, "/a.txt", range="bytes=0-4", if_none_match=etag).status == 304


# -- directories ---------------------------------------------------------------------------------------------


def test_directory_without_slash_redirects(mount):
    reply = get(mount, "/docs")
    assert reply.status == 301
    assert reply.header("Location") == "/docs/"


def test_mount_root_without_slash_redirects(site):
    reply = get(StaticMount("/static", site), "/static")
    assert reply.status == 301
    assert reply.header("Location") == "/static/"


def test_redirect_keeps_the_encoded_path(site):
    (site / "my docs").mkdir()
    reply = get(StaticMount("/", site), "/my%20docs")
    assert reply.header("Location") == "/my%20docs/"


def test_directory_with_slash_serves_its_index(mount):
    reply = get(mount, "/docs/")
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert read_reply(reply) == b"<h1>docs</h1>"


def test_mount_root_serves_its_index(site):
    (site / "index.html").write_bytes(b"home")
    assert read_reply(get(StaticMount("/static", site), "/static/")) == b"home"


def test_directory_without_index_is_404_unless_listing(mount, site):
    assert get(mount, "/assets/").status == 404
    listed = get(StaticMount("/", site, StaticOptions(listing=True)), "/assets/")
    assert listed.status == 200
    assert listed.header("Content-Type") == "text/html; charset=utf-8"
    page = read_reply(listed).decode()
    assert 'href="logo.png"' in page
    assert ".hidden" not in page  # dotfiles stay hidden
    assert 'href="../"' in page


def test_listing_escapes_names_and_encodes_links(site):
    hostile = site / "list"
    hostile.mkdir()
    (hostile / "<img src=x onerror=alert(1)>.txt").write_bytes(b"")
    (hostile / 'a&b "q".txt').write_bytes(b"")
    (hostile / "100% sure#?.txt").write_bytes(b"")
    (hostile / "café").mkdir()
    page = read_reply(get(StaticMount("/files", site, StaticOptions(listing=True)), "/files/list/")).decode()
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in page
    assert 'href="%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.txt"' in page
    assert "a&amp;b &quot;q&quot;.txt" in page and 'href="a%26b%20%22q%22.txt"' in page
    assert 'href="100%25%20sure%23%3F.txt"' in page
    assert 'href="caf%C3%A9/"' in page
    assert "<title>Index of /files/list/</title>" in page


def test_listing_head_has_no_body(site):
    reply = get(StaticMount("/", site, StaticOptions(listing=True)), "/assets/", "HEAD")
    assert reply.status == 200 and reply.body == b"" and int(reply.header("Content-Length")) > 0


def test_a_file_with_a_trailing_slash_is_404(mount):
    assert get(mount, "/a.txt/").status == 404


def test_post_to_a_directory_is_405(mount):
    assert get(mount, "/docs/", "POST").status == 405


# -- precompressed siblings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "coding", "body"),
    [
        ("gzip", "gzip", b"GZIP-BYTES"),
        ("gzip, deflate, br", "br", b"BROTLI"),
        ("br;q=0, gzip", "gzip", b"GZIP-BYTES"),
        ("gzip;q=1, br;q=0.5", "gzip", b"GZIP-BYTES"),
        ("*", "br", b"BROTLI"),
        ("x-gzip", "gzip", b"GZIP-BYTES"),
        ("GZIP;Q=0.8", "gzip", b"GZIP-BYTES"),
    ],
)
def test_precompressed_sibling_is_chosen_from_accept_encoding(mount, accept_encoding, coding, body):
    reply = get(mount, "/app.css", accept_encoding=accept_encoding)
    assert reply.status == 200
    assert reply.header("Content-Encoding") == coding
    assert reply.header("Content-Type") == "text/css; charset=utf-8"  # the original's type
    assert reply.header("Vary") == "Accept-Encoding"
    assert reply.header("Content-Length") == str(len(body))
    assert read_reply(reply) == body


@pytest.mark.parametrize("accept_encoding", [None, "", "identity", "gzip;q=0, br;q=0", "deflate", "*;q=0"])
def test_identity_when_no_sibling_is_acceptable_still_varies(mount, site, accept_encoding):
    headers = {} if accept_encoding is None else {"accept-encoding": accept_encoding}
    reply = serve_path(mount, "GET", "/app.css", headers)
    assert reply.header("Content-Encoding") is None
    assert reply.header("Vary") == "Accept-Encoding"
    assert read_reply(reply) == (site / "app.css").read_bytes()


def test_only_existing_siblings_are_offered(mount):
    reply = get(mount, "/only-gz.js", accept_encoding="br, gzip")
    assert reply.header("Content-Encoding") == "gzip"
    assert read_reply(reply) == b"GZ-JS"


def test_a_file_without_siblings_has_no_vary(mount):
    reply = get(mount, "/a.txt", accept_encoding="gzip, br")
    reply.close()
    assert reply.header("Vary") is None and reply.header("Content-Encoding") is None


def test_siblings_are_only_looked_for_beside_types_that_compress(mount, site):
    (site / "photo.png").write_bytes(b"PNG")
    (site / "photo.png.gz").write_bytes(b"pointless")
    reply = get(mount, "/photo.png", accept_encoding="gzip")
    assert reply.header("Content-Encoding") is None and reply.header("Vary") is None
    assert read_reply(reply) == b"PNG"


def test_a_compressed_file_asked_for_by_name_is_not_encoded_twice(mount):
    reply = get(mount, "/app.css.gz", accept_encoding="gzip")
    assert reply.header("Content-Type") == "application/gzip"
    assert reply.header("Content-Encoding") is None
    assert reply.header("Vary") is None
    assert read_reply(reply) == b"GZIP-BYTES"


def test_each_encoding_has_its_own_etag_and_304_keeps_vary(mount):
    with get(mount, "/app.css") as plain, get(mount, "/app.css", accept_encoding="gzip") as gzipped:
        assert plain.header("ETag") != gzipped.header("ETag")
        etag = gzipped.header("ETag")
    not_modified = get(mount, "/app.css", accept_encoding="gzip", if_none_match=etag)
    assert not_modified.status == 304
    assert not_modified.header("Vary") == "Accept-Encoding"
    assert get(mount, "/app.css", if_none_match=etag).status == 200  # identity is another representation


def test_ranges_apply_to_the_encoded_bytes(mount):
    reply = get(mount, "/app.css", accept_encoding="gzip", range="bytes=0-3")
    assert reply.status == 206
    assert reply.header("Content-Range") == "bytes 0-3/10"
    assert read_reply(reply) == b"GZIP"


def test_siblings_and_type_follow_the_requested_name_not_a_link_target(mount, site):
    (site / "themes").mkdir()
    (site / "themes" / "dark.txt").write_bytes(b"body{background:black}")
    (site / "theme.css").symlink_to(Path("themes") / "dark.txt")
    (site / "theme.css.gz").write_bytes(b"GZ-THEME")
    reply = get(mount, "/theme.css", accept_encoding="gzip")
    assert reply.header("Content-Type") == "text/css; charset=utf-8"
    assert reply.header("Content-Encoding") == "gzip"
    assert read_reply(reply) == b"GZ-THEME"


def test_precompressed_sibling_of_an_index_page(mount, site):
    (site / "docs" / "index.html.gz").write_bytes(b"GZ-INDEX")
    reply = get(mount, "/docs/", accept_encoding="gzip")
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert reply.header("Content-Encoding") == "gzip"
    assert read_reply(reply) == b"GZ-INDEX"


# -- serve_file ----------------------------------------------------------------------------------------------


def test_serve_file_shares_the_rules(site):
    path = site / "a.txt"
    reply = serve_file(path, "GET", {})
    assert reply.status == 200 and read_reply(reply) == TEXT
    etag = reply.header("ETag")
    assert serve_file(path, "GET", {"if-none-match": etag}).status == 304
    ranged = serve_file(str(path), "GET", {"range": "bytes=-3"})
    assert ranged.status == 206 and read_reply(ranged) == TEXT[-3:]
    assert serve_file(path, "HEAD", {}).file is None
    assert serve_file(path, "POST", {}).status == 405


def test_serve_file_options(site):
    reply = serve_file(
        site / "a.txt",
        "GET",
        {},
        max_age=10,
        content_type="text/csv; charset=utf-8",
        download_name="report.csv",
    )
    reply.close()
    assert reply.header("Cache-Control") == "public, max-age=10"
    assert reply.header("Content-Type") == "text/csv; charset=utf-8"
    assert reply.header("Content-Disposition") == 'attachment; filename="report.csv"'


def test_serve_file_download_name_is_safe_and_keeps_unicode(site):
    reply = serve_file(site / "a.txt", "GET", {}, download_name='résumé "final"\r\n.pdf')
    reply.close()
    disposition = reply.header("Content-Disposition")
    assert disposition == (
        "attachment; filename=\"r_sum_ _final___.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%0D%0A.pdf"
    )
    assert reply.header("Content-Type") == "application/pdf"  # guessed from the download name


def test_serve_file_refuses_what_is_not_a_regular_file(site):
    assert serve_file(site / "missing", "GET", {}).status == 404
    assert serve_file(site / "docs", "GET", {}).status == 404


# -- mounts --------------------------------------------------------------------------------------------------


def test_mount_matches_on_segment_boundaries(site):
    mount = StaticMount("/static/", site)
    assert mount.prefix == "/static"
    assert mount.match("/static") == ""
    assert mount.match("/static/a.txt") == "/a.txt"
    assert mount.match("/staticfiles/a.txt") is None
    assert mount.match("/") is None
    assert StaticMount("/", site).match("/a.txt") == "/a.txt"


def test_a_path_outside_the_prefix_is_404(site):
    assert get(StaticMount("/static", site), "/other/a.txt").status == 404


def test_mount_with_a_non_ascii_prefix(site):
    mount = StaticMount("/médias", site)
    assert read_reply(get(mount, "/m%C3%A9dias/a.txt")) == TEXT


def test_mount_root_is_resolved(site, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(site)
    mount = StaticMount("/", alias)
    assert mount.root == site.resolve()
    assert read_reply(get(mount, "/a.txt")) == TEXT


def test_parse_mount(site):
    mount = parse_mount(f"/static={site}", StaticOptions(max_age=5))
    assert (mount.prefix, mount.root, mount.options.max_age) == ("/static", site.resolve(), 5)
    assert parse_mount(f"/={site}", StaticOptions()).prefix == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("static", "URL=DIR"),
        ("/static=", "URL=DIR"),
        ("=dir", "URL=DIR"),
        ("static={site}", "must start with '/'"),
        ("/a/../b={site}", "'..'"),
        ("/static={site}/missing", "not a directory"),
        ("/static={site}/a.txt", "not a directory"),
    ],
)
def test_parse_mount_rejects_bad_specs_clearly(site, spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_mount(spec.format(site=site), StaticOptions())
