"""The environ inspector: every key and value the server put in the WSGI ``environ`` for this request.

This is the whole of what an application learns about a request: the CGI-style variables (``REQUEST_METHOD``,
``PATH_INFO``, ``QUERY_STRING``, ...), one ``HTTP_*`` variable per request header, and the ``wsgi.*`` keys
(the body stream, the error log, what the server supports). Try ``/inspect/any/path?with=query``: the mount
point moved into ``SCRIPT_NAME`` and the rest stayed in ``PATH_INFO``, which is how ``apps/demo.py`` mounts
one app inside another (``framework/middleware.py:shift_path``).

Every value here comes from the client or the server and is shown through Jinja2's autoescaping, so a header
or query string containing ``<script>`` is displayed, never run. The values of ``SECRET_HEADERS`` (cookies and
credentials) are masked, shown only by their length: any script on this origin can fetch this page and read it,
and the ``HttpOnly`` flag that keeps the session cookie from scripts would be worth nothing if the page echoed it.

Serve it alone with ``python -m server apps.inspector:app``, or as part of the demo site at ``/inspect/``.
"""

from __future__ import annotations

from typing import Any

from framework import App, Request, Response

from .common import TEMPLATES, security_headers, use_site_error_pages

GROUPS = (
    ("Request (CGI variables)", lambda key: key.isupper() and not key.startswith("HTTP_")),
    ("Request headers (HTTP_*)", lambda key: key.startswith("HTTP_")),
    ("WSGI (wsgi.*)", lambda key: key.startswith("wsgi.")),
    ("Added by the server or middleware", lambda key: True),
)


SECRET_HEADERS = frozenset({"HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"})


def describe(key: str, value: Any) -> str:
    """Strings as they are, secrets by their length only; anything else (streams, booleans, tuples) as its
    ``repr``."""
    if key in SECRET_HEADERS:
        return f"(hidden: {len(value)} characters)"
    return value if isinstance(value, str) else repr(value)


def group_environ(environ: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The environ's items sorted into the groups above (each key in the first group that claims it)."""
    groups: list[tuple[str, list[tuple[str, str]]]] = [(title, []) for title, _ in GROUPS]
    for key in sorted(environ):
        for (_, claims), (_, items) in zip(GROUPS, groups, strict=True):
            if claims(key):
                items.append((key, describe(key, environ[key])))
                break
    return [(title, items) for title, items in groups if items]


# No secret key: the inspector keeps no state, so it needs neither sessions nor CSRF tokens.
app = App(__name__, templates=TEMPLATES)
use_site_error_pages(app)
app.add_middleware(security_headers)


@app.get("/")
@app.get("/<path:rest>")
def inspect(request: Request, rest: str = "") -> Response:
    """The environ of this very request, grouped and escaped."""
    return app.render(request, "inspector.html", groups=group_environ(request.environ))
