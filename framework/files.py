"""Sending files from a view, with the same HTTP rules as the server's static files.

``FileResponse`` does not decide anything itself: ``server.static.serve_file`` (shared with the server's
static mounts) answers 200, 206, 304, 412 or 416 from the request's conditional and ``Range`` headers and
opens the file; this module only carries that decision through WSGI. A whole file goes out through the
server's ``wsgi.file_wrapper`` when there is one (our server and others turn it into ``sendfile``); a byte
range, or a server without a wrapper, gets a generator that reads the range in blocks. The file is closed when
the server closes the response.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from server.static import FileReply, request_headers_from_environ, serve_file
from server.static.wsgi import FileSlice

from .datastructures import Headers
from .errors import NotFound, status_line
from .request import Request
from .response import Response

BLOCK_SIZE = 64 * 1024


class FileResponse(Response):
    """Serve the file at ``path`` for ``request``: ETag/Last-Modified validation, ``Range``, HEAD.

    ``download_name`` makes the browser save the file under that name (``Content-Disposition: attachment``);
    ``content_type`` overrides the type guessed from the name; ``max_age`` adds ``Cache-Control``. A missing
    file (or a directory) raises ``NotFound``, like ``abort(404)``. A view for another method than GET or HEAD
    (a POST that generates a download) sends the whole file. Pass the path the app chose, never a path taken
    unchecked from the URL (see ``safe_join``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        request: Request,
        *,
        max_age: int | None = None,
        content_type: str | None = None,
        download_name: str | None = None,
    ) -> None:
        if request.method in ("GET", "HEAD"):
            method, headers = request.method, request_headers_from_environ(request.environ)
        else:
            # The server's rules would answer 405 to a POST; here the view has chosen to answer with this file.
            # Conditions and ranges apply to GET only (RFC 9110 13.2.1, 14.2), so the whole file goes out.
            method, headers = "GET", {}
        self.reply: FileReply = serve_file(
            path, method, headers, max_age=max_age, content_type=content_type, download_name=download_name
        )
        if self.reply.status == 404:
            raise NotFound()  # The app's own 404: its error handler, or its HTML or JSON page.
        self.status = self.reply.status
        self.headers = Headers(self.reply.headers)
        self.body = self.reply.body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        reply = self.reply
        start_response(status_line(self.status), self.headers.items())
        if reply.file is None:
            return [reply.body] if reply.body else []
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and reply.offset == 0 and reply.length == os.fstat(reply.file.fileno()).st_size:
            # The whole file: the server may sendfile() it. PEP 3333 has the wrapper close it when done.
            wrapped: Iterable[bytes] = wrapper(reply.file, BLOCK_SIZE)
            return wrapped
        # A range, or no wrapper: the server's own block reader for one slice of a file, which also closes it.
        reply.file.seek(reply.offset)
        return FileSlice(reply.file, reply.length)


def safe_join(root: str | os.PathLike[str], relative: str) -> Path | None:
    """``root/relative`` if its real location is inside ``root`` and no part of it is hidden, else ``None``.

    For turning a URL's file name into a path: ``..``, absolute names, NUL bytes, dotfiles and symlinks that
    lead outside ``root`` are all refused, and so is an empty segment (``a.txt/``, ``a//b.txt``, ``/a.txt``): a
    file is not a folder, and ``/static/a.txt/`` serving ``a.txt`` would give each file a second URL, against
    which the relative links inside it resolve to other paths.
    """
    if "\x00" in relative or "\\" in relative:
        return None
    parts = relative.split("/")
    if any(not part or part.startswith(".") for part in parts):
        return None
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, target]) != base:
        return None
    return Path(target)
