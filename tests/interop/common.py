"""What the three interop apps share: their routes, the large download, and the facts the tests check against.

Each framework app (Flask, Django, Bottle) exposes the same routes; this module keeps the facts they must agree
on in one place so that a test can compute the expected answer without asking the app.

The routes, identical in all three apps:

    GET  /hello                 text "Hello from <framework>!"
    GET  /greet/<name>          JSON {"name": name}                      (percent-encoded UTF-8 in the path)
    GET  /query                 JSON {"args": {key: [values]}}           (repeated keys, UTF-8)
    POST /form                  JSON {"form": {key: [values]}}           (application/x-www-form-urlencoded)
    POST /json                  JSON {"echo": body, "sum": .., "upper": ..}
    POST /upload                JSON {"fields": {..}, "files": {field: {"filename", "size", "sha256"}}}
    POST /echo                  JSON {"size", "sha256"} of the raw body   (chunked uploads, 100-continue)
    GET  /cookies/set           sets two cookies
    GET  /cookies               JSON {"cookies": {name: value}}
    GET  /redirect              302 to /query?from=redirect
    GET  /stream?n=N&tag=T      N chunks "chunk 00000\\n", ... from a generator (T noted in STREAMS_CLOSED)
    GET  /download              the DOWNLOAD_SIZE file below, through the framework's file response
    GET  /headers?n=N           N headers X-Interop-0..N-1, and the app's own Server header (SERVER_HEADER)
    GET  /unicode-header        a Content-Disposition with characters outside latin-1, set the naive way
    GET  /wait?tag=T            "first\\n", then (once GATES[T] is set, in-process) "second\\n"
    GET  /whoami                JSON {"framework", "pid", "remote_addr", "scheme", "host", "url"}

Django alone also has /csrf and /protected, to exercise its CSRF middleware end to end.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

DOWNLOAD_SIZE = 20 * 1024 * 1024
DOWNLOAD_SEED = 3333
STREAM_DEFAULT_CHUNKS = 1000
SERVER_HEADER = "interop-app/1.0"


def download_file() -> Path:
    """The large download, created once per machine (atomically, so concurrent processes never see half of it)."""
    directory = Path(tempfile.gettempdir()) / f"ladder-interop-{os.getuid()}"
    path = directory / f"download-{DOWNLOAD_SIZE}-{DOWNLOAD_SEED}.bin"
    if path.is_file() and path.stat().st_size == DOWNLOAD_SIZE:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{path.name}.{os.getpid()}.partial"
    partial.write_bytes(random.Random(DOWNLOAD_SEED).randbytes(DOWNLOAD_SIZE))
    os.replace(partial, path)
    return path


def sha256_file(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def digest_stream(read: Callable[[int], bytes], block: int = 64 * 1024) -> tuple[int, str]:
    """(size, sha256) of everything ``read(block)`` yields until it returns b"": how the apps hash bodies."""
    digest = hashlib.sha256()
    size = 0
    while data := read(block):
        digest.update(data)
        size += len(data)
    return size, digest.hexdigest()


# Tags of /stream responses whose generator was closed (finished, or abandoned by a client that went away).
# Only meaningful in-process (ServerThread): a test checks that the server always calls the iterable's close().
STREAMS_CLOSED: set[str] = set()


def stream_chunks(count: int, tag: str | None = None) -> Iterator[bytes]:
    """The body of /stream: many small pieces, numbered so that a test sees loss or reordering."""
    try:
        for index in range(count):
            yield b"chunk %05d\n" % index
    finally:
        if tag:
            STREAMS_CLOSED.add(tag)


# A header value PEP 3333 forbids (not latin-1): Flask passes it through, Bottle sends UTF-8, Django MIME-encodes.
UNICODE_DISPOSITION = "attachment; filename=café ☕.txt"


def custom_headers(count: int) -> list[tuple[str, str]]:
    """The headers /headers sends: the app's own Server header first, then ``count`` numbered ones."""
    return [("Server", SERVER_HEADER)] + [(f"X-Interop-{i}", f"value {i}") for i in range(count)]


# Gates the /wait route blocks on between its two chunks, by tag (in-process only): a test opens one once it
# has received the first chunk, which proves the server sent that chunk while the app was still running.
GATES: dict[str, threading.Event] = {}


def gated_chunks(tag: str, wait: float = 10.0) -> Iterator[bytes]:
    yield b"first\n"
    gate = GATES.setdefault(tag, threading.Event())
    yield b"second\n" if gate.wait(wait) else b"gate never opened\n"


def multi_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """{key: [values in order]} from (key, value) pairs: a framework-neutral view of a query or a form."""
    result: dict[str, list[str]] = {}
    for key, value in pairs:
        result.setdefault(key, []).append(value)
    return result


def json_answer(body: dict) -> dict:
    """What POST /json returns for ``body`` (the tests compute the same)."""
    return {"echo": body, "sum": sum(body.get("numbers", [])), "upper": str(body.get("text", "")).upper()}
