"""The framework's own error pages: HTML for browsers, JSON for API clients, a traceback page in debug mode.

The choice between HTML and JSON follows the request's ``Accept`` header (``request.accepts_json``), so one
app can serve a website and an API and each client reads its errors in its own format. The debug page shows
source lines and local variables, which is why it exists only with ``App(debug=True)``, never by default.

The templates live in ``framework/page_templates/`` with their own Jinja2 environment, separate from the app's
templates, so an app's ``error.html`` can never shadow them by accident.
"""

from __future__ import annotations

import traceback
from functools import cache
from pathlib import Path

import jinja2

from .errors import HTTPError
from .request import Request
from .response import Response

_TEMPLATES = Path(__file__).parent / "page_templates"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True)


def error_page(request: Request, error: HTTPError) -> Response:
    """The default response for an ``HTTPError``, with the error's extra headers (``Allow``, ``Location``)."""
    if request.accepts_json:
        payload = {"error": {"code": error.code, "name": error.name, "description": error.description}}
        return Response.json(payload, error.code, error.headers)
    html = (
        _environment()
        .get_template("error.html")
        .render(code=error.code, name=error.name, description=error.description)
    )
    return Response(html, error.code, error.headers)


def debug_page(request: Request, exception: BaseException) -> Response:
    """A 500 response showing the traceback (with each frame's local variables) of ``exception``."""
    summary = traceback.TracebackException.from_exception(exception, capture_locals=True)
    text = "".join(summary.format())
    if request.accepts_json:
        payload = {
            "error": {
                "code": 500,
                "name": "Internal Server Error",
                "description": str(exception),
                "traceback": text,
            }
        }
        return Response.json(payload, 500)
    html = (
        _environment()
        .get_template("debug.html")
        .render(
            exception_type=type(exception).__name__,
            message=str(exception),
            method=request.method,
            path=request.path,
            frames=summary.stack,
            traceback=text,
        )
    )
    return Response(html, 500)
