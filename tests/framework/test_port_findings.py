"""Regressions for the bugs found by porting Flask's tutorial blog to the framework (issue 10), one test each."""

import datetime
import warnings

import pytest
from webtest import TestApp

from framework import App, HTTPError, abort, redirect


def test_after_request_does_not_run_for_a_request_whose_before_request_hooks_never_ran():
    """A body over MAX_BODY_SIZE is refused before any hook; an after_request hook relying on what a
    before_request hook set must not turn that 413 into a 500."""
    app = App(__name__, max_body_size=10, csrf=False)
    ran = []

    @app.before_request
    def open_db(request):
        request.g.db = "connection"

    @app.after_request
    def use_db(request, response):
        ran.append(request.g.db)  # AttributeError if open_db never ran.
        return response

    @app.post("/upload")
    def upload(request):
        return "ok"

    client = TestApp(app)
    client.post("/upload", b"x" * 100, content_type="application/octet-stream", status=413)
    assert ran == []
    client.post("/upload", b"small", content_type="application/octet-stream", status=200)
    assert ran == ["connection"]


def test_after_request_still_runs_when_a_before_request_hook_raises_an_http_error():
    app = App(__name__)
    ran = []

    @app.before_request
    def deny(request):
        abort(403)

    @app.after_request
    def stamp(request, response):
        ran.append(response.status)
        return response

    @app.get("/")
    def home(request):
        return "never"

    TestApp(app).get("/", status=403)
    assert ran == [403]


def test_app_url_for_includes_the_mount_point():
    inner = App(__name__)

    @inner.get("/post/<int:n>")
    def post(request, n):
        return inner.url_for("post", n=n)

    site = App(__name__)
    site.mount("/blog", inner)
    assert TestApp(site).get("/blog/post/3").text == "/blog/post/3"
    with pytest.raises(RuntimeError, match="outside a request"):
        inner.url_for("post", n=3)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (datetime.datetime(2026, 1, 1), "isoformat"),
        ((1, 2), "list"),
        ({1, 2}, "sorted list"),
        (b"raw", "text"),
        ({"nested": [object()]}, "object"),
        ({1: "int key"}, "keys are text"),
    ],
)
def test_a_session_value_json_cannot_hold_is_refused_when_set_naming_the_key(value, hint):
    app = App(__name__, secret_key="k")

    @app.get("/")
    def view(request):
        with pytest.raises(TypeError, match=rf"session\['when'\].*{hint}"):
            request.session["when"] = value
        with pytest.raises(TypeError, match=r"session\['when'\]"):
            request.session.update(when=value)
        with pytest.raises(TypeError, match=r"session\['when'\]"):
            request.session.setdefault("when", value)
        assert "when" not in request.session and not request.session.modified
        return "ok"

    TestApp(app).get("/")


def test_a_bad_value_put_inside_a_stored_list_is_named_when_the_cookie_is_written():
    app = App(__name__, secret_key="k")

    @app.get("/")
    def view(request):
        request.session["cart"] = []
        request.session["cart"].append(datetime.date(2026, 1, 1))  # Out of the session's sight.
        return "ok"

    response = TestApp(app).get("/", status=500, expect_errors=True)
    assert response.status_int == 500
    app.config["DEBUG"] = True
    assert "session[&#39;cart&#39;] cannot hold a date" in TestApp(app).get("/", status=500).text


def test_two_mounted_apps_each_keep_their_own_session():
    def counter_app(key: str) -> App:
        app = App(__name__, secret_key=key)

        @app.get("/")
        def count(request):
            request.session["n"] = request.session.get("n", 0) + 1
            return str(request.session["n"])

        return app

    site = App(__name__, secret_key="site")
    site.mount("/a", counter_app("key a"))
    site.mount("/b", counter_app("key b"))
    client = TestApp(site)
    assert [client.get(path).text for path in ("/a/", "/b/", "/a/", "/b/", "/a/")] == ["1", "1", "2", "2", "3"]
    names = {cookie.name: cookie.path for cookie in client.cookiejar}
    assert names == {"session_a": "/a", "session_b": "/b"}


def test_mounting_an_app_whose_session_cookie_collides_warns():
    site = App(__name__, secret_key="site")
    other = App(__name__, secret_key="other", session_cookie="session")
    with pytest.warns(RuntimeWarning, match="uses the session cookie 'session'"):
        site.mount("/other", other)
    flask = pytest.importorskip("flask")
    flask_app = flask.Flask(__name__)
    flask_app.secret_key = "flask"
    with pytest.warns(RuntimeWarning, match="SESSION_COOKIE_NAME"):
        site.mount("/flask", flask_app)
    flask_app.config["SESSION_COOKIE_NAME"] = "flask_session"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        site.mount("/flask2", flask_app)
        site.mount("/ours", App(__name__, secret_key="ours"))  # A name of its own by default.


def test_a_view_that_cannot_take_the_request_or_its_parameters_is_refused_when_registered():
    app = App(__name__)
    with pytest.raises(TypeError, match=r"view for '/'.*called as view\(request\)"):

        @app.get("/")
        def no_request():
            return "x"

    with pytest.raises(TypeError, match=r"called as view\(request, post_id=...\)"):

        @app.get("/posts/<int:post_id>")
        def wrong_name(request, id):
            return "x"

    with pytest.raises(TypeError, match="before_request hook"):
        app.before_request(lambda: None)
    with pytest.raises(TypeError, match="error handler"):
        app.errorhandler(404)(lambda request: None)

    @app.get("/ok/<a>/<b>")
    def flexible(request, **params):  # **params takes any parameter: accepted.
        return params

    assert TestApp(app).get("/ok/1/2").json == {"a": "1", "b": "2"}


@pytest.mark.parametrize("code", [200, 299, 302, 99, 600])
def test_abort_takes_only_error_statuses(code):
    with pytest.raises(ValueError, match="only 4xx and 5xx"):
        abort(code)


def test_abort_with_a_response_sends_it_as_it_is():
    app = App(__name__)

    @app.errorhandler(HTTPError)
    def page(request, error):
        return "an error page that must not replace the redirect", error.code

    @app.get("/")
    def home(request):
        abort(redirect("/login"))

    response = TestApp(app).get("/", status=302)
    assert response.headers["Location"] == "/login"


def test_url_for_static_works_when_the_server_serves_static_files():
    app = App(__name__)  # No static folder: python -m server --static serves /static.

    @app.get("/")
    def home(request):
        return {"css": request.url_for("static", filename="site.css"), "same": request.static("site.css")}

    site = App(__name__)
    site.mount("/shop", app)
    assert TestApp(site).get("/shop/").json == {"css": "/shop/static/site.css", "same": "/shop/static/site.css"}


def test_the_app_docstring_tells_the_truth_about_static_files():
    doc = App.__doc__ or ""
    assert "--static" in doc and "serves /static by itself" not in doc


def test_testing_mode_raises_unhandled_exceptions_to_the_test_and_still_tears_down():
    app = App(__name__)
    torn_down = []

    @app.teardown
    def record(request, error):
        torn_down.append(type(error).__name__)

    @app.get("/")
    def fail(request):
        raise LookupError("what the test wants to see")

    @app.get("/missing")
    def missing(request):
        abort(404)

    app.config["TESTING"] = True
    client = app.test_client()
    with pytest.raises(LookupError, match="what the test wants to see"):
        client.get("/")
    assert client.get("/missing").status_code == 404  # HTTP errors are answers, not failures.
    assert torn_down == ["LookupError", "NoneType"]


def test_raw_utf8_in_the_query_string_is_decoded_as_utf8():
    app = App(__name__)

    @app.get("/")
    def search(request):
        return {"q": request.query["q"]}

    # What a server puts in the environ for the raw bytes of ?q=café: latin-1 characters (PEP 3333).
    raw = "q=café".encode().decode("latin-1")
    assert app.test_client().get("/", extra={"QUERY_STRING": raw}).json == {"q": "café"}


def test_a_session_store_replaced_by_no_sessions_turns_sessions_and_csrf_off():
    from framework.sessions import NoSessions

    app = App(__name__, secret_key="k")
    app.sessions = NoSessions()

    @app.post("/")
    def post(request):
        return "accepted"

    assert not app.sessions_enabled and not app.csrf_enabled
    assert TestApp(app).post("/", {"a": "1"}).text == "accepted"


# --- found by a newcomer building an app from docs/framework.md ---------------------------------------------------


def test_a_secret_key_that_json_read_as_a_number_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("NUMERIC_SECRET_KEY", "123")
    app = App(__name__)
    app.config.from_prefixed_env("NUMERIC")

    @app.get("/")
    def view(request):
        return str(request.session.get("x"))

    app.config["TESTING"] = True
    with pytest.raises(TypeError, match=r"SECRET_KEY must be text or bytes, not int \(123\).*quote"):
        app.test_client().get("/")


def test_the_test_client_refuses_options_it_does_not_know():
    app = App(__name__)

    @app.get("/")
    def view(request):
        return "ok"

    client = app.test_client()
    with pytest.raises(TypeError, match=r"no option query_string \(use query=\)"):
        client.get("/", query_string="a=1")
    with pytest.raises(TypeError, match=r"no option follow_redirect \(use follow_redirects=\)"):
        client.get("/", follow_redirect=True)
    with pytest.raises(TypeError, match="no option whatever"):
        client.get("/", whatever=1)
    with pytest.raises(TypeError, match="no option"), client.session_transaction(nonsense=1):
        pass


def test_a_view_may_return_body_and_headers_without_a_status():
    app = App(__name__)

    @app.get("/dict")
    def with_dict(request):
        return "x", {"X-B": "2"}

    @app.get("/pairs")
    def with_pairs(request):
        return {"ok": True}, [("X-C", "3")]

    client = TestApp(app)
    response = client.get("/dict")
    assert response.status_int == 200 and response.text == "x" and response.headers["X-B"] == "2"
    response = client.get("/pairs")
    assert response.json == {"ok": True} and response.headers["X-C"] == "3"


def test_template_helpers_take_their_name_as_a_keyword(tmp_path):
    (tmp_path / "t.html").write_text("{{ 'a' | twice }} {{ three() }} {{ 4 is four }}")
    app = App(__name__, templates=tmp_path)
    app.template_filter(name="twice")(lambda text: text * 2)
    app.template_global(lambda: 3, name="three")
    app.template_test(name="four")(lambda value: value == 4)

    @app.get("/")
    def page(request):
        return request.render("t.html")

    assert TestApp(app).get("/").text == "aa 3 True"
