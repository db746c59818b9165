"""Testing helpers: WSGI environs built from a few arguments, and requests made without a server.

``environ_for`` builds what a WSGI server would pass for a request, so that a test can call the app (or
``app.test_request_context``) exactly as a server would, in process, without sockets.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .middleware import to_wsgi_string


def environ_for(
    path: str = "/",
    method: str = "GET",
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    script_name: str = "",
    host: str = "localhost",
    scheme: str = "http",
    remote_addr: str = "127.0.0.1",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) for one request: ``path`` may carry a query string (``/search?q=x``) and is
    given decoded, as text; ``headers`` become ``HTTP_*`` keys (``Content-Type`` and ``Content-Length``
    their own); ``extra`` is merged last."""
    parts = urlsplit(path)
    port = "443" if scheme == "https" else "80"
    name, _, given_port = host.partition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.upper(),
        "SCRIPT_NAME": to_wsgi_string(script_name.rstrip("/")),
        "PATH_INFO": to_wsgi_string(parts.path or "/"),
        "QUERY_STRING": parts.query,
        "SERVER_NAME": name,
        "SERVER_PORT": given_port or port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "HTTP_HOST": host,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for header, value in (headers or {}).items():
        key = header.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    environ.update(extra or {})
    return environ
