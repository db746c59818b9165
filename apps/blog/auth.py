"""Accounts: register, log in, log out, and the check that keeps visitors who are not logged in out of views
that need a user.

The logged-in user's id lives in the session (a signed cookie, see ``framework.sessions``); every request
loads that user into ``request.g.user``. Views that need one are marked ``@login_required``, and a hook, not
the decorator itself, sends anonymous visitors to the login page: hooks run before the framework's CSRF check,
so an anonymous POST is redirected to log in rather than refused with 403.

A signed cookie cannot be taken back: a copy made before logging out would stay valid until it expires. So each
user has a session *generation*, stored in the session at login and bumped at logout; a session whose
generation is not the user's current one is no longer logged in (logging out ends the user's sessions
everywhere).

Usernames are compared in one canonical spelling (``canonical_username``): ``Alice``, ``alice`` and
``alice`` with an invisible character are one name, and spaces, line breaks and invisible characters are
refused, so nobody can register those lookalikes of someone else. Not every lookalike: Cyrillic U+0430 looks
like the Latin ``a`` but is another letter to Unicode, so a name spelled with it is another name; telling such
confusables apart needs Unicode's confusables data (UTS #39), which this blog does not use. Names registered
before names were canonical are made canonical at start-up where they can be (``normalise_stored_usernames``).

Attempts are limited by ``LOGIN_LIMITER`` (see ``apps/common.py:AttemptLimiter``): each costs an scrypt hash,
and guessing passwords should be slow. Every attempt counts against the client's address; a registration, or a
wrong password, against the username too (``login`` says why a right one is refused during a lockout).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from framework import Blueprint, Request, Response, abort, redirect
from framework.security import check_password_hash, generate_password_hash

from ..common import address_key, unprintable
from .db import connect, get_db

bp = Blueprint("auth", __name__, url_prefix="/auth")

View = TypeVar("View", bound=Callable[..., Any])

log = logging.getLogger(__name__)

USERNAME_LIMIT = 30
# Control, format (zero-width spaces and joiners, direction marks), surrogate, private-use and unassigned
# characters, and separators (spaces of every width, U+2028 and U+2029, which break lines): invisible, blank or
# unstable, they would let two different usernames look the same.
USERNAME_REFUSED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# NIST SP 800-63B's floor for a password the user chooses: shorter ones fall to a few thousand guesses, and the
# attempt limit slows guessing, it does not stop it.
PASSWORD_MIN_LENGTH = 8


def login_required(view: View) -> View:
    """Mark ``view`` as one that needs a logged-in user; ``require_login`` below enforces it."""
    view.login_required = True  # type: ignore[attr-defined]
    return view


@bp.before_app_request
def load_logged_in_user(request: Request) -> None:
    """Put the logged-in user (a database row) or ``None`` in ``request.g.user``, for views and templates.

    A session from before the user's last logout (an older generation) is not logged in."""
    user_id = request.session.get("user_id")
    user = (
        None if user_id is None else get_db(request).execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
    )
    if user is not None and user["generation"] != request.session.get("generation"):
        user = None
    request.g.user = user


@bp.before_app_request
def require_login(request: Request) -> Response | None:
    """Send a visitor who is not logged in from a ``@login_required`` view to the login page."""
    view = request.rule.view if request.rule else None
    if request.g.user is None and getattr(view, "login_required", False):
        return redirect(request.url_for("auth.login"))
    return None


def canonical_username(typed: str) -> str:
    """The one spelling a username is stored and looked up in: NFKC-normalised (full-width and other compatibility
    forms become the usual letters), case-folded (``Alice`` is ``alice``), without surrounding spaces.

    Registration and login both use it, so a name is found however it is typed."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", typed.strip()).casefold()).strip()


def username_error(username: str) -> str | None:
    """What is wrong with a canonical ``username`` for a new account, or ``None``."""
    if not username:
        return "Username is required."
    if len(username) > USERNAME_LIMIT:
        return f"Usernames are at most {USERNAME_LIMIT} characters long."
    if unprintable(username, USERNAME_REFUSED):
        return "Usernames cannot contain spaces, line breaks, control or invisible characters."
    return None


def password_error(password: str) -> str | None:
    """What is wrong with ``password`` for a new account, or ``None``. Only its length is checked: rules about
    kinds of characters make passwords harder to remember, not to guess."""
    if not password:
        return "Password is required."
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"Passwords must be at least {PASSWORD_MIN_LENGTH} characters long."
    return None


def username_key(username: str) -> str:
    """The limiter's key for a canonical ``username``, cut to one character past the limit (no account has a
    longer name), so that each remembered key stays small whatever a client sends."""
    return f"user:{username[: USERNAME_LIMIT + 1]}"


def refuse_if_waiting(request: Request, wait: int, template: str, what: str = "attempts") -> None:
    """When ``wait`` (seconds, from an ``AttemptLimiter``) is not 0, stop with 429 and ``Retry-After``:
    ``template`` again, with a message saying there were too many ``what``, not an error page."""
    if wait:
        request.flash(f"Too many {what}: try again in {wait} seconds.", "error")
        page = request.render(template)
        page.status = 429
        page.headers["Retry-After"] = str(wait)
        abort(page)


def add_user(db: sqlite3.Connection, username: str, password: str) -> bool:
    """Store a new account for the canonical ``username``; ``False`` when the name is taken.

    Taken by an account of that name (the ``UNIQUE`` constraint, checked by the database, so two people
    registering it at once cannot both win), or by one stored before names were canonical whose name reads the
    same: ``Alice``, kept as it was because it clashed with another (see ``normalise_stored_usernames``), must
    not get a stranger called ``alice`` beside her. That second check reads every name (SQLite cannot index a
    Python function); registrations are few, and limited."""
    db.create_function("canonical_username", 1, canonical_username, deterministic=True)
    if db.execute("SELECT 1 FROM user WHERE canonical_username(username) = ?", (username,)).fetchone():
        return False
    try:
        with db:
            db.execute(
                "INSERT INTO user (username, password) VALUES (?, ?)", (username, generate_password_hash(password))
            )
    except db.IntegrityError:
        return False
    return True


@bp.route("/register", methods=["GET", "POST"])
def register(request: Request) -> Response | tuple[Response, int]:
    """Create an account: a unique username and a password, stored as a salted scrypt hash.

    Saying that a username is taken tells anyone which usernames exist; the login form hides that, but here it
    is what a new user needs to know to pick another, and the attempt limit makes asking for many names slow."""
    if request.method == "POST":
        username = canonical_username(request.form.get("username", ""))
        password = request.form.get("password", "")
        error = username_error(username) or password_error(password)
        if error is None:
            limiter = request.app.config["LOGIN_LIMITER"]
            wait = limiter.retry_after(address_key(request), username_key(username))
            refuse_if_waiting(request, wait, "auth/register.html")
            if add_user(get_db(request), username, password):
                request.flash("Your account is ready: log in.", "success")
                return redirect(request.url_for(".login"), 303)
            error = f"User {username} is already registered."
        request.flash(error, "error")
        return request.render("auth/register.html"), 400
    return request.render("auth/register.html")


def find_user(db: sqlite3.Connection, typed: str) -> sqlite3.Row | None:
    """The account a login form names: the one stored exactly as ``typed``, else the one stored in its canonical
    spelling.

    Exactly as typed first, for the accounts from before names were canonical that kept their old spelling
    because it clashed (``Alice`` beside a newer ``alice``): typing ``Alice`` logs in as her, typing ``alice``
    or ``ALICE`` as the other. Every other name is stored canonical, and found however it is typed."""
    for name in dict.fromkeys([typed, canonical_username(typed)]):
        user: sqlite3.Row | None = db.execute("SELECT * FROM user WHERE username = ?", (name,)).fetchone()
        if user is not None:
            return user
    return None


@bp.route("/login", methods=["GET", "POST"])
def login(request: Request) -> Response | tuple[Response, int]:
    """Check a username and password, and remember the user (and their session generation) in the session.

    Every attempt counts against the client's address; only a wrong password counts against the username, so a
    user who logs in often is never limited by it. Once a username has had too many wrong passwords lately,
    attempts at it are refused before the password is checked, even the right one: a lockout of a minute
    (``LOGIN_LIMITER``'s window) that anyone can cause with ten wrong guesses. Letting the right password through
    would undo the limit: whoever guesses from many addresses would learn of each guess whether it was right,
    as fast as the address limits allow, and the username limit is the one that bounds guesses spread over many
    addresses. Sparing the real user would take something a guesser lacks, such as a signed cookie left by an
    earlier login on the same browser (OWASP's "device cookies"); the blog keeps the simpler lockout."""
    if request.method == "POST":
        typed = request.form.get("username", "")
        password = request.form.get("password", "")
        limiter = request.app.config["LOGIN_LIMITER"]
        user_key = username_key(canonical_username(typed))
        wait = limiter.retry_after(address_key(request)) or limiter.peek(user_key)
        refuse_if_waiting(request, wait, "auth/login.html")
        user = find_user(get_db(request), typed)
        # One message for both mistakes, and a hash checked either way (taking as long), so that neither the
        # page nor its timing tells a stranger which usernames exist.
        stored = user["password"] if user is not None else unknown_user_hash()
        if not check_password_hash(stored, password) or user is None:
            limiter.record(user_key)
            request.flash("Incorrect username or password.", "error")
            return request.render("auth/login.html"), 400
        request.session.clear()  # A fresh session at login: nothing planted before it survives.
        request.session["user_id"] = user["id"]
        request.session["generation"] = user["generation"]
        return redirect(request.url_for("blog.index"), 303)
    return request.render("auth/login.html")


@cache
def unknown_user_hash() -> str:
    """A hash no password matches (its password is random), checked when the username is unknown."""
    return generate_password_hash(secrets.token_urlsafe(16))


@bp.post("/logout")
def logout(request: Request) -> Response:
    """Forget the user, and end every session they have: a copy of this cookie (from another device, or stolen)
    is signed and would stay valid, so the user's session generation moves on and old sessions stop matching.

    A POST (with its CSRF token), so that another site cannot log visitors out with a link."""
    if request.g.user is not None:
        db = get_db(request)
        with db:
            db.execute("UPDATE user SET generation = generation + 1 WHERE id = ?", (request.g.user["id"],))
    request.session.clear()
    return redirect(request.url_for("blog.index"), 303)


def normalise_stored_usernames(path: str | Path) -> None:
    """Store in their canonical spelling the names of accounts registered before names were canonical (``Bob``
    becomes ``bob``), so that they are found, and protected from lookalikes, as new ones are.

    A name whose canonical spelling another account has, or that two old names share (``Alice`` and ``ALICE``,
    or ``Eve`` beside a newer ``eve``), is left as it is, and logged: which account should have the name is for
    a person to decide. Those users still log in by typing their name as it is stored (``find_user``). It is
    one transaction that takes the write lock before it reads (``BEGIN IMMEDIATE``): all the renames or none,
    and a second process starting at the same moment finds nothing left to do."""
    with closing(connect(path)) as db:
        db.execute("BEGIN IMMEDIATE")
        spellings: defaultdict[str, list[str]] = defaultdict(list)
        for (name,) in db.execute("SELECT username FROM user"):
            spellings[canonical_username(name)].append(name)
        for canonical, names in spellings.items():
            if len(names) > 1:
                log.warning(
                    "usernames %s all read as %r: left as they are, for someone to decide", sorted(names), canonical
                )
            elif names[0] != canonical:
                db.execute("UPDATE user SET username = ? WHERE username = ?", (canonical, names[0]))
        db.commit()
