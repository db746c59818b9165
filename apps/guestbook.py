"""The guestbook: a form, validation, a database and pagination, the way most web apps start.

Follow one visitor:

1. ``GET /guestbook/`` renders ``templates/guestbook.html``: the form (with a hidden CSRF token from the
   session) and one page of entries, newest first, read from SQLite.
2. ``POST /guestbook/`` goes through the framework's CSRF check before ``sign`` runs (a forged post is a 403).
   ``validate`` checks the fields. If anything is wrong the same page comes back with status 400, the error
   next to its field and everything the visitor typed still in the form: bad input never costs them their text.
   (The form has no ``required`` or ``maxlength`` attributes on purpose: those are a convenience, the server's
   check is the one that counts, and without them you can watch it answer.)
3. A valid entry is inserted, and the answer is a 303 redirect back to the list (Post/Redirect/Get), so
   reloading the page never posts twice. A flash message in the session says thank you.

Anyone may sign, so two bounds keep one visitor from filling the disk (500 posts in 1.4 s were all kept before):
each client (its address, as ``address_key`` reads it) may sign ``SIGNING_LIMIT`` times a minute, and more is
answered 429 with ``Retry-After`` and the form still filled in; and the guestbook keeps the newest
``MAX_ENTRIES`` entries, the oldest giving way (the page says so). That also bounds what each page view counts.

Entries are shown through Jinja2's autoescaping, so ``<script>`` in a message is displayed, never run. The
database is a file in the data directory (see ``apps/common.py``), so the guestbook survives a restart.

Serve it alone with ``python -m server apps.guestbook:app``, or as part of the demo site at ``/guestbook/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from framework import App, Request, Response, redirect

from .common import (
    LINE_ALLOWED,
    TEXT_ALLOWED,
    AttemptLimiter,
    Database,
    Page,
    address_key,
    default_data_dir,
    fetch_page,
    keep_newest,
    make_app,
    page_number,
    unprintable,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL,
    message  TEXT NOT NULL,
    created  TEXT NOT NULL
);
"""

NAME_LIMIT = 60
MESSAGE_LIMIT = 1000
LIMITS = {"name": NAME_LIMIT, "message": MESSAGE_LIMIT}
MAX_ENTRIES = 1000  # kept, newest first; the oldest give way to new ones
SIGNING_LIMIT = 5  # entries a client may sign in SIGNING_WINDOW seconds
SIGNING_WINDOW = 60


def validate(form: dict[str, str]) -> dict[str, str]:
    """The problems with a submitted entry, by field name; an empty dict means it can be saved.

    Neither field may hold control or invisible characters (``unprintable``): a NUL, or a right-to-left override
    that makes a name read backwards in every later visitor's browser. A message may have line breaks and tabs.
    """
    errors = {}
    name, message = form["name"], form["message"]
    if not name:
        errors["name"] = "Please tell us your name."
    elif len(name) > NAME_LIMIT:
        errors["name"] = f"Names are at most {NAME_LIMIT} characters long (this one has {len(name)})."
    elif unprintable(name, allowed=LINE_ALLOWED):
        errors["name"] = "Names are one line, without control, invisible or direction-changing characters."
    if not message:
        errors["message"] = "Please write a message."
    elif len(message) > MESSAGE_LIMIT:
        errors["message"] = f"Messages are at most {MESSAGE_LIMIT} characters long (this one has {len(message)})."
    elif unprintable(message, allowed=TEXT_ALLOWED):
        errors["message"] = "Messages cannot contain control, invisible or direction-changing characters."
    return errors


def create_app(
    data_dir: Path | None = None,
    *,
    per_page: int = 10,
    max_entries: int = MAX_ENTRIES,
    limiter: AttemptLimiter | None = None,
) -> App:
    """The guestbook, keeping its newest ``max_entries`` entries in ``data_dir/guestbook.sqlite3``; ``limiter``
    counts each client's entries (default: ``SIGNING_LIMIT`` in ``SIGNING_WINDOW`` seconds)."""
    data_dir = data_dir or default_data_dir()
    app = make_app(__name__, data_dir)
    database = Database(data_dir / "guestbook.sqlite3", SCHEMA)
    limiter = limiter or AttemptLimiter(SIGNING_LIMIT, SIGNING_WINDOW)

    def load_page(number: int) -> Page:
        """Page ``number`` of the entries, newest first (404 past the last)."""
        with database.transaction() as db:
            return fetch_page(db, "SELECT name, message, created FROM entries ORDER BY id DESC", number, per_page)

    def render(request: Request, form: dict[str, str], errors: dict[str, str], number: int = 1) -> Response:
        page = load_page(number)
        return app.render(
            request, "guestbook.html", page=page, form=form, errors=errors, limits=LIMITS, max_entries=max_entries
        )

    @app.get("/")
    def index(request: Request) -> Response:
        """One page of entries (``?page=2``) under an empty form."""
        return render(request, {"name": "", "message": ""}, {}, page_number(request))

    @app.post("/")
    def sign(request: Request) -> Response | tuple[Response, int]:
        """Save a valid entry and redirect to the list; re-render an invalid one with status 400, and one from a
        client signing too often with 429."""
        form = {field: request.form.get(field, "").strip() for field in ("name", "message")}
        errors = validate(form)
        if errors:
            return render(request, form, errors), 400
        wait = limiter.retry_after(address_key(request))  # Only a valid entry counts: a typo costs nothing.
        if wait:
            page = render(request, form, {"message": f"You are signing too often: try again in {wait} seconds."})
            page.headers["Retry-After"] = str(wait)
            return page, 429
        created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with database.transaction() as db:
            db.execute(
                "INSERT INTO entries (name, message, created) VALUES (?, ?, ?)",
                (form["name"], form["message"], created),
            )
            keep_newest(db, "entries", max_entries)
        request.flash(f"Thank you, {form['name']}: your message is in the guestbook.")
        return redirect(request.url_for("index"), 303)

    return app


app = create_app()
