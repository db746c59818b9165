"""Per-request state (request.g), flash messages, the read-only request, and template globals."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App, Globals, current_request, redirect


def test_request_g_carries_state_from_a_hook_to_the_view_and_the_template(tmp_path):
    (tmp_path / "user.html").write_text("{{ g.user }} / {{ g.get('missing', 'none') }}")
    app = App(__name__, templates=tmp_path)

    @app.before_request
    def load_user(request):
        request.g.user = request.headers.get("X-User", "anonymous")

    @app.get("/")
    def home(request):
        assert "user" in request.g and list(request.g) == ["user"]
        return request.render("user.html")

    client = TestApp(app)
    assert client.get("/", headers={"X-User": "ada"}).text == "ada / none"
    assert client.get("/").text == "anonymous / none"  # A new request, a new g.


def test_globals_behaves_like_a_small_dict():
    g = Globals()
    assert g.setdefault("db", 1) == 1 and g.setdefault("db", 2) == 1
    assert g.get("db") == 1 and g.pop("db") == 1 and g.pop("db", None) is None
    with pytest.raises(KeyError):
        g.pop("db")
    g.x = 5
    assert "x" in g and repr(g) == "<request.g {'x': 5}>"
    with pytest.raises(AttributeError, match=r"request.g has no 'user': set it first.*request.g.get\('user'\)"):
        g.user  # noqa: B018


def test_the_request_is_read_only_and_the_error_points_at_g():
    app = App(__name__)

    @app.get("/")
    def view(request):
        for name in ("user", "form", "path"):
            with pytest.raises(AttributeError, match=rf"request.{name} cannot be assigned.*request.g.{name}"):
                setattr(request, name, "x")
        with pytest.raises(AttributeError, match="cannot be deleted"):
            del request.path
        return "ok"

    TestApp(app).get("/")


def test_flash_messages_survive_one_redirect_and_are_shown_once(tmp_path):
    (tmp_path / "messages.html").write_text(
        "{% for category, message in get_flashed_messages(with_categories=true) %}[{{ category }}:{{ message }}]"
        "{% endfor %}|{{ get_flashed_messages(category_filter=['error']) | join(',') }}"
    )
    app = App(__name__, templates=tmp_path, secret_key="k")

    @app.post("/save")
    def save(request):
        request.flash("Saved.")
        request.flash("But <b>one</b> field was odd.", "error")
        return redirect(request.url_for("show"), 303)

    @app.get("/show")
    def show(request):
        return request.render("messages.html")

    @app.get("/token")
    def token(request):
        return request.csrf_token()

    client = TestApp(app)
    page = client.post("/save", {"csrf_token": client.get("/token").text}).follow()
    assert (
        page.text
        == "[message:Saved.][error:But &lt;b&gt;one&lt;/b&gt; field was odd.]|But &lt;b&gt;one&lt;/b&gt; field was odd."
    )
    assert client.get("/show").text == "|"  # Gone after being read.


def test_flashed_messages_without_a_secret_key_are_empty_and_flashing_says_why():
    app = App(__name__)

    @app.get("/read")
    def read(request):
        return {"messages": request.get_flashed_messages()}

    @app.get("/flash")
    def flash(request):
        with pytest.raises(RuntimeError, match="secret key"):
            request.flash("x")
        with pytest.raises(TypeError, match="takes text"):
            request.flash(42)  # type: ignore[arg-type]
        return "ok"

    client = TestApp(app)
    assert client.get("/read").json == {"messages": []}
    client.get("/flash")


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=50)), max_size=8))
def test_any_flashed_text_comes_back_in_order_with_its_category(messages):
    app = App(__name__, secret_key="k", csrf=False)

    @app.get("/flash")
    def flash(request):
        for category, message in messages:
            request.flash(message, category)
        return "ok"

    @app.get("/read")
    def read(request):
        return {"pairs": request.get_flashed_messages(with_categories=True)}

    client = TestApp(app)
    client.get("/flash")
    assert [tuple(pair) for pair in client.get("/read").json["pairs"]] == messages


def test_template_globals_filters_tests_and_context_processors(tmp_path):
    (tmp_path / "helpers.html").write_text(
        "{{ 'ada' | title_case }} {{ greeting() }} {{ 4 is even }} {{ answer }} {{ site }} {{ config.SITE_NAME }}"
    )
    app = App(__name__, templates=tmp_path)
    app.config["SITE_NAME"] = "Blog"

    @app.template_filter("title_case")
    def title_case(text):
        return text.title()

    @app.template_global
    def greeting():
        return "hello"

    @app.template_test()
    def even(number):
        return number % 2 == 0

    @app.context_processor
    def with_request(request):
        return {"answer": len(request.path)}

    @app.context_processor
    def without_request():
        return {"site": "Example"}

    @app.get("/abcd")
    def page(request):
        return request.render("helpers.html")

    assert TestApp(app).get("/abcd").text == "Ada hello True 5 Example Blog"


def test_a_context_processor_with_the_wrong_signature_is_refused_when_registered():
    app = App(__name__)
    with pytest.raises(TypeError, match="context processor"):

        @app.context_processor
        def two(request, other):
            return {}


def test_current_request_is_the_request_being_handled():
    app = App(__name__)

    @app.get("/")
    def view(request):
        return {"same": current_request() is request}

    assert current_request() is None
    assert TestApp(app).get("/").json == {"same": True}
    assert current_request() is None


def test_current_request_is_the_innermost_apps_and_set_by_test_request_context():
    inner = App(__name__)
    outer = App(__name__)

    @inner.get("/")
    def view(request):
        return {"inner": current_request() is request, "script_name": current_request().script_name}

    outer.mount("/in", inner)
    assert TestApp(outer).get("/in/").json == {"inner": True, "script_name": "/in"}
    with inner.test_request_context("/x") as request:
        assert current_request() is request
    assert current_request() is None
