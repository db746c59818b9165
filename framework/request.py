"""The request a view receives: a lazy, read-only view of the WSGI environ, plus ``request.g`` for the state a
request gathers on its way (the logged-in user, a database connection).

Nothing is parsed until a view asks for it. A hello-world view never touches the query string, the cookies or
the body, and pays for none of them; the first access to ``request.form`` reads and parses the body once and
caches the result. That laziness is most of why the framework is fast (see ``bench/bench_framework.py``).

The body is read through ``BodyStream``, which never reads past ``Content-Length`` and enforces the app's
``max_body_size`` on bodies of unknown length (chunked uploads). Every parse error (bad JSON, bad form data, a
body cut short) becomes an ``HTTPError`` with status 400 or 413, never a 500.

The request's attributes cannot be assigned: ``request.user = ...`` raises, pointing at ``request.g``, so a
typo cannot shadow ``request.form`` and state a hook leaves for the view has one obvious place. (The session,
``request.g`` and ``request.flash`` are how a view changes what the next request sees.)

While the app handles a request it is also ``current_request()`` (see ``app.py``), for code far from the view
that needs the mount point (``app.url_for``); views should still take the request they are given.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, overload
from urllib.parse import parse_qsl, quote

from server.http import valid_host

from .cookies import parse_cookie_header
from .datastructures import EnvironHeaders, MultiDict
from .errors import DisallowedHost, HTTPError
from .forms import parse_multipart, parse_urlencoded
from .routing import BuildError, quote_path

if TYPE_CHECKING:
    from .app import App
    from .response import Response
    from .routing import Rule
    from .sessions import Session

# Where request.flash keeps its messages in the session: [[category, message], ...].
FLASH_KEY = "_flashes"


T = TypeVar("T")


class lazy(Generic[T]):
    """A property computed on first access and then stored on the instance.

    Like ``functools.cached_property`` without its per-access lock (Python 3.11 still takes one), since a
    request belongs to one thread.
    """

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> lazy[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> T | lazy[T]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


def wsgi_to_text(value: str) -> str:
    """Undo WSGI's latin-1 packing of path bytes (PEP 3333) and decode them as UTF-8."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


_VISIBLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))


def quote_query(query: str) -> str:
    """A WSGI query string as it goes into a URL: raw non-ASCII bytes (``curl 'host/?q=café'``), which WSGI packs
    as latin-1 characters, percent-encoded as those bytes. Quoted as text, they would be encoded twice
    (``caf%C3%83%C2%A9``) and reach the next request as other characters."""
    if query.isascii():
        return query
    try:
        raw = query.encode("latin-1")
    except UnicodeEncodeError:  # not from a WSGI server (characters above U+00FF): text, taken as UTF-8
        raw = query.encode("utf-8")
    return quote(raw, safe=_VISIBLE_ASCII)


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
        if self._raw is None or size == 0:
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


class Globals:
    """``request.g``: a namespace for what one request gathers on its way, gone when the request ends.

    Set anything as an attribute (``request.g.user = user``); ``get``, ``pop``, ``setdefault`` and ``in``
    work as on a dict, for code that must not assume a hook ran. Templates see it as ``g``.
    """

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, or ``default``."""
        return self.__dict__.get(name, default)

    def pop(self, name: str, *default: Any) -> Any:
        """Remove the attribute ``name`` and return it (or ``default``; ``KeyError`` without one)."""
        return self.__dict__.pop(name, *default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, set to ``default`` first if it is not there."""
        return self.__dict__.setdefault(name, default)

    def __getattr__(self, name: str) -> Any:
        # Only for names not set: say where they should have come from, not just "no attribute".
        raise AttributeError(
            f"request.g has no {name!r}: set it first (a before_request hook is the place), "
            f"or read it with request.g.get({name!r})"
        )

    if TYPE_CHECKING:  # Any attribute may be set: tell the type checker so.

        def __setattr__(self, name: str, value: Any) -> None: ...

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __repr__(self) -> str:
        return f"<request.g {self.__dict__!r}>"


class Request:
    """One HTTP request, as the view sees it. Every attribute is computed on first use, and none can be
    assigned (put per-request state on ``request.g``).

    ``route_params`` holds the converted path parameters, ``endpoint`` the matched route's name (``"blog.index"``
    for a blueprint's view), ``rule`` the route itself (its ``view``, ``pattern`` and ``methods``; ``None`` when
    nothing matched), ``blueprint`` the name of that blueprint, ``app`` the application handling it.
    ``environ`` is the raw WSGI environ, for anything not wrapped here.
    """

    def __init__(self, environ: dict[str, Any], app: App) -> None:
        # Through __dict__: __setattr__ refuses assignments, so that views cannot (see the module docstring).
        attributes = self.__dict__
        attributes["environ"] = environ
        attributes["app"] = app
        attributes["method"] = environ["REQUEST_METHOD"]
        attributes["path"] = wsgi_to_text(environ.get("PATH_INFO") or "/")

    # Until the app sets them (through __dict__) after routing: class attributes, so that building a request
    # costs four assignments, not eight (the hello-world benchmark sees the difference).
    route_params: Mapping[str, Any] = MappingProxyType({})
    endpoint: str | None = None
    rule: Rule | None = None
    _uploads: tuple[Any, ...] | list[Any] = ()

    if TYPE_CHECKING:
        environ: dict[str, Any]
        app: App
        method: str
        path: str

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"request.{name} cannot be assigned: the request is read-only; keep per-request state on request.g "
            f"(request.g.{name} = ...)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"request.{name} cannot be deleted: the request is read-only")

    @lazy
    def g(self) -> Globals:
        """The request's own namespace (see ``Globals``)."""
        return Globals()

    @lazy
    def blueprint(self) -> str | None:
        """The name of the blueprint whose view the request was routed to (``None`` for the app's own)."""
        endpoint = self.endpoint
        if endpoint is None or "." not in endpoint:
            return None
        return endpoint.rpartition(".")[0]

    # --- where the request went ----------------------------------------------------------------------------

    @lazy
    def script_name(self) -> str:
        """The prefix the app is mounted at (``""`` at the root); every URL the app builds starts with it."""
        return wsgi_to_text(self.environ.get("SCRIPT_NAME", "")).rstrip("/")

    @lazy
    def scheme(self) -> str:
        """``http`` or ``https``, as the server saw it."""
        scheme: str = self.environ.get("wsgi.url_scheme", "http")
        return scheme

    @property
    def is_secure(self) -> bool:
        """Whether the request came over HTTPS (as the server saw it: behind a TLS proxy, see ``scheme``)."""
        return self.scheme == "https"

    @lazy
    def host(self) -> str:
        """The ``Host`` header, or the server's name and port when the client sent none (HTTP/1.0).

        The client chooses it, and external URLs are built from it (see ``url_for``), so it is checked: 400 when it
        is not a host name or address with an optional port (a line break, a space, ``/`` or ``@`` would turn a
        password-reset link into another site's), or when ``TRUSTED_HOSTS`` is set and does not name it. Our
        server refuses such a Host itself; the framework checks again because it may run under any WSGI server.
        """
        return checked_host(self.environ, self.app.config["TRUSTED_HOSTS"])

    @lazy
    def query_string(self) -> str:
        """The raw query string, without the ``?``."""
        query: str = self.environ.get("QUERY_STRING", "")
        return query

    @lazy
    def external_host(self) -> str:
        """The host (with any port) of the URLs this app gives out whole (``url``, ``url_for(_external=True)``):
        the ``SERVER_NAME`` setting when it is set, else the request's checked ``host``."""
        return server_name(self.app.config["SERVER_NAME"]) or self.host

    @lazy
    def url(self) -> str:
        """The full URL the client asked for, query string included, on ``external_host`` (so with
        ``SERVER_NAME`` set, a canonical link or an OAuth ``redirect_uri`` built from it names this site
        whatever ``Host`` the client sent)."""
        path = quote_path(self.script_name + self.path)
        query = quote_query(self.query_string)
        return f"{self.scheme}://{self.external_host}{path}" + (f"?{query}" if query else "")

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
        header: str = self.environ.get("CONTENT_TYPE", "")
        return header.partition(";")[0].strip().lower()

    @lazy
    def content_length(self) -> int | None:
        """The declared body length, or ``None``."""
        return content_length(self.environ)

    @lazy
    def query(self) -> MultiDict:
        """The query string's parameters: ``request.query["page"]``, ``request.query.getall("tag")``."""
        # Raw non-ASCII bytes (curl 'host/?q=café') reach WSGI as latin-1 characters: back to UTF-8 first.
        return MultiDict(parse_qsl(wsgi_to_text(self.query_string), keep_blank_values=True, errors="replace"))

    @property
    def args(self) -> MultiDict:
        """``query``, under Flask's name for it."""
        return self.query

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
    def is_json(self) -> bool:
        """Whether the content type says JSON: ``application/json`` or ``*+json`` (``application/ld+json``)."""
        kind = self.content_type
        return kind == "application/json" or kind.endswith("+json")

    @lazy
    def json(self) -> Any:
        """The body decoded as JSON when the content type says JSON (``is_json``), else ``None``. Malformed JSON
        answers 400."""
        return decode_json(self.body) if self.is_json else None

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        """Flask's ``request.get_json``, for code written for Flask: the body as JSON; ``force=True`` reads it
        as JSON whatever its content type. Without ``force`` a body that does not say JSON answers 415, as in
        Flask (``request.json`` is ``None`` for it instead); malformed JSON answers 400. ``silent=True`` returns
        ``None`` instead of either; a body too large or cut short is refused all the same, as in Flask."""
        if not (force or self.is_json):
            if silent:
                return None
            raise HTTPError(415, "The request body is not JSON (Content-Type: application/json)")
        body = self.body
        try:
            return self.json if self.is_json else decode_json(body)
        except HTTPError:  # Only decoding can fail now: the body has been read.
            if silent:
                return None
            raise

    @property
    def form(self) -> MultiDict:
        """Form fields from a URL-encoded or multipart body (empty for other bodies)."""
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        """Uploaded files (``UploadedFile``) from a multipart body, by field name."""
        return self._parse_form()[1]

    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        parsed: tuple[MultiDict, MultiDict] | None = self.__dict__.get("_form")
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
            uploads = [upload for _, upload in parsed[1].items_all()]
            if uploads:
                self.__dict__["_uploads"] = [*self._uploads, *uploads]
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

    def flash(self, message: str, category: str = "message") -> None:
        """Leave ``message`` for the next page this visitor sees (typically after a redirect), in the session.

        ``category`` is free text (``"error"``, ``"info"``...) for the template to style the message by."""
        if not isinstance(message, str) or not isinstance(category, str):
            raise TypeError("request.flash(message, category) takes text for both")
        session = self.session
        # Assigned, not appended, so that the session sees the change.
        session[FLASH_KEY] = [*session.get(FLASH_KEY, ()), [category, message]]

    def get_flashed_messages(
        self, with_categories: bool = False, category_filter: Iterable[str] = ()
    ) -> list[str] | list[tuple[str, str]]:
        """The messages flashed for this visitor, taken out of the session: shown once, then gone.

        Every call during one request answers the same messages. ``with_categories=True`` answers
        ``(category, message)`` pairs; ``category_filter`` keeps only the given categories."""
        flashes: list[tuple[str, str]] | None = self.__dict__.get("_flashes")
        if flashes is None:
            flashes = []
            if self.app.sessions_enabled:
                stored = self.session.pop(FLASH_KEY, None)  # Marks the session changed only if there were any.
                for item in stored if isinstance(stored, list) else ():
                    if isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item):
                        flashes.append((item[0], item[1]))
            self.__dict__["_flashes"] = flashes
        wanted = set(category_filter)
        chosen = [item for item in flashes if item[0] in wanted] if wanted else flashes
        if with_categories:
            return list(chosen)
        return [message for _, message in chosen]

    def render(self, template: str, /, **context: Any) -> Response:
        """Render a template of the app into a response (HTML, or as its extension says: see ``App.render``):
        ``return request.render("post.html", post=p)``."""
        return self.app.render(self, template, **context)

    # --- building URLs -------------------------------------------------------------------------------------

    def url_for(
        self,
        endpoint: str,
        *,
        _external: bool = False,
        _anchor: str | None = None,
        _scheme: str | None = None,
        **values: Any,
    ) -> str:
        """The URL of ``endpoint`` with ``values`` as parameters (extra ones become the query string), under
        this request's mount point.

        ``_external=True`` adds scheme and host: the ``SERVER_NAME`` setting when it is set, else the request's
        checked ``host``; ``_scheme`` (only with ``_external``) replaces the request's scheme. ``_anchor`` is
        the fragment (``#...``), quoted. Any other keyword starting with ``_`` is a TypeError unless the rule
        takes it as a parameter: it is a misspelt option, not a query parameter.

        ``".index"`` is the ``index`` of the blueprint that handles this request. ``"static"`` with
        ``filename=`` is a static file's URL even when the server, not the app, serves them (``--static``)."""
        if _scheme is not None and not _external:
            raise ValueError("url_for(_scheme=...) needs _external=True: a scheme makes no sense on a path")
        if endpoint.startswith("."):
            blueprint = self.blueprint
            endpoint = f"{blueprint}{endpoint}" if blueprint else endpoint[1:]
        try:
            path = self.app.router.build(endpoint, values)
        except BuildError:
            if endpoint != "static" or set(values) != {"filename"}:
                raise
            path = self.app.static_path(values["filename"])
        url = quote_path(self.script_name) + path
        if _anchor is not None:
            url += "#" + quote(str(_anchor), safe=_FRAGMENT_SAFE)
        if not _external:
            return url
        scheme = self.scheme if _scheme is None else _checked_scheme(_scheme)
        return f"{scheme}://{self.external_host}{url}"

    def static(self, filename: str) -> str:
        """The URL of a static file (served by the app's ``static`` route, or the server at ``/static``)."""
        return quote_path(self.script_name) + self.app.static_path(filename)

    def close(self) -> None:
        """Release the temporary files of uploads; the app calls this when the request is over."""
        self.__dict__.pop("g", None)  # Break cycles through what hooks left there (database handles...).
        for upload in self._uploads:
            upload.close()
        self.__dict__.pop("_uploads", None)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r}>"


# What a fragment may hold unquoted (RFC 3986 3.5: pchar, "/" and "?"), less "%", so an anchor is taken as text.
_FRAGMENT_SAFE = "-._~!$&'()*+,;=:@/?"
_SCHEME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def _checked_scheme(scheme: str) -> str:
    """``scheme`` if it is one (RFC 3986 3.1: a letter, then letters, digits, ``+``, ``-``, ``.``), else ValueError:
    ``"https://evil.example/"`` would make the URL another site's."""
    if not (scheme[:1].isascii() and scheme[:1].isalpha() and _SCHEME_CHARACTERS.issuperset(scheme)):
        raise ValueError(f"url_for(_scheme={scheme!r}): not a URL scheme")
    return scheme


def checked_host(environ: Mapping[str, Any], trusted: str | Iterable[str] | None) -> str:
    """The request's host (see ``Request.host``) from its environ; ``DisallowedHost`` (400) when it is not a host
    name, or when ``trusted`` (the ``TRUSTED_HOSTS`` setting) is set and does not name it.

    A function of the environ so that the app can check a request it hands to a mounted app, which never gets a
    ``Request`` of ours."""
    host: str | None = environ.get("HTTP_HOST")
    if not host:
        name, port = environ.get("SERVER_NAME", "localhost"), str(environ.get("SERVER_PORT", ""))
        if ":" in name and not name.startswith("["):
            # A bare IPv6 address (a server bound to ::1 names itself so, from getsockname): bracketed as in a Host
            # header, or its port would run into it ("::1:8000") and the host would be refused as a forgery.
            name = f"[{name}]"
        default = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
        host = name if port in ("", default) else f"{name}:{port}"
    name = host_name(host) if valid_host(host) else ""
    if not name:
        raise DisallowedHost(host, "The Host header is not a host name")
    if trusted and not trusted_hosts(trusted).trust(name):
        # The host itself is not repeated: the error page would show a stranger's text.
        raise DisallowedHost(host, "The Host header names a host this site does not serve")
    return host


def server_name(value: object) -> str | None:
    """The ``SERVER_NAME`` setting, checked: a host name or address with an optional port (``www.example.com``,
    ``example.com:8443``, ``[::1]``), or None when unset (``None`` or empty).

    Anything else is the operator's mistake, a ValueError naming the setting: ``https://www.example.com`` or
    ``example.com/blog`` would be pasted into every external URL as ``http://https://www.example.com/...``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not valid_host(value):
        raise ValueError(
            f"SERVER_NAME {value!r} is not a host name with an optional port (www.example.com, example.com:8443): "
            "no scheme, no path"
        )
    return value


def host_name(host: str) -> str:
    """The name of a ``Host`` value without its port, normalised for comparison: lower-case, without the one
    trailing dot of a fully qualified name (``example.com.`` is ``example.com``), an IP address in its canonical
    form (``[0:0::1]`` is ``[::1]``, the brackets kept)."""
    if host.startswith("["):
        inner = host[1:].partition("]")[0]
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            return f"[{inner.lower()}]"
    name = host.partition(":")[0].lower()
    return name[:-1] if name.endswith(".") else name


class TrustedHosts(NamedTuple):
    """``TRUSTED_HOSTS`` normalised (see ``trusted_hosts``): the names that match exactly (those of the ``.suffix``
    entries among them, since ``.example.com`` takes ``example.com`` too), and the ``.suffix`` entries."""

    names: frozenset[str]
    suffixes: tuple[str, ...]  # each with its leading dot: ".example.com"

    def trust(self, name: str) -> bool:
        """Whether the normalised host name ``name`` (see ``host_name``) is one of these: one set lookup, and one
        ``str.endswith`` over all the suffixes at once, since this runs on every request when the setting is on."""
        return name in self.names or name.endswith(self.suffixes)


def trusted_hosts(setting: str | Iterable[str]) -> TrustedHosts:
    """The ``TRUSTED_HOSTS`` setting normalised as ``host_name`` normalises a request's host, once per value of the
    setting (cached), so that an entry and a host written differently (``example.com.``, ``[0:0::1]``, upper case,
    a port) still match.

    One name given alone (from the environment, ``APP_TRUSTED_HOSTS=example.com`` is text) is one entry. Text with
    a comma is refused rather than split: a host name never holds one, and a list is JSON
    (``'["a.example", "b.example"]'``) like every other list setting. An entry that could never match, or would
    match anything, is a ValueError naming the setting: empty, ``.``, a wildcard (``*``, ``*.example.com``:
    ``.example.com`` is the way), an address with a leading dot (``.1``, ``.[::1]``: addresses have no subdomains),
    or anything but a host name or address. An IPv6 address may be given bare
    (``::1``) or in brackets; either way it is compared as an address."""
    global _last_trusted
    last = _last_trusted
    if last is not None and last[0] == setting:  # The same setting as last time (nearly always): no allocation.
        return last[1]
    try:
        key = (setting,) if isinstance(setting, str) else tuple(setting)
        hash(key)  # the cache's key: a list inside the list would fail there
    except TypeError as error:
        raise ValueError(f"TRUSTED_HOSTS {setting!r} is not a list of host names") from error
    hosts = _trusted_hosts(key)
    if isinstance(hosts, str):
        raise ValueError(hosts)  # A new exception each time: one re-raised would grow its traceback per request.
    # A copy of a list, compared by value next time: the setting may be changed in place (append) meanwhile.
    _last_trusted = (setting if isinstance(setting, str | tuple) else list(setting), hosts)
    return hosts


# The last setting seen and its normalised form, replaced whole (one assignment, safe across threads).
_last_trusted: tuple[object, TrustedHosts] | None = None


@functools.lru_cache(maxsize=16)
def _trusted_hosts(entries: tuple[object, ...]) -> TrustedHosts | str:
    """The entries normalised, or why they cannot be, as text: a bad setting is a 500 on every request until it
    is fixed, and ``lru_cache`` keeps no exception, so the refusal is cached as its message instead of being
    worked out again each time."""
    try:
        return _normalised_hosts(entries)
    except ValueError as error:
        return str(error)


def _normalised_hosts(entries: tuple[object, ...]) -> TrustedHosts:
    names: set[str] = set()
    suffixes: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"TRUSTED_HOSTS entry {entry!r} is not text; give host names (['example.com'])")
        if "," in entry:
            raise ValueError(
                f"TRUSTED_HOSTS {entry!r} has a comma: give a list (from the environment, JSON: "
                '\'["a.example", "b.example"]\'), not names separated by commas'
            )
        text = entry.strip()
        suffix = text.startswith(".")
        bare = text[1:] if suffix else text
        if bare.count(":") > 1 and not bare.startswith("["):  # a bare IPv6 address, which a port cannot follow
            bare = f"[{bare}]"
        name = host_name(bare) if bare and valid_host(bare) else ""
        if not name or "*" in text:
            raise ValueError(
                f"TRUSTED_HOSTS entry {entry!r} is not a host name or address ('example.com', '.example.com' for it "
                "and its subdomains, '[::1]'): it could never match, or would match anything"
            )
        names.add(name)  # A .suffix entry takes its own name too.
        if suffix:
            if name.startswith("[") or name.rpartition(".")[2].isdigit():
                # An address has no subdomains: ".1" would match 10.0.0.1 by its text. A name whose last label is a
                # number is an address or nothing (no top-level domain is numeric; URL parsers read it as IPv4).
                raise ValueError(
                    f"TRUSTED_HOSTS entry {entry!r}: a leading dot takes a name and its subdomains, and an address "
                    "has none; name the address itself ('127.0.0.1', '[::1]')"
                )
            suffixes.append("." + name)
    return TrustedHosts(frozenset(names), tuple(suffixes))


def host_is_trusted(host: str, trusted: str | Iterable[str]) -> bool:
    """Whether the ``TRUSTED_HOSTS`` setting ``trusted`` names ``host`` (a ``Host`` value; its port is ignored).

    An entry is a host name (``example.com``: that name only) or a name with a leading dot (``.example.com``:
    that name and every subdomain), compared without case or a trailing dot, IP addresses as addresses (see
    ``trusted_hosts``, which normalises the setting and refuses entries that could never match)."""
    return trusted_hosts(trusted).trust(host_name(host))


def decode_json(body: bytes) -> Any:
    """``body`` decoded as JSON; 400 when it is not (a nesting too deep for Python's parser included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise HTTPError(400, f"Malformed JSON body: {error}") from error


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
