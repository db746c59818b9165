"""The length the server puts on an application's response: never one that contradicts the body a GET would get.

Live, over raw sockets (a HEAD's head must be read without a body, and a wrong length must be seen as sent):
HEAD of a streamed response, 204 and 304, and ``wsgi.file_wrapper`` around objects that have a descriptor but do
not read its bytes as they are (``gzip.open``).
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import threading
from pathlib import Path

import pytest

from server.wsgi import FileWrapper
from tests.support import TIMEOUT, ServerThread, read_response, recv_until_closed


def serve(app) -> ServerThread:
    """A server for ``app``, with ``/next`` answered on the side (the follow-up request of ``exchange``)."""

    def with_next(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        return app(environ, start_response)

    return ServerThread(with_next)


def exchange(server: ServerThread, method: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, then a GET on the same one: the first must not break the second (a
    length that does not match what was sent would make the second response unreadable)."""
    with server.connect() as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        buffer = bytearray()
        answer = read_response(sock, buffer, to_head=method == "HEAD")
        assert read_response(sock, buffer)[0] == 200  # the connection is still in step
    return answer


# -- HEAD ---------------------------------------------------------------------------------------------------------


def framework_like_app(environ, start_response):
    """What Flask and Bottle do with a streamed response: no length, and on HEAD no body at all."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["REQUEST_METHOD"] == "HEAD":
        return []
    return iter([b"streamed ", b"body"])


@pytest.mark.parametrize("empty", [[], (), iter([]), iter([b""])], ids=["list", "tuple", "iterator", "empty-chunk"])
def test_head_of_a_streamed_response_says_no_content_length(empty) -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return empty if environ["REQUEST_METHOD"] == "HEAD" else [b"a page"]

    with serve(app) as server:
        status, headers, _ = exchange(server, "HEAD")
    assert status == 200
    assert "content-length" not in headers and "transfer-encoding" not in headers


def test_get_still_gets_the_length_of_a_list_and_head_the_length_of_a_body_it_was_given() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"six b", b"!"]  # a naive app that answers HEAD like GET: the length is the GET's

    with serve(app) as server:
        assert exchange(server, "GET")[1]["content-length"] == "6"
        assert exchange(server, "HEAD")[1]["content-length"] == "6"
        # An empty GET body really is empty.
    with serve(status_app("200 OK", [])) as server:
        assert exchange(server, "GET")[1]["content-length"] == "0"


def test_head_keeps_a_length_the_application_declared() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "4")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"body"]

    with serve(app) as server:
        assert exchange(server, "HEAD")[1]["content-length"] == "4"


def test_the_framework_pattern_streams_get_and_says_nothing_on_head() -> None:
    with serve(framework_like_app) as server:
        _, headers, body = exchange(server, "GET")
        assert (headers.get("transfer-encoding"), body) == ("chunked", b"streamed body")
        assert "content-length" not in exchange(server, "HEAD")[1]


# -- 204 and 304 ----------------------------------------------------------------------------------------------------


def status_app(status: str, headers: list[tuple[str, str]]):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return []

    return app


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("declared", [[("Content-Length", "0")], [("content-length", "5")], []])
def test_a_204_never_carries_a_content_length(method: str, declared: list[tuple[str, str]]) -> None:
    with serve(status_app("204 No Content", declared)) as server:
        status, headers, _ = exchange(server, method)
    assert status == 204
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert headers["content-type"] == "text/plain"  # the other headers are kept


def test_a_304_keeps_the_applications_length_but_never_gets_one_from_the_server() -> None:
    with serve(status_app("304 Not Modified", [("Content-Length", "1234")])) as server:
        assert exchange(server, "GET")[1]["content-length"] == "1234"  # the 200's length: allowed (RFC 9110 8.6)
    with serve(status_app("304 Not Modified", [])) as server:
        headers = exchange(server, "GET")[1]
        assert "content-length" not in headers and "transfer-encoding" not in headers


# -- wsgi.file_wrapper ---------------------------------------------------------------------------------------------

TEXT = b"The quick brown fox jumps over the lazy dog.\n" * 5000


@pytest.fixture
def gz_path(tmp_path: Path) -> Path:
    path = tmp_path / "page.txt.gz"
    with gzip.open(path, "wb") as out:
        out.write(TEXT)
    return path


def test_a_gzip_file_in_a_file_wrapper_sends_its_uncompressed_bytes(gz_path: Path) -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](gzip.open(gz_path))

    with serve(app) as server:
        status, _, body = exchange(server, "GET")
    assert status == 200
    assert body == TEXT


def test_only_plain_files_are_sent_with_sendfile(tmp_path: Path, gz_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"0123456789")

    class CloseHook(io.FileIO):  # adds to the class, reads as a FileIO does
        pass

    class Decoding(io.BufferedReader):
        def read(self, size=-1):
            return super().read(size).upper()

    class Xor(io.FileIO):  # a buffered reader over it reads through this readinto
        def readinto(self, buffer):
            count = super().readinto(buffer)
            for i in range(count or 0):
                buffer[i] ^= 0x20
            return count

    with open(path, "rb") as buffered, open(path, "r+b") as rw, CloseHook(path) as raw:
        buffered.read(3)
        assert FileWrapper(buffered).sendfile_span() == (3, 7)  # tell() counts the buffer's bytes
        assert FileWrapper(rw).sendfile_span() == (0, 10)
        assert FileWrapper(raw).sendfile_span() == (0, 10)
    with tempfile.NamedTemporaryFile() as proxy:  # a proxy of a real file: judged by the file it holds
        proxy.write(b"0123456789")
        proxy.seek(0)
        assert FileWrapper(proxy).sendfile_span() == (0, 10)
    refused = [
        gzip.open(gz_path),
        open(path, encoding="ascii"),  # (closed below)
        Decoding(io.FileIO(path)),
        io.BufferedReader(io.BytesIO(b"not a file")),
        io.BufferedReader(Xor(path)),
    ]
    try:
        for filelike in refused:
            assert FileWrapper(filelike).sendfile_span() is None, filelike
    finally:
        for filelike in refused:
            filelike.close()


def test_a_regular_file_still_goes_out_whole(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    path = tmp_path / "big.bin"
    path.write_bytes(payload)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # (the server closes it)

    with serve(app) as server:
        status, headers, body = exchange(server, "GET")
    assert (status, headers["content-length"], body) == (200, str(len(payload)), payload)


@pytest.mark.parametrize("size", [0, 5])
def test_head_of_a_file_says_the_files_length_even_when_it_is_empty(tmp_path: Path, size: int) -> None:
    # A file's length is a fact about the body a GET would get, unlike an empty list on HEAD (which frameworks
    # send for any page): an empty file is announced as "0" on HEAD as on GET.
    path = tmp_path / "file.txt"
    path.write_bytes(b"x" * size)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with serve(app) as server:
        assert exchange(server, "GET")[1]["content-length"] == str(size)
        assert exchange(server, "HEAD")[1]["content-length"] == str(size)


# -- writes after the response ---------------------------------------------------------------------------------------


class WritesWhenClosed:
    """A body whose close() still writes (a "flush on close" pattern): PEP 3333 calls close() after the response."""

    def __init__(self, write) -> None:
        self.write = write

    def __iter__(self):
        yield b"first"

    def close(self) -> None:
        self.write(b"FROM-CLOSE")


@pytest.mark.parametrize("threads", [4, 0])
def test_a_write_from_close_never_reaches_the_wire(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    """It went out as one more chunk after the last one, which the client read as the start of its next response
    (behind a proxy that reuses connections, another user's). It is an application error now: logged, and the
    connection ends after the response, which is whole."""

    def app(environ, start_response):
        return WritesWhenClosed(start_response("200 OK", [("Content-Type", "text/plain")]))

    with ServerThread(app, threads=threads) as server, server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        buffer = bytearray()
        status, headers, body = read_response(sock, buffer)
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"first")
        assert bytes(buffer) + recv_until_closed(sock) == b""
    assert "write() after the response ended" in caplog.text


def test_a_write_from_another_thread_after_the_response_is_refused() -> None:
    """A thread the application left behind with its write() callable: its late bytes would land inside the
    connection's next response."""
    late: dict[str, object] = {}
    done = threading.Event()
    finished = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/next":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        write = start_response("200 OK", [("Content-Type", "text/plain")])

        def later() -> None:
            finished.wait(TIMEOUT)
            try:
                write(b"LATE")
            except Exception as error:
                late["error"] = error
            done.set()

        threading.Thread(target=later, daemon=True).start()
        return [b"first"] if environ["QUERY_STRING"] == "list" else iter([b"first"])

    with ServerThread(app) as server, server.connect() as sock:
        for query in ("list", "iterator"):
            finished.clear()
            done.clear()
            sock.sendall(f"GET /?{query} HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n".encode())
            buffer = bytearray()
            assert read_response(sock, buffer)[2] == b"first"
            # The client may read a response before the server has done with it: the next one says it has.
            assert read_response(sock, buffer)[2] == b"ok"
            finished.set()
            assert done.wait(TIMEOUT)
            assert "after the response ended" in str(late.pop("error"))
            sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
            status, _, body = read_response(sock, buffer)
            assert (status, body, bytes(buffer)) == (200, b"ok", b"")
