"""The request a view receives: a lazy, read-only view of the WSGI environ.

Nothing is parsed until a view asks for it. A hello-world view never touches the query string, the cookies or
the body, and pays for none of them; the first access to ``request.form`` reads and parses the body once and
caches the result. That laziness is most of why the framework is fast (see ``bench/bench_framework.py``).

The body is read through ``BodyStream``, which never reads past ``Content-Length`` and enforces the app's
``max_body_size`` on bodies of unknown length (chunked uploads). Every parse error (bad JSON, bad form data, a
body cut short) becomes an ``HTTPError`` with status 400 or 413, never a 500.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .cookies import parse_cookie_header
from .datastructures import EnvironHeaders, MultiDict
from .errors import HTTPError
from .forms import parse_multipart, parse_urlencoded
from .routing import quote_path

if TYPE_CHECKING:
    from .app import App
    from .sessions import Session


class lazy:
    """A property computed on first access and then stored on the instance.

    Like ``functools.cached_property`` without its per-access lock (Python 3.11 still takes one), since a
    request belongs to one thread.
    """

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


def wsgi_to_text(value: str) -> str:
    """Undo WSGI's latin-1 packing of path bytes (PEP 3333) and decode them as UTF-8."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


def content_length(environ: dict[str, Any]) -> int | None:
    """The declared body length, ``None`` when absent; 400 when it is not a plain decimal number.

    ``isdigit()`` alone would let through ``"²"`` (which ``int()`` refuses: a 500) and ``"١٢"`` (which
    ``int()`` reads as 12), hence the ASCII check.
    """
    text = environ.get("CONTENT_LENGTH")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise HTTPError(400, "Malformed Content-Length header")
    return int(text)


class BodyStream:
    """The request body as a file-like object that stops at the end of the body.

    With a ``Content-Length`` it reads exactly that many bytes (the app has already refused lengths over
    the limit); for a body of unknown length it reads until the server's end of input
    (``wsgi.input_terminated``) and answers 413 as soon as more than ``limit`` bytes arrive, so a chunked
    upload cannot exhaust memory or disk.
    """

    def __init__(self, raw: IO[bytes] | None, length: int | None, limit: int) -> None:
        self._raw = raw
        self._remaining = length
        self._limit = limit
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); ``b""`` at the end of the body."""
        if self._raw is None:
            return b""
        if self._remaining is not None:
            if self._remaining <= 0:
                return b""
            if size < 0:
                # Read it all; a server's input may return less than asked, so loop until done.
                chunks = []
                while self._remaining > 0:
                    chunks.append(self.read(self._remaining))
                return b"".join(chunks)
            data = self._raw.read(min(size, self._remaining))
            if not data:
                raise HTTPError(400, "The request body is shorter than its Content-Length")
            self._remaining -= len(data)
            return data
        data = self._raw.read(self._limit + 1 - self._seen if size < 0 else size)
        self._seen += len(data)
        if self._seen > self._limit:
            raise HTTPError(413, f"The request body is larger than {self._limit} bytes")
        return data


class Request:
    """One HTTP request, as the view sees it. Every attribute is computed on first use.

    ``route_params`` holds the converted path parameters, ``endpoint`` the matched route's name, ``app`` the
    application handling it. ``environ`` is the raw WSGI environ, for anything not wrapped here.
    """

    def __init__(self, environ: dict[str, Any], app: App) -> None:
        self.environ = environ
        self.app = app
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = wsgi_to_text(environ.get("PATH_INFO") or "/")
        self.route_params: dict[str, Any] = {}
        self.endpoint: str | None = None
        self._uploads: list[Any] = []

    # --- where the request went ----------------------------------------------------------------------------

    @lazy
    def script_name(self) -> str:
        """The prefix the app is mounted at (``""`` at the root); every URL the app builds starts with it."""
        return wsgi_to_text(self.environ.get("SCRIPT_NAME", "")).rstrip("/")

    @lazy
    def scheme(self) -> str:
        """``http`` or ``https``, as the server saw it."""
        return self.environ.get("wsgi.url_scheme", "http")

    @lazy
    def host(self) -> str:
        """The ``Host`` header, or the server's name and port when the client sent none (HTTP/1.0)."""
        host = self.environ.get("HTTP_HOST")
        if host:
            return host
        name, port = self.environ.get("SERVER_NAME", "localhost"), str(self.environ.get("SERVER_PORT", ""))
        default = "443" if self.scheme == "https" else "80"
        return name if port in ("", default) else f"{name}:{port}"

    @lazy
    def query_string(self) -> str:
        """The raw query string, without the ``?``."""
        return self.environ.get("QUERY_STRING", "")

    @lazy
    def url(self) -> str:
        """The full URL the client asked for, query string included."""
        path = quote_path(self.script_name + self.path)
        query = self.query_string
        return f"{self.scheme}://{self.host}{path}" + (f"?{query}" if query else "")

    @lazy
    def remote_addr(self) -> str | None:
        """The peer's IP address as the server saw it (a proxy's, behind one)."""
        return self.environ.get("REMOTE_ADDR")

    # --- headers and what they carry -----------------------------------------------------------------------

    @lazy
    def headers(self) -> EnvironHeaders:
        """The request headers, case-insensitive: ``request.headers["user-agent"]``."""
        return EnvironHeaders(self.environ)

    @lazy
    def content_type(self) -> str:
        """The body's media type, lower-case and without parameters (``"application/json"``), or ``""``."""
        return self.environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()

    @lazy
    def content_length(self) -> int | None:
        """The declared body length, or ``None``."""
        return content_length(self.environ)

    @lazy
    def query(self) -> MultiDict:
        """The query string's parameters: ``request.query["page"]``, ``request.query.getall("tag")``."""
        return MultiDict(parse_qsl(self.query_string, keep_blank_values=True, errors="replace"))

    @lazy
    def cookies(self) -> dict[str, str]:
        """The cookies the client sent; malformed ones are ignored rather than failing the request."""
        return parse_cookie_header(self.environ.get("HTTP_COOKIE", ""))

    @lazy
    def accepts_json(self) -> bool:
        """Does the client prefer JSON to HTML? Decides the format of error pages."""
        return prefers_json(self.environ.get("HTTP_ACCEPT", ""))

    # --- the body ------------------------------------------------------------------------------------------

    @lazy
    def stream(self) -> BodyStream:
        """The body as a stream, for views that process it incrementally; mutually exclusive with ``body``,
        ``form`` and ``json``, which consume it."""
        environ = self.environ
        length = self.content_length
        if length is None and not environ.get("wsgi.input_terminated"):
            # PEP 3333: without Content-Length, only input the server marks as terminated has a body.
            length = 0
        return BodyStream(environ.get("wsgi.input"), length, self.app.max_body_size)

    @lazy
    def body(self) -> bytes:
        """The whole body as bytes (bounded by ``max_body_size``)."""
        return self.stream.read()

    @lazy
    def json(self) -> Any:
        """The body decoded as JSON when the content type says JSON (``application/json``, ``*+json``), else
        ``None``. Malformed JSON answers 400."""
        kind = self.content_type
        if kind != "application/json" and not kind.endswith("+json"):
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as error:
            raise HTTPError(400, f"Malformed JSON body: {error}") from error

    @property
    def form(self) -> MultiDict:
        """Form fields from a URL-encoded or multipart body (empty for other bodies)."""
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        """Uploaded files (``UploadedFile``) from a multipart body, by field name."""
        return self._parse_form()[1]

    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        parsed = self.__dict__.get("_form")
        if parsed is not None:
            return parsed
        app = self.app
        kind = self.content_type
        if kind == "application/x-www-form-urlencoded":
            parsed = parse_urlencoded(self.body, app.max_form_parts), MultiDict()
        elif kind == "multipart/form-data":
            boundary = _content_type_option(self.environ.get("CONTENT_TYPE", ""), "boundary")
            if not boundary:
                raise HTTPError(400, "Multipart body without a boundary")
            length = self.content_length
            # Normally streamed from the input; from memory if a view already read the body as bytes.
            read = io.BytesIO(self.__dict__["body"]).read if "body" in self.__dict__ else self.stream.read
            parsed = parse_multipart(
                read,
                boundary,
                -1 if length is None else length,
                spool_size=app.upload_spool_size,
                max_field_size=app.max_form_field_size,
                max_parts=app.max_form_parts,
            )
            self._uploads.extend(upload for _, upload in parsed[1].items_all())
        else:
            parsed = MultiDict(), MultiDict()
        self.__dict__["_form"] = parsed
        return parsed

    # --- state that spans requests -------------------------------------------------------------------------

    @lazy
    def session(self) -> Session:
        """The signed-cookie session, a dict; loaded on first use and saved with the response if changed."""
        return self.app.sessions.load(self)

    def csrf_token(self) -> str:
        """This session's CSRF token, created on first use; put it in forms as a ``csrf_token`` field."""
        return self.app.csrf.token(self)

    # --- building URLs -------------------------------------------------------------------------------------

    def url_for(self, endpoint: str, *, _external: bool = False, **values: Any) -> str:
        """The URL of ``endpoint`` with ``values`` as parameters (extra ones become the query string), under
        this request's mount point; ``_external=True`` adds scheme and host."""
        url = quote_path(self.script_name) + self.app.router.build(endpoint, values)
        return f"{self.scheme}://{self.host}{url}" if _external else url

    def static(self, filename: str) -> str:
        """The URL of a static file (served by the app's ``static`` route, or the server at ``/static``)."""
        return quote_path(self.script_name) + self.app.static_path(filename)

    def close(self) -> None:
        """Release the temporary files of uploads; the app calls this when the request is over."""
        for upload in self._uploads:
            upload.close()
        self._uploads.clear()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r}>"


def _content_type_option(header: str, option: str) -> str | None:
    """One parameter of a Content-Type header (``boundary`` of ``multipart/form-data; boundary=xyz``)."""
    for piece in header.split(";")[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower() == option:
            return value.strip().strip('"') or None
    return None


def prefers_json(accept: str) -> bool:
    """True when an ``Accept`` header ranks ``application/json`` above ``text/html`` (ties go to HTML).

    ``*/*`` counts for HTML but a hair below an explicit type, as content negotiation ranks specific types
    first: ``application/json, */*`` (what many JavaScript clients send) is a request for JSON.
    """
    if "json" not in accept:
        return False
    best = {"html": 0.0, "json": 0.0}  # q=0 means "not acceptable", the same as not listed.
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        kind = "json" if media == "application/json" else "html" if media in ("text/html", "*/*") else None
        if kind is None:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media == "*/*":
            quality -= 0.001
        best[kind] = max(best[kind], quality)
    return best["json"] > best["html"]
