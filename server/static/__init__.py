"""Static files: the rules for serving a directory over HTTP, safely and without blocking the event loop.

The server mounts directories at URL prefixes (``--static /static=./static``) and answers those requests on
the loop thread itself: :func:`serve_path` decides the response from the file's metadata alone (resolving and
opening it once, never reading it), and the loop streams the file with ``os.sendfile``, so a download costs a
descriptor, not a thread. The same rules serve any WSGI stack through :class:`StaticFiles`, and one known file
through :func:`serve_file` (the framework's file responses).

The modules, in the order a request meets them:

- :mod:`.mount`: a mount (prefix, root, options) and ``--static URL=DIR`` parsing.
- :mod:`.paths`: from a percent-encoded path to an open file under the root, refusing every way out.
- :mod:`.media`: Content-Type, Accept-Encoding and precompressed ``.br``/``.gz`` siblings.
- :mod:`.validators`: ETag, Last-Modified, conditional requests (304/412) and byte ranges (206/416).
- :mod:`.reply`: the decision itself, returned as a :class:`FileReply` for the caller to send.
- :mod:`.cache`: the server's open-file cache, which lets :func:`serve_path` skip the expensive checks for a
  file it checked a moment ago, once two syscalls have proven that the checks would decide the same now.
- :mod:`.listing`: the HTML index of a directory, when a mount asks for it.
- :mod:`.wsgi`: :class:`StaticFiles`, the WSGI application and middleware.

Choices worth knowing: only :func:`serve_path` (the server's event loop) uses the open-file cache, so its replies
carry a shared descriptor to ``sendfile`` from; :func:`serve_file` and :class:`StaticFiles` open the file afresh
each time and hand out a file object of its own. A request with several byte ranges gets the whole file (200), not
multipart/byteranges;
a path that is not valid UTF-8 once decoded gets 404, like every other refused path; a 304 has no
Content-Length; precompressed siblings are looked for only beside types that compress (text, JSON, SVG, ...).
"""

from .mount import StaticMount, StaticOptions, parse_mount
from .reply import FileReply, serve_file, serve_path
from .wsgi import StaticFiles, request_headers_from_environ

__all__ = [
    "FileReply",
    "StaticFiles",
    "StaticMount",
    "StaticOptions",
    "parse_mount",
    "request_headers_from_environ",
    "serve_file",
    "serve_path",
]
