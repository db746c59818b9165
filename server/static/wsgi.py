"""The static-file rules as a WSGI application or middleware, for any WSGI server.

Under our own server, mounts are served by the event loop straight from
:class:`~server.static.reply.FileReply` with ``os.sendfile``. This module gives the same rules to everyone
else: the framework when it runs under gunicorn or waitress, third-party apps, tests with webtest. Bodies go
out through ``wsgi.file_wrapper`` when the server offers one (PEP 3333), else as an iterable of blocks.

WSGI hands us PATH_INFO already percent-decoded, so an encoded slash (``%2f``) has become a real one before we
see it: here it separates segments instead of being refused. That is no escape (every segment is still
checked), only a difference from the loop, which sees the raw path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .mount import StaticMount, StaticOptions
from .reply import FileReply, error_reply, serve_under_root

BLOCK_SIZE = 64 * 1024
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
DEFAULT_OPTIONS = StaticOptions()


def request_headers_from_environ(environ: dict) -> dict[str, str]:
    """The request headers of a WSGI environ as the lower-case ``name -> value`` mapping the rules expect."""
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


class StaticFiles:
    """Serve ``directory`` as a WSGI app; with ``app``, a middleware that passes on what it does not serve.

    ``prefix`` is the URL path (below SCRIPT_NAME) where the directory appears. As middleware, requests
    outside the prefix, and any request the files answer with 404, go to ``app`` untouched: a missing file,
    but also a refused one, since the application may well have a route there.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        prefix: str = "",
        app: WSGIApp | None = None,
        options: StaticOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.mount = StaticMount(prefix, Path(directory), options)
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        reply = self._reply(environ)
        if self.app is not None and (reply is None or reply.status == 404):
            if reply is not None:
                reply.close()
            return self.app(environ, start_response)
        if reply is None:
            reply = error_reply(404, environ.get("REQUEST_METHOD", "GET"))
        status = HTTPStatus(reply.status)
        start_response(f"{status.value} {status.phrase}", reply.headers)
        if reply.file is None:
            return [reply.body] if reply.body else []
        reply.file.seek(reply.offset)
        body = FileSlice(reply.file, reply.length)
        file_wrapper = environ.get("wsgi.file_wrapper")
        return file_wrapper(body, BLOCK_SIZE) if file_wrapper is not None else body

    def _reply(self, environ: dict) -> FileReply | None:
        """The reply for this request, or None if its path is not under the prefix."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            # Re-encode what the server decoded ("%" included), so the rules decode exactly once.
            raw_path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/")
            script_name = environ.get("SCRIPT_NAME", "")
            raw_script = quote(script_name.encode("latin-1"), safe="/")
        except UnicodeEncodeError:  # not a PEP 3333 "bytes as latin-1" string: no file has that name
            return error_reply(404, method)
        rest = self.mount.match(raw_path)
        if rest is None:
            return None
        headers = request_headers_from_environ(environ)
        # SCRIPT_NAME holds bytes as latin-1 characters; a listing's title shows them as the UTF-8 they are.
        shown_script = script_name.encode("latin-1").decode("utf-8", "replace")
        display_prefix = shown_script + self.mount.prefix + "/"
        query = environ.get("QUERY_STRING", "")  # raw, as the client sent it: kept in a directory's redirect
        return serve_under_root(
            self.mount, method, rest, raw_script + raw_path, headers, display_prefix=display_prefix, query=query
        )


class FileSlice:
    """``length`` bytes of an open file from its current position: the body of one reply, for a WSGI server.

    It offers ``read`` (for ``wsgi.file_wrapper``) and iteration (without one), and closes the file when the
    server closes it. There is deliberately no ``fileno``: a server that saw one might send the file to its
    end instead of the slice. If the file shrinks while it is sent, reading fails loudly: the server then
    closes the connection instead of sending fewer bytes than the Content-Length it already promised.
    """

    def __init__(self, file: BinaryIO, length: int) -> None:
        self.file = file
        self.remaining = length

    def read(self, size: int | None = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        wanted = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self.file.read(wanted)
        if not data and wanted:
            raise OSError(f"file ended {self.remaining} bytes early: it changed while being sent")
        self.remaining -= len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(BLOCK_SIZE):
            yield chunk

    def close(self) -> None:
        self.file.close()


__all__ = ["FileSlice", "StaticFiles", "request_headers_from_environ"]
