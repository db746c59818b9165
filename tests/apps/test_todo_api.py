"""The todo API: status codes, validation errors as JSON, errors as JSON whatever the client accepts, and the
page that uses it."""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from webtest import TestApp

from apps import todo_api


@pytest.fixture
def api(data_dir: Path) -> TestApp:
    return TestApp(todo_api.create_app(data_dir))


def create(api: TestApp, title: str = "Buy milk", **fields) -> dict:
    response = api.post_json("/api/todos", {"title": title, **fields}, status=201)
    assert response.headers["Location"] == response.json["url"]
    return response.json


def titles(api: TestApp) -> list[str]:
    return [todo["title"] for todo in api.get("/api/todos").json["todos"]]


def test_an_empty_list(api):
    response = api.get("/api/todos")
    assert response.content_type == "application/json"
    assert response.json == {"todos": []}


def test_create_read_update_delete(api):
    todo = create(api, "  Buy milk  ")
    assert todo == {"id": 1, "title": "Buy milk", "done": False, "url": "/api/todos/1"}
    assert api.get("/api/todos/1").json == todo
    assert api.get("/api/todos").json == {"todos": [todo]}

    done = api.patch_json("/api/todos/1", {"done": True}).json
    assert done == {**todo, "done": True}
    renamed = api.patch_json("/api/todos/1", {"title": "Buy oat milk"}).json
    assert renamed == {**todo, "title": "Buy oat milk", "done": True}, "a PATCH keeps the fields it leaves out"

    response = api.delete("/api/todos/1", status=204)
    assert response.body == b""
    assert api.get("/api/todos").json == {"todos": []}


def test_a_new_todo_can_start_done(api):
    assert create(api, "Already did it", done=True)["done"] is True


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"title": "A todo needs a title."}),
        ({"title": ""}, {"title": "The title must be some text."}),
        ({"title": "   "}, {"title": "The title must be some text."}),
        ({"title": 42}, {"title": "The title must be some text."}),
        ({"title": "x" * 201}, {"title": "The title must be at most 200 characters long."}),
        ({"title": "ok", "done": "yes"}, {"done": "done must be true or false."}),
        ({"title": "ok", "owner": "me"}, {"owner": "There is no such field: a todo has a title and done."}),
        (["a list"], {"body": 'The body must be a JSON object, such as {"title": "Buy milk"}.'}),
    ],
)
def test_an_invalid_todo_is_422_with_a_message_per_field(api, body, fields):
    create(api, "Existing")
    response = api.post_json("/api/todos", body, status=422)
    assert response.content_type == "application/json"
    error = response.json["error"]
    assert error["code"] == 422 and error["fields"] == fields
    assert titles(api) == ["Existing"], "bad input changes nothing"


def test_an_invalid_change_is_422_and_changes_nothing(api):
    create(api, "Keep me")
    assert api.patch_json("/api/todos/1", {}, status=422).json["error"]["fields"] == {
        "body": "Send at least one field to change: title or done."
    }
    api.patch_json("/api/todos/1", {"title": "", "done": True}, status=422)
    assert api.get("/api/todos/1").json["done"] is False, "one bad field rejects the whole change"
    assert titles(api) == ["Keep me"]


def test_malformed_json_is_400_as_json(api):
    response = api.post("/api/todos", "{not json", content_type="application/json", status=400)
    assert response.json["error"]["code"] == 400
    assert "Malformed JSON" in response.json["error"]["description"]


def test_a_body_that_is_not_json_is_415(api):
    response = api.post("/api/todos", {"title": "from a form"}, status=415)
    assert response.json["error"]["description"].startswith("Send the todo as JSON")
    api.post("/api/todos", "title=x", content_type="text/plain", status=415)
    assert titles(api) == []


def test_an_unknown_todo_is_404_as_json(api):
    for method in (api.get, api.delete):
        response = method("/api/todos/99", status=404)
        assert response.json["error"] == {"code": 404, "name": "Not Found", "description": "There is no todo 99."}
    api.patch_json("/api/todos/99", {"done": True}, status=404)
    api.get("/api/todos/not-a-number", status=404)


def test_a_wrong_method_is_405_with_allow_as_json(api):
    response = api.put_json("/api/todos", {"title": "x"}, status=405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert response.json["error"]["code"] == 405
    assert "PATCH" in api.post_json("/api/todos/1", {}, status=405).headers["Allow"]


def test_api_errors_are_json_even_for_clients_that_prefer_html(api):
    response = api.get("/api/todos/7", headers={"Accept": "text/html"}, status=404)
    assert response.content_type == "application/json"


def test_the_api_needs_no_csrf_token_but_only_takes_json(api):
    """No session, no token (as for curl): fine, because a cross-site form cannot send application/json."""
    assert "Set-Cookie" not in api.post_json("/api/todos", {"title": "from curl"}, status=201).headers
    api.post("/api/todos", "title=forged", content_type="application/x-www-form-urlencoded", status=415)


def test_todos_survive_a_restart(data_dir):
    create(TestApp(todo_api.create_app(data_dir)), "Persist")
    assert titles(TestApp(todo_api.create_app(data_dir))) == ["Persist"]


def test_the_page_loads_the_script_and_names_the_api(api):
    page = api.get("/")
    assert page.html.select_one('script[src="/static/todo.js"]')
    assert page.html.select_one("#todo-app")["data-api"] == "/api/todos"
    assert api.get("/missing", status=404).content_type == "text/html", "the page side keeps HTML errors"


def test_the_api_is_mounted_in_the_site_with_urls_under_the_mount(site):
    todo = site.post_json("/todo/api/todos", {"title": "Mounted"}, status=201).json
    assert todo["url"] == "/todo/api/todos/1"
    assert site.get(todo["url"]).json["title"] == "Mounted"
    assert site.get("/todo/").html.select_one("#todo-app")["data-api"] == "/todo/api/todos"
    assert site.get("/static/todo.js").text.startswith("// The todo page's script")


# -- the page without JavaScript: plain forms, Post/Redirect/Get ------------------------------------------------
# webtest runs no script, so its form.submit() is exactly what a browser without JavaScript sends.


def item_form(page, action: str):
    """The form on ``page`` that posts to ``action`` (each todo has one per button)."""
    forms = [form for form in page.forms.values() if form.action == action]
    assert len(forms) == 1, [form.action for form in page.forms.values()]
    return forms[0]


def listed(page) -> list[tuple[str, bool]]:
    """The list as the server drew it: each todo's title and whether it is marked done."""
    return [
        (li.select_one(".todo-title").text, "done" in li.get("class", [])) for li in page.html.select("#todo-list li")
    ]


def add(client: TestApp, title: str, status: int = 303):
    """Fill in and submit the page's form, as a browser without JavaScript would."""
    form = client.get("/").forms["todo-form"]
    form["title"] = title
    return form.submit(status=status)


def test_without_javascript_the_form_posts_and_the_todo_is_added(api):
    form = api.get("/").forms["todo-form"]
    assert form.method.lower() == "post", "a GET form would send the title in the URL and save nothing"
    assert form.action == "/" and form["csrf_token"].value

    response = add(api, "  Buy milk  ")
    assert response.headers["Location"] == "/", "Post/Redirect/Get: back to the page, so a reload posts nothing"
    page = response.follow()
    assert listed(page) == [("Buy milk", False)]
    assert page.html.select_one("p.flash").text == "Added \u201cBuy milk\u201d."
    assert page.html.select_one("#todo-empty").has_attr("hidden")
    assert titles(api) == ["Buy milk"], "the API sees what the form added"
    assert "Added" not in api.get("/").text, "the flash message is shown once"


def test_the_page_lists_the_todos_without_javascript(api):
    assert listed(api.get("/")) == [] and not api.get("/").html.select_one("#todo-empty").has_attr("hidden")
    create(api, "<b>Bold</b> plans", done=True)
    create(api, "Second")
    page = api.get("/")
    assert listed(page) == [("<b>Bold</b> plans", True), ("Second", False)]
    assert "<b>Bold</b>" not in page.text, "titles are escaped"


def test_an_invalid_title_from_the_form_is_400_next_to_the_field_and_kept(api):
    page = add(api, "   ", status=400)
    error = page.html.select_one("#todo-error")
    assert error.text == "The title must be some text." and not error.has_attr("hidden")
    field = page.html.select_one("#todo-title")
    assert field["aria-invalid"] == "true" and field["aria-describedby"] == "todo-error"

    too_long = "x" * (todo_api.TITLE_LIMIT + 1)
    page = add(api, too_long, status=400)
    assert page.forms["todo-form"]["title"].value == too_long, "the visitor's text is still in the form"
    assert page.html.select_one("#todo-error").text == "The title must be at most 200 characters long."
    assert titles(api) == []
    add(api, "Fixed it").follow()  # the re-rendered form still carries a valid CSRF token
    assert titles(api) == ["Fixed it"]


def test_the_form_needs_its_csrf_token(api):
    api.get("/")  # a session, and so a token, exists; the forged post just does not carry it
    refused = api.post("/", {"title": "forged"}, status=403)
    assert refused.content_type == "text/html"
    assert titles(api) == []


def test_without_javascript_todos_are_marked_done_and_deleted(api):
    todo = create(api, "Water the plants")
    page = item_form(api.get("/"), f"/{todo['id']}/done").submit(status=303).follow()
    assert listed(page) == [("Water the plants", True)]
    assert page.html.select_one("p.flash").text == "Marked \u201cWater the plants\u201d done."
    page = item_form(page, f"/{todo['id']}/done").submit(status=303).follow()
    assert listed(page) == [("Water the plants", False)], "the same button marks it not done again"

    delete = item_form(page, f"/{todo['id']}/delete")
    page = delete.submit(status=303).follow()
    assert listed(page) == [] and page.html.select_one("p.flash").text == "Deleted \u201cWater the plants\u201d."
    again = delete.submit(status=303).follow()  # a double click sends the form twice: no 404 for that
    assert again.html.select_one("p.flash").text == "That todo was already deleted."


def test_marking_needs_a_known_todo_and_a_clear_value(api):
    todo = create(api, "Only one")
    token = api.get("/").forms["todo-form"]["csrf_token"].value
    api.post(f"/{todo['id']}/done", {"csrf_token": token, "done": "maybe"}, status=400)
    missing = api.post("/99/done", {"csrf_token": token, "done": "true"}, status=404)
    assert missing.content_type == "text/html", "the page's errors are pages, not JSON"
    assert api.get(todo["url"]).json["done"] is False


def test_the_forms_work_under_the_sites_mount_point(site):
    form = site.get("/todo/").forms["todo-form"]
    assert form.action == "/todo/"
    form["title"] = "Mounted form"
    page = form.submit(status=303)
    assert page.headers["Location"] == "/todo/"
    page = page.follow()
    assert listed(page) == [("Mounted form", False)]
    assert item_form(page, "/todo/1/done") and item_form(page, "/todo/1/delete")


def test_the_no_javascript_notice_is_a_notice_not_a_success(api):
    notice = api.get("/").html.select_one("#todo-app noscript p")
    assert notice["class"] == ["notice"], "not .flash: a green success message is for what the visitor just did"


# Past SQLite's integers; the last is past the 4,300 digits int() converts too.
BEYOND_SQLITE = [str(2**63), "9" * 25, pytest.param("1" + "0" * 5000, id="5000 digits")]


@pytest.mark.parametrize("number", BEYOND_SQLITE)
def test_an_id_beyond_sqlites_integers_is_404_not_500(api, number):
    for method in ("GET", "PATCH", "DELETE"):
        response = api.request(
            f"/api/todos/{number}", method=method, body=b'{"done": true}', content_type="application/json", status="*"
        )
        assert response.status_int == 404 and response.content_type == "application/json", method
    token = api.get("/").forms["todo-form"]["csrf_token"].value
    api.post(f"/{number}/done", {"csrf_token": token, "done": "true"}, status=404)
    api.post(f"/{number}/delete", {"csrf_token": token}, status=404)


def test_the_shared_id_check_refuses_what_sqlite_cannot_hold():
    from apps.common import SQLITE_INTEGER_MAX, row_id
    from framework import HTTPError

    assert row_id(SQLITE_INTEGER_MAX) == SQLITE_INTEGER_MAX
    for number in (SQLITE_INTEGER_MAX + 1, -1):
        with pytest.raises(HTTPError) as refused:
            row_id(number)
        assert refused.value.code == 404


@pytest.mark.parametrize(
    "title", ["\ud800", "a\udfffb", "line\nbreak", "nul\x00", "escape\x1b[2J", "\u202eevil", "zero\u200bwidth"]
)
def test_a_title_with_a_lone_surrogate_or_a_control_character_is_422(api, title):
    # JSON's "\ud800" escape decodes to a lone surrogate, which cannot be encoded as UTF-8 (nor stored).
    body = json.dumps({"title": title}).encode()
    refused = api.post("/api/todos", body, content_type="application/json", status=422)
    assert set(refused.json["error"]["fields"]) == {"title"}
    todo = create(api, "Fine")
    api.patch(todo["url"], body, content_type="application/json", status=422)
    assert titles(api) == ["Fine"]


def test_an_unexpected_failure_in_the_api_is_json(data_dir, monkeypatch):
    app = todo_api.create_app(data_dir)
    monkeypatch.setattr(todo_api.Database, "transaction", lambda self: 1 / 0)
    failed = TestApp(app).get("/api/todos", headers={"Accept": "text/html"}, status=500, expect_errors=True)
    assert failed.content_type == "application/json" and failed.json["error"]["code"] == 500
    page = TestApp(app).get("/", status=500, expect_errors=True)
    assert page.content_type == "text/html", "the HTML page's failure is still a page"


def test_the_shared_list_is_bounded(api, monkeypatch):
    monkeypatch.setattr(todo_api, "TODO_LIMIT", 2)
    create(api, "one")
    create(api, "two")
    full = api.post_json("/api/todos", {"title": "three"}, status=507)
    assert full.json["error"]["code"] == 507 and "delete some first" in full.json["error"]["description"]
    form = api.get("/").forms["todo-form"]
    form["title"] = "three"
    page = form.submit(status=507)
    assert "delete some first" in page.text and titles(api) == ["one", "two"]


def test_the_page_says_the_list_is_shared(api):
    assert "The list is shared" in api.get("/").html.select_one("p.lead").text


@pytest.mark.parametrize("path", ["/api/todos", "/api/todos/1"])
def test_head_is_get_without_a_body_and_never_writes(api, path):
    create(api, "one")
    body = json.dumps({"title": "sneaked in"}).encode()
    response = api.request(path, method="HEAD", body=body, content_type="application/json")
    assert response.status_code == 200 and response.body == b""
    assert titles(api) == ["one"], "a HEAD with a body neither adds nor changes a todo"


def test_requests_adding_at_the_same_moment_never_overshoot_the_limit(data_dir, monkeypatch):
    """Eight requests reach their INSERT together (a barrier in SQLite's statement trace holds each one there
    until all have arrived): with a separate count before it, all eight saw room."""
    monkeypatch.setattr(todo_api, "TODO_LIMIT", 1)
    app = todo_api.create_app(data_dir)
    TestApp(app).get("/api/todos")  # the schema exists before the race starts
    together = threading.Barrier(8)
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(lambda sql: sql.startswith("INSERT") and together.wait(timeout=10))
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)

    def add(number: int) -> int:
        body = {"title": f"todo {number}"}
        return TestApp(app).post_json("/api/todos", body, expect_errors=True).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(add, range(8)))
    assert statuses == [201] + [507] * 7
    assert len(TestApp(app).get("/api/todos").json["todos"]) == 1
