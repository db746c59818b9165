"""Templates: inheritance, autoescaping, the request-bound globals, and clear errors for missing templates."""

import logging
import re

import pytest
from webtest import TestApp

from framework import App, TemplateNotFoundError


def make_app(**options) -> App:
    app = App(__name__, templates="templates", secret_key="template tests", **options)

    @app.route("/page")
    def page(request):
        return app.render(request, "page.html", title="Hello", message=request.query.get("m", ""))

    @app.route("/globals")
    def globals_page(request):
        return app.render(request, "globals.html")

    @app.route("/items/<int:item_id>")
    def item(request, item_id):
        return "item"

    @app.route("/missing")
    def missing(request):
        return app.render(request, "no-such-template.html")

    @app.route("/include")
    def include(request):
        return app.render(request, "includes_missing.html")

    return app


def test_inheritance_and_variables():
    response = TestApp(make_app()).get("/page?m=hi")
    assert response.content_type == "text/html"
    assert "<title>Hello</title>" in response.text and "<p>hi</p>" in response.text


def test_autoescape_is_on():
    text = TestApp(make_app()).get("/page", {"m": "<script>alert('x')</script>"}).text
    assert "<script>" not in text
    assert "&lt;script&gt;" in text


def test_globals_are_bound_to_the_request():
    text = TestApp(make_app()).get("/globals").text
    assert 'href="/items/5?tab=info"' in text
    assert 'href="/static/css/site.css"' in text
    assert "<p>GET /globals</p>" in text
    token = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert token and len(token.group(1)) >= 32


def test_globals_follow_the_mount_point():
    outer = App(__name__)
    outer.mount("/blog", make_app())
    text = TestApp(outer).get("/blog/globals").text
    assert 'href="/blog/items/5?tab=info"' in text
    assert 'href="/blog/static/css/site.css"' in text


def test_static_uses_the_apps_static_route_when_it_has_one():
    app = make_app(static="templates", static_url="/assets")
    assert 'href="/assets/css/site.css"' in TestApp(app).get("/globals").text


def test_missing_template_names_itself_and_the_folder(caplog):
    app = make_app()
    with pytest.raises(TemplateNotFoundError, match=r"no-such-template\.html.*tests/framework/templates"):
        app.templates.render("no-such-template.html", {})
    with caplog.at_level(logging.ERROR, logger="framework"):
        TestApp(app).get("/missing", status=500)
    assert "no-such-template.html" in caplog.text


def test_missing_included_template_is_named(caplog):
    app = make_app(debug=True)
    with caplog.at_level(logging.ERROR, logger="framework"):
        text = TestApp(app).get("/include", status=500).text
    assert "partials/nowhere.html" in text and "TemplateNotFoundError" in text
