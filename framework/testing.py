"""Testing helpers: WSGI environs built from a few arguments, and a test client that calls the app in process.

Why a client of our own, when ``webtest`` exists? Because a test of a web app should read like what a visitor
does (log in, submit a form, follow the redirect, see the flashed message) and most of the friction lies in what
a browser does silently: it keeps cookies (each with its own path, expiry and ``Secure`` flag), it sends the form's
CSRF token, it follows redirects. ``TestClient`` does those things the way Flask's test client does, so that a
test needs no server, no sockets and no token scraping::

    client = app.test_client()
    client.post("/login", data={"name": "ada", "password": "secret"})   # the CSRF token goes along by itself
    response = client.get("/account")
    assert response.status_code == 200 and "ada" in response.text

    with client.session_transaction() as session:   # or skip the login form altogether
        session["user_id"] = 42

Every request goes through ``environ_for``, which builds what a WSGI server would pass (PEP 3333), and then
through the app exactly as our server calls it: the body iterable is consumed and closed (``close()`` runs the
app's teardown hooks for streamed bodies), and nothing is shared with the app but the environ.

A few choices worth knowing (each is explained where it is made):

- paths are the paths a browser would ask for. ``TestClient(app, script_name="/blog")`` calls the app as if a
  server mounted it at ``/blog``: ``client.get("/blog/posts")`` reaches its ``/posts`` view, the same path its
  ``url_for`` and its redirects produce; a path outside ``/blog`` is an error, since nothing else is there.
  To test apps mounted with ``App.mount``, give the client the outer app: each request reaches the app that
  owns its path, and the session and CSRF token are those of that app (``session_<prefix>``, ``Path=/<prefix>``);
- the session is read and written through ``app.sessions`` (its ``load`` and ``save``), so the client agrees
  with the app about cookie names, paths, expiry and key rotation, and works with a replaced session store;
- the CSRF token travels in the ``X-CSRF-Token`` header, never as an extra form field, so a view sees exactly
  the form the test sent (the app accepts either);
- redirects are followed as browsers follow them (the Fetch standard), not as Werkzeug does: 303 turns any
  method but HEAD into GET, 301 and 302 turn only POST into GET, and 307 and 308 keep method and body.
"""

from __future__ import annotations

import copy
import io
import json as jsonlib
import mimetypes
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from types import TracebackType
from typing import Any, NamedTuple, TypedDict, Unpack
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlencode, urljoin, urlsplit

from .app import App
from .cookies import format_set_cookie
from .csrf import SAFE_METHODS
from .datastructures import Headers, MultiDict
from .errors import HTTPError
from .middleware import shift_path, to_wsgi_string
from .request import Request
from .response import Response, to_json
from .routing import PATH_SAFE
from .sessions import Session

__all__ = [
    "Cookie",
    "CookieJar",
    "EnvironOptions",
    "RedirectError",
    "RequestOptions",
    "TestClient",
    "TestResponse",
    "environ_for",
]

# Printable ASCII but the space: what a URL may carry as it is. Anything else (spaces, controls, non-ASCII, which
# is sent as UTF-8) is percent-encoded, as a browser encodes what is typed into its address bar; "%" is kept, so
# a path that is already encoded stays as it is.
_URL_SAFE = "".join(chr(code) for code in range(33, 127))
_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_BODY_HEADERS = frozenset({"content-type", "content-length"})  # Dropped with the body when a redirect makes a GET.

Headerish = Mapping[str, str] | Iterable[tuple[str, str]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(
    path: str = "/",
    method: str = "GET",
    *,
    body: bytes = b"",
    headers: Headerish | None = None,
    query: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    script_name: str = "",
    host: str | None = None,
    scheme: str | None = None,
    remote_addr: str = "127.0.0.1",
    encoded: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) for one request.

    ``path`` may carry a query string (``/search?q=x``) and is given decoded, as text (``/café``); with
    ``encoded=True`` it is given as it appears in a URL instead (``/caf%C3%A9``: escapes are decoded into the
    path's bytes, as a server decodes them). An absolute URL (``https://example.com/x``) also sets ``host`` and
    ``scheme`` unless they are given; otherwise they are ``localhost`` and ``http``. ``query`` is merged into the
    query string (a list value repeats the name); non-ASCII characters in the query string are percent-encoded
    as UTF-8. ``headers`` (a mapping or pairs; a repeated name is joined with commas) become ``HTTP_*`` keys
    (``Content-Type`` and ``Content-Length`` their own); ``extra`` is merged last.
    """
    target = path.partition("#")[0]
    if _ABSOLUTE_URL.match(target):
        parts = urlsplit(target)
        host = host or parts.netloc or None
        scheme = scheme or parts.scheme.lower()
        path_part, query_string = parts.path, parts.query
    else:
        # Not urlsplit: it would read "//evil.example/x" as a host, where a server sees a path.
        path_part, _, query_string = target.partition("?")
    host = host or "localhost"
    scheme = scheme or "http"
    if encoded:
        path_info = unquote_to_bytes(path_part or "/").decode("latin-1")
    else:
        path_info = to_wsgi_string(path_part or "/")
    query_string = quote(query_string, safe=_URL_SAFE + " ")
    if query:
        extra_query = urlencode(_pairs(query), doseq=True)
        query_string = f"{query_string}&{extra_query}" if query_string else extra_query
    port = "443" if scheme == "https" else "80"
    name, sep, given_port = host.rpartition(":")
    if not sep or "]" in given_port:  # No port: "localhost", "[::1]".
        name, given_port = host, ""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.upper(),
        "SCRIPT_NAME": to_wsgi_string(script_name.rstrip("/")),
        "PATH_INFO": path_info,
        "QUERY_STRING": query_string,
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
    for header, value in _pairs(headers or ()):
        key = header.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = f"HTTP_{key}"
        if key in environ and key.startswith("HTTP_") and key != "HTTP_HOST":
            # RFC 9110 5.3: repeated fields are one comma-separated list; cookies are joined with "; ".
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    environ.update(extra or {})
    return environ


def _pairs(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """(name, value) pairs from a mapping (a ``MultiDict`` with all its values) or from pairs."""
    if isinstance(items, MultiDict):
        return list(items.items_all())
    if isinstance(items, Mapping):
        return list(items.items())
    return list(items)


# --- cookies ---------------------------------------------------------------------------------------------------


class _URL(NamedTuple):
    """Where a request goes: ``path`` and ``query`` percent-encoded (ASCII), ``host`` with any port."""

    scheme: str
    host: str
    path: str
    query: str

    @property
    def hostname(self) -> str:
        """The host without port or IPv6 brackets, lower-case: what cookies are matched against."""
        return urlsplit(f"//{self.host}").hostname or self.host.lower()

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}" + (f"?{self.query}" if self.query else "")


@dataclass
class Cookie:
    """One cookie as the client stores it (RFC 6265 section 5.3): ``value`` is what the app will read from
    ``request.cookies`` (percent-decoding undone, as the framework does), ``raw_value`` what travels.

    ``expires`` is a Unix time (``None`` for a cookie that lasts as long as the client); ``host_only`` is true
    for a cookie set without ``Domain``, which goes back to exactly the host that set it.
    """

    name: str
    raw_value: str
    domain: str
    path: str
    expires: float | None = None
    secure: bool = False
    http_only: bool = False
    same_site: str | None = None
    host_only: bool = True

    @property
    def value(self) -> str:
        value = self.raw_value
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return unquote(value, errors="replace") if "%" in value else value

    def expired(self, now: float | None = None) -> bool:
        """Whether the cookie's time is up (a cookie deleted with ``Max-Age=0`` is expired at once)."""
        return self.expires is not None and self.expires <= (time.time() if now is None else now)

    def matches(self, url: _URL) -> bool:
        """Whether a request to ``url`` carries this cookie: domain, path and ``Secure`` (RFC 6265 5.4)."""
        host = url.hostname
        if self.host_only:
            if host != self.domain:
                return False
        elif not _domain_match(host, self.domain):
            return False
        return _path_match(url.path, self.path) and (url.secure or not self.secure)


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _domain_match(host: str, domain: str) -> bool:
    """RFC 6265 5.1.3: the host is the domain, or a name under it (an IP address only matches itself)."""
    return host == domain or (host.endswith("." + domain) and not _is_ip(host))


def _path_match(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 5.1.4: ``/blog`` matches ``/blog``, ``/blog/`` and ``/blog/x``, not ``/blogger``."""
    if request_path == cookie_path:
        return True
    return request_path.startswith(cookie_path) and (cookie_path.endswith("/") or request_path[len(cookie_path)] == "/")


def _default_path(request_path: str) -> str:
    """RFC 6265 5.1.4: the path of a cookie set without ``Path``: the request's path up to its last slash."""
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rfind("/")]


def _parse_set_cookie(header: str, url: _URL, now: float | None = None) -> Cookie | None:
    """The cookie a ``Set-Cookie`` header from ``url`` describes (RFC 6265 5.2), with the defaults filled in;
    ``None`` when it has no name. Unknown or malformed attributes are ignored, as browsers ignore them."""
    now = time.time() if now is None else now
    pair, *attributes = header.split(";")
    name, sep, raw_value = pair.partition("=")
    name, raw_value = name.strip(), raw_value.strip()
    if not sep or not name:
        return None
    cookie = Cookie(name, raw_value, url.hostname, _default_path(url.path))
    max_age: int | None = None
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "max-age" and re.fullmatch(r"-?[0-9]+", value):
            max_age = int(value)
        elif key == "expires":
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                continue
            cookie.expires = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        elif key == "domain" and value.lstrip("."):
            cookie.domain, cookie.host_only = value.lstrip(".").lower(), False
        elif key == "path":
            cookie.path = value if value.startswith("/") else _default_path(url.path)
        elif key == "secure":
            cookie.secure = True
        elif key == "httponly":
            cookie.http_only = True
        elif key == "samesite":
            cookie.same_site = value
    if max_age is not None:  # Max-Age wins over Expires; zero or less means "delete it now".
        cookie.expires = now + max_age if max_age > 0 else float("-inf")
    return cookie


class CookieJar:
    """The client's cookies, kept as a browser keeps them (RFC 6265, with the ``Secure`` rules of its
    successor, 6265bis): one cookie per (domain, path, name), sent only to matching hosts and paths, ``Secure``
    ones only over https, deleted by ``Max-Age=0`` or a past ``Expires``, and dropped when they expire.

    Not modelled, because a test client talks to one site: public suffixes, ``SameSite`` (every request is
    same-site) and size limits.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._cookies: dict[tuple[str, str, str], Cookie] = {}
        self.clock = clock  # What "now" is for expiry: a test may pass a clock it moves by hand.

    def __iter__(self) -> Iterator[Cookie]:
        self._expire()
        return iter(list(self._cookies.values()))

    def __len__(self) -> int:
        self._expire()
        return len(self._cookies)

    def __repr__(self) -> str:
        return f"<CookieJar {[f'{c.name}={c.value} ({c.domain}{c.path})' for c in self]}>"

    def _expire(self) -> None:
        now = self.clock()
        for key in [key for key, cookie in self._cookies.items() if cookie.expired(now)]:
            del self._cookies[key]

    def update(self, headers: Iterable[str], url: _URL) -> list[Cookie]:
        """Take in the ``Set-Cookie`` headers of a response to ``url``; answer the cookies refused (as a browser
        refuses them: for another site, or ``Secure`` over plain http)."""
        refused = []
        for header in headers:
            cookie = _parse_set_cookie(header, url, self.clock())
            if cookie is None:
                continue
            if self._acceptable(cookie, url):
                self.store(cookie)
            else:
                refused.append(cookie)
        return refused

    def _acceptable(self, cookie: Cookie, url: _URL) -> bool:
        if not cookie.host_only and not _domain_match(url.hostname, cookie.domain):
            return False  # A site may not set cookies for another one.
        if cookie.secure and not url.secure:
            return False  # 6265bis 5.7: only a secure origin may set a Secure cookie.
        if cookie.name.startswith("__Secure-") and not cookie.secure:
            return False
        if cookie.name.startswith("__Host-") and not (cookie.secure and cookie.host_only and cookie.path == "/"):
            return False
        if not url.secure:
            # 6265bis 5.7: a plain-http response may not shadow or overwrite a Secure cookie of the same name.
            for other in self._cookies.values():
                if (
                    other.secure
                    and other.name == cookie.name
                    and (_domain_match(cookie.domain, other.domain) or _domain_match(other.domain, cookie.domain))
                    and _path_match(cookie.path, other.path)
                ):
                    return False
        return True

    def store(self, cookie: Cookie) -> None:
        """Keep ``cookie``, replacing the one with its domain, path and name; an expired one deletes it."""
        key = (cookie.domain, cookie.path, cookie.name)
        if cookie.expired(self.clock()):
            self._cookies.pop(key, None)
        else:
            self._cookies[key] = cookie  # A replaced cookie keeps its place: its creation time (RFC 6265 5.3).

    def header_for(self, url: _URL) -> str:
        """The ``Cookie`` header a request to ``url`` carries (``""`` for none): longest paths first, then
        oldest first (RFC 6265 5.4), so the app's "first of a name wins" reads the most specific one."""
        matching = [cookie for cookie in self if cookie.matches(url)]
        matching.sort(key=lambda cookie: -len(cookie.path))  # A stable sort keeps creation order within a length.
        return "; ".join(f"{cookie.name}={cookie.raw_value}" for cookie in matching)

    def find(self, name: str, *, domain: str | None = None, path: str | None = None) -> list[Cookie]:
        """The cookies called ``name``, longest path first; ``domain`` and ``path`` narrow them down."""
        found = [
            cookie
            for cookie in self
            if cookie.name == name
            and (domain is None or cookie.domain == domain.lower())
            and (path is None or cookie.path == path)
        ]
        return sorted(found, key=lambda cookie: -len(cookie.path))

    def delete(self, name: str, *, domain: str | None = None, path: str | None = None) -> None:
        """Forget the cookies ``find`` answers (all of that name when ``domain`` and ``path`` are not given)."""
        for cookie in self.find(name, domain=domain, path=path):
            del self._cookies[(cookie.domain, cookie.path, cookie.name)]

    def clear(self) -> None:
        self._cookies.clear()


# --- request bodies --------------------------------------------------------------------------------------------


class _Body(NamedTuple):
    data: bytes
    content_type: str | None
    fields: frozenset[str]  # Names of the form fields it carries (to see whether the test sent a CSRF token).


class _File(NamedTuple):
    content: bytes
    filename: str
    content_type: str


def _read_source(source: Any) -> bytes:
    """A file's content from bytes, a binary (or text) file object, or a path (``str`` or ``Path``, as Flask's
    client takes them)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            return file.read()
    read = getattr(source, "read", None)
    if read is None:
        raise TypeError(f"a file to upload must be bytes, a file object or a path, not {type(source).__name__}")
    content = read()
    return content.encode() if isinstance(content, str) else bytes(content)


def _as_file(value: Any) -> _File | None:
    """The upload ``value`` describes (``(source, filename[, content_type])`` or an open file), else ``None``."""
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise TypeError(f"a file is (content, filename[, content_type]), not a {len(value)}-tuple")
        source, filename, *rest = value
        filename = os.fspath(filename)
    elif hasattr(value, "read"):
        source, rest = value, []
        name = getattr(value, "name", None)
        filename = os.path.basename(name) if isinstance(name, str) else ""
    else:
        return None
    content_type = rest[0] if rest else mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return _File(_read_source(source), filename, content_type)


def _field_text(name: str, value: Any) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, int | float):  # bool too: "True", as Flask's client sends it
        return str(value)
    raise TypeError(f"form field {name!r}: a value must be text, bytes, a number or a file, not {type(value)!r}")


def _form_items(data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, str | bytes | _File]]:
    """The fields of a form given as a dict (a list value repeats the field) or as pairs."""
    items: list[tuple[str, str | bytes | _File]] = []
    for name, value in _pairs(data):
        for one in value if isinstance(value, list) else [value]:
            upload = _as_file(one)
            items.append((name, upload if upload is not None else _field_text(name, one)))
    return items


def _quote_disposition(text: str) -> str:
    """A name or file name in a ``Content-Disposition`` header, escaped as browsers do (WHATWG HTML)."""
    return '"' + text.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22") + '"'


def _multipart(items: list[tuple[str, str | bytes | _File]]) -> tuple[bytes, str]:
    """``multipart/form-data``: the body and its content type, with a boundary found in none of the parts."""
    contents = [value.content if isinstance(value, _File) else value for _, value in items]
    encoded = [content.encode() if isinstance(content, str) else content for content in contents]
    boundary = "ladder-" + secrets.token_hex(16)
    while any(boundary.encode() in content for content in encoded):
        boundary = "ladder-" + secrets.token_hex(16)
    chunks: list[bytes] = []
    for (name, value), content in zip(items, encoded, strict=True):
        head = f"--{boundary}\r\nContent-Disposition: form-data; name={_quote_disposition(name)}"
        if isinstance(value, _File):
            head += f"; filename={_quote_disposition(value.filename)}\r\nContent-Type: {value.content_type}"
        chunks += [head.encode(), b"\r\n\r\n", content, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _encode_body(data: Any, json: Any, content_type: str | None) -> _Body:
    """The request body for ``data=`` (a form as a dict or pairs; or raw: ``bytes``, ``str``, a file object) or
    ``json=``."""
    if data is not None and json is not None:
        raise TypeError("pass data= or json=, not both")
    if json is not None:
        return _Body(to_json(json), content_type or "application/json", frozenset())
    if data is None:
        return _Body(b"", content_type, frozenset())
    if isinstance(data, str | bytes | bytearray | memoryview) or hasattr(data, "read"):
        raw = _read_source(data) if hasattr(data, "read") else data.encode() if isinstance(data, str) else bytes(data)
        fields: frozenset[str] = frozenset()
        if content_type and content_type.partition(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = frozenset(name for name, _ in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        return _Body(raw, content_type, fields)
    items = _form_items(data)
    names = frozenset(name for name, _ in items)
    wants_multipart = content_type is not None and content_type.lower().startswith("multipart/form-data")
    if wants_multipart or any(isinstance(value, _File) for _, value in items):
        body, multipart_type = _multipart(items)
        return _Body(body, multipart_type, names)
    return _Body(urlencode(items).encode(), content_type or "application/x-www-form-urlencoded", names)


# --- responses -------------------------------------------------------------------------------------------------


class RedirectError(RuntimeError):
    """A redirect the client will not follow: to another host, out of the client's ``script_name``, or one too
    many (more than ``TestClient.max_redirects`` in a row)."""


class TestResponse:
    """What the app answered, read in full: ``status_code``, ``status`` (``"404 Not Found"``), ``headers``
    (case-insensitive), ``data`` (bytes) and ``text``, ``json`` (``None`` unless the content type is JSON).

    ``request`` is the request as the client sent it (a ``framework.Request``, body readable again) and
    ``request_path`` its path; ``history`` holds the redirects followed on the way here, oldest first;
    ``cookies`` the cookies this response set, by name (a deleted one is there too, ``expired()``).
    """

    __test__ = False  # Not a test class, for pytest.

    def __init__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        data: bytes,
        request: Request,
        url: _URL,
        history: tuple[TestResponse, ...] = (),
        now: float | None = None,
    ) -> None:
        self.status = status
        self.status_code = int(status.split(None, 1)[0])
        self.headers = Headers(headers)
        self.data = data
        self.request = request
        self.request_path = url.path
        self.url = str(url)
        self.history = history
        self.cookies: dict[str, Cookie] = {}
        for header in self.headers.getall("Set-Cookie"):
            cookie = _parse_set_cookie(header, url, now)
            if cookie is not None:
                self.cookies[cookie.name] = cookie

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} for {self.request.method} {self.request_path}>"

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header as sent (``text/html; charset=utf-8``)."""
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        """The media type alone, lower-case (``text/html``); ``""`` without a ``Content-Type``."""
        return (self.content_type or "").partition(";")[0].strip().lower()

    @property
    def charset(self) -> str:
        """The ``charset`` of the content type, UTF-8 if it names none."""
        for parameter in (self.content_type or "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset" and value.strip().strip('"'):
                return value.strip().strip('"')
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with its charset (undecodable bytes replaced)."""
        try:
            return self.data.decode(self.charset, "replace")
        except LookupError:
            return self.data.decode("utf-8", "replace")

    def get_data(self, as_text: bool = False) -> bytes | str:
        """The body, as Flask's responses give it: bytes, or text with ``as_text=True``."""
        return self.text if as_text else self.data

    @property
    def is_json(self) -> bool:
        """Whether the content type is JSON (``application/json`` or ``application/*+json``)."""
        mimetype = self.mimetype
        return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))

    @property
    def json(self) -> Any:
        """The body parsed as JSON when the content type says JSON, else ``None`` (as Flask's ``get_json()``);
        a JSON content type with a malformed body raises ``ValueError``."""
        return self.get_json()

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        """The body as JSON: ``None`` if the content type is not JSON (unless ``force``), or if it does not parse
        and ``silent``."""
        if not (force or self.is_json):
            return None
        try:
            return jsonlib.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def location(self) -> str | None:
        """The ``Location`` header, as sent (often a path)."""
        return self.headers.get("Location")


# --- the client ------------------------------------------------------------------------------------------------


class EnvironOptions(TypedDict, total=False):
    """Per-request options of ``TestClient`` methods, passed on to ``environ_for``."""

    host: str
    scheme: str
    remote_addr: str
    extra: Mapping[str, Any]


class RequestOptions(EnvironOptions, total=False):
    """The keyword arguments of ``TestClient.get``, ``post`` and the others (see ``TestClient.open``)."""

    query: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
    data: Any
    json: Any
    headers: Headerish | None
    content_type: str | None
    follow_redirects: bool
    csrf: bool


# What Flask's test client calls some of them, for the error message.
_FLASK_NAMES = {"query_string": "query", "follow_redirect": "follow_redirects", "environ_base": "extra"}


def _check_environ_options(options: Mapping[str, Any]) -> None:
    """Refuse keyword arguments the client does not know: ignored, a typo (``follow_redirect=True``) or Flask's
    name for an option (``query_string=``) would make a test pass while testing something else."""
    unknown = sorted(set(options) - set(EnvironOptions.__annotations__))
    if unknown:
        hints = [f"{name} (use {_FLASK_NAMES[name]}=)" if name in _FLASK_NAMES else name for name in unknown]
        known = ", ".join(sorted(RequestOptions.__annotations__))
        raise TypeError(f"the test client has no option {', '.join(hints)}; its options are: {known}")


class _Run(NamedTuple):
    status: str
    headers: list[tuple[str, str]]
    data: bytes


def _run_wsgi(app: WSGIApp, environ: dict[str, Any]) -> _Run:
    """Call ``app`` as a server would (PEP 3333) and read its whole body; ``close()`` is always called.

    For HEAD the body is read only until its first chunk, which is thrown away, as our server does: a streamed
    app may call ``start_response`` only when its body starts.
    """
    status: str | None = None
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    def write(data: bytes) -> None:
        if status is None:
            raise AssertionError("write() before start_response()")
        chunks.append(bytes(data))

    def start_response(
        new_status: str,
        new_headers: list[tuple[str, str]],
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
    ) -> Callable[[bytes], None]:
        nonlocal status, headers
        if exc_info is not None:
            if any(chunks):  # The head is "sent" once the body has begun: too late to change it.
                raise exc_info[1].with_traceback(exc_info[2])
        elif status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        status, headers = new_status, list(new_headers)
        return write

    head = environ["REQUEST_METHOD"] == "HEAD"
    result = app(environ, start_response)
    try:
        for chunk in result:
            if not isinstance(chunk, bytes | bytearray):
                raise TypeError(f"the application's body yielded {type(chunk).__name__}; WSGI bodies are bytes")
            if chunk:
                chunks.append(bytes(chunk))
                if head:
                    break
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if status is None:
        raise AssertionError("the application returned without calling start_response()")
    return _Run(status, headers, b"" if head else b"".join(chunks))


class TestClient:
    """Makes requests to ``app`` in process, keeping cookies and sending the CSRF token like a browser's form.

    ``TestClient(app, script_name="/blog")`` calls the app as if mounted at ``/blog`` (paths then start with
    ``/blog``); ``host`` and ``scheme`` are those of every request unless one says otherwise (an absolute URL,
    or ``host=``/``scheme=``). ``max_redirects`` bounds ``follow_redirects``. Use it as is, as a pytest fixture
    (``return app.test_client()``), or in a ``with`` block, which closes nothing: there is nothing to close.
    """

    __test__ = False  # Not a test class, for pytest.

    def __init__(
        self,
        app: App,
        *,
        script_name: str = "",
        host: str = "localhost",
        scheme: str = "http",
        max_redirects: int = 10,
    ) -> None:
        if script_name and not script_name.startswith("/"):
            raise ValueError(f"script_name {script_name!r} must start with '/'")
        self.app = app
        self.script_name = script_name.rstrip("/")
        self.host = host
        self.scheme = scheme
        self.max_redirects = max_redirects
        self.cookie_jar = CookieJar()

    def __repr__(self) -> str:
        return f"<TestClient for {self.app!r}{f' at {self.script_name}' if self.script_name else ''}>"

    def __enter__(self) -> TestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    # --- requests --------------------------------------------------------------------------------------------

    def open(
        self,
        path: str = "/",
        method: str = "GET",
        *,
        query: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        data: Any = None,
        json: Any = None,
        headers: Headerish | None = None,
        content_type: str | None = None,
        follow_redirects: bool = False,
        csrf: bool = True,
        **environ_options: Unpack[EnvironOptions],
    ) -> TestResponse:
        """Send one request and answer the app's response (the last one, with ``follow_redirects``).

        ``path`` is a path (``/search?q=x``; non-ASCII and spaces are percent-encoded) or an absolute URL on
        this host. ``query`` is merged into its query string. The body is ``data`` (a dict or pairs: a form,
        multipart as soon as a value is a file ``(bytes_or_fileobj_or_path, filename[, content_type])``; bytes
        or text: sent as they are, typed by ``content_type``) or ``json`` (any JSON value, typed
        ``application/json``). ``headers`` is a mapping or pairs. ``csrf=False`` sends no CSRF token;
        ``environ_options`` are ``host``, ``scheme``, ``remote_addr`` and ``extra`` (environ keys).
        """
        _check_environ_options(environ_options)
        request_headers = _pairs(headers or ())
        given_type = content_type or next((v for k, v in request_headers if k.lower() == "content-type"), None)
        body = _encode_body(data, json, given_type)
        request_headers = [(k, v) for k, v in request_headers if k.lower() != "content-type"]
        if body.content_type is not None:
            request_headers.append(("Content-Type", body.content_type))
        url = self._url(path, query, environ_options)
        method = method.upper()
        response = self._send(url, method, body, request_headers, csrf, environ_options)
        history: list[TestResponse] = []
        while follow_redirects and response.status_code in REDIRECT_STATUSES and response.location is not None:
            if len(history) >= self.max_redirects:
                raise RedirectError(f"more than {self.max_redirects} redirects in a row, the last to {url}")
            history.append(response)
            url = self._redirect_target(url, response.location)
            # The Fetch standard: 303 makes a GET of anything but HEAD; 301 and 302 only of POST (as browsers
            # do, whatever RFC 9110 once hoped); 307 and 308 repeat the request as it was.
            status = response.status_code
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", _Body(b"", None, frozenset())
                request_headers = [(k, v) for k, v in request_headers if k.lower() not in _BODY_HEADERS]
            response = self._send(url, method, body, request_headers, csrf, environ_options, tuple(history))
        return response

    def get(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A GET request (see ``open`` for the options)."""
        return self.open(path, "GET", **options)

    def post(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A POST request (see ``open`` for the options)."""
        return self.open(path, "POST", **options)

    def put(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A PUT request (see ``open`` for the options)."""
        return self.open(path, "PUT", **options)

    def patch(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A PATCH request (see ``open`` for the options)."""
        return self.open(path, "PATCH", **options)

    def delete(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A DELETE request (see ``open`` for the options)."""
        return self.open(path, "DELETE", **options)

    def head(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """A HEAD request: the headers of a GET, no body (see ``open`` for the options)."""
        return self.open(path, "HEAD", **options)

    def options(self, path: str = "/", **options: Unpack[RequestOptions]) -> TestResponse:
        """An OPTIONS request (see ``open`` for the options)."""
        return self.open(path, "OPTIONS", **options)

    def _url(
        self,
        path: str,
        query: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
        options: EnvironOptions,
    ) -> _URL:
        """Where ``path`` goes, in URL form: relative paths are resolved against the client's root, and what a
        URL cannot carry is percent-encoded; the fragment is dropped (browsers keep it to themselves)."""
        scheme, host = options.get("scheme", self.scheme), options.get("host", self.host)
        target = path.partition("#")[0]
        if _ABSOLUTE_URL.match(target):
            parts = urlsplit(target)
            scheme, host = parts.scheme.lower(), parts.netloc or host
            url_path, query_string = parts.path or "/", parts.query
        elif target.startswith("/"):
            url_path, _, query_string = target.partition("?")
        else:  # A relative reference ("edit", "?page=2"): urljoin, as a browser resolves a link.
            parts = urlsplit(urljoin(f"{scheme}://{host}{quote(self.script_name)}/", target))
            url_path, query_string = parts.path, parts.query
        query_string = quote(query_string, safe=_URL_SAFE)
        if query:
            extra_query = urlencode(_pairs(query), doseq=True)
            query_string = f"{query_string}&{extra_query}" if query_string else extra_query
        return _URL(scheme, host, quote(url_path, safe=_URL_SAFE), query_string)

    def _redirect_target(self, current: _URL, location: str) -> _URL:
        """Where a redirect from ``current`` to ``location`` goes, if the client may follow it there."""
        url = self._url(urljoin(str(current), location), None, {})
        if url.hostname != current.hostname:
            raise RedirectError(f"not following a redirect to another host: {location!r} (from {current})")
        if self.script_name and self._under_script_name(url.path) is None:
            raise RedirectError(
                f"not following a redirect out of {self.script_name}, where the client mounts the app: {location!r}"
            )
        return url

    def _under_script_name(self, path: str) -> str | None:
        """The WSGI ``PATH_INFO`` of the URL path ``path`` below the client's ``script_name``, ``None`` when
        ``path`` is not below it (compared as the app's mount compares it: decoded, segment by segment)."""
        environ = {"SCRIPT_NAME": "", "PATH_INFO": unquote_to_bytes(path).decode("latin-1")}
        shifted = shift_path(environ, to_wsgi_string(self.script_name))
        return None if shifted is None else str(shifted["PATH_INFO"])

    def _environ(
        self, url: _URL, method: str, body: bytes, headers: list[tuple[str, str]], options: EnvironOptions
    ) -> dict[str, Any]:
        """The environ of a request to ``url``, split into ``SCRIPT_NAME`` and ``PATH_INFO`` at the client's
        ``script_name``."""
        path = url.path
        if self.script_name:
            shifted = self._under_script_name(path)
            if shifted is None:
                raise ValueError(
                    f"{path} is not under {self.script_name}, where the client mounts the app: "
                    f"ask for {self.script_name}{path}"
                )
            path = quote(shifted.encode("latin-1"), safe=PATH_SAFE)  # the router's rule for a path in a URL
        return environ_for(
            path + (f"?{url.query}" if url.query else ""),
            method,
            body=body,
            headers=headers,
            script_name=self.script_name,
            host=url.host,
            scheme=url.scheme,
            remote_addr=options.get("remote_addr", "127.0.0.1"),
            encoded=True,
            extra=options.get("extra"),
        )

    def _send(
        self,
        url: _URL,
        method: str,
        body: _Body,
        headers: list[tuple[str, str]],
        csrf: bool,
        options: EnvironOptions,
        history: tuple[TestResponse, ...] = (),
    ) -> TestResponse:
        """One request, with the jar's cookies and the CSRF token; the response's cookies go into the jar."""
        headers = list(headers)
        if csrf and method not in SAFE_METHODS:
            token = self._csrf_token(url, method, body, headers, options)
            if token is not None:
                headers.append(token)
        cookies = self.cookie_jar.header_for(url)
        if cookies:
            headers.append(("Cookie", cookies))
        environ = self._environ(url, method, body.data, headers, options)
        run = _run_wsgi(self.app, environ)
        self.cookie_jar.update(Headers(run.headers).getall("Set-Cookie"), url)
        # A copy the test can read the body from again (the app has consumed the original's input).
        request = Request({**environ, "wsgi.input": io.BytesIO(body.data)}, self.app)
        return TestResponse(run.status, run.headers, run.data, request, url, history, self.cookie_jar.clock())

    # --- sessions and CSRF -----------------------------------------------------------------------------------

    def _resolve(self, environ: dict[str, Any]) -> tuple[App, dict[str, Any]] | None:
        """The app that will handle ``environ`` (following ``App.mount`` as the app does) and the environ as it
        sees it, or ``None`` when the path belongs to a WSGI app that is not one of ours."""
        app, environ = self.app, dict(environ)
        while True:
            for prefix, mounted in app._mounts:
                shifted = shift_path(environ, prefix)
                if shifted is not None:
                    if not isinstance(mounted, App):
                        return None
                    app, environ = mounted, shifted
                    break
            else:
                return app, environ

    def _request_to(self, url: _URL, options: EnvironOptions) -> Request | None:
        """A GET of ``url`` with the jar's cookies, made out to the app that owns ``url`` (for its session and
        CSRF settings), or ``None`` when a WSGI app that is not one of ours owns it."""
        cookies = self.cookie_jar.header_for(url)
        environ = self._environ(url, "GET", b"", [("Cookie", cookies)] if cookies else [], options)
        resolved = self._resolve(environ)
        return None if resolved is None else Request(resolved[1], resolved[0])

    def _session_request(self, url: _URL, options: EnvironOptions) -> Request:
        request = self._request_to(url, options)
        if request is None:
            raise RuntimeError(f"{url.path} is served by a WSGI app that is not a framework App: it has no session")
        return request

    def _save_session(self, request: Request, url: _URL) -> None:
        """Write ``request.session`` into the jar as the app writes it into a response."""
        response = Response()
        request.app.sessions.save(request, response)
        refused = self.cookie_jar.update(response.headers.getall("Set-Cookie"), url)
        if refused:
            # Silently dropped, the session would seem to be ignored by the app: say why instead.
            cookie = refused[0]
            raise RuntimeError(
                f"the session cookie {cookie.name!r} (Domain={cookie.domain}, Secure={cookie.secure}) cannot be "
                f"kept for {url}, so the app would never see it; make the client's requests match it: "
                "TestClient(app, scheme='https') for a Secure cookie, host=... for its domain"
            )

    def _csrf_token(
        self, url: _URL, method: str, body: _Body, headers: list[tuple[str, str]], options: EnvironOptions
    ) -> tuple[str, str] | None:
        """The CSRF header to send to ``url``, creating the session's token if it has none yet; ``None`` when
        the app does not check one there or the test sent its own."""
        request = self._request_to(url, options)
        if request is None:
            return None
        app = request.app
        if not app.csrf_enabled:
            return None
        csrf = app.csrf
        if csrf.field_name in body.fields or any(name.lower() == csrf.header_name.lower() for name, _ in headers):
            return None
        try:
            rule, _ = app.router.match(method, request.path)
        except HTTPError:
            return None  # A 404, a 405 or a slash redirect: no view, so no check, so no token to create.
        if getattr(rule.view, "csrf_exempt", False):
            return None
        session = request.session
        token = session.get(csrf.session_key)
        if not isinstance(token, str) or not token:
            token = csrf.token(request)
            self._save_session(request, url)
        return csrf.header_name, token

    @property
    def session(self) -> dict[str, Any]:
        """A copy of the session of the app at the client's root, as it stands between requests: changing it
        changes nothing (use ``session_transaction`` for that)."""
        request = self._session_request(self._url(self.script_name + "/", None, {}), {})
        return copy.deepcopy(dict(request.session))

    @contextmanager
    def session_transaction(
        self, path: str | None = None, **environ_options: Unpack[EnvironOptions]
    ) -> Iterator[Session]:
        """The session, to read and change between requests; written back as the app's signed cookie when the
        ``with`` block ends (and not at all if it raises, or changed nothing). ``path`` chooses the app whose
        session it is, for apps mounted with ``App.mount`` (default: the client's root)::

            with client.session_transaction() as session:
                session["user_id"] = 42
        """
        _check_environ_options(environ_options)
        url = self._url(path if path is not None else self.script_name + "/", None, environ_options)
        request = self._session_request(url, environ_options)
        session = request.session
        before = to_json(dict(session))
        yield session
        if not session.modified:
            try:
                session.modified = to_json(dict(session)) != before  # A change inside a list or dict counts too.
            except (TypeError, ValueError):
                session.modified = True  # Let the session store name the value that JSON cannot hold.
        if session.modified:
            self._save_session(request, url)

    # --- cookies ---------------------------------------------------------------------------------------------

    def set_cookie(
        self,
        name: str,
        value: str = "",
        *,
        path: str = "/",
        domain: str | None = None,
        max_age: int | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Store a cookie as if the site had set it (for the client's host unless ``domain`` says otherwise).
        The value is encoded as the framework encodes cookies, so ``request.cookies[name] == value``."""
        header = format_set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )
        origin = _URL("https" if secure else self.scheme, domain or self.host, path, "")
        cookie = _parse_set_cookie(header, origin, self.cookie_jar.clock())
        if cookie is not None:
            self.cookie_jar.store(cookie)

    def get_cookie(self, name: str, *, domain: str | None = None, path: str | None = None) -> Cookie | None:
        """The stored cookie ``name`` (the one with the longest path if several), or ``None``; ``domain`` and
        ``path`` pick one exactly."""
        found = self.cookie_jar.find(name, domain=domain, path=path)
        return found[0] if found else None

    def delete_cookie(self, name: str, *, domain: str | None = None, path: str | None = None) -> None:
        """Forget the cookie ``name`` (every one of that name unless ``domain`` or ``path`` narrow it down)."""
        self.cookie_jar.delete(name, domain=domain, path=path)
