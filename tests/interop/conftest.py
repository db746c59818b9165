"""Fixtures for the interop suite: each framework's app, served in-process by our server on a free port."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.interop.common import download_file, sha256_file
from tests.support import ServerThread

# framework -> the module:attribute a user would give to ``python -m server`` (or gunicorn).
APPS = {
    "flask": "tests.interop.flask_app:app",
    "django": "tests.interop.djangosite.wsgi:application",
    "bottle": "tests.interop.bottle_app:app",
}


def load_app(framework: str) -> Callable:
    module, _, attribute = APPS[framework].partition(":")
    return getattr(importlib.import_module(module), attribute)


# Server bugs these tests found, not fixed yet. Each failing test names its bug with ``known_server_bug``, which
# marks it xfail(strict=True): the day the bug is fixed the test passes, strict makes that an error, and the
# entry here (and the call) should be removed.
SERVER_BUGS = {
    "continue-chunked": (
        "Transfer-Encoding: chunked + Expect: 100-continue: build_environ gives ContinueInput no CONTENT_LENGTH "
        "(and hides Transfer-Encoding), so Django and Bottle read an empty body and answer 200; the upload is lost"
    ),
    "unix-socket-mode": (
        "the Unix socket is created with the process umask (0755 with umask 022): nginx's www-data workers get "
        "EACCES and answer 502 (gunicorn binds with --umask 0, so mode 0777)"
    ),
    "many-headers": (
        "ResponseWriter._head skips the 'app already sent Date/Server' check when there are 16 or more headers, "
        "so the response carries two Server and two Date fields"
    ),
    "latin1-header": (
        "a header value outside latin-1 raises in ResponseWriter._head after headers_sent is set, so no 500 page "
        "is sent: the client gets no response at all (gunicorn answers 500)"
    ),
    "sendfile-access-log": (
        "a wsgi.file_wrapper download is logged when it is handed to the loop, with the full length as bytes "
        "sent and without the transfer time, even when the client went away after the first KiB"
    ),
}


def known_server_bug(request: pytest.FixtureRequest, bug: str) -> None:
    """Mark the running test as failing because of a known server bug (see SERVER_BUGS)."""
    request.applymarker(pytest.mark.xfail(reason=f"server bug: {SERVER_BUGS[bug]}", strict=True))


@dataclass(frozen=True)
class Live:
    """A framework app being served: where to reach it, and which framework it is."""

    framework: str
    url: str
    port: int


@pytest.fixture(scope="module", params=list(APPS))
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One in-process server per framework, shared by the tests of a module (fast: no process to start)."""
    with ServerThread(load_app(request.param)) as server:
        yield Live(request.param, server.url, server.port)


@pytest.fixture(scope="session")
def download_sha256() -> str:
    """The digest every /download must arrive with (the file is created here if need be)."""
    return sha256_file(download_file())
