"""HTTP errors as exceptions, so any code deep inside a view can stop the request with the right status.

``abort(404)`` raises an ``HTTPError``; the app catches it, looks for an error handler registered for the
code, and otherwise renders the framework's own error page (see ``pages.py``). Routing raises the subclasses
``NotFound``, ``MethodNotAllowed`` (which carries the ``Allow`` header) and ``RequestRedirect``; parsed input
raises ``MissingField`` for a field the client did not send.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, NoReturn

_STATUS_LINES: dict[int, str] = {}


def reason_phrase(code: int) -> str:
    """The standard reason phrase for ``code`` (``404`` -> ``"Not Found"``), or ``"Unknown"``."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def status_line(code: int) -> str:
    """``"404 Not Found"``: the status string WSGI's ``start_response`` wants, cached because every response
    needs one and building it from ``HTTPStatus`` each time would show up in the benchmark."""
    line = _STATUS_LINES.get(code)
    if line is None:
        if not 100 <= code <= 999:
            raise ValueError(f"invalid HTTP status code {code!r}")
        line = _STATUS_LINES[code] = f"{code} {reason_phrase(code)}"
    return line


class HTTPError(Exception):
    """An HTTP error status raised from anywhere below the app; becomes an error page or a handler's answer.

    ``description`` is shown to the client, so it must never contain secrets. ``headers`` are added to the
    error response (``Allow`` for 405, ``WWW-Authenticate`` for 401, ...).
    """

    def __init__(
        self,
        code: int,
        description: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        response: Any = None,
    ) -> None:
        # Checked here, where the code is raised (a 500 saying why), not when its page is built in the error
        # handling, which has no handler left for a status no Response can carry (a final one, 200 to 599).
        # Any int but a bool, an ``HTTPStatus`` member included, kept as a plain int (it is formatted and compared).
        if not isinstance(code, int) or isinstance(code, bool) or not 200 <= code <= 599:
            raise ValueError(f"HTTPError({code!r}): the status must be an int from 200 to 599 (an error is 4xx or 5xx)")
        code = int(code)
        self.code = code
        self.name = reason_phrase(code)
        self.description = description or ""
        self.headers = list(headers or ())
        #: A ready response to answer with as it is (``abort(redirect(...))``), skipping the error handlers.
        self.response = response
        super().__init__(f"{code} {self.name}" + (f": {description}" if description else ""))


class NotFound(HTTPError):
    """No route matches the path."""

    def __init__(self, description: str | None = None) -> None:
        super().__init__(404, description or "The requested URL was not found on this server.")


class MethodNotAllowed(HTTPError):
    """A route matches the path but not the method; ``Allow`` lists the methods that would have worked."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = sorted(allowed)
        super().__init__(
            405,
            "The method is not allowed for the requested URL.",
            headers=[("Allow", ", ".join(self.allowed))],
        )


class RequestRedirect(HTTPError):
    """The path only matches with its trailing slash toggled; the app answers with a redirect to ``location``.

    308 rather than 301 because a 308 keeps the method and body, so a form posted to ``/dir`` still arrives.
    """

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(308, "This resource lives at another URL.", headers=[("Location", location)])


class DisallowedHost(HTTPError):
    """A ``Host`` that is not a host name, or that ``TRUSTED_HOSTS`` does not name: 400.

    The app answers it with its plain error page, not through the error handlers, and logs it once at WARNING on
    the ``framework.security.DisallowedHost`` logger (Django's name for the same thing): a handler or a layout that
    builds a URL from the host would read it again, fail, and log a traceback at ERROR for every such request, a
    log flood any client could cause. ``host`` is the client's value, for the log only: the page does not repeat
    a stranger's text.
    """

    def __init__(self, host: str, description: str) -> None:
        self.host = host
        super().__init__(400, description)


class MissingField(HTTPError, KeyError):
    """``request.form["title"]`` (or ``query``, ``files``) when the client sent no such field.

    A ``KeyError`` to the view, so ``except KeyError`` works as with any mapping; a 400 to the client if the
    view lets it go, since a missing field is the client's mistake, not a bug in the app (not a 500).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(400, f"The request has no {key!r} field.")

    def __str__(self) -> str:
        return HTTPError.__str__(self)  # Not KeyError's repr() of the message.


def abort(code: int | Any, description: str | None = None) -> NoReturn:
    """Stop the request now with an error status: ``abort(404)``, ``abort(403, "Members only")``; or with a
    ready response, ``abort(redirect(url))``, which is sent as it is.

    Only 4xx and 5xx statuses are errors: anything else is a ``ValueError`` here, rather than an error page
    that says "299 Unknown" (a redirect is ``redirect(url)``, a success is a normal return).
    """
    if isinstance(code, bool) or not isinstance(code, int):
        status = getattr(code, "status", None)
        if not isinstance(status, int):
            raise TypeError(f"abort() takes a 4xx/5xx status or a Response, not {code!r}")
        raise HTTPError(status, description, response=code)
    if not 400 <= code <= 599:
        hint = " (for a redirect, return redirect(url) or abort(redirect(url)))" if 300 <= code <= 399 else ""
        raise ValueError(f"abort({code}): only 4xx and 5xx statuses are errors{hint}")
    raise HTTPError(code, description)
