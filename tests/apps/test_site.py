"""The site around the examples: the home page, the shared layout, static files, error pages, and the small
examples (raw WSGI, the environ inspector, the Flask mount)."""

from __future__ import annotations

import importlib
import logging
import re
import struct
import sys
from pathlib import Path

import pytest
from webtest import TestApp, Upload

from apps import flask_mount, raw_time

EXAMPLES = ["/guestbook/", "/blog/", "/files/", "/todo/", "/time", "/inspect/", "/flask/", "/hello"]
HTML_PAGES = ["/", "/guestbook/", "/files/", "/todo/", "/inspect/", "/flask/"]


def test_home_page_links_to_every_example(site):
    home = site.get("/")
    assert home.content_type == "text/html"
    links = {link["href"] for link in home.html.select("main a")}
    assert set(EXAMPLES) <= links
    for path in EXAMPLES:
        assert site.get(path).status_int == 200, path


@pytest.mark.parametrize("path", HTML_PAGES)
def test_every_page_has_the_shared_layout_and_stylesheet(site, path):
    page = site.get(path)
    assert page.html.select_one('link[rel="stylesheet"]')["href"] == "/static/style.css"
    assert page.html.select_one("header.site-header a.brand")["href"] == "/"
    assert len(page.html.select("header nav a")) == 7
    assert page.html.select_one("footer.site-footer")
    assert "http://" not in page.text.split("<main>")[0] and "https://" not in page.text, "no CDN: works offline"


def ico_sizes(data: bytes) -> list[int]:
    """The square sizes of the images in an ICO file, after checking that its directory holds together."""
    reserved, kind, count = struct.unpack_from("<HHH", data)
    assert (reserved, kind) == (0, 1) and count >= 1, "an ICONDIR: reserved 0, type 1 (icon)"
    sizes = []
    for index in range(count):
        width, height, _, _, planes, bits, length, offset = struct.unpack_from("<BBBBHHII", data, 6 + 16 * index)
        assert width == height and planes in (0, 1) and bits in (0, 32)
        image = data[offset : offset + length]
        assert len(image) == length, "every image lies inside the file"
        assert image.startswith((b"\x89PNG", struct.pack("<I", 40))), "a PNG or a BITMAPINFOHEADER"
        sizes.append(width or 256)
    return sizes


def test_favicon_ico_is_an_icon_not_a_404(site):
    """Browsers ask for /favicon.ico on their own, whatever the page links to: it must not be a 404."""
    icon = site.get("/favicon.ico")
    assert icon.content_type.startswith("image/") and "icon" in icon.content_type
    assert {16, 32} <= set(ico_sizes(icon.body))
    assert "max-age=" in icon.headers["Cache-Control"] and icon.headers["ETag"]
    assert site.get("/favicon.ico", headers={"If-None-Match": icon.headers["ETag"]}, status=304).body == b""
    assert site.head("/favicon.ico").headers["Content-Length"] == str(len(icon.body))
    linked = site.get("/static/favicon.ico")
    assert linked.body == icon.body and linked.content_type == icon.content_type


@pytest.mark.parametrize("path", [*HTML_PAGES, "/no/such/page"])
def test_every_page_links_the_icon(site, path):
    page = site.get(path, status="*")
    assert page.html.select_one('link[rel="icon"]')["href"] == "/static/favicon.ico"


def test_the_stylesheet_tells_a_notice_from_a_success(site):
    """.flash is green (something the visitor did worked); .notice, an information about the page, is not."""
    css = site.get("/static/style.css").text
    rules = dict(re.findall(r"^([^{}\n]+?)\s*\{([^}]*)\}", css, re.MULTILINE))
    assert "var(--good" in rules[".flash"]
    assert ".notice" in rules and "var(--good" not in rules[".notice"] and "var(--bad" not in rules[".notice"]


def test_the_demo_says_where_its_data_lives(data_dir, caplog):
    from apps.demo import create_app

    caplog.set_level(logging.INFO)
    create_app(data_dir)
    said = [record for record in caplog.records if record.getMessage().startswith("demo site data in ")]
    assert [record.getMessage() for record in said] == [
        f"demo site data in {data_dir.resolve()} (set --data-dir or SERVER_DATA_DIR to change)"
    ]
    assert said[0].levelno == logging.INFO
    assert logging.getLogger(said[0].name).getEffectiveLevel() <= logging.INFO, "the root's level decides: shown"


def test_by_default_the_data_is_in_var_of_the_current_directory_and_it_says_so(tmp_path, monkeypatch, caplog):
    from apps.demo import create_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SERVER_DATA_DIR")
    caplog.set_level(logging.INFO)
    create_app()
    messages = [record.getMessage() for record in caplog.records]
    assert f"demo site data in {Path(tmp_path, 'var').resolve()} (set --data-dir or SERVER_DATA_DIR to change)" in (
        messages
    ), "an absolute path: a relative ./var says nothing about where the server was started"
    assert (tmp_path / "var" / "secret_key").is_file()


def test_the_current_section_is_marked_in_the_navigation(site):
    current = site.get("/guestbook/").html.select('header nav a[aria-current="page"]')
    assert [a["href"] for a in current] == ["/guestbook/"]
    assert not site.get("/").html.select('header nav a[aria-current="page"]')


def test_static_files_come_from_the_repository(site):
    css = site.get("/static/style.css")
    assert css.content_type == "text/css"
    assert "http" not in css.text, "the stylesheet loads nothing from elsewhere"
    script = site.get("/static/todo.js")
    assert script.content_type in ("text/javascript", "application/javascript")
    site.get("/static/../apps/common.py", status=404)


def test_unknown_pages_are_404_in_the_site_layout(site):
    page = site.get("/no/such/page", status=404)
    assert page.html.select_one("h1").text == "404 Not Found"
    assert page.html.select_one('link[rel="stylesheet"]')["href"] == "/static/style.css"
    assert site.get("/guestbook/no-such-page", status=404).html.select_one("header.site-header")


def test_errors_are_json_for_clients_that_ask_for_json(site):
    error = site.get("/no/such/page", headers={"Accept": "application/json"}, status=404)
    assert error.json["error"]["code"] == 404


def test_a_wrong_method_is_405_with_allow(site):
    response = site.delete("/", status=405)
    assert "GET" in response.headers["Allow"]
    assert response.html.select_one("h1").text == "405 Method Not Allowed"


def test_a_mount_point_without_its_slash_redirects(site):
    assert site.get("/guestbook", status=308).headers["Location"].endswith("/guestbook/")


# -- the raw WSGI app -------------------------------------------------------------------------------------------


def test_raw_time_is_a_bare_wsgi_application():
    response = TestApp(raw_time.application).get("/anything")
    assert response.content_type == "text/plain"
    assert re.match(r"The time on this server is \d\d:\d\d:\d\d UTC, \w+ \d\d \w+ \d{4}\.\n", response.text)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Length"] == str(len(response.body))


def test_raw_time_is_mounted_at_time(site):
    assert site.get("/time").text.startswith("The time on this server is")


def test_hello_is_mounted_at_hello(site):
    assert site.get("/hello").text == "Hello, world!\n"


# -- the environ inspector --------------------------------------------------------------------------------------


def environ_table(page) -> dict[str, str]:
    return {row.th.get_text(): row.td.get_text() for row in page.html.select("table.environ tr")}


def test_the_inspector_shows_the_environ_with_the_mount_point_moved(site):
    page = site.get("/inspect/any/path?with=query")
    environ = environ_table(page)
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == "/inspect"
    assert environ["PATH_INFO"] == "/any/path"
    assert environ["QUERY_STRING"] == "with=query"
    assert environ["wsgi.url_scheme"] == "http"
    titles = [h2.get_text() for h2 in page.html.select("main h2")]
    assert titles[:3] == ["Request (CGI variables)", "Request headers (HTTP_*)", "WSGI (wsgi.*)"]


def test_the_inspector_escapes_what_the_client_sent(site):
    page = site.get("/inspect/?q=<script>alert(1)</script>", headers={"X-Evil": '<img src=x onerror="alert(2)">'})
    assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert environ_table(page)["HTTP_X_EVIL"] == '<img src=x onerror="alert(2)">'


def test_the_inspector_masks_cookies_and_credentials(site):
    headers = {"Cookie": "session=s3cret-value", "Authorization": "Bearer t0ken", "Proxy-Authorization": "Basic x"}
    page = site.get("/inspect/", headers=headers)
    environ = environ_table(page)
    assert "s3cret-value" not in page.text and "t0ken" not in page.text
    assert environ["HTTP_COOKIE"] == "(hidden: 20 characters)"
    assert environ["HTTP_AUTHORIZATION"] == "(hidden: 12 characters)"
    assert environ["HTTP_PROXY_AUTHORIZATION"] == "(hidden: 7 characters)"


# -- mounting Flask ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not flask_mount.FLASK_INSTALLED, reason="Flask is not installed (python -m pip install flask)")
def test_flask_is_mounted_under_flask_with_the_site_layout(site):
    page = site.get("/flask/")
    assert page.html.select_one("h1").text.startswith("Hello from Flask")
    assert page.html.select_one('link[rel="stylesheet"]')["href"] == "/static/style.css"
    values = environ_table(page)
    assert values["request.script_root"] == "/flask"
    assert values['url_for("hello")'] == "/flask/"
    about = values['url_for("about", ...)']
    assert about.startswith("/flask/about/")
    assert "<friends>" not in page.text
    named = site.get(about)
    assert named.html.select_one("p.notice strong").text == "Zoë & <friends>"
    assert "&lt;friends&gt;" in named.text


@pytest.fixture
def without_flask(monkeypatch):
    """apps.flask_mount as it loads where Flask cannot be imported; reloaded as it was afterwards."""
    monkeypatch.setitem(sys.modules, "flask", None)  # find_spec() and import both see "not installed"
    yield importlib.reload(flask_mount)
    monkeypatch.undo()
    importlib.reload(flask_mount)


def test_without_flask_the_page_says_how_to_install_it(without_flask, data_dir):
    assert not without_flask.FLASK_INSTALLED
    page = TestApp(without_flask.app).get("/")
    assert page.html.select_one("h1").text == "Flask is not installed"
    assert "python -m pip install flask" in page.text

    from apps.demo import create_app

    site = TestApp(create_app(data_dir))
    assert "Flask is not installed" in site.get("/flask/").text
    assert "Flask is not installed" in site.get("/flask/some/page").text
    assert "Flask is not installed" in " ".join(site.get("/").html.select_one("main").text.split())


FRAME_AND_SNIFF = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@pytest.mark.parametrize("path", sorted({*HTML_PAGES, *EXAMPLES, "/todo/api/todos", "/favicon.ico", "/no/such/page"}))
def test_no_page_may_be_framed_or_sniffed(site, path):
    response = site.get(path, status="*")
    for name, value in FRAME_AND_SNIFF.items():
        assert response.headers.getall(name) == [value], (path, name)


def test_the_examples_served_alone_refuse_framing_too(data_dir):
    from apps import blog, files, guestbook, inspector, todo_api

    for app in (
        guestbook.create_app(data_dir),
        files.create_app(data_dir),
        todo_api.create_app(data_dir),
        inspector.app,
        blog.create_app({"SECRET_KEY": "k"}, instance_path=data_dir / "blog"),
    ):
        response = TestApp(app).get("/", status="*")
        assert response.headers["X-Frame-Options"] == "DENY", app


def test_an_uploads_own_policy_is_kept(site):
    form = site.get("/files/").forms[0]
    form["file"] = Upload("page.html", b"<script>alert(1)</script>", "text/html")
    form.submit(status=303)
    download = site.get("/files/page.html")
    assert download.headers.getall("Content-Security-Policy") == ["sandbox"]
    assert download.headers["X-Frame-Options"] == "DENY"


def test_one_apps_session_cookie_is_no_session_of_another(site):
    """Every app of the site signs with the site's one key: a ``session_guestbook`` cookie replayed as
    ``session_blog`` was the blog's session (the guestbook's thank-you showed up on the blog's page)."""
    form = site.get("/guestbook/").forms[0]
    form["name"], form["message"] = "Mallory", "hello"
    form.submit(status=303)  # The thank-you waits in the guestbook's session, for the next page.
    site.set_cookie("session_blog", site.cookies["session_guestbook"])
    assert "Thank you, Mallory" not in site.get("/blog/").text
    assert "Thank you, Mallory" in site.get("/guestbook/").text
