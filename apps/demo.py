"""The demo site that ``python -m server`` serves when no application is named.

A plain WSGI application for now: a home page from ``templates/index.html`` with the stylesheet from
``static/`` (mounted at /static and served by the server itself, from its event loop), plus the raw
hello-world app at /hello. It grows into the framework-built site of the demo-site issue.
"""

from pathlib import Path

from apps.hello import app as hello

ROOT = Path(__file__).resolve().parent.parent
STATIC_MOUNT = f"/static={ROOT / 'static'}"


def app(environ, start_response):
    """Route the few pages of the demo site."""
    path = environ.get("PATH_INFO", "/")
    if path == "/hello":
        return hello(environ, start_response)
    if path != "/":
        body = b"<!doctype html><title>Not found</title><h1>404 Not Found</h1>"
        start_response("404 Not Found", [("Content-Type", "text/html; charset=utf-8")])
        return [body]
    body = (ROOT / "templates" / "index.html").read_bytes()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body]
