"""The test client: cookies, sessions, CSRF tokens, bodies, redirects and mounted apps, all in process."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework import App, Response, csrf_exempt, redirect
from framework.testing import CookieJar, RedirectError, TestClient, environ_for

FLASHES = (
    "{% for category, message in get_flashed_messages(with_categories=True) %}"
    "[{{ category }}: {{ message }}]"
    "{% endfor %}"
)


def make_app(**options) -> App:
    """A small site: a login form, a page for members only, flashed messages, JSON, cookies, uploads."""
    options = {"secret_key": "testing the client", **options}
    app = App(__name__, **options)
    flashes = app.templates.environment.from_string(FLASHES)
    users = {"ada": "lovelace"}

    @app.before_request
    def members_only(request):
        if request.path.startswith("/account") and "user" not in request.session:
            request.flash("Log in first", "error")
            return redirect("/login")
        return None

    @app.get("/login")
    def login_form(request):
        return f'<form method="post"><input name="csrf_token" value="{request.csrf_token()}"></form>' + flashes.render(
            request=request
        )

    @app.post("/login")
    def login(request):
        name = request.form.get("name")
        if users.get(name) != request.form.get("password"):
            request.flash("Wrong name or password", "error")
            return redirect("/login")
        request.session["user"] = name
        request.flash(f"Welcome, {name}")
        return redirect("/account", 303)

    @app.get("/account")
    def account(request):
        return f"Account of {request.session['user']}" + flashes.render(request=request)

    @app.post("/logout")
    def logout(request):
        request.session.clear()
        return redirect("/login")

    @app.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(request):
        return {
            "method": request.method,
            "path": request.path,
            "query": {name: request.query.getall(name) for name in request.query},
            "form": {name: request.form.getall(name) for name in request.form},
            "json": request.json,
            "token": request.headers.get("X-CSRF-Token"),
            "content_type": request.content_type,
            "cookies": request.cookies,
        }

    @app.post("/upload")
    def upload(request):
        return {
            name: [{"filename": f.filename, "type": f.content_type, "data": f.read().decode()} for f in files]
            for name, files in ((name, request.files.getall(name)) for name in request.files)
        }

    @app.get("/cookies/set/<name>/<value>")
    def set_cookie(request, name, value):
        response = Response("set")
        response.set_cookie(name, value, path=request.query.get("path", "/"), secure="secure" in request.query)
        return response

    @app.get("/cookies/delete/<name>")
    def delete_cookie(request, name):
        response = Response("deleted")
        response.delete_cookie(name, path=request.query.get("path", "/"))
        return response

    @app.get("/cookies")
    def cookies(request):
        return request.cookies

    @app.get("/cookies/deep/page")
    def deep_cookies(request):
        return request.cookies

    @app.post("/api/hook")
    @csrf_exempt
    def hook(request):
        return {"token": request.headers.get("X-CSRF-Token"), "session_cookie": "session" in request.cookies}

    return app


@pytest.fixture
def app() -> App:
    return make_app()


@pytest.fixture
def client(app) -> TestClient:
    return app.test_client()


# --- logging in, sessions, flashed messages, CSRF ---------------------------------------------------------------


def test_log_in_with_a_form_and_see_the_flashed_message_once(client):
    response = client.post("/login", data={"name": "ada", "password": "lovelace"}, follow_redirects=True)
    assert response.status_code == 200
    assert response.text == "Account of ada[message: Welcome, ada]"
    assert [(r.status_code, r.request_path) for r in response.history] == [(303, "/login")]
    assert response.request.method == "GET"  # 303: the POST became a GET
    assert client.session["user"] == "ada"
    assert client.get("/account").text == "Account of ada"  # shown once, then gone


def test_a_members_page_sends_visitors_to_log_in_with_a_message(client):
    response = client.get("/account", follow_redirects=True)
    assert response.request_path == "/login"
    assert "[error: Log in first]" in response.text
    assert [r.status_code for r in response.history] == [302]


def test_wrong_password_flashes_an_error(client):
    response = client.post("/login", data={"name": "ada", "password": "no"}, follow_redirects=True)
    assert "[error: Wrong name or password]" in response.text
    assert "user" not in client.session


def test_logging_out_empties_the_session_and_deletes_its_cookie(client):
    client.post("/login", data={"name": "ada", "password": "lovelace"})
    assert client.get_cookie("session") is not None
    response = client.post("/logout")
    assert response.cookies["session"].expired()
    assert client.get_cookie("session") is None
    assert client.get("/account").status_code == 302


def test_unsafe_methods_carry_the_sessions_token_without_a_form_being_fetched(client):
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/echo")
        assert response.status_code == 200, method
        assert response.json["token"] == client.session["_csrf_token"]


def test_the_token_is_the_one_the_form_page_prints(client):
    page = client.get("/login").text
    assert f'value="{client.session["_csrf_token"]}"' in page
    token = client.session["_csrf_token"]
    client.post("/echo")
    assert client.session["_csrf_token"] == token  # reused, not replaced


def test_csrf_false_sends_no_token_and_is_refused(client):
    response = client.post("/echo", data={"a": "1"}, csrf=False)
    assert response.status_code == 403
    assert "CSRF token is missing" in response.text


@pytest.mark.parametrize(
    "options",
    [
        {"data": {"csrf_token": "forged"}},
        {"headers": {"x-csrf-token": "forged"}},
        {"data": "csrf_token=forged", "content_type": "application/x-www-form-urlencoded"},
    ],
)
def test_a_token_the_test_sends_itself_is_left_alone(client, options):
    client.get("/login")  # a session with a token exists: a wrong one must still be refused
    response = client.post("/echo", **options)
    assert response.status_code == 403
    assert "incorrect" in response.text


def test_safe_methods_and_exempt_views_get_no_token_and_no_session(client):
    assert client.get("/echo").json["token"] is None
    assert client.post("/api/hook", json={}).json == {"token": None, "session_cookie": False}
    assert client.post("/nowhere").status_code == 404
    assert len(client.cookie_jar) == 0


def test_app_without_a_secret_key_gets_no_token_and_has_no_session():
    client = make_app(secret_key=None).test_client()
    response = client.post("/echo", data={"a": "1"})
    assert response.status_code == 200
    assert response.json["token"] is None
    assert len(client.cookie_jar) == 0
    with pytest.raises(RuntimeError, match="secret key"):
        _ = client.session


def test_app_with_csrf_disabled_gets_no_token():
    client = make_app(csrf=False).test_client()
    assert client.post("/echo").json["token"] is None
    assert len(client.cookie_jar) == 0


def test_session_transaction_logs_a_user_in_without_the_form(client):
    with client.session_transaction() as session:
        assert session == {}
        session["user"] = "grace"
    assert client.get("/account").text == "Account of grace"
    with client.session_transaction() as session:
        assert session["user"] == "grace"
        del session["user"]
    assert client.get("/account").status_code == 302


def test_session_transaction_saves_changes_inside_values_and_nothing_after_an_error(client):
    with client.session_transaction() as session:
        session["cart"] = []
    with client.session_transaction() as session:
        session["cart"].append("tea")  # not noticed by the session itself
    assert client.session["cart"] == ["tea"]
    with pytest.raises(ZeroDivisionError), client.session_transaction() as session:
        session["cart"] = ["coffee"]
        raise ZeroDivisionError
    assert client.session["cart"] == ["tea"]


def test_session_transaction_refuses_what_json_cannot_hold(client):
    with pytest.raises(TypeError, match="cart"), client.session_transaction() as session:
        session["cart"] = [{1, 2}]


def test_client_session_is_a_copy(client):
    with client.session_transaction() as session:
        session["roles"] = ["reader"]
    snapshot = client.session
    snapshot["roles"].append("admin")
    snapshot["user"] = "mallory"
    assert client.session == {"roles": ["reader"]}


def test_session_transaction_without_a_change_writes_no_cookie(client):
    with client.session_transaction() as session:
        assert dict(session) == {}
    assert len(client.cookie_jar) == 0


# --- bodies -------------------------------------------------------------------------------------------------------


def test_json_round_trip(client):
    payload = {"name": "Zoë", "tags": ["a", "b"], "nested": {"n": 1.5, "ok": True, "none": None}}
    response = client.put("/echo", json=payload)
    assert response.status_code == 200
    assert response.json["json"] == payload
    assert response.json["content_type"] == "application/json"
    assert response.is_json and response.mimetype == "application/json"
    assert response.get_json() == response.json
    assert client.get("/login").json is None  # HTML: not JSON, so None (as Flask)


def test_forms_query_strings_and_raw_bodies(client):
    response = client.post("/echo?a=1", query={"b": ["2", "3"], "c": "ü"}, data={"x": ["1", "2"], "n": 5})
    assert response.json["query"] == {"a": ["1"], "b": ["2", "3"], "c": ["ü"]}
    assert response.json["form"] == {"x": ["1", "2"], "n": ["5"]}
    assert response.json["content_type"] == "application/x-www-form-urlencoded"
    raw = client.post("/echo", data=b"plain bytes", content_type="text/plain")
    assert raw.json["content_type"] == "text/plain"
    assert raw.request.body == b"plain bytes"
    assert client.post("/echo", data="a=1&a=2", headers={"Content-Type": "application/x-www-form-urlencoded"}).json[
        "form"
    ] == {"a": ["1", "2"]}
    with pytest.raises(TypeError, match="not both"):
        client.post("/echo", data={"a": "1"}, json={"a": 1})


def test_multipart_upload_through_data(client, tmp_path):
    on_disk = tmp_path / "notes.md"
    on_disk.write_text("# notes")
    response = client.post(
        "/upload",
        data={
            "avatar": (b"PNG...", "me.png"),
            "doc": (io.BytesIO(b"text"), 'a "quoted" name.txt', "text/x-custom"),
            "more": [(io.BytesIO(b"1"), "one.bin"), (on_disk, "notes.md")],
            "title": "not a file",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json == {
        "avatar": [{"filename": "me.png", "type": "image/png", "data": "PNG..."}],
        "doc": [{"filename": 'a "quoted" name.txt', "type": "text/x-custom", "data": "text"}],
        "more": [
            {"filename": "one.bin", "type": "application/octet-stream", "data": "1"},
            {"filename": "notes.md", "type": "text/markdown", "data": "# notes"},
        ],
    }
    assert response.request.content_type == "multipart/form-data"
    assert response.request.form["title"] == "not a file"


def test_a_form_can_be_sent_as_multipart_without_files(client):
    response = client.post("/echo", data={"a": "1"}, content_type="multipart/form-data")
    assert response.json["content_type"] == "multipart/form-data"
    assert response.json["form"] == {"a": ["1"]}


# --- responses ---------------------------------------------------------------------------------------------------


def test_response_attributes(client):
    response = client.get("/caf%C3%A9?x=1")
    assert response.status == "404 Not Found" and response.status_code == 404
    assert response.request_path == "/caf%C3%A9"
    assert response.request.path == "/café"
    assert client.get("/café").request_path == "/caf%C3%A9"
    response = client.get("/login")
    assert response.content_type == "text/html; charset=utf-8"
    assert response.mimetype == "text/html"
    assert response.headers["content-type"] == response.headers["Content-Type"]
    assert response.get_data(as_text=True) == response.text
    assert response.location is None
    assert client.post("/logout").location == "/login"
    assert repr(response) == "<TestResponse 200 OK for GET /login>"


def test_text_is_decoded_with_the_responses_charset():
    app = App(__name__)

    @app.get("/latin")
    def latin(request):
        return Response("café".encode("latin-1"), content_type="text/plain; charset=latin-1")

    assert app.test_client().get("/latin").text == "café"


def test_head_has_the_headers_of_get_and_no_body(client):
    get, head = client.get("/login"), client.head("/login")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.data))


def test_teardown_hooks_run_after_a_streamed_body_is_consumed():
    app = App(__name__)
    events = []

    @app.teardown_request
    def teardown(request, error):
        events.append(("teardown", error))

    @app.get("/stream")
    def stream(request):
        def chunks():
            for n in range(3):
                events.append(("chunk", n))
                yield f"{n},"

        return chunks()

    client = app.test_client()
    assert client.get("/stream").data == b"0,1,2,"
    assert events == [("chunk", 0), ("chunk", 1), ("chunk", 2), ("teardown", None)]
    events.clear()
    assert client.head("/stream").data == b""
    assert events == [("teardown", None)]  # HEAD: the generator is closed unread, the hooks still run


def test_errors_are_pages_not_exceptions(client):
    response = client.get("/missing", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json is not None


def test_a_wsgi_app_breaking_the_protocol_is_reported():
    client = TestClient(lambda environ, start_response: [b"no start_response"])
    with pytest.raises(AssertionError, match="start_response"):
        client.get("/")


# --- cookies -----------------------------------------------------------------------------------------------------


def test_cookies_are_kept_and_deleted(client):
    response = client.get("/cookies/set/theme/dark")
    assert response.cookies["theme"].value == "dark"
    assert client.get("/cookies").json == {"theme": "dark"}
    assert client.get_cookie("theme").value == "dark"
    client.get("/cookies/delete/theme")
    assert client.get("/cookies").json == {}
    assert client.get_cookie("theme") is None


def test_cookie_paths_are_honoured(client):
    client.get("/cookies/set/deep/1?path=/cookies/deep")
    client.get("/cookies/set/deep/root")
    assert client.get("/cookies").json == {"deep": "root"}
    # Both go to /cookies/deep/..., the longer path first, and the app reads the first of a name.
    assert client.get("/cookies/deep/page").json == {"deep": "1"}
    assert [c.path for c in client.cookie_jar if c.name == "deep"] == ["/cookies/deep", "/"]
    client.get("/cookies/delete/deep?path=/cookies/deep")
    assert client.get("/cookies/deep/page").json == {"deep": "root"}


def test_secure_cookies_are_set_and_sent_only_over_https(client):
    client.get("/cookies/set/token/x?secure")
    assert client.get_cookie("token") is None  # an http response may not set a Secure cookie
    client.get("https://localhost/cookies/set/token/x?secure")
    assert client.get("https://localhost/cookies").json == {"token": "x"}
    assert client.get("/cookies").json == {}
    client.get("/cookies/set/token/plain")  # ... nor overwrite one
    assert client.get_cookie("token").secure


def test_cookies_expire(client):
    now = [1_000_000.0]
    client.cookie_jar = CookieJar(clock=lambda: now[0])
    client.set_cookie("short", "lived", max_age=60)
    assert client.get("/cookies").json == {"short": "lived"}
    now[0] += 61
    assert client.get("/cookies").json == {}


def test_set_get_and_delete_cookie(client):
    client.set_cookie("prefs", 'a b;"c"%', path="/cookies")
    assert client.get("/cookies").json == {"prefs": 'a b;"c"%'}
    assert client.get("/echo").json["cookies"] == {}  # not under /cookies
    assert client.get_cookie("prefs").path == "/cookies"
    assert client.get_cookie("prefs", path="/") is None
    client.delete_cookie("prefs", path="/elsewhere")
    assert client.get_cookie("prefs") is not None
    client.delete_cookie("prefs")
    assert client.get("/cookies").json == {}
    with pytest.raises(ValueError, match="cookie name"):
        client.set_cookie("bad name", "x")


def test_cookies_the_test_sends_come_first(client):
    client.set_cookie("a", "from the jar")
    assert client.get("/cookies", headers={"Cookie": "a=from the test"}).json == {"a": "from the test"}


def test_a_secure_session_needs_an_https_client():
    app = make_app(session_secure=True)
    with pytest.raises(RuntimeError, match="scheme='https'"), app.test_client().session_transaction() as session:
        session["user"] = "ada"
    client = TestClient(app, scheme="https")
    with client.session_transaction() as session:
        session["user"] = "ada"
    assert client.get("/account").text == "Account of ada"
    assert client.post("/echo").status_code == 200
    assert client.get_cookie("session").secure


def test_environ_options_reach_the_app(client):
    response = client.get("/echo", remote_addr="10.0.0.7", host="example.com:8080", extra={"custom.key": 1})
    request = response.request
    assert (request.remote_addr, request.host, request.environ["custom.key"]) == ("10.0.0.7", "example.com:8080", 1)
    assert response.url == "http://example.com:8080/echo"


# --- redirects ---------------------------------------------------------------------------------------------------


def make_redirecting_app() -> App:
    app = App(__name__, secret_key="redirects")

    @app.route("/to/<int:status>", methods=["GET", "POST", "PUT", "HEAD"])
    def to(request, status):
        return redirect(request.query.get("location", "/echo"), status)

    @app.route("/echo", methods=["GET", "POST", "PUT", "HEAD"])
    def echo(request):
        return {"method": request.method, "body": request.body.decode(), "query": request.query_string}

    @app.get("/loop")
    def loop(request):
        return redirect("/loop")

    @app.get("/deep/relative")
    def relative(request):
        return redirect("../echo?from=relative")

    return app


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (301, "POST", "GET"),
        (302, "POST", "GET"),
        (303, "POST", "GET"),
        (303, "PUT", "GET"),
        (303, "HEAD", "HEAD"),
        (302, "PUT", "PUT"),
        (307, "POST", "POST"),
        (308, "PUT", "PUT"),
    ],
)
def test_redirects_change_the_method_as_browsers_do(status, method, expected):
    client = make_redirecting_app().test_client()
    response = client.open(f"/to/{status}", method, data=b"payload", follow_redirects=True)
    assert [r.status_code for r in response.history] == [status]
    assert response.request.method == expected
    if expected != "HEAD":
        assert response.json["method"] == expected
        assert response.json["body"] == ("" if expected == "GET" else "payload")


def test_redirects_relative_and_absolute_on_the_same_host():
    client = make_redirecting_app().test_client()
    response = client.get("/deep/relative", follow_redirects=True)
    assert response.json["query"] == "from=relative"
    response = client.get("/to/302", query={"location": "http://localhost/echo?x=1"}, follow_redirects=True)
    assert (response.request_path, response.json["query"]) == ("/echo", "x=1")
    response = client.get("/to/302", query={"location": "https://localhost/echo"}, follow_redirects=True)
    assert response.url == "https://localhost/echo"


def test_a_redirect_to_a_path_with_non_ascii_characters():
    app = make_redirecting_app()

    @app.get("/café/<name>")
    def cafe(request, name):
        return {"name": name, "path": request.path}

    response = app.test_client().get("/to/302", query={"location": "/café/thé au lait"}, follow_redirects=True)
    assert response.history[0].location == "/caf%C3%A9/th%C3%A9%20au%20lait"
    assert response.json == {"name": "thé au lait", "path": "/café/thé au lait"}


def test_redirects_elsewhere_and_endless_ones_are_errors():
    client = make_redirecting_app().test_client()
    with pytest.raises(RedirectError, match="another host"):
        client.get("/to/302", query={"location": "https://example.com/"}, follow_redirects=True)
    with pytest.raises(RedirectError, match="another host"):
        client.get("/to/302", query={"location": "//example.com/"}, follow_redirects=True)
    with pytest.raises(RedirectError, match="more than 10 redirects"):
        client.get("/loop", follow_redirects=True)
    response = client.get("/loop")
    assert response.status_code == 302 and response.history == ()


def test_history_lists_every_hop():
    app = make_redirecting_app()

    @app.get("/a")
    def a(request):
        return redirect("/to/302")

    response = app.test_client().get("/a", follow_redirects=True)
    assert [r.request_path for r in response.history] == ["/a", "/to/302"]
    assert response.history[1].history == response.history[:1]


# --- mounted apps ------------------------------------------------------------------------------------------------


def make_site() -> tuple[App, App]:
    site = make_app()
    blog = App("blog", secret_key="the blog's own key")

    @blog.route("/")
    def index(request):
        return {"visits": request.session.get("visits", 0), "url": request.url_for("index")}

    @blog.post("/visit")
    def visit(request):
        request.session["visits"] = request.session.get("visits", 0) + 1
        return redirect(request.url_for("index"))

    @blog.get("/leave")
    def leave(request):
        return redirect("/login")

    site.mount("/blog", blog)
    return site, blog


def test_a_mounted_app_has_its_own_session_cookie_and_token():
    site, _ = make_site()
    client = site.test_client()
    client.post("/login", data={"name": "ada", "password": "lovelace"})
    response = client.post("/blog/visit", follow_redirects=True)
    assert response.json == {"visits": 1, "url": "/blog/"}
    assert response.history[0].cookies["session_blog"].path == "/blog"
    cookie = client.get_cookie("session_blog")
    assert (cookie.path, cookie.http_only) == ("/blog", True)
    with client.session_transaction("/blog/") as session:
        assert session["visits"] == 1
        session["visits"] = 41
    assert client.post("/blog/visit", follow_redirects=True).json["visits"] == 42
    assert client.session["user"] == "ada"  # the site's session is untouched
    assert "visits" not in client.session
    assert "session_blog" not in client.get("/echo").json["cookies"]


def test_a_client_can_mount_an_app_itself():
    _, blog = make_site()
    client = TestClient(blog, script_name="/blog/")
    response = client.post("/blog/visit", follow_redirects=True)
    assert response.json == {"visits": 1, "url": "/blog/"}
    assert client.get_cookie("session_blog").path == "/blog"
    assert client.session == {"visits": 1, "_csrf_token": client.session["_csrf_token"]}
    with pytest.raises(ValueError, match="not under /blog"):
        client.get("/login")
    with pytest.raises(RedirectError, match="out of /blog"):
        client.get("/blog/leave", follow_redirects=True)


def test_a_mounted_wsgi_app_that_is_not_ours_gets_requests_but_no_token():
    site = make_app()
    seen = []

    def legacy(environ, start_response):
        seen.append((environ["SCRIPT_NAME"], environ["PATH_INFO"], environ.get("HTTP_X_CSRF_TOKEN")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"legacy"]

    site.mount("/legacy", legacy)
    client = site.test_client()
    assert client.post("/legacy/form").text == "legacy"
    assert seen == [("/legacy", "/form", None)]
    with pytest.raises(RuntimeError, match="not a framework App"), client.session_transaction("/legacy/"):
        pass


# --- fixtures, context managers, environ_for ---------------------------------------------------------------------


def test_the_client_is_a_context_manager(app):
    with app.test_client() as client:
        assert client.get("/login").status_code == 200
    assert client.get("/login").status_code == 200  # nothing was closed


def test_environ_for_keeps_paths_that_look_like_urls():
    environ = environ_for("//evil.example/x?q=1")
    assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]) == (
        "//evil.example/x",
        "q=1",
        "localhost",
    )
    environ = environ_for("https://example.com:8443/a%20b?q=é", encoded=True)
    assert environ["PATH_INFO"] == "/a b"
    assert environ["QUERY_STRING"] == "q=%C3%A9"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"], environ["wsgi.url_scheme"]) == (
        "example.com",
        "8443",
        "https",
    )
    assert environ_for("/café")["PATH_INFO"] == "/café".encode().decode("latin-1")
    assert environ_for("/", host="[::1]:8080")["SERVER_NAME"] == "[::1]"
    environ = environ_for("/", headers=[("Accept", "a"), ("accept", "b"), ("Cookie", "x=1"), ("Cookie", "y=2")])
    assert (environ["HTTP_ACCEPT"], environ["HTTP_COOKIE"]) == ("a, b", "x=1; y=2")


def test_request_context_still_builds_on_environ_for(app):
    with app.test_request_context("/echo?a=1", script_name="/mounted") as request:
        assert request.url_for("echo") == "/mounted/echo"
        assert request.query["a"] == "1"


# --- properties --------------------------------------------------------------------------------------------------

# Text a browser can send: anything but lone surrogates, which UTF-8 cannot encode.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
# Multipart field names are quoted as browsers quote them (WHATWG): "%22" in a name reads back as a quote.
names = text.filter(lambda name: "%" not in name)
forms = st.dictionaries(names, st.lists(text, min_size=1, max_size=3), max_size=6)


def echo_app() -> App:
    app = App(__name__, secret_key="properties")

    @app.route("/", methods=["GET", "POST"])
    def echo(request):
        return {
            "form": {name: request.form.getall(name) for name in request.form},
            "query": {name: request.query.getall(name) for name in request.query},
            "cookies": request.cookies,
        }

    return app


ECHO = echo_app()


@given(form=forms, multipart=st.booleans())
def test_any_form_reaches_request_form_intact(form, multipart):
    response = ECHO.test_client().post("/", data=form, content_type="multipart/form-data" if multipart else None)
    assert response.status_code == 200, response.text
    assert response.json["form"] == form


@given(query=st.dictionaries(text, st.lists(text, min_size=1, max_size=3), max_size=6))
def test_any_query_reaches_request_query_intact(query):
    assert ECHO.test_client().get("/", query=query).json["query"] == query


@given(value=text)
def test_any_cookie_value_reaches_request_cookies_intact(value):
    client = ECHO.test_client()
    client.set_cookie("c", value)
    assert client.get("/").json["cookies"] == {"c": value}


@given(data=st.recursive(st.none() | st.booleans() | st.integers() | text, lambda inner: st.lists(inner, max_size=3)))
def test_any_session_value_survives_a_transaction(data):
    client = ECHO.test_client()
    with client.session_transaction() as session:
        session["value"] = data
    assert client.session == {"value": data}
    assert json.loads(json.dumps(client.session)) == client.session
