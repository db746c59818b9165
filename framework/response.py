"""The response a view returns: a status, headers and a body, which is itself a small WSGI application.

Making ``Response`` callable as ``response(environ, start_response)`` keeps the app's last step trivial and
lets subclasses such as ``FileResponse`` decide how their body travels (a ``wsgi.file_wrapper`` for files)
without the app knowing. A body is ``bytes`` (sent with a ``Content-Length``) or any iterable of
``bytes``/``str`` chunks (streamed; the server chooses chunked encoding or closes the connection).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from .cookies import format_set_cookie
from .datastructures import Headers
from .errors import status_line
from .routing import PATH_SAFE

# Shared encoders: json.dumps() with non-default options builds a new encoder on every call.
_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ascii_json_encoder = json.JSONEncoder(separators=(",", ":"))

# Statuses whose responses never carry a body (RFC 9110 6.4.1).
_NO_BODY = frozenset({204, 304})


def to_json(data: Any) -> bytes:
    """Compact UTF-8 JSON, the encoding every JSON response (and the session cookie) uses.

    A client can send a lone surrogate in JSON (``"\\ud800"``), which UTF-8 cannot encode; echoed back, it
    would be a 500. Such text goes out with every non-ASCII character escaped instead, as valid JSON.
    """
    text = _json_encoder.encode(data)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _ascii_json_encoder.encode(data).encode()


def to_utf8(text: str) -> bytes:
    """``text`` as UTF-8, with a lone surrogate (from a client's JSON, say) replaced rather than a 500."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="replace")


def response_status(value: object) -> int:
    """The status code a view gave (in a ``(body, status)`` tuple, to ``Response`` or assigned to its ``status``):
    an ``int`` from 200 to 599, or a status line's text, ``"201 Created"`` or ``"201"`` (three digits; the reason,
    if any, without control characters).

    Anything else is the view's mistake, raised here, while the app still handles its errors (a 500 page, a
    500 handler, a log line saying why): unchecked, it failed only when the response was sent, outside all
    that. A ``bool`` is no status (``True`` is an ``int``), and a final 1xx would make the client read the next
    response as this one's. The reason phrase that goes out is the standard one for the code.

    Other ``int`` subclasses are statuses (``http.HTTPStatus.CREATED``, any ``IntEnum``), returned as a plain
    ``int``: the status is compared, logged and formatted later, and an enum member would print as its name.
    """
    if type(value) is int:  # The common case first: one type check.
        code = value
    elif isinstance(value, int) and not isinstance(value, bool):
        code = int(value)
    elif isinstance(value, str):
        digits, _, reason = value.partition(" ")
        if not (len(digits) == 3 and digits.isascii() and digits.isdigit() and reason.isprintable()):
            raise ValueError(f"the status {value!r} is not a status line such as '201 Created'")
        code = int(digits)
    else:
        raise TypeError(f"the status {value!r} is a {type(value).__name__}; give an int (201) or text ('201 Created')")
    if not 200 <= code <= 599:
        raise ValueError(f"the status {value!r} is not a final HTTP status (200 to 599)")
    return code


class Response:
    """An HTTP response. ``body`` is ``str`` (encoded as UTF-8), ``bytes`` or an iterable of chunks.

    ``content_type`` defaults to ``text/html; charset=utf-8`` (none for 204 and 304, which have no body);
    ``headers`` may be a dict or a list of pairs.
    """

    default_content_type = "text/html; charset=utf-8"
    _status: int

    def __init__(
        self,
        body: str | bytes | Iterable[bytes | str] = b"",
        status: int | str = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers = Headers(headers)
        if headers and "Content-Type" in self.headers:
            if content_type is not None:
                self.headers["Content-Type"] = content_type
        elif content_type is not None or self._status not in _NO_BODY:
            self.headers.add("Content-Type", content_type or self.default_content_type)
        self.body = to_utf8(body) if isinstance(body, str) else body

    @property
    def status(self) -> int:
        """The status code, an ``int`` from 200 to 599.

        It may be given (to the constructor or assigned, by a view or an ``after_request`` hook) as an ``int`` or a
        status line's text (``"202 Accepted"``), and is checked then by ``response_status``: a status that is none
        (``"created"``, ``103``, ``None``) is a TypeError or ValueError where it was given, while the app still
        handles errors (a 500 through its handlers, a log line saying why). Unchecked, it failed only when the
        response was sent, outside all that, and a 1xx went out as if it were final.
        """
        return self._status

    @status.setter
    def status(self, value: int | str) -> None:
        # The common case, an int in range, costs one type check and one comparison: it is on every response.
        self._status = value if type(value) is int and 200 <= value <= 599 else response_status(value)

    @classmethod
    def json(
        cls,
        data: Any,
        status: int | str = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Response:
        """A JSON response: ``Response.json({"ok": True})``."""
        return cls(to_json(data), status, headers, "application/json")

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header."""
        return self.headers.get("Content-Type")

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["Content-Type"] = value

    def set_cookie(
        self,
        name: str,
        value: str = "",
        max_age: int | timedelta | None = None,
        expires: datetime | int | float | str | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Add a ``Set-Cookie`` header (see ``cookies.format_set_cookie`` for the value rules)."""
        self.headers.add(
            "Set-Cookie",
            format_set_cookie(
                name,
                value,
                max_age=max_age,
                expires=expires,
                path=path,
                domain=domain,
                secure=secure,
                httponly=httponly,
                samesite=samesite,
            ),
        )

    def delete_cookie(
        self,
        name: str,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Tell the client to drop a cookie: same name, path and domain, expired in the past (``secure`` and
        ``samesite`` as the cookie had them, since browsers refuse a ``SameSite=None`` cookie without
        ``Secure``)."""
        self.set_cookie(name, "", max_age=0, expires=0, path=path, domain=domain, secure=secure, samesite=samesite)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Send the response through WSGI: the status and headers, then the body (none for HEAD)."""
        headers = self.headers.items()
        body = self.body
        status = self._status
        if isinstance(body, str):  # Replaced after construction (an after_request hook): still one block.
            body = to_utf8(body)
        bodiless = status in _NO_BODY or environ["REQUEST_METHOD"] == "HEAD"
        if isinstance(body, bytes):
            if status not in _NO_BODY and "Content-Length" not in self.headers:
                headers.append(("Content-Length", str(len(body))))
            start_response(status_line(status), headers)
            return [] if bodiless else [body]
        start_response(status_line(status), headers)
        if bodiless:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return []
        return StreamedBody(body)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.content_type}>"


class StreamedBody:
    """A streamed body as the WSGI server sees it: ``bytes`` chunks, and a ``close()`` the server calls however
    the response ends (PEP 3333).

    ``close()`` closes the view's iterable (a generator may hold a database cursor), then calls each function
    registered with ``call_on_close``, passing the exception that broke the stream or ``None``. The app runs
    its teardown hooks that way, after the last chunk rather than before the first.
    """

    __slots__ = ("_callbacks", "_chunks", "_error")

    def __init__(self, chunks: Iterable[bytes | str]) -> None:
        self._chunks = chunks
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                yield to_utf8(chunk) if isinstance(chunk, str) else chunk
        except Exception as error:
            self._error = error
            raise

    def call_on_close(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(exception_or_None)`` once the server has closed the body."""
        self._callbacks.append(callback)

    def close(self) -> None:
        """Close the view's iterable, then run the callbacks, even if closing it failed."""
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            for callback in self._callbacks:
                callback(self._error)


def redirect(url: str, code: int = 302) -> Response:
    """A redirect to ``url`` (302 by default; 301/308 are permanent, 303 turns a POST into a GET).

    Characters a URL cannot carry (spaces, non-ASCII, ``\\``) are percent-encoded; ``%`` and the URL's
    delimiters are kept, so an already-encoded URL passes unchanged. This does not make a redirect to a URL
    taken from the request safe: check that it is a path on this site first.
    """
    return Response(b"", code, [("Location", quote(url, safe=PATH_SAFE + "%?#[]"))])
