"""Request parsing (lazy, never a 500 on bad input) and Response building, through webtest."""

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App, Response, abort, redirect
from framework.cookies import format_set_cookie, parse_cookie_header
from framework.datastructures import Headers, MultiDict
from framework.request import prefers_json


@pytest.fixture
def app():
    return App(__name__, max_body_size=1000)


def echo_app() -> App:
    app = App(__name__, max_body_size=1000)

    @app.route("/echo", methods=["GET", "POST", "PUT"])
    def echo(request):
        return {
            "method": request.method,
            "path": request.path,
            "query": {key: request.query.getall(key) for key in request.query},
            "form": {key: request.form.getall(key) for key in request.form},
            "json": request.json,
            "agent": request.headers.get("user-agent"),
            "custom": request.headers.get("X-CUSTOM-header"),
            "cookies": request.cookies,
            "url": request.url,
            "scheme": request.scheme,
            "host": request.host,
            "remote_addr": request.remote_addr,
        }

    @app.route("/body", methods=["POST"])
    def body(request):
        return request.body

    @app.route("/stream", methods=["POST"])
    def stream(request):
        total = 0
        while chunk := request.stream.read(7):
            total += len(chunk)
        return {"total": total}

    @app.route("/untouched", methods=["POST"])
    def untouched(request):
        return "did not read the body"

    return app


@pytest.fixture
def client():
    return TestApp(echo_app())


def test_query_is_a_multidict(client):
    data = client.get("/echo?a=1&b=2&a=3&empty=").json
    assert data["query"] == {"a": ["1", "3"], "b": ["2"], "empty": [""]}


def test_headers_are_case_insensitive(client):
    data = client.get("/echo", headers={"User-Agent": "tests", "X-Custom-Header": "yes"}).json
    assert data["agent"] == "tests"
    assert data["custom"] == "yes"


def test_url_parts(client):
    environ = {"REMOTE_ADDR": "10.1.2.3", "HTTP_HOST": "example.test:8080"}
    data = client.get("/echo?x=1&y=%20", extra_environ=environ).json
    assert data["url"] == "http://example.test:8080/echo?x=1&y=%20"
    assert data["scheme"] == "http" and data["host"] == "example.test:8080"
    assert data["remote_addr"] == "10.1.2.3"
    data = client.get("/echo", extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "example.test"}).json
    assert data["url"] == "https://example.test/echo" and data["scheme"] == "https"


@pytest.mark.parametrize(
    ("scheme", "port", "host"),
    [("http", "80", "server.test"), ("https", "443", "server.test"), ("http", "8000", "server.test:8000")],
)
def test_host_without_a_host_header_comes_from_the_server(scheme, port, host):
    # HTTP/1.0 clients may send no Host: the server's name and port stand in, without a default port.
    environ = {"PATH_INFO": "/echo", "SERVER_NAME": "server.test", "SERVER_PORT": port, "wsgi.url_scheme": scheme}
    status, body = call(echo_app(), environ)
    assert status.startswith("200") and json.loads(body)["host"] == host


def test_form_urlencoded(client):
    data = client.post("/echo", {"name": "Zoë", "tag": "x"}).json
    assert data["form"] == {"name": ["Zoë"], "tag": ["x"]}
    assert data["json"] is None


def test_form_with_raw_utf8_is_read_like_percent_encoded(client):
    # What `curl -d name=Zoë` sends: the UTF-8 bytes, not %C3%AB.
    data = client.post("/echo", "name=Zoë&x=%C3%AB".encode(), content_type="application/x-www-form-urlencoded").json
    assert data["form"] == {"name": ["Zoë"], "x": ["ë"]}


def test_lone_surrogates_from_json_do_not_break_responses():
    # JSON may carry "\ud800", which UTF-8 cannot encode: echoing it must not be a 500.
    app = App(__name__, secret_key="surrogates", csrf=False)
    app.add_route("/json", lambda request: request.json, methods=["POST"], name="as_json")
    app.add_route("/html", lambda request: request.json["name"], methods=["POST"], name="as_html")
    app.add_route("/stream", lambda request: iter([request.json["name"]]), methods=["POST"], name="as_stream")

    @app.post("/session")
    def in_session(request):
        request.session["name"] = request.json["name"]
        return "stored"

    client = TestApp(app)
    body = b'{"name": "\\ud800\xc3\xa9"}'
    assert client.post("/json", body, content_type="application/json").json == {"name": "\ud800é"}
    assert client.post("/html", body, content_type="application/json").text == "?é"
    assert client.post("/stream", body, content_type="application/json").text == "?é"
    assert client.post("/session", body, content_type="application/json").text == "stored"


def test_a_missing_field_is_400_not_500():
    app = App(__name__)

    @app.post("/post")
    def post(request):
        return {"title": request.form["title"]}

    @app.route("/search")
    def search(request):
        try:
            return {"q": request.query["q"]}
        except KeyError:  # Still a KeyError for views that handle it.
            return {"q": None}

    client = TestApp(app)
    assert client.post("/post", {"title": "T"}).json == {"title": "T"}
    assert "no &#39;title&#39; field" in client.post("/post", {"other": "x"}, status=400).text
    response = client.post("/post", headers={"Accept": "application/json"}, status=400)
    assert response.json["error"]["description"] == "The request has no 'title' field."
    assert client.get("/search").json == {"q": None}


def test_form_with_invalid_utf8_is_400(client):
    response = client.post("/echo", b"name=%ff%fe", content_type="application/x-www-form-urlencoded", status=400)
    assert "Malformed form data" in response.text


def test_too_many_form_fields_is_413():
    app = App(__name__, max_form_parts=3)
    app.add_route("/", lambda request: dict(request.form), methods=["POST"], name="form")
    client = TestApp(app)
    assert client.post("/", b"a=1&b=2&c=3", content_type="application/x-www-form-urlencoded").json == {
        "a": "1",
        "b": "2",
        "c": "3",
    }
    client.post("/", b"a=1&b=2&c=3&d=4", content_type="application/x-www-form-urlencoded", status=413)


def test_json_body(client):
    data = client.post_json("/echo", {"a": [1, 2]}).json
    assert data["json"] == {"a": [1, 2]}


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00", b"[" * 100_000])
def test_malformed_json_is_400_not_500(body):
    client = TestApp(echo_app())
    client.app.max_body_size = 200_000
    client.post("/echo", body, content_type="application/json", status=400)


def test_json_errors_are_json_for_json_clients(client):
    response = client.post(
        "/echo", b"{", content_type="application/json", headers={"Accept": "application/json"}, status=400
    )
    assert response.json["error"]["code"] == 400


def test_cookies_are_parsed_tolerantly(client):
    data = client.get("/echo", headers={"Cookie": 'a=1; broken; b="quoted"; =x; c=%20sp; a=2'}).json
    assert data["cookies"] == {"a": "1", "b": "quoted", "c": " sp"}


def test_parsing_is_lazy():
    # Nothing is parsed until a view asks: a malformed JSON body, query or cookie header cannot fail a view
    # that never reads them, and the request does not compute what the view did not use.
    app = App(__name__)
    seen = {}

    @app.route("/", methods=["POST"])
    def index(request):
        seen["request"] = request
        return "ignored everything"

    client = TestApp(app)
    response = client.post("/?a=%ff", b"{not json", content_type="application/json", headers={"Cookie": "x"})
    assert response.text == "ignored everything"
    computed = set(vars(seen["request"]))
    assert not computed & {"json", "body", "stream", "_form", "query", "cookies", "headers", "session", "url"}


def test_raw_body_and_stream(client):
    assert client.post("/body", b"hello", content_type="application/octet-stream").body == b"hello"
    assert client.post("/stream", b"x" * 100, content_type="application/octet-stream").json == {"total": 100}


def test_body_over_limit_is_413_even_if_unread(client):
    client.post("/untouched", b"x" * 1001, content_type="application/octet-stream", status=413)
    client.post("/body", b"x" * 1001, content_type="application/octet-stream", status=413)


def call(app, environ):
    """Call a WSGI app directly, for environs webtest cannot make (no Content-Length at all)."""
    statuses = []
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    body = b"".join(app({**base, **environ}, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0], body


def test_chunked_body_over_limit_is_413():
    # A body of unknown length (chunked transfer coding): the server marks the input terminated and sends no
    # Content-Length; the limit applies while reading.
    app = echo_app()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/body", "wsgi.input_terminated": True}
    status, _ = call(app, {**environ, "wsgi.input": io.BytesIO(b"y" * 5000)})
    assert status.startswith("413")
    status, body = call(app, {**environ, "wsgi.input": io.BytesIO(b"y" * 500)})
    assert status.startswith("200") and body == b"y" * 500


def test_body_without_length_or_terminated_input_is_empty():
    status, body = call(echo_app(), {"REQUEST_METHOD": "POST", "PATH_INFO": "/body", "wsgi.input": io.BytesIO(b"z")})
    assert status.startswith("200") and body == b""


@pytest.mark.parametrize("length", ["12abc", "-1", "+5", " 5", "²", "١٢"])
def test_malformed_content_length_is_400(length):
    # "²" and "١٢" are digits to str.isdigit(); the first made int() fail (a 500), the second read as 12.
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/body", "CONTENT_LENGTH": length}
    assert call(echo_app(), {**environ, "wsgi.input": io.BytesIO(b"x" * 20)})[0].startswith("400")


def test_body_shorter_than_content_length_is_400():
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/body", "CONTENT_LENGTH": "50"}
    assert call(echo_app(), {**environ, "wsgi.input": io.BytesIO(b"short")})[0].startswith("400")


def test_return_types():
    app = App(__name__)
    app.add_route("/str", lambda request: "<b>hi</b>", name="s")
    app.add_route("/bytes", lambda request: b"\x00\x01", name="b")
    app.add_route("/list", lambda request: [1, "two"], name="l")
    app.add_route("/tuple2", lambda request: ("made", 201), name="t2")
    app.add_route("/tuple3", lambda request: ({"ok": True}, 202, {"X-Extra": "1"}), name="t3")
    app.add_route("/response", lambda request: Response("plain", 203, content_type="text/plain"), name="r")
    app.add_route("/stream", lambda request: (part for part in ["a", b"b", "c"]), name="g")
    app.add_route("/none", lambda request: None, name="n")
    app.add_route("/tuple-response", lambda request: (Response("x"), 418, [("X-T", "y")]), name="tr")
    client = TestApp(app)

    response = client.get("/str")
    assert response.content_type == "text/html" and response.charset == "utf-8" and response.text == "<b>hi</b>"
    assert client.get("/bytes").content_type == "application/octet-stream"
    assert client.get("/list").json == [1, "two"]
    assert client.get("/tuple2", status=201).text == "made"
    response = client.get("/tuple3", status=202)
    assert response.json == {"ok": True} and response.headers["X-Extra"] == "1"
    response = client.get("/response", status=203)
    assert response.content_type == "text/plain" and response.text == "plain"
    assert client.get("/stream").body == b"abc"
    client.get("/none", status=500)
    response = client.get("/tuple-response", status=418)
    assert response.headers["X-T"] == "y"


def test_a_body_replaced_by_a_str_is_sent_whole():
    app = App(__name__)
    app.add_route("/", lambda request: "original", name="index")

    @app.after_request
    def replace(request, response):
        response.body = "replaced: é"  # A str, not bytes: not to be streamed one character at a time.
        return response

    response = TestApp(app).get("/")
    assert response.text == "replaced: é" and response.headers["Content-Length"] == str(len("replaced: é".encode()))


def test_streaming_body_is_closed_when_the_server_closes_it():
    closed = []

    def generate():
        try:
            yield b"one"
            yield b"two"
        finally:
            closed.append(True)

    app = App(__name__)
    app.add_route("/", lambda request: generate(), name="stream")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert not hasattr(body, "__len__")  # Streamed: no Content-Length could have been computed.
    assert next(iter(body)) == b"one"
    body.close()
    assert closed == [True]


def test_head_closes_a_streaming_body_without_sending_it():
    closed = []

    def generate():
        try:
            yield b"never"
        finally:
            closed.append(True)

    app = App(__name__)
    gen = generate()
    next(gen, None)  # Start it, so that close() runs its finally block.
    app.add_route("/", lambda request: gen, name="stream")
    assert TestApp(app).head("/").body == b""
    assert closed == [True]


def test_cookies_on_responses():
    app = App(__name__)

    @app.route("/set")
    def set_cookies(request):
        response = Response("ok")
        response.set_cookie("theme", "dark mode; x", max_age=3600, httponly=True, samesite="Strict")
        response.set_cookie("secret", "s", secure=True, samesite="None")
        response.set_cookie("plain", "1", path="/sub", domain="example.test", expires=0)
        response.delete_cookie("old")
        return response

    @app.route("/get")
    def get_cookies(request):
        return request.cookies

    client = TestApp(app)
    headers = client.get("/set").headers.getall("Set-Cookie")
    assert headers[0] == "theme=dark%20mode%3B%20x; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict"
    assert headers[1] == "secret=s; Path=/; Secure; SameSite=None"
    assert headers[2] == "plain=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=example.test; Path=/sub"
    assert headers[3].startswith("old=; Max-Age=0; Expires=Thu, 01 Jan 1970")
    assert client.get("/get").json == {"theme": "dark mode; x"}


def test_cookie_formatting_refuses_bad_input():
    with pytest.raises(ValueError):
        format_set_cookie("bad name", "x")
    with pytest.raises(ValueError):
        format_set_cookie("a", "x", samesite="sometimes")
    with pytest.raises(ValueError):
        format_set_cookie("a", "x", samesite="None")  # SameSite=None requires Secure
    with pytest.raises(ValueError):
        format_set_cookie("a", "x", path="/;evil")
    assert parse_cookie_header("") == {}


def test_headers_refuse_newlines():
    with pytest.raises(ValueError):
        Headers([("X-Evil", "a\r\nSet-Cookie: x=y")])


def test_headers_container():
    headers = Headers({"Content-Type": "text/plain"})
    headers.add("Set-Cookie", "a=1")
    headers.add("set-cookie", "b=2")
    assert headers["content-type"] == "text/plain"
    assert headers.getall("SET-COOKIE") == ["a=1", "b=2"]
    headers["Set-Cookie"] = "c=3"
    assert headers.getall("Set-Cookie") == ["c=3"]
    del headers["set-cookie"]
    assert "Set-Cookie" not in headers and len(headers) == 1
    assert headers.setdefault("X-A", "1") == "1" and headers.setdefault("x-a", "2") == "1"
    headers["X-Total"] = 5  # What WSGI needs is a str.
    assert headers["x-total"] == "5"


def test_multidict():
    data = MultiDict([("a", 1), ("b", 2), ("a", 3)])
    assert data["a"] == 1 and data.getall("a") == [1, 3] and data.getall("z") == []
    assert dict(data) == {"a": 1, "b": 2} and len(data) == 2
    assert list(data.items_all()) == [("a", 1), ("a", 3), ("b", 2)]


def test_redirect_and_abort():
    app = App(__name__)
    app.add_route("/go", lambda request: redirect("/there"), name="go")
    app.add_route("/see-other", lambda request: redirect("/ünïcode", 303), name="see")
    app.add_route("/forbidden", lambda request: abort(403, "Members only"), name="forbidden")
    client = TestApp(app)
    assert client.get("/go", status=302).headers["Location"].endswith("/there")
    assert client.get("/see-other", status=303).headers["Location"].endswith("/%C3%BCn%C3%AFcode")
    # Spaces and backslashes are encoded; an already-encoded URL passes unchanged.
    assert redirect("/a b\\c?q=1%20#top").headers["Location"] == "/a%20b%5Cc?q=1%20#top"
    assert (
        redirect("https://example.test/x?a=%C3%BC&b=[1]").headers["Location"] == "https://example.test/x?a=%C3%BC&b=[1]"
    )
    assert "Members only" in client.get("/forbidden", status=403).text


def test_response_json_helper():
    response = Response.json({"é": 1}, status=201, headers={"X-A": "b"})
    assert response.status == 201
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"é": 1}
    assert response.headers["X-A"] == "b"


@pytest.mark.parametrize(
    ("accept", "wants_json"),
    [
        ("", False),
        ("application/json", True),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("application/json, text/plain, */*", True),
        ("text/html, application/json", False),
        ("application/json;q=0.5, text/html", False),
        ("application/json;q=oops", False),
    ],
)
def test_prefers_json(accept, wants_json):
    assert prefers_json(accept) is wants_json


def test_reading_nothing_from_the_body_is_not_a_short_body():
    """``read(0)`` (libraries probe a stream with it) raised "shorter than its Content-Length", a 400."""
    from framework.request import BodyStream

    stream = BodyStream(io.BytesIO(b"abc"), 3, 100)
    assert stream.read(0) == b""
    assert stream.read() == b"abc" and stream.read(0) == b""
    assert BodyStream(io.BytesIO(b"abc"), None, 100).read(0) == b""


# -- the Host header, which external URLs (a password-reset link) are built from ---------------------------------


def external_link_app(**config) -> App:
    app = App(__name__)
    app.config.update(config)

    @app.get("/reset")
    def reset(request):
        return {"link": request.url_for("reset", _external=True, token="t")}

    @app.get("/plain")
    def plain(request):
        return "no URL here"

    @app.get("/url")
    def url(request):
        return {"url": request.url}

    return app


def test_trusted_hosts_refuse_a_forged_host_before_any_view_runs():
    app = external_link_app(TRUSTED_HOSTS=["example.com", ".example.org"])
    client = TestApp(app)
    assert client.get("/reset", headers={"Host": "EXAMPLE.com:8443"}).json["link"] == (
        "http://EXAMPLE.com:8443/reset?token=t"
    )
    for host in ("example.org", "www.example.org", "a.b.example.org:80"):  # ".name": the name and its subdomains
        client.get("/reset", headers={"Host": host}, status=200)
    for host in ("evil.example", "example.com.evil.example", "notexample.org", "evil.example/example.com"):
        client.get("/reset", headers={"Host": host}, status=400)
        client.get("/plain", headers={"Host": host}, status=400)  # whether or not the view reads the host


def test_a_single_trusted_host_is_one_name_not_its_letters():
    # From the environment, APP_TRUSTED_HOSTS=example.com is text: read as one name, not as e, x, a, m...
    client = TestApp(external_link_app(TRUSTED_HOSTS="example.com"))
    client.get("/plain", headers={"Host": "example.com"}, status=200)
    client.get("/plain", headers={"Host": "e"}, status=400)


def test_server_name_is_the_host_of_external_urls():
    client = TestApp(external_link_app(SERVER_NAME="www.example.com"))
    link = client.get("/reset", headers={"Host": "evil.example"}).json["link"]
    assert link == "http://www.example.com/reset?token=t"


def test_server_name_is_the_host_of_the_request_url_too():
    """request.url (canonical links, an OAuth redirect_uri) took the client's Host even with SERVER_NAME set, as the
    docs say it must not."""
    client = TestApp(external_link_app(SERVER_NAME="www.example.com:8443"))
    assert client.get("/url?q=1", headers={"Host": "evil.example"}).json["url"] == "http://www.example.com:8443/url?q=1"
    client = TestApp(external_link_app())
    assert client.get("/url", headers={"Host": "example.org"}).json["url"] == "http://example.org/url"


@pytest.mark.parametrize("name", ["https://www.example.com", "www.example.com/blog", "a b", "", "@evil.example"])
def test_a_server_name_that_is_not_a_host_is_refused_naming_the_setting(name, caplog):
    app = external_link_app(SERVER_NAME=name)
    if name == "":  # empty is "not set", as None is
        assert TestApp(app).get("/url", headers={"Host": "example.org"}).json["url"] == "http://example.org/url"
        return
    TestApp(app).get("/url", status=500)
    TestApp(app).get("/reset", status=500)
    assert "SERVER_NAME" in caplog.text


@given(
    host=st.builds(
        "{}{}{}".format,
        st.sampled_from(["", "example.com", "[::1]"]),
        st.sampled_from(["\r\n", "\n", " ", "\t", "/", "@", "\\", "#", "?", '"', "<", "\x00", "\x7f", "é"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
    )
)
def test_a_host_that_is_not_a_host_name_answers_400_and_builds_no_url(host):
    # Under a server that passes any Host through, "evil.example/x@" or a line break would land in the link.
    environ = {"PATH_INFO": "/reset", "HTTP_HOST": host}
    status, body = call(external_link_app(), environ)
    assert status.startswith("400"), (host, body)


@given(address=st.ip_addresses(v=6), port=st.sampled_from(["8000", "80", ""]))
def test_without_a_host_header_an_ipv6_server_name_is_bracketed(address, port):
    """Without a Host header (HTTP/1.0), the host is SERVER_NAME and SERVER_PORT; a server bound to ``::1`` gives
    SERVER_NAME ``::1`` (from getsockname), which made ``::1:8000``, refused as a forged host. It is ``[::1]:8000``
    now, and TRUSTED_HOSTS ``::1`` names it."""
    environ = {"PATH_INFO": "/url", "SERVER_NAME": str(address), "SERVER_PORT": port}
    status, body = call(external_link_app(), environ)
    assert status.startswith("200"), body
    host = f"[{address}]" + (f":{port}" if port == "8000" else "")
    assert json.loads(body)["url"] == f"http://{host}/url"
    status, _ = call(external_link_app(TRUSTED_HOSTS=[str(address)]), {**environ, "PATH_INFO": "/plain"})
    assert status.startswith("200")


# -- the names Flask code uses for what the request already has -------------------------------------------------


def flask_names_app() -> App:
    app = App(__name__)

    @app.route("/flask", methods=["GET", "POST"])
    def flask_names(request):
        forced = request.get_json(force=True, silent=True)
        return {
            "args": request.args.getall("x"),
            "is_secure": request.is_secure,
            "json": request.get_json(silent=True),
            "forced": forced,
        }

    @app.post("/strict")
    def strict(request):
        return {"json": request.get_json()}

    return app


def test_flask_request_names_args_is_secure_and_get_json():
    client = TestApp(flask_names_app())
    assert client.get("/flask?x=1&x=2").json == {"args": ["1", "2"], "is_secure": False, "json": None, "forced": None}
    assert client.get("/flask", extra_environ={"wsgi.url_scheme": "https"}).json["is_secure"] is True
    sent = client.post("/flask", '{"a": 1}', content_type="application/json").json
    assert sent["json"] == {"a": 1} and sent["forced"] == {"a": 1}
    assert client.post("/flask", '{"a": 1}', content_type="text/plain").json["forced"] == {"a": 1}
    assert client.post("/flask", "{not json", content_type="application/json").json["json"] is None  # silent
    client.post("/strict", "{not json", content_type="application/json", status=400)
    client.post("/strict", '{"a": 1}', content_type="text/plain", status=415)  # as Flask: not JSON, not forced
    assert client.post("/strict", '{"a": 1}', content_type="application/json").json == {"json": {"a": 1}}


# -- a forged Host is answered once, plainly: the app's own error pages would read it again ---------------------


def host_reading_app(**config) -> App:
    """An app whose error handlers and after_request hook read the host, as a layout with canonical links does."""
    app = external_link_app(**config)
    app.handled = []

    @app.errorhandler(400)
    @app.errorhandler(404)
    def page(request, error):
        app.handled.append(error.code)
        return f"<link rel=canonical href={request.url}> {request.url_for('plain', _external=True)}"

    @app.after_request
    def canonical(request, response):
        response.headers["Link"] = f"<{request.url}>; rel=canonical"
        return response

    return app


@pytest.mark.parametrize(
    ("config", "host", "path"),
    [
        ({"TRUSTED_HOSTS": ["example.com"]}, "evil.example", "/plain"),  # refused before any view
        ({"TRUSTED_HOSTS": ["example.com"]}, "evil.example", "/missing"),
        ({}, "evil.example/x@", "/reset"),  # not a host name: refused when the view reads it
        ({}, "evil.example/x@", "/missing"),  # ... or when the 404 handler does
    ],
)
def test_a_forged_host_is_one_plain_400_and_one_warning(config, host, path, caplog):
    """The Host 400 went through the error handlers; a handler (or a layout, or an after_request hook) that read
    request.url or url_for(_external=True) raised again, logging 'error handler ... failed' with a double traceback
    at ERROR, for every such request: a log flood any client could cause."""
    app = host_reading_app(**config)
    with caplog.at_level(logging.DEBUG):
        status, body = call(app, {"PATH_INFO": path, "HTTP_HOST": host})
    assert status.startswith("400") and b"canonical" not in body and 400 not in app.handled
    records = [(record.name, record.levelno) for record in caplog.records]
    assert records == [("framework.security.DisallowedHost", logging.WARNING)], caplog.text
    assert repr(host) in caplog.text


@pytest.mark.parametrize(
    ("config", "host"),
    [
        ({"TRUSTED_HOSTS": ["example.com"]}, "evil.example"),  # refused before any view: the teardown reads it again
        ({}, "evil.example/x@"),  # not a host name, and no view read it: the teardown is the first to
    ],
)
def test_a_teardown_hook_reading_a_refused_host_logs_no_traceback(config, host, caplog):
    """A teardown hook that read request.url on a refused request raised DisallowedHost, logged as 'teardown hook
    failed' with a traceback at ERROR for every forged request. Teardown hooks still run for such a request (they
    close what the before hooks opened); the host they cannot read is the client's doing, one WARNING at most."""
    app = external_link_app(**config)
    seen = []

    @app.teardown
    def log_url(request, error):
        seen.append("teardown")
        seen.append(request.url)  # a log line naming the URL, say

    with caplog.at_level(logging.DEBUG):
        status, _ = call(app, {"PATH_INFO": "/plain", "HTTP_HOST": host})
    assert status[:3] == ("400" if config else "200") and seen == ["teardown"]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.name for record in warnings] == ["framework.security.DisallowedHost"], caplog.text


@pytest.mark.parametrize("reader", ["errorhandler", "after_request"])
def test_teardown_hooks_get_the_unhandled_exception_even_when_the_host_is_then_refused(reader):
    """When the view failed and then the 500 handler (or an after_request hook) read a forged host, the refusal
    returned None as the unhandled exception: the teardown hooks were told the request went well (a database
    session committed rather than rolled back). They get the view's exception now, as documented."""
    app = external_link_app()
    errors = []

    @app.get("/fails")
    def fails(request):
        raise LookupError("the view's bug")

    if reader == "errorhandler":

        @app.errorhandler(500)
        def page(request, error):
            return f"<link rel=canonical href={request.url}>", 500

    else:

        @app.after_request
        def canonical(request, response):
            response.headers["Link"] = f"<{request.url}>; rel=canonical"
            return response

    @app.teardown
    def record(request, error):
        errors.append(error)

    status, _ = call(app, {"PATH_INFO": "/fails", "HTTP_HOST": "evil.example/x@"})
    assert status.startswith("400")
    assert len(errors) == 1 and isinstance(errors[0], LookupError), errors


@pytest.mark.parametrize("config", [{}, {"SERVER_NAME": "www.example.com"}])
def test_a_streamed_body_never_meets_a_host_that_is_not_a_host_name(config, caplog):
    """A streamed view's generator runs while the server sends it, after the app has answered: one that read
    request.host there raised DisallowedHost into the server, after a 200 had gone out. A streamed response
    checks the host before it starts (a non-streamed one needs no such check: its view has run), so the client
    gets the plain 400, and the generator is closed unstarted."""
    app = external_link_app(**config)
    started, teardown = [], []

    @app.get("/stream")
    def stream(request):
        def chunks():
            started.append(True)
            yield f"your host is {request.host}"

        return chunks()

    @app.teardown
    def record(request, error):
        teardown.append(error)

    with caplog.at_level(logging.WARNING):
        status, body = call(app, {"PATH_INFO": "/stream", "HTTP_HOST": "evil.example/x@"})
    assert status.startswith("400") and b"evil" not in body and started == [] and teardown == [None]
    assert [record.name for record in caplog.records] == ["framework.security.DisallowedHost"], caplog.text
    assert call(app, {"PATH_INFO": "/stream", "HTTP_HOST": "example.com"}) == ("200 OK", b"your host is example.com")


def test_a_refused_request_saves_no_session_change():
    """As documented: the refusal skips the after_request hooks and the session save, so a view that wrote to the
    session before it read a forged host sets no cookie."""
    app = external_link_app()
    app.config["SECRET_KEY"] = "s" * 32

    @app.get("/visit")
    def visit(request):
        request.session["seen"] = True
        return request.url

    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append((status, dict(headers)))

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/visit",
        "HTTP_HOST": "evil.example/x@",
        "wsgi.input": io.BytesIO(),
    }
    b"".join(app(environ, start_response))
    assert statuses[0][0].startswith("400") and "Set-Cookie" not in statuses[0][1]
    assert "Set-Cookie" in TestApp(app).get("/visit", headers={"Host": "example.com"}).headers


def test_a_trusted_host_still_gets_the_apps_own_error_pages():
    app = host_reading_app(TRUSTED_HOSTS=["example.com"])
    response = TestApp(app).get("/missing", headers={"Host": "example.com"}, status=404)
    assert "canonical href=http://example.com/missing" in response.text and app.handled == [404]


def test_a_mounted_app_never_sees_a_host_the_site_does_not_serve(caplog):
    """Mounted apps were dispatched before the Host check, so a mounted Flask app built its links from a forged
    Host that TRUSTED_HOSTS was set to refuse."""
    seen = []

    def mounted(environ, start_response):
        seen.append(environ["HTTP_HOST"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"mounted"]

    app = external_link_app(TRUSTED_HOSTS=["example.com"])
    app.mount("/sub", mounted)
    with caplog.at_level(logging.WARNING):
        assert call(app, {"PATH_INFO": "/sub/x", "HTTP_HOST": "evil.example"})[0].startswith("400")
    assert seen == [] and "framework.security.DisallowedHost" in [record.name for record in caplog.records]
    assert call(app, {"PATH_INFO": "/sub/x", "HTTP_HOST": "example.com"}) == ("200 OK", b"mounted")
    assert seen == ["example.com"]


# -- TRUSTED_HOSTS entries: normalised once, and refused when they could never match ----------------------------


@pytest.mark.parametrize(
    ("entries", "host"),
    [
        (["example.com"], "example.com."),  # a fully qualified name is the same host
        (["example.com."], "EXAMPLE.com:8443"),
        ([".example.com."], "www.example.com."),
        (["[::1]"], "[0:0::1]:8080"),  # IP literals compared as addresses
        (["[0:0::1]"], "[::1]"),
        (["::1"], "[::1]"),  # an unbracketed IPv6 entry is an address, not a name that never matches
        (["127.0.0.1"], "127.0.0.1:80"),
        (["example.com:8443"], "example.com"),  # ports are ignored, in entries too
    ],
)
def test_trusted_hosts_match_whatever_way_a_host_is_written(entries, host):
    call_result = call(external_link_app(TRUSTED_HOSTS=entries), {"PATH_INFO": "/plain", "HTTP_HOST": host})
    assert call_result[0].startswith("200"), call_result


@pytest.mark.parametrize(
    ("entries", "host"),
    [(["example.com"], "example.com.."), (["[::1]"], "[::2]"), ([".example.com"], "example.com.evil"), (["::1"], "1")],
)
def test_trusted_hosts_still_refuse_other_hosts(entries, host):
    assert call(external_link_app(TRUSTED_HOSTS=entries), {"PATH_INFO": "/plain", "HTTP_HOST": host})[0][:3] == "400"


@pytest.mark.parametrize(
    "entries",
    [
        [""],
        ["."],
        ["*"],
        ["*.example.com"],
        ["example.com", " "],
        ["exa mple.com"],
        [42],
        "a.com,b.com",
        [".1"],  # a leading dot is for a name's subdomains: an address has none
        [".0.0.1"],
        [".127.0.0.1"],
        [".[::1]"],
        [".::1"],
    ],
)
def test_a_trusted_hosts_entry_that_can_never_match_is_refused_naming_the_setting(entries):
    from framework.request import trusted_hosts

    with pytest.raises(ValueError, match="TRUSTED_HOSTS"):
        trusted_hosts(entries)
    app = external_link_app(TRUSTED_HOSTS=entries)
    app.mount("/sub", lambda environ, start_response: [])
    for path in ("/plain", "/sub/x"):  # a 500 naming the setting, through the app, not an exception to the server
        assert call(app, {"PATH_INFO": path, "HTTP_HOST": "example.com"})[0].startswith("500")


@given(st.ip_addresses(v=4), st.integers(min_value=1, max_value=4))
def test_a_suffix_entry_never_trusts_an_ip_address(address, labels):
    """``.1`` matched ``10.0.0.1`` (it ends with ".1"): a suffix entry is for a name and its subdomains, and an
    address has neither, so one whose last label is a number (a TLD never is) is refused as the setting's mistake."""
    from framework.request import host_is_trusted

    entry = "." + ".".join(str(address).split(".")[-labels:])
    with pytest.raises(ValueError, match="TRUSTED_HOSTS"):
        host_is_trusted(str(address), [entry])
    assert not host_is_trusted(str(address), [".example.com", "example.org"])


def test_a_bad_trusted_hosts_setting_is_checked_once_not_on_every_request():
    """lru_cache does not keep exceptions, so a bad entry was normalised (and refused) again on every request; the
    refusal is remembered now, as the normalised entries are, and each request raises a fresh ValueError."""
    from framework.request import _trusted_hosts, trusted_hosts

    bad = ["example.com", "*.example.org"]
    errors = []
    for _ in range(3):
        with pytest.raises(ValueError, match="TRUSTED_HOSTS") as raised:
            trusted_hosts(bad)
        errors.append(raised.value)
    misses = _trusted_hosts.cache_info().misses
    with pytest.raises(ValueError, match="TRUSTED_HOSTS"):
        trusted_hosts(bad)
    assert _trusted_hosts.cache_info().misses == misses
    assert len({id(error) for error in errors}) == 3  # never one instance re-raised: its traceback would grow


def test_a_trusted_hosts_list_changed_in_place_is_read_again():
    """The last setting is remembered (no tuple and cache lookup per request): by value, so an append counts."""
    from framework.request import host_is_trusted

    trusted = ["a.example"]
    assert host_is_trusted("a.example", trusted) and not host_is_trusted("b.example", trusted)
    trusted.append(".b.example")
    assert host_is_trusted("b.example", trusted) and host_is_trusted("www.b.example", trusted)
    assert not host_is_trusted("b.example", "a.example")


_label = st.text("abc", min_size=1, max_size=3)


@given(st.lists(_label, min_size=1, max_size=4), st.lists(st.lists(_label, min_size=1, max_size=3), max_size=3))
def test_a_suffix_entry_takes_its_name_and_subdomains_only(host_labels, entries_labels):
    from framework.request import host_is_trusted

    host = ".".join(host_labels)
    entries = [".example", *("." + ".".join(labels) for labels in entries_labels)]
    expected = any(host == entry[1:] or host.endswith(entry) for entry in entries)
    assert host_is_trusted(host, entries) is expected


def test_an_empty_trusted_hosts_is_off():
    status, _ = call(external_link_app(TRUSTED_HOSTS=[]), {"PATH_INFO": "/plain", "HTTP_HOST": "any.example"})
    assert status.startswith("200")


@given(st.sampled_from(["example.com", "[::1]", "127.0.0.1", ".example.org"]), st.booleans(), st.booleans())
def test_a_host_matches_its_entry_with_or_without_a_dot_in_any_case(entry, dot, upper):
    from framework.request import host_is_trusted

    host = entry.lstrip(".") + ("." if dot and not entry.endswith("]") and not entry[0].isdigit() else "")
    assert host_is_trusted(host.upper() if upper else host, [entry.upper() if upper else entry])
