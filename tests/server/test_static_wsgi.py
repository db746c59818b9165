"""StaticFiles as a WSGI app and middleware: under webtest (with its PEP 3333 lint), then over real sockets.

The socket tests run wsgiref's server on 127.0.0.1, port 0, in a thread, and talk to it with ``requests``:
they check what a client actually receives (ranges, 304s, HEAD), through ``wsgi.file_wrapper``.
"""

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import webtest

from server.static import StaticFiles, StaticOptions, request_headers_from_environ
from server.static.wsgi import FileSlice
from tests.support import serving_with_wsgiref

BIG = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"0123456789")
    (root / "big.bin").write_bytes(BIG)
    (root / "docs" / "index.html").write_bytes(b"<p>docs</p>")
    (root / "empty").mkdir()
    (root / "app.css").write_bytes(b"body{}")
    (root / "app.css.gz").write_bytes(gzip.compress(b"body{ /* from the .gz */ }"))
    (root / ".env").write_bytes(b"secret")
    (root / "%41.txt").write_bytes(b"a literal percent name")
    return root


def fallback_app(environ, start_response):
    """The application behind the middleware: says what it was asked."""
    body = f"app: {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# -- under webtest ---------------------------------------------------------------------------------------


@pytest.fixture
def client(site) -> webtest.TestApp:
    return webtest.TestApp(StaticFiles(site))


def test_get_a_file(client):
    response = client.get("/a.txt")
    assert response.status_int == 200
    assert response.body == b"0123456789"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == "10"
    assert response.headers["ETag"].startswith('"')


def test_head(client):
    response = client.head("/a.txt")
    assert response.status_int == 200
    assert response.headers["Content-Length"] == "10"
    assert response.body == b""


def test_not_modified(client):
    etag = client.get("/a.txt").headers["ETag"]
    response = client.get("/a.txt", headers={"If-None-Match": etag}, status=304)
    assert response.body == b""
    assert response.headers["ETag"] == etag


def test_range_and_unsatisfiable_range(client):
    partial = client.get("/a.txt", headers={"Range": "bytes=2-4"}, status=206)
    assert partial.body == b"234"
    assert partial.headers["Content-Range"] == "bytes 2-4/10"
    refused = client.get("/a.txt", headers={"Range": "bytes=10-"}, status=416)
    assert refused.headers["Content-Range"] == "bytes */10"


def test_directory_redirect_and_index(client):
    assert client.get("/docs", status=301).headers["Location"].endswith("/docs/")
    assert client.get("/docs/").body == b"<p>docs</p>"
    client.get("/empty/", status=404)


def test_redirect_includes_script_name(site):
    client = webtest.TestApp(StaticFiles(site), extra_environ={"SCRIPT_NAME": "/files"})
    assert client.get("/docs", status=301).headers["Location"].endswith("/files/docs/")


def test_method_not_allowed(client):
    response = client.post("/a.txt", status=405)
    assert response.headers["Allow"] == "GET, HEAD"


def test_refusals_are_404(client):
    client.get("/.env", status=404)
    client.get("/missing.txt", status=404)
    client.get("/%2e%2e/secret", status=404)


def test_a_name_with_a_percent_is_decoded_once(client):
    # PATH_INFO arrives decoded ("/%41.txt"); it must not be decoded a second time into "/A.txt".
    assert client.get("/%2541.txt").body == b"a literal percent name"


def test_precompressed_sibling(client):
    response = client.get("/app.css", headers={"Accept-Encoding": "gzip"})
    # webtest decodes the body (and drops Content-Encoding): the text shows which file was sent.
    assert "from the .gz" in response.text
    assert response.headers["Vary"] == "Accept-Encoding"
    assert client.get("/app.css").body == b"body{}"


def test_prefix(site):
    client = webtest.TestApp(StaticFiles(site, prefix="/static"))
    assert client.get("/static/a.txt").body == b"0123456789"
    client.get("/a.txt", status=404)
    assert client.get("/static", status=301).headers["Location"].endswith("/static/")


def test_listing_option(site):
    client = webtest.TestApp(StaticFiles(site, options=StaticOptions(listing=True)))
    page = client.get("/empty/").text
    assert "Index of /empty/" in page


def test_middleware_falls_through_to_the_app(site):
    client = webtest.TestApp(StaticFiles(site, prefix="/static", app=fallback_app))
    assert client.get("/static/a.txt").body == b"0123456789"
    assert client.get("/login").text == "app: GET /login"  # outside the prefix
    assert client.get("/static/missing.txt").text == "app: GET /static/missing.txt"  # not a file
    assert client.get("/static/.env").text == "app: GET /static/.env"  # refused: the app decides
    assert client.post("/static/a.txt", status=405).headers["Allow"] == "GET, HEAD"


def test_middleware_at_the_root_lets_the_app_have_its_routes(site):
    client = webtest.TestApp(StaticFiles(site, app=fallback_app))
    assert client.post("/api/items").text == "app: POST /api/items"
    assert client.get("/a.txt").body == b"0123456789"


def test_request_headers_from_environ():
    environ = {
        "REQUEST_METHOD": "GET",
        "HTTP_IF_NONE_MATCH": '"a", "b"',
        "HTTP_RANGE": "bytes=0-1",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "wsgi.version": (1, 0),
    }
    assert request_headers_from_environ(environ) == {
        "if-none-match": '"a", "b"',
        "range": "bytes=0-1",
        "accept-encoding": "gzip",
        "content-type": "text/plain",
    }


def test_file_slice_reads_only_its_bytes_and_fails_loudly_when_the_file_shrinks(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"abcdefgh")
    with open(path, "rb") as file:
        file.seek(2)
        assert list(FileSlice(file, 4)) == [b"cdef"]
    with open(path, "rb", buffering=0) as file:  # unbuffered, like the files the rules open
        piece = FileSlice(file, 8)
        assert piece.read(3) == b"abc"
        path.write_bytes(b"abcd")  # truncated while being sent
        assert piece.read(3) == b"d"
        with pytest.raises(OSError, match="changed while being sent"):
            piece.read(3)


# -- over real sockets -----------------------------------------------------------------------------------


@pytest.fixture
def base_url(site) -> Iterator[str]:
    with serving_with_wsgiref(StaticFiles(site)) as url:
        yield url


def test_socket_full_download(base_url):
    response = requests.get(f"{base_url}/big.bin", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(BIG))
    assert response.content == BIG


def test_socket_ranges(base_url):
    middle = requests.get(f"{base_url}/big.bin", headers={"Range": "bytes=1000-70999"}, timeout=5)
    assert middle.status_code == 206
    assert middle.headers["Content-Range"] == f"bytes 1000-70999/{len(BIG)}"
    assert middle.content == BIG[1000:71000]
    tail = requests.get(f"{base_url}/big.bin", headers={"Range": "bytes=-100"}, timeout=5)
    assert tail.status_code == 206 and tail.content == BIG[-100:]
    beyond = requests.get(f"{base_url}/big.bin", headers={"Range": f"bytes={len(BIG)}-"}, timeout=5)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(BIG)}"


def test_socket_not_modified(base_url):
    first = requests.get(f"{base_url}/a.txt", timeout=5)
    by_tag = requests.get(f"{base_url}/a.txt", headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
    assert by_tag.status_code == 304 and by_tag.content == b""
    by_date = requests.get(
        f"{base_url}/a.txt", headers={"If-Modified-Since": first.headers["Last-Modified"]}, timeout=5
    )
    assert by_date.status_code == 304


def test_socket_head(base_url):
    response = requests.head(f"{base_url}/big.bin", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(BIG))
    assert response.content == b""


def test_socket_precompressed_sibling(base_url):
    response = requests.get(f"{base_url}/app.css", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"] == "text/css; charset=utf-8"
    assert gzip.decompress(raw) == b"body{ /* from the .gz */ }"


def test_socket_escape_attempt(base_url):
    # requests would normalise "..", so send the raw path through a prepared request.
    session = requests.Session()
    request = requests.Request("GET", f"{base_url}/a.txt").prepare()
    request.url = f"{base_url}/%2e%2e/%2e%2e/etc/passwd"
    response = session.send(request, timeout=5)
    assert response.status_code == 404
