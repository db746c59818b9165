"""Blueprints: prefixes and endpoints, relative url_for, scoped hooks, handlers and templates, registering twice,
nesting, and the mistakes refused at registration."""

import pytest
from webtest import TestApp

from framework import App, Blueprint, abort, redirect


def make_blog() -> Blueprint:
    blog = Blueprint("blog", __name__, url_prefix="/blog")

    @blog.get("/")
    def index(request):
        return {"endpoint": request.endpoint, "blueprint": request.blueprint, "self": request.url_for(".index")}

    @blog.get("/<int:post_id>")
    def post(request, post_id):
        return {"url": request.url_for(".post", post_id=post_id), "index": request.url_for("blog.index")}

    return blog


def test_routes_get_the_prefix_and_endpoints_the_name():
    app = App(__name__)
    app.register_blueprint(make_blog())
    client = TestApp(app)
    assert client.get("/blog/").json == {"endpoint": "blog.index", "blueprint": "blog", "self": "/blog/"}
    assert client.get("/blog/7").json == {"url": "/blog/7", "index": "/blog/"}
    assert sorted(rule.endpoint for rule in app.router.rules) == ["blog.index", "blog.post"]


def test_register_with_another_prefix_and_twice_under_two_names():
    app = App(__name__)
    blog = make_blog()
    app.register_blueprint(blog, url_prefix="/news")
    app.register_blueprint(blog, url_prefix="/archive", name="archive")
    client = TestApp(app)
    # ".post" is relative to whichever registration handled the request.
    assert client.get("/news/3").json == {"url": "/news/3", "index": "/news/"}
    assert client.get("/archive/3").json == {"url": "/archive/3", "index": "/news/"}
    assert client.get("/archive/").json["endpoint"] == "archive.index"
    client.get("/blog/", status=404)
    with pytest.raises(ValueError, match="already registered as 'blog'"):
        app.register_blueprint(blog, url_prefix="/again")


def test_a_blueprint_without_prefix_and_a_root_route():
    app = App(__name__)
    pages = Blueprint("pages", __name__)

    @pages.get("/")
    def home(request):
        return request.url_for(".home")

    app.register_blueprint(pages)
    assert TestApp(app).get("/").text == "/"


def test_hooks_run_for_the_blueprints_own_requests_app_first_then_blueprint():
    app = App(__name__)
    admin = Blueprint("admin", __name__, url_prefix="/admin")
    calls = []

    @app.before_request
    def app_before(request):
        calls.append("app before")

    @admin.before_request
    def admin_before(request):
        calls.append("admin before")

    @admin.after_request
    def admin_after(request, response):
        calls.append("admin after")
        return response

    @app.after_request
    def app_after(request, response):
        calls.append("app after")
        return response

    @admin.teardown
    def admin_teardown(request, error):
        calls.append("admin teardown")

    @admin.get("/")
    def dashboard(request):
        calls.append("view")
        return "ok"

    @app.get("/")
    def home(request):
        calls.append("home")
        return "ok"

    app.register_blueprint(admin)
    client = TestApp(app)
    client.get("/admin/")
    assert calls == ["app before", "admin before", "view", "admin after", "app after", "admin teardown"]
    calls.clear()
    client.get("/")
    assert calls == ["app before", "home", "app after"]


def test_a_blueprint_login_check_redirects_an_anonymous_post_before_csrf_refuses_it():
    """Flask's tutorial answers an anonymous POST to a protected view with a redirect to the login page; a
    blueprint's before_request runs before the CSRF check, so the same holds here."""
    app = App(__name__, secret_key="k")
    blog = Blueprint("blog", __name__, url_prefix="/blog")

    @blog.before_request
    def require_login(request):
        if request.endpoint != "blog.login" and "user" not in request.session:
            return redirect(request.url_for(".login"))
        return None

    @blog.get("/login")
    def login(request):
        return "log in"

    @blog.post("/create")
    def create(request):
        return "created"

    app.register_blueprint(blog)
    response = TestApp(app).post("/blog/create", {"title": "x"}, status=302)
    assert response.headers["Location"].endswith("/blog/login")


def test_error_handlers_of_a_blueprint_see_its_errors_the_apps_see_the_rest():
    app = App(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(404)
    def api_not_found(request, error):
        return {"error": "no such thing"}, 404

    @api.errorhandler(KeyError)
    def api_key_error(request, error):
        return {"error": f"missing {error}"}, 400

    @app.errorhandler(404)
    def page_not_found(request, error):
        return "page not found", 404

    @api.get("/things/<int:n>")
    def thing(request, n):
        if n == 0:
            raise KeyError("zero")
        abort(404)

    app.register_blueprint(api)
    client = TestApp(app)
    assert client.get("/api/things/1", status=404).json == {"error": "no such thing"}
    assert client.get("/api/things/0", status=400).json == {"error": "missing 'zero'"}
    # A path that matches no route belongs to no blueprint: the app's handler answers.
    assert client.get("/api/nowhere", status=404).text == "page not found"


def test_app_wide_registrations_from_a_blueprint():
    app = App(__name__, templates="templates")
    extras = Blueprint("extras", __name__)
    seen = []

    @extras.before_app_request
    def everywhere(request):
        seen.append(request.path)

    @extras.app_errorhandler(404)
    def missing(request, error):
        return "nothing here", 404

    @extras.app_template_filter("shout")
    def shout(text):
        return text.upper() + "!"

    @extras.app_template_global()
    def answer():
        return 42

    @extras.app_context_processor
    def site_name():
        return {"site": "Example"}

    @app.get("/")
    def home(request):
        return app.render_string(request, "blueprint_helpers.html", word="hi")

    app.register_blueprint(extras)
    client = TestApp(app)
    assert client.get("/").text.strip() == "HI! 42 Example"
    assert client.get("/nope", status=404).text == "nothing here"
    assert seen == ["/", "/nope"]


def test_a_blueprints_context_processor_feeds_only_its_own_templates():
    app = App(__name__, templates="templates")
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.context_processor
    def cart(request):
        return {"site": f"Shop ({request.blueprint})"}

    @app.context_processor
    def site():
        return {"site": "Site"}

    @shop.get("/")
    def shop_home(request):
        return request.render("context.html")

    @app.get("/")
    def home(request):
        return request.render("context.html")

    @app.get("/explicit")
    def explicit(request):
        return request.render("context.html", site="Given")

    app.register_blueprint(shop)
    client = TestApp(app)
    assert client.get("/shop/").text.strip() == "Shop (shop)"
    assert client.get("/").text.strip() == "Site"
    assert client.get("/explicit").text.strip() == "Given"


def test_blueprint_template_folder_is_searched_after_the_apps(tmp_path):
    bp_templates = tmp_path / "bp_templates"
    bp_templates.mkdir()
    (bp_templates / "only_here.html").write_text("from the blueprint")
    (bp_templates / "page.html").write_text("the blueprint's page.html, shadowed by the app's")
    app = App(__name__, templates="templates")
    bp = Blueprint("bp", __name__, templates=bp_templates)

    @bp.get("/a")
    def a(request):
        return request.render("only_here.html")

    @bp.get("/b")
    def b(request):
        return request.render("page.html", title="T", message="M")

    app.register_blueprint(bp)
    client = TestApp(app)
    assert client.get("/a").text == "from the blueprint"
    assert "the blueprint's page.html" not in client.get("/b").text


def test_nested_blueprints_join_prefixes_names_and_hooks():
    app = App(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")
    v1 = Blueprint("v1", __name__, url_prefix="/v1")
    calls = []

    @api.before_request
    def api_hook(request):
        calls.append("api")

    @v1.before_request
    def v1_hook(request):
        calls.append("v1")

    @v1.get("/items")
    def items(request):
        return {"endpoint": request.endpoint, "me": request.url_for(".items")}

    api.register_blueprint(v1)
    app.register_blueprint(api)
    assert TestApp(app).get("/api/v1/items").json == {"endpoint": "api.v1.items", "me": "/api/v1/items"}
    assert calls == ["api", "v1"]


def test_a_registered_blueprint_cannot_grow_silently():
    app = App(__name__)
    blog = make_blog()
    app.register_blueprint(blog)
    with pytest.raises(RuntimeError, match="already registered"):

        @blog.get("/late")
        def late(request):
            return "never routed"


def test_names_with_dots_are_refused():
    with pytest.raises(ValueError, match=r"no '\.'"):
        Blueprint("a.b", __name__)
    app = App(__name__)
    with pytest.raises(ValueError, match="separates a blueprint's name"):
        app.add_route("/x", lambda request: "x", name="a.b")


def test_relative_url_for_outside_a_blueprint_means_the_apps_own():
    app = App(__name__)

    @app.get("/here")
    def here(request):
        return request.url_for(".here")

    assert TestApp(app).get("/here").text == "/here"


def test_a_blueprint_can_bring_commands():
    app = App(__name__)
    tools = Blueprint("tools", __name__)

    @tools.command("say-hello")
    def say_hello(name: str = "world") -> str:
        return f"hello {name}"

    @tools.command
    def count_routes(app) -> str:
        return str(len(app.router.rules))

    app.register_blueprint(tools)
    assert sorted(app.commands) == ["count-routes", "say-hello"]
