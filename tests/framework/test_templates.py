"""Templates: inheritance, autoescaping, the request-bound globals, and clear errors for missing templates."""

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
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


# -- the render path that skips Jinja2's per-render merge of the globals (framework.templates._render) ----------


def _template_env(tmp_path, text: str):
    from framework.templates import Templates

    (tmp_path / "t.html").write_text(text)
    templates = Templates(tmp_path)
    return templates, templates.get("t.html")


def test_a_global_added_after_the_first_render_is_seen_by_the_next(tmp_path):
    templates, _ = _template_env(tmp_path, "{{ site_name | default('none') }}")
    assert templates.render("t.html", {}) == "none"
    templates.environment.globals["site_name"] = "Ladder"
    assert templates.render("t.html", {}) == "Ladder"
    assert templates.render("t.html", {"site_name": "mine"}) == "mine"  # the render's own variables win


def test_an_error_in_a_template_points_at_the_template_line(tmp_path):
    import traceback

    templates, _ = _template_env(tmp_path, "line one\n{{ 1 // zero }}\n")
    with pytest.raises(ZeroDivisionError) as caught:
        templates.render("t.html", {"zero": 0})
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(frame.filename.endswith("t.html") and frame.lineno == 2 for frame in frames)


@pytest.fixture(scope="module")
def fast_render_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fast")


@given(
    variables=st.dictionaries(
        st.sampled_from(["a", "b", "range", "url_for", "items", "title"]),
        st.one_of(st.text(max_size=20), st.integers(), st.lists(st.text(max_size=5), max_size=4)),
        max_size=6,
    )
)
def test_the_fast_render_gives_exactly_what_jinja2s_render_gives(fast_render_folder, variables):
    from framework.templates import _render

    templates, template = _template_env(
        fast_render_folder,
        "{{ a }}|{{ b | default('-') }}|{{ title is defined }}|{{ items | default([]) | length }}|"
        "{{ range is callable }}|{% for x in (items if items is iterable and items is not string else []) %}"
        "<{{ x }}>{% endfor %}",
    )

    def outcome(render):
        try:
            return "rendered", render(dict(variables))
        except Exception as error:  # the same error, too: a list's length is fine, an int's is a TypeError
            return "raised", type(error).__name__, str(error)

    fast = outcome(lambda context: _render(templates.environment, template, context))
    assert fast == outcome(template.render)


# -- which templates are autoescaped: all but the plain-text ones (framework.templates.autoescape) --------------


def test_an_svg_template_escapes_what_it_is_given():
    # An SVG image runs scripts like an HTML page does: <svg><script> from a user is an XSS.
    app = make_app()
    with app.test_request_context() as request:
        text = app.render_string(request, "badge.svg", label="</text><script>alert(1)</script>")
    assert "<script>" not in text and "&lt;/text&gt;&lt;script&gt;" in text


def test_a_plain_text_template_is_not_escaped():
    app = make_app()
    with app.test_request_context() as request:
        assert app.render_string(request, "plain.txt", name="Tom & Jerry <3") == "Hello Tom & Jerry <3"


@given(
    folder=st.sampled_from(["", "emails/", "v1.txt/"]),
    extension=st.one_of(
        st.sampled_from(["svg", "SVG", "xhtml", "xml", "md", "txt", "TXT", "text"]),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/."), max_size=8),
    ),
    dotted=st.booleans(),
    engine=st.sampled_from(["", ".j2", ".jinja", ".JINJA2"]),
)
def test_every_extension_but_plain_text_is_escaped(folder, extension, dotted, engine):
    # A new kind of template (.svg, .vue, .jinja, none at all) is safe until someone says it is plain text; a
    # name without a dot ("v1.txt/txt") has no extension, whatever its folder's name. A template engine's
    # extension after it (".txt.j2") defers to the one before.
    from framework.templates import PLAIN_TEXT_EXTENSIONS

    name = (f"{folder}page.{extension}" if dotted else f"{folder}{extension or 'page'}") + engine
    plain = dotted and extension.lower() in PLAIN_TEXT_EXTENSIONS
    assert App(__name__).templates.environment.autoescape(name) is not plain


# -- the Content-Type of a rendered template follows how it was escaped (framework.templates.content_type) -------


def typed_app(tmp_path) -> App:
    names = ("robots.txt", "notes.TEXT", "badge.svg", "feed.xml", "page.html", "page.htm", "emails/v1.txt")
    names += ("site.css", "app.js", "data.json", "report.csv", "README.md", "mail.txt.j2", "page.html.jinja", "x.j2")
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("<p>{{ who }}</p>")
    app = App(__name__, templates=tmp_path)

    @app.get("/<path:name>")
    def show(request, name):
        return request.render(name, who=request.query.get("who", ""))

    return app


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("robots.txt", "text/plain; charset=utf-8"),
        ("notes.TEXT", "text/plain; charset=utf-8"),
        ("emails/v1.txt", "text/plain; charset=utf-8"),
        ("badge.svg", "image/svg+xml; charset=utf-8"),
        ("feed.xml", "application/xml; charset=utf-8"),
        ("page.html", "text/html; charset=utf-8"),
        ("page.htm", "text/html; charset=utf-8"),
        # These were served as text/html: a stylesheet, a script or data a browser would read as a page.
        ("site.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("data.json", "application/json"),
        ("report.csv", "text/csv; charset=utf-8"),
        ("README.md", "text/markdown; charset=utf-8"),
        # A template extension after the file's own: the inner one says what it is, for escaping too.
        ("mail.txt.j2", "text/plain; charset=utf-8"),
        ("page.html.jinja", "text/html; charset=utf-8"),
        ("x.j2", "text/html; charset=utf-8"),
    ],
)
def test_a_rendered_template_says_what_it_is(tmp_path, name, content_type):
    """A plain-text template is not escaped, and was served as text/html: a reflected XSS through a robots.txt."""
    response = TestApp(typed_app(tmp_path)).get(f"/{name}", {"who": "<script>alert(1)</script>"})
    assert response.headers["Content-Type"] == content_type
    if content_type.startswith("text/plain"):  # and no browser may sniff it back into HTML
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script>" in response.text
    else:  # escaped, whatever its type: a script tag is text
        assert "<script>" not in response.text
    if not content_type.startswith("text/html"):
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("mail.txt.j2", False),
        ("mail.TXT.jinja2", False),
        ("mail.text.jinja", False),
        ("page.html.j2", True),
        ("data.json.j2", True),
        ("txt.j2", True),  # no inner extension: "txt" is the name
        ("emails.txt/page.j2", True),  # a folder's dots are no extension
        ("page.j2.txt", False),
    ],
)
def test_a_template_extension_defers_to_the_inner_one(name, escaped):
    from framework.templates import autoescape

    assert autoescape(name) is escaped


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/"), max_size=12))
def test_no_unescaped_template_is_served_as_markup(name):
    """Whatever a template is called, what it prints is either escaped or not served as a type a browser runs."""
    from framework.templates import autoescape, content_type

    if not autoescape(name):
        assert content_type(name).startswith("text/plain")
    else:
        assert content_type(name).split(";")[0] != "text/plain"


def test_a_plain_text_include_is_escaped_only_where_the_page_asks(tmp_path):
    """Jinja2 escapes per template: a .txt included into a page prints as it is, so the docs' way to include one
    holding user data is a forceescape block (escape alone leaves the already-rendered include alone)."""
    (tmp_path / "notes.txt").write_text("<{{ who }}>")
    (tmp_path / "raw.html").write_text('{% include "notes.txt" %}')
    (tmp_path / "safe.html").write_text('{% filter forceescape %}{% include "notes.txt" %}{% endfilter %}')
    app = App(__name__, templates=tmp_path)
    with app.test_request_context() as request:
        assert app.render_string(request, "raw.html", who="<b>") == "<<b>>"
        assert app.render_string(request, "safe.html", who="<b>") == "&lt;&lt;b&gt;&gt;"


# -- {{ row.name }} on a plain dict: a key lookup first (framework.templates._Environment) ----------------------

_ATTRIBUTE_NAMES = ["name", "price", "missing", "items", "keys", "get", "values", "copy", "__class__", "__len__"]


@given(
    row=st.dictionaries(st.sampled_from(_ATTRIBUTE_NAMES), st.one_of(st.integers(), st.text(max_size=5)), max_size=6),
    attribute=st.sampled_from(_ATTRIBUTE_NAMES),
    kind=st.sampled_from(["dict", "subclass", "defaultdict"]),
    strict=st.booleans(),
)
def test_a_dicts_attribute_renders_as_jinja2_renders_it(row, attribute, kind, strict):
    """The shortcut must not change an answer: a key where Jinja2 finds a key, the dict's method where it finds the
    method (``row.items`` with an "items" key too), the same Undefined (or error) for a name that is neither."""
    import collections

    import jinja2

    from framework.templates import _Environment

    class Row(dict):
        pass

    make = {"dict": dict, "subclass": Row, "defaultdict": lambda r: collections.defaultdict(int, r)}[kind]
    source = (
        f"{{{{ row.{attribute} is defined }}}}|{{{{ row.{attribute} is callable }}}}|"
        f"{{{{ row.{attribute} if row.{attribute} is not callable else 'method' }}}}"
    )
    undefined = jinja2.StrictUndefined if strict else jinja2.Undefined

    def outcome(environment_class):
        environment = environment_class(autoescape=True, undefined=undefined)
        try:
            return "rendered", environment.from_string(source).render(row=make(row))  # (a defaultdict grows)
        except Exception as error:
            return "raised", type(error).__name__, str(error)

    assert outcome(_Environment) == outcome(jinja2.Environment)


def test_a_dicts_keys_and_methods_in_an_apps_template(tmp_path):
    (tmp_path / "rows.html").write_text(
        "{% for row in rows %}{{ row.name }}={{ row.price }};{% endfor %}"
        "|{{ rows[0].items() | list | length }}|{{ rows[0].missing | default('none') }}"
    )
    app = App(__name__, templates=tmp_path)
    with app.test_request_context() as request:
        rows = [{"name": "<a>", "price": 1.5, "items": "shadowed"}, {"name": "b", "price": 2}]
        assert app.render_string(request, "rows.html", rows=rows) == "&lt;a&gt;=1.5;b=2;|3|none"


def test_a_dict_whose_key_cannot_be_compared_renders_as_jinja2_renders_it():
    """Found in review: a key whose __eq__ raises AttributeError against a str (a common hand-written __eq__) made
    ``row.price`` raise where Jinja2 gives Undefined; and a name that is not a str must not reach the dict."""
    import jinja2

    from framework.templates import _Environment

    class Tag:
        def __init__(self, name):
            self.name = name

        def __hash__(self):
            return hash(self.name)

        def __eq__(self, other):
            return self.name == other.name

    source = "{{ row.name }} {{ row.price | default('none') }} {{ row.price is defined }}"
    for environment_class in (_Environment, jinja2.Environment):
        row = {Tag("price"): 1, "name": "x"}
        assert environment_class().from_string(source).render(row=row) == "x none False"
    with pytest.raises(TypeError):
        jinja2.Environment().getattr({1: "one"}, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _Environment().getattr({1: "one"}, 1)  # type: ignore[arg-type]
