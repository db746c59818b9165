"""Every parser that reads request bytes runs in time linear in its input (issue 9, item 1).

A pattern with two unbounded runs that can match the same characters (``[ \\t]*(...)?[ \\t]*``) backtracks
quadratically, or worse, when the input almost matches: 65,000 spaces in If-None-Match once held the loop and
the GIL for 44 seconds. So each parser below is fed pathological runs (spaces, tabs, commas, quotes,
backslashes, ``=``, ``;`` and mixes such as ``, `` or ``"\\`` repeated) at 4 KiB and at 64 KiB, and the cost
must grow at most linearly: about 16 times for 16 times the input. A quadratic parser grows about 256 times.

The machine running this may be a busy shared one, so costs are the CPU time of this thread (``time.thread_time``:
the time other processes take the core from us is not counted, which wall-clock time counted, and a 30 ms call
measured twice its cost on a loaded machine while a 0.4 ms one ran between preemptions), each cost is the minimum
of several timed batches, the allowed growth is a generous multiple of 16 (:data:`MAX_GROWTH`), a 64 KiB cost too
small to measure reliably is not compared at all, and the 64 KiB case must also finish within an absolute bound
(:data:`MAX_SECONDS`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from framework import App, FileResponse
from framework.cookies import parse_cookie_header
from framework.datastructures import EnvironHeaders
from framework.errors import HTTPError
from framework.forms import parse_multipart, parse_urlencoded
from framework.request import Request, _content_type_option, prefers_json
from framework.routing import Router
from framework.sessions import Signer
from server.http import NEED_DATA, EndOfMessage, Limits, ProtocolError, RequestParser
from server.proxy import TrustedProxies, parse_forwarded_element
from server.static import validators
from server.static.media import choose_coding
from server.static.mount import StaticMount
from server.static.paths import split_request_path
from server.static.reply import content_disposition, serve_path
from server.static.wsgi import StaticFiles

SMALL, LARGE = 4 * 1024, 64 * 1024
# Linear growth is 16x; quadratic is 256x. Three times the linear figure absorbs the noise of a shared machine.
MAX_GROWTH = 48.0
MAX_SECONDS = 0.5  # for one call on the 64 KiB input
# Below this a 64 KiB cost is mostly interpreter overhead and timer noise, and no quadratic parser is this fast
# (64 KiB squared is two billion steps), so the growth is not compared.
MEASURABLE = 0.002
REPEATS = 5
clock = time.thread_time  # CPU time of this thread (nanosecond resolution on Linux): immune to other processes
BATCH_SECONDS = 0.002  # each timed batch runs the call often enough to last about this long


# -- the inputs ----------------------------------------------------------------------------------------------

# name -> (unit repeated to the size, tail). The tail is what makes a backtracking pattern fail only at the
# very end, after it has tried every way to split the run; "\x01" is a control character, "x" a plain one.
PATHOLOGICAL = {
    "spaces": (" ", "x"),
    "spaces-control": (" ", "\x01"),
    "tabs": ("\t", "x"),
    "commas": (",", "x"),
    "quotes": ('"', "x"),
    "backslashes": ("\\", "x"),
    "equals": ("=", "x"),
    "semicolons": (";", "x"),
    "comma-space": (", ", "x"),
    "quote-backslash": ('"\\', "x"),
    "weak-prefix": ("W/", "x"),
    "quoted-tags": ('"a", ', 'W/"'),
    "parameters": ("; a=", '"'),
    "percent": ("%", "x"),
    "ampersand-equals": ("&=", "x"),
    "slashes": ("/", "x"),
}


def pathological(name: str, size: int) -> str:
    """The input ``name`` about ``size`` characters long (latin-1 text, as header values arrive)."""
    unit, tail = PATHOLOGICAL[name]
    return unit * ((size - len(tail)) // len(unit)) + tail


# -- measuring -----------------------------------------------------------------------------------------------


def cost(call: Callable[[str], object], text: str) -> float:
    """Seconds per call of ``call(text)``: the minimum over several batches, each long enough to time."""
    started = clock()
    call(text)
    once = clock() - started
    count = max(1, min(10_000, int(BATCH_SECONDS / max(once, 1e-7))))
    best = once
    for _ in range(REPEATS):
        started = clock()
        for _ in range(count):
            call(text)
        best = min(best, (clock() - started) / count)
    return best


def assert_linear(call: Callable[[str], object], name: str) -> None:
    large_text = pathological(name, LARGE)
    started = clock()
    call(large_text)
    once = clock() - started
    # A quadratic parser can take minutes here: fail on the first call rather than timing it again.
    assert once < MAX_SECONDS * 4, f"{once:.3f} s for {LARGE} bytes of {name}"
    small = cost(call, pathological(name, SMALL))
    large = cost(call, large_text)
    assert large < MAX_SECONDS, f"{large:.3f} s for {LARGE} bytes of {name}"
    if large >= MEASURABLE:
        growth = large / small
        assert growth < MAX_GROWTH, f"{growth:.0f}x the time for 16x the input ({small:.6f} s -> {large:.6f} s)"


# -- the parsers ---------------------------------------------------------------------------------------------

# Limits wide enough that the 64 KiB input reaches the code under test instead of a size check.
WIDE = Limits(max_header_bytes=1 << 20, max_target_length=1 << 20, max_chunk_line=1 << 20)
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def drain(parser: RequestParser) -> bool:
    """Take every event the parser can give; False once the request is over (refused or complete)."""
    try:
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, EndOfMessage):
                return False
    except ProtocolError:
        return False  # as good an answer as a request; the connection would close now
    return True


def parse_request(data: bytes, piece: int = 0, limits: Limits = WIDE) -> None:
    parser = RequestParser(limits)
    if not piece:
        parser.feed(data)
        drain(parser)
        return
    for start in range(0, len(data), piece):  # trickled in, as a slow client sends it
        parser.feed(data[start : start + piece])
        if not drain(parser):
            return


def latin1(text: str) -> bytes:
    return text.encode("latin-1")


HTTP_PARSERS: dict[str, Callable[[str], object]] = {
    "http-field-value": lambda p: parse_request(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + latin1(p) + b"\r\n\r\n"),
    "http-field-value-trickled": lambda p: parse_request(
        b"GET / HTTP/1.1\r\nHost: x\r\nX: " + latin1(p) + b"\r\n\r\n", piece=64
    ),
    "http-connection": lambda p: parse_request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: " + latin1(p) + b"\r\n\r\n"),
    "http-content-length": lambda p: parse_request(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + latin1(p) + b"\r\n\r\n"
    ),
    "http-transfer-encoding": lambda p: parse_request(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + latin1(p) + b"\r\n\r\n"
    ),
    "http-host": lambda p: parse_request(b"GET / HTTP/1.1\r\nHost: " + latin1(p) + b"\r\n\r\n"),
    "http-target": lambda p: parse_request(
        b"GET /" + quote(p, safe="/%=&;,").encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "http-chunk-extension": lambda p: parse_request(CHUNKED_HEAD + b"1;" + latin1(p) + b"\r\nx\r\n0\r\n\r\n"),
    "http-chunk-size": lambda p: parse_request(CHUNKED_HEAD + latin1(p) + b"\r\nx\r\n0\r\n\r\n"),
    "http-chunk-extension-trickled": lambda p: parse_request(CHUNKED_HEAD + b"1;" + latin1(p) + b"\r\n", piece=16),
    "http-chunk-extension-trickled-default-limits": lambda p: parse_request(
        CHUNKED_HEAD + b"1;" + latin1(p) + b"\r\n", piece=16, limits=Limits()
    ),
    "http-trailer-trickled-default-limits": lambda p: parse_request(
        CHUNKED_HEAD + b"0\r\nX: " + latin1(p) + b"\r\n\r\n", piece=16, limits=Limits()
    ),
    "http-trailer": lambda p: parse_request(CHUNKED_HEAD + b"0\r\nX: " + latin1(p) + b"\r\n\r\n"),
}

ETAG = '"1f-5f5e1000-2a"'
MTIME = 1_700_000_000.0


def precondition(header: str) -> Callable[[str], object]:
    return lambda p: validators.check_preconditions({header: p}, ETAG, MTIME)


VALIDATOR_PARSERS: dict[str, Callable[[str], object]] = {
    "etag-list-weak": lambda p: validators.etag_matches(p, ETAG, weak=True),
    "etag-list-strong": lambda p: validators.etag_matches(p, ETAG, weak=False),
    "etag-list-after-tag": lambda p: validators.etag_matches('"a", ' + p, ETAG, weak=True),
    "if-none-match": precondition("if-none-match"),
    "if-match": precondition("if-match"),
    "if-modified-since": precondition("if-modified-since"),
    "if-unmodified-since": precondition("if-unmodified-since"),
    "range": lambda p: validators.parse_range("bytes=" + p, 1000),
    "range-unit": lambda p: validators.parse_range(p, 1000),
    "if-range": lambda p: validators.if_range_allows(p, ETAG, MTIME),
    "if-range-weak": lambda p: validators.if_range_allows("W/" + p, ETAG, MTIME),
    "if-range-tag": lambda p: validators.if_range_allows('"' + p, ETAG, MTIME),
    "http-date": validators.parse_http_date,
    "http-date-prefixed": lambda p: validators.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT" + p),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "file.txt").write_bytes(b"0123456789" * 100)
    (root / "file.txt.gz").write_bytes(b"compressed")
    return root


def static_parsers(root: Path) -> dict[str, Callable[[str], object]]:
    mount = StaticMount("/s", root)
    files = StaticFiles(root)
    file_path = root / "file.txt"

    # Every header the static rules read, all at once, as one client could send them.
    def headers(p: str) -> dict[str, str]:
        return {name: p for name in ("if-none-match", "if-match", "if-range", "range", "accept-encoding")}

    def serve(path: str, request_headers: dict[str, str]) -> None:
        serve_path(mount, "GET", path, request_headers).close()

    def wsgi_environ(p: str) -> dict[str, object]:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/file.txt", "wsgi.input": io.BytesIO()}
        environ.update({f"HTTP_{name.upper().replace('-', '_')}": p for name in headers(p)})
        return environ

    def through_wsgi(p: str) -> None:
        body = files(wsgi_environ(p), lambda status, headers, exc_info=None: None)
        getattr(body, "close", lambda: None)()

    def file_response(p: str) -> None:
        environ = wsgi_environ(p)
        response = FileResponse(file_path, Request(environ, FRAMEWORK_APP))
        response.reply.close()

    return {
        "static-path": lambda p: split_request_path("/" + quote(p, safe="/%")),
        "static-path-raw": lambda p: split_request_path("/" + p),
        "static-serve-path": lambda p: serve("/s/" + quote(p, safe="/%"), {}),
        "static-serve-headers": lambda p: serve("/s/file.txt", headers(p)),
        "static-accept-encoding": lambda p: choose_coding(p, ["br", "gzip"]),
        "static-accept-encoding-q": lambda p: choose_coding("gzip;q=" + p, ["br", "gzip"]),
        "static-wsgi-headers": through_wsgi,
        "static-content-disposition": content_disposition,
        "framework-file-response": file_response,
    }


def proxy_apply(name: str) -> Callable[[str], object]:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    return lambda p: proxies.apply({"REMOTE_ADDR": "127.0.0.1", name: p})


PROXY_PARSERS: dict[str, Callable[[str], object]] = {
    "forwarded": proxy_apply("HTTP_FORWARDED"),
    "forwarded-for": lambda p: proxy_apply("HTTP_FORWARDED")("for=" + p),
    "forwarded-element": parse_forwarded_element,
    "x-forwarded-for": proxy_apply("HTTP_X_FORWARDED_FOR"),
    "x-forwarded-proto": proxy_apply("HTTP_X_FORWARDED_PROTO"),
}


def make_app() -> App:
    app = App(__name__, secret_key="linear", csrf=True)

    @app.route("/", methods=["GET", "POST"])
    def everything(request: Request) -> dict[str, object]:
        return {
            "query": len(request.query),
            "cookies": len(request.cookies),
            "form": len(request.form),
            "session": len(request.session),
            "json": request.accepts_json,
            "type": request.content_type,
        }

    @app.route("/files/<path:name>/edit")
    @app.route("/files/<path:name>")
    def files(request: Request, name: str) -> str:
        return name

    @app.route("/users/<int:user_id>/<name>.json")
    def user(request: Request, user_id: int, name: str) -> str:
        return name

    return app


FRAMEWORK_APP = make_app()


def wsgi_call(app: App, **environ: object) -> None:
    full = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x", "SERVER_PORT": "80"}
    full.update(environ)
    full.setdefault("wsgi.input", io.BytesIO(b""))
    body = app(full, lambda status, headers, exc_info=None: None)
    getattr(body, "close", lambda: None)()


def request_of(**environ: object) -> Request:
    return Request({"REQUEST_METHOD": "GET", "PATH_INFO": "/", **environ}, FRAMEWORK_APP)


def multipart(header_line: str) -> Callable[[str], object]:
    """A multipart body whose first part has ``header_line`` (with ``{}`` replaced by the input)."""

    def parse(p: str) -> None:
        body = b"--B\r\n" + header_line.format(p).encode("latin-1") + b"\r\n\r\nvalue\r\n--B--\r\n"
        try:
            parse_multipart(io.BytesIO(body).read, "B", len(body), spool_size=1024, max_field_size=1024, max_parts=10)
        except HTTPError:
            pass

    return parse


def urlencoded(p: str) -> None:
    try:
        parse_urlencoded(p.encode("latin-1"), max_fields=1 << 20)
    except HTTPError:
        pass


ROUTER = FRAMEWORK_APP.router


def route(path: str) -> None:
    try:
        ROUTER.match("GET", path)
    except HTTPError:
        pass


def router_with_adjacent_parameters() -> Router:
    router = Router()
    router.add("/a/<x>-<y>.json", lambda request: None, "adjacent", ["GET"])
    router.add("/b/<path:x>/to/<path:y>/end", lambda request: None, "two-paths", ["GET"])
    return router


SIGNER = Signer("linear")

FRAMEWORK_PARSERS: dict[str, Callable[[str], object]] = {
    "cookie-header": parse_cookie_header,
    "cookie-session": lambda p: FRAMEWORK_APP.sessions.load(request_of(HTTP_COOKIE="session=" + p)),
    "session-token": SIGNER.unsign,
    "accept": lambda p: prefers_json(f"application/json;{p}, {p}"),
    "accept-q": lambda p: prefers_json("application/json;q=" + p),
    "query-string": lambda p: request_of(QUERY_STRING=p).query,
    "urlencoded-form": urlencoded,
    "content-type": lambda p: request_of(CONTENT_TYPE=p).content_type,
    "content-type-boundary": lambda p: _content_type_option("multipart/form-data; " + p, "boundary"),
    "multipart-disposition": multipart('Content-Disposition: form-data; name="a"; filename="{}"'),
    "multipart-disposition-name": multipart("Content-Disposition: form-data; name={}"),
    "multipart-content-type": multipart('Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; {}'),
    "environ-headers": lambda p: dict(EnvironHeaders({"HTTP_" + "X_" * 8 + "Y": p, "CONTENT_TYPE": p})),
    "route": lambda p: route("/" + p),
    "route-path-converter": lambda p: route("/files/" + p),
    "route-segment": lambda p: route("/users/1/" + p.replace("/", "-")),
    "route-adjacent-parameters": lambda p: _match(router_with_adjacent_parameters(), "/a/" + p.replace("/", "-")),
    "route-two-paths": lambda p: _match(ROUTER_TWO_PATHS, "/b/" + p.replace("/", "/to/")),
    "app-headers": lambda p: wsgi_call(FRAMEWORK_APP, HTTP_ACCEPT=p, HTTP_COOKIE=p, QUERY_STRING=p, CONTENT_TYPE=p),
    "app-csrf-post": lambda p: wsgi_call(
        FRAMEWORK_APP, REQUEST_METHOD="POST", HTTP_X_CSRF_TOKEN=p, HTTP_COOKIE="session=" + p, HTTP_ACCEPT=p
    ),
    "app-form-post": lambda p: wsgi_call(
        FRAMEWORK_APP,
        REQUEST_METHOD="POST",
        CONTENT_TYPE="application/x-www-form-urlencoded",
        CONTENT_LENGTH=str(len(p)),
        **{"wsgi.input": io.BytesIO(p.encode("latin-1"))},
    ),
}
ROUTER_TWO_PATHS = router_with_adjacent_parameters()


def _match(router: Router, path: str) -> None:
    try:
        router.match("GET", path)
    except HTTPError:
        pass


def cases(parsers: dict[str, Callable[[str], object]]) -> list[pytest.param]:
    return [
        pytest.param(
            name,
            payload,
            id=f"{name}-{payload}",
        )
        for name in parsers
        for payload in PATHOLOGICAL
    ]


@pytest.mark.parametrize(("parser", "payload"), cases(HTTP_PARSERS))
def test_http_parser_is_linear(parser: str, payload: str) -> None:
    assert_linear(HTTP_PARSERS[parser], payload)


@pytest.mark.parametrize(("parser", "payload"), cases(VALIDATOR_PARSERS))
def test_static_validators_are_linear(parser: str, payload: str) -> None:
    assert_linear(VALIDATOR_PARSERS[parser], payload)


STATIC_NAMES = dict.fromkeys(static_parsers(Path(__file__).parent))  # the names only; the site is a fixture


@pytest.mark.parametrize(("parser", "payload"), cases(STATIC_NAMES))
def test_static_files_are_linear(parser: str, payload: str, site: Path) -> None:
    assert_linear(static_parsers(site)[parser], payload)


@pytest.mark.parametrize(("parser", "payload"), cases(PROXY_PARSERS))
def test_proxy_headers_are_linear(parser: str, payload: str) -> None:
    assert_linear(PROXY_PARSERS[parser], payload)


@pytest.mark.parametrize(("parser", "payload"), cases(FRAMEWORK_PARSERS))
def test_framework_parsers_are_linear(parser: str, payload: str) -> None:
    assert_linear(FRAMEWORK_PARSERS[parser], payload)
