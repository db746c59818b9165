"""Our server and a reference server (wsgiref, and gunicorn when installed) give the same answers.

The same app and the same requests go to both; status, body and the headers an application chooses must match.
Only what legitimately differs between servers is ignored: Date, Server, connection management and framing
(chunked or not), and the server's own address where an app echoes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.interop.conftest import APPS, load_app
from tests.interop.peers import GunicornProcess, WsgirefThread
from tests.support import TIMEOUT, ServerThread

pytestmark = pytest.mark.timeout(60)

# The headers that are the application's business, and so must be the same whichever server runs it.
KEY_HEADERS = (
    "content-type", "location", "content-disposition", "set-cookie", "x-frame-options", "allow", "content-range",
    "etag", "last-modified", "cache-control",
)  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """One request to send to both servers: method, path and ``requests`` keyword arguments."""

    method: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    # Peers whose answer is a fair reference for this probe (wsgiref, the floor, gets some things wrong).
    peers: tuple[str, ...] = ("wsgiref", "gunicorn")


PROBES = [
    Probe("GET", "/hello"),
    Probe("HEAD", "/hello"),
    Probe("GET", "/greet/%C3%A9t%C3%A9"),
    Probe("GET", "/query?tag=a&tag=b&name=%C3%A9l%C3%A8ve&empty="),
    Probe("POST", "/form", {"data": [("colour", "red"), ("colour", "blue"), ("note", "à+b")]}),
    Probe("POST", "/json", {"json": {"numbers": [1, 2, 3], "text": "mixed Case"}}),
    Probe("POST", "/upload", {"files": {"doc": ("a.bin", bytes(range(256)) * 100)}, "data": {"k": "v"}}),
    Probe("POST", "/echo", {"data": b"raw body \x00\xff" * 1000}),
    Probe("GET", "/cookies/set"),
    Probe("GET", "/cookies", {"headers": {"Cookie": "a=1; b=two"}}),
    Probe("GET", "/redirect", {"allow_redirects": False}),
    Probe("GET", "/stream?n=300"),
    Probe("GET", "/download"),
    Probe("HEAD", "/download"),
    Probe("GET", "/download", {"headers": {"Range": "bytes=100-199"}}),
    Probe("HEAD", "/stream?n=10"),
    Probe("POST", "/hello"),
    Probe("OPTIONS", "/hello"),
    Probe("PATCH", "/json", {"json": {"a": 1}}),
    Probe("DELETE", "/hello"),
    Probe("PROPFIND", "/hello"),
    Probe("GET", "/query?x=%ZZ&y=%C3"),
    Probe("GET", "/greet/a%2Fb"),
    Probe("GET", "/greet/caf%E9"),
    Probe("GET", "/greet/%F0%9F%90%8D%20x"),
    Probe("GET", "/hello/"),
    # wsgiref sends its status line before it fails to encode the header: only gunicorn is a fair reference.
    Probe("GET", "/unicode-header", peers=("gunicorn",)),
    Probe("GET", "/no/such/page"),
    Probe("POST", "/no/such/page", {"data": b"ignored"}),
]


@dataclass
class Answer:
    """What one server said to one probe; equal when the application-visible parts are equal."""

    status: int
    body_sha256: str
    headers: dict[str, str]
    content_length: str | None = field(compare=False)  # framing: compared separately, only when the peer knew


def ask(base: str, probe: Probe) -> Answer:
    try:
        response = requests.request(probe.method, base + probe.path, timeout=TIMEOUT, **probe.options)
    except requests.ConnectionError as error:
        return Answer(0, f"no response: {error}", {}, None)
    # The app may echo the server's own URL (Bottle's absolute Location, its error pages): neutralise it.
    body = response.content.replace(base.encode(), b"BASE")
    headers = {
        name: "\n".join(response.raw.headers.getlist(name)).replace(base, "BASE")
        for name in KEY_HEADERS
        if name in response.headers
    }
    if "allow" in headers:  # Flask builds Allow from a set: its order changes from one process to the next
        headers["allow"] = ", ".join(sorted(method.strip() for method in headers["allow"].split(",")))
    length = response.headers.get("content-length")
    return Answer(response.status_code, hashlib.sha256(body).hexdigest(), headers, length)


@pytest.fixture(params=["wsgiref", "gunicorn"])
def peer_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "gunicorn":
        pytest.importorskip("gunicorn", reason="gunicorn is in the bench extra; not installed here")
    return request.param


def _peer(kind: str, framework: str) -> WsgirefThread | GunicornProcess:
    return WsgirefThread(load_app(framework)) if kind == "wsgiref" else GunicornProcess(APPS[framework])


@pytest.fixture
def both(peer_kind: str, framework: str) -> Iterator[tuple[str, str]]:
    with ServerThread(load_app(framework)) as ours, _peer(peer_kind, framework) as peer:
        yield ours.url, peer.url


@pytest.mark.parametrize("framework", list(APPS))
def test_same_answers_as_a_reference_server(both: tuple[str, str], peer_kind: str, framework: str) -> None:
    ours, theirs = both
    differences: list[str] = []
    for probe in (p for p in PROBES if peer_kind in p.peers):
        mine, reference = ask(ours, probe), ask(theirs, probe)
        if mine.status == reference.status == 500:
            continue  # a server's own error page: its wording is the server's business, not the app's
        if mine != reference:
            differences.append(f"{probe.method} {probe.path}:\n  ours   {mine}\n  theirs {reference}")
        # Where the reference knew the length, so must we (a HEAD answer included). A "0" on a HEAD whose GET has
        # a body is not knowledge: wsgiref counts the empty body the framework gave it for HEAD, where we say nothing.
        guessed = probe.method == "HEAD" and reference.content_length == "0" and mine.content_length is None
        if reference.content_length is not None and mine.content_length != reference.content_length and not guessed:
            differences.append(f"{probe.method} {probe.path}: Content-Length {mine.content_length} vs {reference}")
    assert not differences, "\n".join(differences)
