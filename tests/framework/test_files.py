"""FileResponse and the app's static route: the server's conditional and range rules, through WSGI."""

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from webtest import TestApp

from framework import App, FileResponse, safe_join

CONTENT = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def site(tmp_path):
    (tmp_path / "report.pdf").write_bytes(CONTENT)
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body { color: red }")
    (static / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("not for the web")
    app = App(__name__, static=static, secret_key="files")

    @app.route("/report")
    def report(request):
        return FileResponse(tmp_path / "report.pdf", request, max_age=60)

    @app.route("/download")
    def download(request):
        return FileResponse(tmp_path / "report.pdf", request, download_name="Quarterly report.pdf")

    @app.route("/typed")
    def typed(request):
        response = FileResponse(tmp_path / "report.pdf", request, content_type="application/x-custom")
        response.set_cookie("seen", "1")
        return response

    @app.route("/missing")
    def missing(request):
        return FileResponse(tmp_path / "nope.pdf", request)

    @app.csrf_exempt
    @app.post("/export")
    def export(request):
        return FileResponse(tmp_path / "report.pdf", request, download_name="export.pdf")

    @app.errorhandler(404)
    def not_found(request, error):
        return "the app's own 404 page"

    return app


def test_whole_file(site):
    response = TestApp(site).get("/report")
    assert response.body == CONTENT
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(CONTENT))
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "ETag" in response.headers and "Last-Modified" in response.headers


def test_conditional_get_is_304(site):
    client = TestApp(site)
    first = client.get("/report")
    second = client.get("/report", headers={"If-None-Match": first.headers["ETag"]}, status=304)
    assert second.body == b""
    client.get("/report", headers={"If-Modified-Since": first.headers["Last-Modified"]}, status=304)
    client.get("/report", headers={"If-Match": '"other"'}, status=412)


def test_range_is_206(site):
    client = TestApp(site)
    response = client.get("/report", headers={"Range": "bytes=100-199"}, status=206)
    assert response.body == CONTENT[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(CONTENT)}"
    response = client.get("/report", headers={"Range": "bytes=-10"}, status=206)
    assert response.body == CONTENT[-10:]
    client.get("/report", headers={"Range": "bytes=999999-"}, status=416)


def test_head_sends_headers_only(site):
    response = TestApp(site).head("/report")
    assert response.body == b"" and response.headers["Content-Length"] == str(len(CONTENT))


def test_download_name_and_content_type(site):
    client = TestApp(site)
    disposition = client.get("/download").headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="Quarterly report.pdf"')
    response = client.get("/typed")
    assert response.headers["Content-Type"] == "application/x-custom"
    assert response.headers["Set-Cookie"].startswith("seen=1")


def test_missing_file_is_the_apps_404(site):
    assert TestApp(site).get("/missing", status=404).text == "the app's own 404 page"
    assert TestApp(site).get("/static/nope.css", status=404).text == "the app's own 404 page"


def test_a_post_view_can_answer_with_a_whole_file(site):
    # The static rules allow GET and HEAD only; a view that chose to answer a POST with a file is not a 405.
    response = TestApp(site).post("/export", headers={"Range": "bytes=0-9", "If-None-Match": "*"})
    assert response.status_int == 200 and response.body == CONTENT
    assert response.headers["Content-Disposition"].startswith('attachment; filename="export.pdf"')


def call(app, path, headers=None, file_wrapper=None):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO(), **(headers or {})}
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    statuses = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    return statuses[0], body


class Wrapper:
    """A stand-in for a server's wsgi.file_wrapper that records what it was given."""

    used = []

    def __init__(self, file, block_size):
        self.file, self.block_size = file, block_size
        Wrapper.used.append(self)

    def __iter__(self):
        while block := self.file.read(self.block_size):
            yield block

    def close(self):
        self.file.close()


def test_whole_file_goes_through_the_file_wrapper(site):
    Wrapper.used.clear()
    status, body = call(site, "/report", file_wrapper=Wrapper)
    assert status == "200 OK" and isinstance(body, Wrapper)
    assert b"".join(body) == CONTENT
    body.close()
    assert body.file.closed


def test_ranges_are_read_in_blocks_and_closed(site):
    Wrapper.used.clear()
    status, body = call(site, "/report", {"HTTP_RANGE": "bytes=10-5009"}, file_wrapper=Wrapper)
    assert status == "206 Partial Content" and not Wrapper.used
    assert b"".join(body) == CONTENT[10:5010]
    body.close()
    assert body.file.closed


def test_without_a_wrapper_the_file_is_still_streamed_and_closed(site):
    status, body = call(site, "/report")
    assert status == "200 OK"
    assert b"".join(body) == CONTENT
    body.close()
    assert body.file.closed


def test_static_route_serves_files(site):
    client = TestApp(site)
    response = client.get("/static/css/site.css")
    assert response.text == "body { color: red }" and response.content_type == "text/css"
    assert site.static_path("css/site.css") == "/static/css/site.css"


@pytest.mark.parametrize(
    "path", ["/static/.env", "/static/../outside.txt", "/static/css/../../outside.txt", "/static/css", "/static/x"]
)
def test_static_route_refuses_escapes_and_hidden_files(site, path):
    TestApp(site).get(path, status=404)


def test_safe_join(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("b")
    (tmp_path / "link").symlink_to("/etc")
    assert safe_join(tmp_path, "a/b.txt") == (tmp_path / "a" / "b.txt").resolve()
    for bad in ["../x", "a/../../x", ".hidden", "a/.b", "link/passwd", "a\\b", "a\x00b", "", "/"]:
        assert safe_join(tmp_path, bad) is None, bad


@pytest.mark.parametrize("path", ["/static/css/site.css/", "/static/css//site.css", "/static//css/site.css"])
def test_a_static_path_with_an_empty_segment_is_not_the_file(site, path):
    """``/static/css/site.css/`` served site.css: safe_join dropped empty segments, so a URL with a trailing slash
    (or a doubled one) named the file too, a second URL for every file that relative links inside it resolve
    against the wrong folder."""
    TestApp(site).get(path, status=404)


@given(segments=st.lists(st.sampled_from(["a", "b.txt", ""]), min_size=1, max_size=5).filter(lambda parts: "" in parts))
def test_safe_join_refuses_every_path_with_an_empty_segment(tmp_path_factory, segments):
    root = tmp_path_factory.getbasetemp() / "empty-segments"
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / "b.txt").write_text("b")
    (root / "b.txt").write_text("b")
    assert safe_join(root, "/".join(segments)) is None
