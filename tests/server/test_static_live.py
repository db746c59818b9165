"""Static mounts served by our own server, on the event loop with sendfile: what a client really receives.

The rules are tested directly in test_static.py; here the question is whether the loop hands them the raw
request path (so ``%2f`` is still refused), sends exactly the bytes a FileReply names, and keeps the
connection usable afterwards.
"""

import gzip
import os
import socket
import time

import pytest
import requests

from server.static import reply as static_reply
from server.static.paths import KERNEL_CHECK
from tests.support import ServerThread, read_response

TIMEOUT = 10
BIG = bytes(range(256)) * 8192  # 2 MiB: more than one sendfile call and more than the socket buffer


def app(environ, start_response):
    body = f"app: {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("live") / "site"
    root.mkdir()
    (root.parent / "secret.txt").write_bytes(b"secret")
    (root / "a.txt").write_bytes(b"0123456789")
    (root / "big.bin").write_bytes(BIG)
    (root / "café.txt").write_bytes(b"accent")
    (root / "app.css").write_bytes(b"body{}")
    (root / "app.css.gz").write_bytes(gzip.compress(b"body{ /* gz */ }"))
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_bytes(b"b")
    return root


@pytest.fixture(scope="module")
def server(site):
    with ServerThread(app, static=(f"/static={site}",)) as running:
        yield running


def raw_get(server, target: bytes, sock: socket.socket | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send a request line exactly as given (no client-side normalisation) and read one response."""
    own = sock is None
    sock = sock or server.connect(TIMEOUT)
    try:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n\r\n")
        return read_response(sock)
    finally:
        if own:
            sock.close()


def test_a_file_and_the_app_beside_it(server):
    response = requests.get(f"{server.url}/static/a.txt", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == b"0123456789"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["ETag"]
    assert requests.get(f"{server.url}/elsewhere", timeout=TIMEOUT).text == "app: /elsewhere"


@pytest.mark.parametrize("target", [b"/static/a.txt", b"/static/big.bin", b"/static/missing"])
def test_an_http10_client_kept_alive_is_told_so(server, target):
    """HTTP/1.0 closes after a response unless it says otherwise: a file answered "keep-alive" to a client that
    asked for it kept the connection without saying so, and the client, reading none, closed it or hung."""
    with server.connect(TIMEOUT) as sock:
        for _ in range(2):
            sock.sendall(b"GET " + target + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert headers.get("connection") == "keep-alive", (status, headers)


def test_big_file_and_ranges(server):
    assert requests.get(f"{server.url}/static/big.bin", timeout=TIMEOUT).content == BIG
    partial = requests.get(f"{server.url}/static/big.bin", headers={"Range": "bytes=100000-"}, timeout=TIMEOUT)
    assert partial.status_code == 206
    assert partial.headers["Content-Range"] == f"bytes 100000-{len(BIG) - 1}/{len(BIG)}"
    assert partial.content == BIG[100000:]
    refused = requests.get(f"{server.url}/static/big.bin", headers={"Range": "bytes=9999999-"}, timeout=TIMEOUT)
    assert refused.status_code == 416
    assert refused.headers["Content-Range"] == f"bytes */{len(BIG)}"


def test_a_small_file_answered_from_memory_twice_over(server):
    """The second request of each pair is an open-file-cache hit, whose small body is read behind the head (a
    range too); the pair must not differ, pipelined on one connection or not."""
    for _ in range(2):
        whole = requests.get(f"{server.url}/static/a.txt", timeout=TIMEOUT)
        assert (whole.status_code, whole.content, whole.headers["Content-Length"]) == (200, b"0123456789", "10")
        part = requests.get(f"{server.url}/static/a.txt", headers={"Range": "bytes=2-4"}, timeout=TIMEOUT)
        assert (part.status_code, part.content) == (206, b"234")
        assert (part.headers["Content-Range"], part.headers["Content-Length"]) == ("bytes 2-4/10", "3")
        encoded = requests.get(
            f"{server.url}/static/app.css", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=TIMEOUT
        )
        assert encoded.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(encoded.raw.read(decode_content=False)) == b"body{ /* gz */ }"
    with server.connect(TIMEOUT) as sock:
        sock.sendall(
            b"HEAD /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /static/a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=-3\r\n\r\n"
            b"GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        buffer = bytearray()
        status, headers, body = read_response(sock, buffer, to_head=True)
        assert (status, headers["content-length"], body) == (200, "10", b"")
        assert read_response(sock, buffer)[0::2] == (206, b"789")
        assert read_response(sock, buffer)[0::2] == (200, b"0123456789")


def test_not_modified_and_head(server):
    etag = requests.head(f"{server.url}/static/big.bin", timeout=TIMEOUT).headers["ETag"]
    cached = requests.get(f"{server.url}/static/big.bin", headers={"If-None-Match": etag}, timeout=TIMEOUT)
    assert cached.status_code == 304 and cached.content == b""
    head = requests.head(f"{server.url}/static/big.bin", timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(BIG))


def test_the_connection_stays_usable_after_sendfile(server):
    with server.connect(TIMEOUT) as sock:
        for target, expected in [(b"/static/big.bin", BIG), (b"/static/a.txt", b"0123456789"), (b"/x", b"app: /x")]:
            status, _, body = raw_get(server, target, sock)
            assert (status, body) == (200, expected)


@pytest.mark.parametrize(
    "target",
    [b"/static/%2e%2e/secret.txt", b"/static/..%2fsecret.txt", b"/static/sub%2fb.txt", b"/static/sub%5cb.txt"],
)
def test_escapes_are_refused_on_the_wire(server, target):
    status, _, body = raw_get(server, target)
    assert status == 404
    assert b"secret" not in body


def test_non_ascii_names_raw_and_encoded(server):
    assert raw_get(server, "/static/café.txt".encode()) == raw_get(server, b"/static/caf%C3%A9.txt")
    status, _, body = raw_get(server, b"/static/caf%C3%A9.txt")
    assert (status, body) == (200, b"accent")


def test_directory_redirect(server):
    status, headers, _ = raw_get(server, b"/static/sub")
    assert status == 301
    assert headers["location"] == "/static/sub/"


def test_precompressed_sibling(server):
    response = requests.get(
        f"{server.url}/static/app.css", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=TIMEOUT
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(response.raw.read(decode_content=False)) == b"body{ /* gz */ }"


def test_a_file_that_shrinks_mid_download_closes_the_connection(tmp_path, caplog):
    root = tmp_path / "shrinking"
    root.mkdir()
    path = root / "data.bin"
    size = 32 * 1024 * 1024
    path.write_bytes(b"x" * size)
    with ServerThread(app, static=(f"/files={root}",)) as running, running.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the server must block on us quickly
        sock.sendall(b"GET /files/data.bin HTTP/1.1\r\nHost: test\r\n\r\n")
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % size in received
        with open(path, "r+b") as handle:
            handle.truncate(1024 * 1024)  # the file shrinks under the download
        while chunk := sock.recv(1 << 20):
            received += chunk
    body = received.partition(b"\r\n\r\n")[2]
    # The promised length can no longer be kept: the connection closes early instead of lying.
    assert len(body) < size
    assert any("shrank" in record.getMessage() for record in caplog.records)


def test_other_methods_get_405_with_allow(server):
    response = requests.post(f"{server.url}/static/a.txt", data=b"x", timeout=TIMEOUT)
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"] and "HEAD" in response.headers["Allow"]
    assert requests.get(f"{server.url}/static/a.txt", timeout=TIMEOUT).content == b"0123456789"


@pytest.mark.skipif(not KERNEL_CHECK, reason="the open-file cache needs O_PATH and /proc/self/fd (Linux)")
def test_a_quiet_server_lets_go_of_a_deleted_file(tmp_path, monkeypatch):
    """The open-file cache holds a file for its TTL; the engine's sweep closes it after that even if no other file
    is asked for, so a deleted file's blocks are not kept allocated by an idle server."""
    clock = [time.monotonic()]  # the cache's clock stands still until the test moves it: no race with its TTL
    monkeypatch.setattr(static_reply.OPEN_FILES, "clock", lambda: clock[0])
    root = tmp_path / "quiet"
    root.mkdir()
    path = root / "gone.bin"
    path.write_bytes(b"x" * 4096)
    deleted = f"{path} (deleted)"

    def held() -> bool:
        return any(_readlink(f"/proc/self/fd/{name}") == deleted for name in os.listdir("/proc/self/fd"))

    with ServerThread(app, static=(f"/files={root}",)) as running:
        response = requests.get(f"{running.url}/files/gone.bin", timeout=TIMEOUT)
        assert response.status_code == 200 and len(response.content) == 4096
        path.unlink()
        assert held(), "the cache should be holding the file it just served"
        clock[0] += static_reply.OPEN_FILES.ttl * 2  # its time is up: the next sweep must close it
        deadline = time.monotonic() + TIMEOUT
        while held() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not held()


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
