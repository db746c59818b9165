"""Routing: converters, precedence, 404/405/redirects, HEAD and url_for, through the app and on the router."""

import time
import uuid
from urllib.parse import quote

import pytest
from webtest import TestApp

from framework import App, BuildError, Converter
from framework.errors import MethodNotAllowed, NotFound, RequestRedirect
from framework.routing import Router


def make_app() -> App:
    app = App(__name__)

    @app.route("/")
    def index(request):
        return "home"

    @app.route("/users/<int:user_id>", methods=["GET", "POST"])
    def user(request, user_id):
        return {"user_id": user_id, "type": type(user_id).__name__}

    @app.route("/users/new")
    def new_user(request):
        return "new user form"

    @app.route("/users/<name>")
    def user_by_name(request, name):
        return f"name={name}"

    @app.route("/price/<float:amount>")
    def price(request, amount):
        return {"amount": amount}

    @app.route("/files/<path:name>")
    def files(request, name):
        return f"file={name}"

    @app.route("/files/<path:name>/edit")
    def edit_file(request, name):
        return f"edit={name}"

    @app.route("/items/<uuid:item_id>")
    def item(request, item_id):
        return {"item": str(item_id), "is_uuid": isinstance(item_id, uuid.UUID)}

    @app.route("/docs/")
    def docs(request):
        return "docs"

    @app.route("/about")
    def about(request):
        return "about"

    @app.route("/report-<int:year>.csv")
    def report(request, year):
        return f"report {year}"

    @app.put("/things/<int:thing_id>")
    def put_thing(request, thing_id):
        return f"put {thing_id}"

    @app.delete("/things/<int:thing_id>")
    def delete_thing(request, thing_id):
        return f"deleted {thing_id}"

    return app


@pytest.fixture
def client():
    return TestApp(make_app())


def test_static_route(client):
    assert client.get("/").text == "home"


def test_int_converter_gives_an_int(client):
    assert client.get("/users/42").json == {"user_id": 42, "type": "int"}


def test_static_rule_beats_a_parameter(client):
    assert client.get("/users/new").text == "new user form"
    assert client.get("/users/alice").text == "name=alice"


def test_string_parameter_is_url_decoded(client):
    assert client.get("/users/J%C3%BCrgen").text == "name=Jürgen"


def test_float_converter(client):
    assert client.get("/price/9.5").json == {"amount": 9.5}
    assert client.get("/price/3").json == {"amount": 3.0}
    client.get("/price/abc", status=404)


def test_path_converter_takes_slashes(client):
    assert client.get("/files/a/b/c.txt").text == "file=a/b/c.txt"
    assert client.get("/files/a/b/edit").text == "edit=a/b"
    assert client.get("/files/a%0Ab/c").text == "file=a\nb/c"  # Decoded text: a newline is a character too.


def test_uuid_converter(client):
    value = uuid.uuid4()
    assert client.get(f"/items/{value}").json == {"item": str(value), "is_uuid": True}
    client.get("/items/not-a-uuid", status=404)


def test_parameter_inside_a_segment(client):
    assert client.get("/report-2024.csv").text == "report 2024"
    client.get("/report-x.csv", status=404)


def test_missing_route_is_404(client):
    client.get("/nowhere", status=404)
    client.get("/users/1/extra", status=404)


def test_wrong_method_is_405_with_allow(client):
    response = client.patch("/users/3", status=405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    response = client.post("/things/3", status=405)
    assert response.headers["Allow"] == "DELETE, OPTIONS, PUT"


def test_other_methods_route(client):
    assert client.put("/things/7").text == "put 7"
    assert client.delete("/things/7").text == "deleted 7"


def test_missing_trailing_slash_redirects_to_the_canonical_url(client):
    response = client.get("/docs?page=2", status=308)
    assert response.headers["Location"].endswith("/docs/?page=2")


def test_extra_trailing_slash_redirects_to_the_canonical_url(client):
    response = client.get("/about/", status=308)
    assert response.headers["Location"].endswith("/about")


def test_redirect_keeps_the_method_for_posts(client):
    # 308 (not 301/302): the client repeats the POST with its body at the new URL.
    client.post("/docs", status=308)


def test_head_runs_the_get_view_without_a_body(client):
    response = client.head("/users/5")
    assert response.status_int == 200
    assert response.body == b""
    assert int(response.headers["Content-Length"]) == len(b'{"user_id":5,"type":"int"}')


def test_url_for_builds_paths_and_query_strings():
    app = make_app()
    with app.test_request_context():
        assert app.url_for("user", user_id=3) == "/users/3"
        assert app.url_for("user", user_id=3, tab="posts", page=2) == "/users/3?tab=posts&page=2"
        assert app.url_for("user", user_id=3, tab=None) == "/users/3"  # None is "not given", not "?tab=None".
        assert app.url_for("user_by_name", name="a b/c") == "/users/a%20b%2Fc"
        assert app.url_for("files", name="dir/x y.txt") == "/files/dir/x%20y.txt"
        assert app.url_for("index") == "/"
    with app.test_request_context(script_name="/mounted"):
        assert app.url_for("user", user_id=3) == "/mounted/users/3"


def test_url_for_errors_are_clear():
    app = make_app()
    with app.test_request_context():
        with pytest.raises(BuildError, match="no route is named 'nope'"):
            app.url_for("nope")
        with pytest.raises(BuildError, match="user_id"):
            app.url_for("user")
        with pytest.raises(BuildError):
            app.url_for("user", user_id="not a number")


def test_custom_converter():
    class Hex(Converter):
        regex = r"[0-9a-f]+"

        def to_python(self, value):
            return int(value, 16)

        def to_url(self, value):
            return format(value, "x")

    app = App(__name__)
    app.add_converter("hex", Hex)

    @app.route("/color/<hex:value>")
    def color(request, value):
        return {"value": value}

    client = TestApp(app)
    assert client.get("/color/ff").json == {"value": 255}
    client.get("/color/zz", status=404)
    with app.test_request_context():
        assert app.url_for("color", value=255) == "/color/ff"


def test_converter_can_reject_with_value_error():
    class Even(Converter):
        regex = r"\d+"

        def to_python(self, value):
            if int(value) % 2:
                raise ValueError("odd")
            return int(value)

    app = App(__name__)
    app.add_converter("even", Even)

    @app.route("/n/<even:n>")
    def even(request, n):
        return "even"

    @app.route("/n/<int:n>")
    def odd(request, n):
        return "odd"

    client = TestApp(app)
    assert client.get("/n/4").text == "even"
    assert client.get("/n/5").text == "odd"


def test_router_errors_carry_details():
    router = Router()
    router.add("/a/<int:x>", lambda request, x: x, "a", ["GET"])
    router.add("/b/", lambda request: None, "b", ["POST"])
    with pytest.raises(MethodNotAllowed) as excinfo:
        router.match("DELETE", "/a/1")
    assert excinfo.value.allowed == ["GET", "HEAD"]
    with pytest.raises(RequestRedirect) as redirect:
        router.match("GET", "/b")
    assert redirect.value.location == "/b/"
    with pytest.raises(NotFound):
        router.match("GET", "/c")


def test_first_of_two_equal_rules_wins():
    router = Router()
    router.add("/x/<a>", lambda request, a: "first", "first", ["GET"])
    router.add("/x/<b>", lambda request, b: "second", "second", ["GET"])
    rule, params = router.match("GET", "/x/1")
    assert rule.endpoint == "first" and params == {"a": "1"}


def test_bad_patterns_are_refused():
    router = Router()
    view = lambda request: None  # noqa: E731
    with pytest.raises(ValueError, match="unknown converter"):
        router.add("/a/<nope:x>", view, "a", ["GET"])
    with pytest.raises(ValueError, match="must start with"):
        router.add("a", view, "b", ["GET"])
    with pytest.raises(ValueError, match="twice"):
        router.add("/<x>/<x>", view, "c", ["GET"])
    with pytest.raises(ValueError, match="malformed"):
        router.add("/<x", view, "d", ["GET"])
    with pytest.raises(TypeError, match="not a string"):
        router.add("/e", view, "e", "POST")


def test_endpoint_names_must_be_unique_per_view():
    app = App(__name__)
    app.add_route("/a", lambda request: "a", name="same")
    with pytest.raises(ValueError, match="already used"):
        app.add_route("/b", lambda request: "b", name="same")


def test_many_routes_match_the_right_one():
    app = App(__name__)
    for i in range(200):
        app.add_route(f"/api/r{i}/<int:a>/<int:b>", lambda request, a, b, i=i: f"{i}:{a + b}", name=f"r{i}")
    client = TestApp(app)
    assert client.get("/api/r0/1/2").text == "0:3"
    assert client.get("/api/r199/3/4").text == "199:7"
    with app.test_request_context():
        assert app.url_for("r150", a=1, b=2) == "/api/r150/1/2"


def test_request_knows_its_route():
    app = App(__name__)

    @app.patch("/notes/<int:note_id>/<slug>")
    def edit_note(request, note_id, slug):
        return {"endpoint": request.endpoint, "params": request.route_params}

    response = TestApp(app).patch("/notes/3/hello")
    assert response.json == {"endpoint": "edit_note", "params": {"note_id": 3, "slug": "hello"}}


def test_options_lists_the_allowed_methods(client):
    response = client.options("/users/3", status=204)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"  # OPTIONS itself too: always answered
    client.options("/nowhere", status=404)


def options_star(app):
    """``OPTIONS *`` as our server hands it to an app (PATH_INFO ``*``): the status, the headers, the body."""
    import io

    environ = {"REQUEST_METHOD": "OPTIONS", "PATH_INFO": "*", "SCRIPT_NAME": "", "HTTP_HOST": "example.com"}
    environ.update({"wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "SERVER_NAME": "h", "SERVER_PORT": "80"})
    answers = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answers.append((status, dict(headers)))))
    return answers[0][0], answers[0][1], body


def test_options_star_says_what_the_app_accepts():
    """``OPTIONS *`` ("what does this server accept?", which our server passes to the app) got the HTML 404 page.
    It is a 204 with ``Allow`` listing every method some route (or a mounted app of ours) accepts, plus OPTIONS."""
    app = App(__name__)
    app.get("/", name="home")(lambda request: "home")
    app.route("/notes", methods=["POST", "PUT"], name="notes")(lambda request: "note")
    inner = App(__name__)
    inner.delete("/x", name="gone")(lambda request: "gone")
    app.mount("/inner", inner)
    status, headers, body = options_star(app)
    assert status == "204 No Content" and body == b""
    assert headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, POST, PUT"
    assert options_star(App(__name__))[1]["Allow"] == "OPTIONS"  # no routes: OPTIONS is still answered
    assert TestApp(app).get("/*", status=404)  # a path that happens to be "*" is still only a path


def test_options_star_goes_through_the_before_request_hooks():
    app = App(__name__)
    app.get("/")(lambda request: "home")

    @app.before_request
    def own_answer(request):
        if request.path == "*":
            return "the app's own answer", 200

    status, _, body = options_star(app)
    assert status.startswith("200") and body == b"the app's own answer"


def test_trailing_slash_redirects_stay_on_this_site():
    class Anything(Converter):
        regex = r"[^/]*"  # Matches an empty segment too, so "//evil.example" matches a rule.

    app = App(__name__)
    app.add_converter("any", Anything)
    app.add_route("/<name>", lambda request, name: name, name="page")
    app.add_route("/<any:a>/<b>", lambda request, a, b: b, name="pair")
    client = TestApp(app)
    # Browsers read "/\evil.example" as "//evil.example", another site: the backslash must go out encoded.
    assert client.get("/%5Cevil.example/", status=308).headers["Location"] == "/%5Cevil.example"
    # The path is decoded text: its "%" and spaces are encoded again, so the redirect reaches the same path.
    assert client.get("/100%25%20off/", status=308).headers["Location"] == "/100%25%20off"
    response = client.get("/", extra_environ={"PATH_INFO": "//evil.example/"}, status=308)
    assert response.headers["Location"] == "/evil.example"


def test_url_for_quotes_the_mount_point_and_static_paths():
    child = App(__name__)

    @child.route("/p/<name>")
    def page(request, name):
        return {"page": request.url_for("page", name="a b"), "static": request.static("my file.css")}

    outer = App(__name__)
    outer.mount("/my site", child)
    assert TestApp(outer).get("/my%20site/p/x").json == {
        "page": "/my%20site/p/a%20b",
        "static": "/my%20site/static/my%20file.css",
    }


@pytest.mark.parametrize("number", ["\u0661\u0662", "\uff11\uff12"])
@pytest.mark.parametrize("prefix", ["/users/", "/price/"])
def test_numbers_are_ascii_digits_only(client, prefix, number):
    """One resource, one URL: /users/12 is not also /users/ with Arabic-Indic or fullwidth digits, which int()
    would take. Non-ASCII digits are no number, so these fall through to the string routes or 404."""
    response = client.get(prefix + quote(number), expect_errors=True)
    assert response.status_int == 404 or response.text == f"name={number}"


@pytest.mark.parametrize(
    "pattern", ["/f/<a>-<b>-<int:c>.json", "/g/<a>.<b>.<c>.<d>", "/t/<path:a>/x/<path:b>/x/<int:c>"]
)
def test_more_than_two_parameters_in_one_piece_are_refused_when_registered(pattern):
    """Matching three parameters in one segment (or in the rest of a path after a path parameter) takes time
    quadratic in the path, four cubic: 8 KB of "a-a-a-..." held a worker for seconds, an 8 KiB target for
    minutes. Such a route is an error the app's author sees at once."""
    app = App(__name__)

    def view(request, **parameters):
        return "x"

    with pytest.raises(ValueError, match="at most 2 fit there"):
        app.add_route(pattern, view)
    # Refused without a trace: no endpoint taken, nothing to build a URL from.
    app.add_route("/ok/<a>", view)
    assert TestApp(app).get("/ok/x").text == "x"


def test_two_parameters_in_one_segment_stay_linear():
    app = App(__name__)

    @app.get("/f/<a>-<b>.json")
    def two(request, a, b):
        return f"{a}|{b}"

    client = TestApp(app)
    assert client.get("/f/x-y-z.json").text == "x-y|z"
    started = time.perf_counter()
    client.get("/f/" + "a-" * 30_000 + "a.jsonx", status=404)
    assert time.perf_counter() - started < 1.0  # linear: milliseconds (quadratic was seconds)


def test_url_for_never_builds_a_url_of_another_site_or_of_another_rule():
    """``/<path:page>`` with a page of "/evil.example/" built "//evil.example/", another site's URL, for a
    ``redirect(url_for(...))``; a UUID parameter took any text raw ("x?admin=1#frag", "../.."), and an empty
    value built the URL of another rule. None of these URLs would ever reach the rule they were built from."""
    app = App(__name__)

    @app.get("/<path:page>")
    def page(request, page):
        return page

    @app.get("/orders/<uuid:order>")
    def order(request, order):
        return str(order)

    @app.get("/users/<name>")
    def user(request, name):
        return name

    with app.test_request_context():
        for endpoint, value in [("page", "/evil.example/"), ("page", ""), ("order", "x?admin=1#frag"),
                                ("order", "../../admin"), ("order", "a\r\nb"), ("user", "")]:  # fmt: skip
            key = "page" if endpoint == "page" else "order" if endpoint == "order" else "name"
            with pytest.raises(BuildError):
                app.url_for(endpoint, **{key: value})
        known = uuid.UUID(int=10)
        assert app.url_for("order", order=known) == f"/orders/{known}"
        assert app.url_for("order", order=str(known).upper()) == f"/orders/{known}"  # canonical: lower case
        assert app.url_for("page", page="a/b c") == "/a/b%20c"


def test_a_trailing_slash_redirect_keeps_a_raw_non_ascii_query_as_its_bytes():
    """``curl 'host/docs?q=café'`` sends the UTF-8 bytes raw; WSGI hands them over as latin-1 characters, and
    quoting those as text encoded them twice (``caf%C3%83%C2%A9``): after the redirect the view saw "cafÃ©"."""
    from wsgiref.util import setup_testing_defaults

    app = make_app()

    @app.get("/search/")
    def search(request):
        return {"q": request.query.get("q"), "url": request.url}

    environ = {"PATH_INFO": "/search", "QUERY_STRING": "q=café".encode().decode("latin-1")}
    setup_testing_defaults(environ)
    answered: list = []
    b"".join(app(environ, lambda status, headers, exc_info=None: answered.append((status, dict(headers)))))
    status, headers = answered[0]
    assert status.startswith("308") and headers["Location"] == "/search/?q=caf%C3%A9"
    found = TestApp(app).get(headers["Location"]).json
    assert found["q"] == "café" and found["url"].endswith("/search/?q=caf%C3%A9")


def test_url_for_refuses_dot_segments_and_tries_the_next_rule():
    """A value of ".." (or a path value with a ".." piece) built "/users/.." or "/files/../admin", which browsers
    and HTTP clients resolve to another URL. Refused as any value a rule cannot take, after the endpoint's other
    rules are tried: ``/search/<q>`` and ``/search/`` for one view build the second for an empty ``q``, and a
    converter whose regex takes "" builds with it."""
    app = App(__name__)

    @app.get("/users/<name>")
    def user(request, name):
        return name

    @app.get("/files/<path:name>")
    def files(request, name):
        return name

    @app.get("/search/")
    @app.get("/search/<q>")  # (decorators apply from the bottom up: this rule is the endpoint's first)
    def search(request, q=""):
        return q

    class Optional(Converter):
        regex = r"[0-9]*"

    app.add_converter("opt", Optional)

    @app.get("/v<opt:n>.json")
    def versions(request, n):
        return n

    with app.test_request_context():
        for endpoint, values in [("user", {"name": ".."}), ("user", {"name": "."}), ("files", {"name": "../admin"}),
                                 ("files", {"name": "a/./b"})]:  # fmt: skip
            with pytest.raises(BuildError, match="dot segment"):
                app.url_for(endpoint, **values)
        assert app.url_for("user", name="...") == "/users/..."  # not a dot segment: a name like any other
        assert app.url_for("files", name="a/%2E%2E") == "/files/a/%252E%252E"  # a literal "%": quoted
        assert app.url_for("search", q="") == "/search/?q="
        assert app.url_for("search", q="x") == "/search/x"
        assert app.url_for("versions", n="") == "/v.json"
    assert TestApp(app).get("/v.json").text == ""


def test_a_static_file_named_with_a_leading_slash_is_the_same_file():
    app = App(__name__, static=".")
    with app.test_request_context():
        assert app.url_for("static", filename="/css/app.css") == app.url_for("static", filename="css/app.css")


def test_an_int_parameter_beyond_what_a_database_holds_does_not_match():
    """An id one past 2**63 - 1 reached the view, whose ``WHERE id = ?`` raised OverflowError: a 500 for anyone
    who typed twenty nines (and int() of a 4,300-digit path raised ValueError inside the converter)."""
    from framework.routing import INT_MAX

    app = App(__name__)

    @app.get("/posts/<int:post_id>")
    def post(request, post_id):
        return str(post_id)

    client = TestApp(app)
    assert client.get(f"/posts/{INT_MAX}").text == str(INT_MAX)
    client.get(f"/posts/{INT_MAX + 1}", status=404)
    client.get("/posts/" + "9" * 5000, status=404)
    client.get("/posts/" + "0" * 30 + "7", status=404)  # more digits than any id: not this route


def test_url_for_takes_an_anchor_and_a_scheme_and_refuses_other_underscore_options():
    """``_anchor`` and ``_scheme`` went into the query string (``/users/3?_anchor=posts``), as did a misspelt
    option; now the anchor is the fragment, the scheme that of an external URL, and any other ``_`` keyword that
    no rule takes is a TypeError (a query parameter whose name starts with ``_`` is refused with them)."""
    app = make_app()

    @app.get("/things/<_id>")
    def thing(request, _id):
        return _id

    with app.test_request_context(headers={"Host": "example.test"}):
        assert app.url_for("user", user_id=3, _anchor="posts") == "/users/3#posts"
        assert app.url_for("user", user_id=3, tab="a", _anchor="a b#c") == "/users/3?tab=a#a%20b%23c"
        assert app.url_for("user", user_id=3, _external=True, _scheme="https") == "https://example.test/users/3"
        assert app.url_for("thing", _id="x") == "/things/x"  # a rule's own parameter may start with "_"
        with pytest.raises(ValueError, match="_external"):
            app.url_for("user", user_id=3, _scheme="https")
        with pytest.raises(ValueError, match="scheme"):
            app.url_for("user", user_id=3, _external=True, _scheme="https://evil.example/")
        for option in ("_method", "_anchr", "_"):
            with pytest.raises(TypeError, match=option):
                app.url_for("user", user_id=3, **{option: "x"})
