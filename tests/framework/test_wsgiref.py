"""The framework under real WSGI servers (wsgiref and our own), driven over a socket by requests.

webtest calls the app in-process; this checks the same app survives a real server: real sockets, real
headers, cookies kept by a real client, a multipart upload and a file download.
"""

import pytest
import requests

from framework import App, FileResponse
from tests.support import ServerThread, serving_with_wsgiref


def build_app(tmp_path) -> App:
    (tmp_path / "data.bin").write_bytes(b"0123456789" * 1000)
    app = App(__name__, templates="templates", secret_key="wsgiref")

    @app.route("/")
    def index(request):
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"], "host": request.host}

    @app.route("/form")
    def form(request):
        return app.render(request, "csrf_form.html")

    @app.route("/submit", methods=["POST"])
    def submit(request):
        upload = request.files["doc"]
        return {"title": request.form["title"], "size": upload.size, "name": upload.filename}

    @app.route("/stream", methods=["POST"])
    def stream(request):
        upload = request.files["doc"]

        def chunks():
            while block := upload.read(50_000):  # The upload outlives the view, until the body is sent.
                yield block
            yield b"|" + ",".join(torn_down).encode()

        return chunks()

    torn_down = []
    app.teardown(lambda request, error: torn_down.append(request.path))

    @app.route("/data")
    def data(request):
        return FileResponse(tmp_path / "data.bin", request)

    return app


def _serve_with_wsgiref(app):
    with serving_with_wsgiref(app) as url:
        yield url


def _serve_with_ours(app):
    with ServerThread(app) as running:
        yield running.url


@pytest.fixture(params=["wsgiref", "ours"])
def server(request, tmp_path):
    """The same app under the standard library's server and under this project's own."""
    serve = _serve_with_wsgiref if request.param == "wsgiref" else _serve_with_ours
    yield from serve(build_app(tmp_path))


def test_framework_app_under_wsgiref(server):
    with requests.Session() as client:
        assert client.get(f"{server}/", timeout=5).json()["visits"] == 1
        assert client.get(f"{server}/", timeout=5).json()["visits"] == 2  # The session cookie came back.

        page = client.get(f"{server}/form", timeout=5)
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        files = {"doc": ("report.txt", b"x" * 200_000, "text/plain")}
        response = client.post(f"{server}/submit", data={"title": "T", "csrf_token": token}, files=files, timeout=5)
        assert response.json() == {"title": "T", "size": 200_000, "name": "report.txt"}
        assert client.post(f"{server}/submit", data={"title": "T"}, files=files, timeout=5).status_code == 403

        response = client.post(f"{server}/stream", data={"csrf_token": token}, files=files, timeout=5)
        assert response.content.startswith(b"x" * 200_000 + b"|") and b"/stream" not in response.content

        response = client.get(f"{server}/data", headers={"Range": "bytes=5-14"}, timeout=5)
        assert response.status_code == 206 and response.content == b"5678901234"
        assert client.get(f"{server}/data", timeout=5).content == b"0123456789" * 1000

        missing = client.get(f"{server}/missing", headers={"Accept": "application/json"}, timeout=5)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
