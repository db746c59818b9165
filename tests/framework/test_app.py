"""The app's request journey: hook order, error handlers, error pages, debug mode, mounting and middleware."""

import io
import logging
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App, HTTPError, Response, abort


class Boom(Exception):
    pass


class SmallBoom(Boom):
    pass


def test_hooks_run_in_the_documented_order():
    app = App(__name__)
    calls = []

    @app.before_request
    def first_before(request):
        calls.append("before 1")

    @app.before_request
    def second_before(request):
        calls.append(f"before 2 ({request.endpoint})")

    @app.after_request
    def first_after(request, response):
        calls.append("after 1")
        response.headers.add("X-Order", "1")
        return response

    @app.after_request
    def second_after(request, response):
        calls.append("after 2")
        response.headers.add("X-Order", "2")
        return response

    @app.teardown
    def cleanup(request, error):
        calls.append(f"teardown {error!r}")

    @app.route("/")
    def index(request):
        calls.append("view")
        return "ok"

    response = TestApp(app).get("/")
    assert calls == ["before 1", "before 2 (index)", "view", "after 2", "after 1", "teardown None"]
    assert response.headers.getall("X-Order") == ["2", "1"]


def test_before_request_can_short_circuit():
    app = App(__name__)
    seen = []

    @app.before_request
    def gate(request):
        if request.query.get("key") != "open":
            return "closed", 401

    @app.before_request
    def never(request):
        seen.append("second hook")

    @app.route("/")
    def index(request):
        seen.append("view")
        return "inside"

    client = TestApp(app)
    assert client.get("/", status=401).text == "closed"
    assert seen == []
    assert client.get("/?key=open").text == "inside"
    # before_request also runs for paths that match no route (a maintenance page, say).
    assert client.get("/missing", status=401).text == "closed"


def test_teardown_always_runs_and_sees_unhandled_errors(caplog):
    app = App(__name__)
    seen = []

    @app.teardown
    def record(request, error):
        seen.append(type(error).__name__ if error else None)

    @app.teardown
    def broken_teardown(request, error):
        raise RuntimeError("teardown bug")

    @app.route("/fail")
    def fail(request):
        raise Boom("view failed")

    @app.route("/missing")
    def missing(request):
        abort(404)

    client = TestApp(app)
    with caplog.at_level(logging.ERROR, logger="framework"):
        client.get("/fail", status=500)
        client.get("/missing", status=404)
    assert seen == ["Boom", None]
    assert "teardown hook" in caplog.text and "broken_teardown" in caplog.text and "teardown bug" in caplog.text


def test_error_handlers_by_status_and_by_exception_class():
    app = App(__name__)

    @app.errorhandler(404)
    def not_found(request, error):
        return f"nothing at {request.path}"  # The status defaults to the error's own.

    @app.errorhandler(Boom)
    def boom(request, error):
        return {"boom": str(error)}, 409

    @app.route("/small")
    def small(request):
        raise SmallBoom("subclass")

    @app.route("/teapot")
    def teapot(request):
        raise HTTPError(418, "short and stout")

    client = TestApp(app)
    assert client.get("/nope", status=404).text == "nothing at /nope"
    assert client.get("/small", status=409).json == {"boom": "subclass"}
    assert "short and stout" in client.get("/teapot", status=418).text


def test_500_handler_and_failing_handlers(caplog):
    app = App(__name__)

    @app.errorhandler(500)
    def server_error(request, error):
        return f"sorry: {type(error).__name__}"

    @app.errorhandler(KeyError)
    def broken_handler(request, error):
        raise RuntimeError("handler bug")

    @app.route("/fail")
    def fail(request):
        raise ValueError("x")

    @app.route("/key")
    def key(request):
        return {}["missing"]

    client = TestApp(app)
    with caplog.at_level(logging.ERROR, logger="framework"):
        assert client.get("/fail", status=500).text == "sorry: ValueError"
        response = client.get("/key", status=500)
    assert "Internal Server Error" in response.text
    assert "handler bug" not in response.text


def test_after_request_errors_become_500(caplog):
    app = App(__name__)

    @app.after_request
    def broken(request, response):
        if request.path == "/forgot-return":
            response.headers["X-Seen"] = "1"  # ... and no "return response".
        else:
            raise RuntimeError("after bug")

    app.add_route("/", lambda request: "ok", name="index")
    app.add_route("/forgot-return", lambda request: "ok", name="forgot")
    client = TestApp(app)
    with caplog.at_level(logging.ERROR, logger="framework"):
        client.get("/", status=500)
        client.get("/forgot-return", status=500)
    assert "after bug" in caplog.text
    assert "after_request hook 'broken' returned None, not a Response" in caplog.text


def test_error_pages_are_html_or_json_by_accept():
    app = App(__name__)
    app.add_route("/only-get", lambda request: "ok", name="only_get")
    client = TestApp(app)

    html = client.get("/missing", status=404)
    assert html.content_type == "text/html"
    assert "<h1>404 Not Found</h1>" in html.text

    data = client.get("/missing", headers={"Accept": "application/json"}, status=404).json
    assert data == {
        "error": {"code": 404, "name": "Not Found", "description": "The requested URL was not found on this server."}
    }
    response = client.post("/only-get", headers={"Accept": "application/json"}, status=405)
    assert response.json["error"]["code"] == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_500_is_json_for_json_clients_without_a_traceback(caplog):
    app = App(__name__)

    @app.route("/")
    def index(request):
        raise Boom("secret detail")

    with caplog.at_level(logging.ERROR, logger="framework"):
        response = TestApp(app).get("/", headers={"Accept": "application/json"}, status=500)
    assert response.json["error"]["code"] == 500 and "secret detail" not in response.text


def test_error_descriptions_are_escaped():
    app = App(__name__)
    app.add_route("/", lambda request: abort(400, "<script>alert(1)</script>"), name="index")
    text = TestApp(app).get("/", status=400).text
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_no_traceback_without_debug(caplog):
    app = App(__name__)

    @app.route("/")
    def index(request):
        secret = "hunter2"  # noqa: F841 - a local that must never reach the client
        raise Boom("kaboom")

    with caplog.at_level(logging.ERROR, logger="framework"):
        response = TestApp(app).get("/", status=500)
    assert "kaboom" not in response.text and "hunter2" not in response.text and "Traceback" not in response.text
    assert "kaboom" in caplog.text  # ... but the log has it.


def test_debug_shows_a_traceback_page(caplog):
    app = App(__name__, debug=True)

    @app.route("/")
    def index(request):
        local_value = "<visible>"  # noqa: F841
        raise Boom("kaboom")

    client = TestApp(app)
    with caplog.at_level(logging.ERROR, logger="framework"):
        html = client.get("/", status=500).text
        data = client.get("/", headers={"Accept": "application/json"}, status=500).json
    assert "Boom: kaboom" in html and "debug=True" in html
    assert "local_value" in html and "&lt;visible&gt;" in html
    assert "test_app.py" in html
    assert "Traceback" in data["error"]["traceback"]


def test_mount_shifts_script_name_and_path_info():
    seen = {}

    def legacy(environ, start_response):
        seen["script"], seen["path"] = environ["SCRIPT_NAME"], environ["PATH_INFO"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"legacy"]

    app = App(__name__)
    app.mount("/legacy", legacy)
    app.add_route("/legacyfoo", lambda request: "not mounted", name="legacyfoo")
    client = TestApp(app)

    assert client.get("/legacy/a/b?x=1").text == "legacy"
    assert seen == {"script": "/legacy", "path": "/a/b"}
    client.get("/legacy")
    assert seen == {"script": "/legacy", "path": ""}
    assert client.get("/legacyfoo").text == "not mounted"


def test_mounted_framework_app_builds_urls_under_its_prefix():
    child = App(__name__)

    @child.route("/")
    def child_index(request):
        return {"self": request.url_for("child_index"), "item": request.url_for("child_item", item_id=7)}

    @child.route("/items/<int:item_id>")
    def child_item(request, item_id):
        return {"item": item_id, "url": request.url, "script_name": request.script_name}

    parent = App(__name__)
    parent.mount("/shop", child)
    outer = App(__name__)
    outer.mount("/site", parent)
    client = TestApp(outer)

    assert client.get("/site/shop/").json == {"self": "/site/shop/", "item": "/site/shop/items/7"}
    data = client.get("/site/shop/items/7").json
    assert data["item"] == 7 and data["script_name"] == "/site/shop"
    assert data["url"] == "http://localhost:80/site/shop/items/7"
    # The mount point itself, without its slash, redirects to the slash (PATH_INFO "" is the app's root).
    assert client.get("/site/shop", status=308).headers["Location"].endswith("/site/shop/")
    # A trailing-slash redirect inside the mounted app keeps the prefix.
    assert client.get("/site/shop/items/7/", status=308).headers["Location"].endswith("/site/shop/items/7")


def test_mounted_flask_app_builds_urls_under_its_prefix():
    flask = pytest.importorskip("flask")
    legacy = flask.Flask("legacy")

    @legacy.route("/hello/<name>")
    def hello(name):
        return {"url": flask.url_for("hello", name=name), "root": flask.request.script_root}

    @legacy.route("/form", methods=["POST"])
    def form():
        return {"field": flask.request.form["field"]}

    app = App(__name__, secret_key="csrf applies to our views, not to a mounted app's")
    app.mount("/legacy", legacy)
    client = TestApp(app)
    assert client.get("/legacy/hello/ann").json == {"url": "/legacy/hello/ann", "root": "/legacy"}
    assert client.post("/legacy/form", {"field": "x"}).json == {"field": "x"}
    client.get("/legacy/missing", status=404)  # Flask's own 404, from inside the mount.


def test_longest_mount_prefix_wins():
    def answer(text):
        def wsgi(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [text.encode()]

        return wsgi

    app = App(__name__)
    app.mount("/a", answer("a"))
    app.mount("/a/b", answer("a/b"))
    client = TestApp(app)
    assert client.get("/a/b/c").text == "a/b"
    assert client.get("/a/c").text == "a"
    with pytest.raises(ValueError):
        app.mount("/", answer("root"))


def test_middleware_wraps_outermost_last():
    calls = []

    class Tag:
        def __init__(self, app, name):
            self.app, self.name = app, name

        def __call__(self, environ, start_response):
            calls.append(self.name)

            def tagged_start_response(status, headers, exc_info=None):
                return start_response(status, [*headers, ("X-Middleware", self.name)], exc_info)

            return self.app(environ, tagged_start_response)

    app = App(__name__)
    app.add_route("/", lambda request: "ok", name="index")
    app.add_middleware(Tag, name="inner")
    app.add_middleware(Tag, name="outer")
    response = TestApp(app).get("/")
    assert calls == ["outer", "inner"]
    assert response.headers.getall("X-Middleware") == ["inner", "outer"]


def test_app_url_for_knows_the_mount_point_during_a_request_and_says_why_it_cannot_outside_one():
    app = App(__name__)

    @app.route("/p/<int:n>")
    def page(request, n):
        return {
            "path": app.url_for("page", n=n + 1),
            "external": app.url_for("page", _request=request, _external=True, n=n + 1),
        }

    site = App(__name__)
    site.mount("/mounted", app)
    assert TestApp(site).get("/mounted/p/1", extra_environ={"HTTP_HOST": "example.test"}).json == {
        "path": "/mounted/p/2",
        "external": "http://example.test/mounted/p/2",
    }
    with pytest.raises(RuntimeError, match=r"outside a request.*cannot know where the app is mounted"):
        app.url_for("page", n=1)


def test_view_may_return_response_subclass_and_hooks_may_replace_it():
    app = App(__name__)

    @app.after_request
    def replace(request, response):
        if request.path == "/replace":
            return Response("replaced", 202)
        return response

    app.add_route("/replace", lambda request: "original", name="replace")
    assert TestApp(app).get("/replace", status=202).text == "replaced"


def test_error_handlers_keep_the_error_status_and_headers():
    app = App(__name__, templates="templates")

    @app.errorhandler(404)
    def not_found(request, error):
        return app.render(request, "page.html", title="Lost", message=request.path)  # A Response at 200.

    @app.errorhandler(405)
    def not_allowed(request, error):
        return "try another method"

    @app.errorhandler(Boom)
    def boom(request, error):
        return Response("handled, all is well"), 200  # Saying 200 explicitly still means 200.

    @app.route("/only-get")
    def only_get(request):
        return "ok"

    @app.route("/boom")
    def boom_view(request):
        raise Boom()

    client = TestApp(app)
    assert "<title>Lost</title>" in client.get("/nowhere", status=404).text
    response = client.post("/only-get", status=405)
    assert response.text == "try another method" and response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert client.get("/boom", status=200).text == "handled, all is well"


def test_teardown_of_a_streamed_body_waits_for_the_server_to_close_it():
    app = App(__name__)
    events = []

    @app.teardown
    def record(request, error):
        events.append(f"teardown {type(error).__name__ if error else None}")

    @app.post("/copy")
    def copy(request):
        upload = request.files["f"]

        def chunks():
            events.append("streaming")
            yield b"got: "
            yield upload.read()  # The upload is still open: the request is not over yet.

        return chunks()

    @app.route("/broken")
    def broken(request):
        def chunks():
            yield "first "
            raise Boom("mid-stream")

        return chunks()

    client = TestApp(app)
    assert client.post("/copy", upload_files=[("f", "f.txt", b"payload")]).text == "got: payload"
    assert events == ["streaming", "teardown None"]

    events.clear()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/broken", "wsgi.input": io.BytesIO()}
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert events == []  # Not torn down before the server has sent the body...
    with pytest.raises(Boom):
        list(body)
    body.close()
    assert events == ["teardown Boom"]  # ... and the teardown hears how the stream ended.


def test_teardown_sees_handled_exceptions_but_not_http_errors():
    app = App(__name__)
    seen = []
    app.teardown(lambda request, error: seen.append(type(error).__name__ if error else None))
    app.errorhandler(Boom)(lambda request, error: ("conflict", 409))

    @app.route("/handled")
    def handled(request):
        raise Boom("turned into a 409 page")

    @app.route("/gone")
    def gone(request):
        abort(410)

    client = TestApp(app)
    client.get("/handled", status=409)
    client.get("/gone", status=410)
    assert seen == ["Boom", None]


def test_a_client_cannot_forge_lines_in_the_log_through_a_failing_path(caplog):
    """The path of a request that failed is logged as in a URL: decoded, "%0A" was a line break, and a client
    could add a line of its own choosing (a fake entry, as from another request) to the server's log."""
    app = App(__name__)

    @app.route("/fail/<path:rest>")
    def fail(request, rest):
        raise Boom("view failed")

    with caplog.at_level(logging.ERROR):
        TestApp(app).get("/fail/x%0A[ERROR] forged", status=500)
    messages = [record.getMessage() for record in caplog.records if "unhandled exception" in record.getMessage()]
    assert messages == ["unhandled exception in GET /fail/x%0A%5BERROR%5D%20forged"]


# -- the status a view returns in a tuple ------------------------------------------------------------------------


def status_app(status) -> App:
    app = App(__name__)

    @app.get("/")
    def view(request):
        return "body", status

    return app


@pytest.mark.parametrize(
    ("status", "code"),
    [(201, 201), ("201 CREATED", 201), ("404", 404), ("299 Mine", 299), (HTTPStatus.CREATED, 201)],
)
def test_a_status_may_be_a_number_or_a_status_line(status, code):
    response = TestApp(status_app(status)).get("/", expect_errors=True)
    assert response.status_int == code and response.text == "body"


@pytest.mark.parametrize(
    "status", ["created", "2O1 Created", "201 Created\r\nSet-Cookie: x=1", 1000, 99, 101, True, 201.0, None, b"201"]
)
def test_a_status_that_is_not_one_is_a_500_through_the_apps_error_handling(status, caplog):
    """``("created", "201 CREATED")`` raised TypeError while the response was being sent, after the app's error
    handling: the exception escaped to the server. Now it is the view's error, seen by the 500 handler and logged."""
    app = status_app(status)
    seen = []

    @app.errorhandler(500)
    def failed(request, error):
        seen.append(error)
        return "sorry", 500

    with caplog.at_level(logging.ERROR, logger="framework"):
        response = TestApp(app).get("/", status=500)
    assert response.text == "sorry"
    assert isinstance(seen[0], TypeError | ValueError) and "status" in str(seen[0])
    assert "status" in caplog.text


@given(st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats()))
def test_whatever_status_a_view_returns_the_client_gets_an_answer(status):
    response = TestApp(status_app(status)).get("/", expect_errors=True)
    assert 200 <= response.status_int <= 599


# -- the status a Response is built with, or given later -----------------------------------------------------------


def response_status_app(make) -> App:
    """An app whose view returns ``make()`` and whose 500 handler records the error it was given."""
    app = App(__name__)
    app.seen = []

    @app.get("/")
    def view(request):
        return make()

    @app.errorhandler(500)
    def failed(request, error):
        app.seen.append(error)
        return "sorry", 500

    return app


@pytest.mark.parametrize("status", ["created", "201 CREATED\r\nX: y", 103, 100, 1000, True, 201.0, None])
def test_a_response_built_with_a_bad_status_is_a_500_through_the_apps_error_handling(status, caplog):
    """``Response("x", "201 CREATED")`` raised TypeError only when it was sent, after the app's error handling, so
    the exception reached the server; ``Response("x", 103)`` went out as a final 1xx. The constructor checks it now."""
    app = response_status_app(lambda: Response("x", status))
    with caplog.at_level(logging.ERROR, logger="framework"):
        response = TestApp(app).get("/", status=500)
    assert response.text == "sorry"
    assert isinstance(app.seen[0], TypeError | ValueError) and "status" in str(app.seen[0])
    assert "status" in caplog.text


@pytest.mark.parametrize(
    ("status", "code"),
    [("201 CREATED", 201), ("202", 202), (204, 204), ("599 Mine", 599), (HTTPStatus.CREATED, 201)],
)
def test_a_response_status_may_be_a_status_line(status, code):
    response = Response("x", status)
    assert response.status == code
    assert type(response.status) is int  # An HTTPStatus is stored as its int: it formats as "HTTPStatus.CREATED".
    assert TestApp(response_status_app(lambda: Response("x", status))).get("/", status=code)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("202 Accepted", 202),
        (418, 418),
        ("bogus", 500),
        (103, 500),
        (HTTPStatus.ACCEPTED, 202),
        (HTTPStatus.EARLY_HINTS, 500),
    ],
)
def test_an_after_request_hook_setting_the_status_is_checked_inside_the_error_handling(status, code, caplog):
    """``response.status = "202 Accepted"`` in an after_request hook raised TypeError at send time, outside the
    error handlers; now the status is read as a status line, and one that is none is a 500 saying why."""
    app = response_status_app(lambda: "body")

    @app.after_request
    def restatus(request, response):
        response.status = status
        return response

    with caplog.at_level(logging.ERROR, logger="framework"):
        TestApp(app).get("/", status=code)
    if code == 500:
        assert "status" in str(app.seen[0]) and "status" in caplog.text


@given(st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats(), st.none()))
def test_whatever_status_a_response_is_given_the_client_gets_a_final_answer(status):
    response = TestApp(response_status_app(lambda: Response("x", status))).get("/", expect_errors=True)
    assert 200 <= response.status_int <= 599


@pytest.mark.parametrize("code", [600, 99, "404", True, HTTPStatus.CONTINUE])
def test_an_http_error_with_a_code_no_response_can_carry_is_a_500(code):
    """``raise HTTPError(600)`` made the error page a Response with status 600, refused while the error was being
    handled, so the exception reached the server; the code is checked where the error is raised now."""
    app = response_status_app(lambda: (_ for _ in ()).throw(HTTPError(code)))
    TestApp(app).get("/", status=500)
    assert isinstance(app.seen[0], ValueError) and "HTTPError" in str(app.seen[0])


# -- http.HTTPStatus, an int subclass, is a status wherever an int is ------------------------------------------------


def test_http_status_members_are_statuses_everywhere():
    """``type(value) is int`` refused ``HTTPStatus.CREATED`` (an ``int`` subclass): ``Response("x", CREATED)``,
    ``redirect(..., SEE_OTHER)``, ``abort(NOT_FOUND)`` and ``(body, CREATED)`` were all 500s.
    Any int subclass but ``bool`` is accepted now, and stored as a plain ``int``."""
    from framework import redirect

    app = App(__name__)

    @app.get("/built")
    def built(request):
        return Response("made", HTTPStatus.CREATED)

    @app.get("/tuple")
    def as_tuple(request):
        return "made", HTTPStatus.CREATED

    @app.get("/moved")
    def moved(request):
        return redirect("/x", HTTPStatus.SEE_OTHER)

    @app.get("/assigned")
    def assigned(request):
        response = Response("queued")
        response.status = HTTPStatus.ACCEPTED
        return response

    @app.get("/missing")
    def missing(request):
        abort(HTTPStatus.NOT_FOUND)

    @app.errorhandler(HTTPStatus.NOT_FOUND)
    def not_found(request, error):
        assert type(error.code) is int
        return "no such page", HTTPStatus.NOT_FOUND

    client = TestApp(app)
    assert client.get("/built", status=201).text == "made"
    assert client.get("/tuple", status=201).text == "made"
    assert client.get("/moved", status=303).headers["Location"].endswith("/x")
    assert client.get("/assigned", status=202).text == "queued"
    assert client.get("/missing", status=404).text == "no such page"
    error = HTTPError(HTTPStatus.IM_A_TEAPOT)
    assert type(error.code) is int and error.code == 418 and str(error) == "418 I'm a Teapot"


@given(st.sampled_from([status for status in HTTPStatus if 200 <= status <= 599]))
def test_every_final_http_status_member_is_accepted_as_its_int(status):
    response = Response("x", status)
    assert type(response.status) is int and response.status == status.value
