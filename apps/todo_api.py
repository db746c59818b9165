"""A JSON API (a todo list) and the page that uses it from JavaScript.

The API, under ``/todo/api``, answers in JSON with the status codes a client can act on::

    GET    /todo/api/todos          200  {"todos": [{"id": 1, "title": "...", "done": false, "url": "..."}]}
    POST   /todo/api/todos          201  the new todo, with its URL in the Location header
    GET    /todo/api/todos/<id>     200  one todo                     404 if there is no such todo
    PATCH  /todo/api/todos/<id>     200  the changed todo ("title" and/or "done")
    DELETE /todo/api/todos/<id>     204  no body

``HEAD`` of either URL is its ``GET`` without the body, and never changes anything, whatever body it carries.

Whatever goes wrong is JSON too: a body that is not JSON is 415 (wrong ``Content-Type``) or 400 (malformed),
a todo that breaks the rules is 422 with a message per field, an unknown method is 405 with ``Allow``::

    {"error": {"code": 422, "name": "Unprocessable Entity", "description": "...", "fields": {"title": "..."}}}

``GET /todo/`` is an HTML page that works with or without JavaScript. As plain HTML it lists the todos with a
form for each change, sent as ordinary form posts with the session's CSRF token, each answered with a 303
redirect back to the page (Post/Redirect/Get, as the guestbook does), so reloading never repeats a change::

    POST   /todo/                   add one ("title"); an invalid title is the page again, 400, the error by the field
    POST   /todo/<id>/done          mark it done ("done=true") or not done ("done=false")
    POST   /todo/<id>/delete        delete it (already gone is not an error: a double click must not show a 404)

Where JavaScript runs, the page's script, ``static/todo.js``, takes the same form over and does everything
through the API's calls instead, redrawing the list without reloading the page.

**Why these views skip the CSRF check.** API clients (``curl``, other programs) have no session and so no
token. The API stays safe without one because it only accepts ``Content-Type: application/json`` (and
``DELETE``): a form on another site cannot send that, and a script on another site cannot send it either
without the browser first asking this server for permission (a CORS preflight), which it never grants.

**One list, shared by every visitor, on purpose.** Anyone who can reach the site can read, change and delete
every todo, as anyone can sign the guestbook. Scoping todos to each visitor's session would make the API need the
session cookie, so ``curl`` alone could no longer use it, and a cookie-authenticated API needs CSRF protection,
which the JSON-only rule above stands in for precisely because there is no cookie to abuse. The demo keeps the
simple, honest version, and says so on the page; a real app would tie todos to accounts (see ``apps/blog/``).
So that a shared list cannot grow without bound, it holds at most ``TODO_LIMIT`` todos, however many requests
add at once (see ``insert``): one more is 507 (the JSON error, or the page with the message by the field), until
some are deleted.

Serve it alone with ``python -m server apps.todo_api:app``, or as part of the demo site at ``/todo/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from framework import App, HTTPError, Request, Response, abort, redirect

from .common import LINE_ALLOWED, Database, default_data_dir, error_page, make_app, row_id, unprintable

SCHEMA = """
CREATE TABLE IF NOT EXISTS todos (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    title  TEXT NOT NULL,
    done   INTEGER NOT NULL DEFAULT 0
);
"""

TITLE_LIMIT = 200
TODO_LIMIT = 200
FULL = f"The list is full ({TODO_LIMIT} todos): delete some first."


class Invalid(HTTPError):
    """A well-formed request whose todo breaks the rules: 422, with one message per offending field."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(422, "The todo is not valid: see fields.")
        self.fields = fields


def title_error(title: object) -> str | None:
    """What is wrong with ``title`` as a todo's title (which is kept stripped), or None if nothing is."""
    if not isinstance(title, str) or not title.strip():
        return "The title must be some text."
    if len(title.strip()) > TITLE_LIMIT:
        return f"The title must be at most {TITLE_LIMIT} characters long."
    if unprintable(title, allowed=LINE_ALLOWED):
        return "The title must be one line of text, without control, invisible or direction-changing characters."
    return None


def read_todo(request: Request, *, partial: bool) -> dict[str, Any]:
    """The validated fields of the todo in the request body; ``partial`` (PATCH) makes every field optional.

    Raises 415 for a body that is not JSON, 400 for malformed JSON (``request.json`` does that) and ``Invalid``
    for a JSON value that is not an acceptable todo.
    """
    data = request.json
    if data is None:
        abort(415, "Send the todo as JSON, with Content-Type: application/json.")
    if not isinstance(data, dict):
        raise Invalid({"body": 'The body must be a JSON object, such as {"title": "Buy milk"}.'})
    errors = {name: "There is no such field: a todo has a title and done." for name in data.keys() - {"title", "done"}}
    todo: dict[str, Any] = {}
    if "title" in data:
        problem = title_error(data["title"])
        if problem:
            errors["title"] = problem
        else:
            todo["title"] = data["title"].strip()
    elif not partial:
        errors["title"] = "A todo needs a title."
    if "done" in data:
        if isinstance(data["done"], bool):
            todo["done"] = data["done"]
        else:
            errors["done"] = "done must be true or false."
    if partial and not data:
        errors["body"] = "Send at least one field to change: title or done."
    if errors:
        raise Invalid(errors)
    return todo


def create_app(data_dir: Path | None = None) -> App:
    """The todo list, kept in ``data_dir/todo.sqlite3``."""
    data_dir = data_dir or default_data_dir()
    app = make_app(__name__, data_dir)
    database = Database(data_dir / "todo.sqlite3", SCHEMA)

    def as_json(request: Request, row: Any) -> dict[str, Any]:
        todo_id = row["id"]
        url = request.url_for("todo", todo_id=todo_id)
        return {"id": todo_id, "title": row["title"], "done": bool(row["done"]), "url": url}

    def find(db: Any, todo_id: int) -> Any:
        row = db.execute("SELECT id, title, done FROM todos WHERE id = ?", (row_id(todo_id),)).fetchone()
        if row is None:
            abort(404, f"There is no todo {todo_id}.")
        return row

    def insert(db: Any, title: str, done: bool = False) -> int | None:
        """Add a todo and return its id, or ``None`` when the list already holds ``TODO_LIMIT`` todos.

        The count and the insert are one statement: a write statement holds SQLite's write lock from its start,
        so no other request (thread or process) can insert between the count and the row, and the list never
        holds more than ``TODO_LIMIT``. Counting first and inserting after let eight requests at once all see
        room and all insert."""
        cursor = db.execute(
            "INSERT INTO todos (title, done) SELECT ?, ? WHERE (SELECT count(*) FROM todos) < ?",
            (title, done, TODO_LIMIT),
        )
        if cursor.rowcount == 0:
            return None
        if cursor.lastrowid is None:  # sqlite3 sets it after every INSERT of one row
            raise RuntimeError("the INSERT of a todo reported no row id")
        return int(cursor.lastrowid)

    def render(request: Request, title: str = "", error: str | None = None) -> Response:
        """The page with the list as it is now; ``title`` and ``error`` bring back a refused form."""
        with database.transaction() as db:
            rows = db.execute("SELECT id, title, done FROM todos ORDER BY id").fetchall()
        return app.render(
            request,
            "todo.html",
            api=request.url_for("todos"),
            todos=[{"id": row["id"], "title": row["title"], "done": bool(row["done"])} for row in rows],
            title=title,
            error=error,
        )

    @app.get("/")
    def page(request: Request) -> Response:
        """The HTML page: the list and its forms, which ``static/todo.js`` takes over where JavaScript runs."""
        return render(request)

    @app.post("/")
    def add(request: Request) -> Response | tuple[Response, int]:
        """The form's way to add a todo: redirect back to the page, or show it again (400) with the problem."""
        title = request.form.get("title", "")
        problem = title_error(title)
        if problem:
            return render(request, title, problem), 400
        with database.transaction() as db:
            added = insert(db, title.strip())
        if added is None:
            return render(request, title, FULL), 507
        request.flash(f"Added “{title.strip()}”.")
        return redirect(request.url_for("page"), 303)

    @app.post("/<int:todo_id>/done")
    def mark(request: Request, todo_id: int) -> Response:
        """The form's way to mark a todo done (``done=true``) or not done (``done=false``)."""
        done = request.form.get("done")
        if done not in ("true", "false"):
            abort(400, "done must be true or false.")
        with database.transaction() as db:
            row = find(db, todo_id)
            db.execute("UPDATE todos SET done = ? WHERE id = ?", (done == "true", todo_id))
        request.flash(f"Marked “{row['title']}” {'done' if done == 'true' else 'not done'}.")
        return redirect(request.url_for("page"), 303)

    @app.post("/<int:todo_id>/delete")
    def remove(request: Request, todo_id: int) -> Response:
        """The form's way to delete a todo. One that is already gone (a double click) is not an error."""
        with database.transaction() as db:
            row = db.execute("SELECT title FROM todos WHERE id = ?", (row_id(todo_id),)).fetchone()
            db.execute("DELETE FROM todos WHERE id = ?", (todo_id,))
        request.flash(f"Deleted “{row['title']}”." if row else "That todo was already deleted.")
        return redirect(request.url_for("page"), 303)

    # One view per method, so the router dispatches on the exact method: a HEAD runs the GET view (the server
    # sends no body), and no method can fall through to a view that writes.
    @app.csrf_exempt
    @app.get("/api/todos")
    def todos(request: Request) -> dict[str, Any]:
        """List the todos."""
        with database.transaction() as db:
            rows = db.execute("SELECT id, title, done FROM todos ORDER BY id").fetchall()
        return {"todos": [as_json(request, row) for row in rows]}

    @app.csrf_exempt
    @app.post("/api/todos")
    def add_todo(request: Request) -> Response:
        """Add a todo: 201, with its URL in ``Location``."""
        todo = read_todo(request, partial=False)
        with database.transaction() as db:
            todo_id = insert(db, todo["title"], todo.get("done", False))
            if todo_id is None:
                abort(507, FULL)
            created = as_json(request, find(db, todo_id))
        return Response.json(created, 201, {"Location": created["url"]})

    @app.csrf_exempt
    @app.get("/api/todos/<int:todo_id>")
    def todo(request: Request, todo_id: int) -> dict[str, Any]:
        """Read one todo."""
        with database.transaction() as db:
            return as_json(request, find(db, todo_id))

    @app.csrf_exempt
    @app.patch("/api/todos/<int:todo_id>")
    def change_todo(request: Request, todo_id: int) -> dict[str, Any]:
        """Change a todo's title and/or done."""
        with database.transaction() as db:
            find(db, todo_id)
            changes = read_todo(request, partial=True)
            db.execute(  # A field left out of the PATCH is NULL here, and coalesce() keeps its old value.
                "UPDATE todos SET title = coalesce(?, title), done = coalesce(?, done) WHERE id = ?",
                (changes.get("title"), changes.get("done"), todo_id),
            )
            return as_json(request, find(db, todo_id))

    @app.csrf_exempt
    @app.delete("/api/todos/<int:todo_id>")
    def delete_todo(request: Request, todo_id: int) -> Response:
        """Delete a todo: 204."""
        with database.transaction() as db:
            find(db, todo_id)
            db.execute("DELETE FROM todos WHERE id = ?", (todo_id,))
        return Response(b"", 204)

    @app.errorhandler(HTTPError)
    def api_errors(request: Request, error: HTTPError) -> Response:
        """Errors from the API are JSON whatever the client accepts; the HTML page keeps the site's page."""
        if not request.path.startswith("/api/"):
            return error_page(request, error)
        body = {"code": error.code, "name": error.name, "description": error.description}
        if isinstance(error, Invalid):
            body["fields"] = error.fields
        return Response.json({"error": body}, error.code)

    @app.errorhandler(500)
    def api_failures(request: Request, error: Exception) -> Response:
        """A failure nobody expected (the framework has logged its traceback) is a JSON 500 under the API too:
        its clients parse every answer as JSON. The page's failures get the site's error page."""
        if not isinstance(error, HTTPError):
            error = HTTPError(500, "The server hit an error and could not answer the request.")
        return api_errors(request, error)

    return app


app = create_app()
