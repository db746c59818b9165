"""Each framework under the real command line, ``python -m server module:app``, as a user would start it."""

from __future__ import annotations

import hashlib
import select
import signal
import socket

import pytest
import requests

from tests.interop.common import DOWNLOAD_SIZE, stream_chunks
from tests.interop.conftest import APPS
from tests.support import TIMEOUT, ServerProcess

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("framework", list(APPS))
def test_framework_app_under_the_cli(framework: str, download_sha256: str) -> None:
    with ServerProcess(APPS[framework]) as server:
        hello = requests.get(f"{server.url}/hello", timeout=TIMEOUT)
        assert hello.status_code == 200
        assert hello.text == f"Hello from {framework.capitalize()}!"

        who = requests.get(f"{server.url}/whoami", timeout=TIMEOUT).json()
        assert who["framework"] == framework
        assert who["pid"] == server.proc.pid  # one worker: the engine runs in the process we started

        upload = requests.post(
            f"{server.url}/upload", files={"doc": ("a.txt", b"hello upload", "text/plain")}, timeout=TIMEOUT
        )
        assert upload.json()["files"]["doc"] == {
            "filename": "a.txt",
            "size": 12,
            "sha256": hashlib.sha256(b"hello upload").hexdigest(),
        }

        # The real process sends the file with sendfile (wsgi.file_wrapper), not through Python.
        # Mid-download, SIGTERM: the server stops accepting but lets the download finish before it exits.
        digest = hashlib.sha256()
        with requests.get(f"{server.url}/download", stream=True, timeout=TIMEOUT) as download:
            assert download.headers["Content-Length"] == str(DOWNLOAD_SIZE)
            pieces = download.iter_content(chunk_size=1024 * 1024)
            digest.update(next(pieces))
            server.signal(signal.SIGTERM)
            for piece in pieces:
                digest.update(piece)
        assert digest.hexdigest() == download_sha256
        assert server.wait() == 0, server.output()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 support in this Python")
@pytest.mark.parametrize("framework", list(APPS))
def test_framework_app_over_ipv6(framework: str) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as error:
        pytest.skip(f"cannot bind [::1]: {error}")
    with ServerProcess(APPS[framework], "--bind", "[::1]:0") as server:
        who = requests.get(f"{server.url}/whoami", timeout=TIMEOUT).json()
        assert who["remote_addr"] == "::1"
        assert who["url"] == f"{server.url}/whoami"  # Host [::1]:PORT understood (and allowed, for Django)
        redirected = requests.get(f"{server.url}/redirect", timeout=TIMEOUT)
        assert redirected.url == f"{server.url}/query?from=redirect"


@pytest.mark.parametrize("loop", ["epoll", "poll", "select"])
def test_every_event_loop_hosts_a_framework(loop: str, download_sha256: str) -> None:
    if not hasattr(select, loop):
        pytest.skip(f"select.{loop} is not available on this platform")
    with ServerProcess(APPS["django"], "--loop", loop) as server:
        assert f"loop: {loop}" in server.output()
        download = requests.get(f"{server.url}/download", timeout=TIMEOUT)
        assert hashlib.sha256(download.content).hexdigest() == download_sha256
        streamed = requests.get(f"{server.url}/stream?n=20000", timeout=TIMEOUT)
        assert streamed.content == b"".join(stream_chunks(20000))
        body = bytes(range(256)) * 8000
        echoed = requests.post(f"{server.url}/echo", data=iter([body[:1000], body[1000:]]), timeout=TIMEOUT)
        assert echoed.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_prefork_workers_serve_an_app_loaded_before_the_fork() -> None:
    with ServerProcess(APPS["flask"], "--workers", "2") as server:
        pids = set()
        for _ in range(10):
            response = requests.get(f"{server.url}/whoami", timeout=TIMEOUT)
            assert response.status_code == 200
            pids.add(response.json()["pid"])
        # Answers come from forked workers, never from the supervisor itself.
        assert server.proc.pid not in pids
        assert 1 <= len(pids) <= 2
