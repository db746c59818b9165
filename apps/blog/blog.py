"""Posts: everyone reads them, logged-in users write them, and only a post's author may change or delete it.

Two bounds keep one visitor from filling the disk (200 posts of 20 KB in a second were all kept): an author, and
any one address (``address_key``: one visitor may open several accounts), may publish ``POST_LIMITER``'s number of
new posts a minute (more is 429, with ``Retry-After``), and the blog keeps the newest ``MAX_POSTS`` posts, the
oldest giving way to new ones (both settings of the app, see ``apps/blog/__init__.py``). So pushing every other
post out takes one address ``MAX_POSTS`` / 5 minutes (200, for 1000), not the few minutes a new account a minute
gave.
"""

from __future__ import annotations

import sqlite3

from framework import Blueprint, Request, Response, abort, redirect

from ..common import address_key, fetch_page, keep_newest, page_number, row_id
from .auth import login_required, refuse_if_waiting
from .db import get_db

bp = Blueprint("blog", __name__)

TITLE_LIMIT = 200
BODY_LIMIT = 20_000
PER_PAGE = 20


@bp.get("/")
def index(request: Request) -> Response:
    """The posts, newest first, with their authors' names: ``PER_PAGE`` at a time (``?page=2``), so the page stays
    small however many posts there are."""
    page = fetch_page(
        get_db(request),
        "SELECT p.id, title, body, created, author_id, username"
        " FROM post p JOIN user u ON p.author_id = u.id"
        " ORDER BY created DESC, p.id DESC",
        page_number(request),
        PER_PAGE,
    )
    return request.render("blog/index.html", posts=page.items, page=page)


def get_post(request: Request, post_id: int, check_author: bool = True) -> sqlite3.Row:
    """The post ``post_id`` with its author's name: 404 if there is none, 403 if ``check_author`` and the
    logged-in user did not write it."""
    post = (
        get_db(request)
        .execute(
            "SELECT p.id, title, body, created, author_id, username"
            " FROM post p JOIN user u ON p.author_id = u.id"
            " WHERE p.id = ?",
            (row_id(post_id),),  # 404 for an id beyond SQLite's integers, which sqlite3 could not even look up
        )
        .fetchone()
    )
    if post is None:
        abort(404, f"Post id {post_id} doesn't exist.")
    if check_author and post["author_id"] != request.g.user["id"]:
        abort(403, "Only its author may change a post.")
    return post


def read_post_form(request: Request) -> tuple[str, str, str | None]:
    """The title and body a form sent, and what is wrong with them (``None`` when nothing is)."""
    title = request.form.get("title", "").strip()
    body = request.form.get("body", "")
    error = None
    if not title:
        error = "Title is required."
    elif len(title) > TITLE_LIMIT:
        error = f"The title is longer than {TITLE_LIMIT} characters."
    elif len(body) > BODY_LIMIT:
        error = f"The post is longer than {BODY_LIMIT} characters."
    return title, body, error


@bp.route("/create", methods=["GET", "POST"])
@login_required
def create(request: Request) -> Response | tuple[Response, int]:
    """Write a new post (at most ``POST_LIMITER``'s number a minute)."""
    if request.method == "POST":
        title, body, error = read_post_form(request)
        if error is not None:
            request.flash(error, "error")
            return request.render("blog/create.html"), 400
        # Per author and per address: accounts are cheap (a few a minute from one address), and the blog keeps
        # only its newest posts, so a limit per author alone let one visitor with many accounts push out everyone's.
        author = f"author:{request.g.user['id']}"
        wait = request.app.config["POST_LIMITER"].retry_after(author, address_key(request))
        refuse_if_waiting(request, wait, "blog/create.html", "new posts")
        db = get_db(request)
        with db:
            db.execute(
                "INSERT INTO post (title, body, author_id) VALUES (?, ?, ?)", (title, body, request.g.user["id"])
            )
            keep_newest(db, "post", request.app.config["MAX_POSTS"])
        request.flash("Your post is published.", "success")
        return redirect(request.url_for(".index"), 303)
    return request.render("blog/create.html")


@bp.route("/<int:post_id>/update", methods=["GET", "POST"])
@login_required
def update(request: Request, post_id: int) -> Response | tuple[Response, int]:
    """Change a post's title and body (its author only)."""
    post = get_post(request, post_id)
    if request.method == "POST":
        title, body, error = read_post_form(request)
        if error is not None:
            request.flash(error, "error")
            return request.render("blog/update.html", post=post), 400
        db = get_db(request)
        with db:
            db.execute("UPDATE post SET title = ?, body = ? WHERE id = ?", (title, body, post_id))
        request.flash("Your changes are saved.", "success")
        return redirect(request.url_for(".index"), 303)
    return request.render("blog/update.html", post=post)


@bp.post("/<int:post_id>/delete")
@login_required
def delete(request: Request, post_id: int) -> Response:
    """Delete a post (its author only)."""
    get_post(request, post_id)
    db = get_db(request)
    with db:
        db.execute("DELETE FROM post WHERE id = ?", (post_id,))
    request.flash("The post is deleted.", "success")
    return redirect(request.url_for(".index"), 303)
