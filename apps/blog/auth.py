"""Accounts: register, log in, log out, and the check that keeps visitors who are not logged in out of views
that need a user.

The logged-in user's id lives in the session (a signed cookie, see ``framework.sessions``); every request
loads that user into ``request.g.user``. Views that need one are marked ``@login_required``, and a hook, not
the decorator itself, sends anonymous visitors to the login page: hooks run before the framework's CSRF check,
so an anonymous POST is redirected to log in rather than refused with 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from framework import Blueprint, Request, Response, redirect
from framework.security import check_password_hash, generate_password_hash

from .db import get_db

bp = Blueprint("auth", __name__, url_prefix="/auth")

View = TypeVar("View", bound=Callable[..., Any])


def login_required(view: View) -> View:
    """Mark ``view`` as one that needs a logged-in user; ``require_login`` below enforces it."""
    view.login_required = True  # type: ignore[attr-defined]
    return view


@bp.before_app_request
def load_logged_in_user(request: Request) -> None:
    """Put the logged-in user (a database row) or ``None`` in ``request.g.user``, for views and templates."""
    user_id = request.session.get("user_id")
    request.g.user = (
        None if user_id is None else get_db(request).execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
    )


@bp.before_app_request
def require_login(request: Request) -> Response | None:
    """Send a visitor who is not logged in from a ``@login_required`` view to the login page."""
    view = request.rule.view if request.rule else None
    if request.g.user is None and getattr(view, "login_required", False):
        return redirect(request.url_for("auth.login"))
    return None


@bp.route("/register", methods=["GET", "POST"])
def register(request: Request) -> Response | tuple[Response, int]:
    """Create an account: a unique username and a password, stored as a salted scrypt hash."""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        error = None
        if not username:
            error = "Username is required."
        elif not password:
            error = "Password is required."
        if error is None:
            db = get_db(request)
            try:
                with db:
                    db.execute(
                        "INSERT INTO user (username, password) VALUES (?, ?)",
                        (username, generate_password_hash(password)),
                    )
            except db.IntegrityError:  # The UNIQUE constraint: checked by the database, so two at once can't both win.
                error = f"User {username} is already registered."
            else:
                request.flash("Your account is ready: log in.", "success")
                return redirect(request.url_for(".login"), 303)
        request.flash(error, "error")
        return request.render("auth/register.html"), 400
    return request.render("auth/register.html")


@bp.route("/login", methods=["GET", "POST"])
def login(request: Request) -> Response | tuple[Response, int]:
    """Check a username and password, and remember the user in the session."""
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        user = get_db(request).execute("SELECT * FROM user WHERE username = ?", (username,)).fetchone()
        # One message for both mistakes, and a hash checked either way (taking as long), so that neither the
        # page nor its timing tells a stranger which usernames exist.
        stored = user["password"] if user is not None else unknown_user_hash()
        if not check_password_hash(stored, password) or user is None:
            request.flash("Incorrect username or password.", "error")
            return request.render("auth/login.html"), 400
        request.session.clear()  # A fresh session at login: nothing planted before it survives.
        request.session["user_id"] = user["id"]
        return redirect(request.url_for("blog.index"), 303)
    return request.render("auth/login.html")


@cache
def unknown_user_hash() -> str:
    """A hash no password matches (its password is random), checked when the username is unknown."""
    return generate_password_hash(secrets.token_urlsafe(16))


@bp.post("/logout")
def logout(request: Request) -> Response:
    """Forget the user. A POST (with its CSRF token), so that another site cannot log visitors out with a link."""
    request.session.clear()
    return redirect(request.url_for("blog.index"), 303)
