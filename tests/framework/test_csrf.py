"""CSRF protection: per-session token, 403 on missing or wrong tokens, header or form field, exemptions."""

import re

import pytest
from webtest import TestApp

from framework import App, csrf_exempt


def make_app(**options) -> App:
    app = App(__name__, templates="templates", secret_key="csrf tests", **options)

    @app.route("/form")
    def form(request):
        return app.render(request, "csrf_form.html")

    @app.route("/submit", methods=["POST", "PUT", "PATCH", "DELETE", "PURGE"])
    def submit(request):
        return "accepted"

    @app.csrf_exempt
    @app.post("/api/hook")
    def api_hook(request):
        return {"received": request.json}

    @app.post("/api/other")
    @csrf_exempt
    def api_other(request):
        return "exempt too"

    return app


def token_from(client) -> str:
    text = client.get("/form").text
    return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)


@pytest.fixture
def client():
    return TestApp(make_app())


def test_post_without_a_token_is_403(client):
    response = client.post("/submit", {"field": "x"}, status=403)
    assert "CSRF token is missing" in response.text


# webtest's lint warns about methods it does not know, such as PURGE; that one is here on purpose.
@pytest.mark.parametrize(
    "method",
    ["POST", "PUT", "PATCH", "DELETE", pytest.param("PURGE", marks=pytest.mark.filterwarnings("ignore::Warning"))],
)
def test_every_unsafe_method_without_a_token_is_403(client, method):
    token_from(client)  # A session exists; the request just does not carry its token.
    response = client.request("/submit", method=method, body=b"field=x", status=403)
    assert "CSRF token is missing" in response.text


def test_post_without_a_session_is_403(client):
    client.post("/submit", {"csrf_token": "made-up"}, status=403)


def test_wrong_token_is_403(client):
    token = token_from(client)
    response = client.post("/submit", {"csrf_token": token[:-1] + "x"}, status=403)
    assert "CSRF token is incorrect" in response.text
    client.post("/submit", {"csrf_token": "ü" * len(token)}, status=403)


def test_right_token_in_the_form_is_accepted(client):
    token = token_from(client)
    assert client.post("/submit", {"csrf_token": token, "field": "x"}).text == "accepted"
    # The token is per session, not per request: it keeps working.
    assert client.post("/submit", {"csrf_token": token}).text == "accepted"


def test_right_token_in_the_header_is_accepted_for_every_unsafe_method(client):
    token = token_from(client)
    headers = {"X-CSRF-Token": token}
    assert client.put("/submit", headers=headers).text == "accepted"
    assert client.patch("/submit", headers=headers).text == "accepted"
    assert client.delete("/submit", headers=headers).text == "accepted"
    client.delete("/submit", status=403)


def test_multipart_forms_are_checked_too(client):
    token = token_from(client)
    client.post("/submit", {"field": "x"}, upload_files=[("f", "a.txt", b"data")], status=403)
    response = client.post("/submit", {"csrf_token": token}, upload_files=[("f", "a.txt", b"data")])
    assert response.text == "accepted"


def test_text_plain_bodies_are_checked(client):
    # A cross-site <form enctype="text/plain"> can send this; it must not slip through.
    client.post("/submit", b"csrf_token=x", content_type="text/plain", status=403)


def test_token_is_kept_in_the_session(client):
    first = token_from(client)
    assert token_from(client) == first
    assert TestApp(make_app()).get("/form").text.count(first) == 0  # Another session, another token.


def test_exempt_views_skip_the_check(client):
    assert client.post_json("/api/hook", {"event": "push"}).json == {"received": {"event": "push"}}
    assert client.post("/api/other").text == "exempt too"


def test_json_clients_get_a_json_403(client):
    response = client.post("/submit", headers={"Accept": "application/json"}, status=403)
    assert response.json["error"]["code"] == 403


def test_protection_can_be_turned_off():
    assert TestApp(make_app(csrf=False)).post("/submit").text == "accepted"
